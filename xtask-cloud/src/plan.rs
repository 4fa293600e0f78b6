//! `plan [--json] [--exit-code]`: what a deploy would change, service by
//! service and field by field, against what the swarm runs now (`spec`); the
//! same plan heads `deploy --dry-run` and `rollback --dry-run`.

use anyhow::{Context, Result};
use xtask::ctx::Ctx;
use xtask::flags::PlanArgs as Args;

use crate::async_ctx::AsyncCtx;
use crate::records::history;
use crate::stackfile;

/// `cargo xtask plan`.
pub fn run(ctx: &Ctx, args: &Args) -> Result<()> {
    let source = stackfile::Source::read(ctx)?;
    let sh = ctx.sh();
    let lookup = |name: &str| sh.var(name).ok();
    let services = stackfile::load(&source.shown, &source.text, &lookup)?;
    let docker = ctx.block_on(async { ctx.docker().await })?;
    let recorded = history::last_specs(&history::list(ctx, &ctx.settings.stack)?);
    let plan = crate::service_spec::diff::make(ctx, &docker, &source, &services, None, recorded.as_ref())?;
    if args.json {
        ctx.print_result(&serde_json::to_string_pretty(&plan).context("cannot encode the plan")?);
    } else {
        ctx.print_result(&plan.render(false).join("\n"));
    }
    if args.exit_code && plan.changes {
        return Err(xtask::exit::Exit::Changes
            .error(format!("stack {} differs from {} (--exit-code)", plan.stack, plan.stack_file)));
    }
    Ok(())
}
