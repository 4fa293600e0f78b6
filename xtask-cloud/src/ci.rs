//! `ci`'s signals. The pipeline itself (login, test, release, publish, the
//! version file; then clean and logout ALWAYS: after a failure, and after
//! SIGINT or SIGTERM too) is the runner's (`xtask::runner`), since its stages
//! are tasks; this binary gives it the signal handling.
//!
//! On a first SIGINT/SIGTERM the stage under way finishes (a Ctrl-C in a
//! terminal stops its commands too), the remaining stages are skipped, and the
//! cleanup runs; a second signal exits at once (status 130).

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{Context, Result};
use xtask::exit::Signal;

fn signal_name(number: i32) -> &'static str {
    match number {
        2 => "SIGINT",
        15 => "SIGTERM",
        _ => "a signal",
    }
}

/// Catch SIGINT and SIGTERM from now on: the first is what the returned
/// function reports, the second exits at once.
pub fn catch_signals() -> Result<xtask::runner::Interrupted> {
    let received = watch_signals()?;
    Ok(Box::new(move || match received.load(Ordering::SeqCst) {
        0 => None,
        2 => Some(Signal::Int),
        _ => Some(Signal::Term),
    }))
}

/// Catch SIGINT and SIGTERM from now on: the first sets the returned number,
/// the second exits at once.
fn watch_signals() -> Result<Arc<AtomicI32>> {
    use tokio::signal::unix::{SignalKind, signal};
    let received = Arc::new(AtomicI32::new(0));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime that catches signals")?;
    let (mut interrupt, mut terminate) = runtime.block_on(async {
        let interrupt = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
        let terminate = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
        anyhow::Ok((interrupt, terminate))
    })?;
    let flag = received.clone();
    std::thread::spawn(move || {
        runtime.block_on(async move {
            loop {
                let number = {
                    let int = std::pin::pin!(interrupt.recv());
                    let term = std::pin::pin!(terminate.recv());
                    match futures_util::future::select(int, term).await {
                        futures_util::future::Either::Left(_) => 2,
                        futures_util::future::Either::Right(_) => 15,
                    }
                };
                if flag.swap(number, Ordering::SeqCst) != 0 {
                    eprintln!("==> ci: {} again: exiting without cleaning up", signal_name(number));
                    std::process::exit(130);
                }
                eprintln!(
                    "==> ci: {}: finishing the current stage, then clean and logout (send it again to exit now)",
                    signal_name(number)
                );
            }
        })
    });
    Ok(received)
}
