//! `clean`: the local environment down with its volumes, then the dangling
//! images labelled `application=<app>` (old builds whose tags moved on).
//! Nothing else is touched; with nothing to clean it succeeds. A light task:
//! the docker CLI does all of it, so `clean` never builds the AWS SDK.

use anyhow::Result;
use xshell::cmd;

use crate::compose::Compose;
use crate::ctx::Ctx;

pub fn run(ctx: &Ctx) -> Result<()> {
    // No engine: say so in one line now, not after a compile or a build.
    crate::docker_endpoint::check_reachable(ctx.docker_endpoint())?;
    ctx.step("remove the local environment and its volumes", || {
        let compose = Compose::detect(ctx)?;
        ctx.run(compose.cmd(ctx, &["down", "--volumes", "--remove-orphans"]))
    })?;
    ctx.step("remove dangling project images", || {
        // `image prune` decides in the engine, image by image, that an image
        // is dangling and unused: a list-then-remove from here could remove
        // an image that a build tagged in between, and would have to skip
        // the ones containers use. Their untagged parent layers (labelled
        // too) go with them.
        let label = format!("label=application={}", ctx.settings.app);
        ctx.run(cmd!(ctx.sh(), "docker image prune --force --filter {label}"))
    })
}
