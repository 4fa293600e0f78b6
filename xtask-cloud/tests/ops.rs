//! Operating a deployed stack on the real swarm: `status` as a gate, `logs`
//! per task version, and the deploy lock: two deploys at once never
//! interleave, and a lock left by a killed deploy blocks the next one until
//! `unlock`.

mod support;

use std::time::Duration;

use support::app::PushedApp;
use support::swarm::{DATA_NODE_LABEL, docker, docker_ok, job_services, lock_exists};
use xtask_cloud::records::history::REVISION_LABEL;
use xtask_cloud::release::job::{JOB_LABEL, job_prefix};
use xtask_test_support::sandbox::Run;
use xtask_test_support::wait_until;

/// The holder the stack's lock records (its pid, token, ...), if it is held.
fn lock_holder(stack: &str) -> Option<serde_json::Value> {
    let lock = xtask_cloud::records::lock_name(stack);
    let out = docker(&["config", "inspect", "--format", "{{json .Spec.Data}}", &lock]);
    if !out.status.success() {
        return None;
    }
    let data: String = serde_json::from_slice(&out.stdout).expect("the lock's data as a JSON string");
    let json = aws_smithy_types::base64::decode(&data).expect("base64 data");
    Some(serde_json::from_slice(&json).expect("the lock's holder as JSON"))
}

fn signal(pid: u32, signal: &str) {
    let sent = std::process::Command::new("kill").args([signal, &pid.to_string()]).status().expect("kill runs");
    assert!(sent.success(), "kill {signal} {pid}");
}

/// A command's trimmed stdout.
fn output_of(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program).args(args).output().expect("the command runs");
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The containers of the stack's database jobs, running or not.
fn job_containers(stack: &str) -> Vec<String> {
    let names = docker_ok(&["ps", "--all", "--format", "{{.ID}} {{.Label \"com.docker.swarm.service.name\"}}"]);
    let prefix = job_prefix(stack);
    names.lines().filter(|line| line.contains(&format!(" {prefix}"))).map(str::to_owned).collect()
}

#[test]
fn status_logs_and_the_deploy_lock_on_a_real_stack() {
    let mut app = PushedApp::start();
    let (a, b) = (app.version.clone(), app.version_named("b"));
    // B's own commit, as `cargo xtask build` labels an image: the history
    // names it, not this checkout's.
    let commit_b = "0123456789abcdef0123456789abcdef01234567";
    app.derive(&b, &format!("LABEL version={b} {REVISION_LABEL}={commit_b}"));

    status_without_a_stack_is_one_line_and_exit_1(&app);
    a_deploy_without_user_or_logname_records_the_account_and_the_commit(&app, &a);
    status_of_the_converged_stack_names_its_version(&app, &a);
    logs_prefix_each_line_with_its_service_and_version(&app, &a);
    refresh_auth_updates_the_app_alone_and_returns_once_it_converged(&app, &a);
    status_of_a_service_short_of_its_replicas_is_not_converged(&app);
    of_two_deploys_at_once_one_runs_and_the_other_is_refused(&app, &b, commit_b);
    a_killed_deploy_leaves_its_lock_until_unlock(&app, &a);
}

