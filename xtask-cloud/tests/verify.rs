//! `deploy`'s verification in the swarm, on the real single-node swarm of the
//! local engine, a local registry and the ECR emulator: after the rollout
//! converged, the new image's acceptance suite runs as a one-off swarm task
//! against each new app task; a version that passes its healthcheck but
//! fails the suite is rolled back to the previous converged version.
//!
//! The bad version is derived from the real image (nothing lands on main):
//! `USER 10002:10001` runs it as a user that may read the stack's SQLite
//! database (owned by 10001, mode 0644) but not write it. Its migrate (none
//! pending) and collectstatic (files unchanged) succeed, `GET /` and
//! `/healthz` answer, so it converges; `POST /todos` answers 500.

mod support;

use support::app::PushedApp;
use support::swarm::running_app_images;
use support::variants::{add_todo, history, titles, wait_for_app};

#[test]
fn a_version_that_fails_its_acceptance_suite_in_the_swarm_is_rolled_back() {
    let mut app = PushedApp::start();
    let good = app.version.clone();
    let [bad, unverified] = ["ro", "nv"].map(|name| app.version_named(name));
    app.derive(&bad, "USER 10002:10001");
    app.derive(&unverified, &format!("LABEL version={unverified}"));
    let (sandbox, stack, port) = (&app.sandbox, app.stack.clone(), app.port);
    let at = |version: &str| app.at(version);

    // A dry run shows the verify step and records nothing.
    let dry = at(&good).xtask(&["deploy", "--no-login", "--dry-run"]);
    dry.assert_success();
    assert!(
        dry.stdout.contains("verify version") && dry.stdout.contains("acceptance --keep-data --url"),
        "{}",
        dry.stdout
    );

    // The good version: verified against each task, then recorded as converged.
    let first = at(&good).xtask(&["deploy", "--no-login", "--timeout", "3m"]);
    first.assert_success();
    assert!(first.stderr.contains("verifying task"), "{}", first.stderr);
    assert!(first.stderr.contains("ok      POST /todos answers 201"), "{}", first.stderr);
    assert!(first.stdout.contains(&format!("Version {good} is live")), "{}", first.stdout);
    let newest = &history(sandbox)[0];
    assert_eq!((newest["version"].as_str(), newest["outcome"].as_str()), (Some(good.as_str()), Some("converged")));
    assert_eq!(newest["verification"].as_str(), Some("passed"), "{newest}");

    // Rows written after it (the suite deleted its own and every other).
    wait_for_app(port);
    for title in ["first row", "second row"] {
        add_todo(port, title);
    }
    let rows = titles(port);

    // The version that breaks writes: converges, fails verification, is
    // rolled back to the good one, which serves every row.
    let failed = at(&bad).xtask(&["deploy", "--no-login", "--timeout", "3m"]);
    failed.assert_failure();
    assert_eq!(failed.status.code(), Some(3), "not live: exit 3\n{}", failed.stderr);
    let error = failed.error_lines().join("\n");
    assert!(error.contains(&format!("version {bad} failed verification")), "{error}");
    assert!(error.contains("FAILED  POST /todos answers 201"), "the failing check is named: {error}");
    assert!(error.contains(&format!("rolled back to version {good}")), "{error}");
    wait_for_app(port);
    // The replaced task drains (TODOBACKEND_DRAIN) after the new one runs:
    // its container goes a few seconds after the rollback converged.
    xtask_test_support::wait_until(
        "only the good version's containers run",
        std::time::Duration::from_secs(60),
        || {
            let running = running_app_images(&stack);
            !running.is_empty() && running.iter().all(|image| image.contains(&format!(":{good}")))
        },
    );
    assert_eq!(titles(port), rows, "the version rolled back to serves every row");
    let entries = history(sandbox);
    let outcomes: Vec<(&str, &str, &str)> = entries
        .iter()
        .take(2)
        .map(|entry| {
            (entry["kind"].as_str().unwrap(), entry["version"].as_str().unwrap(), entry["outcome"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        outcomes,
        [("rollback", good.as_str(), "converged"), ("deploy", bad.as_str(), "failed verification")],
        "history, newest first"
    );

    // --no-verify: not verified, and the history says so.
    let skipped = at(&unverified).xtask(&["deploy", "--no-login", "--no-verify", "--timeout", "3m"]);
    skipped.assert_success();
    assert!(!skipped.stderr.contains("verifying task"), "{}", skipped.stderr);
    let newest = &history(sandbox)[0];
    assert_eq!(newest["outcome"].as_str(), Some("converged"));
    assert_eq!(newest["verification"].as_str(), Some("skipped (--no-verify)"), "{newest}");
    let table = sandbox.xtask(&["history"]);
    assert!(table.stdout.contains("converged (--no-verify)"), "{}", table.stdout);
}
