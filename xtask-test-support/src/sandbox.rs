//! An isolated place to run an xtask binary: a private DOCKER_CONFIG, a
//! unique compose project and stack, nothing of the caller's AWS, Docker
//! login or CI settings; and [`Run`], what a run printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{project_root, unique_name};

/// What a run of the xtask printed.
pub struct Run {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The run of a process whose output was captured.
    pub fn of(out: Output) -> Run {
        Run {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics, showing both streams, unless the run succeeded.
    pub fn assert_success(&self) -> &Run {
        assert!(self.success(), "xtask failed\n--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr);
        self
    }

    pub fn assert_failure(&self) -> &Run {
        assert!(
            !self.success(),
            "xtask succeeded but should not\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics if `secret` appears in either stream.
    pub fn assert_not_leaked(&self, secret: &str) -> &Run {
        assert!(!self.stdout.contains(secret), "the secret appears on stdout");
        assert!(!self.stderr.contains(secret), "the secret appears on stderr");
        self
    }

    /// The `error: ...` lines of stderr.
    pub fn error_lines(&self) -> Vec<&str> {
        self.stderr.lines().filter(|line| line.starts_with("error:")).collect()
    }

    /// The `error: ...` lines of stderr, as one text.
    pub fn error_text(&self) -> String {
        self.error_lines().join("\n")
    }
}

/// An isolated place to run the xtask `binary`: a private DOCKER_CONFIG, a
/// unique compose project and stack (STACK_NAME), and the variables a test adds.
///
/// When the last sandbox of a family ([`Sandbox::clone_with`] shares it)
/// goes, the images the xtask built in it go too: see [`BuiltImages`].
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
    pub root: PathBuf,
    binary: PathBuf,
    built_images: Arc<BuiltImages>,
}

impl Sandbox {
    /// A sandbox that runs `binary` (the test crate's `CARGO_BIN_EXE_...`).
    pub fn new(binary: impl Into<PathBuf>) -> Sandbox {
        let dir = tempfile::tempdir().expect("temp dir");
        let docker_config = dir.path().join("docker-config");
        std::fs::create_dir_all(&docker_config).expect("docker config dir");
        let name = unique_name("t");
        let env = vec![
            ("DOCKER_CONFIG".to_owned(), docker_config.display().to_string()),
            ("COMPOSE_PROJECT_NAME".to_owned(), format!("{name}env")),
            ("STACK_NAME".to_owned(), format!("{name}stack")),
        ];
        Sandbox { dir, env, root: project_root(), binary: binary.into(), built_images: Arc::default() }
    }

    pub fn with_env(mut self, key: &str, value: &str) -> Sandbox {
        self.env.retain(|(existing, _)| existing != key);
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// [`Sandbox::with_env`] for each of `env`.
    pub fn with_envs<K: AsRef<str>, V: AsRef<str>>(self, env: impl IntoIterator<Item = (K, V)>) -> Sandbox {
        env.into_iter().fold(self, |sandbox, (key, value)| sandbox.with_env(key.as_ref(), value.as_ref()))
    }

    /// Remove an environment variable the sandbox would set.
    pub fn without_env(mut self, key: &str) -> Sandbox {
        self.env.retain(|(existing, _)| existing != key);
        self
    }

    /// The same sandbox (same Docker config and stack) with more variables.
    pub fn clone_with(&self, env: &[(&str, &str)]) -> Sandbox {
        let copy = Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
            env: self.env.clone(),
            root: self.root.clone(),
            binary: self.binary.clone(),
            built_images: Arc::clone(&self.built_images),
        };
        copy.with_envs(env.iter().copied())
    }

    /// The value the sandbox gives `key`, if any.
    pub fn env_value(&self, key: &str) -> Option<&str> {
        self.env.iter().find(|(existing, _)| existing == key).map(|(_, value)| value.as_str())
    }

    /// The local name `cargo xtask build` gives the release image in this
    /// sandbox: `<compose project>/<repository>:<version>` (the sandbox's
    /// project names are already valid image path components).
    pub fn local_image(&self, repository: &str, version: &str) -> String {
        let project = self.env_value("COMPOSE_PROJECT_NAME").expect("every sandbox names its compose project");
        format!("{project}/{repository}:{version}")
    }

    /// The stack the sandbox deploys (its STACK_NAME).
    pub fn stack_name(&self) -> String {
        self.env_value("STACK_NAME").expect("every sandbox names its stack").to_owned()
    }

    /// Run the project's xtask in `root` (the checkout, or a copy of it).
    pub fn xtask(&self, args: &[&str]) -> Run {
        self.xtask_in(&self.root, args)
    }

    pub fn xtask_in(&self, dir: &Path, args: &[&str]) -> Run {
        Run::of(self.command_in(dir, args).output().expect("run the xtask binary"))
    }

    /// Run the xtask with `input` on its stdin (a secret's value: never an
    /// argument).
    pub fn xtask_with_stdin(&self, args: &[&str], input: &str) -> Run {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the xtask");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write to the xtask's stdin");
        Run::of(child.wait_with_output().expect("run the xtask"))
    }

    /// The xtask command [`Sandbox::xtask`] runs, to spawn.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_in(&self.root, args)
    }

    /// The xtask command [`Sandbox::xtask_in`] runs, to spawn.
    pub fn command_in(&self, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args(args).current_dir(dir).stdin(Stdio::null());
        // Nothing of the caller's AWS, Docker login or CI setup leaks in.
        for key in [
            "AWS_PROFILE",
            "AWS_ENDPOINT_URL_ECR",
            "ECR_REGISTRY",
            "IMAGE_REPOSITORY",
            "GITHUB_ACTIONS",
            "CARGO_MANIFEST_DIR",
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
        ] {
            cmd.env_remove(key);
        }
        cmd.env("AWS_EC2_METADATA_DISABLED", "true");
        cmd.env("AWS_CONFIG_FILE", "/dev/null").env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        cmd
    }

    /// The sandbox's private Docker config directory (DOCKER_CONFIG).
    pub fn docker_config(&self) -> PathBuf {
        self.dir.path().join("docker-config")
    }

    /// The real docker CLI with the sandbox's DOCKER_CONFIG and nothing else of it.
    pub fn docker(&self, args: &[&str]) -> Run {
        let out = Command::new("docker")
            .args(args)
            .env("DOCKER_CONFIG", self.docker_config())
            .stdin(Stdio::null())
            .output()
            .expect("run docker");
        Run::of(out)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // The compose project and engine as this sandbox ends them (a test
        // may have changed either with `with_env`).
        let project = self.env_value("COMPOSE_PROJECT_NAME").map(str::to_owned);
        let engine = self.env_value("DOCKER_HOST").map(str::to_owned);
        if let Some(project) = project {
            let mut places = self.built_images.places.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if !places.contains(&(project.clone(), engine.clone())) {
                places.push((project, engine));
            }
        }
    }
}

/// The images that `cargo xtask build` made in a family of sandboxes: every
/// build labels its image `xtask.local-project=<compose project>`, and each
/// sandbox has its own project, so the label names exactly this test's
/// images, tagged or not, whichever tag a later build moved. Removed when the
/// last sandbox of the family goes (children first, so the legacy builder's
/// untagged parent layers go with them), then checked: an image that stays
/// fails the test, naming it, unless the test is already failing.
#[derive(Default)]
struct BuiltImages {
    /// (compose project, DOCKER_HOST if the sandbox named one).
    places: Mutex<Vec<(String, Option<String>)>>,
}

/// How long the removal keeps trying: a task of a stack the test removed a
/// moment ago may still hold its image.
const REMOVAL_DEADLINE: Duration = Duration::from_secs(60);

impl Drop for BuiltImages {
    fn drop(&mut self) {
        let places = std::mem::take(self.places.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner()));
        let mut left = Vec::new();
        for (project, engine) in places {
            // The host's engine always (builds run there unless a test points
            // DOCKER_HOST elsewhere), and the sandbox's own engine if it had one
            // (a multi-node test's; it may already be gone with its namespace).
            left.extend(remove_labelled_images(&project, None));
            if let Some(engine) = engine {
                let _ = remove_labelled_images(&project, Some(&engine));
            }
        }
        if !left.is_empty() && !std::thread::panicking() {
            panic!("images the xtask built in this test remain after {REMOVAL_DEADLINE:?}: {}", left.join(", "));
        }
    }
}

/// Removes every image labelled `xtask.local-project=<project>` on `engine`
/// (the default one if None), retrying until the deadline; returns those that
/// stay, as `id (tags)`.
fn remove_labelled_images(project: &str, engine: Option<&str>) -> Vec<String> {
    let docker = |args: &[&str]| {
        let mut command = Command::new("docker");
        command.args(args).stdin(Stdio::null());
        if let Some(engine) = engine {
            command.env("DOCKER_HOST", engine);
        }
        command.output().ok().filter(|out| out.status.success())
    };
    let label = format!("label=xtask.local-project={project}");
    let list = || -> Option<Vec<String>> {
        let out = docker(&["image", "ls", "--all", "--quiet", "--no-trunc", "--filter", &label])?;
        let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
        ids.sort();
        ids.dedup();
        Some(ids)
    };
    let deadline = Instant::now() + REMOVAL_DEADLINE;
    loop {
        // No engine (a multi-node test's, gone with its namespace): nothing
        // of it can stay.
        let Some(ids) = list() else { return Vec::new() };
        if ids.is_empty() {
            return Vec::new();
        }
        // One pass removes the images no other image is built on; their
        // parents go on a later pass (or with them, once untagged).
        for id in &ids {
            let _ = docker(&["image", "rm", "--force", id]);
        }
        let Some(after) = list() else { return Vec::new() };
        if after.is_empty() {
            return Vec::new();
        }
        if Instant::now() >= deadline {
            return after
                .iter()
                .map(|id| {
                    let tags = docker(&["image", "inspect", "--format", "{{.RepoTags}}", id])
                        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
                        .unwrap_or_default();
                    format!("{id} {tags}")
                })
                .collect();
        }
        if after.len() == ids.len() {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}
