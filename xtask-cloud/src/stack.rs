//! The stack as the swarm runs it: its services and their tasks, their
//! versions, which services run to completion, whether the stack exists at
//! all, and which version its app runs. Deploy's watch, status, logs,
//! rollback and refresh-auth all read the stack here, so they agree on what
//! a job is and what a version is; none of them reads another's insides.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};
use bollard::Docker;
use bollard::models::TaskState as SwarmTaskState;
use bollard::models::{Service as SwarmService, ServiceSpec, TaskSpecRestartPolicyConditionEnum};
use bollard::query_parameters::{ListServicesOptions, ListTasksOptions};

use crate::image_ref::ImageRef;

/// The filter for what `docker stack deploy` made for `stack`: it labels
/// every service and task with the stack's name.
pub fn label_filter(stack: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![format!("com.docker.stack.namespace={stack}")])])
}

/// The services of `stack` (none before its first deploy).
pub async fn services(docker: &Docker, stack: &str) -> Result<Vec<SwarmService>> {
    docker
        .list_services(Some(ListServicesOptions { filters: Some(label_filter(stack)), ..Default::default() }))
        .await
        .with_context(|| format!("cannot list the services of stack {stack}"))
}

/// Whether the stack exists: before its first deploy there is no data volume,
/// and a job must not create one without the stack's labels.
pub async fn exists(docker: &Docker, stack: &str) -> Result<bool> {
    Ok(!services(docker, stack).await?.is_empty())
}

/// A service that runs to completion: a swarm job, or one restarted only on
/// failure or never, as the stack file's `migrate` and `collectstatic` are.
pub fn is_one_shot(spec: &ServiceSpec) -> bool {
    let job = spec.mode.as_ref().is_some_and(|mode| mode.replicated_job.is_some() || mode.global_job.is_some());
    let condition = spec
        .task_template
        .as_ref()
        .and_then(|template| template.restart_policy.as_ref())
        .and_then(|policy| policy.condition);
    job || matches!(
        condition,
        Some(TaskSpecRestartPolicyConditionEnum::ON_FAILURE | TaskSpecRestartPolicyConditionEnum::NONE)
    )
}

/// A service that keeps running: replicated (the stack's `app`, its `db`)
/// or global (the `edge`, one task on every node).
pub fn is_long_running(spec: &ServiceSpec) -> bool {
    spec.mode.as_ref().is_some_and(|mode| mode.replicated.is_some() || mode.global.is_some()) && !is_one_shot(spec)
}

fn is_replicated(spec: &ServiceSpec) -> bool {
    spec.mode.as_ref().is_some_and(|mode| mode.replicated.is_some())
}

/// The image of a service's spec (`name:tag@digest`), if it names one.
fn spec_image(spec: &ServiceSpec) -> Option<&str> {
    spec.task_template.as_ref().and_then(|template| template.container_spec.as_ref()?.image.as_deref())
}

/// Whether the service runs `release_image` (`<registry>/<repository>`,
/// any tag or digest): the app and its jobs, not a database beside them.
pub fn runs_release(spec: &ServiceSpec, release_image: &str) -> bool {
    spec_image(spec).is_some_and(|image| ImageRef::parse(image).name == release_image)
}

/// The stack's app: the long-running replicated service that runs the
/// release image (of a stack whose services run no such image, its first
/// long-running replicated one; never the global edge). The `db` of the PostgreSQL stack is long-running too, and is not it.
pub fn app<'a>(services: &'a [SwarmService], release_image: &str) -> Option<&'a ServiceSpec> {
    let long_running = || {
        services
            .iter()
            .filter_map(|service| service.spec.as_ref())
            .filter(|spec| is_long_running(spec) && is_replicated(spec))
    };
    long_running().find(|spec| runs_release(spec, release_image)).or_else(|| long_running().next())
}

/// The app as the swarm's spec has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningApp {
    /// Its image's tag (see [`ImageRef::version`]).
    pub version: String,
    /// Its image, `name:tag@digest`.
    pub image: String,
}

