//! Operating a deployed stack on the real swarm: `status` as a gate, `logs`
//! per task version, and the deploy lock: two deploys at once never
//! interleave, and a lock left by a killed deploy blocks the next one until
//! `unlock`.
//!
//! These are `xtask-cloud`'s tests, yet they live under `xtask/tests`: only
//! here does a test run `cargo xtask` as a user does, the light binary first,
//! which hands the task over to `xtask-cloud` (the real hand-over, with its
//! command line, environment and exit code).

mod support;

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use support::swarm::{
    Stack, app_image, derive, docker, docker_login, docker_ok, error_text, label_the_node, push, stack_name, swarm_lock,
};
use support::{Images, Moto, Registry, Run, Sandbox};

fn run_of(out: Output) -> Run {
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn lock_exists(stack: &str) -> bool {
    docker(&["config", "inspect", &format!("{stack}_deploy_lock")]).status.success()
}

#[test]
fn status_logs_and_the_deploy_lock_on_a_real_stack() {
    let _lock = swarm_lock();
    label_the_node();
    let registry = Registry::start_for_ecr();
    let moto = Moto::start();
    let port = support::free_port();
    let sandbox = Sandbox::new()
        .with_aws(&moto)
        .with_registry(&registry)
        .with_env("APP_PUBLISH_MODE", "host")
        .with_env("APP_UPDATE_ORDER", "stop-first")
        .with_env("APP_PUBLISHED_PORT", &port.to_string())
        .with_env("APP_REPLICAS", "1")
        .with_env("APP_UPDATE_DELAY", "1s")
        .with_env("APP_UPDATE_MONITOR", "5s")
        .with_env("JOB_RESTART_DELAY", "1s");
    let stack = stack_name(&sandbox);
    let _stack = Stack(stack.clone());
    let mut images = Images(Vec::new());
    let suffix = support::unique_name("v");
    let [a, b] = ["a", "b"].map(|name| format!("{name}{suffix}"));
    let host = registry.host();
    docker_login(&sandbox, &registry);
    let image_a = app_image(&sandbox, &registry, &a, &mut images);
    derive(&image_a, &format!("{host}/todobackend:{b}"), &format!("LABEL version={b}"), &mut images);
    for version in [&a, &b] {
        push(&sandbox, &format!("{host}/todobackend:{version}"));
    }
    let at = |version: &str| sandbox.clone_with(&[("APP_VERSION", version)]);

    // No stack yet: one line, exit 1.
    let none = sandbox.xtask(&["status"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(error_text(&none).contains("not deployed"), "{}", none.stderr);

    at(&a).xtask(&["deploy", "--no-login", "--timeout", "3m"]).assert_success();

    // status: 0 on the converged stack, naming its version.
    let status = sandbox.xtask(&["status"]);
    status.assert_success();
    assert!(
        status.stdout.lines().any(|line| line.starts_with("app") && line.contains(&a) && line.contains("converged")),
        "{}",
        status.stdout
    );
    assert!(status.stdout.contains(&format!("last deploy: {a} converged")), "{}", status.stdout);
    let json: serde_json::Value =
        serde_json::from_str(&sandbox.xtask(&["status", "--json"]).stdout).expect("status --json");
    assert_eq!(json["converged"], true);

    // logs: lines, each prefixed with its service and version.
    let logs = sandbox.xtask(&["logs", "app", "--tail", "5"]);
    logs.assert_success();
    assert!(!logs.stdout.is_empty(), "no log lines");
    assert!(logs.stdout.lines().all(|line| line.starts_with(&format!("app@{a} | "))), "{}", logs.stdout);
    let unknown = sandbox.xtask(&["logs", "nosuch"]);
    unknown.assert_failure();
    assert!(error_text(&unknown).contains("app") && error_text(&unknown).contains("migrate"), "{}", unknown.stderr);

    // A service that cannot reach its replicas (a second host-mode replica
    // has no port on one node): status says so and exits 1.
    docker_ok(&["service", "update", "--detach", "--replicas", "2", &format!("{stack}_app")]);
    let waiting = sandbox.xtask(&["status"]);
    assert_eq!(waiting.status.code(), Some(1), "{}{}", waiting.stdout, waiting.stderr);
    assert!(
        error_text(&waiting).contains("has not converged") && error_text(&waiting).contains("app"),
        "{}",
        waiting.stderr
    );
    docker_ok(&["service", "update", "--detach", "--replicas", "1", &format!("{stack}_app")]);

    // Two deploys at once: one takes the lock, the other is refused at once,
    // naming the holder; the swarm never sees them interleave.
    let spawn = |version: &str| {
        at(version)
            .command_in(&sandbox.root, &["deploy", "--no-login", "--timeout", "3m"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn a deploy")
    };
    let first = spawn(&b);
    let second = spawn(&b);
    let runs = [run_of(first.wait_with_output().unwrap()), run_of(second.wait_with_output().unwrap())];
    let succeeded = runs.iter().filter(|run| run.success()).count();
    assert_eq!(succeeded, 1, "{:?}", runs.iter().map(|run| &run.stderr).collect::<Vec<_>>());
    let refused = runs.iter().find(|run| !run.success()).unwrap();
    assert!(error_text(refused).contains(&format!("deploy of {b} in progress by")), "{}", refused.stderr);
    for run in &runs {
        assert!(!run.stderr.contains("out of sequence"), "{}", run.stderr);
    }
    assert!(!lock_exists(&stack), "the lock outlived the deploy");
    sandbox.xtask(&["status"]).assert_success();

    // A deploy killed outright leaves its lock: the next one is refused,
    // naming the holder, until `unlock`.
    let mut killed = at(&a)
        .command_in(&sandbox.root, &["deploy", "--no-login", "--timeout", "3m"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn a deploy");
    let start = Instant::now();
    while !lock_exists(&stack) {
        assert!(start.elapsed() < Duration::from_secs(120), "the deploy never took the lock");
        std::thread::sleep(Duration::from_millis(200));
    }
    killed.kill().expect("SIGKILL the deploy");
    let _ = killed.wait();
    let blocked = at(&a).xtask(&["deploy", "--no-login"]);
    blocked.assert_failure();
    let error = error_text(&blocked);
    assert!(
        error.contains(&format!("deploy of {a} in progress by")) && error.contains(&format!("process {}", killed.id())),
        "{error}"
    );
    assert!(error.contains("cargo xtask unlock"), "{error}");
    let unlock = sandbox.xtask(&["unlock"]);
    unlock.assert_success();
    assert!(unlock.stderr.contains(&format!("deploy of {a} in progress by")), "{}", unlock.stderr);
    assert!(!lock_exists(&stack));
    at(&a).xtask(&["deploy", "--no-login", "--timeout", "3m"]).assert_success();
    assert!(!lock_exists(&stack));
}
