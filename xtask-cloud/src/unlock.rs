//! `unlock [--force]`: the deploy lock a killed task left (`records::lock`).

use anyhow::{Context, Result, bail};
use xtask::ctx::Ctx;
use xtask::flags::UnlockArgs as Args;

use crate::async_ctx::AsyncCtx;
use crate::records::lock::{Liveness, read};
use crate::records::{self, Removal, lock_name as name};

/// `cargo xtask unlock [--force]`: show who holds the lock, then remove it,
/// unless its holder's process still runs on this host (`--force` anyway).
pub fn run(ctx: &Ctx, args: &Args) -> Result<()> {
    let stack = ctx.settings.stack.clone();
    let found = ctx.block_on(async { read(&ctx.docker().await?, &stack).await })?;
    let Some((id, holder)) = found else {
        ctx.say(&format!("stack {stack} has no deploy lock"));
        return Ok(());
    };
    ctx.say(&format!("the deploy lock of stack {stack}: {}", holder.describe()));
    match holder.liveness() {
        Liveness::Runs if !args.force => bail!(
            "process {} of the lock's holder still runs on this host: it releases the lock when it ends (Ctrl-C \
             or SIGTERM releases it too); remove it anyway with `cargo xtask unlock --force`",
            holder.pid
        ),
        Liveness::Runs => ctx.say(&format!(
            "    process {} still runs (--force): it will not remove the next holder's lock, and says so when it ends",
            holder.pid
        )),
        Liveness::Gone => ctx.say(&format!("    process {} no longer runs on this host", holder.pid)),
        Liveness::Unknown => ctx.say(&format!(
            "    on another host: whether process {} still runs cannot be checked from here",
            holder.pid
        )),
    }
    // By ID: a lock another task took since the read above stays.
    ctx.call(&format!("remove the swarm config {} ({id})", name(&stack)), (), async {
        let removal = records::remove(&ctx.docker().await?, &id)
            .await
            .with_context(|| format!("cannot remove the deploy lock {}", name(&stack)))?;
        match removal {
            Removal::AlreadyGone => ctx.report(&format!("the deploy lock of stack {stack} was released meanwhile")),
            _ => ctx.report(&format!("removed the deploy lock of stack {stack}")),
        }
        Ok(())
    })
}
