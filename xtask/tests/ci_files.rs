//! The CI definitions users copy: the GitHub workflows validate against
//! GitHub's workflow schema (check-jsonschema's vendored copy, from a
//! virtualenv under target/, offline once installed), and both they and the
//! CodeBuild buildspec do what the book's CI chapter (docs/src/ci.md) says: cache, OIDC and no static
//! keys, pull requests without login or push, a deploy job after the
//! pipeline, a toolchain install. Actions are pinned by commit, checkouts
//! keep no credentials, concurrency is per job, the whole suite runs, and
//! the buildspec's install phase is run (network stubbed) cold and cached.

use std::path::PathBuf;
use std::process::Command;

use serde_yaml::Value;

fn workflows() -> Vec<PathBuf> {
    let dir = xtask_test_support::project_root().join(".github/workflows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect(".github/workflows")
        .map(|entry| entry.expect("a workflow").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yml" || ext == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no workflow in {}", dir.display());
    files
}

fn yaml(path: &std::path::Path) -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(path).expect("read"))
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn text(value: &Value) -> String {
    serde_yaml::to_string(value).expect("yaml")
}

/// `check-jsonschema`, installed once into target/ci-venv; made again when
/// it does not run (a half-made or damaged venv would fail every run after).
fn check_jsonschema() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| xtask_test_support::project_root().join("target"));
    let venv = target.join("ci-venv");
    let program = venv.join("bin/check-jsonschema");
    let runs = Command::new(&program).arg("--version").output().is_ok_and(|out| out.status.success());
    if !runs {
        let _ = std::fs::remove_dir_all(&venv);
        let made = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().expect("python3 -m venv");
        assert!(made.success(), "python3 -m venv failed (install python3-venv)");
        let pip =
            Command::new(venv.join("bin/pip")).args(["install", "--quiet", "check-jsonschema"]).status().expect("pip");
        assert!(pip.success(), "pip install check-jsonschema failed");
    }
    program
}

