//! Deploy's checks before anything changes in the swarm: the engine answers
//! and is a swarm manager, some node carries each placement label, and every
//! image is in its registry (its digest resolved by the engine, with the
//! credential `docker stack deploy --with-registry-auth` will send).

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use bollard::Docker;
use bollard::models::{LocalNodeState, Node, SystemInfo};

use crate::docker;

/// Connect to the engine at DOCKER_HOST and check that it manages a swarm.
pub async fn swarm_manager(endpoint: &xtask::docker_endpoint::Endpoint) -> Result<Docker> {
    let docker = docker::connect(endpoint).await?;
    let at = format!("{} ({})", endpoint.host, endpoint.origin);
    let info = docker.info().await.with_context(|| format!("cannot read the state of the engine at {at}"))?;
    if let Some(problem) = swarm_problem(&info) {
        bail!("the engine at {at} {problem}");
    }
    Ok(docker)
}

/// Why the engine cannot take a stack deploy, if it cannot.
pub fn swarm_problem(info: &SystemInfo) -> Option<String> {
    let swarm = info.swarm.as_ref();
    let state = swarm.and_then(|swarm| swarm.local_node_state);
    let manager = swarm.and_then(|swarm| swarm.control_available).unwrap_or(false);
    match state {
        Some(LocalNodeState::ACTIVE) if manager => None,
        Some(LocalNodeState::ACTIVE) => {
            Some("is a swarm worker, not a manager: set DOCKER_HOST to a manager (e.g. ssh://user@manager)".into())
        }
        Some(LocalNodeState::LOCKED) => Some("is a locked swarm manager: unlock it with `docker swarm unlock`".into()),
        Some(LocalNodeState::PENDING) => Some("is still joining its swarm: try again in a moment".into()),
        Some(LocalNodeState::ERROR) => Some(format!(
            "has a swarm error ({}): see `docker info`",
            swarm.and_then(|swarm| swarm.error.clone()).unwrap_or_default()
        )),
        _ => {
            Some("is not part of a swarm: run `docker swarm init` there, or set DOCKER_HOST to a swarm manager".into())
        }
    }
}

/// Every `external: true` secret and config of the stack file must exist in
/// the swarm: `docker stack deploy` would fail on the first missing one, half
/// way. The error names each missing one with the command that creates it.
pub async fn externals_exist(docker: &Docker, wanted: &[crate::stackfile::External]) -> Result<()> {
    use crate::stackfile::External;
    if wanted.is_empty() {
        return Ok(());
    }
    let secrets = docker.list_secrets(None).await.context("cannot list the swarm's secrets")?;
    let configs = docker.list_configs(None).await.context("cannot list the swarm's configs")?;
    let exists = |external: &External| match external {
        External::Secret(name) => {
            secrets.iter().any(|secret| secret.spec.as_ref().and_then(|spec| spec.name.as_ref()) == Some(name))
        }
        External::Config(name) => {
            configs.iter().any(|config| config.spec.as_ref().and_then(|spec| spec.name.as_ref()) == Some(name))
        }
    };
    let missing: Vec<String> = wanted
        .iter()
        .filter(|external| !exists(external))
        .map(|external| match external {
            External::Secret(name) => {
                format!("secret {name} (create it: `cargo xtask secret create {name} < value-file`)")
            }
            External::Config(name) => format!("config {name} (create it: `docker config create {name} FILE`)"),
        })
        .collect();
    if !missing.is_empty() {
        bail!("the stack file uses external objects the swarm does not have: {}", missing.join("; "));
    }
    Ok(())
}

/// The label a swarm of one node lacks, which `deploy` puts on that node
/// itself: there is no choice of node to make.
pub struct SoleNode {
    pub id: String,
    pub name: String,
    pub version: i64,
    pub spec: bollard::models::NodeSpec,
    pub missing: Vec<(String, String)>,
}

/// On a swarm of exactly one node, the placement labels no node carries yet.
pub async fn unlabelled_sole_node(docker: &Docker, labels: &[(String, String)]) -> Result<Option<SoleNode>> {
    if labels.is_empty() {
        return Ok(None);
    }
    let nodes = docker.list_nodes(None).await.context("cannot list the swarm's nodes")?;
    let [node] = nodes.as_slice() else { return Ok(None) };
    let (name, present) = node_labels(node);
    let missing: Vec<(String, String)> =
        labels.iter().filter(|(key, value)| present.get(key.as_str()) != Some(value)).cloned().collect();
    if missing.is_empty() {
        return Ok(None);
    }
    let id = node.id.clone().context("the swarm's node has no id")?;
    let version = node.version.as_ref().and_then(|version| version.index).unwrap_or_default() as i64;
    Ok(Some(SoleNode { id, name, version, spec: node.spec.clone().unwrap_or_default(), missing }))
}

