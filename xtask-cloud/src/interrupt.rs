//! What SIGINT and SIGTERM undo while a task holds the deploy lock (deploy,
//! rollback, refresh-auth). One handler, installed when the lock is taken,
//! knows what the task has on the swarm at that moment, and deals with it
//! before the process ends (130 for SIGINT, 143 for SIGTERM):
//!
//! - a database job under way (`<stack>_xtask_N`): its service and its
//!   container are removed (`docker stack rm` would not remove them, and the
//!   data volume would stay "in use");
//! - a release that had started to change the stack: the history records it
//!   as `interrupted`, with the services' specs as its last `docker stack
//!   deploy` left them;
//! - the deploy lock: released, if it is still this run's;
//! - the jobs-only stack file written beside the stack file: removed.
//!
//! Its last line says what it did, and whether the stack was changed.
//!
//! The task's own commands get the same signal from the terminal or the CI
//! runner, while its thread goes on wherever it was. So each piece of state
//! is handed over by taking it: the task when it is done with it, or the
//! handler, deals with it, never both; and once the handler has started, the
//! task's thread stops at the next hand-over instead of racing it to exit.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use xtask::docker_endpoint::Endpoint;
use xtask::exit::{Exit, Signal};

use crate::records::history::Entry;
use crate::records::lock::Taken;

/// A database job, from just before its service is created until it is removed.
struct Job {
    name: String,
    /// What it runs: `todobackend migrations --json`.
    what: String,
    /// Whether it writes to the database (a restore), or only reads.
    writes: bool,
    /// Its service is being created: the handler waits for the call to end,
    /// else a service created after its removal would stay.
    creating: bool,
}

struct State {
    stack: String,
    endpoint: Option<Endpoint>,
    lock: Option<Taken>,
    /// The task is releasing the lock: the handler lets it finish.
    releasing: bool,
    job: Option<Job>,
    /// The history entry for an interruption, from the moment the stack
    /// starts changing until the release's own outcome is recorded.
    pending: Option<Entry>,
    stack_changed: bool,
    /// A file the task wrote into the user's checkout for a moment.
    scratch: Option<PathBuf>,
    interrupted: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    stack: String::new(),
    endpoint: None,
    lock: None,
    releasing: false,
    job: None,
    pending: None,
    stack_changed: false,
    scratch: None,
    interrupted: false,
});

/// How long the handler waits for a call under way (the engine API's bound).
const CALL_UNDER_WAY: Duration = Duration::from_secs(130);
/// How long it waits for a removed job's container to go.
const CONTAINER_GONE: Duration = Duration::from_secs(30);

/// The state; the task's thread stops here for good once the handler runs.
fn state() -> MutexGuard<'static, State> {
    let state = STATE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if state.interrupted && !on_handler_thread() {
        drop(state);
        // The handler ends the process when it is done.
        loop {
            std::thread::park();
        }
    }
    state
}

thread_local! {
    static HANDLER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn on_handler_thread() -> bool {
    HANDLER.with(|handler| handler.get())
}

/// Nothing to hand over: the task's thread only stops here once an
/// interrupt is being dealt with.
pub fn checkpoint() {
    drop(state());
}

/// The lock `taken` on `stack` is held from now on: catch SIGINT and SIGTERM.
pub fn holding(endpoint: Endpoint, stack: &str, taken: Taken) {
    {
        let mut state = state();
        state.stack = stack.to_owned();
        state.endpoint = Some(endpoint);
        state.lock = Some(taken);
        state.releasing = false;
    }
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(install);
}

/// The lock, for the task to release itself: `None` if there is none.
pub fn take_lock() -> Option<Taken> {
    let mut state = state();
    state.releasing = true;
    state.lock.take()
}

/// The token of the lock this run holds (or held until it was taken
/// away), which its swarm jobs carry; `None` when it holds none.
pub fn lock_token() -> Option<String> {
    state().lock.as_ref().map(|taken| taken.token.clone())
}

/// The task has released the lock (or failed to).
pub fn lock_released() {
    state().releasing = false;
}

/// A database job `what` is about to be created as service `name`.
pub fn job_starting(name: &str, what: &str, writes: bool) {
    state().job = Some(Job { name: name.to_owned(), what: what.to_owned(), writes, creating: true });
}

/// Its service exists now (or its creation failed).
pub fn job_created() {
    if let Some(job) = state().job.as_mut() {
        job.creating = false;
    }
}

/// The job is over, its service removed by the task: nothing to undo.
pub fn job_done() {
    state().job = None;
}

/// The task is about to write `path` and remove it again (`None`: it has
/// removed it): an interrupt in between removes it.
pub fn scratch_file(path: Option<PathBuf>) {
    state().scratch = path;
}

/// The stack starts changing: an interruption from now on is recorded as
/// `entry` (with its outcome `interrupted`), when there is one.
pub fn stack_changing(entry: Option<Entry>) {
    let mut state = state();
    state.stack_changed = true;
    state.pending = entry.map(|entry| Entry { outcome: crate::records::history::Outcome::Interrupted, ..entry });
}

/// A `docker stack deploy` of the release has changed the stack: an
/// interruption from now on records the services' specs as it left them
/// (`specs`, read just after), so that the history holds what it did, and
/// `status` does not call its changes (a service `--prune` removed) drift.
pub fn stack_deployed(specs: std::collections::BTreeMap<String, crate::service_spec::drift::SpecRecord>) {
    if let Some(entry) = state().pending.as_mut() {
        entry.specs = specs;
    }
}

/// The release is over: the task records its own outcome, unless the
/// handler has taken the entry (then the task stops here).
pub fn release_over() {
    state().pending = None;
}

fn install() {
    let cannot = |reason: String| {
        xtask::output::warn(&format!(
            "cannot watch for Ctrl-C ({reason}): an interrupted run leaves the lock; `cargo xtask unlock` removes it"
        ))
    };
    // Made now: once a signal came, there is no way left to say it failed.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => return cannot(err.to_string()),
    };
    let caught = crate::signals::on(&[Signal::Int, Signal::Term], move |signal| {
        HANDLER.with(|handler| handler.set(true));
        let said = runtime.block_on(undo());
        xtask::output::say(&format!("interrupted by {}: {said}", signal.name()));
        std::process::exit(Exit::Interrupted(signal).code().into());
    });
    if let Err(err) = caught {
        cannot(err.to_string());
    }
}

