//! Watching a deployed stack until every service has converged or failed:
//! the swarm's services and tasks are polled, judged by `converge`, and a
//! progress line is printed whenever a service's state changes. While
//! nothing changes a heartbeat says how long it has waited and for what
//! (`progress::Heartbeat`: one redrawn line on a terminal, a plain line at
//! least every 10 s in a log), so a long wait never looks hung.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use bollard::Docker;
use bollard::models::TaskState as SwarmTaskState;
use bollard::query_parameters::{ListTasksOptions, LogsOptions};
use futures_util::StreamExt;

use super::converge::{self, Failure, Verdict};
use crate::image_ref::ImageRef;
use crate::stack::{Kind, Snapshot, Update};
use crate::stackfile::ServiceDef;
use xtask::output::say;

const POLL: Duration = Duration::from_secs(1);
const LOG_LINES: &str = "20";
/// Failed tasks whose own logs a failure report shows first.
const FAILED_TASKS_SHOWN: usize = 2;
/// How long the other services may still run to their end after one failed.
const SETTLE: Duration = Duration::from_secs(45);

/// One service of the stack file, with what deploy expects of it.
pub struct Expected {
    /// `<stack>_<name>`, as the swarm names it.
    pub full_name: String,
    pub name: String,
    pub image: ImageRef,
    pub digest: Option<String>,
}

impl Expected {
    pub fn new(stack: &str, def: &ServiceDef, digests: &HashMap<String, String>) -> Expected {
        Expected {
            full_name: format!("{stack}_{}", def.name),
            name: def.name.clone(),
            image: ImageRef::parse(&def.image),
            digest: digests.get(&def.image).cloned(),
        }
    }
}

/// The verdict on each expected service, given the snapshot before deploy.
pub fn judge_all(
    expected: &[Expected],
    now: &Snapshot,
    before: &HashMap<String, Option<Update>>,
    idle: &HashMap<String, Duration>,
) -> Vec<Verdict> {
    expected
        .iter()
        .map(|want| {
            let Some(service) = now.services.get(&want.full_name) else {
                return Verdict::Waiting("not created yet".into());
            };
            let target = converge::Target {
                image: &want.image,
                digest: want.digest.as_deref(),
                update_before: before.get(&want.full_name).and_then(Option::as_ref),
                idle_for: idle.get(&want.full_name).copied().unwrap_or_default(),
            };
            converge::judge(service, &target)
        })
        .collect()
}

/// How the watch ended.
pub enum Outcome {
    Converged(Vec<(String, String)>),
    /// A dry run's: nothing was deployed, so nothing was watched.
    Planned,
    /// Failed services (name, failure), or timed out (waiting services).
    Failed {
        failed: Vec<(String, Failure)>,
        waiting: Vec<(String, String)>,
        timed_out: bool,
    },
}

/// Poll until every expected service is done, one has failed, or `timeout`.
pub async fn until_converged(
    docker: &Docker,
    stack: &str,
    expected: &[Expected],
    before: &HashMap<String, Option<Update>>,
    timeout: Duration,
) -> Result<Outcome> {
    let started = Instant::now();
    let mut shown: HashMap<String, String> = HashMap::new();
    let mut not_live_since: HashMap<String, Instant> = HashMap::new();
    let mut first_failure: Option<Instant> = None;
    let mut heartbeat = crate::progress::Heartbeat::new();
    loop {
        let snapshot = Snapshot::read(docker, stack).await?;
        let mut idle = HashMap::new();
        for want in expected {
            let live = snapshot.services.get(&want.full_name).is_none_or(|service| {
                !matches!(service.kind, Kind::OneShot { .. })
                    || converge::has_live_task(
                        service,
                        &converge::Target {
                            image: &want.image,
                            digest: want.digest.as_deref(),
                            update_before: None,
                            idle_for: Duration::ZERO,
                        },
                    )
            });
            if live {
                not_live_since.remove(&want.full_name);
            } else {
                let since = *not_live_since.entry(want.full_name.clone()).or_insert_with(Instant::now);
                idle.insert(want.full_name.clone(), since.elapsed());
            }
        }
        let verdicts = judge_all(expected, &snapshot, before, &idle);
        for (want, verdict) in expected.iter().zip(&verdicts) {
            let line = describe(verdict);
            if shown.get(&want.name) != Some(&line) {
                heartbeat.line(&format!("    {}: {line}", want.name));
                shown.insert(want.name.clone(), line);
            }
        }
        let mut done = Vec::new();
        let mut failed = Vec::new();
        let mut waiting = Vec::new();
        for (want, verdict) in expected.iter().zip(verdicts) {
            match verdict {
                Verdict::Done(text) => done.push((want.name.clone(), text)),
                Verdict::Failed(failure) => failed.push((want.name.clone(), failure)),
                Verdict::Waiting(text) => waiting.push((want.name.clone(), text)),
            }
        }
        if waiting.is_empty() {
            if failed.is_empty() {
                return Ok(Outcome::Converged(done));
            }
            return Ok(Outcome::Failed { failed, waiting, timed_out: false });
        }
        // After a failure, the others get a little longer to reach their own
        // end, so that one run reports every failing service.
        if !failed.is_empty() {
            let since = *first_failure.get_or_insert_with(Instant::now);
            if since.elapsed() >= SETTLE {
                return Ok(Outcome::Failed { failed, waiting, timed_out: false });
            }
        }
        if started.elapsed() >= timeout {
            let timed_out = failed.is_empty();
            return Ok(Outcome::Failed { failed, waiting, timed_out });
        }
        heartbeat.beat(&crate::progress::heartbeat_text(started.elapsed(), timeout, &waiting));
        tokio::time::sleep(POLL).await;
    }
}

