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
use xtask::flags::RollbackArgs as Args;

use crate::async_ctx::AsyncCtx;
use crate::records::history;
use crate::release::migrations::{self, Effect};
use crate::release::{Checked, Release};

pub fn run(ctx: &Ctx, args: &Args) -> Result<()> {
    let stack = ctx.settings.stack.clone();
    let release_image = ctx.settings.image_name();
    let running =
        ctx.block_on(async { crate::stack::running_app(&ctx.docker().await?, &stack, &release_image).await })?;
    let Some(crate::stack::RunningApp { version: running_version, image: running_image }) = running else {
        bail!("stack {stack} runs no app service: there is nothing to roll back (deploy with `cargo xtask deploy`)");
    };
    let entries = history::list(ctx, &stack)?;
    let target = match &args.to {
        Some(version) => {
            xtask::version::check_tag(version).context("--to is not a version")?;
            version.clone()
        }
        // After a failed release, "back" is the version that served before
        // it, even when the swarm already rolled the spec back to it: that is
        // the case where it cannot serve the schema the release left.
        None => history::back_from(&entries, &running_version).with_context(|| {
            format!(
                "the history of stack {stack} has no version that converged before {running_version}: \
                 name one with `cargo xtask rollback --to VERSION`"
            )
        })?,
    };
    // The version the swarm runs is a target only when it cannot serve the
    // database; the database check below tells.
    let reinstating = target == running_version;
    if reinstating {
        ctx.say(&format!(
            "Rolling back stack {stack} to version {target}, which it runs now but which may not serve..."
        ));
    } else {
        ctx.say(&format!("Rolling back stack {stack} from version {running_version} to {target}..."));
    }
    let release = Release {
        kind: history::Kind::Rollback,
        version: &target,
        allow_breaking_migration: false,
        detach: false,
        timeout: args.timeout,
        no_login: args.no_login,
        prune: false,
        verification: crate::release::verify::Verification::NotApplicable,
    };
    crate::lock::hold(ctx, "rollback", &target, args.lock_wait, || {
        release.run(ctx, |checked, report| {
            let Some(report) = report else {
                // No report (the check is a job on the swarm, which a dry run
                // does not run; an image too old to give one): which backup
                // to restore is not known.
                if args.restore_data {
                    restore(ctx, checked, &running_image, None)?;
                }
                if reinstating {
                    ctx.plan_note(&format!(
                        "a real run stops here if version {target}, which the swarm runs now, can serve the database"
                    ));
                }
                return Ok(());
            };
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
                    restore(ctx, checked, &running_image, Some(&migration))
                }
                Effect::CannotServe { problem, migration: None } => {
                    bail!("version {target} cannot serve the current database ({problem}), and no backup can fix that")
                }
                _ if reinstating => bail!(
                    "version {target} is the one running on stack {stack}, and it can serve the database: \
                     name another with --to VERSION"
                ),
                _ => Ok(()),
            }
        })
    })
}

/// Restore the newest backup taken before `migration`, with the running
/// image's binary (the target's may be older than `restore` itself). A dry
/// run does not know `migration` (the database check is a job it does not
/// run): its plan says how a real run finds it.
fn restore(ctx: &Ctx, checked: &Checked, running_image: &str, migration: Option<&str>) -> Result<()> {
    let Some(migration) = migration else {
        return ctx.step("restore the database from before the first migration the version cannot serve", || {
            let plan = format!(
                "run `todobackend restore --before MIGRATION` of {running_image} on the data node, MIGRATION being \
                 the first applied migration the version cannot serve (a real run learns it from `todobackend \
                 migrations --json`); the writes since that backup are lost, the current database is kept as a backup"
            );
            ctx.effect(&plan, (), || {
                bail!(
                    "{running_image} gives no report of the database's migrations (`todobackend migrations --json`), \
                     so which backup to restore is not known: restore one by hand (docs/src/deploying.md, Backups)"
                )
            })
        });
    };
    ctx.step(&format!("restore the database from before {migration}"), || {
        let node = crate::release::data_node(ctx, checked)?;
        let description = format!("run `todobackend restore --before {migration}` of {running_image} on the data node");
        ctx.call(&description, (), async {
            let args = ["restore", "--before", migration];
            let answer = migrations::run_on_data_node(&checked.docker, &node, running_image, &args).await?;
            let line = answer.lines().rev().find(|line| line.trim_start().starts_with('{')).unwrap_or("").trim();
            let restored: serde_json::Value =
                serde_json::from_str(line).with_context(|| format!("`todobackend restore` answered {answer:?}"))?;
            let field = |key: &str| restored.get(key).and_then(|value| value.as_str()).unwrap_or("?").to_owned();
            ctx.say(&format!("    restored {}; the replaced database is kept as {}", field("restored"), field("kept")));
            Ok(())
        })
    })
}
