//! The real components xtask-cloud's tests run against, each started per
//! test on a free loopback port and stopped when dropped, split by what each
//! provides. What the light crate's tests share with these (the sandbox, the
//! HTTP client, waits, git) is the `xtask-test-support` crate.
//!
//! - [`registry`]: Debian's `docker-registry` with htpasswd auth.
//! - [`moto`]: the ECR emulator, and the AWS environment that points at it.
//! - [`images`]: local images a test builds, removed when dropped.
//! - [`swarm`]: the local single-node swarm: one test at a time, stacks
//!   removed with what the xtask keeps beside them, sandboxes that deploy.
//! - [`app`]: the world of most swarm tests, "a pushed app on a sandbox stack".
//! - [`load`]: a steady load of GETs and POSTs through the stack's edge.
//! - [`multinode`], [`postgres`], [`variants`]: a swarm of several engines,
//!   the tests' PostgreSQL image, the app with migrations of the tests' own.
//! - [`edge`]: the tests' HAProxy image; [`debian_image`], what it and the
//!   PostgreSQL one share (debootstrap from apt's mirror, once per machine).
#![allow(dead_code)] // each test binary uses its own part of this module

pub mod app;
pub mod debian_image;
pub mod edge;
pub mod images;
pub mod load;
pub mod moto;
pub mod multinode;
pub mod postgres;
pub mod registry;
pub mod swarm;
pub mod variants;

use xtask_test_support::sandbox::Sandbox;

/// A sandbox that runs this crate's binary, `xtask-cloud`, the one the light
/// binary hands these tasks to (the hand-over itself is the light crate's test).
pub fn sandbox() -> Sandbox {
    Sandbox::new(env!("CARGO_BIN_EXE_xtask-cloud"))
}

/// A child's stderr, read line by line on a thread: each line is sent as it
/// comes (so a test waits for the moment something is said, not a guessed
/// time), and the thread's result is the whole text.
pub fn stderr_lines(
    stderr: std::process::ChildStderr,
) -> (std::sync::mpsc::Receiver<String>, std::thread::JoinHandle<String>) {
    let (lines, seen) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = lines.send(line);
        }
        all
    });
    (seen, reader)
}