pub fn describe(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Waiting(text) => text.clone(),
        Verdict::Done(text) => format!("{text} (converged)"),
        Verdict::Failed(failure) => describe_failure(failure),
    }
}

pub fn describe_failure(failure: &Failure) -> String {
    let tag = |image: &str| ImageRef::parse(image).version();
    match failure {
        Failure::RolledBack { message, image } => {
            format!("update failed and the swarm rolled it back to version {} ({message})", tag(image))
        }
        Failure::Paused { message, rolling_back: true } => {
            format!("update failed and its rollback paused: the swarm did NOT finish rolling back ({message})")
        }
        Failure::Paused { message, rolling_back: false } => {
            format!("update paused, the swarm did not roll back ({message})")
        }
        Failure::Exhausted { attempts } => {
            format!("failed {attempts} time(s) and will not be retried (no rollback for one-shot services)")
        }
    }
}

/// Print a failing service's recent task errors and the last lines of its logs.
pub async fn report(docker: &Docker, stack: &str, name: &str) {
    let full_name = format!("{stack}_{name}");
    let filters = HashMap::from([("service".to_owned(), vec![full_name.clone()])]);
    let tasks = docker.list_tasks(Some(ListTasksOptions { filters: Some(filters) })).await;
    say(&format!("--- {name}: recent tasks"));
    let mut failed_tasks: Vec<(String, String)> = Vec::new();
    match tasks {
        Ok(mut tasks) => {
            tasks.sort_by(|a, b| b.created_at.cmp(&a.created_at));
            // The failed tasks' own logs come first: the healthy tasks'
            // lines must not bury a crashing release's one error line.
            failed_tasks = tasks
                .iter()
                .filter(|task| task.status.as_ref().and_then(|status| status.state) == Some(SwarmTaskState::FAILED))
                .filter_map(|task| {
                    let image = task.spec.as_ref()?.container_spec.as_ref()?.image.as_deref()?;
                    Some((task.id.clone()?, ImageRef::parse(image).tag.unwrap_or_default()))
                })
                .take(FAILED_TASKS_SHOWN)
                .collect();
            for task in tasks.iter().take(6) {
                let status = task.status.as_ref();
                let state = status.and_then(|status| status.state).map(|state| state.to_string()).unwrap_or_default();
                let image = task
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.container_spec.as_ref())
                    .and_then(|container| container.image.as_deref())
                    .map(|image| ImageRef::parse(image).tag.unwrap_or_default())
                    .unwrap_or_default();
                let message = status.and_then(|status| status.message.clone()).unwrap_or_default();
                let err =
                    status.and_then(|status| status.err.clone()).map(|err| format!(": {err}")).unwrap_or_default();
                let failed = status.and_then(|status| status.state) == Some(SwarmTaskState::FAILED);
                let exit = status
                    .filter(|_| failed)
                    .and_then(|status| status.container_status.as_ref())
                    .and_then(|container| container.exit_code)
                    .filter(|code| *code != 0)
                    .map(|code| format!(" (exit code {code})"))
                    .unwrap_or_default();
                say(&format!("    {:<9} version {image}: {message}{err}{exit}", state));
            }
        }
        Err(err) => say(&format!("    cannot list its tasks: {err}")),
    }
    let options = LogsOptions { stdout: true, stderr: true, tail: LOG_LINES.into(), ..Default::default() };
    for (id, version) in &failed_tasks {
        say(&format!("--- {name}: log of failed task {} (version {version})", &id[..id.len().min(12)]));
        print_logs(docker.task_logs(id, Some(options.clone())), &format!("docker service logs {full_name}")).await;
    }
    say(&format!("--- {name}: last log lines"));
    print_logs(docker.service_logs(&full_name, Some(options)), &format!("docker service logs {full_name}")).await;
}

