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
//! every deploy hands them a fresh credential anyway. So is a service that
//! does not run the release image: the PostgreSQL stack's `db` is pinned to
//! the node that keeps its volume, which has its image, and replacing its
//! task would stop the database for every replica of the app; the `edge` runs
//! on every node, which pulled its image when it started, and replacing its
//! tasks would take each node's edge away for a moment.
//!
//! `docker service update` returns once the new tasks run, before the
//! swarm's monitor period has passed and the update is "completed" (found
//! by the ops test: seconds before). So each service is then watched until
//! its UpdateStatus says completed, and a paused or rolled back update fails.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use xshell::cmd;
use xtask::ctx::Ctx;

use crate::async_ctx::AsyncCtx;

/// How long one service's rolling update may take, monitor period included.
const UPDATE_TIMEOUT: Duration = Duration::from_secs(600);

pub fn run(ctx: &Ctx) -> Result<()> {
    let stack = ctx.settings.stack.clone();
    crate::lock::hold(ctx, "refresh-auth", ctx.version(), None, || {
        let release_image = ctx.settings.image_name();
        let (names, others) = ctx.block_on(async {
            let docker = ctx.docker().await?;
            let (mut names, mut others): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
            let services = crate::stack::services(&docker, &stack).await?;
            for spec in services.into_iter().filter_map(|service| service.spec) {
                let release = crate::stack::runs_release(&spec, &release_image);
                match (crate::stack::is_long_running(&spec), release, spec.name) {
                    (true, true, Some(name)) => names.push(name),
                    (true, false, Some(name)) => others.push(name),
                    _ => {}
                }
            }
            names.sort();
            others.sort();
            Ok((names, others))
        })?;
        if !others.is_empty() {
            ctx.say(&format!(
                "    left alone: {} (not the release image {release_image}: its nodes have its image, and a new \
                 credential would restart it)",
                others.join(", ")
            ));
        }
        if names.is_empty() {
            bail!("stack {stack} runs no long-running service: there is nothing to refresh");
        }
        let sh = ctx.sh();
        // A dry run has changed nothing and changes nothing.
        crate::interrupt::stack_changing(None);
        for name in &names {
            ctx.step(&format!("hand {name} the new credential (its own rolling update)"), || {
                let before = ctx.block_on(async { update_status(&ctx.docker().await?, name).await })?;
                ctx.run(cmd!(sh, "docker service update --with-registry-auth --quiet {name}"))?;
                let wait = format!("wait until the update of {name} is completed");
                ctx.call(&wait, (), async { until_completed(&ctx.docker().await?, name, before).await })?;
                Ok(())
            })?;
        }
        ctx.report(&format!("handed {} the registry credential of the login above", names.join(", ")));
        Ok(())
    })
}

/// A service's UpdateStatus: its state and when it started.
async fn update_status(docker: &bollard::Docker, name: &str) -> Result<Option<(String, String)>> {
    let service = docker
        .inspect_service(name, None::<bollard::query_parameters::InspectServiceOptions>)
        .await
        .with_context(|| format!("cannot inspect the service {name}"))?;
    Ok(service
        .update_status
        .and_then(|status| Some((status.state?.to_string(), status.started_at.unwrap_or_default()))))
}

/// Wait until the update after `before` is completed; fail if the swarm
/// paused it or rolled it back. Should the swarm have started no update (it
/// did not count the credential as a change), the state stays `before`'s.
async fn until_completed(docker: &bollard::Docker, name: &str, before: Option<(String, String)>) -> Result<()> {
    let started = Instant::now();
    let mut said = None;
    loop {
        let now = update_status(docker, name).await?;
        let state = now.as_ref().map(|(state, _)| state.as_str());
        match state {
            Some("completed") => return Ok(()),
            // No update of ours, and none under way.
            None => return Ok(()),
            Some(_) if now == before && !matches!(state, Some("updating" | "rollback_started")) => return Ok(()),
            Some(state @ ("paused" | "rollback_paused" | "rollback_completed")) => bail!(
                "the update of {name} with the new credential ended {state}: see `docker service ps {name}`; the \
                 swarm kept the old credential for the tasks it did not replace"
            ),
            Some(state) => {
                if said.as_deref() != Some(state) {
                    xtask::output::say(&format!("    {name}: update {state}"));
                    said = Some(state.to_owned());
                }
            }
        }
        if started.elapsed() > UPDATE_TIMEOUT {
            bail!(
                "the update of {name} did not complete within {}s: see `docker service ps {name}`",
                UPDATE_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
