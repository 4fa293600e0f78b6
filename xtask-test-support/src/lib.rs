//! What the integration tests of both xtask crates share, none of it tied to
//! AWS or to xtask-cloud's names:
//!
//! - [`sandbox`]: a `cargo xtask` command with a private Docker config and
//!   nothing of the caller's AWS or CI settings, and what a run printed.
//! - [`http`]: a minimal HTTP/1.1 client that only talks to loopback (or to
//!   the private network a test made).
//! - [`git`]: throwaway git repositories.
//! - Here: waits, free ports, unique names, and the Docker engine check.
//!
//! The registry, the ECR emulator and the swarm helpers are xtask-cloud's
//! (`xtask-cloud/tests/support`): only its tests use them.

pub mod git;
pub mod http;
pub mod sandbox;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The workspace's root: the checkout the tests run the xtask in.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask-test-support sits in the workspace").to_owned()
}

/// The cargo target directory (CARGO_TARGET_DIR, else `target/`): where
/// expensive test fixtures (moto's venv, built images' inputs) are kept.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| project_root().join("target"))
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    listener.local_addr().expect("local address").port()
}

/// A unique, Docker-safe name for this test's resources.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}{}x{}x{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst), nanos % 10_000)
}

/// How often [`wait_until`] looks again: short next to any wait it serves
/// (a task starting, a service converging) and to the moments a test holds a
/// process still at (ops: a deploy stopped right after it took the lock,
/// before its database job), short enough that a `docker` call dominates.
const POLL: Duration = Duration::from_millis(50);

/// Wait until `ready`, polling: the wait ends on the event, within `timeout`
/// (else the test fails, naming `what`). Returns how long it took.
pub fn wait_until(what: &str, timeout: Duration, ready: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    assert!(poll_until(timeout, ready), "{what}: not within {timeout:?}");
    start.elapsed()
}

/// [`wait_until`] for clean-up, which must not panic: whether `ready` came
/// within `timeout`.
pub fn poll_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if ready() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Run `cmd`, which must succeed; `what` names it in the failure.
pub fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|err| panic!("{what}: {err}"));
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The local Docker engine must answer; tests that need it fail otherwise.
pub fn require_docker() {
    let out = Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output();
    match out {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "no Docker engine answers (`docker info`: {}). Start one: `dockerd >/tmp/dockerd.log 2>&1 &` as root \
             (or `sudo systemctl start docker`), or point DOCKER_HOST at one; `bash .ci/run` does this.",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(err) => {
            panic!("the docker CLI is missing ({err}): install Debian's docker.io (`apt-get install docker.io`)")
        }
    }
}

/// The local engine must also be a swarm manager.
pub fn require_swarm() {
    require_docker();
    let out = Command::new("docker")
        .args(["info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"])
        .output()
        .expect("docker runs");
    let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(
        state, "active true",
        "the local Docker engine is not a swarm manager: run `docker swarm init --advertise-addr 127.0.0.1`"
    );
}
