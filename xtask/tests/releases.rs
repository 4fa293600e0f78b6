//! Safe releases on the real swarm: a failed release that carries an additive
//! migration leaves the old version serving every row; `rollback` returns to
//! the version before, on the same data; a breaking migration is refused
//! unless allowed, and only `rollback --restore-data` goes back past it; the
//! history records every step.
//!
//! These are `xtask-cloud`'s tests, yet they live under `xtask/tests`: only
//! here does a test run `cargo xtask` as a user does, the light binary first,
//! which hands the task over to `xtask-cloud` (the real hand-over, with its
//! command line, environment and exit code).
//!
//! Versions B and C are real builds with more migrations: a copy of the
//! checkout with the migration files added, built by its own `cargo xtask
//! build` into a target directory of their own under this one's (kept, so a
//! second run builds only the service).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::swarm::{
    Stack, app_image, derive, docker, docker_login, error_text, label_the_node, push, spec_image, stack_name,
    swarm_lock,
};
use support::{Images, Moto, Registry, Sandbox};

/// A migration a test adds to the checkout's own, numbered after them (so
/// that a migration a user adds keeps these tests green) and touching only
/// names of its own.
struct Added {
    /// The file name, `NNNN_slug.sql`.
    file: String,
    sql: &'static str,
}

impl Added {
    /// `steps` after the checkout's newest migration.
    fn after_the_checkout(steps: u32, slug: &str, sql: &'static str) -> Added {
        Added { file: format!("{:04}_{slug}.sql", newest_migration_number() + steps), sql }
    }

    /// The migration's name as the tasks print it: the file name without `.sql`.
    fn name(&self) -> &str {
        self.file.trim_end_matches(".sql")
    }
}

/// The number of the checkout's newest migration.
fn newest_migration_number() -> u32 {
    let dir = support::project_root().join("todobackend/migrations");
    std::fs::read_dir(&dir)
        .expect("the checkout's migrations")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".sql"))
        .filter_map(|name| name.split('_').next()?.parse::<u32>().ok())
        .max()
        .expect("the checkout has a migration")
}

fn additive() -> Added {
    Added::after_the_checkout(1, "add_test_note", "-- additive\nALTER TABLE todos ADD COLUMN test_note TEXT;\n")
}

fn breaking() -> Added {
    Added::after_the_checkout(
        2,
        "add_test_audit",
        "CREATE TABLE test_audit (id INTEGER PRIMARY KEY, what TEXT NOT NULL);\n",
    )
}

/// Not additive: an older binary refuses the schema it makes.
fn rename() -> Added {
    Added::after_the_checkout(2, "rename_test_note", "ALTER TABLE todos RENAME COLUMN test_note TO test_remark;\n")
}

/// The checkout's files (tracked, and new ones not ignored) copied to `dir`,
/// with `migrations` added to the service.
fn copy_checkout(dir: &Path, migrations: &[&Added]) {
    let root = support::project_root();
    let listed = Command::new("git")
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        .current_dir(&root)
        .output()
        .expect("git ls-files");
    assert!(listed.status.success(), "git ls-files failed");
    for name in listed.stdout.split(|byte| *byte == 0).filter(|name| !name.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        let from = root.join(&name);
        if !from.is_file() {
            continue;
        }
        let to = dir.join(&name);
        std::fs::create_dir_all(to.parent().expect("a file has a parent")).expect("create the copy's directories");
        std::fs::copy(&from, &to).unwrap_or_else(|err| panic!("copy {name}: {err}"));
    }
    // The copy is kept between runs: a migration an earlier run added, and
    // the checkout does not have, goes.
    let checkout_migrations = root.join("todobackend/migrations");
    let dir = dir.join("todobackend/migrations");
    for entry in std::fs::read_dir(&dir).expect("the copy's migrations") {
        let entry = entry.expect("a migration");
        if entry.path().is_file() && !checkout_migrations.join(entry.file_name()).exists() {
            std::fs::remove_file(entry.path()).expect("remove a migration from an earlier run");
        }
    }
    for added in migrations {
        std::fs::write(dir.join(&added.file), added.sql).expect("write a migration");
    }
}

