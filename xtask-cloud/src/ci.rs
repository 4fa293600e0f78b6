//! `ci`'s signals. The pipeline itself (login, test, release, publish, the
//! version file; then clean and logout ALWAYS: after a failure, and after
//! SIGINT or SIGTERM too) is the runner's (`xtask::runner`), since its stages
//! are tasks; this binary gives it the signal handling.
//!
//! On a first SIGINT/SIGTERM the stage under way finishes (a Ctrl-C in a
//! terminal stops its commands too), the remaining stages are skipped, and the
//! cleanup runs; a second signal exits at once (status 130).

use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use xtask::exit::Signal;
use xtask::output::say;

/// Catch SIGINT and SIGTERM from now on: the first is what the returned
/// function reports, the second exits at once.
pub fn catch_signals() -> Result<xtask::runner::Interrupted> {
    let received = Arc::new(OnceLock::new());
    let first = received.clone();
    crate::signals::on(&[Signal::Int, Signal::Term], move |signal| {
        if first.set(signal).is_err() {
            say(&format!("==> ci: {} again: exiting without cleaning up", signal.name()));
            std::process::exit(130);
        }
        say(&format!(
            "==> ci: {}: finishing the current stage, then clean and logout (send it again to exit now)",
            signal.name()
        ));
    })
    .context("cannot catch SIGINT and SIGTERM")?;
    Ok(Box::new(move || received.get().copied()))
}