/// Put the missing labels on the sole node (its spec otherwise unchanged).
pub async fn label_sole_node(docker: &Docker, node: &SoleNode) -> Result<()> {
    let mut spec = node.spec.clone();
    let labels = spec.labels.get_or_insert_with(HashMap::new);
    for (key, value) in &node.missing {
        labels.insert(key.clone(), value.clone());
    }
    let options = bollard::query_parameters::UpdateNodeOptions { version: node.version };
    docker.update_node(&node.id, spec, options).await.with_context(|| format!("cannot label the node {}", node.name))
}

/// Some node must carry each `node.labels.KEY == VALUE` the stack file places
/// its services with. Returns warnings (e.g. more than one node matches).
pub async fn placement_labels(docker: &Docker, labels: &[(String, String)]) -> Result<Vec<String>> {
    if labels.is_empty() {
        return Ok(Vec::new());
    }
    let nodes = docker.list_nodes(None).await.context("cannot list the swarm's nodes")?;
    let nodes: Vec<(String, HashMap<String, String>)> = nodes.iter().map(node_labels).collect();
    let mut warnings = Vec::new();
    for (key, value) in labels {
        if let Some(warning) = label_problem(&nodes, key, value)? {
            warnings.push(warning);
        }
    }
    Ok(warnings)
}

fn node_labels(node: &Node) -> (String, HashMap<String, String>) {
    let spec = node.spec.as_ref();
    let hostname = node.description.as_ref().and_then(|description| description.hostname.clone());
    let name = spec.and_then(|spec| spec.name.clone()).or(hostname).or(node.id.clone()).unwrap_or_default();
    (name, spec.and_then(|spec| spec.labels.clone()).unwrap_or_default())
}

/// Error if no node has `key=value`; a warning if several do (each would get
/// its own local volume: SQLite's data would split, and PostgreSQL moved to
/// another labelled node would initialise an empty database there).
pub fn label_problem(nodes: &[(String, HashMap<String, String>)], key: &str, value: &str) -> Result<Option<String>> {
    let matching: Vec<&str> = nodes
        .iter()
        .filter(|(_, labels)| labels.get(key).is_some_and(|found| found == value))
        .map(|(name, _)| name.as_str())
        .collect();
    match matching.as_slice() {
        [] => {
            let example = nodes.first().map_or("<node>", |(name, _)| name.as_str());
            bail!(
                "no swarm node has the label {key}={value} that stack.yml places its services on: \
                 label the node that keeps the data with `docker node update --label-add {key}={value} {example}`"
            )
        }
        [_] => Ok(None),
        several => Ok(Some(format!(
            "{} nodes have the label {key}={value} ({}): each keeps its own volumes, so a service placed on it (the \
             database) may start on another node's empty volume; keep the label on the node that keeps the data only",
            several.len(),
            several.join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::SwarmInfo;

    fn info(state: LocalNodeState, manager: bool) -> SystemInfo {
        SystemInfo {
            swarm: Some(SwarmInfo {
                local_node_state: Some(state),
                control_available: Some(manager),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_an_active_manager_takes_a_deploy() {
        assert_eq!(swarm_problem(&info(LocalNodeState::ACTIVE, true)), None);
        assert!(swarm_problem(&info(LocalNodeState::ACTIVE, false)).unwrap().contains("not a manager"));
        assert!(swarm_problem(&info(LocalNodeState::INACTIVE, false)).unwrap().contains("docker swarm init"));
        assert!(swarm_problem(&SystemInfo::default()).unwrap().contains("not part of a swarm"));
    }

    #[test]
    fn a_placement_label_must_be_on_some_node() {
        let labelled = HashMap::from([("todobackend.data".to_owned(), "true".to_owned())]);
        let one = vec![("vm1".to_owned(), HashMap::new()), ("vm2".to_owned(), labelled.clone())];
        assert_eq!(label_problem(&one, "todobackend.data", "true").unwrap(), None);
        let err = label_problem(&one[..1], "todobackend.data", "true").unwrap_err().to_string();
        assert!(err.contains("docker node update --label-add todobackend.data=true vm1"), "{err}");
        let two = vec![("vm1".to_owned(), labelled.clone()), ("vm2".to_owned(), labelled)];
        assert!(label_problem(&two, "todobackend.data", "true").unwrap().unwrap().contains("vm1, vm2"));
    }
}
