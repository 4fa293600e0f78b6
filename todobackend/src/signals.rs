//! SIGTERM/SIGINT turn into a flag that `serve` polls, so that the server
//! shuts down cleanly. As PID 1 in a container, a process without handlers
//! would ignore `docker stop` until it is killed 10 s later.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();

fn flag() -> &'static Arc<AtomicBool> {
    STOP.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Installs the handlers for SIGTERM and SIGINT (sigaction, through
/// signal-hook: the handler only sets the flag).
pub fn install() {
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(flag())) {
            crate::say!("warning: cannot handle signal {signal}: {e}; stopping the server will take a kill");
        }
    }
}

/// True once SIGTERM or SIGINT has arrived.
pub fn stop_requested() -> bool {
    flag().load(Ordering::SeqCst)
}
