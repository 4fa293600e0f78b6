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
