//! One-off swarm jobs: an image run once as a service of one replica that is
//! never restarted, waited for, its output read, and removed. The database
//! checks and restores (`migrations.rs`) and the verification suite
//! (`verify.rs`) run this way.
//!
//! One replica that is never restarted, not a `replicated-job`: the swarm
//! never removes a job's task and container, even with the service
//! (moby/moby#44312), so each deploy would leave a container on the node,
//! holding the data volume there.
//!
//! From just before its service is created until it is removed, a job is the
//! interrupt handler's to remove on SIGINT or SIGTERM (`interrupt.rs`).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{
    ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{ListTasksOptions, LogsOptions};
use futures_util::StreamExt;

/// The label on every job, naming its stack.
pub const JOB_LABEL: &str = "com.todobackend.job";

/// The label with the token of the deploy lock the run that made the job
/// held (`records::lock`): a job is that run's, while it runs, even if its
/// lock was taken away (`unlock --force`) and another run holds the stack's.
pub const LOCK_TOKEN_LABEL: &str = "com.todobackend.job.lock-token";
/// The label naming that run: `<host> <pid>`.
pub const RUN_LABEL: &str = "com.todobackend.job.run";
/// The label with the time (Unix seconds) after which that run no longer
/// waits for the job: its timeout, and a margin for removing it.
pub const DEADLINE_LABEL: &str = "com.todobackend.job.deadline";

/// The margin after a job's timeout for its run to remove it.
const REMOVAL_MARGIN: Duration = Duration::from_secs(60);

/// The jobs' names, `<stack>_xtask_<n>`: the swarm names their containers
/// `<name>.<slot>.<task>` and labels them with the name.
pub fn job_prefix(stack: &str) -> String {
    format!("{stack}_xtask_")
}

/// A job to run: its task (image, arguments, and whatever else it needs:
/// environment, mounts, networks, placement) and what it is for.
pub(super) struct Job<'a> {
    pub stack: &'a str,
    /// Between the stack's prefix and the unique number (`verify_`, or none).
    pub kind: &'a str,
    pub task: TaskSpec,
    /// The registry credential its image is pulled with.
    pub credentials: Option<DockerCredentials>,
    /// What it runs, as the interrupt handler names it (`migrations --json`).
    pub what: String,
    /// What it is, for the error when it cannot start (`` `todobackend
    /// migrations --json` as a swarm job on the data node ``).
    pub started_as: String,
    /// Whether it writes to the database (a restore), or only reads.
    pub writes: bool,
    pub timeout: Duration,
}

/// How a job ended.
pub(super) struct Ended {
    /// `None` when it did not end within the job's timeout.
    pub state: Option<TaskState>,
    /// The task's error or status message.
    pub message: String,
    pub stdout: String,
    pub stderr: String,
    /// The service's ID, for the commands that inspect it by hand.
    pub id: String,
}

impl Ended {
    pub fn completed(&self) -> bool {
        self.state == Some(TaskState::COMPLETE)
    }
}

