//! The runner: what each task needs first, like a Makefile's prerequisites,
//! and running a task after them, each at most once; the light tasks'
//! dispatch; and `ci`, a pipeline of tasks that the runner runs itself.
//!
//! Adding a task (docs/src/development.md, Adding a task): its variant with its arguments in
//! `flags.rs`, its arm in a dispatch (`dispatch_light` here, or `xtask-cloud`'s
//! `dispatch`), and its module with a `run`. The compiler checks both
//! matches.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::ctx::{Ctx, Printer};
use crate::exit::{self, Exit, Signal};
use crate::flags::{
    CiArgs, Cli, CloudTask, Deferred, DeployArgs, LightTask, PrintTask, ReleaseArgs, RollbackArgs, Task,
};
use crate::{build, clean, completions, docs, output, release, settings, test, version};

/// Which signal, if any, has arrived since the signals were caught.
pub type Interrupted = Box<dyn Fn() -> Option<Signal>>;

/// What the binary that has the cloud tasks (`xtask-cloud`) gives the runner.
pub struct Cloud {
    /// Runs one cloud task.
    pub dispatch: fn(&Ctx, &CloudTask) -> Result<()>,
    /// Catches SIGINT and SIGTERM from now on, for `ci`: the first is
    /// reported by the returned function, the second exits at once.
    pub catch_signals: fn() -> Result<Interrupted>,
}

/// The tasks that run before `task`, like a Makefile's prerequisites.
pub fn needs(task: &Task) -> Vec<Task> {
    match task {
        Task::Light(light) => light_needs(light).into_iter().map(Task::Light).collect(),
        Task::Cloud(CloudTask::Deploy(Deferred(DeployArgs { no_login: false, .. })))
        | Task::Cloud(CloudTask::Rollback(Deferred(RollbackArgs { no_login: false, .. })))
        | Task::Cloud(CloudTask::RefreshAuth) => vec![Task::Cloud(CloudTask::Login)],
        Task::Cloud(_) => Vec::new(),
    }
}

/// A light task needs only light tasks, the type says so: the light binary
/// never has to ask where a prerequisite lives.
fn light_needs(task: &LightTask) -> Vec<LightTask> {
    match task {
        LightTask::Test => vec![LightTask::Build],
        LightTask::Release(args) if !args.no_build => vec![LightTask::Build],
        _ => Vec::new(),
    }
}

/// The light tasks' dispatch.
fn dispatch_light(ctx: &Ctx, task: &LightTask) -> Result<()> {
    match task {
        LightTask::Print(task) => dispatch_print(ctx.printer(), task, || Ok(ctx.version().to_owned())),
        LightTask::Build => build::run(ctx),
        LightTask::Test => test::run(ctx),
        LightTask::Release(_) => release::run(ctx),
        LightTask::Clean => clean::run(ctx),
        LightTask::Docs => docs::run(ctx),
    }
}

/// The dispatch of the tasks that only print: each needs a printer, and
/// `version` also the version, which is asked for only when it runs
/// (`completions` needs no git).
fn dispatch_print(printer: Printer, task: &PrintTask, version: impl FnOnce() -> Result<String>) -> Result<()> {
    match task {
        PrintTask::Version => version::run(printer, &version()?),
        PrintTask::Completions(args) => completions::run(printer, args),
    }
}

/// Runs tasks with their prerequisites, each at most once.
pub struct Runner {
    ctx: Ctx,
    done: HashSet<String>,
    cloud: Option<Cloud>,
}

impl Runner {
    pub fn new(ctx: Ctx, cloud: Option<Cloud>) -> Runner {
        Runner { ctx, done: HashSet::new(), cloud }
    }

    pub fn run(&mut self, task: Task) -> Result<()> {
        for need in needs(&task) {
            self.run(need)?;
        }
        let name = task.name();
        if !self.done.insert(name.clone()) {
            return Ok(());
        }
        self.ctx.enter_task(&name);
        let result = match &task {
            Task::Light(light) => dispatch_light(&self.ctx, light),
            Task::Cloud(CloudTask::Ci(args)) => self.run_ci(args),
            Task::Cloud(cloud) => match &self.cloud {
                Some(binary) => (binary.dispatch)(&self.ctx, cloud),
                None => Err(anyhow::anyhow!("this binary has no cloud tasks: run it through `cargo xtask`")),
            },
        };
        result.with_context(|| format!("{name} failed"))
    }

