//! The commands a pipeline's stage runs, stopped with it. Once a pipeline
//! asks for it (`ci`, through [`stop_with_the_pipeline`]), every command
//! [`Ctx::run`](crate::ctx::Ctx::run) starts gets a process group of its own,
//! whose members (cargo and its rustc, docker compose and its helpers) are
//! then signalled together by [`signal_all`]: a SIGINT or SIGTERM sent to the
//! xtask alone (a CI runner cancelling a job, `kill`) then stops the stage's
//! work too, instead of waiting for it or leaving it running as an orphan
//! after a second signal. A Ctrl-C in a terminal reaches only the xtask's own
//! group, so the signal is always passed on from here.
//!
//! Such a command runs with stdin closed: a process in a group that is not
//! the terminal's foreground would be stopped (SIGTTIN) reading it, and none
//! of the pipeline's commands reads input (`docker compose run` allocates no
//! terminal then).

use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

static GROUPED: AtomicBool = AtomicBool::new(false);
/// The process groups (their leaders' pids) of the commands running now.
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// From now on, each command run through `Ctx::run` is a process group of
/// its own, which [`signal_all`] reaches.
pub fn stop_with_the_pipeline() {
    GROUPED.store(true, Ordering::SeqCst);
}

/// Send `signal` (a `libc::SIG*`) to the process group of every command
/// running now; how many there were.
pub fn signal_all(signal: i32) -> usize {
    let running = running();
    for pid in running.iter() {
        if let Ok(group) = libc::pid_t::try_from(*pid) {
            // SAFETY: kill only sends a signal; a group that has just ended
            // makes it fail (ESRCH), which changes nothing.
            unsafe { libc::kill(-group, signal) };
        }
    }
    running.len()
}

fn running() -> std::sync::MutexGuard<'static, Vec<u32>> {
    RUNNING.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Run `command` to its end, its output passed through as set on it.
pub fn status(command: Command) -> std::io::Result<ExitStatus> {
    run(command, |mut child| child.wait())
}

/// Run `command` to its end, capturing stdout and stderr.
pub fn output(mut command: Command) -> std::io::Result<Output> {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    run(command, |child| child.wait_with_output())
}

fn run<T>(mut command: Command, wait: impl FnOnce(std::process::Child) -> std::io::Result<T>) -> std::io::Result<T> {
    if !GROUPED.load(Ordering::SeqCst) {
        return wait(command.spawn()?);
    }
    use std::os::unix::process::CommandExt;
    command.process_group(0).stdin(Stdio::null());
    // Spawned and listed under the lock: a signal passed on meanwhile waits
    // for the listing, and reaches this command too.
    let child = {
        let mut running = running();
        let child = command.spawn()?;
        running.push(child.id());
        child
    };
    let pid = child.id();
    let result = wait(child);
    running().retain(|listed| *listed != pid);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_passed_on_reaches_the_commands_children_too() {
        stop_with_the_pipeline();
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("sleep.pid");
        // A shell and its child, as cargo and its rustc.
        let mut command = Command::new("sh");
        command.arg("-c").arg(format!("sleep 60 & echo $! > {}; wait", pid_file.display()));
        let ran = std::thread::spawn(move || status(command).expect("sh runs"));
        let started = std::time::Instant::now();
        while !pid_file.exists() || std::fs::read_to_string(&pid_file).unwrap().trim().is_empty() {
            assert!(started.elapsed().as_secs() < 20, "the command did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let sleep: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        assert_eq!(signal_all(libc::SIGTERM), 1);
        let status = ran.join().unwrap();
        assert!(!status.success(), "{status}");
        assert!(started.elapsed().as_secs() < 30, "the command ran on after the signal");
        // The grandchild is gone too (a zombie of init's at most, briefly).
        let gone = (0..200).any(|_| {
            // SAFETY: signal 0 only checks that the process exists.
            let alive = unsafe { libc::kill(sleep, 0) } == 0;
            std::thread::sleep(std::time::Duration::from_millis(20));
            !alive || std::fs::read_to_string(format!("/proc/{sleep}/stat")).is_ok_and(|stat| stat.contains(") Z "))
        });
        assert!(gone, "the command's child outlived the signal");
    }
}
