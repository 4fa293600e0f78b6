//! `cargo xtask version` as a user runs it: stdout carries only the JSON.

mod support;

use std::process::Stdio;

use xtask_test_support::git::{git, git_repo};

const SETTINGS: &str = include_str!("../../delivery.yml");

#[test]
fn prints_git_short_hash_and_nothing_else() {
    let repo = git_repo(&[("delivery.yml", SETTINGS), ("README.md", "hi\n")]);
    let run = support::sandbox().xtask_in(repo.path(), &["version"]);
    run.assert_success();
    let expected = git(repo.path(), &["rev-parse", "--short", "HEAD"]);
    assert_eq!(run.stdout, format!("{{\"Version\": \"{expected}\"}}\n"));
}

#[test]
fn app_version_from_environment_wins() {
    let repo = git_repo(&[("delivery.yml", SETTINGS)]);
    let run = support::sandbox().with_env("APP_VERSION", "1.2.3").xtask_in(repo.path(), &["version"]);
    run.assert_success();
    assert_eq!(run.stdout, "{\"Version\": \"1.2.3\"}\n");
}

#[test]
fn uncommitted_change_makes_it_dirty() {
    let repo = git_repo(&[("delivery.yml", SETTINGS), ("README.md", "hi\n")]);
    std::fs::write(repo.path().join("README.md"), "hi\nx\n").unwrap();
    let run = support::sandbox().xtask_in(repo.path(), &["version"]);
    run.assert_success();
    let hash = git(repo.path(), &["rev-parse", "--short", "HEAD"]);
    assert_eq!(run.stdout, format!("{{\"Version\": \"{hash}-dirty\"}}\n"));
}

#[test]
fn outside_git_one_error_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("delivery.yml"), SETTINGS).unwrap();
    let run = support::sandbox().xtask_in(dir.path(), &["version"]);
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.starts_with("error: ") && run.stderr.contains("APP_VERSION"), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"));
}