/// The stack's app (see [`app`]), as the swarm runs it now; `None` when the
/// stack runs no long-running service.
pub async fn running_app(docker: &Docker, stack: &str, release_image: &str) -> Result<Option<RunningApp>> {
    let services = services(docker, stack).await?;
    let image = app(&services, release_image).and_then(spec_image).map(str::to_owned);
    Ok(image.map(|image| RunningApp { version: ImageRef::parse(&image).version(), image }))
}

/// A task's state, as the swarm reports it (its names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// new, allocated, pending, assigned, accepted, preparing, ready, starting.
    Starting,
    Running,
    Complete,
    /// failed, rejected, orphaned: the task did not do its work.
    Failed,
    /// shutdown, remove: stopped by the orchestrator (replaced, scaled down).
    Shutdown,
}

impl TaskState {
    pub fn from_name(name: &str) -> TaskState {
        match name {
            "running" => TaskState::Running,
            "complete" => TaskState::Complete,
            "failed" | "rejected" | "orphaned" => TaskState::Failed,
            "shutdown" | "remove" => TaskState::Shutdown,
            _ => TaskState::Starting,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// The swarm's ID of the task (its logs are read by it).
    pub id: String,
    pub image: String,
    pub state: TaskState,
    /// Whether the orchestrator wants it running (desired state running/ready).
    pub desired_running: bool,
    /// The node it runs (or ran) on, once the swarm placed it.
    pub node: Option<String>,
    /// When the swarm created it (RFC 3339: sorts as text).
    pub created_at: String,
}

impl Task {
    /// A task of `image` in `state`, not placed yet (for the pure rules' tests).
    #[cfg(test)]
    pub fn new(image: &str, state: TaskState, desired_running: bool) -> Task {
        Task {
            id: String::new(),
            image: image.to_owned(),
            state,
            desired_running,
            node: None,
            created_at: String::new(),
        }
    }
}

/// A service's rolling update, from its UpdateStatus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// updating, paused, completed, rollback_started, rollback_paused, rollback_completed.
    pub state: String,
    pub started_at: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Runs `replicas` tasks for good (restart condition `any`).
    Replicated { replicas: u64 },
    /// Runs one task for good on every node its placement allows (`mode:
    /// global`, the edge): how many is the swarm's to say, by the tasks it
    /// wants running.
    Global,
    /// Runs once to completion (restart condition `on-failure`/`none`, or a job).
    OneShot { restart_delay: Duration },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub kind: Kind,
    /// The image of the service's current spec (`name:tag@digest`).
    pub spec_image: String,
    pub update: Option<Update>,
    /// When its spec last changed (RFC 3339), as the swarm says.
    pub updated_at: Option<String>,
    pub tasks: Vec<Task>,
}

/// The stack's services and their tasks, as read at one moment.
pub struct Snapshot {
    /// `<stack>_`: what the swarm puts before the stack file's names.
    prefix: String,
    /// By full name (`<stack>_<name>`).
    pub services: HashMap<String, Service>,
}

impl Snapshot {
    pub async fn read(docker: &Docker, stack: &str) -> Result<Snapshot> {
        let listed = services(docker, stack).await?;
        let ids: Vec<String> = listed.iter().filter_map(|service| service.id.clone()).collect();
        // No filter would list every task of the swarm.
        let tasks = if ids.is_empty() {
            Vec::new()
        } else {
            let filters = HashMap::from([("service".to_owned(), ids)]);
            docker
                .list_tasks(Some(ListTasksOptions { filters: Some(filters) }))
                .await
                .with_context(|| format!("cannot list the tasks of stack {stack}"))?
        };
        let mut services = HashMap::new();
        for service in listed {
            let (Some(id), Some(spec)) = (service.id.clone(), service.spec.as_ref()) else { continue };
            let Some(name) = spec.name.clone() else { continue };
            let template = spec.task_template.as_ref();
            let restart = template.and_then(|template| template.restart_policy.as_ref());
            let mode = spec.mode.as_ref();
            let kind = if is_one_shot(spec) {
                let delay = restart.and_then(|restart| restart.delay).unwrap_or(5_000_000_000).max(0) as u64;
                Kind::OneShot { restart_delay: Duration::from_nanos(delay) }
            } else if mode.is_some_and(|mode| mode.global.is_some()) {
                Kind::Global
            } else {
                let replicas = mode
                    .and_then(|mode| mode.replicated.as_ref())
                    .and_then(|replicated| replicated.replicas)
                    .unwrap_or(1)
                    .max(0) as u64;
                Kind::Replicated { replicas }
            };
            let update = service.update_status.as_ref().and_then(|status| {
                Some(Update {
                    state: status.state?.to_string(),
                    started_at: status.started_at.clone().unwrap_or_default(),
                    message: status.message.clone().unwrap_or_default(),
                })
            });
            let service_tasks = tasks
                .iter()
                .filter(|task| task.service_id.as_deref() == Some(id.as_str()))
                .map(|task| {
                    let image = task
                        .spec
                        .as_ref()
                        .and_then(|spec| spec.container_spec.as_ref())
                        .and_then(|container| container.image.clone())
                        .unwrap_or_default();
                    let state = task.status.as_ref().and_then(|status| status.state).map(|state| state.to_string());
                    let desired_running = matches!(
                        task.desired_state,
                        Some(SwarmTaskState::RUNNING | SwarmTaskState::READY | SwarmTaskState::COMPLETE)
                    );
                    Task {
                        id: task.id.clone().unwrap_or_default(),
                        image,
                        state: TaskState::from_name(state.as_deref().unwrap_or("new")),
                        desired_running,
                        node: task.node_id.clone(),
                        created_at: task.created_at.clone().unwrap_or_default(),
                    }
                })
                .collect();
            let spec_image = spec_image(spec).unwrap_or_default().to_owned();
            let updated_at = service.updated_at.clone();
            services.insert(name, Service { kind, spec_image, update, updated_at, tasks: service_tasks });
        }
        Ok(Snapshot::of(stack, services))
    }

