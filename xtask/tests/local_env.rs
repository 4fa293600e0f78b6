//! `test` → `release` → `clean` on the real Docker engine, as a user runs
//! them, with the API checked from outside the containers.

mod support;

use std::process::Command;

use xtask_test_support::http::http;
use xtask_test_support::sandbox::Sandbox;
use xtask_test_support::{require_docker, unique_name};

/// `clean` prunes the project's dangling images, and a build has one for a
/// moment before it tags it: the tests here build and clean one at a time.
static ENGINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn engine_lock() -> std::sync::MutexGuard<'static, ()> {
    ENGINE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A sandbox whose images and compose project are this test's alone. The
/// registry host only names the images: nothing is pushed.
fn sandbox() -> (Sandbox, String) {
    let repository = unique_name("todobackend-it-");
    let version = unique_name("v");
    let sandbox = support::sandbox()
        .with_env("ECR_REGISTRY", "localhost:1")
        .with_env("IMAGE_REPOSITORY", &repository)
        .with_env("APP_VERSION", &version);
    (sandbox, format!("localhost:1/{repository}:{version}"))
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker runs");
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn docker_ok(args: &[&str]) -> bool {
    Command::new("docker").args(args).output().is_ok_and(|out| out.status.success())
}

/// Build a throwaway image labelled `application=<label>` from a one-file
/// context; returns its id.
fn labelled_image(label: &str, tag: &str, content: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), content).unwrap();
    // The label first, as in the project's Dockerfile: the layers under the
    // image carry it too.
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM scratch\nLABEL application={label} content={content}\nCOPY f /f\n"),
    )
    .unwrap();
    docker(&["build", "-q", "-t", tag, dir.path().to_str().unwrap()])
}

struct Cleanup<'a>(&'a Sandbox, Vec<String>);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.0.xtask(&["clean"]);
        for image in &self.1 {
            let _ = Command::new("docker").args(["rmi", "-f", image]).output();
        }
    }
}

#[test]
fn test_then_release_then_clean() {
    let _engine = engine_lock();
    require_docker();
    let (sandbox, image) = sandbox();
    let project = sandbox.env.iter().find(|(k, _)| k == "COMPOSE_PROJECT_NAME").unwrap().1.clone();
    let latest = format!("{}:latest", image.rsplit_once(':').unwrap().0);
    let mut cleanup = Cleanup(&sandbox, vec![image.clone(), latest.clone()]);

    let run = sandbox.xtask(&["test"]);
    run.assert_success();
    assert_eq!(run.stdout, "", "test prints no results on stdout");
    let labels =
        docker(&["image", "inspect", "--format", "{{index .Config.Labels \"application\"}} {{.Config.User}}", &image]);
    assert_eq!(labels, "todobackend 10001:10001");
    assert_eq!(
        docker(&["image", "inspect", "--format", "{{.Id}}", &latest]),
        docker(&["image", "inspect", "--format", "{{.Id}}", &image])
    );

    let run = sandbox.xtask(&["release"]);
    run.assert_success();
    let url = run.stdout.trim().strip_prefix("App running at ").expect("release prints the URL").to_owned();
    assert!(run.stdout.ends_with('\n') && run.stdout.lines().count() == 1, "{}", run.stdout);
    check_api_from_outside(&url);

    // Twice in a row works, and the data is still there.
    let run = sandbox.xtask(&["release"]);
    run.assert_success();
    let url = run.stdout.trim().strip_prefix("App running at ").unwrap().to_owned();
    assert_eq!(http(&format!("{url}/"), "GET", &[]).unwrap().status, 200);

    // clean: no container, network or volume of the project is left, and the
    // project's dangling images go while other applications' stay.
    let old_project_image = labelled_image("todobackend", "localhost:1/dangling-it:x", &unique_name("a"));
    let old_parent = docker(&["image", "inspect", "--format", "{{.Parent}}", &old_project_image]);
    let _ = labelled_image("todobackend", "localhost:1/dangling-it:x", &unique_name("b")); // old one now dangling
    let other_image = labelled_image("someone-else", "localhost:1/other-it:x", &unique_name("c"));
    let _ = labelled_image("someone-else", "localhost:1/other-it:x", &unique_name("d"));
    // Removed at the end even if an assertion below fails.
    cleanup.1.extend([
        other_image.clone(),
        "localhost:1/dangling-it:x".to_owned(),
        "localhost:1/other-it:x".to_owned(),
    ]);
    let run = sandbox.xtask(&["clean"]);
    run.assert_success();
    let filter = format!("label=com.docker.compose.project={project}");
    assert_eq!(docker(&["ps", "-aq", "--filter", &filter]), "");
    assert_eq!(docker(&["volume", "ls", "-q", "--filter", &filter]), "");
    assert_eq!(docker(&["network", "ls", "-q", "--filter", &filter]), "");
    assert!(!docker_ok(&["image", "inspect", &old_project_image]), "dangling project image removed");
    if !old_parent.is_empty() {
        assert!(
            !docker_ok(&["image", "inspect", &old_parent]),
            "its labelled parent layer removed with it, not left dangling"
        );
    }
    assert!(docker_ok(&["image", "inspect", &other_image]), "another application's dangling image kept");
    assert!(docker_ok(&["image", "inspect", &image]), "tagged release image kept");

    // Nothing to clean: still a success.
    sandbox.xtask(&["clean"]).assert_success();
}