fn variants_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| support::project_root().join("target"));
    target.join("variants")
}

/// A real image of the service with `migrations` added, tagged `version`.
fn variant_image(
    sandbox: &Sandbox,
    registry: &Registry,
    version: &str,
    migrations: &[&Added],
    images: &mut Images,
) -> String {
    let source = variants_dir().join("src");
    copy_checkout(&source, migrations);
    let tag = format!("{}/todobackend:{version}", registry.host());
    images.track(&tag);
    images.track(&format!("{}/todobackend:latest", registry.host()));
    let target = variants_dir().join("target");
    let built = sandbox
        .clone_with(&[
            ("APP_VERSION", version),
            ("ECR_REGISTRY", &registry.host()),
            ("CARGO_TARGET_DIR", &target.display().to_string()),
        ])
        .xtask_in(&source, &["build"]);
    built.assert_success();
    tag
}

/// The todos' titles the deployed app serves, sorted.
fn titles(port: u16) -> Vec<String> {
    let response = support::http(&format!("http://127.0.0.1:{port}/todos"), "GET", None, &[]).expect("GET /todos");
    assert_eq!(response.status, 200, "GET /todos: {}", response.body);
    let todos: serde_json::Value = serde_json::from_str(&response.body).expect("a JSON list of todos");
    let mut titles: Vec<String> = todos
        .as_array()
        .expect("a JSON list of todos")
        .iter()
        .filter_map(|todo| todo.get("title").and_then(|title| title.as_str()).map(str::to_owned))
        .collect();
    titles.sort();
    titles
}

fn add_todo(port: u16, title: &str) {
    let body = format!("{{\"title\": \"{title}\"}}");
    let response = support::request(&format!("http://127.0.0.1:{port}/todos"), "POST", None, &[], Some(&body))
        .expect("POST /todos");
    assert_eq!(response.status, 201, "POST /todos: {}", response.body);
}

