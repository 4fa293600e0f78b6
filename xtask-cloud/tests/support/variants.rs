//! Versions of the service for the release tests, and the app as a client
//! sees it: a real build with more migrations is a copy of the checkout with
//! the migration files added, built by its own `cargo xtask build` into a
//! target directory of their own under this one's (kept, so a second run
//! builds only the service). Portable SQL serves both backends.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use xtask_test_support::http::{http, request};
use xtask_test_support::sandbox::Sandbox;
use xtask_test_support::{project_root, target_dir, wait_until};

use crate::support::images::Images;
use crate::support::registry::Registry;

/// A migration a test adds to the checkout's own: numbered after them, so
/// that a migration a user adds keeps the tests green, and touching only
/// names of its own (a user's migration may well add a `note` column).
pub struct Added {
    /// The file name, `NNNN_slug.sql`.
    pub file: String,
    pub sql: &'static str,
}

impl Added {
    /// `steps` after the checkout's newest migration.
    fn after_the_checkout(steps: u32, slug: &str, sql: &'static str) -> Added {
        Added { file: format!("{:04}_{slug}.sql", newest_migration_number() + steps), sql }
    }

    /// The migration's name as the tasks print it: the file name without `.sql`.
    pub fn name(&self) -> &str {
        self.file.trim_end_matches(".sql")
    }
}

/// The number of the checkout's newest migration.
fn newest_migration_number() -> u32 {
    let dir = project_root().join("todobackend/migrations");
    std::fs::read_dir(&dir)
        .expect("the checkout's migrations")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".sql"))
        .filter_map(|name| name.split('_').next()?.parse::<u32>().ok())
        .max()
        .expect("the checkout has a migration")
}

/// The column `additive` adds.
pub const ADDED_COLUMN: &str = "test_note";

/// An additive migration: a nullable column.
pub fn additive() -> Added {
    Added::after_the_checkout(1, "add_test_note", "-- additive\nALTER TABLE todos ADD COLUMN test_note TEXT;\n")
}

/// Not additive: a table an older binary does not know.
pub fn breaking() -> Added {
    Added::after_the_checkout(
        2,
        "add_test_audit",
        "CREATE TABLE test_audit (id INTEGER PRIMARY KEY, what TEXT NOT NULL);\n",
    )
}

/// Not additive, after `additive`: an older binary cannot serve the schema.
pub fn renaming() -> Added {
    Added::after_the_checkout(2, "rename_test_note", "ALTER TABLE todos RENAME COLUMN test_note TO test_remark;\n")
}

/// The checkout's files (tracked, and new ones not ignored) copied to `dir`,
/// with `migrations` added to the service.
pub fn copy_checkout(dir: &Path, migrations: &[&Added]) {
    let root = project_root();
    let listed = Command::new("git")
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        .current_dir(&root)
        .output()
        .expect("git ls-files");
    assert!(listed.status.success(), "git ls-files failed");
    let names: std::collections::BTreeSet<String> = listed
        .stdout
        .split(|byte| *byte == 0)
        .filter(|name| !name.is_empty())
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .collect();
    // The copy is kept between runs (its build is): a file the checkout no
    // longer has (a module moved into a folder) would otherwise stay in it.
    remove_files_not_in(dir, dir, &names);
    for name in names {
        let from = root.join(&name);
        if !from.is_file() {
            continue;
        }
        let to = dir.join(&name);
        std::fs::create_dir_all(to.parent().expect("a file has a parent")).expect("create the copy's directories");
        std::fs::copy(&from, &to).unwrap_or_else(|err| panic!("copy {name}: {err}"));
    }
    let dir = dir.join("todobackend/migrations");
    // Files only: a backend's own overrides live in a directory
    // (migrations/postgres/), copied above from the checkout.
    for entry in std::fs::read_dir(&dir).expect("the copy's migrations") {
        let path = entry.expect("a migration").path();
        let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default().to_owned();
        let tracked = support_tracked(&name);
        if path.is_file() && !tracked {
            std::fs::remove_file(path).expect("remove a migration from an earlier run");
        }
    }
    for added in migrations {
        std::fs::write(dir.join(&added.file), added.sql).expect("write a migration");
    }
}

/// Removes the files under `at` whose path relative to `dir` is not in `keep`.
fn remove_files_not_in(dir: &Path, at: &Path, keep: &std::collections::BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(at) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            remove_files_not_in(dir, &path, keep);
        } else if let Ok(relative) = path.strip_prefix(dir)
            && !keep.contains(&relative.to_string_lossy().into_owned())
        {
            let _ = std::fs::remove_file(&path);
        }
    }
}

pub fn variants_dir() -> PathBuf {
    target_dir().join("variants")
}

/// A real image of the service with `migrations` added, tagged `version`.
pub fn variant_image(
    sandbox: &Sandbox,
    registry: &Registry,
    version: &str,
    migrations: &[&Added],
    images: &mut Images,
) -> String {
    let source = variants_dir().join("src");
    copy_checkout(&source, migrations);
    let tag = format!("{}/todobackend:{version}", registry.host());
    let local = sandbox.local_image("todobackend", version);
    images.track(&tag);
    images.track(&local);
    // The SBOM image `build` makes beside it.
    images.track(&format!("{local}.sbom"));
    let target = variants_dir().join("target");
    let built = sandbox
        .clone_with(&[
            ("APP_VERSION", version),
            ("ECR_REGISTRY", &registry.host()),
            ("CARGO_TARGET_DIR", &target.display().to_string()),
        ])
        .xtask_in(&source, &["build"]);
    built.assert_success();
    // `build` names it locally; the registry's name is `publish`'s or, here, ours.
    crate::support::swarm::docker_ok(&["tag", &local, &tag]);
    tag
}

/// The todos' titles the deployed app serves, sorted.
pub fn titles(port: u16) -> Vec<String> {
    let response = http(&format!("http://127.0.0.1:{port}/todos"), "GET", &[]).expect("GET /todos");
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

pub fn add_todo(port: u16, title: &str) {
    let body = format!("{{\"title\": \"{title}\"}}");
    let response = request(&format!("http://127.0.0.1:{port}/todos"), "POST", &[], Some(&body)).expect("POST /todos");
    assert_eq!(response.status, 201, "POST /todos: {}", response.body);
}

/// Wait until the app answers on `port` (after a rollback the old task starts again).
pub fn wait_for_app(port: u16) {
    wait_until(&format!("the app answering on port {port}"), Duration::from_secs(60), || {
        crate::support::swarm::answers(port)
    });
}

pub fn history(sandbox: &Sandbox) -> Vec<serde_json::Value> {
    let run = sandbox.xtask(&["history", "--json"]);
    run.assert_success();
    serde_json::from_str::<Vec<serde_json::Value>>(&run.stdout)
        .unwrap_or_else(|err| panic!("history --json: {err}: {}", run.stdout))
}

/// Whether `name` is one of the checkout's own migrations (an earlier
/// run's added ones are not).
fn support_tracked(name: &str) -> bool {
    project_root().join("todobackend/migrations").join(name).is_file()
}
