//! Holding the stack's deploy lock (`records::lock`) for the length of a
//! task that changes the stack: taken before, released after, and handed to
//! the interrupt handler meanwhile, which releases it on SIGINT or SIGTERM.

use std::time::Duration;

use anyhow::Result;
use xtask::ctx::Ctx;

use crate::async_ctx::AsyncCtx;
use crate::records::lock::{Holder, Released, release, take};
use crate::records::lock_name;

/// Run `body` holding the stack's deploy lock; `wait` for it if another task
/// holds it (else fail at once, naming the holder). A dry run takes no lock.
pub fn hold<T>(
    ctx: &Ctx,
    task: &str,
    version: &str,
    wait: Option<Duration>,
    body: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let stack = ctx.settings.stack.clone();
    let lock = lock_name(&stack);
    let holder = Holder::here(task, version);
    // The lock taken is handed to the interrupt handler at once, which
    // releases it on SIGINT or SIGTERM; the task takes it back below. (A
    // dry run takes none, so its interrupt has nothing to undo.)
    // (An effect rather than a `ctx.call`: the handler is installed outside
    // the runtime that takes the lock.)
    ctx.effect(&format!("api: take the deploy lock (swarm config {lock})"), (), || {
        let taken = ctx.block_on(async { take(&ctx.docker().await?, &stack, &holder, wait).await })?;
        crate::interrupt::holding(ctx.docker_endpoint().clone(), &stack, taken);
        Ok(())
    })?;
    let result = body();
    if let Some(taken) = crate::interrupt::take_lock() {
        match ctx.block_on(async { release(&ctx.docker().await?, &stack, &taken).await }) {
            Ok(Released::Ours) => {}
            Ok(other) => ctx.warn(&other.said()),
            Err(err) => ctx.warn(&format!(
                "could not release the deploy lock {lock}: {err:#}: remove it with `cargo xtask unlock`"
            )),
        }
        crate::interrupt::lock_released();
    }
    result
}
