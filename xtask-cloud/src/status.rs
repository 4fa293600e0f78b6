//! `status [--json]`: what the stack runs now. For each service: the version,
//! replicas running of desired, the update state, whether a one-shot service
//! completed; then the last deploy from the history and the deploy lock, and
//! the drift: every service and field changed outside the xtask since the
//! last deploy recorded the specs (`service_spec::drift`). The exit code is 0 when
//! the stack has converged without drift, 3 when it has not converged or its
//! app runs a version whose deploy did not finish (timed out, interrupted:
//! unverified, until a deploy settles it), 1 on drift (unless
//! `--allow-drift`), so that it serves as a monitor or a CI gate.

use anyhow::{Result, bail};
use serde::Serialize;
use xtask::ctx::Ctx;
use xtask::flags::StatusArgs as Args;

use crate::async_ctx::AsyncCtx;
use crate::image_ref::ImageRef;
use crate::stack::{Kind, Service, Snapshot, Task, TaskState};

#[derive(Debug, Serialize, PartialEq)]
pub struct ServiceStatus {
    pub name: String,
    pub version: String,
    /// `replicated`, `global` (desired: the nodes it should run on) or `one-shot`.
    pub kind: &'static str,
    pub running: u64,
    pub desired: u64,
    /// The swarm's update state (`updating`, `paused`, `completed`,
    /// `rollback_completed`, ...), or `none` before any update.
    pub update: String,
    /// For one-shot services: whether a task of the current spec completed.
    pub completed: Option<bool>,
    /// For one-shot services: whether it failed (no task of the current spec
    /// completed, none is still on its way, and one failed).
    pub failed: Option<bool>,
    pub converged: bool,
}

/// The status of one service (pure).
pub fn service_status(name: &str, service: &Service) -> ServiceStatus {
    let spec = ImageRef::parse(&service.spec_image);
    let current = |task: &&Task| spec.matches(&task.image, None);
    let update = service.update.as_ref().map_or("none".to_owned(), |update| update.state.clone());
    let settled = !matches!(update.as_str(), "updating" | "paused" | "rollback_started" | "rollback_paused");
    let version = spec.version();
    match service.kind {
        Kind::Replicated { replicas } => {
            let running = service
                .tasks
                .iter()
                .filter(current)
                .filter(|task| task.desired_running && task.state == TaskState::Running)
                .count() as u64;
            ServiceStatus {
                name: name.to_owned(),
                version,
                kind: "replicated",
                running,
                desired: replicas,
                update,
                completed: None,
                failed: None,
                converged: settled && running == replicas,
            }
        }
        Kind::Global => {
            // One task on each node the swarm wants one on (see converge::global).
            let wanted = service.tasks.iter().filter(|task| task.desired_running);
            let nodes: std::collections::BTreeSet<Option<&str>> =
                wanted.clone().map(|task| task.node.as_deref()).collect();
            let running: std::collections::BTreeSet<Option<&str>> = wanted
                .filter(current)
                .filter(|task| task.node.is_some() && task.state == TaskState::Running)
                .map(|task| task.node.as_deref())
                .collect();
            let (running, desired) = (running.len() as u64, nodes.len() as u64);
            ServiceStatus {
                name: name.to_owned(),
                version,
                kind: "global",
                running,
                desired,
                update,
                completed: None,
                failed: None,
                converged: settled && desired > 0 && running == desired,
            }
        }
        Kind::OneShot { .. } => {
            let completed = service.tasks.iter().filter(current).any(|task| task.state == TaskState::Complete);
            let running = service.tasks.iter().filter(|task| task.state == TaskState::Running).count() as u64;
            let on_its_way = service
                .tasks
                .iter()
                .filter(current)
                .any(|task| matches!(task.state, TaskState::Starting | TaskState::Running));
            let failed = !completed
                && !on_its_way
                && service.tasks.iter().filter(current).any(|task| task.state == TaskState::Failed);
            ServiceStatus {
                name: name.to_owned(),
                version,
                kind: "one-shot",
                running,
                desired: 0,
                update,
                completed: Some(completed),
                failed: Some(failed),
                converged: settled && completed,
            }
        }
    }
}