/// Wait until the app answers on `port` (after a rollback the old task starts again).
fn wait_for_app(port: u16) {
    let start = Instant::now();
    while !support::swarm::answers(port) {
        assert!(start.elapsed() < Duration::from_secs(60), "the app does not answer on port {port}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn history(sandbox: &Sandbox) -> Vec<serde_json::Value> {
    let run = sandbox.xtask(&["history", "--json"]);
    run.assert_success();
    serde_json::from_str::<Vec<serde_json::Value>>(&run.stdout)
        .unwrap_or_else(|err| panic!("history --json: {err}: {}", run.stdout))
}

/// The backups in the stack's data volume, as the service lists them.
fn backups(stack: &str, image: &str) -> String {
    let out = docker(&["run", "--rm", "-v", &format!("{stack}_data:/data"), image, "backups"]);
    assert!(out.status.success(), "todobackend backups: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn failed_releases_keep_serving_and_rollback_goes_back_safely() {
    let _lock = swarm_lock();
    label_the_node();
    let registry = Registry::start_for_ecr();
    let moto = Moto::start();
    let port = support::free_port();
    let sandbox = support::swarm::stack_sandbox(&moto, &registry, port);
    let stack = stack_name(&sandbox);
    let _stack = Stack(stack.clone());
    let mut images = Images(Vec::new());
    let suffix = support::unique_name("v");
    let [a, b, b_crash, c] = ["a", "b", "bcrash", "c"].map(|name| format!("{name}{suffix}"));
    let host = registry.host();

    docker_login(&sandbox, &registry);
    let image_a = app_image(&sandbox, &registry, &a, &mut images);
    let (additive, breaking) = (additive(), breaking());
    let image_b = variant_image(&sandbox, &registry, &b, &[&additive], &mut images);
    derive(&image_b, &format!("{host}/todobackend:{b_crash}"), "ENV TODOBACKEND_LISTEN=not-an-address", &mut images);
    let image_c = variant_image(&sandbox, &registry, &c, &[&additive, &breaking], &mut images);
    for version in [&a, &b, &b_crash, &c] {
        push(&sandbox, &format!("{host}/todobackend:{version}"));
    }
    let at = |version: &str| sandbox.clone_with(&[("APP_VERSION", version)]);
    let deploy = |version: &str, extra: &[&str]| {
        let mut args = vec!["deploy", "--no-login", "--timeout", "3m"];
        args.extend_from_slice(extra);
        at(version).xtask(&args)
    };

    // A serves; a row written under A.
    deploy(&a, &[]).assert_success();
    add_todo(port, "written under A");

    // B adds an additive migration and its app crashes: the deploy fails, the
    // swarm rolls back, and A serves on B's schema with every row.
    let crashed = deploy(&b_crash, &[]);
    crashed.assert_failure();
    assert!(crashed.stderr.contains(&format!("{}, all additive", additive.name())), "{}", crashed.stderr);
    assert!(error_text(&crashed).contains("rolled back"), "{}", crashed.stderr);
    assert_eq!(spec_image(&stack, "app"), image_a, "the swarm did not roll back to A");
    wait_for_app(port);
    assert_eq!(titles(port), ["written under A"]);

    // B itself converges; a row under B; rollback returns to A, which serves it.
    deploy(&b, &[]).assert_success();
    add_todo(port, "written under B");
    let rollback = sandbox.xtask(&["rollback", "--no-login", "--timeout", "3m"]);
    rollback.assert_success();
    assert!(rollback.stderr.contains(&format!("from version {b} to {a}")), "{}", rollback.stderr);
    assert_eq!(spec_image(&stack, "app"), image_a);
    wait_for_app(port);
    assert_eq!(titles(port), ["written under A", "written under B"]);

    let entries = history(&sandbox);
    let seen: Vec<(String, String, String)> = entries
        .iter()
        .map(|entry| {
            let field = |key: &str| entry[key].as_str().unwrap_or_default().to_owned();
            (field("kind"), field("version"), field("outcome"))
        })
        .collect();
    let expected = [
        ("rollback", &a, "converged"),
        ("deploy", &b, "converged"),
        ("deploy", &b_crash, "rolled back"),
        ("deploy", &a, "converged"),
    ];
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(kind, version, outcome)| (kind.to_string(), version.to_string(), outcome.to_string()))
        .collect();
    assert_eq!(seen, expected, "history, newest first");
    assert!(entries.iter().all(|entry| entry["digest"].as_str().is_some_and(|digest| digest.starts_with("sha256:"))));
    assert!(entries.iter().all(|entry| !entry["actor"].as_str().unwrap_or_default().is_empty()));

    // C carries a breaking migration: refused before the swarm is touched...
    let refused = deploy(&c, &[]);
    refused.assert_failure();
    let error = error_text(&refused);
    assert!(error.contains(breaking.name()) && error.contains("--allow-breaking-migration"), "{error}");
    assert_eq!(error.lines().count(), 1, "{error}");
    assert_eq!(spec_image(&stack, "app"), image_a, "a refused deploy changed the swarm");
    // ...and deployed when allowed.
    deploy(&c, &["--allow-breaking-migration"]).assert_success();
    add_todo(port, "written under C");

    // B cannot serve C's schema: rollback refuses, naming the migration...
    let back_to_b = sandbox.xtask(&["rollback", "--no-login", "--to", &b]);
    back_to_b.assert_failure();
    let error = error_text(&back_to_b);
    assert!(error.contains(breaking.name()) && error.contains("--restore-data"), "{error}");
    assert_eq!(spec_image(&stack, "app"), image_c, "a refused rollback changed the swarm");
    // ...and with --restore-data, B serves the data from before C, and the
    // database C wrote is kept as a backup.
    let restored = sandbox.xtask(&["rollback", "--no-login", "--to", &b, "--restore-data", "--timeout", "3m"]);
    restored.assert_success();
    assert_eq!(spec_image(&stack, "app"), image_b);
    wait_for_app(port);
    assert_eq!(titles(port), ["written under A", "written under B"]);
    let listed = backups(&stack, &image_b);
    assert!(listed.contains("replaced-by-restore"), "the replaced database was not kept:\n{listed}");
    assert!(listed.contains(&format!("before-{}", breaking.name())), "{listed}");
}

/// A release with a breaking migration that crashes, deployed anyway: the
/// swarm goes back to A, which cannot serve the new schema. `deploy` says so
/// and prints the command that brings the service back; that command, run as
/// printed, puts A back on the data from before the release.
#[test]
fn after_a_failed_breaking_release_the_printed_command_brings_the_service_back() {
    let _lock = swarm_lock();
    label_the_node();
    let registry = Registry::start_for_ecr();
    let moto = Moto::start();
    let port = support::free_port();
    let sandbox = support::swarm::stack_sandbox(&moto, &registry, port);
    let stack = stack_name(&sandbox);
    let _stack = Stack(stack.clone());
    let mut images = Images(Vec::new());
    let suffix = support::unique_name("v");
    let [a, c, c_crash] = ["a", "c", "ccrash"].map(|name| format!("{name}{suffix}"));
    let host = registry.host();

    docker_login(&sandbox, &registry);
    let image_a = app_image(&sandbox, &registry, &a, &mut images);
    let (additive, rename) = (additive(), rename());
    let image_c = variant_image(&sandbox, &registry, &c, &[&additive, &rename], &mut images);
    derive(&image_c, &format!("{host}/todobackend:{c_crash}"), "ENV TODOBACKEND_LISTEN=not-an-address", &mut images);
    for version in [&a, &c_crash] {
        push(&sandbox, &format!("{host}/todobackend:{version}"));
    }
    let at = |version: &str| sandbox.clone_with(&[("APP_VERSION", version)]);

    at(&a).xtask(&["deploy", "--no-login", "--timeout", "3m"]).assert_success();
    add_todo(port, "written under A");
    add_todo(port, "also under A");

    let crashed = at(&c_crash).xtask(&["deploy", "--no-login", "--timeout", "3m", "--allow-breaking-migration"]);
    crashed.assert_failure();
    let error = error_text(&crashed);
    assert!(error.contains(&format!("version {a}")) && error.contains(rename.name()), "{error}");
    assert!(error.contains("service stays down"), "{error}");
    assert_eq!(spec_image(&stack, "app"), image_a, "the swarm did not go back to A");
    let command = error
        .split('`')
        .find(|part| part.starts_with("cargo xtask rollback"))
        .unwrap_or_else(|| panic!("deploy printed no rollback command: {error}"));
    let args: Vec<&str> = command.split_whitespace().skip(2).collect();

    // Its dry run shows the restore in the plan, and changes nothing.
    let mut dry: Vec<&str> = vec!["--dry-run"];
    dry.extend_from_slice(&args);
    let plan = sandbox.xtask(&dry);
    plan.assert_success();
    assert!(plan.stdout.contains("todobackend restore --before"), "{}", plan.stdout);

    // The command as printed: A serves again, every row from before C.
    let back = sandbox.xtask(&args);
    back.assert_success();
    assert!(back.stderr.contains("restored "), "{}", back.stderr);
    assert_eq!(spec_image(&stack, "app"), image_a);
    wait_for_app(port);
    assert_eq!(titles(port), ["also under A", "written under A"]);
    let newest = &history(&sandbox)[0];
    assert_eq!((newest["kind"].as_str(), newest["version"].as_str()), (Some("rollback"), Some(a.as_str())));
    assert_eq!(newest["outcome"].as_str(), Some("converged"), "{newest}");
}
