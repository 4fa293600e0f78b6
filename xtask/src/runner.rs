//! What every task runs with: the settings, the shell with the exported
//! variables, step headers, and `--dry-run`, which prints each step's commands
//! and API calls instead of making them.

use std::cell::{Cell, OnceCell};
use std::time::Instant;

use anyhow::{Context, Result};
use xshell::{Cmd, Shell};

use crate::settings::Settings;
use crate::version;

pub struct Ctx {
    pub settings: Settings,
    pub dry_run: bool,
    sh: Shell,
    version: OnceCell<String>,
    exported: Cell<bool>,
    task: Cell<&'static str>,
    in_step: Cell<bool>,
    github_actions: bool,
}

impl Ctx {
    pub fn new(settings: Settings) -> Result<Ctx> {
        let sh = Shell::new().context("cannot set up the shell for running commands")?;
        sh.change_dir(&settings.root);
        Ok(Ctx {
            dry_run: settings.dry_run,
            settings,
            sh,
            version: OnceCell::new(),
            exported: Cell::new(false),
            task: Cell::new(""),
            in_step: Cell::new(false),
            github_actions: std::env::var("GITHUB_ACTIONS").is_ok_and(|value| value == "true"),
        })
    }

    /// The resolved APP_VERSION (see `version.rs`), computed once.
    pub fn version(&self) -> Result<&str> {
        if let Some(version) = self.version.get() {
            return Ok(version);
        }
        let from_env = std::env::var("APP_VERSION").ok();
        let resolved = version::resolve(from_env.as_deref(), &self.settings.root)?;
        Ok(self.version.get_or_init(|| resolved))
    }

    /// The shell commands run in: at the project root, with APP_VERSION,
    /// ECR_REGISTRY, IMAGE_REPOSITORY and COMPOSE_PROJECT_NAME exported, so that
    /// docker-compose.yml and stack.yml see the same values as the xtask.
    pub fn sh(&self) -> Result<&Shell> {
        if !self.exported.get() {
            let version = self.version()?.to_owned();
            self.sh.set_var("APP_VERSION", version);
            self.sh.set_var("ECR_REGISTRY", self.settings.registry());
            self.sh.set_var("IMAGE_REPOSITORY", &self.settings.repository);
            self.sh.set_var("COMPOSE_PROJECT_NAME", &self.settings.compose_project);
            self.exported.set(true);
        }
        Ok(&self.sh)
    }

    /// Name the task whose steps follow (used in headers and the plan).
    pub fn enter_task(&self, name: &'static str) {
        self.task.set(name);
        if self.dry_run {
            println!("[{name}]");
        }
    }

    /// Run one step under a header: `==> task: title` on stderr, or a
    /// `::group::` with its duration under GitHub Actions. In a dry run the
    /// title goes to the plan and `body` prints its commands instead of
    /// running them.
    pub fn step<T>(&self, title: &str, body: impl FnOnce() -> Result<T>) -> Result<T> {
        if self.dry_run {
            println!("  # {title}");
            return body();
        }
        // GitHub groups do not nest: an inner step is a plain header.
        let grouped = self.github_actions && !self.in_step.get();
        let task = self.task.get();
        if grouped {
            eprintln!("::group::{task}: {title}");
        } else {
            eprintln!("==> {task}: {title}");
        }
        let outer = self.in_step.replace(true);
        let started = Instant::now();
        let result = body();
        self.in_step.set(outer);
        if grouped {
            eprintln!("::endgroup::");
            let outcome = if result.is_ok() { "done" } else { "FAILED" };
            eprintln!("{task}: {title}: {outcome} in {:.1}s", started.elapsed().as_secs_f64());
        }
        result
    }

    /// Add a line to the plan of a dry run (a call that is not a command).
    pub fn plan(&self, line: &str) {
        println!("    {line}");
    }

    /// Run a command, or in a dry run print it. The command line is echoed to
    /// stderr, and so is everything the command prints: stdout is kept for
    /// the xtask's results.
    pub fn run(&self, cmd: Cmd<'_>) -> Result<()> {
        if self.dry_run {
            self.plan(&format!("$ {cmd}"));
            return Ok(());
        }
        let line = cmd.to_string();
        eprintln!("$ {line}");
        let mut command = std::process::Command::from(cmd);
        command.stdout(std::io::stderr());
        let status = command.status().with_context(|| format!("cannot start `{line}`"))?;
        if !status.success() {
            anyhow::bail!("`{line}` failed ({status})");
        }
        Ok(())
    }

    /// Run a command that passes a secret on stdin. The secret never reaches
    /// argv, logs or errors. The command's stderr is passed on (secret masked);
    /// if it fails, its last stderr line is the error's reason.
    pub fn run_with_secret(&self, cmd: Cmd<'_>, secret: &str) -> Result<()> {
        if self.dry_run {
            self.plan(&format!("$ {cmd}   (secret on stdin)"));
            return Ok(());
        }
        let line = cmd.to_string();
        let output = cmd.stdin(secret).quiet().ignore_status().output().with_context(|| format!("`{line}` failed"))?;
        let stderr = String::from_utf8_lossy(&output.stderr).replace(secret, "********");
        let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
        if !output.status.success() {
            let reason = lines.last().copied().unwrap_or("no message");
            anyhow::bail!("`{line}` failed: {reason}");
        }
        for line in lines {
            eprintln!("{line}");
        }
        Ok(())
    }

    /// Run a read-only query and capture its stdout. It runs in a dry run too:
    /// queries change nothing and later steps need their answers.
    pub fn read(&self, cmd: Cmd<'_>) -> Result<String> {
        let line = cmd.to_string();
        cmd.quiet().read().with_context(|| format!("`{line}` failed"))
    }
}
