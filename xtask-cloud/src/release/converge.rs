//! When a deployed service has converged, or has failed: pure rules on the
//! service and task states the watcher reads from the swarm (`stack.rs`).

use std::time::Duration;

use crate::image_ref::ImageRef;
use crate::stack::{Kind, Service, Task, TaskState, Update};

/// What deploy wants: the image, its digest in the registry, and each
/// service's UpdateStatus before `docker stack deploy` (an update that was
/// already there, such as an earlier rollback, is not this deploy's).
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub image: &'a ImageRef,
    pub digest: Option<&'a str>,
    pub update_before: Option<&'a Update>,
    /// How long the one-shot service has had no task that could still succeed
    /// (measured by the watcher).
    pub idle_for: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Still on its way; the text is the progress shown.
    Waiting(String),
    Done(String),
    Failed(Failure),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The update failed and the swarm rolled the service back to `image`.
    RolledBack { message: String, image: String },
    /// The update (or its rollback) failed and the swarm paused it.
    Paused { message: String, rolling_back: bool },
    /// A one-shot service failed `attempts` times and will not be retried.
    Exhausted { attempts: usize },
}

/// Extra wait, past the restart delay, before a one-shot service with no
/// live task is declared exhausted (the orchestrator may be slow to retry).
pub const RETRY_GRACE: Duration = Duration::from_secs(5);

pub fn judge(service: &Service, target: &Target<'_>) -> Verdict {
    match &service.kind {
        Kind::Replicated { replicas } => replicated(service, *replicas, target),
        Kind::Global => global(service, target),
        Kind::OneShot { restart_delay } => one_shot(service, *restart_delay, target),
    }
}

/// Short `:tag` for progress lines.
fn tag_of(image: &str) -> String {
    format!(":{}", ImageRef::parse(image).version())
}

fn replicated(service: &Service, replicas: u64, target: &Target<'_>) -> Verdict {
    let on_target = |image: &str| target.image.matches(image, target.digest);
    let running_new = service
        .tasks
        .iter()
        .filter(|task| task.desired_running && task.state == TaskState::Running && on_target(&task.image))
        .count() as u64;
    let progress = format!("{running_new}/{replicas} running on {}", tag_of(&target.image.name_tag()));
    long_running(service, target, progress, running_new >= replicas)
}

/// A global service (the edge) has converged when every node the swarm
/// wants a task on runs one of the new image: the nodes are those of the
/// tasks it wants running, so a node that is drained or down is not waited
/// for, and a task not placed yet counts as a node still to come.
fn global(service: &Service, target: &Target<'_>) -> Verdict {
    let on_target = |image: &str| target.image.matches(image, target.digest);
    let wanted: Vec<&Task> = service.tasks.iter().filter(|task| task.desired_running).collect();
    let nodes: std::collections::BTreeSet<Option<&str>> = wanted.iter().map(|task| task.node.as_deref()).collect();
    let ready: std::collections::BTreeSet<Option<&str>> = wanted
        .iter()
        .filter(|task| task.node.is_some() && task.state == TaskState::Running && on_target(&task.image))
        .map(|task| task.node.as_deref())
        .collect();
    let unplaced = wanted.iter().filter(|task| task.node.is_none()).count();
    let total = nodes.len() - usize::from(nodes.contains(&None)) + unplaced;
    let progress = format!("{}/{total} nodes running {}", ready.len(), tag_of(&target.image.name_tag()));
    long_running(service, target, progress, total > 0 && ready.len() == total)
}

/// The verdict on a service that keeps running, given its progress and
/// whether all its tasks run the new image: the swarm's update state first.
fn long_running(service: &Service, target: &Target<'_>, progress: String, all_new: bool) -> Verdict {
    // An update that was there before this deploy is not this deploy's outcome.
    let update = service.update.as_ref().filter(|update| Some(*update) != target.update_before);
    let on_target = |image: &str| target.image.matches(image, target.digest);
    match update.map(|update| update.state.as_str()) {
        Some("rollback_completed") => Verdict::Failed(Failure::RolledBack {
            message: update.map(|u| u.message.clone()).unwrap_or_default(),
            image: service.spec_image.clone(),
        }),
        Some("paused") | Some("rollback_paused") => Verdict::Failed(Failure::Paused {
            message: update.map(|u| u.message.clone()).unwrap_or_default(),
            rolling_back: update.is_some_and(|u| u.state == "rollback_paused"),
        }),
        Some("rollback_started") => Verdict::Waiting(format!("rolling back ({progress})")),
        Some("updating") => Verdict::Waiting(format!("updating, {progress}")),
        _ if on_target(&service.spec_image) && all_new => Verdict::Done(progress),
        _ if !on_target(&service.spec_image) => {
            Verdict::Waiting(format!("spec still on {}", tag_of(&service.spec_image)))
        }
        _ => Verdict::Waiting(progress),
    }
}

