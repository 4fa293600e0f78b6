//! The swarm's nodes, and on which of them the stack's tasks run: on a swarm
//! of several nodes the engine the xtask talks to sees only its own
//! containers, so where a task runs is read from the swarm (its task's node),
//! never from the containers this engine lists.

use std::collections::{BTreeSet, HashMap};

use anyhow::{Context, Result};
use bollard::Docker;
use bollard::models::{Node, NodeState};
use serde::Serialize;

use crate::stack::{Service, Snapshot, Task, TaskState};

/// A node as `status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeStatus {
    pub id: String,
    pub name: String,
    /// `manager` or `worker`.
    pub role: String,
    /// `ready`, `down`, `disconnected`, `unknown`.
    pub state: String,
    /// `active`, `pause`, `drain`.
    pub availability: String,
}

impl NodeStatus {
    fn from_node(node: &Node) -> NodeStatus {
        let spec = node.spec.as_ref();
        let hostname = node.description.as_ref().and_then(|description| description.hostname.clone());
        let id = node.id.clone().unwrap_or_default();
        NodeStatus {
            name: spec.and_then(|spec| spec.name.clone()).or(hostname).unwrap_or_else(|| id.clone()),
            id,
            role: spec.and_then(|spec| spec.role).map(|role| role.to_string()).unwrap_or_default(),
            state: node
                .status
                .as_ref()
                .and_then(|status| status.state)
                .map(|state| state.to_string())
                .unwrap_or_default(),
            availability: spec
                .and_then(|spec| spec.availability)
                .map(|availability| availability.to_string())
                .unwrap_or_default(),
        }
    }

    pub fn is_down(&self) -> bool {
        self.state != NodeState::READY.to_string()
    }

    /// `node2 down`, `node1 (manager)`, `node3 drain`: what is worth saying.
    pub fn describe(&self) -> String {
        let mut words = vec![self.name.clone()];
        if self.role == "manager" {
            words.push("(manager)".to_owned());
        }
        if self.is_down() {
            words.push(self.state.to_uppercase());
        } else {
            words.push(self.state.clone());
        }
        if self.availability != "active" {
            words.push(self.availability.clone());
        }
        words.join(" ")
    }
}

/// The swarm's nodes, by name.
pub async fn list(docker: &Docker) -> Result<Vec<NodeStatus>> {
    let nodes = docker.list_nodes(None).await.context("cannot list the swarm's nodes")?;
    let mut nodes: Vec<NodeStatus> = nodes.iter().map(NodeStatus::from_node).collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(nodes)
}

/// For each service of the stack (by its full name), the nodes its running
/// tasks run on; for a service with none running (a completed job), the node
/// of its newest task.
pub fn task_nodes(stack: &Snapshot, nodes: &[NodeStatus]) -> HashMap<String, Vec<String>> {
    let name_of =
        |id: &str| nodes.iter().find(|node| node.id == id).map_or_else(|| id.to_owned(), |node| node.name.clone());
    stack
        .services
        .iter()
        .map(|(service, Service { tasks, .. })| {
            let placed = || tasks.iter().filter_map(|task| Some((task, task.node.as_deref()?)));
            let running: BTreeSet<String> =
                placed().filter(|(task, _)| task.state == TaskState::Running).map(|(_, node)| name_of(node)).collect();
            let nodes = if running.is_empty() {
                // The newest task; of tasks created at the same time, the first listed.
                let newest = placed().fold(None::<(&Task, &str)>, |newest, (task, node)| match newest {
                    Some((kept, _)) if kept.created_at >= task.created_at => newest,
                    _ => Some((task, node)),
                });
                newest.map(|(_, node)| vec![name_of(node)]).unwrap_or_default()
            } else {
                running.into_iter().collect()
            };
            (service.clone(), nodes)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, role: &str, state: &str, availability: &str) -> NodeStatus {
        NodeStatus {
            id: name.into(),
            name: name.into(),
            role: role.into(),
            state: state.into(),
            availability: availability.into(),
        }
    }

    #[test]
    fn a_node_is_described_by_what_is_worth_saying() {
        assert_eq!(node("node1", "manager", "ready", "active").describe(), "node1 (manager) ready");
        assert_eq!(node("node2", "worker", "down", "active").describe(), "node2 DOWN");
        assert_eq!(node("node3", "worker", "ready", "drain").describe(), "node3 ready drain");
        assert!(node("node2", "worker", "disconnected", "active").is_down());
        assert!(!node("node2", "worker", "ready", "pause").is_down());
    }

    #[test]
    fn a_service_is_on_the_nodes_of_its_running_tasks_else_on_its_newest_tasks_node() {
        use crate::stack::Kind;
        let task = |state: TaskState, node: Option<&str>, created_at: &str| Task {
            node: node.map(str::to_owned),
            created_at: created_at.to_owned(),
            ..Task::new("r/app:B", state, state == TaskState::Running)
        };
        let service = |tasks: Vec<Task>| Service {
            kind: Kind::Replicated { replicas: 2 },
            spec_image: "r/app:B".into(),
            update: None,
            updated_at: None,
            tasks,
        };
        let stack = Snapshot::of(
            "s",
            HashMap::from([
                (
                    "s_app".to_owned(),
                    service(vec![
                        task(TaskState::Running, Some("n2"), "t1"),
                        task(TaskState::Shutdown, Some("n3"), "t3"),
                        task(TaskState::Running, Some("n1"), "t2"),
                    ]),
                ),
                (
                    "s_migrate".to_owned(),
                    service(vec![
                        task(TaskState::Failed, Some("n1"), "t1"),
                        task(TaskState::Complete, Some("n2"), "t2"),
                        task(TaskState::Starting, None, "t3"),
                    ]),
                ),
                ("s_new".to_owned(), service(vec![])),
            ]),
        );
        let nodes = [node("n1", "manager", "ready", "active"), node("n2", "worker", "ready", "active")];
        let placed = task_nodes(&stack, &nodes);
        assert_eq!(placed["s_app"], ["n1", "n2"]);
        assert_eq!(placed["s_migrate"], ["n2"], "a task not placed yet is on no node");
        assert!(placed["s_new"].is_empty());
    }
}