pub fn run(ctx: &Ctx, args: &Args) -> Result<()> {
    let stack = ctx.settings.stack.clone();
    let (snapshot, holder, nodes) = ctx.block_on(async {
        let docker = ctx.docker().await?;
        let snapshot = Snapshot::read(&docker, &stack).await?;
        let holder = crate::records::lock::current(&docker, &stack).await?;
        let nodes = crate::swarm_nodes::list(&docker).await?;
        Ok((snapshot, holder, nodes))
    })?;
    // Where each task runs, from the swarm: the engine here sees only its own containers.
    let task_nodes = crate::swarm_nodes::task_nodes(&snapshot, &nodes);
    if snapshot.services.is_empty() {
        bail!("stack {stack} is not deployed: deploy it with `cargo xtask deploy`");
    }
    let prefix = format!("{stack}_");
    let mut services: Vec<ServiceStatus> = snapshot
        .services
        .iter()
        .map(|(full_name, service)| service_status(snapshot.short_name(full_name), service))
        .collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));
    let history = crate::records::history::list(ctx, &stack)?;
    let last = history.first().cloned();
    let credential_age = oldest_update(&snapshot);
    let stale = credential_age.and_then(stale_credential_warning);
    let converged = services.iter().all(|service| service.converged);
    let docker = ctx.block_on(async { ctx.docker().await })?;
    let app = ctx.block_on(crate::stack::running_app(&docker, &stack, &ctx.settings.image_name()))?;
    let unverified = app.and_then(|app| crate::records::history::unverified(&history, &app.version).cloned());
    let live = crate::service_spec::live_services(ctx, &docker, &stack)?;
    let drift = crate::records::history::last_specs(&history)
        .map(|recorded| crate::service_spec::drift::drifted(&recorded, &live));

    if args.json {
        let json = serde_json::json!({
            "stack": stack,
            "converged": converged,
            // The version whose deploy timed out or was interrupted, if the
            // app runs it: not verified.
            "unverified": unverified.as_ref().map(|entry| &entry.version),
            "nodes": nodes,
            "task_nodes": services
                .iter()
                .map(|service| (service.name.clone(), task_nodes.get(&format!("{prefix}{}", service.name))))
                .collect::<std::collections::BTreeMap<_, _>>(),
            "services": services,
            "last_deploy": last,
            "lock": holder,
            "registry_credential_age_seconds": credential_age.map(|age| age.as_secs()),
            "warning": stale,
            // Per service, the fields changed outside the xtask since the
            // last deploy; null when no deploy recorded the specs.
            "drift": drift,
        });
        ctx.print_result(&serde_json::to_string_pretty(&json)?);
    } else {
        let mut lines = vec![format!(
            "{:<16}  {:<16}  {:<10}  {:<8}  {:<20}  {:<13}  {}",
            "SERVICE", "VERSION", "KIND", "TASKS", "UPDATE", "STATE", "NODES"
        )];
        for service in &services {
            let tasks = match (service.completed, service.failed) {
                (Some(true), _) => "done".to_owned(),
                (_, Some(true)) => "failed".to_owned(),
                (Some(false), _) => "not done".to_owned(),
                _ => format!("{}/{}", service.running, service.desired),
            };
            let state = if service.converged { "converged" } else { "NOT CONVERGED" };
            let on =
                task_nodes.get(&format!("{prefix}{}", service.name)).map(|names| names.join(",")).unwrap_or_default();
            lines.push(format!(
                "{:<16}  {:<16}  {:<10}  {:<8}  {:<20}  {state:<13}  {on}",
                service.name, service.version, service.kind, tasks, service.update
            ));
        }
        // A swarm of several nodes: each node's state, a lost one loud.
        if nodes.len() > 1 {
            let described: Vec<String> = nodes.iter().map(crate::swarm_nodes::NodeStatus::describe).collect();
            lines.push(format!("nodes: {}", described.join(", ")));
            for down in nodes.iter().filter(|node| node.is_down()) {
                lines.push(format!(
                    "warning: node {} is {}: the swarm reschedules its tasks on the other nodes",
                    down.name, down.state
                ));
            }
        }
        lines.push(match &last {
            Some(entry) => {
                format!("last {}: {} {} by {} at {}", entry.kind, entry.version, entry.outcome, entry.actor, entry.at)
            }
            None => "no deploy recorded".to_owned(),
        });
        if let Some(entry) = &unverified {
            lines.push(format!("unverified: {}", unverified_reason(entry)));
        }
        if let Some(holder) = &holder {
            lines.push(format!("locked: {}", holder.describe()));
        }
        if let Some(warning) = &stale {
            lines.push(format!("warning: {warning}"));
        }
        for (service, fields) in drift.iter().flatten() {
            lines.push(format!(
                "drift: {service}: {} changed outside the xtask since the last deploy (the next deploy reverts it)",
                fields.join(", ")
            ));
        }
        ctx.print_result(&lines.join("\n"));
    }
    if !converged {
        let waiting: Vec<String> = services
            .iter()
            .filter(|service| !service.converged)
            .map(|service| format!("{} ({})", service.name, waiting_for(service)))
            .collect();
        return Err(
            xtask::exit::Exit::NotConverged.error(format!("stack {stack} has not converged: {}", waiting.join(", ")))
        );
    }
    if let Some(entry) = &unverified {
        return Err(xtask::exit::Exit::NotConverged.error(format!("stack {stack}: {}", unverified_reason(entry))));
    }
    let drifted: Vec<String> =
        drift.iter().flatten().map(|(service, fields)| format!("{service} ({})", fields.join(", "))).collect();
    if !drifted.is_empty() && !args.allow_drift {
        bail!(
            "stack {stack} has drifted from its last deploy: {}: `cargo xtask plan` shows what a deploy reverts; \
             `--allow-drift` accepts it",
            drifted.join("; ")
        );
    }
    Ok(())
}