fn one_shot(service: &Service, restart_delay: Duration, target: &Target<'_>) -> Verdict {
    let tasks: Vec<&Task> =
        service.tasks.iter().filter(|task| target.image.matches(&task.image, target.digest)).collect();
    if tasks.iter().any(|task| task.state == TaskState::Complete) {
        return Verdict::Done("completed".into());
    }
    let failures = tasks.iter().filter(|task| task.state == TaskState::Failed).count();
    let live =
        tasks.iter().any(|task| task.desired_running && matches!(task.state, TaskState::Starting | TaskState::Running));
    if live {
        let attempt = failures + 1;
        return Verdict::Waiting(if attempt > 1 { format!("running, attempt {attempt}") } else { "running".into() });
    }
    if failures > 0 && target.idle_for >= restart_delay + RETRY_GRACE {
        return Verdict::Failed(Failure::Exhausted { attempts: failures });
    }
    if failures > 0 {
        return Verdict::Waiting(format!("failed {failures} time(s), waiting for a retry"));
    }
    Verdict::Waiting("waiting for its task".into())
}

/// Whether the one-shot service has a task that can still succeed (the
/// watcher times how long this stays false).
pub fn has_live_task(service: &Service, target: &Target<'_>) -> bool {
    service.tasks.iter().any(|task| {
        target.image.matches(&task.image, target.digest)
            && (task.state == TaskState::Complete
                || task.desired_running && matches!(task.state, TaskState::Starting | TaskState::Running))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "r:5000/app:A@sha256:aaa";
    const B: &str = "r:5000/app:B@sha256:bbb";

    fn task(image: &str, state: &str, desired_running: bool) -> Task {
        Task::new(image, TaskState::from_name(state), desired_running)
    }

    fn update(state: &str, started_at: &str) -> Update {
        Update { state: state.into(), started_at: started_at.into(), message: format!("update {state}") }
    }

    fn app(spec_image: &str, update: Option<Update>, tasks: Vec<Task>) -> Service {
        Service {
            kind: Kind::Replicated { replicas: 2 },
            spec_image: spec_image.into(),
            update,
            updated_at: None,
            tasks,
        }
    }

    fn job(tasks: Vec<Task>) -> Service {
        Service {
            kind: Kind::OneShot { restart_delay: Duration::from_secs(5) },
            spec_image: B.into(),
            update: None,
            updated_at: None,
            tasks,
        }
    }

    fn judge_b(service: &Service, before: Option<&Update>, idle_secs: u64) -> Verdict {
        let image = ImageRef::parse("r:5000/app:B");
        let target = Target {
            image: &image,
            digest: Some("sha256:bbb"),
            update_before: before,
            idle_for: Duration::from_secs(idle_secs),
        };
        judge(service, &target)
    }

    #[test]
    fn a_new_service_is_done_when_all_replicas_run_the_new_image() {
        let one = app(B, None, vec![task(B, "running", true), task(B, "starting", true)]);
        assert_eq!(judge_b(&one, None, 0), Verdict::Waiting("1/2 running on :B".into()));
        let both = app(B, None, vec![task(B, "running", true), task(B, "running", true), task(B, "failed", false)]);
        assert_eq!(judge_b(&both, None, 0), Verdict::Done("2/2 running on :B".into()));
    }

    fn on(node: &str, image: &str, state: &str, desired_running: bool) -> Task {
        Task { node: Some(node.into()), ..task(image, state, desired_running) }
    }

    #[test]
    fn a_global_service_is_done_when_every_wanted_node_runs_the_new_image() {
        let edge = |update: Option<Update>, tasks: Vec<Task>| Service {
            kind: Kind::Global,
            spec_image: B.into(),
            update,
            updated_at: None,
            tasks,
        };
        // Node 2 still runs A, node 3's new task is not placed yet.
        let rolling =
            edge(None, vec![on("n1", B, "running", true), on("n2", A, "running", true), task(B, "pending", true)]);
        assert_eq!(judge_b(&rolling, None, 0), Verdict::Waiting("1/3 nodes running :B".into()));
        // Every node on B; the replaced tasks are not wanted any more.
        let done = edge(
            Some(update("completed", "t1")),
            vec![on("n1", B, "running", true), on("n2", B, "running", true), on("n2", A, "shutdown", false)],
        );
        assert_eq!(judge_b(&done, None, 0), Verdict::Done("2/2 nodes running :B".into()));
        // Between a node's old task and its new one, the update is still under way.
        let between = edge(Some(update("updating", "t1")), vec![on("n1", B, "running", true)]);
        assert!(matches!(judge_b(&between, None, 0), Verdict::Waiting(text) if text.starts_with("updating")));
        // No node at all (every node drained): nothing runs, nothing is done.
        assert!(matches!(judge_b(&edge(None, vec![]), None, 0), Verdict::Waiting(_)));
    }

    #[test]
    fn a_rolling_update_waits_for_the_update_to_complete() {
        let tasks = vec![task(B, "running", true), task(B, "running", true)];
        let updating = app(B, Some(update("updating", "t1")), tasks.clone());
        assert!(matches!(judge_b(&updating, None, 0), Verdict::Waiting(text) if text.starts_with("updating")));
        let completed = app(B, Some(update("completed", "t1")), tasks);
        assert!(matches!(judge_b(&completed, None, 0), Verdict::Done(_)));
    }

    #[test]
    fn old_replicas_and_a_stale_digest_do_not_count() {
        let tasks = vec![task(A, "running", true), task(B, "running", true), task(A, "shutdown", false)];
        assert!(matches!(judge_b(&app(B, None, tasks), None, 0), Verdict::Waiting(_)));
        let repushed = "r:5000/app:B@sha256:old";
        let tasks = vec![task(repushed, "running", true), task(repushed, "running", true)];
        assert!(matches!(judge_b(&app(repushed, None, tasks), None, 0), Verdict::Waiting(_)));
    }

    #[test]
    fn a_rollback_is_followed_to_its_end_and_is_a_failure() {
        let started = app(A, Some(update("rollback_started", "t1")), vec![task(A, "running", true)]);
        assert!(matches!(judge_b(&started, None, 0), Verdict::Waiting(text) if text.starts_with("rolling back")));
        let done = app(A, Some(update("rollback_completed", "t1")), vec![task(A, "running", true); 2]);
        assert_eq!(
            judge_b(&done, None, 0),
            Verdict::Failed(Failure::RolledBack { message: "update rollback_completed".into(), image: A.into() })
        );
    }

    #[test]
    fn a_paused_update_or_rollback_is_a_failure() {
        let paused = app(B, Some(update("paused", "t1")), vec![]);
        assert!(matches!(judge_b(&paused, None, 0), Verdict::Failed(Failure::Paused { rolling_back: false, .. })));
        let paused = app(A, Some(update("rollback_paused", "t1")), vec![]);
        assert!(matches!(judge_b(&paused, None, 0), Verdict::Failed(Failure::Paused { rolling_back: true, .. })));
    }

    #[test]
    fn an_earlier_deploys_rollback_is_not_this_deploys_failure() {
        // Version B was rolled back to A before; deploying A again changes no
        // spec, so the old rollback status stays and must not fail the deploy.
        let earlier = update("rollback_completed", "t0");
        let service = app(A, Some(earlier.clone()), vec![task(A, "running", true); 2]);
        let image = ImageRef::parse("r:5000/app:A");
        let target = Target {
            image: &image,
            digest: Some("sha256:aaa"),
            update_before: Some(&earlier),
            idle_for: Duration::ZERO,
        };
        assert!(matches!(judge(&service, &target), Verdict::Done(_)));
        // A new update (new start time) is this deploy's.
        let again = app(A, Some(update("rollback_completed", "t2")), vec![task(A, "running", true); 2]);
        assert!(matches!(judge(&again, &target), Verdict::Failed(Failure::RolledBack { .. })));
    }

    #[test]
    fn a_one_shot_service_is_done_when_a_task_of_the_new_image_completed() {
        assert_eq!(
            judge_b(&job(vec![task(A, "complete", true)]), None, 0),
            Verdict::Waiting("waiting for its task".into())
        );
        assert_eq!(
            judge_b(&job(vec![task(A, "complete", true), task(B, "running", true)]), None, 0),
            Verdict::Waiting("running".into())
        );
        let done = job(vec![task(B, "failed", false), task(B, "complete", true)]);
        assert_eq!(judge_b(&done, None, 0), Verdict::Done("completed".into()));
    }

    #[test]
    fn a_one_shot_service_is_exhausted_when_no_retry_comes() {
        let failed = job(vec![task(B, "failed", true), task(B, "failed", true)]);
        assert!(matches!(judge_b(&failed, None, 1), Verdict::Waiting(_)));
        assert_eq!(judge_b(&failed, None, 10), Verdict::Failed(Failure::Exhausted { attempts: 2 }));
        let retrying = job(vec![task(B, "failed", false), task(B, "starting", true)]);
        assert_eq!(judge_b(&retrying, None, 60), Verdict::Waiting("running, attempt 2".into()));
        let image = ImageRef::parse("r:5000/app:B");
        let target = Target { image: &image, digest: None, update_before: None, idle_for: Duration::ZERO };
        assert!(has_live_task(&retrying, &target));
        assert!(!has_live_task(&failed, &target));
    }
}
