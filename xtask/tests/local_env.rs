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

/// A sandbox whose images and compose project are this test's alone, and
/// the local name its build gives the release image. Nothing is pushed:
/// the registry is named only because every manual run names one.
fn sandbox() -> (Sandbox, String) {
    let repository = unique_name("todobackend-it-");
    let version = unique_name("v");
    let sandbox = support::sandbox()
        .with_env("ECR_REGISTRY", "localhost:1")
        .with_env("IMAGE_REPOSITORY", &repository)
        .with_env("APP_VERSION", &version);
    let image = sandbox.local_image(&repository, &version);
    (sandbox, image)
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
/// context, as the build of the local environment `project` labels it;
/// returns its id.
fn labelled_image(label: &str, project: &str, tag: &str, content: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), content).unwrap();
    // The label first, as in the project's Dockerfile: the layers under the
    // image carry it too.
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM scratch\nLABEL application={label} content={content}\nCOPY f /f\n"),
    )
    .unwrap();
    let mine = format!("xtask.local-project={project}");
    docker(&["build", "-q", "--label", &mine, "-t", tag, dir.path().to_str().unwrap()])
}

struct Cleanup<'a>(&'a Sandbox, Vec<String>);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.0.xtask(&["clean"]);
        // Each image with the SBOM image `build` made beside it.
        for image in self.1.iter().flat_map(|image| [image.clone(), format!("{image}.sbom")]) {
            let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
        }
        if let Some(project) = self.0.env_value("COMPOSE_PROJECT_NAME") {
            remove_lock_file(project);
        }
    }
}

/// The file of the local environment's lock, which the xtask keeps (removing
/// a lock file while another run waits on it would let a third take a new
/// one): the test's project is gone, and so goes its file.
fn remove_lock_file(project: &str) {
    let _ = std::fs::remove_file(std::env::temp_dir().join(format!("xtask-local-{project}.lock")));
}

#[test]
fn test_then_release_then_clean() {
    let _engine = engine_lock();
    require_docker();
    let (sandbox, image) = sandbox();
    let project = sandbox.env.iter().find(|(k, _)| k == "COMPOSE_PROJECT_NAME").unwrap().1.clone();
    let mut cleanup = Cleanup(&sandbox, vec![image.clone()]);

    let run = sandbox.xtask(&["test"]);
    run.assert_success();
    assert_eq!(run.stdout, "", "test prints no results on stdout");
    let format =
        "{{index .Config.Labels \"application\"}} {{index .Config.Labels \"xtask.local-project\"}} {{.Config.User}}";
    let labels = docker(&["image", "inspect", "--format", format, &image]);
    assert_eq!(labels, format!("todobackend {project} 10001:10001"));
    the_binary_is_roots_and_only_data_and_public_are_the_users(&image);
    assert!(
        !run.stderr.contains("DEPRECATED: The legacy builder"),
        "the docker CLI's notice gives way to our line:\n{}",
        run.stderr
    );

    let run = sandbox.xtask(&["release"]);
    run.assert_success();
    let url = run.stdout.trim().strip_prefix("App running at ").expect("release prints the URL").to_owned();
    assert!(run.stdout.ends_with('\n') && run.stdout.lines().count() == 1, "{}", run.stdout);
    // Compose v1's swarm-mode warning (this engine is a swarm manager) gives
    // way to our one line.
    assert!(!run.stderr.contains("running in swarm mode"), "{}", run.stderr);
    let swarm = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]) == "active";
    let compose_v1 = !docker_ok(&["compose", "version"]);
    if swarm && compose_v1 {
        assert_eq!(run.stderr.matches("note: this engine is a swarm manager").count(), 1, "{}", run.stderr);
    }
    check_api_from_outside(&url);

    // Twice in a row works, and the data is still there.
    let run = sandbox.xtask(&["release"]);
    run.assert_success();
    let url = run.stdout.trim().strip_prefix("App running at ").unwrap().to_owned();
    assert_eq!(http(&format!("{url}/"), "GET", &[]).unwrap().status, 200);

    // clean: no container, network or volume of the project is left, and the
    // project's dangling images go while other applications' and other
    // checkouts' stay.
    let dangling = format!("{project}/dangling-it:x");
    let old_project_image = labelled_image("todobackend", &project, &dangling, &unique_name("a"));
    let old_parent = docker(&["image", "inspect", "--format", "{{.Parent}}", &old_project_image]);
    let _ = labelled_image("todobackend", &project, &dangling, &unique_name("b")); // old one now dangling
    let other = format!("{project}/other-it:x");
    let other_image = labelled_image("someone-else", &project, &other, &unique_name("c"));
    let _ = labelled_image("someone-else", &project, &other, &unique_name("d"));
    let elsewhere = format!("{project}/elsewhere-it:x");
    let other_checkouts =
        labelled_image("todobackend", &unique_name("another-checkout"), &elsewhere, &unique_name("e"));
    let _ = labelled_image("todobackend", "another", &elsewhere, &unique_name("f"));
    // Removed at the end even if an assertion below fails.
    cleanup.1.extend([other_image.clone(), other_checkouts.clone(), dangling, other, elsewhere]);
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
    assert!(docker_ok(&["image", "inspect", &other_checkouts]), "another checkout's dangling image kept");
    assert!(docker_ok(&["image", "inspect", &image]), "tagged release image kept");

    // Nothing to clean: still a success.
    sandbox.xtask(&["clean"]).assert_success();
}

