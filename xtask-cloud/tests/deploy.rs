//! `deploy` against the real single-node swarm of the local engine, a local
//! registry and the ECR emulator; and `ci`'s cleanup.
//!
//! The app image is the real one, built by `cargo xtask build` (version A);
//! B and the failing versions are derived from it with a tiny Dockerfile
//! (`FROM` the local image: nothing is pulled).
//!
//! Swarm tests hold one lock: they never run at the same time. Each uses its
//! own stack (the sandbox's STACK_NAME), removes it at the end and waits
//! until its network is gone, and removes the images it made.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::app::PushedApp;
use support::registry::Registry;
use support::swarm::{
    assert_acceptance_passes, assert_hardened, docker_login, docker_ok, running_app_images, stack_exists,
    stack_file_jobs, swarm_lock,
};

#[test]
fn deploy_converges_updates_rolls_back_and_reports_failures() {
    let mut app = PushedApp::start();
    let a = app.version.clone();
    let [b, crash, bad_migrate] = ["b", "crash", "mig"].map(|name| app.version_named(name));
    app.derive(&b, &format!("LABEL version={b}"));
    app.derive(&crash, "ENV TODOBACKEND_LISTEN=not-an-address");
    app.derive(&bad_migrate, "ENV TODOBACKEND_DB=/nonexistent/x.db");
    // From here on the credential comes from `login` (moto's token is the
    // registry's password).
    assert!(app.sandbox.docker(&["logout", &app.registry.host()]).success());

    a_missing_image_and_a_dry_run_leave_the_swarm_alone(&app, &a);
    the_first_deploy_logs_in_runs_the_jobs_first_and_converges(&app, &a);
    the_running_version_again_replaces_no_task(&app, &a);
    a_rolling_update_shows_heartbeats_and_converges(&app, &b);
    a_crashing_version_is_rolled_back_with_its_error_shown_first(&app, &crash, &b);
    a_failed_migration_leaves_the_app_serving_and_status_names_it(&app, &bad_migrate, &b);
    a_deploy_right_after_stack_rm_waits_for_the_old_network(&app, &b);
}

/// An image that is not in the registry: refused before the swarm changes.
fn a_missing_image_and_a_dry_run_leave_the_swarm_alone(app: &PushedApp, a: &str) {
    let stack = &app.stack;
    let at = |version: &str| app.at(version);
    let missing = at("not-pushed").xtask(&["deploy"]);
    missing.assert_failure();
    assert!(missing.error_text().contains("not-pushed"), "{}", missing.stderr);
    assert!(!stack_exists(stack));

    // --dry-run: the plan, nothing deployed.
    let dry = at(a).xtask(&["deploy", "--dry-run"]);
    dry.assert_success();
    assert!(dry.stdout.contains("docker stack deploy --with-registry-auth -c"), "{}", dry.stdout);
    assert!(!stack_exists(stack), "a dry run deployed the stack");
}

/// Version A, with a real login first: converges, the jobs completed.
fn the_first_deploy_logs_in_runs_the_jobs_first_and_converges(app: &PushedApp, a: &str) {
    let (stack, port) = (&app.stack, app.port);
    let at = |version: &str| app.at(version);
    let first = at(a).xtask(&["deploy", "--timeout", "3m"]);
    first.assert_success().assert_not_leaked(support::moto::ECR_PASSWORD);
    assert!(first.stderr.contains(&format!("Deploying version {a}...")), "{}", first.stderr);
    assert!(first.stderr.contains("==> login:"), "login did not run first:\n{}", first.stderr);
    assert!(first.stdout.contains(&format!("Version {a} is live")), "{}", first.stdout);
    assert!(
        first.stdout.contains("migrate completed") && first.stdout.contains("collectstatic completed"),
        "{}",
        first.stdout
    );
    assert!(app.answers(), "version {a} does not answer on port {port}");
    // The jobs ran before the app: no app task failed on pending migrations.
    let jobs = stack_file_jobs(&at(a)).join(", ");
    assert!(first.stderr.contains(&format!("run the jobs first: {jobs}")), "{}", first.stderr);
    let app_tasks = docker_ok(&[
        "service",
        "ps",
        "--no-trunc",
        "--format",
        "{{.CurrentState}} {{.Error}}",
        &format!("{stack}_app"),
    ]);
    assert!(!app_tasks.contains("Failed") && !app_tasks.contains("pending"), "an app task failed:\n{app_tasks}");
    assert_acceptance_passes(&app.image, port, "the deployed app");
    // Every service of the single-node stack read-only with no capability,
    // the app as uid 10001, and it served the suite so.
    assert_hardened(stack, "app", &[], Some(10001), true);
    assert_hardened(stack, "edge", &[], None, true);
    for job in ["migrate", "collectstatic"] {
        assert_hardened(stack, job, &[], None, false);
    }
    // Converged with no drift (exit 0): the history this deploy wrote holds
    // the new keys as the swarm runs them (`plan.rs` has the plan's side).
    let status = at(a).xtask(&["status"]);
    assert_eq!(status.status.code(), Some(0), "{}\n{}", status.stdout, status.stderr);
}

