//! `plan`, drift and pruning against the real single-node swarm, a local
//! registry and the ECR emulator: what a deploy would change, field by field,
//! against what the swarm runs; what `status` says after a service was
//! changed by hand; what happens to a service the stack file no longer has.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::app::PushedApp;
use support::swarm::{docker, docker_ok};
use xtask_test_support::sandbox::Sandbox;

/// `text` (a stack file) with `line` added to the app's environment: in its
/// own `environment:` map, or a new one after its image.
fn with_app_environment(text: &str, line: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let start = lines.iter().position(|l| l == "  app:").expect("the stack file has an app service");
    let end =
        (start + 1..lines.len()).find(|&i| !lines[i].is_empty() && !lines[i].starts_with("   ")).unwrap_or(lines.len());
    match (start..end).find(|&i| lines[i] == "    environment:") {
        Some(at) => lines.insert(at + 1, format!("      {line}")),
        None => {
            let image = (start..end).find(|&i| lines[i].starts_with("    image:")).expect("the app has an image");
            lines.insert(image + 1, format!("      {line}"));
            lines.insert(image + 1, "    environment:".to_owned());
        }
    }
    lines.join("\n") + "\n"
}

/// `text` without the service `name`.
fn without_service(text: &str, name: &str) -> String {
    let mut out = Vec::new();
    let mut skipping = false;
    for line in text.lines() {
        if line == format!("  {name}:") {
            skipping = true;
            continue;
        }
        if skipping && !line.is_empty() && !line.starts_with("   ") {
            skipping = false;
        }
        if !skipping {
            out.push(line);
        }
    }
    out.join("\n") + "\n"
}

fn write_stack_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    support::swarm::copy_edge_files(dir);
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the stack file copy");
    path
}