/// The Todo-Backend behaviours, over real HTTP from the host.
fn check_api_from_outside(url: &str) {
    let root = http(&format!("{url}/"), "GET", &[]).unwrap();
    assert_eq!(root.status, 200);
    let preflight =
        http(&format!("{url}/todos"), "OPTIONS", &[("Origin", "http://x"), ("Access-Control-Request-Method", "PATCH")])
            .unwrap();
    assert!(preflight.status < 300, "OPTIONS answered {}", preflight.status);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    assert_eq!(http(&format!("{url}/todos/999999"), "GET", &[]).unwrap().status, 404);
}

#[test]
fn release_stops_at_a_failing_migration_and_shows_its_logs() {
    let _engine = engine_lock();
    require_docker();
    let (sandbox, image) = sandbox();
    let latest = format!("{}:latest", image.rsplit_once(':').unwrap().0);
    let _cleanup = Cleanup(&sandbox, vec![image.clone(), latest]);
    sandbox.xtask(&["build"]).assert_success();
    // The same image, but its database path cannot be created: migrate fails.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {image}\nENV TODOBACKEND_DB=/nonexistent/dir/db.sqlite3\n"),
    )
    .unwrap();
    docker(&["build", "-q", "-t", &image, dir.path().to_str().unwrap()]);

    let run = sandbox.xtask(&["release", "--no-build"]);
    run.assert_failure();
    assert_eq!(run.stdout, "", "no URL for a failed release");
    assert!(run.stderr.contains("/nonexistent"), "migrate's own output is shown:\n{}", run.stderr);
    let error = run.error_lines().join("\n");
    assert!(error.contains("migrate failed"), "{error}");
    assert!(!run.stderr.contains("start the app"), "nothing runs after the failed migration");
}

#[test]
fn a_swarm_stacks_volumes_are_never_used_or_removed() {
    let _engine = engine_lock();
    require_docker();
    let (sandbox, _image) = sandbox();
    let project = sandbox.env.iter().find(|(k, _)| k == "COMPOSE_PROJECT_NAME").unwrap().1.clone();
    // What `docker stack deploy` makes for a stack of the compose project's name.
    let volume = format!("{project}_data");
    let label = format!("com.docker.stack.namespace={project}");
    docker(&["volume", "create", "--label", &label, &volume]);
    for task in [&["release", "--no-build"][..], &["clean"][..]] {
        let run = sandbox.xtask(task);
        run.assert_failure();
        let error = run.error_lines().join("\n");
        assert!(error.contains("swarm stack") && error.contains("COMPOSE_PROJECT_NAME"), "{task:?}: {error}");
    }
    assert!(docker_ok(&["volume", "inspect", &volume]), "the stack's volume is still there");
    docker(&["volume", "rm", &volume]);
}

/// With no engine behind the endpoint, the light tasks that need one fail
/// at once with the cloud tasks' line (endpoint, origin, what to do), before
/// any compile or build (the test of the engine endpoints, with the cloud
/// tasks, is xtask-cloud's `docker_endpoint`).
#[test]
fn light_tasks_without_an_engine_fail_at_once_naming_the_endpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A socket file nobody listens on: what a stopped engine leaves.
    let socket = dir.path().join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind a socket"));
    let host = format!("unix://{}", socket.display());
    let sandbox = support::sandbox().with_env("DOCKER_HOST", &host).with_env("ECR_REGISTRY", "127.0.0.1:9");
    for task in ["release", "build", "clean"] {
        let run = sandbox.xtask(&[task]);
        run.assert_failure();
        let error = run.error_text();
        assert!(error.contains(&format!("no Docker engine answers at {host} (DOCKER_HOST)")), "{task}: {error}");
        assert_eq!(error.lines().count(), 1, "{task}: {error}");
        assert!(
            !run.stderr.contains("Compiling todobackend") && !run.stderr.contains("==> build:"),
            "{task}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("Cannot connect to the Docker daemon"), "{task}: {}", run.stderr);
    }
}
