//! SIGTERM/SIGINT turn into a flag that `serve` polls, so that the server
//! shuts down cleanly. As PID 1 in a container, a process without handlers
//! would ignore `docker stop` until it is killed 10 s later.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

#[cfg(unix)]
extern "C" fn on_signal(_signal: libc::c_int) {
    // Only an atomic store: that is async-signal-safe.
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the handlers for SIGTERM and SIGINT.
pub fn install() {
    #[cfg(unix)]
    {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; `signal` has no other preconditions.
        unsafe {
            libc::signal(libc::SIGTERM, handler);
            libc::signal(libc::SIGINT, handler);
        }
    }
}

/// True once SIGTERM or SIGINT has arrived.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
