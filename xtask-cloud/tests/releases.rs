//! Safe releases on the real swarm: a failed release that carries an additive
//! migration leaves the old version serving every row; `rollback` returns to
//! the version before, on the same data; a breaking migration is refused
//! unless allowed, and only `rollback --restore-data` goes back past it; the
//! history records every step.
//!
//! Versions B and C are real builds with more migrations
//! (`support::variants`). These run on the single-node SQLite stack;
//! `postgres_stack.rs` runs the same releases on the PostgreSQL one.

mod support;

use support::app::PushedApp;
use support::swarm::{docker, spec_image};
use support::variants::{add_todo, additive, breaking, history, renaming, titles, wait_for_app};

/// The backups in the stack's data volume, as the service lists them.
fn backups(stack: &str, image: &str) -> String {
    let out = docker(&["run", "--rm", "-v", &format!("{stack}_data:/data"), image, "backups"]);
    assert!(out.status.success(), "todobackend backups: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn failed_releases_keep_serving_and_rollback_goes_back_safely() {
    let mut app = PushedApp::start();
    let a = app.version.clone();
    let [b, b_crash, c] = ["b", "bcrash", "c"].map(|name| app.version_named(name));
    let (additive, breaking) = (additive(), breaking());
    let image_b = app.variant(&b, &[&additive]);
    app.derive_from(&image_b, &b_crash, "ENV TODOBACKEND_LISTEN=not-an-address");
    let image_c = app.variant(&c, &[&additive, &breaking]);
    let (sandbox, stack, port, image_a) = (&app.sandbox, app.stack.clone(), app.port, app.image.clone());
    let at = |version: &str| app.at(version);
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
    assert!(crashed.error_text().contains("rolled back"), "{}", crashed.stderr);
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

    let entries = history(sandbox);
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
    let error = refused.error_text();
    assert!(error.contains(breaking.name()) && error.contains("--allow-breaking-migration"), "{error}");
    assert_eq!(error.lines().count(), 1, "{error}");
    assert_eq!(spec_image(&stack, "app"), image_a, "a refused deploy changed the swarm");
    // ...and deployed when allowed.
    deploy(&c, &["--allow-breaking-migration"]).assert_success();
    add_todo(port, "written under C");

    // B cannot serve C's schema: rollback refuses, naming the migration...
    let back_to_b = sandbox.xtask(&["rollback", "--no-login", "--to", &b]);
    back_to_b.assert_failure();
    let error = back_to_b.error_text();
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
    let mut app = PushedApp::start();
    let a = app.version.clone();
    let [c, c_crash] = ["c", "ccrash"].map(|name| app.version_named(name));
    let (additive, renaming) = (additive(), renaming());
    let image_c = app.variant(&c, &[&additive, &renaming]);
    app.derive_from(&image_c, &c_crash, "ENV TODOBACKEND_LISTEN=not-an-address");
    let (sandbox, stack, port, image_a) = (&app.sandbox, app.stack.clone(), app.port, app.image.clone());
    let at = |version: &str| app.at(version);

    at(&a).xtask(&["deploy", "--no-login", "--timeout", "3m"]).assert_success();
    add_todo(port, "written under A");
    add_todo(port, "also under A");

    let crashed = at(&c_crash).xtask(&["deploy", "--no-login", "--timeout", "3m", "--allow-breaking-migration"]);
    crashed.assert_failure();
    let error = crashed.error_text();
    assert!(error.contains(&format!("version {a}")) && error.contains(renaming.name()), "{error}");
    assert!(error.contains("service stays down"), "{error}");
    // Exit 4, service down (README, exit codes): not 3, which promises the
    // version that served still serves.
    assert_eq!(crashed.status.code(), Some(4), "{}", crashed.stderr);
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
    let newest = &history(sandbox)[0];
    assert_eq!((newest["kind"].as_str(), newest["version"].as_str()), (Some("rollback"), Some(a.as_str())));
    assert_eq!(newest["outcome"].as_str(), Some("converged"), "{newest}");
}
