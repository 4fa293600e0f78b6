//! The Docker engine the xtask talks to is the one the docker CLI would:
//! `DOCKER_HOST`, else the context (`DOCKER_CONTEXT`, else config.json's
//! `currentContext`), else the default socket; the engine API and every
//! docker command of a run use the same one.
//!
//! These are `xtask-cloud`'s tests, yet they live under `xtask/tests`: only
//! here does a test run `cargo xtask` as a user does, the light binary first,
//! which hands the task over to `xtask-cloud` (the real hand-over, with its
//! command line, environment and exit code).

mod support;

use support::swarm::{
    Stack, app_image, docker_login, error_text, label_the_node, push, stack_exists, stack_name, swarm_lock,
};
use support::{Images, Moto, Registry, Sandbox};

/// `docker context create NAME --docker host=HOST` in the sandbox's Docker config.
fn create_context(sandbox: &Sandbox, name: &str, host: &str) {
    let made = sandbox.docker(&["context", "create", name, "--docker", &format!("host={host}")]);
    assert!(made.success(), "docker context create: {}", made.stderr);
}

#[test]
fn a_context_is_followed_and_docker_host_wins_over_it() {
    let _lock = swarm_lock();
    label_the_node();
    let registry = Registry::start_for_ecr();
    let moto = Moto::start();
    let sandbox = support::swarm::stack_sandbox(&moto, &registry, support::free_port()).without_env("DOCKER_HOST");
    let stack = stack_name(&sandbox);
    let _stack = Stack(stack.clone());
    let mut images = Images(Vec::new());
    let version = support::unique_name("a");
    docker_login(&sandbox, &registry);
    let image = app_image(&sandbox, &registry, &version, &mut images);
    push(&sandbox, &image);

    // A context whose endpoint does not exist: the pre-flight fails, naming
    // the endpoint and the context.
    create_context(&sandbox, "nowhere", "unix:///nonexistent/docker.sock");
    let nowhere = sandbox.clone_with(&[("APP_VERSION", &version), ("DOCKER_CONTEXT", "nowhere")]);
    let dry = nowhere.xtask(&["deploy", "--no-login", "--dry-run"]);
    dry.assert_failure();
    let error = error_text(&dry);
    assert!(error.contains("unix:///nonexistent/docker.sock") && error.contains("context \"nowhere\""), "{error}");

    // DOCKER_HOST wins over the context.
    let host_wins = nowhere.clone_with(&[("DOCKER_HOST", "unix:///var/run/docker.sock")]);
    let dry = host_wins.xtask(&["deploy", "--no-login", "--dry-run"]);
    dry.assert_success();
    assert!(!stack_exists(&stack), "a dry run deployed");

    // The current context of config.json, reaching the engine through
    // another path to its socket: a real deploy converges through it.
    let socket_dir = tempfile::tempdir().expect("temp dir");
    let socket = socket_dir.path().join("engine.sock");
    std::os::unix::fs::symlink("/var/run/docker.sock", &socket).expect("link the engine's socket");
    create_context(&sandbox, "elsewhere", &format!("unix://{}", socket.display()));
    let used = sandbox.docker(&["context", "use", "elsewhere"]);
    assert!(used.success(), "docker context use: {}", used.stderr);
    let deployed = sandbox.clone_with(&[("APP_VERSION", &version)]).xtask(&["deploy", "--no-login", "--timeout", "3m"]);
    deployed.assert_success();
    assert!(deployed.stdout.contains(&format!("Version {version} is live")), "{}", deployed.stdout);
    // The engine behind the context is this one.
    assert!(stack_exists(&stack));

    // And with the link gone, the same context fails: the run did go through it.
    std::fs::remove_file(&socket).expect("remove the link");
    let gone = sandbox.clone_with(&[("APP_VERSION", &version)]).xtask(&["status"]);
    gone.assert_failure();
    assert!(error_text(&gone).contains("context \"elsewhere\""), "{}", gone.stderr);
}
