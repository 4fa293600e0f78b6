//! `deploy`: stack.yml to Docker Swarm, watched until the new version is live
//! and verified, under the deploy lock (`login` first, unless `--no-login`:
//! see `runner::needs`). The steps are a release's (`release`), the same as
//! `rollback`'s; a version that fails its verification is rolled back at
//! once, under the same lock.

use anyhow::Result;
use xtask::ctx::Ctx;
use xtask::flags::DeployArgs as Args;

use crate::records::history::Kind;
use crate::release::{Release, verify};

pub fn run(ctx: &Ctx, args: &Args) -> Result<()> {
    let version = ctx.version();
    ctx.say(&format!("Deploying version {version}..."));
    let release = Release {
        kind: Kind::Deploy,
        version,
        allow_breaking_migration: args.allow_breaking_migration,
        detach: args.detach,
        timeout: args.timeout,
        no_login: args.no_login,
        prune: args.prune,
        verification: if args.no_verify {
            verify::Verification::Skipped
        } else {
            verify::Verification::Run(ctx.settings.verify.clone())
        },
    };
    crate::lock::hold(ctx, "deploy", version, args.lock_wait, || {
        let result = release.run(ctx, |_, _| Ok(()));
        match result {
            Err(err) if verify::failure_of(&err).is_some() => Err(release.back_after_failed_verification(ctx, err)),
            result => result,
        }
    })
}