/// Run `job` to its end (or its timeout), read its output, and remove it.
/// An error only when it could not be started or watched.
pub(super) async fn run(docker: &Docker, job: Job<'_>) -> Result<Ended> {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let name = format!("{}{}{}", job_prefix(job.stack), job.kind, nanos % 1_000_000_000);
    let deadline = SystemTime::now() + job.timeout + REMOVAL_MARGIN;
    let deadline = deadline.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let labels = HashMap::from([
        (JOB_LABEL.to_owned(), job.stack.to_owned()),
        (LOCK_TOKEN_LABEL.to_owned(), crate::interrupt::lock_token().unwrap_or_default()),
        (RUN_LABEL.to_owned(), format!("{} {}", crate::records::lock::this_host(), std::process::id())),
        (DEADLINE_LABEL.to_owned(), deadline.to_string()),
    ]);
    let spec = service_spec(&name, labels, job.task);
    crate::interrupt::job_starting(&name, &job.what, job.writes);
    let created = docker.create_service(spec, job.credentials).await;
    crate::interrupt::job_created();
    let created = match created {
        Ok(created) => created,
        Err(err) => {
            crate::interrupt::job_done();
            return Err(err).with_context(|| format!("cannot start {}", job.started_as));
        }
    };
    let id = created.id.unwrap_or_else(|| name.clone());
    let ended = wait(docker, &id, job.timeout).await;
    let ended = match ended {
        Ok((state, message)) => {
            let (stdout, stderr) = output(docker, &id).await;
            Ok(Ended { state, message, stdout, stderr, id: id.clone() })
        }
        Err(err) => Err(err),
    };
    let removed = docker.delete_service(&id).await;
    // (Stops here if an interrupt took the job over: it says what it did.)
    crate::interrupt::job_done();
    if let Err(err) = removed {
        xtask::output::warn(&format!(
            "could not remove the job {name}: {err} (remove it with `docker service rm {name}`)"
        ));
    }
    ended
}

