//! `refresh-auth`: hand the stack's services a fresh ECR credential, and
//! change nothing else in their specs.
//!
//! `docker stack deploy --with-registry-auth` gives the swarm the ECR token
//! of the moment, which lasts 12 hours; a task rescheduled later, on a node
//! without the image, cannot pull it (moby#36126). `login` runs first (a
//! fresh token in the Docker config), then each service is updated with
//! `docker service update --with-registry-auth --no-resolve-image`: the CLI
//! sends the service's own spec back with that credential, and keeps the
//! image reference as it is (resolving the tag again could move it).
//!
//! Found on the real swarm (the ops test checks it): the swarm keeps the
//! credential in the tasks' pull options, which it leaves out when it decides
//! whether a task is out of date, so no task restarts. Sending the spec back
//! through the engine API instead did restart them: the API's round trip of
//! the spec is not exact.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use bollard::query_parameters::ListServicesOptions;
use xshell::cmd;
use xtask::ctx::Ctx;

use crate::async_ctx::AsyncCtx;

pub fn run(ctx: &Ctx) -> Result<()> {
    let stack = ctx.settings.stack.clone();
    crate::lock::hold(ctx, "refresh-auth", ctx.version(), None, || {
        let names = ctx.block_on(async {
            let docker = ctx.docker().await?;
            let filters = HashMap::from([("label".to_owned(), vec![format!("com.docker.stack.namespace={stack}")])]);
            let services = docker
                .list_services(Some(ListServicesOptions { filters: Some(filters), ..Default::default() }))
                .await
                .with_context(|| format!("cannot list the services of stack {stack}"))?;
            let mut names: Vec<String> = services.into_iter().filter_map(|service| service.spec?.name).collect();
            names.sort();
            Ok(names)
        })?;
        if names.is_empty() {
            bail!("stack {stack} is not deployed: there is nothing to refresh");
        }
        let sh = ctx.sh();
        for name in &names {
            ctx.step(&format!("hand {name} the new credential"), || {
                ctx.run(cmd!(
                    sh,
                    "docker service update --with-registry-auth --no-resolve-image --detach --quiet {name}"
                ))
            })?;
        }
        ctx.report(&format!("handed {} the registry credential of the login above", names.join(", ")));
        Ok(())
    })
}
