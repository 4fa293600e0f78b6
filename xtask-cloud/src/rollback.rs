//! `rollback [--to VERSION] [--restore-data]`: put back the last version that
//! converged before the one running now (from the swarm's history), or
//! VERSION, through deploy's own pre-flight, jobs-first run and watch, and
//! record it in the history.
//!
//! An older version can serve a database that only additive migrations
//! changed since. After a breaking migration it cannot: the rollback refuses,
//! naming that migration, unless `--restore-data`, which restores the newest
//! backup taken before it (the writes since are lost, and said so first; the
//! database it replaces is kept as a backup too).

use anyhow::{Context, Result, bail};
use xtask::ctx::Ctx;
use xtask::tasks::RollbackArgs as Args;

use crate::async_ctx::AsyncCtx;
use crate::deploy::migrations::{self, Effect};
use crate::deploy::{Checked, Release};
use crate::history;
use crate::image_ref::ImageRef;

pub fn run(ctx: &Ctx, args: &Args) -> Result<()> {
    let stack = ctx.settings.stack.clone();
    let running = ctx.block_on(async { running_app(&ctx.docker().await?, &stack).await })?;
    let Some((running_version, running_image)) = running else {
        bail!("stack {stack} runs no app service: there is nothing to roll back (deploy with `cargo xtask deploy`)");
    };
    let target = match &args.to {
        Some(version) => {
            xtask::version::check_tag(version).context("--to is not a version")?;
            version.clone()
        }
        None => history::previous_good(&history::list(ctx, &stack)?, Some(&running_version)).with_context(|| {
            format!(
                "the history of stack {stack} has no version that converged before {running_version}: \
                 name one with `cargo xtask rollback --to VERSION`"
            )
        })?,
    };
    if target == running_version {
        bail!("version {target} is the one running on stack {stack}: name another with --to VERSION");
    }
    eprintln!("Rolling back stack {stack} from version {running_version} to {target}...");
    let release = Release {
        kind: "rollback",
        version: &target,
        allow_breaking_migration: false,
        detach: false,
        timeout: args.timeout,
    };
    crate::lock::hold(ctx, "rollback", &target, args.lock_wait, || {
        release.run(ctx, |checked, report| {
        let Some(report) = report else { return Ok(()) };
        match migrations::effect(report) {
            Effect::CannotServe { problem, migration: Some(migration) } => {
                if !args.restore_data {
                    bail!(
                        "version {target} cannot serve the current database: {migration} was applied since and is not \
                         additive ({problem}): run `cargo xtask rollback --to {target} --restore-data` to restore the \
                         backup taken before {migration} (the writes made since are lost; the current database is kept \
                         as a backup)"
                    );
                }
                restore(ctx, checked, &running_image, &migration)
            }
            Effect::CannotServe { problem, migration: None } => {
                bail!("version {target} cannot serve the current database ({problem}), and no backup can fix that")
            }
            _ => Ok(()),
        }
    })
    })
}

/// Restore the newest backup taken before `migration`, with the running
/// image's binary (the target's may be older than `restore` itself).
fn restore(ctx: &Ctx, checked: &Checked, running_image: &str, migration: &str) -> Result<()> {
    ctx.step(&format!("restore the database from before {migration}"), || {
        let node = crate::deploy::data_node(ctx, checked)?;
        let description = format!("run `todobackend restore --before {migration}` of {running_image} on the data node");
        let answer = ctx.call(
            &description,
            migrations::run_on_data_node(&checked.docker, &node, running_image, &["restore", "--before", migration]),
        )?;
        if let Some(answer) = answer {
            let line = answer.lines().rev().find(|line| line.trim_start().starts_with('{')).unwrap_or("").trim();
            let restored: serde_json::Value =
                serde_json::from_str(line).with_context(|| format!("`todobackend restore` answered {answer:?}"))?;
            let field = |key: &str| restored.get(key).and_then(|value| value.as_str()).unwrap_or("?").to_owned();
            eprintln!("    restored {}; the replaced database is kept as {}", field("restored"), field("kept"));
        }
        Ok(())
    })
}

/// The version and image of the stack's long-running service(s), as the
/// swarm runs them now.
async fn running_app(docker: &bollard::Docker, stack: &str) -> Result<Option<(String, String)>> {
    let services = crate::stack::services(docker, stack).await?;
    let app =
        services.iter().filter_map(|service| service.spec.as_ref()).find(|spec| crate::stack::is_long_running(spec));
    let image = app
        .and_then(|spec| spec.task_template.as_ref())
        .and_then(|template| template.container_spec.as_ref())
        .and_then(|container| container.image.clone());
    Ok(image.map(|image| (ImageRef::parse(&image).tag.unwrap_or_else(|| "latest".to_owned()), image)))
}
