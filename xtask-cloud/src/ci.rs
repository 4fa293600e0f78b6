//! `ci`: the CI pipeline. login, test, release, publish, and the version file;
//! then clean and logout ALWAYS: after a failure, and after SIGINT or SIGTERM
//! too. The error (and so the exit code) is the first failure's; failures of
//! the cleanup stages after it are printed, not returned.
//!
//! On a first SIGINT/SIGTERM the stage under way finishes (a Ctrl-C in a
//! terminal stops its commands too), the remaining stages are skipped, and the
//! cleanup runs; a second signal exits at once (status 130).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use xtask::exit::{Exit, Signal};
use xtask::output::say;

use xtask::release;
use xtask::tasks::{CloudTask, LightTask, PublishArgs, Runner, Task};

use xtask::tasks::CiArgs as Args;

/// What one stage of the pipeline does.
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

/// The pipeline, in order.
pub fn pipeline(version_file: PathBuf) -> Vec<Stage> {
    let stage = |name, action, always| Stage { name, action, always };
    vec![
        stage("login", Action::Run(Task::Cloud(CloudTask::Login)), false),
        stage("test", Action::Run(Task::Light(LightTask::Test)), false),
        // `test` built the images; release starts them.
        stage("release", Action::Run(Task::Light(LightTask::Release(release::Args { no_build: true }))), false),
        stage("publish", Action::Run(Task::Cloud(CloudTask::Publish(PublishArgs::default()))), false),
        stage("version", Action::WriteVersion(version_file), false),
        stage("clean", Action::Run(Task::Light(LightTask::Clean)), true),
        stage("logout", Action::Run(Task::Cloud(CloudTask::Logout)), true),
    ]
}

pub fn run(runner: &mut Runner, args: &Args) -> Result<()> {
    let root = runner.ctx().settings.root.clone();
    let version_file = args.version_file.clone().unwrap_or_else(|| root.join("version.json"));
    let received = watch_signals()?;
    let interrupted = || received.get().map(|signal| signal.name());
    let mut first_error: Option<anyhow::Error> = None;
    for stage in pipeline(version_file) {
        if let Some(reason) = skip_reason(&stage, first_error.is_some(), interrupted()) {
            say(&format!("==> ci: {} skipped: {reason}", stage.name));
            continue;
        }
        say(&format!("==> ci: {}{}", stage.name, if stage.always { " (always)" } else { "" }));
        let result = match stage.action {
            Action::Run(task) => runner.run(task),
            Action::WriteVersion(path) => write_version(runner, &path),
        };
        let result = match (result, interrupted()) {
            (Err(err), Some(signal)) if !stage.always => {
                Err(interrupted_by(&received).wrap(err.context(format!("{} interrupted by {signal}", stage.name))))
            }
            (result, _) => result,
        };
        match (result, &first_error) {
            (Ok(()), _) => {}
            (Err(err), None) => {
                say(&format!("==> ci: {} FAILED: {err:#}", stage.name));
                first_error = Some(err);
            }
            (Err(err), Some(_)) => say(&format!("==> ci: {} also failed: {err:#}", stage.name)),
        }
    }
    if let (None, Some(signal)) = (&first_error, interrupted()) {
        first_error = Some(interrupted_by(&received).error(format!("interrupted by {signal}")));
    }
    match first_error {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// Why a stage does not run: only stages that always run go on after a
/// failure or a signal, and a signal is named over a failure.
fn skip_reason(stage: &Stage, failed_before: bool, interrupted: Option<&str>) -> Option<String> {
    match (stage.always, interrupted, failed_before) {
        (true, _, _) => None,
        (false, Some(signal), _) => Some(format!("interrupted by {signal}")),
        (false, None, true) => Some("an earlier stage failed".to_owned()),
        (false, None, false) => None,
    }
}

/// `{"Version": "<APP_VERSION>"}`, as `cargo xtask version` prints it.
fn write_version(runner: &Runner, path: &std::path::Path) -> Result<()> {
    let ctx = runner.ctx();
    let json = xtask::version::json(ctx.version());
    ctx.write_file(path, &format!("{json}\n")).context("cannot write the version file")?;
    ctx.report(&format!("wrote {json} to {}", path.display()));
    Ok(())
}

/// The exit kind of the signal received (130 for SIGINT, 143 for SIGTERM).
fn interrupted_by(received: &OnceLock<Signal>) -> Exit {
    Exit::Interrupted(received.get().copied().unwrap_or(Signal::Term))
}

/// Catch SIGINT and SIGTERM from now on: the first is kept in the returned
/// cell, the second exits at once.
fn watch_signals() -> Result<Arc<OnceLock<Signal>>> {
    let received = Arc::new(OnceLock::new());
    let first = received.clone();
    crate::signals::on(&[Signal::Int, Signal::Term], move |signal| {
        if first.set(signal).is_err() {
            say(&format!("==> ci: {} again: exiting without cleaning up", signal.name()));
            std::process::exit(130);
        }
        say(&format!(
            "==> ci: {}: finishing the current stage, then clean and logout (send it again to exit now)",
            signal.name()
        ));
    })
    .context("cannot catch SIGINT and SIGTERM")?;
    Ok(received)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(always: bool) -> Stage {
        Stage { name: "x", action: Action::WriteVersion("v.json".into()), always }
    }

    #[test]
    fn a_stage_runs_unless_a_failure_or_a_signal_came_before() {
        assert_eq!(skip_reason(&stage(false), false, None), None);
        assert_eq!(skip_reason(&stage(false), true, None).as_deref(), Some("an earlier stage failed"));
        assert_eq!(skip_reason(&stage(false), false, Some("SIGTERM")).as_deref(), Some("interrupted by SIGTERM"));
        assert_eq!(skip_reason(&stage(false), true, Some("SIGINT")).as_deref(), Some("interrupted by SIGINT"));
    }

    #[test]
    fn cleanup_stages_run_after_failures_and_signals() {
        for (failed, signal) in [(false, None), (true, None), (false, Some("SIGINT")), (true, Some("SIGTERM"))] {
            assert_eq!(skip_reason(&stage(true), failed, signal), None);
        }
    }

    #[test]
    fn only_clean_and_logout_run_always_and_they_come_last() {
        let stages = pipeline("v.json".into());
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
