//! `clean`: the local environment down with its volumes, then the dangling
//! images this checkout's builds made (labelled `application=<app>` and
//! `xtask.local-project=<compose project>`: old builds whose tags moved on).
//! Nothing else is touched, another checkout's environment included; with
//! nothing to clean it succeeds. A light task:
//! the docker CLI does all of it, so `clean` never builds the AWS SDK.

use anyhow::Result;
use xshell::cmd;

use crate::compose::Compose;
use crate::ctx::Ctx;
use crate::{local_lock, notice};

pub fn run(ctx: &Ctx) -> Result<()> {
    // No engine: say so in one line now, not after a compile or a build.
    crate::docker_endpoint::check_reachable(ctx.docker_endpoint())?;
    let compose = Compose::detect(ctx)?;
    // Held to the end: not while a release of this environment runs.
    let _lock = ctx.step("take the local environment", || {
        let lock = local_lock::acquire(ctx, "clean")?;
        compose.repair_networks(ctx)?;
        Ok(lock)
    })?;
    ctx.step("remove the local environment and its volumes", || {
        ctx.run_explained(compose.cmd(ctx, &["down", "--volumes", "--remove-orphans"]), &[notice::COMPOSE_SWARM])
    })?;
    ctx.step("remove this checkout's dangling images", || {
        // `image prune` decides in the engine, image by image, that an image
        // is dangling and unused: a list-then-remove from here could remove
        // an image that a build tagged in between, and would have to skip
        // the ones containers use. Their untagged parent layers go with
        // them. Only this local environment's builds (its label): another
        // checkout's images are that checkout's to clean.
        let application = format!("label=application={}", ctx.settings.app);
        let mine = format!("label={}", ctx.settings.local_label());
        ctx.run(cmd!(ctx.sh(), "docker image prune --force --filter {application} --filter {mine}"))
    })
}