#[test]
fn workflows_validate_against_the_github_workflow_schema() {
    let program = check_jsonschema();
    for workflow in workflows() {
        let out = Command::new(&program)
            .args(["--builtin-schema", "vendor.github-workflows"])
            .arg(&workflow)
            .output()
            .expect("run check-jsonschema");
        assert!(
            out.status.success(),
            "{} does not validate:\n{}{}",
            workflow.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_workflow_caches_assumes_a_role_keeps_pull_requests_unprivileged_and_deploys_main() {
    let path = xtask_test_support::project_root().join(".github/workflows/ci.yml");
    let raw = std::fs::read_to_string(&path).expect("ci.yml");
    let workflow = yaml(&path);
    let jobs = workflow["jobs"].as_mapping().expect("jobs");
    let job = |name: &str| &workflow["jobs"][name];
    let steps = |name: &str| text(&job(name)["steps"]);

    // No static keys, anywhere.
    for key in ["aws-access-key-id", "aws-secret-access-key", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        assert!(!raw.contains(key), "ci.yml names {key}: use the OIDC role");
    }
    // Every job that builds caches its build.
    for (name, job) in jobs {
        assert!(text(&job["steps"]).contains("Swatinem/rust-cache@"), "job {name:?} does not cache");
    }
    // fmt and clippy.
    assert!(steps("lint").contains("cargo fmt --all --check") && steps("lint").contains("cargo clippy"));

    // Pull requests: test and release only.
    assert!(text(&job("test")["if"]).contains("pull_request"));
    let pr = steps("test");
    assert!(pr.contains("cargo xtask test") && pr.contains("cargo xtask release"));
    for forbidden in ["login", "publish", "xtask ci", "push", "configure-aws-credentials", "secrets."] {
        assert!(!pr.contains(forbidden), "the pull request job runs {forbidden:?}");
    }
    assert!(!text(job("test")).contains("id-token"), "the pull request job can mint AWS credentials");

    // Main: the whole pipeline with an assumed role, version.json kept and
    // the digests summarised.
    let ci = job("ci");
    assert!(text(&ci["if"]).contains("refs/heads/main"));
    assert_eq!(ci["permissions"]["id-token"], Value::from("write"));
    let pipeline = steps("ci");
    assert!(
        pipeline.contains("aws-actions/configure-aws-credentials@") && pipeline.contains("vars.AWS_PUBLISH_ROLE_ARN")
    );
    assert!(pipeline.contains("cargo xtask ci"));
    assert!(pipeline.contains("actions/upload-artifact@") && pipeline.contains("version.json"));
    assert!(pipeline.contains("GITHUB_STEP_SUMMARY") && pipeline.contains("@sha256:"));

    // Then deploy, in the production environment, through ssh.
    let deploy = job("deploy");
    let needs = text(&deploy["needs"]);
    assert!(needs.contains("ci") && needs.contains("lint"), "deploy needs {needs}");
    assert_eq!(deploy["environment"], Value::from("production"));
    assert!(text(&deploy["if"]).contains("refs/heads/main"));
    assert!(text(&deploy["env"]["DOCKER_HOST"]).contains("ssh://"));
    assert!(
        text(&deploy["env"]["APP_VERSION"]).contains("needs.ci.outputs.version"),
        "deploy must deploy what ci published"
    );
    assert!(text(&ci["needs"]).contains("lint"), "ci publishes without lint passing");
    let deploying = steps("deploy");
    assert!(deploying.contains("cargo xtask deploy") && deploying.contains("secrets.SWARM_SSH_KEY"));
    assert!(deploying.contains("vars.AWS_DEPLOY_ROLE_ARN"));

    // Environments: staging deploys at once what ci published, production
    // only after it, through the `production` environment's approval.
    let staging = job("deploy-staging");
    assert_eq!(staging["environment"], Value::from("staging"));
    assert!(text(&staging["needs"]).contains("ci") && text(&staging["needs"]).contains("lint"));
    assert!(text(&staging["if"]).contains("refs/heads/main"));
    assert!(text(&staging["env"]["APP_VERSION"]).contains("needs.ci.outputs.version"));
    assert!(steps("deploy-staging").contains("cargo xtask deploy --env staging"), "{}", steps("deploy-staging"));
    assert!(steps("deploy-staging").contains("cargo xtask plan --env staging"));
    assert!(needs.contains("deploy-staging"), "production deploys before staging: needs {needs}");
    assert!(deploying.contains("cargo xtask deploy --env production"), "{deploying}");
    assert!(deploying.contains("cargo xtask plan --env production"), "{deploying}");
    // Each environment named in a workflow has its settings file.
    for environment in ["staging", "production"] {
        let file = xtask_test_support::project_root().join(format!("delivery.{environment}.yml"));
        assert!(file.is_file(), "{} is missing", file.display());
    }
}

#[test]
fn the_buildspec_installs_the_pinned_toolchain_caches_and_leaves_the_region_alone() {
    let root = xtask_test_support::project_root();
    let spec = yaml(&root.join("buildspec.yml"));
    let raw = std::fs::read_to_string(root.join("buildspec.yml")).expect("buildspec.yml");
    let install = text(&spec["phases"]["install"]["commands"]);
    assert!(install.contains("rustup") && install.contains("--profile minimal"), "no rustup install:\n{install}");
    assert!(install.contains("rustup toolchain install"), "the pinned toolchain is not installed:\n{install}");
    let toolchain = std::fs::read_to_string(root.join("rust-toolchain.toml")).expect("rust-toolchain.toml");
    assert!(toolchain.contains("channel = \"") && toolchain.contains("profile = \"minimal\""), "{toolchain}");

    let cache = text(&spec["cache"]["paths"]);
    assert!(
        cache.contains(".cargo/registry") && cache.contains("target/"),
        "no cache of the registry and target:\n{cache}"
    );

    assert!(spec["env"]["variables"]["AWS_REGION"].is_null(), "the buildspec overrides the region");
    let build = text(&spec["phases"]["build"]["commands"]);
    assert!(build.contains("cargo xtask ci"));
    assert_eq!(raw.matches("APP_VERSION=").count(), 1, "APP_VERSION is assigned more than once");
    assert!(raw.to_lowercase().contains("privileged"), "privileged mode is not documented");
}

/// Where the fake network steps record their calls.
const CALLS: &str = "calls.log";

/// Stand-ins for what the buildspec's install phase reaches over the network,
/// on PATH before the machine's own programs: `curl` (which serves an
/// installer that does what rustup's does: rustup and the cargo proxy into
/// ~/.cargo/bin, and an ~/.cargo/env file) and Amazon Linux's `dnf`. Each
/// records its arguments. The `cargo` it installs answers `--version` with a
/// marker, so the run proves that the cargo found on PATH is the one in
/// $HOME/.cargo/bin.
fn fake_network(dir: &std::path::Path) -> PathBuf {
    let bin = dir.join("fake-bin");
    std::fs::create_dir_all(&bin).expect("fake bin");
    let calls = dir.join(CALLS);
    let record = format!("echo \"$(basename \"$0\") $*\" >> '{}'", calls.display());
    let rustup = format!(
        "#!/bin/sh\n{record}\ncase \"$1\" in toolchain) mkdir -p \"$HOME/.rustup/toolchains/pinned/bin\";; esac\n"
    );
    let cargo = format!(
        "#!/bin/sh\n{record}\n[ \"$1\" = --version ] && echo 'cargo 0.0.0 (fake, from $HOME/.cargo/bin)'\nexit 0\n"
    );
    // What `curl https://sh.rustup.rs` prints: an installer for `sh -s`.
    let installer = format!(
        "set -e\necho \"rustup-init $*\" >> '{calls}'\nmkdir -p \"$HOME/.cargo/bin\" \"$HOME/.rustup\"\n\
         cat > \"$HOME/.cargo/bin/rustup\" <<'RUSTUP'\n{rustup}RUSTUP\n\
         cat > \"$HOME/.cargo/bin/cargo\" <<'CARGO'\n{cargo}CARGO\n\
         chmod +x \"$HOME/.cargo/bin/rustup\" \"$HOME/.cargo/bin/cargo\"\n\
         echo 'export PATH=\"$HOME/.cargo/bin:$PATH\"' > \"$HOME/.cargo/env\"\n",
        calls = calls.display()
    );
    std::fs::write(dir.join("installer.sh"), installer).expect("installer");
    let scripts = [
        ("curl", format!("#!/bin/sh\n{record}\ncat '{}'\n", dir.join("installer.sh").display())),
        ("dnf", format!("#!/bin/sh\n{record}\n")),
    ];
    for (name, script) in scripts {
        let path = bin.join(name);
        std::fs::write(&path, script).expect("fake program");
        Command::new("chmod").arg("+x").arg(&path).status().expect("chmod");
    }
    bin
}

/// The install phase's commands, run as CodeBuild runs a phase: one bash,
/// in order, stopping at the first that fails. Returns (success, output).
fn run_install_phase(spec: &Value, home: &std::path::Path, fake_bin: &std::path::Path) -> (bool, String) {
    let commands: Vec<String> = spec["phases"]["install"]["commands"]
        .as_sequence()
        .expect("install commands")
        .iter()
        .map(|command| command.as_str().expect("a command is a string").to_owned())
        .collect();
    let script = format!("set -e\n{}\n", commands.join("\n"));
    // The machine's own programs, but none of its Rust: no ~/.cargo/bin.
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", fake_bin.display());
    let out = Command::new("/bin/bash")
        .arg("-c")
        .arg(&script)
        .env_clear()
        .env("HOME", home)
        .env("PATH", path)
        .output()
        .expect("run bash");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn the_buildspec_install_phase_reaches_cargo_on_a_cold_and_on_a_cached_build() {
    let root = xtask_test_support::project_root();
    let spec = yaml(&root.join("buildspec.yml"));
    let scratch = tempfile::tempdir().expect("tempdir");
    let fake_bin = fake_network(scratch.path());
    let calls = || std::fs::read_to_string(scratch.path().join(CALLS)).unwrap_or_default();

    // A first build: an empty HOME.
    let cold = scratch.path().join("cold-home");
    std::fs::create_dir_all(&cold).unwrap();
    let (ok, output) = run_install_phase(&spec, &cold, &fake_bin);
    assert!(ok, "the install phase fails on a first build:\n{output}\ncalls:\n{}", calls());
    assert!(output.contains("cargo 0.0.0 (fake, from $HOME/.cargo/bin)"), "cargo --version not reached:\n{output}");
    let cold_calls = calls();
    assert!(
        cold_calls.contains("curl ") && cold_calls.contains("rustup-init -y"),
        "rustup not installed:\n{cold_calls}"
    );
    assert!(cold_calls.contains("rustup toolchain install"), "the pinned toolchain is not installed:\n{cold_calls}");
    assert!(cold_calls.contains("dnf install -y -q glibc-static"), "Amazon Linux gets no glibc-static:\n{cold_calls}");

    // A build that restored the cache: only the cached paths under HOME
    // (the buildspec names them under /root, CodeBuild's HOME).
    let cached = scratch.path().join("cached-home");
    std::fs::create_dir_all(&cached).unwrap();
    let paths = spec["cache"]["paths"].as_sequence().expect("cache paths");
    let mut restored = 0;
    for path in paths.iter().filter_map(Value::as_str) {
        let Some(under_home) = path.strip_prefix("/root/") else { continue };
        let dir = under_home.trim_end_matches("/**/*");
        let from = cold.join(dir);
        if from.exists() {
            let to = cached.join(dir);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            let copied = Command::new("cp").arg("-a").arg(&from).arg(&to).status().expect("cp");
            assert!(copied.success());
            restored += 1;
        }
    }
    assert!(restored > 0, "no cached path exists after the first build: {paths:?}");
    std::fs::write(scratch.path().join(CALLS), "").unwrap();
    let (ok, output) = run_install_phase(&spec, &cached, &fake_bin);
    assert!(ok, "the install phase fails on a build that restored the cache:\n{output}\ncalls:\n{}", calls());
    assert!(output.contains("cargo 0.0.0 (fake, from $HOME/.cargo/bin)"), "cargo --version not reached:\n{output}");
    assert!(!calls().contains("curl "), "a cached rustup is downloaded again:\n{}", calls());
}

#[test]
fn the_declared_rust_version_is_the_pinned_toolchain() {
    let root = xtask_test_support::project_root();
    let quoted = |file: &str, key: &str| {
        let text = std::fs::read_to_string(root.join(file)).unwrap_or_else(|err| panic!("{file}: {err}"));
        let line = text
            .lines()
            .find(|line| line.trim_start().starts_with(key) && line.contains('='))
            .unwrap_or_else(|| panic!("{file} has no {key}"));
        line.split('"').nth(1).unwrap_or_else(|| panic!("{file}: {line}")).to_owned()
    };
    // "1.95" and "1.95.0" name the same release.
    let full = |version: String| if version.matches('.').count() == 1 { format!("{version}.0") } else { version };
    let declared = full(quoted("Cargo.toml", "rust-version"));
    let pinned = full(quoted("rust-toolchain.toml", "channel"));
    assert_eq!(declared, pinned, "rust-version in Cargo.toml is not the toolchain rust-toolchain.toml pins");
}

/// Every workflow's jobs, with the workflow they are in.
fn all_jobs() -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for path in workflows() {
        let workflow = yaml(&path);
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for (name, job) in workflow["jobs"].as_mapping().expect("jobs") {
            all.push((file.clone(), name.as_str().expect("job name").to_owned(), job.clone()));
        }
    }
    all
}

#[test]
fn every_action_is_pinned_by_commit_and_checkouts_keep_no_credentials() {
    let mut pinned = 0;
    for path in workflows() {
        let raw = std::fs::read_to_string(&path).expect("workflow");
        for line in raw.lines().filter(|line| line.trim_start().trim_start_matches("- ").starts_with("uses:")) {
            let reference = line.split("uses:").nth(1).unwrap().trim();
            let (action, rest) = reference.split_once('@').unwrap_or_else(|| panic!("{line}: not pinned"));
            let sha = rest.split_whitespace().next().unwrap_or_default();
            assert!(
                sha.len() == 40 && sha.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
                "{}: {action} is pinned by {sha:?}, not a 40-hex commit",
                path.display()
            );
            let comment = rest.split_once('#').map(|(_, comment)| comment.trim()).unwrap_or_default();
            assert!(comment.starts_with('v'), "{}: {action}@{sha} has no `# vX.Y.Z` comment", path.display());
            pinned += 1;
        }
    }
    assert!(pinned > 0, "no action found");
    for (file, name, job) in all_jobs() {
        for step in job["steps"].as_sequence().expect("steps") {
            if step["uses"].as_str().is_some_and(|uses| uses.starts_with("actions/checkout@")) {
                assert_eq!(
                    step["with"]["persist-credentials"],
                    Value::from(false),
                    "{file} {name}: checkout keeps the credentials"
                );
            }
        }
    }
}

#[test]
fn dependabot_updates_the_actions_the_crates_and_the_images_after_a_cooldown() {
    let path = xtask_test_support::project_root().join(".github/dependabot.yml");
    let out = Command::new(check_jsonschema())
        .args(["--builtin-schema", "vendor.dependabot"])
        .arg(&path)
        .output()
        .expect("run check-jsonschema");
    assert!(
        out.status.success(),
        "dependabot.yml does not validate:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let config = yaml(&path);
    let updates = config["updates"].as_sequence().expect("updates");
    let ecosystems: Vec<&str> = updates.iter().filter_map(|update| update["package-ecosystem"].as_str()).collect();
    for wanted in ["github-actions", "cargo", "docker"] {
        assert!(ecosystems.contains(&wanted), "dependabot does not update {wanted}: {ecosystems:?}");
    }
    for update in updates {
        let days = update["cooldown"]["default-days"].as_u64().unwrap_or(0);
        assert!(days >= 3, "{:?} has no cooldown of a few days: {days}", update["package-ecosystem"]);
    }
    // The docker updates read the directory that holds the image pins.
    let docker = updates.iter().find(|update| update["package-ecosystem"] == "docker").unwrap();
    let directory = docker["directory"].as_str().expect("a directory").trim_start_matches('/');
    let pins = xtask_test_support::project_root().join(directory).join("Dockerfile");
    assert!(pins.is_file(), "dependabot's docker directory has no Dockerfile: {}", pins.display());
}

/// `FROM <image> AS <name>` of .github/images/Dockerfile: the images the
/// stack files run by default, pinned by digest where Dependabot updates them.
fn image_pins() -> Vec<(String, String)> {
    let path = xtask_test_support::project_root().join(".github/images/Dockerfile");
    let text = std::fs::read_to_string(&path).expect(".github/images/Dockerfile");
    text.lines()
        .filter_map(|line| line.strip_prefix("FROM "))
        .map(|rest| {
            let words: Vec<&str> = rest.split_whitespace().collect();
            assert!(words.len() == 3 && words[1] == "AS", "not `FROM <image> AS <name>`: {rest}");
            (words[2].to_owned(), words[0].to_owned())
        })
        .collect()
}

#[test]
fn the_stack_files_run_third_party_images_pinned_by_digest_as_dependabot_keeps_them() {
    let pins = image_pins();
    assert!(!pins.is_empty(), "no image pinned in .github/images/Dockerfile");
    for (name, image) in &pins {
        let digest = image.split_once("@sha256:").map(|(_, digest)| digest).unwrap_or_default();
        assert!(
            digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{name}: {image} is not pinned by a sha256 digest"
        );
    }
    // Every image of the stack files that is one `${VAR:-default}` (a
    // third-party image; the release image is `${ECR_REGISTRY}/...:${APP_VERSION}`)
    // defaults to one of the pins, exactly.
    let mut defaults = 0;
    for file in ["stack.yml", "stack.single-node.yml"] {
        let text = std::fs::read_to_string(xtask_test_support::project_root().join(file)).expect(file);
        for line in text.lines().map(str::trim) {
            let Some(value) = line.strip_prefix("image:").map(|value| value.trim().trim_matches('"')) else { continue };
            let whole_variable = value.starts_with("${") && value.ends_with('}') && value.matches("${").count() == 1;
            let Some((_, default)) = value.trim_end_matches('}').split_once(":-").filter(|_| whole_variable) else {
                continue;
            };
            defaults += 1;
            assert!(
                pins.iter().any(|(_, image)| image == default),
                "{file} runs {default}, which .github/images/Dockerfile does not pin: copy the pinned reference \
                 (Dependabot moves it there) into the stack file's default"
            );
        }
    }
    assert!(defaults >= 3, "the stack files' image defaults were not found ({defaults})");
}

#[test]
fn concurrency_is_per_job_checks_cancel_and_changes_to_the_stack_queue() {
    for path in workflows() {
        assert!(yaml(&path)["concurrency"].is_null(), "{}: one concurrency group for every job", path.display());
    }
    let mut groups = std::collections::HashMap::new();
    for (file, name, job) in all_jobs() {
        let group = job["concurrency"]["group"].as_str().unwrap_or_else(|| panic!("{file} {name}: no concurrency"));
        let cancel = &job["concurrency"]["cancel-in-progress"];
        let steps = text(&job["steps"]);
        let changes_the_stack = ["xtask deploy", "xtask rollback", "xtask refresh-auth", "xtask ci"]
            .iter()
            .any(|task| steps.contains(task));
        if changes_the_stack {
            assert_eq!(cancel, &Value::from(false), "{file} {name}: a publish or deploy can be cancelled half-way");
        } else {
            assert_eq!(cancel, &Value::from(true), "{file} {name}: an older check is not cancelled");
            assert!(group.contains("github.ref"), "{file} {name}: checks are not grouped per ref: {group}");
        }
        if let Some(environment) = job["environment"].as_str() {
            assert!(group.contains(environment), "{file} {name}: not queued per environment: {group}");
        }
        // GitHub keeps one pending job per group, and a newer one replaces
        // it whatever cancel-in-progress says: jobs that share a group must
        // run the same task, so that no scheduled refresh-auth (nor a
        // deploy) can displace a pending rollback, nor they a pending deploy.
        let task = stack_task(&steps);
        if let Some((other, other_task)) = groups.insert(group.to_owned(), (name.clone(), task)) {
            assert!(
                task.is_some() && other_task == task,
                "{file} {name} ({task:?}) and {other} ({other_task:?}) share the group {group}: \
                 a pending one can be replaced by the other"
            );
        }
    }
}

/// The task that changes the stack or publishes which a job's steps run, if any.
fn stack_task(steps: &str) -> Option<&'static str> {
    ["xtask deploy", "xtask rollback", "xtask refresh-auth", "xtask ci"].into_iter().find(|task| steps.contains(task))
}

#[test]
fn deploys_and_rollbacks_queue_in_groups_no_other_task_shares_and_are_never_cancelled() {
    let mut seen = Vec::new();
    for (file, name, job) in all_jobs() {
        let steps = text(&job["steps"]);
        let Some(task @ ("xtask deploy" | "xtask rollback" | "xtask refresh-auth")) = stack_task(&steps) else {
            continue;
        };
        assert_eq!(
            job["concurrency"]["cancel-in-progress"],
            Value::from(false),
            "{file} {name}: a {task} can be cancelled"
        );
        let group = job["concurrency"]["group"].as_str().expect("a group").to_owned();
        seen.push((task, group, format!("{file} {name}")));
    }
    for kind in ["xtask deploy", "xtask rollback", "xtask refresh-auth"] {
        assert!(seen.iter().any(|(task, _, _)| *task == kind), "no job runs {kind}");
    }
    for (task, group, job) in &seen {
        for (other_task, other_group, other) in &seen {
            assert!(
                task == other_task || group != other_group,
                "{job} ({task}) and {other} ({other_task}) share the concurrency group {group}"
            );
        }
    }
}

/// The environments whose secrets may hold the swarm's SSH key (each with
/// deployment branch `main`; docs/src/ci.md).
const KEY_ENVIRONMENTS: [&str; 3] = ["staging", "production", "refresh-auth"];

#[test]
fn the_ssh_key_is_an_environment_secret_and_each_job_assumes_the_role_it_needs() {
    for path in workflows() {
        let workflow = yaml(&path);
        assert!(
            !text(&workflow["env"]).contains("secrets."),
            "{}: a secret in the workflow's env reaches every job",
            path.display()
        );
    }
    let mut publishers = Vec::new();
    let mut deployers = 0;
    for (file, name, job) in all_jobs() {
        let body = text(&job);
        let environment = job["environment"].as_str();
        if body.contains("SWARM_SSH_KEY") {
            assert!(
                environment.is_some_and(|environment| KEY_ENVIRONMENTS.contains(&environment)),
                "{file} {name} reads SWARM_SSH_KEY in environment {environment:?}: only a job in one of \
                 {KEY_ENVIRONMENTS:?} may (a repository secret reaches every branch)"
            );
        }
        assert!(!body.contains("vars.AWS_ROLE_ARN"), "{file} {name}: the single role with push rights is gone");
        let publishes = body.contains("vars.AWS_PUBLISH_ROLE_ARN");
        let deploys = body.contains("vars.AWS_DEPLOY_ROLE_ARN");
        if body.contains("configure-aws-credentials@") {
            assert!(publishes != deploys, "{file} {name}: assumes neither or both roles");
        }
        let steps = text(&job["steps"]);
        if publishes {
            assert!(environment.is_none(), "{file} {name}: the publish role trusts main's subject, not an environment");
            assert!(text(&job["if"]).contains("refs/heads/main"), "{file} {name}: publishes from any branch");
            assert!(steps.contains("cargo xtask ci"), "{file} {name}: assumes the publish role but does not publish");
            publishers.push(format!("{file} {name}"));
        }
        if deploys {
            deployers += 1;
            assert!(
                environment.is_some_and(|environment| KEY_ENVIRONMENTS.contains(&environment)),
                "{file} {name}: a deploy role is per environment, but the job runs in {environment:?}"
            );
            assert!(!steps.contains("xtask ci") && !steps.contains("xtask publish"), "{file} {name}: pushes");
            // Logged out at the end, after a failure too.
            let last = job["steps"].as_sequence().expect("steps").last().expect("a step");
            assert!(
                last["run"].as_str().is_some_and(|run| run.contains("cargo xtask logout")),
                "{file} {name}: the last step is not `cargo xtask logout`"
            );
            assert_eq!(last["if"], Value::from("always()"), "{file} {name}: logout does not run after a failure");
        }
        // Whatever reaches the swarm assumes a role that cannot push.
        if stack_task(&steps).is_some_and(|task| task != "xtask ci") {
            assert!(deploys, "{file} {name}: changes the stack without the deploy role");
        }
    }
    assert_eq!(publishers, ["ci.yml ci"], "the `ci` job alone assumes the publish role");
    assert!(deployers >= 3, "deploy, rollback and refresh-auth assume the deploy role");
}

/// The ```json blocks of the section of `markdown` under `heading` (up to
/// the next heading of any level).
fn json_blocks_under(markdown: &str, heading: &str) -> Vec<Value> {
    let start = markdown.find(heading).unwrap_or_else(|| panic!("no heading {heading:?}"));
    let rest = &markdown[start + heading.len()..];
    let section = rest.split("\n#").next().unwrap_or(rest);
    section
        .split("```json\n")
        .skip(1)
        .map(|block| {
            let json = block.split("```").next().unwrap();
            // JSON is YAML: no JSON parser needed for the check.
            serde_yaml::from_str(json).unwrap_or_else(|err| panic!("{heading}: {err}:\n{json}"))
        })
        .collect()
}

/// The actions a policy document allows, and its trust subjects.
fn actions_and_subjects(policies: &[Value]) -> (Vec<String>, Vec<String>) {
    let (mut actions, mut subjects) = (Vec::new(), Vec::new());
    let strings = |value: &Value| -> Vec<String> {
        match value {
            Value::String(one) => vec![one.clone()],
            Value::Sequence(many) => many.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => Vec::new(),
        }
    };
    for policy in policies {
        for statement in policy["Statement"].as_sequence().expect("Statement") {
            assert_eq!(statement["Effect"], Value::from("Allow"));
            actions.extend(strings(&statement["Action"]));
            for condition in ["StringEquals", "StringLike"] {
                subjects.extend(strings(&statement["Condition"][condition]["token.actions.githubusercontent.com:sub"]));
            }
        }
    }
    (actions, subjects)
}

#[test]
fn the_iam_policies_in_the_book_give_push_to_main_only_and_deploys_pull_only() {
    let book = std::fs::read_to_string(xtask_test_support::project_root().join("docs/src/ci.md")).expect("ci.md");
    let (publish_actions, publish_subjects) = actions_and_subjects(&json_blocks_under(&book, "### The publish role"));
    let (deploy_actions, deploy_subjects) = actions_and_subjects(&json_blocks_under(&book, "### The deploy roles"));
    const PUSH: [&str; 5] =
        ["ecr:PutImage", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:*"];
    for push in PUSH.iter().take(4) {
        assert!(publish_actions.iter().any(|action| action == push), "the publish role cannot {push}");
    }
    for action in &deploy_actions {
        assert!(!PUSH.contains(&action.as_str()) && !action.contains('*'), "the deploy role may {action}");
    }
    for pull in ["ecr:GetAuthorizationToken", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"] {
        assert!(deploy_actions.iter().any(|action| action == pull), "the deploy role cannot {pull}");
    }
    // Trust: whole subjects naming the workflow (job_workflow_ref) on main;
    // the publish role outside any environment, the deploy roles inside one.
    assert!(!publish_subjects.is_empty() && !deploy_subjects.is_empty());
    for subject in publish_subjects.iter().chain(&deploy_subjects) {
        assert!(!subject.contains('*'), "a trust subject with a wildcard: {subject}");
        assert!(
            subject.contains(":job_workflow_ref:") && subject.ends_with("@refs/heads/main"),
            "a trust subject that does not name the workflow on main: {subject}"
        );
    }
    for subject in &publish_subjects {
        assert!(subject.contains(":ref:refs/heads/main:") && subject.contains("/ci.yml@"), "{subject}");
    }
    for subject in &deploy_subjects {
        let environment = subject.split(":environment:").nth(1).and_then(|rest| rest.split(':').next());
        assert!(
            environment.is_some_and(|environment| KEY_ENVIRONMENTS.contains(&environment)),
            "a deploy role trusts a subject outside the environments: {subject}"
        );
    }
    // Every workflow that assumes the deploy role is named by a subject.
    for (file, _, job) in all_jobs() {
        if text(&job).contains("vars.AWS_DEPLOY_ROLE_ARN") {
            let environment = job["environment"].as_str().unwrap();
            let named = format!(":environment:{environment}:job_workflow_ref:<owner>/<repo>/.github/workflows/{file}@");
            assert!(
                deploy_subjects.iter().any(|subject| subject.contains(&named))
                    || book.contains(&format!("`repo:<owner>/<repo>{named}refs/heads/main`")),
                "no deploy role trusts {file} in {environment}"
            );
        }
    }
}

#[test]
fn the_whole_suite_runs_and_stack_changes_have_a_schedule_and_a_rollback_by_hand() {
    let jobs = all_jobs();
    // The suite that proves the xtask: a swarm and what .ci/run starts.
    assert!(
        jobs.iter().any(|(_, _, job)| text(&job["steps"]).contains("bash .ci/run")),
        "no job runs the whole test suite (bash .ci/run)"
    );
    assert!(
        std::fs::read_to_string(xtask_test_support::project_root().join(".ci/run"))
            .unwrap()
            .contains("docker swarm init"),
        ".ci/run does not make the engine a swarm"
    );

    // Everything that publishes or changes the stack waits for lint.
    let ci = yaml(&xtask_test_support::project_root().join(".github/workflows/ci.yml"));
    for (name, job) in ci["jobs"].as_mapping().unwrap() {
        let steps = text(&job["steps"]);
        if steps.contains("xtask ci") || steps.contains("xtask deploy") {
            assert!(text(&job["needs"]).contains("lint"), "ci.yml {name:?} publishes without needs: lint");
        }
    }

    // refresh-auth on a schedule.
    let refresh = yaml(&xtask_test_support::project_root().join(".github/workflows/refresh-auth.yml"));
    assert!(text(&refresh["on"]["schedule"]).contains("cron"), "refresh-auth has no schedule");
    assert!(text(&refresh["jobs"]).contains("cargo xtask refresh-auth"));

    // A rollback by hand, with an optional version, in the environment.
    let rollback = yaml(&xtask_test_support::project_root().join(".github/workflows/rollback.yml"));
    let input = &rollback["on"]["workflow_dispatch"]["inputs"]["version"];
    assert_eq!(input["required"], Value::from(false), "the rollback's version must be optional");
    let (_, job) = rollback["jobs"].as_mapping().unwrap().iter().next().expect("a rollback job");
    assert_eq!(job["environment"], Value::from("production"));
    let steps = text(&job["steps"]);
    assert!(steps.contains("cargo xtask rollback") && steps.contains("--to"), "{steps}");
    assert!(steps.contains("--env production"), "the rollback does not name its environment: {steps}");
    // The input is passed as a variable, never spliced into the script.
    let scripts: String = job["steps"].as_sequence().unwrap().iter().filter_map(|step| step["run"].as_str()).collect();
    assert!(!scripts.contains("${{"), "the rollback splices an expression into its script: {scripts}");
}

#[test]
fn no_action_runs_while_the_ssh_agent_can_be_reached() {
    for (file, name, job) in all_jobs() {
        let steps = job["steps"].as_sequence().expect("steps");
        for step in steps {
            let script = step["run"].as_str().unwrap_or_default();
            assert!(
                !(script.contains("SSH_AUTH_SOCK") && script.contains("GITHUB_ENV")),
                "{file} {name}: the ssh-agent socket is exported to the job, where later steps and post-job actions reach it"
            );
        }
        // Where an agent is started, it is stopped in the same step.
        for step in steps {
            let script = step["run"].as_str().unwrap_or_default();
            if script.contains("ssh-agent -s") {
                assert!(script.contains("ssh-agent -k"), "{file} {name}: the ssh-agent outlives its step");
            }
        }
    }
}

#[test]
fn the_advisories_run_on_every_push_and_daily_with_the_pinned_cargo_deny() {
    let path = xtask_test_support::project_root().join(".github/workflows/supply-chain.yml");
    let workflow = yaml(&path);
    let on = &workflow["on"];
    assert!(on.get("push").is_some(), "the advisories do not run on every push");
    assert!(on["push"]["branches"].is_null(), "the advisories run on some branches only");
    let cron = text(&on["schedule"]);
    let daily = cron.lines().filter_map(|line| line.split("cron:").nth(1)).any(|spec| {
        let fields: Vec<&str> = spec.trim().trim_matches(['"', '\'']).split_whitespace().collect();
        fields.len() == 5 && fields[2..] == ["*", "*", "*"]
    });
    assert!(daily, "the advisories have no daily schedule: {cron}");
    let steps = text(&workflow["jobs"]);
    assert!(steps.contains("bash .ci/install-cargo-deny"), "the job does not install the pinned cargo-deny");
    assert!(steps.contains("cargo deny") && steps.contains("check advisories"), "no `cargo deny check advisories`");
    assert!(
        std::fs::read_to_string(xtask_test_support::project_root().join(".ci/run"))
            .unwrap()
            .contains("bash .ci/install-cargo-deny"),
        ".ci/run does not install cargo-deny for the suite's licence, ban and source checks"
    );
}
