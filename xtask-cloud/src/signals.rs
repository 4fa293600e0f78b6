//! SIGINT and SIGTERM, caught one way for the whole binary, through
//! signal-hook: the deploy lock's interrupt handler (`interrupt.rs`), `ci`'s
//! cleanup and `logs --follow` each say here what a signal does to them.
//!
//! A handler runs on a thread of its own, never inside the signal handler
//! proper, so it may do anything a thread does: call the engine, print,
//! end the process. Once caught, a signal no longer ends the process by
//! itself: the handler decides.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use signal_hook::consts::{SIGINT, SIGTERM};
use xtask::exit::Signal;

fn number(signal: Signal) -> i32 {
    match signal {
        Signal::Int => SIGINT,
        Signal::Term => SIGTERM,
    }
}

/// From now on, call `handler` with each of `signals` received, in order, on
/// a thread of its own.
pub fn on(signals: &[Signal], mut handler: impl FnMut(Signal) + Send + 'static) -> std::io::Result<()> {
    let mut caught = signal_hook::iterator::Signals::new(signals.iter().copied().map(number))?;
    let signals = signals.to_vec();
    std::thread::Builder::new().name("signals".to_owned()).spawn(move || {
        for received in caught.forever() {
            if let Some(signal) = signals.iter().copied().find(|signal| number(*signal) == received) {
                handler(signal);
            }
        }
    })?;
    Ok(())
}

/// The first of `signals` received from now on, to await (`logs --follow`
/// ends on Ctrl-C).
pub fn first(signals: &[Signal]) -> std::io::Result<First> {
    let first = First::default();
    let shared = first.0.clone();
    on(signals, move |signal| {
        let mut state = shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.received.get_or_insert(signal);
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    })?;
    Ok(first)
}

/// A future of the first signal; see [`first`].
#[derive(Default)]
pub struct First(Arc<Mutex<FirstState>>);

#[derive(Default)]
struct FirstState {
    received: Option<Signal>,
    /// The task awaiting it, woken when it comes.
    waker: Option<Waker>,
}

impl Future for First {
    type Output = Signal;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Signal> {
        let mut state = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match state.received {
            Some(signal) => Poll::Ready(signal),
            None => {
                state.waker = Some(context.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_signal_reaches_its_handler_and_the_process_goes_on() {
        // SIGTERM to ourselves: uncaught, it would end the test binary.
        let first = first(&[Signal::Term]).expect("SIGTERM can be caught");
        signal_hook::low_level::raise(SIGTERM).expect("raise SIGTERM");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let received = runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(10), first).await.expect("the signal arrives")
        });
        assert_eq!(received, Signal::Term);
    }
}