/// The job's service: `task` labelled, never restarted, one replica, and
/// as hardened as the stacks' services: every job runs the app's image (as
/// its non-root user) and writes only to the volumes it mounts, so its file
/// system is read-only and it has no capability.
fn service_spec(name: &str, labels: HashMap<String, String>, mut task: TaskSpec) -> ServiceSpec {
    if let Some(container) = task.container_spec.as_mut() {
        container.labels = Some(labels.clone());
        container.read_only = Some(true);
        container.capability_drop = Some(vec!["ALL".to_owned()]);
        container.capability_add = None;
    }
    task.restart_policy =
        Some(TaskSpecRestartPolicy { condition: Some(TaskSpecRestartPolicyConditionEnum::NONE), ..Default::default() });
    ServiceSpec {
        name: Some(name.to_owned()),
        labels: Some(labels),
        task_template: Some(task),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Wait until the job's task has ended: its state and message, or no state
/// once `timeout` has passed.
async fn wait(docker: &Docker, id: &str, timeout: Duration) -> Result<(Option<TaskState>, String)> {
    let started = Instant::now();
    let filters = HashMap::from([("service".to_owned(), vec![id.to_owned()])]);
    loop {
        // An interrupt removes the job: its verdict is the interrupt's to tell.
        crate::interrupt::checkpoint();
        let tasks = docker
            .list_tasks(Some(ListTasksOptions { filters: Some(filters.clone()) }))
            .await
            .context("cannot list the job's tasks")?;
        let ended = tasks.iter().find_map(|task| {
            let status = task.status.as_ref()?;
            let state = status.state?;
            let done =
                matches!(state, TaskState::COMPLETE | TaskState::FAILED | TaskState::REJECTED | TaskState::SHUTDOWN);
            let message = status.err.clone().or(status.message.clone()).unwrap_or_default();
            done.then_some((Some(state), message))
        });
        if let Some(ended) = ended {
            return Ok(ended);
        }
        if started.elapsed() > timeout {
            return Ok((None, String::new()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Remove the stack's jobs that an interrupted run (SIGTERM, SIGKILL, a lost
/// connection) could not remove, and the stopped containers of earlier jobs
/// on this engine (Docker kept those of the `replicated-job`s that earlier
/// versions ran, moby/moby#44312). Jobs run only under the stack's deploy
/// lock, which this run holds; but a run whose lock was taken away (`unlock
/// --force`) runs on, and its job is its own until it ends: a job is removed
/// only when it carries no live run's lock token (see [`whose`]).
///
/// The jobs (services) go wherever their tasks ran: the swarm removes their
/// containers on every node. The stopped containers of those old
/// `replicated-job`s are only this engine's: on a data node that is not the
/// manager the xtask talks to, no engine API call from here reaches them
/// (`docker container prune --filter label=com.todobackend.job` there does).
pub(super) async fn remove_left(docker: &Docker, stack: &str) -> Result<()> {
    let filters = HashMap::from([("label".to_owned(), vec![format!("{JOB_LABEL}={stack}")])]);
    let left = docker
        .list_services(Some(bollard::query_parameters::ListServicesOptions {
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .with_context(|| format!("cannot list the jobs of stack {stack}"))?;
    // Tidying only: what will not go is named, and the run goes on.
    let ours = crate::interrupt::lock_token();
    for service in left {
        let Some(id) = service.id else { continue };
        let labels = service.spec.as_ref().and_then(|spec| spec.labels.clone()).unwrap_or_default();
        let name = service.spec.and_then(|spec| spec.name).unwrap_or_else(|| id.clone());
        if let Owner::LiveRun(run) = whose(&labels, ours.as_deref(), SystemTime::now()) {
            xtask::output::say(&format!(
                "    left the job {name} alone: it is another run's ({run}), whose deploy lock was taken away \
                 (`unlock --force`) while it goes on; that run removes it"
            ));
            continue;
        }
        match docker.delete_service(&id).await {
            Ok(()) => xtask::output::say(&format!("    removed the job {name}, left behind by an interrupted run")),
            Err(err) => xtask::output::warn(&format!(
                "could not remove the job {name} an interrupted run left: {err}: `docker service rm {name}`"
            )),
        }
    }
    // Only stopped ones: a job's container is removed with its service.
    let prefix = job_prefix(stack);
    let filters = HashMap::from([
        ("label".to_owned(), vec!["com.docker.swarm.service.name".to_owned()]),
        ("status".to_owned(), vec!["exited".to_owned(), "dead".to_owned()]),
    ]);
    let stopped = docker
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .with_context(|| format!("cannot list the containers of stack {stack}'s earlier jobs"))?;
    let mut removed = 0;
    for container in stopped {
        let service = container.labels.as_ref().and_then(|labels| labels.get("com.docker.swarm.service.name"));
        let (Some(id), true) = (container.id, service.is_some_and(|service| service.starts_with(&prefix))) else {
            continue;
        };
        // With its anonymous volumes (the VOLUMEs of images before the hardened
        // one), not the stack's data.
        let options = bollard::query_parameters::RemoveContainerOptions { v: true, ..Default::default() };
        match docker.remove_container(&id, Some(options)).await {
            Ok(()) => removed += 1,
            Err(err) => xtask::output::warn(&format!(
                "could not remove the stopped container {id} of an earlier job: {err}: `docker rm -v {id}`"
            )),
        }
    }
    if removed > 0 {
        xtask::output::say(&format!(
            "    removed {removed} stopped container(s) of earlier database jobs of stack {stack}"
        ));
    }
    Ok(())
}

/// Whose a job is, by its labels.
#[derive(Debug, PartialEq, Eq)]
enum Owner {
    /// Nobody's any more: its run is gone, or ended waiting for it, or it
    /// is this run's own, or it predates the labels.
    Left,
    /// A run that still runs (on this host), or may (on another host,
    /// before its deadline), with another lock token than ours: `<host>
    /// process <pid>`.
    LiveRun(String),
}

fn whose(labels: &HashMap<String, String>, ours: Option<&str>, now: SystemTime) -> Owner {
    let token = labels.get(LOCK_TOKEN_LABEL).map(String::as_str).unwrap_or_default();
    if token.is_empty() || Some(token) == ours {
        return Owner::Left;
    }
    let Some((host, pid)) = labels.get(RUN_LABEL).and_then(|run| run.rsplit_once(' ')) else {
        return Owner::Left;
    };
    let Ok(pid) = pid.parse::<u32>() else { return Owner::Left };
    let run = format!("host {host}, process {pid}");
    match crate::records::lock::liveness(host, pid) {
        crate::records::lock::Liveness::Runs => Owner::LiveRun(run),
        crate::records::lock::Liveness::Gone => Owner::Left,
        // Another host's run: waited for until its deadline.
        crate::records::lock::Liveness::Unknown => {
            let deadline = labels.get(DEADLINE_LABEL).and_then(|secs| secs.parse::<u64>().ok()).unwrap_or(0);
            let now = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(u64::MAX);
            if now < deadline { Owner::LiveRun(run) } else { Owner::Left }
        }
    }
}

/// The job's stdout and stderr, apart.
async fn output(docker: &Docker, id: &str) -> (String, String) {
    let options = LogsOptions { stdout: true, stderr: true, ..Default::default() };
    let mut logs = docker.service_logs(id, Some(options));
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let read = async {
        while let Some(Ok(item)) = logs.next().await {
            match item {
                bollard::container::LogOutput::StdOut { message } => {
                    stdout.push_str(&String::from_utf8_lossy(&message))
                }
                // Decoded as the diagnosis decodes it: no stream bytes.
                other => match super::watch::decoded(other) {
                    Ok(text) => stderr.push_str(&text),
                    Err(reason) => {
                        stderr.push_str(&format!("({reason}: `docker service logs {id}`)\n"));
                        break;
                    }
                },
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(20), read).await;
    (stdout, stderr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(token: &str, run: &str, deadline: u64) -> HashMap<String, String> {
        HashMap::from([
            (LOCK_TOKEN_LABEL.to_owned(), token.to_owned()),
            (RUN_LABEL.to_owned(), run.to_owned()),
            (DEADLINE_LABEL.to_owned(), deadline.to_string()),
        ])
    }

    #[test]
    fn a_job_is_left_alone_while_the_run_whose_token_it_carries_may_still_run() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let here = crate::records::lock::this_host();
        let live = format!("{here} {}", std::process::id());
        assert!(matches!(whose(&labels("theirs", &live, 0), Some("ours"), now), Owner::LiveRun(_)));
        // Ours, or without a token (older versions): left behind.
        assert_eq!(whose(&labels("ours", &live, 0), Some("ours"), now), Owner::Left);
        assert_eq!(whose(&HashMap::new(), Some("ours"), now), Owner::Left);
        // Its process is gone (pid_max is at most 2^22).
        assert_eq!(whose(&labels("theirs", &format!("{here} {}", 1 << 23), 0), Some("ours"), now), Owner::Left);
        // Another host's run: until its deadline.
        let elsewhere = "another-host.invalid 42";
        assert!(matches!(whose(&labels("theirs", elsewhere, 1_000_001), None, now), Owner::LiveRun(_)));
        assert_eq!(whose(&labels("theirs", elsewhere, 999_999), None, now), Owner::Left);
    }

    /// Whatever the task asked for (a stack's way to the database copies
    /// migrate's spec), the job's container is read-only with every
    /// capability dropped, its mounts kept, and it is never restarted.
    #[test]
    fn a_jobs_container_is_read_only_with_no_capability() {
        let task = TaskSpec {
            container_spec: Some(bollard::models::TaskSpecContainerSpec {
                image: Some("r/todobackend:1".to_owned()),
                read_only: Some(false),
                capability_add: Some(vec!["CAP_NET_RAW".to_owned()]),
                mounts: Some(vec![bollard::models::Mount {
                    target: Some("/data".to_owned()),
                    source: Some("s_data".to_owned()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let spec = service_spec("s_xtask_1", labels("t", "r", 1), task);
        let task = spec.task_template.unwrap();
        let container = task.container_spec.unwrap();
        assert_eq!(container.read_only, Some(true));
        assert_eq!(container.capability_drop.as_deref(), Some(&["ALL".to_owned()][..]));
        assert_eq!(container.capability_add, None);
        assert_eq!(container.mounts.unwrap()[0].target.as_deref(), Some("/data"));
        assert_eq!(container.labels.unwrap()[LOCK_TOKEN_LABEL], "t");
        assert_eq!(task.restart_policy.unwrap().condition, Some(TaskSpecRestartPolicyConditionEnum::NONE));
    }
}