/// What a version left unverified means, and what settles it.
fn unverified_reason(entry: &crate::records::history::Entry) -> String {
    let ended = match entry.outcome {
        crate::records::history::Outcome::Interrupted => "was interrupted",
        _ => "timed out",
    };
    format!(
        "the app runs version {} unverified: its deploy {ended} before the verification in the swarm ran; \
         `cargo xtask deploy` of it verifies it",
        entry.version
    )
}

/// Why a service has not converged, in a word or two: a job that failed
/// says so (the swarm's update state of a job is "completed" all the same).
fn waiting_for(service: &ServiceStatus) -> String {
    match (service.failed, service.completed) {
        (Some(true), _) => "failed".to_owned(),
        (_, Some(false)) if service.update == "completed" || service.update == "none" => "not done".to_owned(),
        _ => service.update.clone(),
    }
}

/// ECR tokens last 12 hours.
const TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// How long ago the stack's least recently updated service was updated: a
/// deploy and `refresh-auth` both hand the services the credential of the
/// moment, so this is how old the oldest credential can be.
fn oldest_update(stack: &Snapshot) -> Option<std::time::Duration> {
    let now = std::time::SystemTime::now();
    stack
        .services
        .values()
        .filter_map(|service| service.updated_at.as_deref())
        .filter_map(|at| aws_smithy_types::DateTime::from_str(at, aws_smithy_types::date_time::Format::DateTime).ok())
        .filter_map(|at| std::time::SystemTime::try_from(at).ok())
        .filter_map(|at| now.duration_since(at).ok())
        .max()
}

/// A warning when the services' registry credential may have expired.
pub fn stale_credential_warning(age: std::time::Duration) -> Option<String> {
    (age > TOKEN_LIFETIME).then(|| {
        format!(
            "the services' registry credential is {} h old and ECR tokens last 12 h: a task rescheduled on a node \
             without its image cannot pull it; run `cargo xtask refresh-auth`",
            age.as_secs() / 3600
        )
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_old_credential_is_warned_about() {
        use std::time::Duration;
        assert_eq!(super::stale_credential_warning(Duration::from_secs(3600)), None);
        let warning = super::stale_credential_warning(Duration::from_secs(13 * 3600)).unwrap();
        assert!(warning.contains("13 h old") && warning.contains("refresh-auth"), "{warning}");
    }

    use super::*;
    use crate::stack::Update;

    fn task(image: &str, state: TaskState) -> Task {
        Task::new(image, state, state == TaskState::Running)
    }

    fn update(state: &str) -> Option<Update> {
        Some(Update { state: state.into(), started_at: String::new(), message: String::new() })
    }

    #[test]
    fn a_replicated_service_converges_with_all_its_replicas_on_the_spec_image_and_no_update_under_way() {
        let running = Service {
            kind: Kind::Replicated { replicas: 2 },
            spec_image: "r/app:B@sha256:1".into(),
            update: update("completed"),
            updated_at: None,
            tasks: vec![task("r/app:B@sha256:1", TaskState::Running), task("r/app:B@sha256:1", TaskState::Running)],
        };
        let status = service_status("app", &running);
        assert_eq!((status.version.as_str(), status.running, status.desired, status.converged), ("B", 2, 2, true));
        let one_short = Service { tasks: running.tasks[..1].to_vec(), ..running.clone() };
        assert!(!service_status("app", &one_short).converged);
        let paused = Service { update: update("rollback_paused"), ..running.clone() };
        assert!(!service_status("app", &paused).converged);
        // A completed rollback runs the old version, settled: converged.
        let rolled_back = Service { update: update("rollback_completed"), ..running.clone() };
        assert!(service_status("app", &rolled_back).converged);
        let old_tasks = Service { tasks: vec![task("r/app:A", TaskState::Running); 2], ..running };
        assert_eq!(service_status("app", &old_tasks).running, 0);
    }

    #[test]
    fn a_one_shot_service_converges_once_completed() {
        let job = Service {
            kind: Kind::OneShot { restart_delay: std::time::Duration::ZERO },
            spec_image: "r/app:B".into(),
            update: None,
            updated_at: None,
            tasks: vec![task("r/app:B", TaskState::Failed)],
        };
        let status = service_status("migrate", &job);
        assert_eq!((status.completed, status.converged, status.update.as_str()), (Some(false), false, "none"));
        // Failed, and nothing on its way: it says failed, whatever the swarm's update state.
        let failed = Service { update: update("completed"), ..job.clone() };
        let status = service_status("migrate", &failed);
        assert_eq!((status.failed, waiting_for(&status).as_str()), (Some(true), "failed"));
        // A retry on its way: not failed (yet).
        let retrying = Service {
            tasks: vec![task("r/app:B", TaskState::Failed), task("r/app:B", TaskState::Starting)],
            ..failed.clone()
        };
        let status = service_status("migrate", &retrying);
        assert_eq!((status.failed, waiting_for(&status).as_str()), (Some(false), "not done"));
        let done =
            Service { tasks: vec![task("r/app:B", TaskState::Failed), task("r/app:B", TaskState::Complete)], ..job };
        assert!(service_status("migrate", &done).converged);
    }
}
