//! The stack as the swarm runs it: its services, and which of them run to
//! completion. Deploy's watch, status, logs, rollback and refresh-auth all
//! read the stack this way, so they agree on what a job is.

use std::collections::HashMap;

use anyhow::{Context, Result};
use bollard::Docker;
use bollard::models::{Service, ServiceSpec, TaskSpecRestartPolicyConditionEnum};
use bollard::query_parameters::ListServicesOptions;

/// The filter for what `docker stack deploy` made for `stack`: it labels
/// every service and task with the stack's name.
pub fn label_filter(stack: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![format!("com.docker.stack.namespace={stack}")])])
}

/// The services of `stack` (none before its first deploy).
pub async fn services(docker: &Docker, stack: &str) -> Result<Vec<Service>> {
    docker
        .list_services(Some(ListServicesOptions { filters: Some(label_filter(stack)), ..Default::default() }))
        .await
        .with_context(|| format!("cannot list the services of stack {stack}"))
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

/// A replicated service that keeps running: the stack's `app`.
pub fn is_long_running(spec: &ServiceSpec) -> bool {
    spec.mode.as_ref().is_some_and(|mode| mode.replicated.is_some()) && !is_one_shot(spec)
}

/// Whether the service runs `release_image` (`<registry>/<repository>`,
/// any tag or digest): the app and its jobs, not a database beside them.
pub fn runs_release(spec: &ServiceSpec, release_image: &str) -> bool {
    let image = spec.task_template.as_ref().and_then(|template| template.container_spec.as_ref()?.image.as_deref());
    image.is_some_and(|image| crate::image_ref::ImageRef::parse(image).name == release_image)
}

/// The stack's app: the long-running service that runs the release image
/// (of a stack whose services run no such image, its first long-running
/// one). The `db` of the PostgreSQL stack is long-running too, and is not it.
pub fn app<'a>(services: &'a [Service], release_image: &str) -> Option<&'a ServiceSpec> {
    let long_running =
        || services.iter().filter_map(|service| service.spec.as_ref()).filter(|spec| is_long_running(spec));
    long_running().find(|spec| runs_release(spec, release_image)).or_else(|| long_running().next())
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
        assert!(!is_one_shot(&global) && !is_long_running(&global));
    }

    #[test]
    fn the_app_is_the_long_running_service_of_the_release_image() {
        use TaskSpecRestartPolicyConditionEnum::{ANY, ON_FAILURE};
        let with_image = |mut spec: ServiceSpec, name: &str, image: &str| {
            spec.name = Some(name.to_owned());
            let template = spec.task_template.get_or_insert_with(Default::default);
            template.container_spec =
                Some(bollard::models::TaskSpecContainerSpec { image: Some(image.to_owned()), ..Default::default() });
            Service { spec: Some(spec), ..Default::default() }
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
}
