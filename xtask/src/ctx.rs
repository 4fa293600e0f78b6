//! What every task runs with: the settings, the resolved APP_VERSION, the
//! shell with the workflow's variables exported, step headers, and every side
//! effect a task makes. Only `Ctx` knows about `--dry-run`: a task asks it to
//! run a command, write or remove a file, make a change, or print a result,
//! and in a dry run `Ctx` prints that to the plan instead. So a dry run cannot
//! drift from the real one.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use xshell::{Cmd, Shell};

use crate::docker_endpoint::Endpoint;
use crate::notice::{self, Notice};
use crate::output;
use crate::settings::{Settings, Verbosity};

/// How a run prints its result: on stdout, or in a dry run as a line of the
/// plan. All that a task which only prints needs (`flags::PrintTask`:
/// `version`, `completions`, which run before any settings are read); `Ctx`
/// prints through one too.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    dry_run: bool,
}

impl Printer {
    /// The printer of this run; it fixes how the run writes (`output`).
    pub fn new(verbosity: Verbosity, dry_run: bool) -> Printer {
        output::set_mode(verbosity, dry_run);
        Printer { dry_run }
    }

    /// A dry run's plan names each task it enters: `[name]`.
    pub fn enter_task(&self, name: &str) {
        if self.dry_run {
            output::result(&format!("[{name}]"));
        }
    }

    /// A line of the task's result on stdout (the xtask's only stdout); in a
    /// dry run the plan says it would be printed.
    pub fn print_result(&self, line: &str) {
        if self.dry_run {
            self.plan(&format!("print {line}"));
        } else {
            output::result(line);
        }
    }

    /// Add a line to the plan of a dry run.
    fn plan(&self, line: &str) {
        output::result(&format!("    {line}"));
    }
}

pub struct Ctx {
    pub settings: Settings,
    printer: Printer,
    dry_run: bool,
    verbosity: Verbosity,
    version: String,
    docker: Endpoint,
    sh: Shell,
    task: RefCell<String>,
    in_step: Cell<bool>,
    github_actions: bool,
    /// The notices already explained in this run: each is explained once.
    explained: RefCell<Vec<&'static str>>,
}

impl Ctx {
    /// The context for a run of `version` (APP_VERSION, resolved once by
    /// `version::resolve`) against the Docker engine `docker`, exported with
    /// ECR_REGISTRY, IMAGE_REPOSITORY, COMPOSE_PROJECT_NAME and LOCAL_IMAGE (the
    /// local name of the release image, which docker-compose.yml runs) to every
    /// command, so that docker-compose.yml and stack.yml see the values the
    /// xtask uses.
    ///
    /// The Docker endpoint (`docker_endpoint.rs`) is exported the same way:
    /// `DOCKER_HOST` (with its TLS material) and no `DOCKER_CONTEXT`, so that
    /// every docker CLI command reaches the engine the API calls reach.
    pub fn new(settings: Settings, version: String, docker: Endpoint) -> Result<Ctx> {
        let sh = Shell::new().context("cannot set up the shell for running commands")?;
        sh.change_dir(&settings.root);
        sh.set_var("APP_VERSION", &version);
        sh.set_var("ECR_REGISTRY", settings.registry());
        sh.set_var("IMAGE_REPOSITORY", &settings.repository);
        sh.set_var("COMPOSE_PROJECT_NAME", &settings.compose_project);
        // The stack file names the swarm objects it makes outside the stack's
        // namespace after it (the edge's config: `${STACK_NAME}_edge_...`).
        sh.set_var("STACK_NAME", &settings.stack);
        sh.set_var("LOCAL_IMAGE", settings.local_image(&version));
        // The environment's stack variables (delivery.NAME.yml), where the
        // process's environment does not set them.
        for (name, value) in &settings.variables {
            if std::env::var_os(name).is_none() {
                sh.set_var(name, value);
            }
        }
        sh.set_var("DOCKER_HOST", &docker.host);
        // Empty counts as unset for the docker CLI (xshell cannot unset).
        for name in ["DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_TLS", "DOCKER_CERT_PATH"] {
            sh.set_var(name, "");
        }
        if let Some(tls) = &docker.tls {
            sh.set_var("DOCKER_CERT_PATH", &tls.cert_dir);
            sh.set_var(if tls.verify { "DOCKER_TLS_VERIFY" } else { "DOCKER_TLS" }, "1");
        }
        Ok(Ctx {
            printer: Printer::new(settings.verbosity, settings.dry_run),
            dry_run: settings.dry_run,
            verbosity: settings.verbosity,
            settings,
            version,
            docker,
            sh,
            task: RefCell::new(String::new()),
            in_step: Cell::new(false),
            github_actions: std::env::var("GITHUB_ACTIONS").is_ok_and(|value| value == "true"),
            explained: RefCell::new(Vec::new()),
        })
    }

    /// The resolved APP_VERSION.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The Docker engine every command and API call of this run talks to.
    pub fn docker_endpoint(&self) -> &Endpoint {
        &self.docker
    }