/// No stack yet: one line, exit 1.
fn status_without_a_stack_is_one_line_and_exit_1(app: &PushedApp) {
    let sandbox = &app.sandbox;
    let none = sandbox.xtask(&["status"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(none.error_text().contains("not deployed"), "{}", none.stderr);
}

/// Deployed where neither USER nor LOGNAME is set (cron, `env -i`).
fn a_deploy_without_user_or_logname_records_the_account_and_the_commit(app: &PushedApp, a: &str) {
    let sandbox = &app.sandbox;
    let at = |version: &str| app.at(version);
    let history = || app.history();
    let mut without_user = at(a).command(&["deploy", "--no-login", "--timeout", "3m"]);
    for key in ["USER", "LOGNAME", "GITHUB_ACTOR", "CODEBUILD_INITIATOR"] {
        without_user.env_remove(key);
    }
    Run::of(without_user.output().expect("deploy")).assert_success();
    let account = output_of("id", &["-un"]);
    let newest = &history()[0];
    assert_eq!(newest["actor"], account.as_str(), "{newest}");
    // A's commit is the one `cargo xtask build` labelled it with: HEAD here.
    let head = output_of("git", &["-C", &sandbox.root.display().to_string(), "rev-parse", "HEAD"]);
    assert_eq!(
        docker_ok(&[
            "image",
            "inspect",
            "--format",
            &format!("{{{{index .Config.Labels \"{REVISION_LABEL}\"}}}}"),
            &app.image
        ]),
        head
    );
    assert_eq!(newest["commit"], head.as_str(), "{newest}");
}

/// status: 0 on the converged stack, naming its version.
fn status_of_the_converged_stack_names_its_version(app: &PushedApp, a: &str) {
    let sandbox = &app.sandbox;
    let status = sandbox.xtask(&["status"]);
    status.assert_success();
    assert!(
        status.stdout.lines().any(|line| line.starts_with("app") && line.contains(a) && line.contains("converged")),
        "{}",
        status.stdout
    );
    assert!(status.stdout.contains(&format!("last deploy: {a} converged")), "{}", status.stdout);
    let json: serde_json::Value =
        serde_json::from_str(&sandbox.xtask(&["status", "--json"]).stdout).expect("status --json");
    assert_eq!(json["converged"], true);
}

/// logs: lines, each prefixed with its service and version.
fn logs_prefix_each_line_with_its_service_and_version(app: &PushedApp, a: &str) {
    let sandbox = &app.sandbox;
    let logs = sandbox.xtask(&["logs", "app", "--tail", "5"]);
    logs.assert_success();
    assert!(!logs.stdout.is_empty(), "no log lines");
    assert!(logs.stdout.lines().all(|line| line.starts_with(&format!("app@{a} | "))), "{}", logs.stdout);
    // --timestamps: the engine's time of each line, after the prefix.
    let stamped = sandbox.xtask(&["logs", "app", "--tail", "5", "--timestamps"]);
    stamped.assert_success();
    // `app@v | 2026-12-03T09:15:02.123456789Z <line>`
    let stamped_line = |line: &str| {
        let rest = line.split_once(" | ").map_or("", |(_, rest)| rest).as_bytes();
        rest.len() > 20 && rest[4] == b'-' && rest[10] == b'T' && rest[..36.min(rest.len())].contains(&b'Z')
    };
    assert!(
        !stamped.stdout.is_empty() && stamped.stdout.lines().all(stamped_line),
        "lines without timestamps:\n{}",
        stamped.stdout
    );
    let unknown = sandbox.xtask(&["logs", "nosuch"]);
    unknown.assert_failure();
    assert!(unknown.error_text().contains("app") && unknown.error_text().contains("migrate"), "{}", unknown.stderr);
}

/// refresh-auth: the app gets the fresh credential through its own rolling
/// update (the swarm counts a new credential as a change of the task spec:
/// found here), the stack converges again on the same version, and the
/// jobs are not run again.
fn refresh_auth_updates_the_app_alone_and_returns_once_it_converged(app: &PushedApp, a: &str) {
    let sandbox = &app.sandbox;
    let stack = &app.stack;
    let app_service = format!("{stack}_app");
    let version_of = |service: &str| -> u64 {
        docker_ok(&["service", "inspect", "--format", "{{.Version.Index}}", service]).parse().unwrap()
    };
    let (app_before, migrate_before) = (version_of(&app_service), version_of(&format!("{stack}_migrate")));
    let refreshed = sandbox.xtask(&["refresh-auth"]);
    refreshed.assert_success().assert_not_leaked(support::moto::ECR_PASSWORD);
    assert!(refreshed.stderr.contains("==> login:"), "refresh-auth did not log in first:\n{}", refreshed.stderr);
    assert!(
        refreshed.stderr.contains(&format!("handed {app_service} the registry credential")),
        "{}",
        refreshed.stderr
    );
    assert!(version_of(&app_service) > app_before, "the app was not updated");
    assert_eq!(version_of(&format!("{stack}_migrate")), migrate_before, "refresh-auth touched a job");
    // The edge runs an image of its own: left alone, and said so.
    let edge_service = format!("{stack}_edge");
    let left_alone = refreshed.stderr.lines().find(|line| line.trim_start().starts_with("left alone:")).unwrap_or("");
    assert!(left_alone.contains(&edge_service), "refresh-auth did not leave the edge alone:\n{}", refreshed.stderr);
    // It returned once the swarm called each update completed (its monitor
    // period included), not when the new tasks started.
    let services =
        docker_ok(&["service", "ls", "--quiet", "--filter", &format!("label=com.docker.stack.namespace={stack}")]);
    let mut long_running = 0;
    for service in services.lines() {
        let state = docker_ok(&[
            "service",
            "inspect",
            "--format",
            "{{.Spec.Name}} {{.Spec.TaskTemplate.RestartPolicy.Condition}} {{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}",
            service,
        ]);
        let fields: Vec<&str> = state.split_whitespace().collect();
        if fields.get(1) == Some(&"any") && fields.first() != Some(&edge_service.as_str()) {
            long_running += 1;
            assert_eq!(fields.get(2), Some(&"completed"), "refresh-auth returned before the update completed: {state}");
        }
    }
    assert!(long_running > 0, "no long-running service in stack {stack}: {services}");
    let after = sandbox.xtask(&["status"]);
    after.assert_success();
    assert!(after.stdout.lines().any(|line| line.starts_with("app") && line.contains(a)), "{}", after.stdout);
    assert!(app.answers(), "the app does not answer after refresh-auth");
    assert!(!lock_exists(stack));
}

/// A service that cannot reach its replicas (a second host-mode replica
/// has no port on one node): status says so and exits 1.
fn status_of_a_service_short_of_its_replicas_is_not_converged(app: &PushedApp) {
    let sandbox = &app.sandbox;
    let stack = &app.stack;
    docker_ok(&["service", "update", "--detach", "--replicas", "2", &format!("{stack}_app")]);
    let waiting = sandbox.xtask(&["status"]);
    // Exit 3, not converged (1 is for "no stack", a failure).
    assert_eq!(waiting.status.code(), Some(3), "{}{}", waiting.stdout, waiting.stderr);
    assert!(
        waiting.error_text().contains("has not converged") && waiting.error_text().contains("app"),
        "{}",
        waiting.stderr
    );
    docker_ok(&["service", "update", "--detach", "--replicas", "1", &format!("{stack}_app")]);
}

/// Two deploys at once: one takes the lock, the other is refused at once,
/// naming the holder; the swarm never sees them interleave.
fn of_two_deploys_at_once_one_runs_and_the_other_is_refused(app: &PushedApp, b: &str, commit_b: &str) {
    let sandbox = &app.sandbox;
    let stack = &app.stack;
    let history = || app.history();
    let spawn = |version: &str| app.spawn_deploy(version);
    let first = spawn(b);
    let second = spawn(b);
    let runs = [Run::of(first.wait_with_output().unwrap()), Run::of(second.wait_with_output().unwrap())];
    let succeeded = runs.iter().filter(|run| run.success()).count();
    assert_eq!(succeeded, 1, "{:?}", runs.iter().map(|run| &run.stderr).collect::<Vec<_>>());
    let refused = runs.iter().find(|run| !run.success()).unwrap();
    assert!(refused.error_text().contains(&format!("deploy of {b} in progress by")), "{}", refused.stderr);
    // Exit 75: the lock is held, retry later.
    assert_eq!(refused.status.code(), Some(75), "{}", refused.stderr);
    for run in &runs {
        assert!(!run.stderr.contains("out of sequence"), "{}", run.stderr);
    }
    assert!(!lock_exists(stack), "the lock outlived the deploy");
    sandbox.xtask(&["status"]).assert_success();
    let newest = &history()[0];
    assert_eq!((&newest["version"], &newest["commit"]), (&serde_json::json!(b), &serde_json::json!(commit_b)));
}

/// A deploy killed outright leaves its lock: the next one is refused,
/// naming the holder, until `unlock`.
fn a_killed_deploy_leaves_its_lock_until_unlock(app: &PushedApp, a: &str) {
    let sandbox = &app.sandbox;
    let stack = &app.stack;
    let at = |version: &str| app.at(version);
    let mut killed = app.spawn_deploy(a);
    wait_until("the deploy takes the lock", Duration::from_secs(120), || lock_exists(stack));
    killed.kill().expect("SIGKILL the deploy");
    let _ = killed.wait();
    let blocked = at(a).xtask(&["deploy", "--no-login"]);
    blocked.assert_failure();
    assert_eq!(blocked.status.code(), Some(75), "{}", blocked.stderr);
    let error = blocked.error_text();
    assert!(
        error.contains(&format!("deploy of {a} in progress by")) && error.contains(&format!("process {}", killed.id())),
        "{error}"
    );
    assert!(error.contains("cargo xtask unlock"), "{error}");
    let unlock = sandbox.xtask(&["unlock"]);
    unlock.assert_success();
    assert!(unlock.stderr.contains(&format!("deploy of {a} in progress by")), "{}", unlock.stderr);
    assert!(!lock_exists(stack));
    at(a).xtask(&["deploy", "--no-login", "--timeout", "3m"]).assert_success();
    assert!(!lock_exists(stack));
}

#[test]
fn a_missing_external_secret_is_named_before_the_swarm_changes_and_secret_create_supplies_it() {
    let secret = xtask_test_support::unique_name("dbpw");
    let value = xtask_test_support::unique_name("s3cret-value-");
    // Dropped after the stack that uses it.
    let _secret = Secret(secret.clone());
    let app = PushedApp::start();
    // stack.yml with the app reading a secret the swarm does not have yet.
    let stack_yml = std::fs::read_to_string(xtask_test_support::project_root().join("stack.single-node.yml"))
        .expect("stack.single-node.yml");
    let with_secret = stack_yml
        .replacen("    command: [\"serve\"]\n", "    command: [\"serve\"]\n    secrets: [db_password]\n", 1)
        .replacen("\nsecrets:\n", &format!("\nsecrets:\n  db_password:\n    external: true\n    name: {secret}\n"), 1);
    assert_eq!(with_secret.matches(&format!("name: {secret}")).count(), 1, "no top-level secrets to add to");
    assert_ne!(with_secret, stack_yml);
    let stack_file = support::swarm::stack_file_in(app.sandbox.dir.path(), &with_secret);
    let app = app.with_env("STACK_FILE", &stack_file.display().to_string());
    let (sandbox, stack, version) = (&app.sandbox, app.stack.clone(), app.version.clone());
    let at = app.at(&version);

    let dry = at.xtask(&["deploy", "--no-login", "--dry-run"]);
    dry.assert_failure();
    let error = dry.error_text();
    assert!(
        error.contains(&format!("secret {secret}")) && error.contains(&format!("cargo xtask secret create {secret}")),
        "{error}"
    );
    assert!(!app.stack_exists(), "the swarm was touched");

    // The value on stdin only.
    let created = sandbox.xtask_with_stdin(&["secret", "create", &secret], &value);
    created.assert_success().assert_not_leaked(&value);
    assert!(created.stderr.contains(&format!("created the swarm secret {secret}")), "{}", created.stderr);
    // Secrets cannot change: a second create is refused, with the way out.
    let again = sandbox.xtask_with_stdin(&["secret", "create", &secret], "another value");
    again.assert_failure();
    assert!(again.error_text().contains("cannot change") && again.error_text().contains("_v2"), "{}", again.stderr);

    let deployed = at.xtask(&["deploy", "--no-login", "--timeout", "3m"]);
    deployed.assert_success().assert_not_leaked(&value);
    let mounted = docker_ok(&[
        "service",
        "inspect",
        &format!("{stack}_app"),
        "--format",
        "{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}{{.SecretName}} {{end}}",
    ]);
    assert!(mounted.contains(&secret), "the app does not mount the secret: {mounted}");
}

/// Removes a swarm secret when dropped (after the stack that uses it).
struct Secret(String);

impl Drop for Secret {
    fn drop(&mut self) {
        let _ = docker(&["secret", "rm", &self.0]);
    }
}

#[test]
fn a_first_deploy_on_a_swarm_of_one_unlabelled_node_labels_it() {
    let app = PushedApp::start();
    let node = docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"]);
    // Put the label back for the other tests, whatever happens here.
    struct Relabel(String);
    impl Drop for Relabel {
        fn drop(&mut self) {
            let _ = docker(&["node", "update", "--label-add", &format!("{DATA_NODE_LABEL}=true"), &self.0]);
        }
    }
    let _relabel = Relabel(node.clone());
    docker_ok(&["node", "update", "--label-rm", DATA_NODE_LABEL, &node]);

    let deployed = app.deploy(&app.version);
    deployed.assert_success();
    assert!(deployed.stderr.contains("labelled the swarm's only node"), "{}", deployed.stderr);
    let label = format!("{{{{index .Spec.Labels \"{DATA_NODE_LABEL}\"}}}}");
    let labels = docker_ok(&["node", "inspect", &node, "--format", &label]);
    assert_eq!(labels, "true");
}

#[test]
fn sigterm_during_a_deploy_releases_the_lock_and_the_next_deploy_removes_a_left_job() {
    let app = PushedApp::start();
    let (stack, version, image) = (app.stack.clone(), app.version.clone(), app.image.clone());

    let deploy = app.spawn_deploy(&version);
    // The signal comes once the deploy holds the lock.
    wait_until("the deploy takes the lock", Duration::from_secs(120), || lock_exists(&stack));
    signal(deploy.id(), "-TERM");
    let out = Run::of(deploy.wait_with_output().expect("the deploy ends"));
    assert_eq!(out.status.code(), Some(143), "{}", out.stderr);
    assert!(out.stderr.contains("interrupted by SIGTERM: released the deploy lock"), "{}", out.stderr);
    assert!(!lock_exists(&stack), "the lock outlived the interrupted deploy");

    // A job an interrupted run could not remove (the database check's, say)
    // is removed by the next run that holds the lock, which says so.
    app.deploy(&version).assert_success();
    let left = format!("{}left", job_prefix(&stack));
    docker_ok(&[
        "service",
        "create",
        "--detach",
        "--quiet",
        "--no-resolve-image",
        "--name",
        &left,
        "--label",
        &format!("{}={stack}", JOB_LABEL),
        "--mode",
        "replicated",
        "--replicas",
        "1",
        "--restart-condition",
        "none",
        &image,
        "migrations",
        "--json",
    ]);
    // And a stopped container of an earlier job, as Docker kept those of the
    // `replicated-job`s that earlier versions ran (moby/moby#44312).
    let prefix = job_prefix(&stack);
    let service_label = format!("com.docker.swarm.service.name={prefix}1");
    let earlier = docker_ok(&["create", "--label", &service_label, &image, "migrations", "--json"]);
    docker_ok(&["start", "--attach", &earlier]);
    let again = app.deploy(&version);
    again.assert_success();
    assert!(
        again.stderr.contains(&format!("removed the job {left}, left behind by an interrupted run")),
        "{}",
        again.stderr
    );
    // (Its count may include the left job's, if the swarm had not removed it yet.)
    assert!(again.stderr.contains("stopped container(s) of earlier database jobs"), "{}", again.stderr);
    assert!(!docker(&["container", "inspect", &earlier]).status.success(), "the earlier job's container stays");
    assert_eq!(job_services(&stack), "", "jobs of stack {stack} outlived the deploy");
    // Every deploy after the first ran a job (the database check), and the
    // swarm removes each one's container with it: none stays on the node.
    wait_until("the database jobs' containers gone from the node", Duration::from_secs(60), || {
        job_containers(&stack).is_empty()
    });
}

#[test]
fn a_lock_taken_away_by_a_forced_unlock_is_never_removed_by_its_first_holder() {
    let app = PushedApp::start();
    let (sandbox, stack) = (&app.sandbox, app.stack.clone());
    let stand_in = tempfile::tempdir().expect("temp dir");
    // Each deploy is held at its first `docker stack deploy` (it holds the
    // lock, its checks are done, the stack is not yet changed) until the
    // test lets it go, so the order of events is the test's, not the
    // scheduler's.
    let first = HeldDeploy::start(&app, stand_in.path(), "first");
    assert_eq!(lock_holder(&stack).expect("the first deploy holds the lock")["pid"], first.pid());
    let first_token = lock_holder(&stack).expect("the first deploy's lock")["token"].clone();

    // Its process lives on this host: unlock refuses, and the lock stays.
    let refused = sandbox.xtask(&["unlock"]);
    refused.assert_failure();
    let error = refused.error_text();
    assert!(error.contains("still runs on this host") && error.contains("unlock --force"), "{}", refused.stderr);
    assert_eq!(lock_holder(&stack).expect("the lock stays")["token"], first_token);

    sandbox.xtask(&["unlock", "--force"]).assert_success();
    assert!(!lock_exists(&stack), "unlock --force left the lock");

    let second = HeldDeploy::start(&app, stand_in.path(), "second");
    assert_eq!(lock_holder(&stack).expect("the second deploy holds the lock")["pid"], second.pid());
    let second_token = lock_holder(&stack).expect("the second deploy's lock")["token"].clone();
    assert_ne!(first_token, second_token, "two acquisitions share a token");

    // The first deploy finishes while the second holds the lock: it leaves
    // that lock alone, and says its own was taken away.
    let first = first.finish();
    first.assert_success();
    assert!(
        first.stderr.contains("the deploy lock was taken away while this run held it")
            && first.stderr.contains(&format!("process {}", lock_pid(&stack))),
        "{}",
        first.stderr
    );
    assert_eq!(lock_holder(&stack).expect("the second deploy's lock stays")["token"], second_token);

    // The second deploy ends with its own lock, and releases it.
    let second = second.finish();
    second.assert_success();
    assert!(!second.stderr.contains("taken away"), "{}", second.stderr);
    assert!(!lock_exists(&stack), "the second deploy did not release its lock");
}

#[test]
fn an_interrupt_while_the_jobs_deploy_removes_the_jobs_file_from_the_checkout() {
    let app = PushedApp::start();
    let stand_in = tempfile::tempdir().expect("temp dir");
    // Held at the first `docker stack deploy`, that of the jobs-only stack
    // file the deploy writes beside the stack file, named after its pid.
    let held = HeldDeploy::start(&app, stand_in.path(), "jobs");
    let stack_file = std::path::PathBuf::from(app.sandbox.env_value("STACK_FILE").expect("the sandbox's stack file"));
    let name = stack_file.file_name().expect("a file name").to_string_lossy();
    let jobs_file = stack_file.with_file_name(format!(".{name}.{}.jobs.yml", held.pid()));
    assert!(jobs_file.exists(), "held at its jobs' deploy, the deploy has not written {}", jobs_file.display());

    signal(held.pid(), "-TERM");
    let out = held.interrupted();
    assert_eq!(out.status.code(), Some(143), "{}", out.stderr);
    assert!(!jobs_file.exists(), "the interrupted deploy left {} in the checkout", jobs_file.display());
    assert!(!lock_exists(&app.stack), "{}", out.stderr);
}

/// A deploy held at its first `docker stack deploy` by a stand-in `docker` in
/// front of the real one, until [`HeldDeploy::finish`] lets it go; killed
/// if the test ends first.
struct HeldDeploy {
    child: Option<std::process::Child>,
    gate: std::path::PathBuf,
}

impl HeldDeploy {
    /// Starts the deploy of the app's version and returns once it is held;
    /// `name` tells its gate (a FIFO in `dir`) from the others'.
    fn start(app: &PushedApp, dir: &std::path::Path, name: &str) -> HeldDeploy {
        // The stand-in holds the deploy's first `docker stack deploy` (that
        // of its jobs, or of the stack): it opens the gate read-write (on
        // Linux that does not block), says it is there, and reads one line
        // from it. Later calls go straight through.
        let docker = dir.join("docker");
        if !docker.exists() {
            let real = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|bin| bin.join("docker"))
                .find(|candidate| candidate.is_file())
                .expect("the docker CLI on PATH");
            let script = format!(
                "#!/bin/sh\n\
                 if [ \"$1 $2\" = \"stack deploy\" ] && [ -n \"$HOLD_GATE\" ] && [ ! -e \"$HOLD_GATE.reached\" ]; then\n\
                 exec 3<> \"$HOLD_GATE\"\n\
                 : > \"$HOLD_GATE.reached\"\n\
                 read -r go <&3\n\
                 exec 3<&-\n\
                 fi\n\
                 exec {} \"$@\"\n",
                real.display()
            );
            std::fs::write(&docker, script).expect("write the stand-in docker");
            std::fs::set_permissions(&docker, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        }
        let gate = dir.join(format!("{name}.gate"));
        let made = std::process::Command::new("mkfifo").arg(&gate).status().expect("mkfifo runs");
        assert!(made.success(), "mkfifo {}", gate.display());
        let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
        let child = app
            .at(&app.version)
            .clone_with(&[("PATH", &path), ("HOLD_GATE", &gate.display().to_string())])
            .command(&["deploy", "--no-login", "--timeout", "3m"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn a deploy");
        let mut held = HeldDeploy { child: Some(child), gate };
        let reached = held.gate.with_extension("gate.reached");
        wait_until(&format!("the {name} deploy reaches docker stack deploy"), Duration::from_secs(120), || {
            let ended = held.child.as_mut().expect("running").try_wait().expect("try_wait").is_some();
            assert!(!ended, "the {name} deploy ended before its docker stack deploy");
            reached.exists()
        });
        held
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Lets the deploy go on, and waits for its end.
    fn finish(mut self) -> Run {
        self.open_gate();
        let child = self.child.take().expect("running");
        Run::of(child.wait_with_output().expect("the deploy ends"))
    }

    /// The end of a deploy the test has signalled; the stand-in it leaves
    /// held is let go (its stack file gone, its `docker stack deploy` fails).
    fn interrupted(mut self) -> Run {
        let child = self.child.take().expect("running");
        let out = Run::of(child.wait_with_output().expect("the deploy ends"));
        self.open_gate();
        out
    }

    fn open_gate(&self) {
        let mut gate = std::fs::OpenOptions::new().read(true).write(true).open(&self.gate).expect("open the gate");
        std::io::Write::write_all(&mut gate, b"go\n").expect("open the gate");
    }
}

impl Drop for HeldDeploy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The pid the stack's lock names.
fn lock_pid(stack: &str) -> u64 {
    lock_holder(stack).and_then(|holder| holder["pid"].as_u64()).expect("the lock names a process")
}

#[test]
fn an_interrupt_during_the_database_job_removes_it_and_one_after_the_stack_changed_is_recorded() {
    let mut app = PushedApp::start();
    let (a, b) = (app.version.clone(), app.version_named("b"));
    app.derive(&b, &format!("LABEL version={b}"));
    let (sandbox, stack) = (&app.sandbox, app.stack.clone());
    app.deploy(&a).assert_success();
    let spawn = |version: &str| app.spawn_deploy(version);

    // Ctrl-C while the database check runs as a job on the data node: held
    // still (SIGSTOP) as soon as its service exists, so the signal comes
    // while it is there.
    let deploy = spawn(&b);
    wait_until("the database job", Duration::from_secs(120), || !job_services(&stack).is_empty());
    signal(deploy.id(), "-STOP");
    signal(deploy.id(), "-INT");
    signal(deploy.id(), "-CONT");
    let out = Run::of(deploy.wait_with_output().expect("the deploy ends"));
    assert_eq!(out.status.code(), Some(130), "{}", out.stderr);
    let said = out.stderr.lines().find(|line| line.starts_with("interrupted by SIGINT")).unwrap_or_default();
    assert!(
        said.contains("released the deploy lock")
            && said.contains(&format!("removed the database job {}", job_prefix(&stack)))
            && said.contains(&format!("stack {stack} was not changed")),
        "{}",
        out.stderr
    );
    assert_eq!(job_services(&stack), "", "the job service outlived the interrupt");
    // The swarm removes a removed service's container on its own, a moment
    // later: waited for, as on the multi-node swarm.
    wait_until("the job's container removed", Duration::from_secs(60), || job_containers(&stack).is_empty());
    assert!(!lock_exists(&stack));
    assert!(app.spec_image("app").ends_with(&format!(":{a}")), "the app was changed");
    let listed = sandbox.xtask(&["history", "--json"]);
    let entries: serde_json::Value = serde_json::from_str(&listed.stdout).expect("history --json");
    assert_eq!(entries[0]["version"], a.as_str(), "an unchanged stack got a history entry: {entries}");

    // SIGTERM once the stack has changed (the jobs run first on B): the
    // history records the deploy as interrupted, and says the stack changed.
    let deploy = spawn(&b);
    wait_until("the jobs of B on the stack", Duration::from_secs(180), || {
        app.spec_image("migrate").ends_with(&format!(":{b}"))
    });
    signal(deploy.id(), "-TERM");
    let out = Run::of(deploy.wait_with_output().expect("the deploy ends"));
    assert_eq!(out.status.code(), Some(143), "{}", out.stderr);
    let said = out.stderr.lines().find(|line| line.starts_with("interrupted by SIGTERM")).unwrap_or_default();
    assert!(
        said.contains("released the deploy lock")
            && said.contains(&format!("recorded the deploy of {b} as interrupted"))
            && said.contains("part way through its update"),
        "{}",
        out.stderr
    );
    let listed = sandbox.xtask(&["history", "--json"]);
    let entries: serde_json::Value = serde_json::from_str(&listed.stdout).expect("history --json");
    assert_eq!(
        (&entries[0]["version"], &entries[0]["outcome"]),
        (&serde_json::json!(b), &serde_json::json!("interrupted"))
    );
    assert!(!lock_exists(&stack));
}

/// A stack name the engine refuses (`STACK_NAME='a b'`) is refused by every
/// task that names the stack, as `deploy` refuses it, naming the rule:
/// never "not deployed" or an empty history.
#[test]
fn every_task_refuses_a_stack_name_the_engine_does_not_accept() {
    let sandbox = support::sandbox().with_env("STACK_NAME", "a b").with_env("ECR_REGISTRY", "127.0.0.1:9");
    for task in [&["status"][..], &["history"], &["logs"], &["plan"], &["unlock"], &["deploy", "--no-login"]] {
        let run = sandbox.xtask(task);
        assert_eq!(run.status.code(), Some(1), "{task:?}: {}{}", run.stdout, run.stderr);
        let error = run.error_text();
        assert!(
            error.contains("\"a b\" is not one the engine accepts") && error.contains("STACK_NAME"),
            "{task:?}: {}",
            run.stderr
        );
        assert_eq!(run.error_lines().len(), 1, "{task:?}: {}", run.stderr);
    }
}

/// The read-only tasks on a stack that changes under them: history entries
/// that cannot be read are named once, by `history` and by `rollback`; and
/// `logs --follow` ends, saying why, when its stack goes away.
#[test]
fn unreadable_history_is_named_and_logs_follow_ends_with_its_stack() {
    let app = PushedApp::start();
    let (sandbox, stack) = (&app.sandbox, app.stack.clone());
    app.deploy(&app.version).assert_success();

    unreadable_history_entries_are_named_once(&app);

    // Following the app's logs; then the stack goes away.
    let mut follow = sandbox
        .command(&["logs", "app", "--follow"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("logs --follow");
    std::thread::sleep(Duration::from_secs(3));
    assert!(follow.try_wait().expect("try_wait").is_none(), "logs --follow ended before the stack went away");
    docker_ok(&["stack", "rm", &stack]);
    let ended =
        xtask_test_support::poll_until(Duration::from_secs(60), || follow.try_wait().expect("try_wait").is_some());
    if !ended {
        let _ = follow.kill();
    }
    let out = Run::of(follow.wait_with_output().expect("logs --follow ends"));
    assert!(ended, "logs --follow still runs a minute after `docker stack rm`:\n{}", out.stderr);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let said: Vec<&str> = out.stderr.lines().filter(|line| line.contains("no more logs to follow")).collect();
    assert_eq!(said.len(), 1, "{}", out.stderr);
    assert!(said[0].contains(&format!("stack {stack} was removed")), "{}", out.stderr);
}

/// A config under the history's label that holds no entry (invalid JSON):
/// skipped, and counted and named in one warning.
fn unreadable_history_entries_are_named_once(app: &PushedApp) {
    let (sandbox, stack) = (&app.sandbox, &app.stack);
    let junk = format!("{stack}_history_junk");
    let junk_file = sandbox.dir.path().join("junk.json");
    std::fs::write(&junk_file, "{ not json").expect("write the junk entry");
    let label = format!("{}={stack}", xtask_cloud::records::HISTORY_LABEL);
    docker_ok(&["config", "create", "--label", &label, &junk, &junk_file.display().to_string()]);
    let warned = |run: &Run| -> Vec<String> {
        run.stderr
            .lines()
            .filter(|line| line.starts_with("warning:") && line.contains(&junk))
            .map(str::to_owned)
            .collect()
    };

    let history = sandbox.xtask(&["history"]);
    history.assert_success();
    assert!(history.stdout.contains(&app.version), "{}", history.stdout);
    let said = warned(&history);
    assert_eq!(said.len(), 1, "{}", history.stderr);
    assert!(said[0].contains("skipped 1 entry"), "{}", said[0]);

    // rollback reads the history too (it has nothing to go back to here).
    let rollback = sandbox.xtask(&["rollback", "--no-login"]);
    rollback.assert_failure();
    assert_eq!(warned(&rollback).len(), 1, "{}", rollback.stderr);
}

/// A deploy that times out leaves the swarm's update running, unverified:
/// `status` says so (exit 3) once it has converged, until a deploy of the
/// same version verifies it.
#[test]
fn a_deploy_that_times_out_is_unverified_until_a_deploy_verifies_it() {
    let mut app = PushedApp::start();
    let (a, b) = (app.version.clone(), app.version_named("b"));
    app.derive(&b, &format!("LABEL version={b}"));
    let (sandbox, stack) = (&app.sandbox, app.stack.clone());
    app.deploy(&a).assert_success();

    // B's update is monitored for 40 s after its task started: the jobs
    // complete within the 25 s, the app's update does not.
    let slow = app.at(&b).clone_with(&[("APP_UPDATE_MONITOR", "40s")]);
    let timed_out = slow.xtask(&["deploy", "--no-login", "--timeout", "25s"]);
    assert_eq!(timed_out.status.code(), Some(3), "{}", timed_out.stderr);
    let error = timed_out.error_text();
    assert!(error.contains("did not converge within 25s") && error.contains("not verified"), "{error}");
    assert!(!timed_out.stderr.contains("verifying task"), "{}", timed_out.stderr);

    // The update goes on and converges, on B: unverified.
    let update_state = || {
        docker_ok(&[
            "service",
            "inspect",
            "--format",
            "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}",
            &format!("{stack}_app"),
        ])
    };
    wait_until("B's update completed in the swarm", Duration::from_secs(180), || update_state() == "completed");
    assert!(app.spec_image("app").ends_with(&format!(":{b}")), "the swarm rolled B back");
    let status = sandbox.xtask(&["status"]);
    assert_eq!(status.status.code(), Some(3), "{}{}", status.stdout, status.stderr);
    assert!(
        status.stdout.lines().any(|line| line.starts_with("unverified:") && line.contains(&b)),
        "{}",
        status.stdout
    );
    assert!(status.error_text().contains(&format!("runs version {b} unverified")), "{}", status.stderr);
    let json: serde_json::Value =
        serde_json::from_str(&sandbox.xtask(&["status", "--json"]).stdout).expect("status --json");
    assert_eq!(json["unverified"], b.as_str());

    // A deploy of B again verifies it, and settles it.
    let again = slow.xtask(&["deploy", "--no-login", "--timeout", "3m"]);
    again.assert_success();
    assert!(again.stderr.contains("verifying task"), "{}", again.stderr);
    let settled = sandbox.xtask(&["status"]);
    settled.assert_success();
    assert!(!settled.stdout.contains("unverified"), "{}", settled.stdout);
}

/// A forced unlock while a deploy verifies its version, then a second
/// deploy: the second leaves the first one's verification job alone (it
/// carries the first run's lock token, and that run goes on), and the
/// first ends verified, on its own terms.
#[test]
fn a_deploy_whose_lock_was_forced_keeps_its_verification_job() {
    let mut app = PushedApp::start();
    let (a, b) = (app.version.clone(), app.version_named("b"));
    app.derive(&b, &format!("LABEL version={b}"));
    let (sandbox, stack) = (&app.sandbox, app.stack.clone());
    app.deploy(&a).assert_success();

    // The first deploy, held still (SIGSTOP) as soon as its verification
    // job exists.
    let verify_jobs = || -> Vec<String> {
        let filter = format!("label={JOB_LABEL}={stack}");
        let names = docker_ok(&["service", "ls", "--filter", &filter, "--format", "{{.Name}}"]);
        names.lines().filter(|name| name.contains("_xtask_verify_")).map(str::to_owned).collect()
    };
    let first = app.spawn_deploy(&b);
    wait_until("the first deploy's verification job", Duration::from_secs(240), || !verify_jobs().is_empty());
    signal(first.id(), "-STOP");
    // Let it go on whatever happens below.
    struct Resume(u32);
    impl Drop for Resume {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill").args(["-CONT", &self.0.to_string()]).status();
        }
    }
    let resume = Resume(first.id());
    let job = verify_jobs().remove(0);
    let labels = docker_ok(&["service", "inspect", "--format", "{{json .Spec.Labels}}", &job]);
    let token = lock_holder(&stack).expect("the first deploy holds the lock")["token"].clone();
    assert!(labels.contains(&format!("\"{}\":{token}", xtask_cloud::release::job::LOCK_TOKEN_LABEL)), "{labels}");

    sandbox.xtask(&["unlock", "--force"]).assert_success();
    // The second deploy (B again: its database check is a job too, after
    // the clean-up of left jobs).
    let second = app.deploy(&b);
    second.assert_success();
    assert!(!second.stderr.contains(&format!("removed the job {job}")), "{}", second.stderr);
    assert!(second.stderr.contains(&format!("left the job {job} alone")), "{}", second.stderr);
    assert_eq!(verify_jobs(), std::slice::from_ref(&job), "the first deploy's job is gone");

    drop(resume);
    let first = Run::of(first.wait_with_output().expect("the first deploy ends"));
    first.assert_success();
    assert!(first.stderr.contains(&format!("verified 1 task(s) of {stack}_app")), "{}", first.stderr);
    assert!(first.stderr.contains("taken away"), "{}", first.stderr);
    assert!(!first.stderr.contains("cannot list the job's tasks"), "{}", first.stderr);
    assert!(!first.stderr.contains("could not remove the job"), "{}", first.stderr);
    assert!(verify_jobs().is_empty(), "the first deploy left its job");
    assert!(!lock_exists(&stack));
}

/// Ctrl-C during `deploy --prune`, after the stack deploy removed a service:
/// the history records what it did, so `status` calls no drift where `plan`
/// sees no change.
#[test]
fn an_interrupted_prune_is_recorded_as_what_it_did() {
    let mut app = PushedApp::start();
    let (a, b) = (app.version.clone(), app.version_named("b"));
    app.derive(&b, &format!("LABEL version={b}"));
    let stack_file = std::path::PathBuf::from(app.sandbox.env_value("STACK_FILE").expect("the sandbox's stack file"));
    let text = std::fs::read_to_string(&stack_file).expect("the stack file");
    let worker = "  worker:\n    image: \"${ECR_REGISTRY}/${IMAGE_REPOSITORY:-todobackend}:${APP_VERSION}\"\n    \
                  command: [\"serve\"]\n    networks: [net]\n    deploy:\n      replicas: 0\n\nnetworks:\n";
    let with_worker = text.replacen("\nnetworks:\n", &format!("\n{worker}"), 1);
    assert_ne!(with_worker, text);
    let worker_file = app.sandbox.dir.path().join("stack-with-worker.yml");
    support::swarm::copy_edge_files(app.sandbox.dir.path());
    std::fs::write(&worker_file, with_worker).expect("write the stack file with a worker");
    let stack = app.stack.clone();
    app.at(&a)
        .clone_with(&[("STACK_FILE", &worker_file.display().to_string())])
        .xtask(&["deploy", "--no-login", "--timeout", "3m"])
        .assert_success();
    assert!(docker(&["service", "inspect", &format!("{stack}_worker")]).status.success());

    // B without the worker, --prune: interrupted while it watches the update.
    let mut deploy = app
        .at(&b)
        .command(&["deploy", "--no-login", "--timeout", "3m", "--prune"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn deploy --prune");
    let stderr = deploy.stderr.take().expect("piped stderr");
    let (seen, reader) = support::stderr_lines(stderr);
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match seen.recv_timeout(left) {
            Ok(line) if line.contains("wait until every service runs the new version") => break,
            Ok(_) => continue,
            Err(_) => {
                let _ = deploy.kill();
                panic!("the deploy did not reach its watch");
            }
        }
    }
    assert!(!docker(&["service", "inspect", &format!("{stack}_worker")]).status.success(), "--prune left the worker");
    signal(deploy.id(), "-INT");
    let status = deploy.wait().expect("the deploy ends");
    let stderr = reader.join().expect("the stderr reader");
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains(&format!("recorded the deploy of {b} as interrupted")), "{stderr}");

    let plan = app.at(&b).xtask(&["plan", "--exit-code"]);
    assert_eq!(plan.status.code(), Some(0), "plan sees changes:\n{}{}", plan.stdout, plan.stderr);
    let status = app.sandbox.xtask(&["status"]);
    assert!(!status.stdout.contains("drift:"), "status calls the prune drift:\n{}", status.stdout);
    assert_ne!(status.status.code(), Some(1), "{}{}", status.stdout, status.stderr);
}