/// The changes of service `name` in `plan --json`'s output, as (field, old, new).
fn json_changes(json: &str, name: &str) -> Vec<(String, Option<String>, Option<String>)> {
    let plan: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|err| panic!("{err}: {json}"));
    let service = plan["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|service| service["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {json}"));
    let text = |value: &serde_json::Value| value.as_str().map(str::to_owned);
    service["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|change| (text(&change["field"]).unwrap(), text(&change["old"]), text(&change["new"])))
        .collect()
}

/// Wait until the swarm's update of `service` that started after
/// `after_start` (its UpdateStatus.StartedAt; "" for any) completed.
fn update_completed(service: &str, after_start: &str) {
    // No UpdateStatus yet: the template fails, and that is "not yet".
    let format = "{{.UpdateStatus.StartedAt}} {{.UpdateStatus.State}}";
    xtask_test_support::wait_until(&format!("a completed update of {service}"), Duration::from_secs(120), || {
        let out = docker(&["service", "inspect", "--format", format, service]);
        let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let (at, state) = state.rsplit_once(' ').unwrap_or(("", ""));
        state == "completed" && at != after_start
    });
}

#[test]
fn a_usage_error_with_exit_code_is_not_read_as_changes() {
    let run = support::sandbox().xtask(&["plan", "--exit-code", "--no-such-flag"]);
    assert_eq!(run.status.code(), Some(64), "{}", run.stderr);
    let run = support::sandbox().xtask(&["plan", "--no-such-flag"]);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
}

#[test]
fn plan_shows_changes_drift_and_removed_services_and_deploy_prunes_them() {
    let app = PushedApp::start();
    let at_a = app.at(&app.version);
    let original = std::fs::read_to_string(xtask_test_support::project_root().join("stack.single-node.yml"))
        .expect("stack.single-node.yml");
    let dir = tempfile::tempdir().expect("temp dir");

    before_the_first_deploy_every_service_is_to_be_added(&at_a);
    at_a.xtask(&["deploy", "--no-login", "--timeout", "3m"]).assert_success();
    a_converged_stack_plans_no_change(&at_a);
    changes_are_planned_field_by_field_and_head_the_dry_runs(&app, &original, dir.path());
    a_change_by_hand_is_drift_for_status_and_a_revert_for_plan(&app);
    a_service_left_out_of_the_stack_file_is_kept_unless_deploy_prunes(&app, &original, dir.path());
}

fn before_the_first_deploy_every_service_is_to_be_added(at_a: &Sandbox) {
    let first_plan = at_a.xtask(&["plan", "--exit-code"]);
    assert_eq!(first_plan.status.code(), Some(2), "{}\n{}", first_plan.stdout, first_plan.stderr);
    assert!(first_plan.stdout.contains("  + app (new service)"), "{}", first_plan.stdout);
}

/// Converged: no change, exit 0 with --exit-code, and no drift.
fn a_converged_stack_plans_no_change(at_a: &Sandbox) {
    let plan = at_a.xtask(&["plan", "--exit-code"]);
    assert_eq!(plan.status.code(), Some(0), "{}\n{}", plan.stdout, plan.stderr);
    assert!(plan.stdout.contains("No changes"), "{}", plan.stdout);
    assert!(plan.stdout.contains("Plan: 0 to add, 0 to change, 0 to remove"), "{}", plan.stdout);
    let status = at_a.xtask(&["status"]);
    assert!(status.success(), "{}\n{}", status.stdout, status.stderr);
    assert!(!status.stdout.contains("drift"), "{}", status.stdout);
}

/// Three changes: replicas, an added (secret-looking) variable, the update
/// delay; in the plan, its JSON and the dry runs of deploy and rollback,
/// which claim no outcome.
fn changes_are_planned_field_by_field_and_head_the_dry_runs(app: &PushedApp, original: &str, dir: &Path) {
    let a = &app.version;
    let token = xtask_test_support::unique_name("tokenvalue");
    let changed_file =
        write_stack_file(dir, "stack.yml", &with_app_environment(original, "PLAN_API_TOKEN: \"${PLAN_API_TOKEN}\""));
    let changed = app.at(a).clone_with(&[
        ("STACK_FILE", &changed_file.display().to_string()),
        ("APP_REPLICAS", "2"),
        ("APP_UPDATE_DELAY", "7s"),
        ("PLAN_API_TOKEN", &token),
    ]);
    let plan = changed.xtask(&["plan", "--exit-code"]);
    assert_eq!(plan.status.code(), Some(2), "{}\n{}", plan.stdout, plan.stderr);
    plan.assert_not_leaked(&token);
    let app_lines: Vec<&str> = plan.stdout.lines().filter(|line| line.starts_with("      ")).map(str::trim).collect();
    assert_eq!(
        app_lines,
        ["+ environment.PLAN_API_TOKEN: (sensitive)", "~ replicas: 1 → 2", "~ update_config.delay: 1s → 7s"],
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains("  ~ app\n"), "{}", plan.stdout);
    assert!(plan.stdout.contains("Plan: 0 to add, 1 to change, 0 to remove"), "{}", plan.stdout);
    let json = changed.xtask(&["plan", "--json"]);
    json.assert_success().assert_not_leaked(&token);
    let fields: Vec<String> = json_changes(&json.stdout, "app").into_iter().map(|(field, _, _)| field).collect();
    assert_eq!(fields, ["environment.PLAN_API_TOKEN", "replicas", "update_config.delay"], "{}", json.stdout);
    assert!(json_changes(&json.stdout, "app").contains(&("replicas".into(), Some("1".into()), Some("2".into()))));

    let dry = changed.xtask(&["deploy", "--dry-run", "--no-login"]);
    dry.assert_success().assert_not_leaked(&token);
    assert!(dry.stdout.contains("~ replicas: 1 → 2"), "{}", dry.stdout);
    assert!(dry.stdout.contains("(planned)") && !dry.stdout.contains("(converged)"), "{}", dry.stdout);
    let rollback_dry = changed.xtask(&["rollback", "--dry-run", "--no-login", "--to", a]);
    rollback_dry.assert_success().assert_not_leaked(&token);
    assert!(rollback_dry.stdout.contains("~ replicas: 1 → 2"), "{}", rollback_dry.stdout);
    assert!(rollback_dry.stdout.contains("(planned)"), "{}", rollback_dry.stdout);
}

/// A variable added by hand: status names the service and the field and
/// exits 1 (0 with --allow-drift); plan shows the revert.
fn a_change_by_hand_is_drift_for_status_and_a_revert_for_plan(app: &PushedApp) {
    let at_a = app.at(&app.version);
    let app_service = format!("{}_app", app.stack);
    docker_ok(&["service", "update", "--quiet", "--detach", "--env-add", "DRIFT=1", &app_service]);
    update_completed(&app_service, "");
    let status = at_a.xtask(&["status"]);
    assert_eq!(status.status.code(), Some(1), "{}\n{}", status.stdout, status.stderr);
    assert!(status.stdout.contains("drift: app: environment.DRIFT changed outside"), "{}", status.stdout);
    assert!(status.error_text().contains("app (environment.DRIFT)"), "{}", status.stderr);
    let allowed = at_a.xtask(&["status", "--allow-drift"]);
    assert!(allowed.success(), "{}\n{}", allowed.stdout, allowed.stderr);
    let json = at_a.xtask(&["status", "--json", "--allow-drift"]);
    let status_json: serde_json::Value = serde_json::from_str(&json.stdout).expect("status --json");
    assert_eq!(status_json["drift"]["app"], serde_json::json!(["environment.DRIFT"]), "{}", json.stdout);
    let plan = at_a.xtask(&["plan", "--exit-code"]);
    assert_eq!(plan.status.code(), Some(2), "{}\n{}", plan.stdout, plan.stderr);
    assert!(plan.stdout.contains("- environment.DRIFT: 1   (changed outside the xtask: reverted)"), "{}", plan.stdout);
}

/// A service removed from a copy of the stack file: named in the plan, kept
/// by deploy (with a warning; that deploy reverts the drift before it),
/// removed by deploy --prune.
fn a_service_left_out_of_the_stack_file_is_kept_unless_deploy_prunes(app: &PushedApp, original: &str, dir: &Path) {
    let at_a = app.at(&app.version);
    let app_service = format!("{}_app", app.stack);
    let pruned_file = write_stack_file(dir, "pruned.yml", &without_service(original, "collectstatic"));
    let pruned = at_a.clone_with(&[("STACK_FILE", &pruned_file.display().to_string())]);
    let plan = pruned.xtask(&["plan"]);
    plan.assert_success();
    assert!(plan.stdout.contains("  - collectstatic (not in "), "{}", plan.stdout);
    assert!(plan.stdout.contains("1 to remove"), "{}", plan.stdout);
    let drift_update = docker_ok(&["service", "inspect", "--format", "{{.UpdateStatus.StartedAt}}", &app_service]);
    let kept = pruned.xtask(&["deploy", "--no-login", "--timeout", "3m"]);
    kept.assert_success();
    assert!(kept.stderr.contains("warning: collectstatic of stack"), "{}", kept.stderr);
    assert!(kept.stderr.contains("deploy --prune"), "{}", kept.stderr);
    let service = format!("{}_collectstatic", app.stack);
    assert!(docker(&["service", "inspect", &service]).status.success(), "deploy removed it");
    // That deploy reverted the drift (the swarm's rolling update of the
    // reverted spec, started by `docker stack deploy`, runs on after it).
    update_completed(&app_service, &drift_update);
    let status = at_a.xtask(&["status"]);
    assert!(status.success(), "{}\n{}", status.stdout, status.stderr);
    let removed = pruned.xtask(&["deploy", "--no-login", "--prune", "--timeout", "3m"]);
    removed.assert_success();
    assert!(removed.stderr.contains(&format!("Removing service {service}")), "{}", removed.stderr);
    assert!(!removed.stderr.contains("warning: collectstatic"), "{}", removed.stderr);
    assert!(!docker(&["service", "inspect", &service]).status.success(), "--prune kept it");
    assert!(app.stack_exists());
}