/// The same version again: said so, and no task is replaced (no rollout).
fn the_running_version_again_replaces_no_task(app: &PushedApp, a: &str) {
    let stack = &app.stack;
    let at = |version: &str| app.at(version);
    let running_tasks = || {
        let listed = docker_ok(&["service", "ps", "-q", "--filter", "desired-state=running", &format!("{stack}_app")]);
        let mut ids: Vec<String> = listed.lines().map(str::to_owned).collect();
        ids.sort();
        ids
    };
    let before = running_tasks();
    let again = at(a).xtask(&["deploy", "--no-login"]);
    again.assert_success();
    assert!(again.stdout.contains("already running"), "{}", again.stdout);
    assert_eq!(running_tasks(), before, "re-deploying the running version replaced the app's tasks");
}

/// Version B: a rolling update, then B answers. A monitor of 15 s makes
/// the update's last step a silence longer than the heartbeat's 10 s.
fn a_rolling_update_shows_heartbeats_and_converges(app: &PushedApp, b: &str) {
    let stack = &app.stack;
    let at = |version: &str| app.at(version);
    let update = at(b).clone_with(&[("APP_UPDATE_MONITOR", "15s")]).xtask(&["deploy", "--no-login", "--timeout", "3m"]);
    update.assert_success();
    // A log gets a heartbeat at least every 10 s while nothing changes,
    // saying how long it waited and for what.
    assert!(
        update.stderr.lines().any(|line| line.starts_with("    waiting ") && line.contains(" for app (")),
        "no heartbeat during the rolling update:\n{}",
        update.stderr
    );
    assert!(update.stderr.contains("app: updating"), "no rolling update seen:\n{}", update.stderr);
    assert!(update.stdout.contains(&format!("Version {b} is live")), "{}", update.stdout);
    // The replaced task drains (TODOBACKEND_DRAIN) before its container goes.
    xtask_test_support::wait_until("only version B's container runs", Duration::from_secs(60), || {
        running_app_images(stack) == [app.tag(b)]
    });
    assert!(app.answers(), "version {b} does not answer");
}

/// A version whose app exits at start: fails, names the service, rolled back to B.
fn a_crashing_version_is_rolled_back_with_its_error_shown_first(app: &PushedApp, crash: &str, b: &str) {
    let at = |version: &str| app.at(version);
    let started = Instant::now();
    let crashed = at(crash).xtask(&["deploy", "--no-login", "--timeout", "150s"]);
    crashed.assert_failure();
    // Exit 3: the stack changed, the new version is not live (docs/src/configuration.md, Exit codes).
    assert_eq!(crashed.status.code(), Some(3), "{}", crashed.stderr);
    assert!(started.elapsed() < Duration::from_secs(170), "took {:?}", started.elapsed());
    let error = crashed.error_text();
    assert!(error.contains("app:") && error.contains("rolled back"), "{}", crashed.stderr);
    assert!(crashed.stderr.contains("--- app: last log lines"), "{}", crashed.stderr);
    // The crashed task's own error comes before any healthy task's lines.
    let failed_log = crashed.stderr.find("--- app: log of failed task").expect("the failed task's log is shown");
    let crash_error = crashed.stderr[failed_log..].find("not-an-address").map(|at| at + failed_log);
    assert!(
        crash_error.is_some_and(|at| at < crashed.stderr.find("--- app: last log lines").unwrap()),
        "the crash error is not shown first:\n{}",
        crashed.stderr
    );
    // The log lines are decoded text: no bytes of the engine's stream
    // framing, no "Error grabbing logs" of its own (a note instead).
    assert!(!crashed.stderr.contains("Error grabbing logs"), "{}", crashed.stderr);
    assert!(
        !crashed.stderr.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')),
        "raw stream bytes in the diagnosis:\n{:?}",
        crashed.stderr
    );
    assert_eq!(app.spec_image("app"), app.tag(b), "the swarm did not roll back to B");
    xtask_test_support::wait_until("B answering after the rollback", Duration::from_secs(30), || app.answers());
}