/// Print a log stream, indented, within 15 s. Only what the engine framed
/// as the task's stdout or stderr is shown; where the stream stops making
/// sense, a note says so and where to read the rest.
async fn print_logs(
    mut logs: impl futures_util::Stream<Item = Result<bollard::container::LogOutput, bollard::errors::Error>> + Unpin,
    by_hand: &str,
) {
    let read = async {
        let mut lines = 0;
        while let Some(item) = logs.next().await {
            let text = match item {
                Ok(output) => decoded(output),
                Err(err) => Err(format!("cannot read its logs: {err}")),
            };
            match text {
                Ok(text) => {
                    for line in text.lines() {
                        say(&format!("    {line}"));
                        lines += 1;
                    }
                }
                Err(reason) => {
                    say(&format!("    ({reason}: the rest is left out; read it with `{by_hand}`)"));
                    return lines.max(1);
                }
            }
        }
        lines
    };
    match tokio::time::timeout(Duration::from_secs(15), read).await {
        Ok(0) => say("    (no log lines)"),
        Ok(_) => {}
        Err(_) => say(&format!("    (the logs did not arrive within 15s: `{by_hand}`)")),
    }
}

/// The text of one item of the engine's multiplexed log stream, or why the
/// stream cannot be shown from there on. The engine writes its own errors
/// (Docker 20.10: `Error grabbing logs: ...`) into the stream without a
/// frame, and bollard then hands the bytes over as `Console`, or, when they
/// break the framing, reads later frames from the wrong offsets: text with
/// control bytes is that.
pub fn decoded(output: bollard::container::LogOutput) -> Result<String, String> {
    use bollard::container::LogOutput;
    let garbled = |text: &str| text.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'));
    match output {
        LogOutput::StdOut { message } | LogOutput::StdErr { message } => {
            let text = String::from_utf8_lossy(&message).into_owned();
            if garbled(&text) || text.contains('\u{fffd}') {
                return Err("the log stream holds bytes that are not text".to_owned());
            }
            Ok(text)
        }
        LogOutput::StdIn { .. } => Ok(String::new()),
        LogOutput::Console { message } => {
            let text = String::from_utf8_lossy(&message);
            if text.contains("Error grabbing logs") {
                Err("the engine could not read the rest of these logs".to_owned())
            } else {
                Err("the log stream lost its framing".to_owned())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::container::LogOutput;

    #[test]
    fn only_framed_text_is_shown_and_the_engines_own_errors_become_a_note() {
        let line = LogOutput::StdErr { message: b"error: cannot bind not-an-address\n".to_vec().into() };
        assert_eq!(decoded(line).unwrap(), "error: cannot bind not-an-address\n");
        let grabbing = LogOutput::Console { message: b"Error grabbing logs: unexpected EOF\n".to_vec().into() };
        let note = decoded(grabbing).unwrap_err();
        assert!(!note.contains("Error grabbing"), "{note}");
        // A frame read from the wrong offset: a header's bytes inside the text.
        let raw = LogOutput::StdOut { message: b"ok\n\x01\x00\x00\x00\x00\x00\x00\x1fmore".to_vec().into() };
        assert!(decoded(raw).is_err());
        assert!(decoded(LogOutput::Console { message: b"\x02\x00garbage".to_vec().into() }).is_err());
    }
}
