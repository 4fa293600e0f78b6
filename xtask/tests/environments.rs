//! Environments (`--env NAME`, XTASK_ENV: delivery.NAME.yml over
//! delivery.yml) against the real single-node swarm: a second stack side by
//! side with the first, with its own variables, history, status and lock.

mod support;

use std::path::PathBuf;

use support::swarm::{
    Stack, answers, app_image, derive, docker_login, docker_ok, error_text, label_the_node, push, stack_name,
    swarm_lock,
};
use support::{Images, Moto, Registry, Sandbox};

/// A `delivery.NAME.yml` at the project root for the test's environment
/// (the settings files live there, beside delivery.yml), removed when dropped.
struct EnvironmentFile(PathBuf);

impl EnvironmentFile {
    fn write(name: &str, text: &str) -> EnvironmentFile {
        let path = support::project_root().join(format!("delivery.{name}.yml"));
        std::fs::write(&path, text).expect("write the environment's settings file");
        EnvironmentFile(path)
    }
}

impl Drop for EnvironmentFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn an_unknown_environment_is_refused_naming_the_known_ones() {
    let run = Sandbox::new().xtask(&["status", "--env", "nosuchenv"]);
    run.assert_failure();
    let error = error_text(&run);
    assert!(error.contains("unknown environment \"nosuchenv\""), "{}", run.stderr);
    assert!(error.contains("staging") && error.contains("production"), "{}", run.stderr);
    let run = Sandbox::new().with_env("XTASK_ENV", "nosuchenv").xtask(&["history"]);
    assert!(error_text(&run).contains("unknown environment \"nosuchenv\""), "{}", run.stderr);
}

#[test]
fn a_second_environment_is_a_stack_of_its_own_with_its_history_status_and_lock() {
    let _lock = swarm_lock();
    label_the_node();
    let registry = Registry::start_for_ecr();
    let moto = Moto::start();
    let (port, staging_port) = (support::free_port(), support::free_port());
    let sandbox = support::swarm::stack_sandbox(&moto, &registry, port);
    let stack = stack_name(&sandbox);
    let _stack = Stack(stack.clone());
    let env_name = support::unique_name("env");
    let staging_stack = format!("{env_name}stack");
    let _staging_stack = Stack(staging_stack.clone());
    // The stack and the published port come from the environment's file.
    let _file = EnvironmentFile::write(
        &env_name,
        &format!("stack: {staging_stack}\nvariables:\n  APP_PUBLISHED_PORT: {staging_port}\n"),
    );
    let mut images = Images(Vec::new());
    let suffix = support::unique_name("v");
    let (a, b) = (format!("a{suffix}"), format!("b{suffix}"));
    docker_login(&sandbox, &registry);
    let image_a = app_image(&sandbox, &registry, &a, &mut images);
    let image_b = format!("{}/todobackend:{b}", registry.host());
    derive(&image_a, &image_b, &format!("LABEL version={b}"), &mut images);
    push(&sandbox, &image_a);
    push(&sandbox, &image_b);

    let first = sandbox.clone_with(&[("APP_VERSION", &a)]);
    first.xtask(&["deploy", "--no-login", "--timeout", "3m"]).assert_success();
    let staging =
        sandbox.clone_with(&[("APP_VERSION", &b)]).without_env("STACK_NAME").without_env("APP_PUBLISHED_PORT");
    let deployed = staging.xtask(&["deploy", "--env", &env_name, "--no-login", "--timeout", "3m"]);
    deployed.assert_success();
    assert!(deployed.stdout.contains(&format!("is live on stack {staging_stack}")), "{}", deployed.stdout);
    // Side by side: both answer, each on its own port.
    assert!(answers(port), "the first stack stopped answering");
    assert!(answers(staging_port), "the environment's stack does not answer on its port");

    // status and history see only the environment's stack (XTASK_ENV too).
    let status = staging.xtask(&["status", "--env", &env_name, "--json"]);
    assert!(status.success(), "{}\n{}", status.stdout, status.stderr);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).expect("status --json");
    assert_eq!(status["stack"], serde_json::json!(staging_stack));
    let versions: Vec<&str> =
        status["services"].as_array().unwrap().iter().map(|service| service["version"].as_str().unwrap()).collect();
    assert!(versions.iter().all(|version| *version == b), "{versions:?}");
    let history = staging.clone_with(&[("XTASK_ENV", &env_name)]).xtask(&["history", "--json"]);
    history.assert_success();
    let entries: serde_json::Value = serde_json::from_str(&history.stdout).expect("history --json");
    let entry_versions: Vec<&str> =
        entries.as_array().unwrap().iter().map(|e| e["version"].as_str().unwrap()).collect();
    assert!(!entry_versions.is_empty() && entry_versions.iter().all(|v| *v == b), "{entry_versions:?}");
    let first_history = first.xtask(&["history", "--json"]);
    assert!(!first_history.stdout.contains(&b), "the first stack's history has the environment's deploy");

    // Each its own lock: the first stack's held, the environment deploys.
    let holder = serde_json::json!({
        "task": "deploy", "version": "x", "holder": "someone", "host": "elsewhere", "pid": 1,
        "since": "2026-12-03T00:00:00Z", "token": "t"
    });
    let lock_file = tempfile::NamedTempFile::new().expect("lock file");
    std::fs::write(lock_file.path(), holder.to_string()).expect("write lock");
    docker_ok(&["config", "create", &format!("{stack}_deploy_lock"), &lock_file.path().display().to_string()]);
    let blocked = first.xtask(&["deploy", "--no-login"]);
    assert_eq!(blocked.status.code(), Some(75), "{}", blocked.stderr);
    let free = staging.xtask(&["deploy", "--env", &env_name, "--no-login", "--timeout", "3m"]);
    free.assert_success();
    docker_ok(&["config", "rm", &format!("{stack}_deploy_lock")]);
}