/// A version whose migration fails: non-zero, naming migrate.
fn a_failed_migration_leaves_the_app_serving_and_status_names_it(app: &PushedApp, bad_migrate: &str, b: &str) {
    let at = |version: &str| app.at(version);
    let migration = at(bad_migrate).xtask(&["deploy", "--no-login", "--timeout", "150s"]);
    migration.assert_failure();
    assert_eq!(migration.status.code(), Some(3), "{}", migration.stderr);
    let error = migration.error_text();
    assert!(error.contains("migrate: failed"), "{}", migration.stderr);
    // Only the job that failed is named: collectstatic completed.
    assert!(error.contains("migrate did not complete") && !error.contains("collectstatic and migrate"), "{error}");
    // The jobs run first: a failed migration leaves the app on B, answering.
    assert!(error.contains("the app was not updated"), "{error}");
    assert_eq!(app.spec_image("app"), app.tag(b), "the app was updated despite the failed migration");
    assert!(app.answers(), "B does not answer after the failed migration");
    // status calls the failed job failed, not by the swarm's update state.
    let status = app.sandbox.xtask(&["status"]);
    // Not converged has its own exit code (docs/src/configuration.md, Exit codes).
    assert_eq!(status.status.code(), Some(3), "{}{}", status.stdout, status.stderr);
    assert!(
        status.stdout.lines().any(|line| line.starts_with("migrate") && line.contains("failed")),
        "{}",
        status.stdout
    );
    assert!(status.error_text().contains("migrate (failed)"), "{}", status.stderr);
}

/// Right after `docker stack rm`, deploying the same stack waits for the
/// old network to go instead of failing.
fn a_deploy_right_after_stack_rm_waits_for_the_old_network(app: &PushedApp, b: &str) {
    let stack = &app.stack;
    let at = |version: &str| app.at(version);
    docker_ok(&["stack", "rm", stack]);
    let redeploy = at(b).xtask(&["deploy", "--no-login", "--detach"]);
    redeploy.assert_success();
    assert!(redeploy.stdout.contains("not waiting (--detach)"), "{}", redeploy.stdout);
}

#[test]
fn an_unset_variable_is_an_error_before_the_swarm_is_touched() {
    let _lock = swarm_lock();
    let sandbox = support::sandbox().with_env("APP_VERSION", "1").with_env("ECR_REGISTRY", "127.0.0.1:9");
    let stack = sandbox.stack_name();
    let file = sandbox.dir.path().join("stack.yml");
    std::fs::write(
        &file,
        "version: \"3.8\"\nservices:\n  app:\n    image: \"${ECR_REGISTRY}/todobackend:${APP_VERSION}\"\n    \
         environment:\n      LEVEL: \"${XTASK_TEST_UNSET_LEVEL}\"\n",
    )
    .unwrap();
    let run = sandbox.with_env("STACK_FILE", &file.display().to_string()).xtask(&["deploy", "--no-login"]);
    run.assert_failure();
    let error = run.error_text();
    assert_eq!(run.error_lines().len(), 1, "{}", run.stderr);
    assert!(error.contains("XTASK_TEST_UNSET_LEVEL") && error.contains("line 6"), "{error}");
    assert!(!run.stderr.contains("docker stack deploy"), "{}", run.stderr);
    assert!(!stack_exists(&stack));
}

#[test]
fn a_bad_timeout_is_a_one_line_error() {
    let run = support::sandbox().xtask(&["deploy", "--no-login", "--timeout", "soon"]);
    run.assert_failure();
    assert!(run.stderr.contains("not a duration"), "{}", run.stderr);
}

