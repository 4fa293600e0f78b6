//! `cargo xtask version` as a user runs it: stdout carries only the JSON.

mod support;

use std::process::Stdio;

use support::{Sandbox, git, git_repo};

const SETTINGS: &str = include_str!("../../delivery.yml");

#[test]
fn prints_git_short_hash_and_nothing_else() {
    let repo = git_repo(&[("delivery.yml", SETTINGS), ("README.md", "hi\n")]);
    let run = Sandbox::new().xtask_in(repo.path(), &["version"]);
    run.assert_success();
    let expected = git(repo.path(), &["rev-parse", "--short", "HEAD"]);
    assert_eq!(run.stdout, format!("{{\"Version\": \"{expected}\"}}\n"));
}

#[test]
fn app_version_from_environment_wins() {
    let repo = git_repo(&[("delivery.yml", SETTINGS)]);
    let run = Sandbox::new().with_env("APP_VERSION", "1.2.3").xtask_in(repo.path(), &["version"]);
    run.assert_success();
    assert_eq!(run.stdout, "{\"Version\": \"1.2.3\"}\n");
}

#[test]
fn uncommitted_change_makes_it_dirty() {
    let repo = git_repo(&[("delivery.yml", SETTINGS), ("README.md", "hi\n")]);
    std::fs::write(repo.path().join("README.md"), "hi\nx\n").unwrap();
    let run = Sandbox::new().xtask_in(repo.path(), &["version"]);
    run.assert_success();
    let hash = git(repo.path(), &["rev-parse", "--short", "HEAD"]);
    assert_eq!(run.stdout, format!("{{\"Version\": \"{hash}-dirty\"}}\n"));
}

#[test]
fn outside_git_one_error_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("delivery.yml"), SETTINGS).unwrap();
    let run = Sandbox::new().xtask_in(dir.path(), &["version"]);
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.starts_with("error: ") && run.stderr.contains("APP_VERSION"), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"));
}

#[test]
fn dry_run_prints_the_plan_without_the_result() {
    let repo = git_repo(&[("delivery.yml", SETTINGS)]);
    let run = Sandbox::new().with_env("APP_VERSION", "7").xtask_in(repo.path(), &["version", "--dry-run"]);
    run.assert_success();
    assert!(run.stdout.contains("[version]"), "{}", run.stdout);
    assert!(run.stdout.contains(r#"print {"Version": "7"}"#), "{}", run.stdout);
    assert!(!run.stdout.lines().any(|line| line == r#"{"Version": "7"}"#));
}

#[test]
fn bad_settings_file_is_one_clear_error() {
    let repo = git_repo(&[("delivery.yml", "app: [unclosed\n")]);
    let run = Sandbox::new().xtask_in(repo.path(), &["version"]);
    assert_eq!(run.status.code(), Some(1));
    assert!(run.stderr.starts_with("error: ") && run.stderr.contains("delivery.yml"), "{}", run.stderr);
}

#[test]
fn command_line_errors_are_one_line_with_exit_2() {
    let repo = git_repo(&[("delivery.yml", SETTINGS)]);
    for args in [&["bogus"][..], &["deploy", "--timeout", "5x"][..]] {
        let run = Sandbox::new().xtask_in(repo.path(), args);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
    }
}

/// The settings flags work before the task's name and after it, over the
/// environment, and the one after wins (README, Settings). `clean --dry-run`
/// shows the compose project it would remove.
#[test]
fn settings_flags_before_or_after_the_task_win_over_the_environment() {
    let repo = git_repo(&[("delivery.yml", SETTINGS)]);
    let project = |args: &[&str]| {
        let run = Sandbox::new().with_env("COMPOSE_PROJECT_NAME", "fromenv").xtask_in(repo.path(), args);
        run.assert_success();
        let line =
            run.stdout.lines().find(|line| line.contains("docker-compose -p") || line.contains("docker compose -p"));
        let line = line.unwrap_or_else(|| panic!("no compose command in the plan:\n{}", run.stdout)).to_owned();
        line.split(" -p ").nth(1).and_then(|rest| rest.split(' ').next()).unwrap_or_default().to_owned()
    };
    assert_eq!(project(&["clean", "--dry-run"]), "fromenv");
    assert_eq!(project(&["--compose-project", "before", "clean", "--dry-run"]), "before");
    assert_eq!(project(&["--dry-run", "clean", "--compose-project", "after"]), "after");
    assert_eq!(project(&["--compose-project", "before", "clean", "--compose-project", "after", "--dry-run"]), "after");
}

/// A reader that closed stdout (`cargo xtask history | true`) ends the run
/// quietly: no panic, not rc 101.
#[test]
fn a_closed_stdout_ends_history_status_and_version_quietly() {
    let sandbox = Sandbox::new();
    // `history --json` prints even an empty history; `status` of a stack
    // that is not deployed prints nothing, so only its exit is checked.
    for task in [&["history", "--json"][..], &["status"], &["version"]] {
        let mut child = sandbox
            .command_in(&sandbox.root, task)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cargo xtask {task:?}: {err}"));
        // Closed before the task writes a line: its first write is EPIPE.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("cargo xtask runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{task:?}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{task:?}: {stderr}");
    }
}
