//! Verification in the swarm: after the rollout converged, and before the
//! deploy is recorded as converged, the new image's own suite (delivery.yml's
//! `verify`, by default `todobackend acceptance --url http://{task}:8000`)
//! runs against each new app task, as a one-off swarm task on the stack's
//! network. "Converged" only says the healthcheck passed; this says the
//! version does what its users need (a version that serves `GET /` but
//! breaks `POST /todos` converges, and would become the rollback target).
//!
//! The app is reached by each task's address on the stack's network, as the
//! swarm API lists them: service VIPs do not route on engines without IPVS,
//! and a name that resolves to one task at random would leave the others
//! unchecked. Then the same suite runs through each task of the services
//! that publish the stack's ports (the edge on every node): the way clients
//! reach the new version works too.
//!
//! A failed verification is [`Failed`]: `deploy` then puts the previous
//! converged version back (the one `rollback` chooses) and exits 3.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{NetworkAttachmentConfig, TaskSpec, TaskSpecContainerSpec, TaskState};
use bollard::query_parameters::ListTasksOptions;
use xshell::cmd;
use xtask::settings::{VERIFY_TASK, Verify};

use super::job::Job;

/// How a release is verified.
#[derive(Debug, Clone)]
pub enum Verification {
    /// Run delivery.yml's suite (`deploy`).
    Run(Verify),
    /// `deploy --no-verify`: skipped, and the history says so.
    Skipped,
    /// Not verified, and nothing to record (`rollback`, and the way back
    /// after a failed verification: versions that converged before).
    NotApplicable,
}

impl Verification {
    /// What the history entry records about it, when it ran or was skipped.
    pub fn recorded(&self, passed: bool) -> Option<String> {
        match self {
            Verification::Run(_) if passed => Some("passed".to_owned()),
            Verification::Run(_) => Some("failed".to_owned()),
            Verification::Skipped => Some("skipped (--no-verify)".to_owned()),
            Verification::NotApplicable => None,
        }
    }
}

/// The suite failed against the new version: the failing checks' lines.
#[derive(Debug)]
pub struct Failed {
    pub version: String,
    pub lines: Vec<String>,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "version {} failed verification: {}", self.version, self.lines.join("; "))
    }
}

impl std::error::Error for Failed {}

/// The verification failure inside `err`, if that is what it is.
pub fn failure_of(err: &anyhow::Error) -> Option<&Failed> {
    err.chain().find_map(|cause| cause.downcast_ref::<Failed>())
}

/// Where the suite runs: the app service and the image it runs.
pub struct Target<'a> {
    pub stack: &'a str,
    /// `<stack>_app`.
    pub service: String,
    pub image: &'a str,
    pub version: &'a str,
    pub credentials: Option<DockerCredentials>,
    /// For `docker inspect` of a task: the engine API's task model in
    /// bollard lacks the task's network attachments.
    pub sh: &'a xshell::Shell,
}

/// The verify suite against each running task of `target.service` that runs
/// `target.image`, one after the other; [`Failed`] with the failing lines
/// of every task that failed.
pub async fn run(docker: &Docker, target: &Target<'_>, verify: &Verify) -> Result<()> {
    super::job::remove_left(docker, target.stack).await?;
    let (networks, addresses) = new_tasks(docker, target).await?;
    if addresses.is_empty() {
        bail!("no running task of {} runs {}: nothing to verify", target.service, target.image);
    }
    let entries = entry_tasks(docker, target, &networks).await?;
    let mut failing = Vec::new();
    let app_tasks = addresses.iter().map(|address| (format!("task {address} of {}", target.service), address));
    let through = entries.iter().map(|(service, address)| (format!("through {service}'s task {address}"), address));
    for (what, address) in app_tasks.chain(through) {
        let args: Vec<String> = verify.command.iter().map(|arg| arg.replace(VERIFY_TASK, address)).collect();
        xtask::output::say(&format!("    verifying {what}: `{}`", args.join(" ")));
        let (passed, lines) = run_job(docker, target, &networks, &args, verify.timeout).await?;
        for line in &lines {
            xtask::output::say(&format!("      {line}"));
        }
        if !passed {
            let failed: Vec<&String> = lines.iter().filter(|line| line.starts_with("FAILED")).collect();
            let shown: Vec<String> = if failed.is_empty() {
                // Not a check that failed (the suite could not run): its last words.
                lines.iter().rev().take(3).rev().cloned().collect()
            } else {
                failed.into_iter().cloned().collect()
            };
            failing.extend(shown.into_iter().map(|line| format!("{what}: {line}")));
        }
    }
    if failing.is_empty() {
        let through = if entries.is_empty() {
            String::new()
        } else {
            let services: std::collections::BTreeSet<&str> =
                entries.iter().map(|(service, _)| service.as_str()).collect();
            let services: Vec<&str> = services.into_iter().collect();
            format!(", and through {} task(s) of {}", entries.len(), services.join(", "))
        };
        xtask::output::say(&format!("    verified {} task(s) of {}{through}", addresses.len(), target.service));
        return Ok(());
    }
    Err(Failed { version: target.version.to_owned(), lines: failing }.into())
}