/// `ci` whose login fails: the later stages are skipped, clean and logout
/// still run (the sandbox's registry credential is gone), exit non-zero.
#[test]
fn ci_with_a_failing_step_still_cleans_up_and_logs_out() {
    // `ci` ends with `clean`, which prunes the project's dangling images: a
    // build running in another test meanwhile has such an image for a moment.
    let _lock = swarm_lock();
    let registry = Registry::start_for_ecr();
    let closed = xtask_test_support::free_port();
    let sandbox = support::sandbox()
        .with_env("ECR_REGISTRY", &registry.host())
        .with_env("AWS_ENDPOINT_URL", &format!("http://127.0.0.1:{closed}"))
        .with_env("AWS_ACCESS_KEY_ID", "testing")
        .with_env("AWS_SECRET_ACCESS_KEY", "testing")
        .with_env("AWS_REGION", support::moto::REGION);
    docker_login(&sandbox, &registry);
    let config = sandbox.docker_config().join("config.json");
    assert!(std::fs::read_to_string(&config).unwrap().contains(&registry.host()));
    let version_file = sandbox.dir.path().join("version.json");

    let run = sandbox.xtask(&["ci", "--version-file", &version_file.display().to_string()]);
    run.assert_failure();
    assert!(run.error_text().contains("login"), "the first failure is not the error:\n{}", run.stderr);
    for skipped in ["test", "release", "publish", "version"] {
        assert!(run.stderr.contains(&format!("==> ci: {skipped} skipped")), "{}", run.stderr);
    }
    assert!(run.stderr.contains("==> ci: clean (always)"), "{}", run.stderr);
    assert!(run.stderr.contains("==> ci: logout (always)"), "{}", run.stderr);
    assert!(!std::fs::read_to_string(&config).unwrap().contains(&registry.host()), "still logged in");
    assert!(!version_file.exists());
}

/// SIGTERM while `login` waits on a silent ECR endpoint: the pipeline stops,
/// clean and logout run, and the exit is non-zero with the signal named.
#[test]
fn ci_cleans_up_after_sigterm() {
    let _lock = swarm_lock();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let sandbox = support::sandbox()
        .with_env("ECR_REGISTRY", "127.0.0.1:9")
        .with_env("AWS_ENDPOINT_URL", &endpoint)
        .with_env("AWS_ACCESS_KEY_ID", "testing")
        .with_env("AWS_SECRET_ACCESS_KEY", "testing")
        .with_env("AWS_REGION", support::moto::REGION);
    let mut cmd = sandbox.command(&["ci"]);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start xtask ci");
    // ci reads its stderr line by line, so the test can wait for the moment
    // the signal is taken, not guess it.
    let stderr = child.stderr.take().expect("piped stderr");
    let (seen, reader) = support::stderr_lines(stderr);
    // login has connected and waits for an answer that never comes (ci
    // catches signals before its first stage).
    let (held, _) = listener.accept().expect("login connects");
    signal(child.id(), "-TERM");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match seen.recv_timeout(left) {
            Ok(line) if line.contains("SIGTERM: stopping the current stage") => break,
            Ok(_) => continue,
            Err(_) => panic!("ci did not say it took the SIGTERM"),
        }
    }
    // Let the SDK fail fast now: close the connection and the port.
    drop(held);
    drop(listener);
    let status = child.wait().expect("xtask ci ends");
    let stderr = reader.join().expect("the stderr reader");
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(stderr.contains("==> ci: test skipped: interrupted by SIGTERM"), "{stderr}");
    assert!(stderr.contains("==> ci: clean (always)"), "{stderr}");
    assert!(stderr.contains("==> ci: logout (always)"), "{stderr}");
    let error = stderr.lines().find(|line| line.starts_with("error:")).unwrap_or_default();
    assert!(error.contains("SIGTERM"), "{stderr}");
    // Interrupted: 128 + SIGTERM, as a shell reports it, after the cleanup.
    assert_eq!(status.code(), Some(143), "{stderr}");
}

fn signal(pid: u32, signal: &str) {
    let sent = std::process::Command::new("kill").args([signal, &pid.to_string()]).status().expect("kill runs");
    assert!(sent.success(), "kill {signal} {pid}");
}

