//! Environments (`--env NAME`, XTASK_ENV: delivery.NAME.yml over
//! delivery.yml) against the real single-node swarm: a second stack side by
//! side with the first, with its own variables, history, status and lock.

mod support;

use std::path::PathBuf;

use support::app::PushedApp;
use support::swarm::{Stack, answers, docker_ok};

/// A `delivery.NAME.yml` at the project root for the test's environment
/// (the settings files live there, beside delivery.yml), removed when dropped.
struct EnvironmentFile(PathBuf);

impl EnvironmentFile {
    fn write(name: &str, text: &str) -> EnvironmentFile {
        let path = xtask_test_support::project_root().join(format!("delivery.{name}.yml"));
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
    let run = support::sandbox().xtask(&["status", "--env", "nosuchenv"]);
    run.assert_failure();
    let error = run.error_text();
    assert!(error.contains("unknown environment \"nosuchenv\""), "{}", run.stderr);
    assert!(error.contains("staging") && error.contains("production"), "{}", run.stderr);
    let run = support::sandbox().with_env("XTASK_ENV", "nosuchenv").xtask(&["history"]);
    assert!(run.error_text().contains("unknown environment \"nosuchenv\""), "{}", run.stderr);
}

#[test]
fn a_second_environment_is_a_stack_of_its_own_with_its_history_status_and_lock() {
    let mut app = PushedApp::start();
    let (a, b) = (app.version.clone(), app.version_named("b"));
    app.derive(&b, &format!("LABEL version={b}"));
    let (sandbox, stack, port) = (&app.sandbox, app.stack.clone(), app.port);
    let staging_port = xtask_test_support::free_port();
    let env_name = xtask_test_support::unique_name("env");
    let staging_stack = format!("{env_name}stack");
    let _staging_stack = Stack(staging_stack.clone());
    // The stack and the edge's ports come from the environment's file.
    let staging_https = xtask_test_support::free_port();
    let _file = EnvironmentFile::write(
        &env_name,
        &format!(
            "stack: {staging_stack}\nvariables:\n  EDGE_HTTP_PORT: {staging_port}\n  EDGE_HTTPS_PORT: {staging_https}\n"
        ),
    );

    let first = sandbox.clone_with(&[("APP_VERSION", &a)]);
    first.xtask(&["deploy", "--no-login", "--timeout", "3m"]).assert_success();
    let staging = sandbox
        .clone_with(&[("APP_VERSION", &b)])
        .without_env("STACK_NAME")
        .without_env("EDGE_HTTP_PORT")
        .without_env("EDGE_HTTPS_PORT");
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
    // The release's services (the edge runs an image of its own).
    let versions: Vec<&str> = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|service| service["name"] != "edge")
        .map(|service| service["version"].as_str().unwrap())
        .collect();
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
    let lock = xtask_cloud::records::lock_name(&stack);
    docker_ok(&["config", "create", &lock, &lock_file.path().display().to_string()]);
    let blocked = first.xtask(&["deploy", "--no-login"]);
    assert_eq!(blocked.status.code(), Some(75), "{}", blocked.stderr);
    let free = staging.xtask(&["deploy", "--env", &env_name, "--no-login", "--timeout", "3m"]);
    free.assert_success();
    docker_ok(&["config", "rm", &lock]);
}
