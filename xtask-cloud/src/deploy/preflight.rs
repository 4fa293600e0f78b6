//! Deploy's checks before anything changes in the swarm: the engine answers
//! and is a swarm manager, some node carries each placement label, and every
//! image is in its registry (its digest resolved by the engine, with the
//! credential `docker stack deploy --with-registry-auth` will send).

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{LocalNodeState, Node, SystemInfo};

use crate::docker;

/// Connect to the engine at DOCKER_HOST and check that it manages a swarm.
pub async fn swarm_manager() -> Result<Docker> {
    let docker = docker::connect().await?;
    let info = docker.info().await.with_context(|| format!("cannot read the state of the engine at {}", docker::host()))?;
    if let Some(problem) = swarm_problem(&info) {
        bail!("the engine at {} {problem}", docker::host());
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
        Some(LocalNodeState::ACTIVE) => Some(
            "is a swarm worker, not a manager: set DOCKER_HOST to a manager (e.g. ssh://user@manager)".into(),
        ),
        Some(LocalNodeState::LOCKED) => Some("is a locked swarm manager: unlock it with `docker swarm unlock`".into()),
        Some(LocalNodeState::PENDING) => Some("is still joining its swarm: try again in a moment".into()),
        Some(LocalNodeState::ERROR) => Some(format!(
            "has a swarm error ({}): see `docker info`",
            swarm.and_then(|swarm| swarm.error.clone()).unwrap_or_default()
        )),
        _ => Some(
            "is not part of a swarm: run `docker swarm init` there, or set DOCKER_HOST to a swarm manager".into(),
        ),
    }
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
/// its own local volume, and the SQLite data would split).
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
            "{} nodes have the label {key}={value} ({}): each keeps its own volumes, so the services may not share their data",
            several.len(),
            several.join(", ")
        ))),
    }
}

/// The digest of `image` in its registry, asked through the engine (the
/// engine reaches the registry as the nodes will when they pull).
pub async fn image_digest(docker: &Docker, image: &str, credentials: Option<DockerCredentials>) -> Result<String> {
    let logged_in = credentials.is_some();
    let inspect = docker.inspect_registry_image(image, credentials).await.map_err(|err| {
        let why = match &err {
            bollard::errors::Error::DockerResponseServerError { message, .. } => message.trim().to_owned(),
            other => other.to_string(),
        };
        let hint = if logged_in {
            "push it first (`cargo xtask publish`)"
        } else {
            "log in to its registry (`cargo xtask login`) and push it (`cargo xtask publish`)"
        };
        anyhow::anyhow!("image {image} is not in its registry, or cannot be read: {why}: {hint}")
    })?;
    inspect.descriptor.digest.with_context(|| format!("the registry gave no digest for {image}"))
}

/// Where a registry's credential is kept in the Docker config.
#[derive(Debug, PartialEq)]
pub enum Stored {
    /// `auths.<host>.auth`: base64 of `user:password`, or an identity token.
    Inline(DockerCredentials),
    /// A credential helper, `docker-credential-<name>`.
    Helper(String),
    None,
}

/// Find `registry`'s credential in the text of a config.json (pure).
pub fn find_credential(config: &str, registry: &str) -> Result<Stored> {
    let config: serde_json::Value = serde_json::from_str(config).context("the Docker config.json is not valid JSON")?;
    let same_host = |key: &str| xtask::settings::strip_scheme(key).split('/').next() == Some(registry);
    if let Some(helper) = config.get("credHelpers").and_then(|helpers| helpers.as_object()).and_then(|helpers| {
        helpers.iter().find(|(key, _)| same_host(key)).and_then(|(_, name)| name.as_str().map(str::to_owned))
    }) {
        return Ok(Stored::Helper(helper));
    }
    let entry = config
        .get("auths")
        .and_then(|auths| auths.as_object())
        .and_then(|auths| auths.iter().find(|(key, _)| same_host(key)).map(|(_, entry)| entry));
    if let Some(entry) = entry {
        if let Some(token) = entry.get("identitytoken").and_then(|token| token.as_str()) {
            return Ok(Stored::Inline(DockerCredentials {
                identitytoken: Some(token.to_owned()),
                serveraddress: Some(registry.to_owned()),
                ..Default::default()
            }));
        }
        if let Some(auth) = entry.get("auth").and_then(|auth| auth.as_str()).filter(|auth| !auth.is_empty()) {
            let decoded = aws_smithy_types::base64::decode(auth)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .with_context(|| format!("the Docker config's credential for {registry} is not base64 of user:password"))?;
            let (username, password) = decoded
                .split_once(':')
                .with_context(|| format!("the Docker config's credential for {registry} is not user:password"))?;
            return Ok(Stored::Inline(DockerCredentials {
                username: Some(username.to_owned()),
                password: Some(password.to_owned()),
                serveraddress: Some(registry.to_owned()),
                ..Default::default()
            }));
        }
    }
    match config.get("credsStore").and_then(|store| store.as_str()).filter(|store| !store.is_empty()) {
        Some(store) => Ok(Stored::Helper(store.to_owned())),
        None => Ok(Stored::None),
    }
}