    /// `ci`: its stages in order. A failure skips the stages that do not
    /// always run; so does a first SIGINT or SIGTERM, once the stage under
    /// way has finished. The error (and so the exit code) is the first
    /// failure's; later failures of the cleanup stages are printed.
    fn run_ci(&mut self, args: &CiArgs) -> Result<()> {
        let catch_signals = self.cloud.as_ref().map(|cloud| cloud.catch_signals).context("ci runs in xtask-cloud")?;
        let root = self.ctx.settings.root.clone();
        let version_file = args.version_file.clone().unwrap_or_else(|| root.join("version.json"));
        let interrupted = catch_signals()?;
        let mut first_error: Option<anyhow::Error> = None;
        for stage in ci_pipeline(version_file) {
            if let Some(reason) = skip_reason(&stage, first_error.is_some(), interrupted()) {
                output::say(&format!("==> ci: {} skipped: {reason}", stage.name));
                continue;
            }
            output::say(&format!("==> ci: {}{}", stage.name, if stage.always { " (always)" } else { "" }));
            let result = match stage.action {
                Action::Run(task) => self.run(task),
                Action::WriteVersion(path) => write_version(&self.ctx, &path),
            };
            let result =
                match (result, interrupted()) {
                    (Err(err), Some(signal)) if !stage.always => Err(Exit::Interrupted(signal)
                        .wrap(err.context(format!("{} interrupted by {}", stage.name, signal.name())))),
                    (result, _) => result,
                };
            match (result, &first_error) {
                (Ok(()), _) => {}
                (Err(err), None) => {
                    output::say(&format!("==> ci: {} FAILED: {err:#}", stage.name));
                    first_error = Some(err);
                }
                (Err(err), Some(_)) => output::say(&format!("==> ci: {} also failed: {err:#}", stage.name)),
            }
        }
        match (first_error, interrupted()) {
            (Some(err), _) => Err(err),
            (None, Some(signal)) => Err(Exit::Interrupted(signal).error(format!("interrupted by {}", signal.name()))),
            (None, None) => Ok(()),
        }
    }
}

/// What one stage of `ci` does.
#[derive(Debug, Clone)]
pub enum Action {
    Run(Task),
    WriteVersion(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Stage {
    pub name: &'static str,
    pub action: Action,
    /// Runs even after a failure or a signal.
    pub always: bool,
}

/// `ci`'s stages, in order: login, test, release, publish, the version
/// file; then clean and logout, always.
pub fn ci_pipeline(version_file: PathBuf) -> Vec<Stage> {
    let stage = |name, action, always| Stage { name, action, always };
    vec![
        stage("login", Action::Run(Task::Cloud(CloudTask::Login)), false),
        stage("test", Action::Run(Task::Light(LightTask::Test)), false),
        // `test` built the images; release starts them.
        stage("release", Action::Run(Task::Light(LightTask::Release(Deferred(ReleaseArgs { no_build: true })))), false),
        stage("publish", Action::Run(Task::Cloud(CloudTask::Publish(Deferred::default()))), false),
        stage("version", Action::WriteVersion(version_file), false),
        stage("clean", Action::Run(Task::Light(LightTask::Clean)), true),
        stage("logout", Action::Run(Task::Cloud(CloudTask::Logout)), true),
    ]
}

/// Why a stage does not run: only stages that always run go on after a
/// failure or a signal, and a signal is named over a failure.
fn skip_reason(stage: &Stage, failed_before: bool, interrupted: Option<Signal>) -> Option<String> {
    match (stage.always, interrupted, failed_before) {
        (true, _, _) => None,
        (false, Some(signal), _) => Some(format!("interrupted by {}", signal.name())),
        (false, None, true) => Some("an earlier stage failed".to_owned()),
        (false, None, false) => None,
    }
}

/// `{"Version": "<APP_VERSION>"}`, as `cargo xtask version` prints it.
fn write_version(ctx: &Ctx, path: &Path) -> Result<()> {
    let json = version::json(ctx.version());
    ctx.write_file(path, &format!("{json}\n")).context("cannot write the version file")?;
    ctx.report(&format!("wrote {json} to {}", path.display()));
    Ok(())
}

/// Load the settings, build the context and run the task, with `cloud` for
/// the cloud tasks. Errors print as one line; the exit code is the one the
/// error is marked with ([`exit::code_of`]), else 1.
pub fn main_with(cli: Cli, cloud: Option<Cloud>) -> std::process::ExitCode {
    let result = (|| {
        let root = settings::project_root()?;
        let from_env = std::env::var("APP_VERSION").ok();
        // A task that only prints needs none of the rest: no settings file
        // is read, no Docker configuration, no shell set up (`version` runs
        // on every build: the book: Performance).
        if let Task::Light(LightTask::Print(task)) = &cli.task {
            let name = cli.task.name();
            let printer = Printer::new(cli.settings.verbosity(), cli.settings.dry_run);
            printer.enter_task(&name);
            return dispatch_print(printer, task, || version::resolve(from_env.as_deref(), &root))
                .with_context(|| format!("{name} failed"));
        }
        let settings = settings::Settings::load(&root, &cli.settings)?;
        let version = version::resolve(from_env.as_deref(), &settings.root)
            .with_context(|| format!("{} failed", cli.task.name()))?;
        let docker = crate::docker_endpoint::resolve(&|name| settings.docker_lookup(name))
            .with_context(|| format!("{} failed", cli.task.name()))?;
        let ctx = Ctx::new(settings, version, docker)?;
        Runner::new(ctx, cloud).run(cli.task)
    })();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            let exit = exit::code_of(&err);
            // "There are changes" (`plan --exit-code`) is an answer, not an error.
            if exit == Exit::Changes {
                output::say(&format!("{err:#}"));
            } else {
                output::error(&format!("{err:#}"));
            }
            std::process::ExitCode::from(exit.code())
        }
    }
}

