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
}
