//! `ci`'s signals. The pipeline itself (login, test, release, publish, the
//! version file; then clean and logout ALWAYS: after a failure, and after
//! SIGINT or SIGTERM too) is the runner's (`xtask::runner`), since its stages
//! are tasks; this binary gives it the signal handling.
//!
//! On a first SIGINT/SIGTERM the commands of the stage under way get the
//! signal too, each with its own children (`xtask::children`: a process
//! group per command), so the stage ends at once; the remaining stages are
//! skipped, and the cleanup runs. A second signal kills the commands
//! running then (the cleanup's) and exits at once: nothing the xtask
//! started is left running either way.

use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use xtask::exit::{Exit, Signal};
use xtask::output::say;

/// Catch SIGINT and SIGTERM from now on: the first is what the returned
/// function reports, the second exits at once.
pub fn catch_signals() -> Result<xtask::runner::Interrupted> {
    let received = Arc::new(OnceLock::new());
    let first = received.clone();
    crate::signals::on(&[Signal::Int, Signal::Term], move |signal| {
        if first.set(signal).is_err() {
            let killed = xtask::children::signal_all(libc::SIGKILL);
            let commands = if killed > 0 { format!(", its {killed} running command(s) killed") } else { String::new() };
            say(&format!("==> ci: {} again: exiting without cleaning up{commands}", signal.name()));
            std::process::exit(Exit::Interrupted(signal).code().into());
        }
        let stopped = xtask::children::signal_all(match signal {
            Signal::Int => libc::SIGINT,
            Signal::Term => libc::SIGTERM,
        });
        let commands = if stopped > 0 { ", its commands stopped" } else { "" };
        say(&format!(
            "==> ci: {}: stopping the current stage{commands}, then clean and logout (send it again to exit now)",
            signal.name()
        ));
    })
    .context("cannot catch SIGINT and SIGTERM")?;
    xtask::children::stop_with_the_pipeline();
    Ok(Box::new(move || received.get().copied()))
}