/// Refuse a task this binary cannot run (the light binary hands cloud tasks
/// over before it gets here).
pub fn not_here(task: &Task) -> Result<()> {
    bail!("{} is a cloud task: run it through `cargo xtask`", task.name())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn light_tasks_need_only_light_tasks_and_deploy_logs_in_first() {
        let test = Task::Light(LightTask::Test);
        assert_eq!(needs(&test).iter().map(Task::name).collect::<Vec<_>>(), ["build"]);
        let release = Task::Light(LightTask::Release(Deferred(ReleaseArgs { no_build: true })));
        assert!(needs(&release).is_empty());
        let deploy = |no_login| {
            Task::Cloud(CloudTask::Deploy(Deferred(DeployArgs {
                no_login,
                detach: false,
                timeout: Duration::from_secs(1),
                allow_breaking_migration: false,
                lock_wait: None,
                prune: false,
                no_verify: false,
            })))
        };
        assert_eq!(needs(&deploy(false)).iter().map(Task::name).collect::<Vec<_>>(), ["login"]);
        // `clean` runs in the light binary: it never builds xtask-cloud.
        let clean = crate::flags::parse_from(["cargo xtask", "clean"]).unwrap();
        assert!(matches!(clean.task, Task::Light(LightTask::Clean)));
        assert!(needs(&deploy(true)).is_empty());
    }

    fn stage(always: bool) -> Stage {
        Stage { name: "x", action: Action::WriteVersion("v.json".into()), always }
    }

    #[test]
    fn a_stage_runs_unless_a_failure_or_a_signal_came_before() {
        assert_eq!(skip_reason(&stage(false), false, None), None);
        assert_eq!(skip_reason(&stage(false), true, None).as_deref(), Some("an earlier stage failed"));
        assert_eq!(skip_reason(&stage(false), false, Some(Signal::Term)).as_deref(), Some("interrupted by SIGTERM"));
        assert_eq!(skip_reason(&stage(false), true, Some(Signal::Int)).as_deref(), Some("interrupted by SIGINT"));
    }

    #[test]
    fn cleanup_stages_run_after_failures_and_signals() {
        for (failed, signal) in [(false, None), (true, None), (false, Some(Signal::Int)), (true, Some(Signal::Term))] {
            assert_eq!(skip_reason(&stage(true), failed, signal), None);
        }
    }

    #[test]
    fn only_clean_and_logout_run_always_and_they_come_last() {
        let stages = ci_pipeline("v.json".into());
        let first_always = stages.iter().position(|stage| stage.always).expect("cleanup stages");
        assert!(stages[first_always..].iter().all(|stage| stage.always), "cleanup runs after every other stage");
        let cleanup: Vec<&str> = stages[first_always..].iter().map(|stage| stage.name).collect();
        assert_eq!(cleanup, ["clean", "logout"]);
        assert!(
            stages
                .iter()
                .any(|stage| matches!(&stage.action, Action::WriteVersion(path) if path.as_os_str() == "v.json")),
            "the version file goes where it is asked to"
        );
    }
}
