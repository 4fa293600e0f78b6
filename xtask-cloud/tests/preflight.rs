//! Pre-flight refuses what `docker stack deploy` would refuse, before
//! anything runs on the swarm: an unknown key of the stack file (named with
//! its line) and a stack name the engine does not accept; and `--no-login`
//! without a stored credential names that.

mod support;

use support::app::{AppImage, PushedApp};

#[test]
fn an_unknown_key_and_a_bad_stack_name_are_refused_before_any_job_runs() {
    // The image is in the registry, so only the stack file stands between
    // this deploy and its jobs.
    let app = PushedApp::start_with(AppImage::Scratch);
    let (sandbox, version) = (&app.sandbox, app.version.clone());

    let text = std::fs::read_to_string(xtask_test_support::project_root().join("stack.single-node.yml"))
        .expect("read stack.single-node.yml");
    let with_typo = text.replacen("    command: [\"serve\"]\n", "    comand: [\"x\"]\n", 1);
    assert_ne!(with_typo, text, "stack.single-node.yml has no `command: [\"serve\"]` line to misspell");
    let line = with_typo.lines().position(|line| line.contains("comand:")).expect("the typo's line") + 1;
    let file = support::swarm::stack_file_in(sandbox.dir.path(), &with_typo);
    let bad = sandbox.clone_with(&[("APP_VERSION", &version), ("STACK_FILE", &file.display().to_string())]);

    for args in [&["deploy", "--no-login", "--dry-run"][..], &["deploy", "--no-login", "--timeout", "1m"]] {
        let refused = bad.xtask(args);
        refused.assert_failure();
        let error = refused.error_text();
        assert!(error.contains("services.app.comand") && error.contains(&format!("line {line}")), "{args:?}: {error}");
        assert_eq!(error.lines().count(), 1, "{error}");
        assert!(!app.stack_exists(), "{args:?}: something ran on the swarm although the stack file is refused");
    }

    // Refused before the lock (a swarm config named after the stack).
    let bad_name = sandbox.clone_with(&[("APP_VERSION", &version), ("STACK_NAME", "a b")]);
    for args in [&["deploy", "--no-login", "--dry-run"][..], &["deploy", "--no-login"], &["rollback", "--no-login"]] {
        let refused = bad_name.xtask(args);
        refused.assert_failure();
        let error = refused.error_text();
        assert!(error.contains("\"a b\"") && error.contains("STACK_NAME"), "{args:?}: {error}");
        assert!(!refused.stdout.contains("api:"), "{args:?}: {}", refused.stdout);
    }

    // --no-login with no credential stored: the message names the missing
    // stored credential, not a refused ECR one.
    let empty_config = tempfile::tempdir().expect("temp dir");
    let unlogged =
        sandbox.clone_with(&[("APP_VERSION", &version), ("DOCKER_CONFIG", &empty_config.path().display().to_string())]);
    let refused = unlogged.xtask(&["deploy", "--no-login"]);
    refused.assert_failure();
    let error = refused.error_text();
    assert!(error.contains("stores none for") && error.contains("cargo xtask login"), "{error}");
    assert!(!error.contains("ECR credential"), "{error}");
    assert!(!app.stack_exists());
}