/// The release image's files, as `docker export` of a container made from
/// it lists them (a scratch image has no shell to ask): the binary is
/// root's, mode 0555, so the process (uid 10001) cannot replace it; /data and
/// /public are the only entries uid 10001 owns; and the image declares no
/// VOLUME (what a service writes, its stack mounts).
fn the_binary_is_roots_and_only_data_and_public_are_the_users(image: &str) {
    let container = docker(&["create", image]);
    let export = Command::new("docker").args(["export", &container]).output().expect("docker export runs");
    let _ = Command::new("docker").args(["rm", &container]).output();
    assert!(export.status.success(), "docker export: {}", String::from_utf8_lossy(&export.stderr));
    let dir = tempfile::tempdir().unwrap();
    let tar_file = dir.path().join("image.tar");
    std::fs::write(&tar_file, &export.stdout).unwrap();
    let listing = Command::new("tar").arg("-tvf").arg(&tar_file).arg("--numeric-owner").output().expect("tar runs");
    assert!(listing.status.success(), "tar: {}", String::from_utf8_lossy(&listing.stderr));
    let listing = String::from_utf8_lossy(&listing.stdout);
    // `-r-xr-xr-x 0/0 9166336 2026-12-07 18:11 todobackend`: mode, owner, ..., path.
    let entries: Vec<(&str, &str, &str)> = listing
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            Some((*words.first()?, *words.get(1)?, words.get(5)?.trim_end_matches('/')))
        })
        .collect();
    let entry = |path: &str| entries.iter().find(|(_, _, name)| *name == path).copied();
    assert_eq!(entry("todobackend"), Some(("-r-xr-xr-x", "0/0", "todobackend")), "{listing}");
    for dir in ["data", "public"] {
        assert_eq!(entry(dir), Some(("drwxr-xr-x", "10001/10001", dir)), "{listing}");
    }
    let mut users: Vec<&str> =
        entries.iter().filter(|(_, owner, _)| owner.starts_with("10001/")).map(|entry| entry.2).collect();
    users.sort();
    assert_eq!(users, ["data", "public"], "{listing}");
    assert_eq!(docker(&["image", "inspect", "--format", "{{json .Config.Volumes}}", image]), "null");
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
    let _cleanup = Cleanup(&sandbox, vec![image.clone()]);
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
    assert!(error.contains("migrate failed") && error.contains("/nonexistent"), "the error names the cause: {error}");
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

