//! `refresh-auth`: hand the stack's long-running services a fresh ECR
//! credential, and change nothing else in their specs.
//!
//! `docker stack deploy --with-registry-auth` gives the swarm the ECR token
//! of the moment, which lasts 12 hours; a task rescheduled later, on a node
//! without the image, cannot pull it (moby#36126). `login` runs first (a
//! fresh token in the Docker config), then each replicated service is updated
//! with `docker service update --with-registry-auth`, which sends the
//! service's own spec back with that credential and waits until the update
//! has converged (the image is pinned by digest, so it resolves to itself).
//!
//! Found on the real swarm (Docker 20.10, the ops test): the swarm counts a
//! new credential as a change of the task spec, so the tasks are replaced,
//! by the service's own rolling update (its order, parallelism, delay and
//! rollback). The one-shot jobs are left alone: they would run again, and
//! every deploy hands them a fresh credential anyway.

use anyhow::{Result, bail};
use xshell::cmd;
use xtask::ctx::Ctx;

use crate::async_ctx::AsyncCtx;

pub fn run(ctx: &Ctx) -> Result<()> {
    let stack = ctx.settings.stack.clone();
    crate::lock::hold(ctx, "refresh-auth", ctx.version(), None, || {
        let names = ctx.block_on(async {
            let docker = ctx.docker().await?;
            let mut names: Vec<String> = crate::stack::services(&docker, &stack)
                .await?
                .into_iter()
                .filter_map(|service| service.spec)
                .filter(crate::stack::is_long_running)
                .filter_map(|spec| spec.name)
                .collect();
            names.sort();
            Ok(names)
        })?;
        if names.is_empty() {
            bail!("stack {stack} runs no long-running service: there is nothing to refresh");
        }
        let sh = ctx.sh();
        for name in &names {
            ctx.step(&format!("hand {name} the new credential (its own rolling update)"), || {
                ctx.run(cmd!(sh, "docker service update --with-registry-auth --quiet {name}"))
            })?;
        }
        ctx.report(&format!("handed {} the registry credential of the login above", names.join(", ")));
        Ok(())
    })
}
