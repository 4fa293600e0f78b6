//! The swarm's nodes, and on which of them the stack's tasks run: on a swarm
//! of several nodes the engine the xtask talks to sees only its own
//! containers, so where a task runs is read from the swarm (its task's node),
//! never from the containers this engine lists.

use std::collections::{BTreeSet, HashMap};

use anyhow::{Context, Result};
use bollard::Docker;
use bollard::models::{Node, NodeState, TaskState};
use bollard::query_parameters::ListTasksOptions;
use serde::Serialize;

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
pub async fn task_nodes(docker: &Docker, stack: &str, nodes: &[NodeStatus]) -> Result<HashMap<String, Vec<String>>> {
    let tasks = docker
        .list_tasks(Some(ListTasksOptions { filters: Some(crate::stack::label_filter(stack)) }))
        .await
        .with_context(|| format!("cannot list the tasks of stack {stack}"))?;
    let services: HashMap<String, String> = crate::stack::services(docker, stack)
        .await?
        .into_iter()
        .filter_map(|service| Some((service.id?, service.spec?.name?)))
        .collect();
    let name_of =
        |id: &str| nodes.iter().find(|node| node.id == id).map_or_else(|| id.to_owned(), |node| node.name.clone());
    let mut running: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut newest: HashMap<String, (String, String)> = HashMap::new();
    for task in &tasks {
        let (Some(service), Some(node)) =
            (task.service_id.as_ref().and_then(|id| services.get(id)), task.node_id.as_deref())
        else {
            continue;
        };
        let state = task.status.as_ref().and_then(|status| status.state);
        if state == Some(TaskState::RUNNING) {
            running.entry(service.clone()).or_default().insert(name_of(node));
        }
        let created = task.created_at.clone().unwrap_or_default();
        if newest.get(service).is_none_or(|(at, _)| *at < created) {
            newest.insert(service.clone(), (created, name_of(node)));
        }
    }
    Ok(services
        .values()
        .map(|service| {
            let nodes = match running.get(service) {
                Some(names) => names.iter().cloned().collect(),
                None => newest.get(service).map(|(_, node)| vec![node.clone()]).unwrap_or_default(),
            };
            (service.clone(), nodes)
        })
        .collect())
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
}