/// Make a network named `name` with compose's labels for `project` through
/// the engine API, which (unlike the CLI) can skip the duplicate check: what
/// two compose commands racing to create a project's network leave. Returns
/// its id.
fn compose_network(project: &str, name: &str) -> String {
    use std::io::{Read, Write};
    let body = format!(
        r#"{{"Name":"{name}","CheckDuplicate":false,"Labels":{{"com.docker.compose.project":"{project}","com.docker.compose.network":"default"}}}}"#
    );
    let socket = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|host| host.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| "/var/run/docker.sock".to_owned());
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).expect("the engine's socket");
    write!(
        stream,
        "POST /v1.41/networks/create HTTP/1.0\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 201") || answer.starts_with("HTTP/1.1 201"), "{answer}");
    let id = answer.split("\"Id\":\"").nth(1).and_then(|rest| rest.split('"').next()).expect("an id");
    id.to_owned()
}

/// The ids of the networks named exactly `name`.
fn networks_named(name: &str) -> Vec<String> {
    let listed =
        docker(&["network", "ls", "--no-trunc", "--filter", &format!("name={name}"), "--format", "{{.ID}} {{.Name}}"]);
    listed
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, n)| *n == name)
        .map(|(id, _)| id.to_owned())
        .collect()
}

#[test]
fn clean_repairs_a_duplicated_network_of_its_own_project_only() {
    let _engine = engine_lock();
    require_docker();
    let (sandbox, _image) = sandbox();
    let project = sandbox.env_value("COMPOSE_PROJECT_NAME").unwrap().to_owned();
    let mine = format!("{project}_default");
    let other_project = unique_name("otherproject");
    let theirs = format!("{other_project}_default");
    let _twice = [compose_network(&project, &mine), compose_network(&project, &mine)];
    let other = [compose_network(&other_project, &theirs), compose_network(&other_project, &theirs)];
    let _cleanup = Cleanup(&sandbox, Vec::new());

    // Before the repair, compose failed here: "network ... is ambiguous".
    let run = sandbox.xtask(&["clean"]);
    let left_of_theirs = networks_named(&theirs);
    for id in &other {
        let _ = Command::new("docker").args(["network", "rm", id]).output();
    }
    run.assert_success();
    assert!(run.stderr.contains(&format!("networks named {mine} more than once")), "{}", run.stderr);
    assert_eq!(networks_named(&mine), Vec::<String>::new(), "clean leaves no network of its project");
    assert_eq!(left_of_theirs.len(), 2, "another project's networks are not clean's to repair");
    // And again, with nothing to repair.
    sandbox.xtask(&["clean"]).assert_success();
}

/// Wait until `path` (a run's stderr) contains `text`.
fn wait_for_line(path: &std::path::Path, text: &str, what: &str) {
    xtask_test_support::wait_until(what, std::time::Duration::from_secs(300), || {
        std::fs::read_to_string(path).is_ok_and(|stderr| stderr.contains(text))
    });
}