/// The app's networks (without its aliases, for the job's own attachment)
/// and the address on them of each running task that runs the new image.
async fn new_tasks(docker: &Docker, target: &Target<'_>) -> Result<(Vec<NetworkAttachmentConfig>, Vec<String>)> {
    let service = docker
        .inspect_service(&target.service, None)
        .await
        .with_context(|| format!("cannot inspect service {}", target.service))?;
    let networks: Vec<NetworkAttachmentConfig> = service
        .spec
        .and_then(|spec| spec.task_template)
        .and_then(|template| template.networks)
        .unwrap_or_default()
        .into_iter()
        .map(|network| NetworkAttachmentConfig { aliases: None, ..network })
        .collect();
    let network_ids: Vec<&str> = networks.iter().filter_map(|network| network.target.as_deref()).collect();
    let filters = HashMap::from([
        ("service".to_owned(), vec![target.service.clone()]),
        ("desired-state".to_owned(), vec!["running".to_owned()]),
    ]);
    let tasks = docker
        .list_tasks(Some(ListTasksOptions { filters: Some(filters) }))
        .await
        .with_context(|| format!("cannot list the tasks of {}", target.service))?;
    let mut addresses = Vec::new();
    for task in tasks {
        let running = task.status.as_ref().and_then(|status| status.state) == Some(TaskState::RUNNING);
        let image = task.spec.as_ref().and_then(|spec| spec.container_spec.as_ref()).and_then(|c| c.image.as_deref());
        if !running || !image.is_some_and(|image| image.starts_with(target.image)) {
            continue;
        }
        let Some(id) = task.id else { continue };
        if let Some(address) = address_on(target.sh, &id, &network_ids)? {
            addresses.push(address);
        }
    }
    addresses.sort();
    Ok((networks, addresses))
}

/// The way clients reach the app: the running tasks of the stack's other
/// long-running services that publish a port (the edge, on every node),
/// with their addresses on the app's network. The edge listens there on the
/// app's own port (edge/haproxy.cfg), so the same suite runs through it.
async fn entry_tasks(
    docker: &Docker,
    target: &Target<'_>,
    networks: &[NetworkAttachmentConfig],
) -> Result<Vec<(String, String)>> {
    let network_ids: Vec<&str> = networks.iter().filter_map(|network| network.target.as_deref()).collect();
    let mut entries = Vec::new();
    for service in crate::stack::services(docker, target.stack).await? {
        let Some(spec) = service.spec else { continue };
        let Some(name) = spec.name.clone() else { continue };
        let publishes = service
            .endpoint
            .and_then(|endpoint| endpoint.spec)
            .and_then(|spec| spec.ports)
            .is_some_and(|ports| !ports.is_empty());
        if name == target.service || !publishes || !crate::stack::is_long_running(&spec) {
            continue;
        }
        let filters = HashMap::from([
            ("service".to_owned(), vec![name.clone()]),
            ("desired-state".to_owned(), vec!["running".to_owned()]),
        ]);
        let tasks = docker
            .list_tasks(Some(ListTasksOptions { filters: Some(filters) }))
            .await
            .with_context(|| format!("cannot list the tasks of {name}"))?;
        let mut addresses = Vec::new();
        for task in tasks {
            let running = task.status.as_ref().and_then(|status| status.state) == Some(TaskState::RUNNING);
            let Some(id) = task.id.filter(|_| running) else { continue };
            if let Some(address) = address_on(target.sh, &id, &network_ids)? {
                addresses.push(address);
            }
        }
        addresses.sort();
        let short = name.strip_prefix(&format!("{}_", target.stack)).unwrap_or(&name).to_owned();
        entries.extend(addresses.into_iter().map(|address| (short.clone(), address)));
    }
    Ok(entries)
}