    /// The snapshot of `stack` whose services (by full name) are `services`.
    pub fn of(stack: &str, services: HashMap<String, Service>) -> Snapshot {
        Snapshot { prefix: format!("{stack}_"), services }
    }

    pub fn update_of(&self, full_name: &str) -> Option<Update> {
        self.services.get(full_name).and_then(|service| service.update.clone())
    }

    /// A service's name in the stack file, from its full name.
    pub fn short_name<'a>(&self, full_name: &'a str) -> &'a str {
        full_name.strip_prefix(&self.prefix).unwrap_or(full_name)
    }

    /// The services by their names in the stack file, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.services.keys().map(|name| self.short_name(name).to_owned()).collect();
        names.sort();
        names
    }
}

/// The engine's rule for the names of swarm objects, which the stack's
/// services, networks and configs are named after (`<stack>_app`): a letter
/// or digit, then letters, digits, `_`, `.` or `-`; and a service name is a
/// DNS label, so `<stack>_<service>` stays within 63 characters.
pub fn check_name(stack: &str) -> anyhow::Result<()> {
    let mut chars = stack.chars();
    let first_ok = chars.next().is_some_and(|first| first.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok {
        anyhow::bail!(
            "the stack name {stack:?} is not one the engine accepts: it takes a letter or digit, then letters, \
             digits, '_', '.' or '-' (set STACK_NAME or --stack to such a name)"
        );
    }
    if stack.len() > 50 {
        anyhow::bail!(
            "the stack name {stack:?} is {} characters long: its services' names (<stack>_<service>) must fit \
             in 63, so keep it within 50 (set STACK_NAME or --stack)",
            stack.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec, TaskSpecRestartPolicy};

    fn spec(mode: ServiceSpecMode, condition: Option<TaskSpecRestartPolicyConditionEnum>) -> ServiceSpec {
        let restart_policy =
            condition.map(|condition| TaskSpecRestartPolicy { condition: Some(condition), ..Default::default() });
        ServiceSpec {
            mode: Some(mode),
            task_template: Some(TaskSpec { restart_policy, ..Default::default() }),
            ..Default::default()
        }
    }

    fn replicated() -> ServiceSpecMode {
        ServiceSpecMode { replicated: Some(ServiceSpecModeReplicated { replicas: Some(2) }), ..Default::default() }
    }

    #[test]
    fn jobs_and_services_that_restart_only_on_failure_run_to_completion() {
        use TaskSpecRestartPolicyConditionEnum::{ANY, NONE, ON_FAILURE};
        let app = spec(replicated(), Some(ANY));
        assert!(!is_one_shot(&app) && is_long_running(&app));
        let default_policy = spec(replicated(), None);
        assert!(!is_one_shot(&default_policy) && is_long_running(&default_policy));
        for condition in [ON_FAILURE, NONE] {
            let migrate = spec(replicated(), Some(condition));
            assert!(is_one_shot(&migrate) && !is_long_running(&migrate), "{condition:?}");
        }
        let job = spec(ServiceSpecMode { replicated_job: Some(Default::default()), ..Default::default() }, None);
        assert!(is_one_shot(&job) && !is_long_running(&job));
        let global = spec(ServiceSpecMode { global: Some(Default::default()), ..Default::default() }, Some(ANY));
        assert!(!is_one_shot(&global) && is_long_running(&global));
    }

    #[test]
    fn the_app_is_the_long_running_service_of_the_release_image() {
        use TaskSpecRestartPolicyConditionEnum::{ANY, ON_FAILURE};
        let with_image = |mut spec: ServiceSpec, name: &str, image: &str| {
            spec.name = Some(name.to_owned());
            let template = spec.task_template.get_or_insert_with(Default::default);
            template.container_spec =
                Some(bollard::models::TaskSpecContainerSpec { image: Some(image.to_owned()), ..Default::default() });
            SwarmService { spec: Some(spec), ..Default::default() }
        };
        let services = [
            with_image(spec(replicated(), Some(ANY)), "s_db", "reg:5000/postgres:15@sha256:1"),
            with_image(spec(replicated(), Some(ON_FAILURE)), "s_migrate", "reg:5000/todobackend:B@sha256:2"),
            with_image(spec(replicated(), Some(ANY)), "s_app", "reg:5000/todobackend:B@sha256:2"),
        ];
        let name = |spec: Option<&ServiceSpec>| spec.and_then(|spec| spec.name.clone());
        assert_eq!(name(app(&services, "reg:5000/todobackend")).as_deref(), Some("s_app"));
        // A stack whose services run another image: its first long-running one.
        assert_eq!(name(app(&services, "elsewhere/x")).as_deref(), Some("s_db"));
        assert!(runs_release(services[1].spec.as_ref().unwrap(), "reg:5000/todobackend"));
        assert!(!runs_release(services[0].spec.as_ref().unwrap(), "reg:5000/todobackend"));
    }

    #[test]
    fn task_states_map_from_the_swarms_names() {
        assert_eq!(TaskState::from_name("preparing"), TaskState::Starting);
        assert_eq!(TaskState::from_name("rejected"), TaskState::Failed);
        assert_eq!(TaskState::from_name("remove"), TaskState::Shutdown);
        assert_eq!(TaskState::from_name("complete"), TaskState::Complete);
    }

    #[test]
    fn stack_names_follow_the_engines_rule() {
        for good in ["todobackend", "t-1.x_y", "9lives"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["a b", "", "-a", "_a", "a/b", &"x".repeat(51)] {
            let err = check_name(bad).unwrap_err().to_string();
            assert!(err.contains("STACK_NAME"), "{bad}: {err}");
        }
    }
}