#[test]
fn dry_run_prints_the_plan_without_the_result() {
    let repo = git_repo(&[("delivery.yml", SETTINGS)]);
    let run = support::sandbox().with_env("APP_VERSION", "7").xtask_in(repo.path(), &["version", "--dry-run"]);
    run.assert_success();
    assert!(run.stdout.contains("[version]"), "{}", run.stdout);
    assert!(run.stdout.contains(r#"print {"Version": "7"}"#), "{}", run.stdout);
    assert!(!run.stdout.lines().any(|line| line == r#"{"Version": "7"}"#));
}

#[test]
fn bad_settings_file_is_one_clear_error() {
    let repo = git_repo(&[("delivery.yml", "app: [unclosed\n")]);
    let run = support::sandbox().xtask_in(repo.path(), &["build", "--dry-run"]);
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.starts_with("error: ") && run.stderr.contains("delivery.yml"), "{}", run.stderr);
}

/// `version` uses no setting: it answers without reading delivery.yml or an
/// environment's file (README, Performance), so neither a broken file nor an
/// unknown environment stands in its way.
#[test]
fn version_reads_no_settings_file() {
    let repo = git_repo(&[("delivery.yml", "app: [unclosed\n")]);
    let run = support::sandbox().with_env("XTASK_ENV", "nowhere").xtask_in(repo.path(), &["version"]);
    run.assert_success();
    let expected = git(repo.path(), &["rev-parse", "--short", "HEAD"]);
    assert_eq!(run.stdout, format!("{{\"Version\": \"{expected}\"}}\n"));
}

#[test]
fn command_line_errors_are_one_line_with_exit_2() {
    let repo = git_repo(&[("delivery.yml", SETTINGS)]);
    for args in [&["bogus"][..], &["deploy", "--timeout", "5x"][..]] {
        let run = support::sandbox().xtask_in(repo.path(), args);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
    }
}

/// The settings flags work before the task's name and after it, over the
/// environment, and the one after wins (docs/src/configuration.md, Settings). `clean --dry-run`
/// shows the compose project it would remove.
#[test]
fn settings_flags_before_or_after_the_task_win_over_the_environment() {
    let repo = git_repo(&[("delivery.yml", SETTINGS)]);
    let project = |args: &[&str]| {
        let run = support::sandbox().with_env("COMPOSE_PROJECT_NAME", "fromenv").xtask_in(repo.path(), args);
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

/// A task's help lists its own options apart from the shared settings, and
/// only the settings it uses; a setting it does not use is a usage error
/// after its name (before it, where every setting stands, it is accepted).
#[test]
fn each_task_shows_its_options_apart_from_the_settings_it_uses() {
    let repo = git_repo(&[("delivery.yml", SETTINGS)]);
    let help = support::sandbox().xtask_in(repo.path(), &["deploy", "--help"]);
    help.assert_success();
    let (options, settings) = help.stdout.split_once("\nSettings:\n").expect("a Settings heading");
    assert!(options.contains("--lock-wait") && options.contains("--timeout"), "{options}");
    assert!(!options.contains("--stack"), "a setting among deploy's own options:\n{options}");
    for flag in ["--dry-run", "--quiet", "--verbose", "--registry", "--region", "--stack", "--stack-file"] {
        assert!(settings.contains(flag), "deploy --help does not list {flag}:\n{settings}");
    }
    assert!(!settings.contains("--compose"), "deploy lists compose settings it does not use:\n{settings}");
    let clean = support::sandbox().xtask_in(repo.path(), &["clean", "--help"]);
    assert!(clean.stdout.contains("--compose-project") && !clean.stdout.contains("--stack"), "{}", clean.stdout);

    let unused = support::sandbox().xtask_in(repo.path(), &["deploy", "--compose-file", "x.yml"]);
    assert_eq!(unused.status.code(), Some(2), "{}", unused.stderr);
    assert!(unused.stderr.contains("--compose-file"), "{}", unused.stderr);
    let before = support::sandbox().xtask_in(repo.path(), &["--compose-project", "elsewhere", "version"]);
    before.assert_success();
}

/// `cargo xtask --help` documents every exit code.
#[test]
fn the_help_documents_the_exit_codes() {
    let repo = git_repo(&[("delivery.yml", SETTINGS)]);
    let help = support::sandbox().xtask_in(repo.path(), &["--help"]);
    help.assert_success();
    let table = help.stdout.split_once("Exit codes:").expect("no exit codes in --help").1;
    for code in ["0", "1", "2", "3", "4", "75", "130", "143"] {
        assert!(table.lines().any(|line| line.split_whitespace().any(|word| word == code)), "{code}:\n{table}");
    }
}

/// The completion scripts: bash sources its own without an error, and each
/// completes the tasks.
#[test]
fn completion_scripts_load_in_their_shells() {
    let repo = git_repo(&[("delivery.yml", SETTINGS)]);
    let bash = support::sandbox().xtask_in(repo.path(), &["completions", "bash"]);
    bash.assert_success();
    assert!(bash.stdout.contains("deploy") && bash.stdout.contains("--lock-wait"), "{}", bash.stdout);
    let script = repo.path().join("completions.bash");
    std::fs::write(&script, &bash.stdout).unwrap();
    // What the book's install line does (docs/src/configuration.md): source it, then ask for the
    // completion of `xtask dep`.
    let sourced = std::process::Command::new("bash")
        .arg("-c")
        .arg(r#"set -e; source "$1"; complete -p xtask; COMP_WORDS=(xtask dep); COMP_CWORD=1; _xtask xtask dep xtask; printf '%s\n' "${COMPREPLY[@]}""#)
        .arg("bash")
        .arg(&script)
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&sourced.stdout);
    assert!(sourced.status.success(), "bash cannot source it: {}", String::from_utf8_lossy(&sourced.stderr));
    assert!(stdout.lines().any(|line| line == "deploy"), "`xtask dep<TAB>` does not complete deploy:\n{stdout}");
    for shell in ["zsh", "fish"] {
        let run = support::sandbox().xtask_in(repo.path(), &["completions", shell]);
        run.assert_success();
        assert!(run.stdout.contains("refresh-auth"), "{shell}: {}", run.stdout);
    }
    let bad = support::sandbox().xtask_in(repo.path(), &["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2), "{}", bad.stderr);
}

/// A reader that closed stdout (`cargo xtask history | true`) ends the run
/// quietly: no panic, not rc 101.
#[test]
fn a_closed_stdout_ends_history_status_and_version_quietly() {
    let sandbox = support::sandbox();
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

/// A cloud task goes through the light binary's hand-over to `xtask-cloud`,
/// as a user's does: its one-line error and its exit code pass through, and
/// cargo's own lines stay out (xtask-cloud's tests run that binary itself).
#[test]
fn a_cloud_task_is_handed_over_with_its_output_and_exit_code() {
    let run = support::sandbox().xtask(&["status"]);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(run.error_text().contains("not deployed"), "{}", run.stderr);
    assert!(!run.stderr.contains("Running `") && !run.stderr.contains("Finished `"), "{}", run.stderr);
}

/// Every task the help lists is dispatched, under the name the help gives
/// it: a dry run of each prints `[<task>]` when the runner enters it (after
/// its prerequisites), whichever binary runs it, whatever the task then
/// finds. Tasks that take a positional argument or a subcommand get the
/// first value their help offers, so the list of tasks is the help's alone.
#[test]
fn every_task_the_help_lists_is_dispatched_under_its_name() {
    // Nothing leaves loopback: no registry, AWS endpoint or metadata
    // address but a closed local port (a dry run calls no API anyway).
    let sandbox = support::sandbox()
        .with_env("ECR_REGISTRY", "127.0.0.1:9")
        .with_env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .with_env("AWS_EC2_METADATA_DISABLED", "true")
        .with_env("AWS_ACCESS_KEY_ID", "test")
        .with_env("AWS_SECRET_ACCESS_KEY", "test")
        .with_env("AWS_REGION", "us-east-1");
    let listed = |help: &str| -> Vec<String> {
        let commands = help.split_once("Commands:\n").map(|(_, rest)| rest).unwrap_or_default();
        commands
            .lines()
            .take_while(|line| line.starts_with("  "))
            .filter_map(|line| line.split_whitespace().next())
            .filter(|name| *name != "help")
            .map(str::to_owned)
            .collect()
    };
    let help = sandbox.xtask(&["--help"]);
    let tasks = listed(&help.stdout);
    assert!(tasks.len() > 1, "no tasks in the help:\n{}", help.stdout);
    for task in tasks {
        let mut argv = vec![task.clone()];
        loop {
            let mut help_argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            help_argv.push("--help");
            let help = sandbox.xtask(&help_argv).stdout;
            let usage = help.lines().find(|line| line.starts_with("Usage:")).unwrap_or_default().to_owned();
            if let Some(sub) = listed(&help).into_iter().next().filter(|_| usage.contains("<COMMAND>")) {
                argv.push(sub);
                continue;
            }
            for _ in usage.matches(" <").filter(|_| !usage.contains("<COMMAND>")) {
                let offered = help.split_once("[possible values: ").and_then(|(_, rest)| rest.split([',', ']']).next());
                argv.push(offered.unwrap_or("x").to_owned());
            }
            break;
        }
        argv.push("--dry-run".to_owned());
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let run = sandbox.xtask(&argv);
        assert!(
            run.stdout.lines().any(|line| line == format!("[{task}]")),
            "`cargo xtask {}` did not enter {task}:\n{}\n{}",
            argv.join(" "),
            run.stdout,
            run.stderr
        );
    }
}