#[test]
fn two_releases_at_once_take_turns_and_the_second_names_the_first() {
    let _engine = engine_lock();
    require_docker();
    let (sandbox, image) = sandbox();
    let project = sandbox.env_value("COMPOSE_PROJECT_NAME").unwrap().to_owned();
    let _cleanup = Cleanup(&sandbox, vec![image.clone()]);
    sandbox.xtask(&["build"]).assert_success();

    let logs = tempfile::tempdir().unwrap();
    let spawn = |name: &str| {
        let stderr = logs.path().join(name);
        let child = sandbox
            .command(&["release", "--no-build"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn a release");
        (child, stderr)
    };
    let (first, first_log) = spawn("first");
    // The first holds the environment once it runs its first compose step.
    wait_for_line(&first_log, "==> release: run the migrations", "the first release takes the environment");
    let (second, second_log) = spawn("second");
    let first_pid = first.id();
    let (first, second) = (first.wait_with_output().unwrap(), second.wait_with_output().unwrap());
    let (first_err, second_err) =
        (std::fs::read_to_string(&first_log).unwrap(), std::fs::read_to_string(&second_log).unwrap());
    assert!(first.status.success(), "first release:\n{first_err}");
    assert!(second.status.success(), "second release:\n{second_err}");
    assert!(
        second_err.contains(&format!(
            "waiting for the local environment {project}: in use by `cargo xtask release` (pid {first_pid}"
        )),
        "the second waits, naming the first:\n{second_err}"
    );
    for out in [&first, &second] {
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("App running at http://localhost:"));
    }
    assert_eq!(networks_named(&format!("{project}_default")).len(), 1, "one network, not two of one name");
    sandbox.xtask(&["clean"]).assert_success();
}

/// A checkout of the project in a directory named `name` under `parent`:
/// the files the local environment's tasks read (no sources: its image is
/// tagged in by the test, and `release --no-build` builds nothing).
fn checkout(parent: &std::path::Path, name: &str) -> std::path::PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["delivery.yml", "docker-compose.yml"] {
        std::fs::copy(xtask_test_support::project_root().join(file), dir.join(file)).unwrap();
    }
    dir
}

#[test]
fn two_checkouts_have_their_own_environments_and_clean_leaves_the_other_running() {
    let _engine = engine_lock();
    require_docker();
    let (built, image) = sandbox();
    let mut cleanup = Cleanup(&built, vec![image.clone()]);
    built.xtask(&["build"]).assert_success();
    let repository = built.env_value("IMAGE_REPOSITORY").unwrap().to_owned();
    let version = built.env_value("APP_VERSION").unwrap().to_owned();

    // Two clones, in directories of different names, with no compose project set.
    let parent = tempfile::tempdir().unwrap();
    let names = [unique_name("alpha"), unique_name("beta")];
    let checkouts = names.each_ref().map(|name| checkout(parent.path(), name));
    let user = built.clone_with(&[]).without_env("COMPOSE_PROJECT_NAME");
    // The project as docker compose derives it from the directory, then -local.
    let projects = names.each_ref().map(|name| format!("{name}-local"));
    for project in &projects {
        let local = format!("{project}/{repository}:{version}");
        docker(&["tag", &image, &local]);
        cleanup.1.push(local);
    }
    let _clean_both = CleanIn(&user, &checkouts);

    let mut urls = Vec::new();
    for dir in &checkouts {
        let run = user.xtask_in(dir, &["release", "--no-build"]);
        run.assert_success();
        urls.push(run.stdout.trim().strip_prefix("App running at ").expect("the URL").to_owned());
    }
    for project in &projects {
        let filter = format!("label=com.docker.compose.project={project}");
        assert_ne!(docker(&["ps", "-q", "--filter", &filter]), "", "{project} runs its own app");
    }
    assert_ne!(urls[0], urls[1]);

    user.xtask_in(&checkouts[0], &["clean"]).assert_success();
    let filter = |project: &str| format!("label=com.docker.compose.project={project}");
    assert_eq!(docker(&["ps", "-aq", "--filter", &filter(&projects[0])]), "", "clean removed its own");
    assert_ne!(docker(&["ps", "-q", "--filter", &filter(&projects[1])]), "", "the other checkout's app still runs");
    assert_eq!(http(&format!("{}/", urls[1]), "GET", &[]).unwrap().status, 200, "and still answers");
}

/// Runs `clean` in each checkout when dropped.
struct CleanIn<'a>(&'a Sandbox, &'a [std::path::PathBuf; 2]);

impl Drop for CleanIn<'_> {
    fn drop(&mut self) {
        for dir in self.1 {
            let _ = self.0.xtask_in(dir, &["clean"]);
            let name = dir.file_name().expect("a checkout's directory").to_string_lossy();
            remove_lock_file(&format!("{name}-local"));
        }
    }
}
