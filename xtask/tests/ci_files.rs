//! The CI definitions users copy: the GitHub workflows validate against
//! GitHub's workflow schema (check-jsonschema's vendored copy, from a
//! virtualenv under target/, offline once installed), and both they and the
//! CodeBuild buildspec do what the README says: cache, OIDC and no static
//! keys, pull requests without login or push, a deploy job after the
//! pipeline, a toolchain install.

mod support;

use std::path::PathBuf;
use std::process::Command;

use serde_yaml::Value;

fn workflows() -> Vec<PathBuf> {
    let dir = support::project_root().join(".github/workflows");
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

/// `check-jsonschema`, installed once into target/ci-venv.
fn check_jsonschema() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| support::project_root().join("target"));
    let venv = target.join("ci-venv");
    let program = venv.join("bin/check-jsonschema");
    if !program.is_file() {
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
    let path = support::project_root().join(".github/workflows/ci.yml");
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
    // Concurrency per ref.
    assert!(text(&workflow["concurrency"]["group"]).contains("github.ref"), "no concurrency group per ref");

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
    assert!(pipeline.contains("aws-actions/configure-aws-credentials@") && pipeline.contains("vars.AWS_ROLE_ARN"));
    assert!(pipeline.contains("cargo xtask ci"));
    assert!(pipeline.contains("actions/upload-artifact@") && pipeline.contains("version.json"));
    assert!(pipeline.contains("GITHUB_STEP_SUMMARY") && pipeline.contains("@sha256:"));

    // Then deploy, in the production environment, through ssh.
    let deploy = job("deploy");
    assert_eq!(deploy["needs"], Value::from("ci"));
    assert_eq!(deploy["environment"], Value::from("production"));
    assert!(text(&deploy["if"]).contains("refs/heads/main"));
    assert!(text(&deploy["env"]["DOCKER_HOST"]).contains("ssh://"));
    assert!(
        text(&deploy["env"]["APP_VERSION"]).contains("needs.ci.outputs.version"),
        "deploy must deploy what ci published"
    );
    let deploying = steps("deploy");
    assert!(deploying.contains("cargo xtask deploy") && deploying.contains("secrets.SWARM_SSH_KEY"));
    assert!(deploying.contains("vars.AWS_ROLE_ARN"));
}

#[test]
fn the_buildspec_installs_the_pinned_toolchain_caches_and_leaves_the_region_alone() {
    let root = support::project_root();
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
    let root = support::project_root();
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
    let root = support::project_root();
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