    /// How much this run says on stderr (-q, -v).
    pub fn verbosity(&self) -> Verbosity {
        self.verbosity
    }

    /// A line about the run's progress on stderr (what it waits for, which
    /// service changed): dropped by -q, and in a dry run, which only plans.
    pub fn progress(&self, line: &str) {
        output::progress(line);
    }

    /// The task's own account of what it does or did, on stderr, kept with
    /// -q and in a dry run (see [`output::say`]).
    pub fn say(&self, line: &str) {
        output::say(line);
    }

    /// `warning: <line>` on stderr, whatever the verbosity.
    pub fn warn(&self, line: &str) {
        output::warn(line);
    }

    /// A line shown only with -v (never in a dry run, which plans instead).
    fn echo(&self, line: &str) {
        output::verbose(line);
    }

    /// The shell commands run in: at the project root, with the workflow's
    /// variables exported.
    pub fn sh(&self) -> &Shell {
        &self.sh
    }

    /// Name the task whose steps follow (used in headers and the plan).
    pub fn enter_task(&self, name: &str) {
        name.clone_into(&mut self.task.borrow_mut());
        self.printer.enter_task(name);
    }

    /// What prints this run's result, for the tasks that only print.
    pub fn printer(&self) -> Printer {
        self.printer
    }

    /// Run one step under a header: `==> task: title` on stderr, or a
    /// `::group::` with its duration under GitHub Actions; none with -q. In
    /// a dry run the title goes to the plan, and the effects of `body` print
    /// themselves.
    pub fn step<T>(&self, title: &str, body: impl FnOnce() -> Result<T>) -> Result<T> {
        if self.dry_run {
            output::result(&format!("  # {title}"));
            return body();
        }
        if self.verbosity == Verbosity::Quiet {
            return body();
        }
        // GitHub groups do not nest: an inner step is a plain header.
        let grouped = self.github_actions && !self.in_step.get();
        let task = self.task.borrow().clone();
        if grouped {
            output::say(&format!("::group::{task}: {title}"));
        } else {
            output::say(&format!("==> {task}: {title}"));
        }
        let outer = self.in_step.replace(true);
        let started = Instant::now();
        let result = body();
        self.in_step.set(outer);
        if grouped {
            output::say("::endgroup::");
            let outcome = if result.is_ok() { "done" } else { "FAILED" };
            output::say(&format!("{task}: {title}: {outcome} in {:.1}s", started.elapsed().as_secs_f64()));
        }
        result
    }

    /// Add a line to the plan of a dry run.
    fn plan(&self, line: &str) {
        self.printer.plan(line);
    }

    /// A change that is neither a command nor a file: in a dry run,
    /// `description` goes to the plan and `planned`, the value the rest of
    /// the run goes on with, comes back (say in `description` what it
    /// stands for); otherwise `change` runs and its value comes back.
    pub fn effect<T>(&self, description: &str, planned: T, change: impl FnOnce() -> Result<T>) -> Result<T> {
        if self.dry_run {
            self.plan(description);
            return Ok(planned);
        }
        self.echo(&format!("-> {description}"));
        change()
    }

    /// A line of the task's result on stdout (the xtask's only stdout); in a
    /// dry run the plan says it would be printed.
    pub fn print_result(&self, line: &str) {
        self.printer.print_result(line);
    }

    /// A remark on stderr about what a change did; a dry run made none, so it
    /// says nothing, and neither does -q.
    pub fn report(&self, line: &str) {
        self.progress(line);
    }

    /// A remark in the plan of a dry run only: what a real run would have
    /// found out or done differently.
    pub fn plan_note(&self, line: &str) {
        if self.dry_run {
            self.plan(line);
        }
    }

    /// Work whose only product is lines of the plan (a dry run's account
    /// of what would change): run in a dry run, skipped otherwise.
    pub fn plan_only(&self, body: impl FnOnce() -> Result<()>) -> Result<()> {
        if self.dry_run { body() } else { Ok(()) }
    }

    /// The result of a read that a dry run may fail for want of an earlier
    /// step's effect (a login or a build that only printed its plan): the
    /// read has run either way; in a dry run its failure goes to the plan
    /// with `what`, and `planned` comes back for the rest of the plan.
    pub fn read_or_plan<T>(&self, what: &str, planned: T, result: Result<T>) -> Result<T> {
        match result {
            Err(err) if self.dry_run => {
                self.plan(&format!("could not {what} now: {err:#}"));
                Ok(planned)
            }
            result => result,
        }
    }

    /// Write a file.
    pub fn write_file(&self, path: &Path, contents: &str) -> Result<()> {
        self.effect(&format!("write {}", path.display()), (), || {
            std::fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
        })
    }