/// Ctrl-C (SIGINT to the xtask alone, as a CI runner sends it) while `ci`'s
/// `test` stage compiles: the stage's command and its children stop at
/// once, clean and logout run, exit 130; a command that ignores the first
/// signal is killed, with its children, by the second, and nothing is left
/// running. The stage's cargo is a stand-in (CARGO) that starts a child and
/// waits for it, as cargo waits for rustc.
#[test]
fn an_interrupt_during_ci_stops_the_stage_and_leaves_nothing_running() {
    let _lock = swarm_lock();
    let moto = support::moto::Moto::start();
    let registry = Registry::start_for_ecr();
    let stand_in = tempfile::tempdir().expect("temp dir");

    for (ignores_the_first, signals) in [(false, 1), (true, 2)] {
        let pids = stand_in.path().join(format!("pids-{signals}"));
        let cargo = stand_in.path().join(format!("cargo-{signals}"));
        let ignore = if ignores_the_first { "trap '' INT TERM\n" } else { "" };
        // Its child in the foreground, as rustc is cargo's (a background
        // child of a script ignores SIGINT).
        let script = format!(
            "#!/bin/sh\n{ignore}echo $$ > {pids}\nsh -c 'echo $$ >> {pids}; exec sleep 300'\n",
            pids = pids.display()
        );
        std::fs::write(&cargo, script).expect("write the stand-in cargo");
        std::fs::set_permissions(&cargo, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        let sandbox = moto
            .sandbox(support::sandbox())
            .with_env("ECR_REGISTRY", &registry.host())
            .with_env("CARGO", &cargo.display().to_string());
        let version_file = sandbox.dir.path().join("version.json");
        let mut cmd = sandbox.command(&["ci", "--version-file", &version_file.display().to_string()]);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start xtask ci");
        let stderr = child.stderr.take().expect("piped stderr");
        let reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
        let started = || std::fs::read_to_string(&pids).is_ok_and(|text| text.split_whitespace().count() == 2);
        let reached = xtask_test_support::poll_until(Duration::from_secs(180), || {
            started() || child.try_wait().expect("try_wait").is_some()
        });
        assert!(reached && started(), "ci did not reach the stand-in cargo: {}", {
            let _ = child.kill();
            let _ = child.wait();
            reader.join().unwrap_or_default()
        });
        let text = std::fs::read_to_string(&pids).unwrap();
        let stage_pids: Vec<u32> = text.split_whitespace().map(|pid| pid.parse().unwrap()).collect();

        let sent = Instant::now();
        for _ in 0..signals {
            signal(child.id(), "-INT");
            std::thread::sleep(Duration::from_millis(500));
        }
        let ended =
            xtask_test_support::poll_until(Duration::from_secs(90), || child.try_wait().expect("try_wait").is_some());
        if !ended {
            let _ = child.kill();
        }
        let status = child.wait().expect("xtask ci ends");
        let stderr = reader.join().expect("the stderr reader");
        for pid in &stage_pids {
            // Gone, or a zombie about to be reaped; a signal takes a moment.
            let running = || {
                Path::new(&format!("/proc/{pid}")).exists()
                    && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
            };
            let alive = !xtask_test_support::poll_until(Duration::from_secs(5), || !running());
            // (Killed outright at the end of the test otherwise.)
            if alive {
                let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
            assert!(!alive, "process {pid} of the stage outlived ci ({signals} signal(s)):\n{stderr}");
        }
        assert!(ended, "ci ran on {:?} after {signals} SIGINT(s):\n{stderr}", sent.elapsed());
        assert_eq!(status.code(), Some(130), "{stderr}");
        if signals == 1 {
            assert!(stderr.contains("SIGINT: stopping the current stage, its commands stopped"), "{stderr}");
            assert!(
                stderr.contains("==> ci: clean (always)") && stderr.contains("==> ci: logout (always)"),
                "{stderr}"
            );
            assert!(stderr.contains("==> ci: release skipped: interrupted by SIGINT"), "{stderr}");
        } else {
            assert!(
                stderr.contains("SIGINT again: exiting without cleaning up, its 1 running command(s) killed"),
                "{stderr}"
            );
        }
    }
}