/// The credential Docker keeps for `registry` (what `docker login` stored),
/// or `None` when it has none.
pub fn credential(sh: &xshell::Shell, registry: &str) -> Result<Option<DockerCredentials>> {
    let Some(path) = crate::ecr::docker_config_path() else { return Ok(None) };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("cannot read the Docker config {}", path.display())),
    };
    match find_credential(&text, registry).with_context(|| format!("in {}", path.display()))? {
        Stored::Inline(credentials) => Ok(Some(credentials)),
        Stored::None => Ok(None),
        Stored::Helper(name) => from_helper(sh, &name, registry),
    }
}

/// Ask `docker-credential-<name>`: the registry on stdin, JSON on stdout. The
/// secret is read, never echoed.
fn from_helper(sh: &xshell::Shell, name: &str, registry: &str) -> Result<Option<DockerCredentials>> {
    let program = format!("docker-credential-{name}");
    let output = xshell::cmd!(sh, "{program} get").stdin(registry).quiet().ignore_status().output();
    let output = output.with_context(|| format!("cannot run the Docker credential helper {program}"))?;
    if !output.status.success() {
        // Helpers answer "credentials not found" with a failure: not logged in.
        return Ok(None);
    }
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("the Docker credential helper {program} gave no JSON"))?;
    let field = |key: &str| answer.get(key).and_then(|value| value.as_str()).map(str::to_owned);
    let (Some(username), Some(secret)) = (field("Username"), field("Secret")) else {
        return Ok(None);
    };
    let mut credentials = DockerCredentials { serveraddress: Some(registry.to_owned()), ..Default::default() };
    if username == "<token>" {
        credentials.identitytoken = Some(secret);
    } else {
        credentials.username = Some(username);
        credentials.password = Some(secret);
    }
    Ok(Some(credentials))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::SwarmInfo;

    fn info(state: LocalNodeState, manager: bool) -> SystemInfo {
        SystemInfo {
            swarm: Some(SwarmInfo { local_node_state: Some(state), control_available: Some(manager), ..Default::default() }),
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

    #[test]
    fn credentials_are_found_inline_by_host_or_via_a_helper() {
        // base64("AWS:pw")
        let config = r#"{"auths": {"https://127.0.0.1:5000": {"auth": "QVdTOnB3"}, "other:1": {}}, "credsStore": "desktop"}"#;
        let Stored::Inline(found) = find_credential(config, "127.0.0.1:5000").unwrap() else { panic!("inline") };
        assert_eq!((found.username.as_deref(), found.password.as_deref()), (Some("AWS"), Some("pw")));
        assert_eq!(find_credential(config, "other:1").unwrap(), Stored::Helper("desktop".into()));
        let helpers = r#"{"auths": {}, "credHelpers": {"1.dkr.ecr.us-west-2.amazonaws.com": "ecr-login"}}"#;
        assert_eq!(
            find_credential(helpers, "1.dkr.ecr.us-west-2.amazonaws.com").unwrap(),
            Stored::Helper("ecr-login".into())
        );
        assert_eq!(find_credential(r#"{"auths": {}}"#, "r:1").unwrap(), Stored::None);
        assert!(find_credential("{", "r:1").is_err());
        assert!(find_credential(r#"{"auths": {"r:1": {"auth": "bm9jb2xvbg=="}}}"#, "r:1").is_err());
    }
}