    /// Remove a file or a directory tree; gone already is fine.
    pub fn remove(&self, path: &Path) -> Result<()> {
        self.effect(&format!("remove {}", path.display()), (), || {
            let removed = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
            match removed {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    Err(err).with_context(|| format!("cannot remove {}", path.display()))
                }
                _ => Ok(()),
            }
        })?;
        Ok(())
    }

    /// Run a command, or in a dry run print it. The command line is echoed to
    /// stderr, and so is everything the command prints: stdout is kept for
    /// the xtask's results. With -q neither shows unless the command fails.
    /// In `ci` it is a process group of its own, stopped with the stage
    /// (`children`).
    pub fn run(&self, cmd: Cmd<'_>) -> Result<()> {
        if self.dry_run {
            self.plan(&format!("$ {cmd}"));
            return Ok(());
        }
        let line = cmd.to_string();
        if self.verbosity == Verbosity::Quiet {
            let ran = crate::children::output(std::process::Command::from(cmd))
                .with_context(|| format!("cannot start `{line}`"))?;
            if !ran.status.success() {
                output::say(&format!("$ {line}"));
                output::raw(&String::from_utf8_lossy(&ran.stdout));
                output::raw(&String::from_utf8_lossy(&ran.stderr));
                anyhow::bail!("`{line}` failed ({})", ran.status);
            }
            return Ok(());
        }
        output::say(&format!("$ {line}"));
        let mut command = std::process::Command::from(cmd);
        command.stdout(std::io::stderr());
        let status = crate::children::status(command).with_context(|| format!("cannot start `{line}`"))?;
        if !status.success() {
            anyhow::bail!("`{line}` failed ({status})");
        }
        Ok(())
    }

    /// [`Ctx::run`] for a docker or compose command: its stderr passes
    /// through [`notice::Filter`], so the tool's known `notices` give way to
    /// our own line (once a run), and a failure's error ends with the
    /// command's last line on stderr, its own reason ("network ... not
    /// found", a migration's error), not only its exit status.
    pub fn run_explained(&self, cmd: Cmd<'_>, notices: &[Notice]) -> Result<()> {
        use std::io::BufRead;
        if self.dry_run {
            self.plan(&format!("$ {cmd}"));
            return Ok(());
        }
        let line = cmd.to_string();
        let mut filter = notice::Filter::new(notices);
        let mut last = String::new();
        let show = |outs: Vec<notice::Out>, last: &mut String| {
            for out in outs {
                match out {
                    notice::Out::Line(text) => {
                        if !text.trim().is_empty() {
                            text.trim().clone_into(last);
                        }
                        output::raw(&format!("{text}\n"));
                    }
                    notice::Out::Ours(ours) => self.explain(ours),
                }
            }
        };
        let status = if self.verbosity == Verbosity::Quiet {
            let ran = std::process::Command::from(cmd).output().with_context(|| format!("cannot start `{line}`"))?;
            if !ran.status.success() {
                output::say(&format!("$ {line}"));
                output::raw(&String::from_utf8_lossy(&ran.stdout));
                // Only a failure shows the output with -q, as `run` does.
                for text in String::from_utf8_lossy(&ran.stderr).lines() {
                    show(filter.line(text), &mut last);
                }
                show(filter.finish(), &mut last);
            }
            ran.status
        } else {
            output::say(&format!("$ {line}"));
            let mut command = std::process::Command::from(cmd);
            command.stdout(std::io::stderr()).stderr(std::process::Stdio::piped());
            let mut child = command.spawn().with_context(|| format!("cannot start `{line}`"))?;
            let stderr = child.stderr.take().expect("stderr is piped");
            for text in std::io::BufReader::new(stderr).lines() {
                let Ok(text) = text else { break };
                show(filter.line(&text), &mut last);
            }
            show(filter.finish(), &mut last);
            child.wait().with_context(|| format!("cannot wait for `{line}`"))?
        };
        if !status.success() {
            if last.is_empty() {
                anyhow::bail!("`{line}` failed ({status})");
            }
            anyhow::bail!("`{line}` failed ({status}): {last}");
        }
        Ok(())
    }

    /// Our line about a tool's notice, the first time it comes in this run.
    fn explain(&self, ours: &'static str) {
        let mut explained = self.explained.borrow_mut();
        if !explained.contains(&ours) {
            explained.push(ours);
            self.progress(ours);
        }
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
        let ran = cmd.stdin(secret).quiet().ignore_status().output().with_context(|| format!("`{line}` failed"))?;
        let stderr = String::from_utf8_lossy(&ran.stderr).replace(secret, "********");
        let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
        if !ran.status.success() {
            let reason = lines.last().copied().unwrap_or("no message");
            anyhow::bail!("`{line}` failed: {reason}");
        }
        if self.verbosity != Verbosity::Quiet {
            for line in lines {
                output::say(line);
            }
        }
        Ok(())
    }

    /// Run a read-only query and capture its stdout. It runs in a dry run too:
    /// queries change nothing and later steps need their answers.
    pub fn read(&self, cmd: Cmd<'_>) -> Result<String> {
        let line = cmd.to_string();
        self.echo(&format!("$ {line}"));
        cmd.quiet().read().with_context(|| format!("`{line}` failed"))
    }
}