/// The task's address on the first of `networks` it is attached to.
fn address_on(sh: &xshell::Shell, task: &str, networks: &[&str]) -> Result<Option<String>> {
    let format = "{{range .NetworksAttachments}}{{.Network.ID}}{{range .Addresses}} {{.}}{{end}}\n{{end}}";
    let listed = cmd!(sh, "docker inspect --type task --format {format} {task}")
        .quiet()
        .read()
        .with_context(|| format!("cannot read the network addresses of task {task}"))?;
    Ok(first_address(&listed, networks))
}

/// From `docker inspect`'s lines `<network id> <address/prefix>...`.
fn first_address(listed: &str, networks: &[&str]) -> Option<String> {
    listed.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let network = words.next()?;
        let address = words.next()?;
        // "10.0.1.5/24" -> "10.0.1.5".
        networks.contains(&network).then(|| address.split('/').next().unwrap_or(address).to_owned())
    })
}

/// One run of the suite as a one-off swarm job (see `job.rs`): whether it
/// passed, and its output's lines.
async fn run_job(
    docker: &Docker,
    target: &Target<'_>,
    networks: &[NetworkAttachmentConfig],
    args: &[String],
    timeout: Duration,
) -> Result<(bool, Vec<String>)> {
    let task = TaskSpec {
        container_spec: Some(TaskSpecContainerSpec {
            image: Some(target.image.to_owned()),
            args: Some(args.to_vec()),
            ..Default::default()
        }),
        networks: Some(networks.to_vec()),
        ..Default::default()
    };
    let job = Job {
        stack: target.stack,
        kind: "verify_",
        task,
        credentials: target.credentials.clone(),
        what: args.join(" "),
        started_as: format!("the verify suite `{}` as a swarm job", args.join(" ")),
        // It writes only to the app.
        writes: false,
        timeout,
    };
    let ended = super::job::run(docker, job).await?;
    let mut lines = lines_of(&ended.stdout, &ended.stderr);
    match ended.state {
        None => lines.push(format!(
            "did not finish within {}s (verify.timeout in delivery.yml): `{}`",
            timeout.as_secs(),
            args.join(" ")
        )),
        Some(state) if !ended.completed() && lines.is_empty() => {
            lines.push(format!("the job's task ended {state:?}: {}", ended.message))
        }
        Some(_) => {}
    }
    Ok((ended.completed(), lines))
}

fn lines_of(stdout: &str, stderr: &str) -> Vec<String> {
    stdout
        .lines()
        .chain(stderr.lines())
        .map(str::trim_end)
        .filter(|line| !line.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verification_failure_is_found_in_the_error_chain() {
        let failed: anyhow::Error =
            Failed { version: "b1".into(), lines: vec!["task 10.0.0.3: FAILED  POST /todos answers 201".into()] }
                .into();
        let wrapped = failed.context("deploy");
        let found = failure_of(&wrapped).expect("the failure");
        assert_eq!(found.version, "b1");
        assert!(format!("{found}").contains("FAILED  POST /todos"), "{found}");
        assert!(failure_of(&anyhow::anyhow!("other")).is_none());
    }

    #[test]
    fn a_task_is_reached_on_the_stacks_network() {
        let listed = "ingress1 10.0.0.7/24\nnet2 10.0.1.5/24 10.0.1.6/24\n";
        assert_eq!(first_address(listed, &["net2"]).as_deref(), Some("10.0.1.5"));
        assert_eq!(first_address(listed, &["other"]), None);
    }

    #[test]
    fn the_history_records_a_skip_and_an_outcome() {
        assert_eq!(Verification::Skipped.recorded(true).as_deref(), Some("skipped (--no-verify)"));
        assert_eq!(Verification::Run(Verify::default()).recorded(false).as_deref(), Some("failed"));
        assert_eq!(Verification::NotApplicable.recorded(true), None);
    }
}
