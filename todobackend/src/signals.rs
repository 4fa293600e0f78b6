//! SIGTERM/SIGINT for `serve`: the first starts the drain, a second cuts it
//! short (see `cli::serve`). As PID 1 in a container, a process without
//! handlers would ignore `docker stop` until it is killed.
//!
//! Each signal writes one byte to a socket pair (signal-hook's self-pipe:
//! the handler only writes), so `serve` can block on the read end with a
//! timeout and tell a second signal from the first, which a flag cannot.

use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// The read end of the signals' socket pair.
pub struct Stops {
    arrivals: UnixStream,
    /// Kept open so that the read end never sees an end of stream, even
    /// where no handler could be installed.
    _wake: UnixStream,
}

/// Installs the handlers for SIGTERM and SIGINT. Where one cannot be
/// installed, a warning says that stopping will take a kill.
pub fn install() -> Result<Stops, String> {
    let (arrivals, wake) = UnixStream::pair().map_err(|e| format!("cannot create the signal socket pair: {e}"))?;
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let registered = wake.try_clone().and_then(|end| signal_hook::low_level::pipe::register(signal, end));
        if let Err(e) = registered {
            crate::say!("warning: cannot handle signal {signal}: {e}; stopping the server will take a kill");
        }
    }
    Ok(Stops { arrivals, _wake: wake })
}

impl Stops {
    /// Blocks until SIGTERM or SIGINT arrives.
    pub fn wait(&mut self) {
        while !self.wait_for(Duration::from_secs(3600)) {}
    }

    /// Waits up to `limit` for SIGTERM or SIGINT: true if one arrived. A
    /// signal counts once: the bytes read are gone.
    pub fn wait_for(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut byte = [0u8; 1];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // A zero timeout would mean "block forever" to the socket.
            let _ = self.arrivals.set_read_timeout(Some(left.max(Duration::from_millis(1))));
            match self.arrivals.read(&mut byte) {
                Ok(1..) => return true,
                // `_wake` keeps a write end open: never here.
                Ok(0) => return false,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(_) => return false,
            }
        }
    }
}