/// Take everything over from the task, undo or record it; what was done.
async fn undo() -> String {
    let started = Instant::now();
    // A job being created, or the lock being released, is let finish first.
    let (stack, endpoint, lock, job, pending, stack_changed, scratch) = loop {
        let taken = {
            let mut state = state();
            let busy = state.releasing || state.job.as_ref().is_some_and(|job| job.creating);
            (!busy || started.elapsed() > CALL_UNDER_WAY).then(|| {
                state.interrupted = true;
                (
                    state.stack.clone(),
                    state.endpoint.clone(),
                    state.lock.take(),
                    state.job.take(),
                    state.pending.take(),
                    state.stack_changed,
                    state.scratch.take(),
                )
            })
        };
        match taken {
            Some(taken) => break taken,
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    if let Some(path) = scratch {
        // Ours alone (named after this process), and gone is all we want.
        let _ = std::fs::remove_file(path);
    }
    let docker = match endpoint {
        Some(endpoint) => crate::docker::connect(&endpoint).await.map_err(|err| format!("{err:#}")),
        None => Err("no engine".to_owned()),
    };
    let mut said = Vec::new();
    // The job first: jobs run only under the lock.
    if let Some(job) = &job {
        let removed = match &docker {
            Ok(docker) => remove_job(docker, &job.name).await,
            Err(err) => Err(err.clone()),
        };
        let note =
            if job.writes { " (it writes to the database: it may have finished before it was removed)" } else { "" };
        said.push(match removed {
            Ok(None) => {
                format!("removed the database job {} (`todobackend {}`) and its container{note}", job.name, job.what)
            }
            Ok(Some(node)) => format!(
                "removed the database job {} (`todobackend {}`) once its container on node {node} had stopped \
                 (the swarm removes it there){note}",
                job.name, job.what
            ),
            Err(err) => format!(
                "could not remove the database job {} ({err}): `docker service rm {}`{note}",
                job.name, job.name
            ),
        });
    }
    if let Some(entry) = &pending {
        let recorded = match &docker {
            Ok(docker) => {
                crate::records::history::write_and_prune(docker, &stack, entry).await.map_err(|err| format!("{err:#}"))
            }
            Err(err) => Err(err.clone()),
        };
        said.push(match recorded {
            Ok(()) => format!("recorded the {} of {} as interrupted in the history", entry.kind, entry.version),
            Err(err) => format!("could not record the {} in the history ({err})", entry.kind),
        });
    }
    // Said first, done last: the lock serialises what came before.
    if let Some(taken) = &lock {
        let released = match &docker {
            Ok(docker) => crate::records::lock::release(docker, &stack, taken).await.map_err(|err| format!("{err:#}")),
            Err(err) => Err(err.clone()),
        };
        said.insert(
            0,
            match released {
                Ok(released) => released.said(),
                Err(err) => format!("could not release the deploy lock ({err}): `cargo xtask unlock`"),
            },
        );
    }
    said.push(if stack_changed {
        "the stack may be part way through its update: see `cargo xtask status`".to_owned()
    } else {
        format!("stack {stack} was not changed")
    });
    said.join("; ")
}

/// Remove the job's service, then its container, and wait until the
/// container is gone: the swarm removes it too, but later, and a container
/// being started when the service goes can appear after a first look.
///
/// A job the swarm placed on another node (the data node need not be the
/// manager the xtask talks to) has a container this engine cannot see or
/// remove: it is scaled to zero first, and its task's state, which the
/// manager knows, tells when that container has stopped; then the service
/// goes, and the swarm removes the container there. Ok names that node.
async fn remove_job(docker: &bollard::Docker, name: &str) -> Result<Option<String>, String> {
    use std::collections::HashMap;
    if let Some(node) = placed_elsewhere(docker, name).await {
        stop_tasks(docker, name).await.map_err(|err| format!("{err} (its task runs on node {node})"))?;
        return match docker.delete_service(name).await {
            Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(Some(node)),
            Err(err) => Err(err.to_string()),
        };
    }
    match docker.delete_service(name).await {
        Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
        Err(err) => return Err(err.to_string()),
    }
    let filters = HashMap::from([("label".to_owned(), vec![format!("com.docker.swarm.service.name={name}")])]);
    let started = Instant::now();
    loop {
        let options = bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(filters.clone()),
            ..Default::default()
        };
        let containers = docker.list_containers(Some(options)).await.map_err(|err| err.to_string())?;
        if containers.is_empty() {
            return Ok(None);
        }
        if started.elapsed() > CONTAINER_GONE {
            let ids: Vec<String> = containers.into_iter().filter_map(|container| container.id).collect();
            return Err(format!("its container stays: `docker rm -fv {}`", ids.join(" ")));
        }
        for id in containers.into_iter().filter_map(|container| container.id) {
            // With its anonymous volumes (the VOLUMEs of images before the
            // hardened one), not the stack's data.
            let options =
                bollard::query_parameters::RemoveContainerOptions { force: true, v: true, ..Default::default() };
            let _ = docker.remove_container(&id, Some(options)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The name of the node the job's task was placed on, when it is not this
/// engine's node.
async fn placed_elsewhere(docker: &bollard::Docker, name: &str) -> Option<String> {
    let here = docker.info().await.ok()?.swarm?.node_id?;
    let filters = std::collections::HashMap::from([("service".to_owned(), vec![name.to_owned()])]);
    let tasks =
        docker.list_tasks(Some(bollard::query_parameters::ListTasksOptions { filters: Some(filters) })).await.ok()?;
    let node = tasks.into_iter().filter_map(|task| task.node_id).find(|node| *node != here)?;
    let hostname = docker.inspect_node(&node).await.ok().and_then(|found| found.description?.hostname);
    Some(hostname.unwrap_or(node))
}

/// Scale the job's service to zero and wait until none of its tasks is on
/// its way or running: its container has stopped, wherever it runs.
async fn stop_tasks(docker: &bollard::Docker, name: &str) -> Result<(), String> {
    use bollard::models::{ServiceSpecMode, ServiceSpecModeReplicated, TaskState};
    let service = docker.inspect_service(name, None).await.map_err(|err| err.to_string())?;
    let version = service.version.and_then(|version| version.index).unwrap_or_default() as i32;
    let mut spec = service.spec.unwrap_or_default();
    spec.mode = Some(ServiceSpecMode {
        replicated: Some(ServiceSpecModeReplicated { replicas: Some(0) }),
        ..Default::default()
    });
    let options = bollard::query_parameters::UpdateServiceOptions { version, ..Default::default() };
    docker.update_service(name, spec, options, None).await.map_err(|err| err.to_string())?;
    let filters = std::collections::HashMap::from([("service".to_owned(), vec![name.to_owned()])]);
    let started = Instant::now();
    loop {
        let options = bollard::query_parameters::ListTasksOptions { filters: Some(filters.clone()) };
        let tasks = docker.list_tasks(Some(options)).await.map_err(|err| err.to_string())?;
        let live = tasks.iter().any(|task| {
            let state = task.status.as_ref().and_then(|status| status.state);
            !matches!(
                state,
                Some(
                    TaskState::COMPLETE
                        | TaskState::SHUTDOWN
                        | TaskState::FAILED
                        | TaskState::REJECTED
                        | TaskState::REMOVE
                        | TaskState::ORPHANED
                )
            )
        });
        if !live {
            return Ok(());
        }
        if started.elapsed() > CONTAINER_GONE {
            return Err(format!(
                "its task did not stop within {}s: `docker service rm {name}`",
                CONTAINER_GONE.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
