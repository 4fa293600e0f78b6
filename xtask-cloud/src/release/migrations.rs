//! What a release does to the database, learnt before the swarm changes.
//!
//! The new image's own `todobackend migrations --json` is run against the
//! live database, as a one-off swarm job that reaches it the way the stack's
//! own `migrate` job does, as the swarm runs it now: its environment, secrets,
//! volumes, networks and placement. On the single-node stack that is the
//! `data` volume on the node the placement label names (only there is the
//! SQLite file); on the PostgreSQL stack it is `db` by name over the stack's
//! network, with the password secret, on any node. A job pulls the image with
//! the stack's registry credential, as the nodes will.
//!
//! A migration not marked `-- additive` is refused unless the user says so:
//! if the new app then failed, the swarm's rollback would bring back a version
//! that refuses the new schema, and the service would be down.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{Mount, MountType, ServiceSpec, TaskSpec, TaskSpecContainerSpec, TaskSpecPlacement};
use serde::Deserialize;

use super::job::{self, Job};

/// `todobackend migrations --json`: the database as one binary sees it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Report {
    /// `present` or `absent`.
    pub database: String,
    #[serde(default)]
    pub migrations: Vec<Known>,
    #[serde(default)]
    pub unknown_applied: Vec<Unknown>,
    pub can_serve: bool,
    #[serde(default)]
    pub problem: Option<String>,
}

/// A migration the binary has, applied to the database or not.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Known {
    pub name: String,
    pub additive: bool,
    pub applied: bool,
}

/// A migration applied to the database that the binary does not know.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Unknown {
    pub name: String,
    pub additive: bool,
}

impl Report {
    pub fn parse(json: &str) -> Result<Report> {
        let line = json.lines().rev().find(|line| line.trim_start().starts_with('{')).unwrap_or(json);
        serde_json::from_str(line).with_context(|| format!("`todobackend migrations --json` answered {line:?}"))
    }

    fn pending(&self) -> impl Iterator<Item = &Known> {
        self.migrations.iter().filter(|migration| !migration.applied)
    }

    /// The first applied migration this binary does not know and that is not
    /// additive: why an older version cannot serve the database.
    pub fn first_breaking_unknown(&self) -> Option<&str> {
        self.unknown_applied.iter().find(|migration| !migration.additive).map(|migration| migration.name.as_str())
    }
}

/// What deploying a version would do to the database.
#[derive(Debug, PartialEq)]
pub enum Effect {
    /// No database yet (a first deploy).
    NoDatabase,
    /// No migration to apply.
    Nothing,
    /// Only additive migrations: the running version can keep serving.
    Additive(Vec<String>),
    /// At least one migration that the running version cannot live with.
    Breaking(Vec<String>),
    /// The version cannot serve this database at all (an older version after
    /// a breaking migration).
    CannotServe { problem: String, migration: Option<String> },
}

pub fn effect(report: &Report) -> Effect {
    if report.database != "present" {
        return Effect::NoDatabase;
    }
    if !report.can_serve {
        return Effect::CannotServe {
            problem: report.problem.clone().unwrap_or_else(|| "it refuses the database's schema".to_owned()),
            migration: report.first_breaking_unknown().map(str::to_owned),
        };
    }
    let pending: Vec<&Known> = report.pending().collect();
    if pending.is_empty() {
        return Effect::Nothing;
    }
    let names = |only_breaking: bool| {
        pending.iter().filter(|m| !only_breaking || !m.additive).map(|m| m.name.clone()).collect::<Vec<_>>()
    };
    let breaking = names(true);
    if breaking.is_empty() { Effect::Additive(names(false)) } else { Effect::Breaking(breaking) }
}

/// Deploy's verdict on `effect`: a line to print, or the refusal.
pub fn verdict(version: &str, effect: &Effect, allow_breaking: bool) -> Result<String> {
    match effect {
        Effect::NoDatabase => Ok("no database yet: no migration to check".to_owned()),
        Effect::Nothing => Ok(format!("version {version} applies no migration")),
        Effect::Additive(names) => Ok(format!(
            "version {version} applies {}, all additive: if it fails, the version running now can keep serving",
            names.join(", ")
        )),
        Effect::Breaking(names) if allow_breaking => Ok(format!(
            "version {version} applies {}, which is not additive; deploying anyway (--allow-breaking-migration): \
             if it fails, go back with `cargo xtask rollback --restore-data`",
            names.join(", ")
        )),
        Effect::Breaking(names) => bail!(
            "version {version} would apply {}, which is not additive: if it then failed, the swarm's rollback could \
             not restore service (the version running now refuses the new schema); pass --allow-breaking-migration \
             to deploy anyway, and go back with `cargo xtask rollback --restore-data` if you must",
            names.join(", ")
        ),
        Effect::CannotServe { problem, migration } => bail!(
            "version {version} cannot serve the current database ({problem}): {}",
            match migration {
                Some(name) => format!(
                    "go back to it with `cargo xtask rollback --to {version} --restore-data`, which restores the backup taken before {name}"
                ),
                None => "deploy a newer version".to_owned(),
            }
        ),
    }
}

/// Where and how a one-off job reaches the stack's data.
pub struct DataNode<'a> {
    pub stack: &'a str,
    /// The stack file's placement constraints of its release job, for a
    /// stack whose running services show no `migrate` to copy the way from
    /// (then the job mounts the stack's `data` volume, as stacks did before).
    pub constraints: Vec<String>,
    /// The registry credential `docker stack deploy --with-registry-auth` sends.
    pub credentials: Option<DockerCredentials>,
}

/// How long a one-off job may take, pull included.
const JOB_TIMEOUT: Duration = Duration::from_secs(180);

/// Run `image` with `args` once, reaching the database as the stack's
/// `migrate` does (see [`way_to_the_database`]), as a one-off swarm service;
/// its stdout. Its stderr is shown as it is (the service says there what it
/// does). The service is removed afterwards (see `job.rs`); one that a
/// killed run left behind is removed before.
pub async fn run_on_data_node(docker: &Docker, node: &DataNode<'_>, image: &str, args: &[&str]) -> Result<String> {
    job::remove_left(docker, node.stack).await?;
    let way = way_to_the_database(docker, node).await?;
    let task = TaskSpec {
        container_spec: Some(TaskSpecContainerSpec {
            image: Some(image.to_owned()),
            args: Some(args.iter().map(|arg| (*arg).to_owned()).collect()),
            env: way.env,
            mounts: way.mounts,
            secrets: way.secrets,
            ..Default::default()
        }),
        networks: way.networks,
        placement: Some(way.placement),
        ..Default::default()
    };
    let job = Job {
        stack: node.stack,
        kind: "",
        task,
        credentials: node.credentials.clone(),
        what: args.join(" "),
        started_as: format!("`todobackend {}` as a swarm job on the data node", args.join(" ")),
        writes: args.first() != Some(&"migrations"),
        timeout: JOB_TIMEOUT,
    };
    let ended = job::run(docker, job).await?;
    if ended.state.is_none() {
        bail!(
            "`todobackend {}` did not finish on the data node within {}s: see `docker service ps {}`",
            args.join(" "),
            JOB_TIMEOUT.as_secs(),
            ended.id
        );
    }
    for line in ended.stderr.lines().filter(|line| !line.trim().is_empty()) {
        xtask::output::say(&format!("    {line}"));
    }
    if !ended.completed() {
        let reason = ended.stderr.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or(&ended.message);
        bail!("`todobackend {}` failed on the data node: {}", args.join(" "), reason.trim());
    }
    Ok(ended.stdout)
}

/// What a job copies from the stack's `migrate` to reach the database.
#[derive(Debug, Default, PartialEq)]
struct Way {
    env: Option<Vec<String>>,
    mounts: Option<Vec<Mount>>,
    secrets: Option<Vec<bollard::models::TaskSpecContainerSpecSecrets>>,
    networks: Option<Vec<bollard::models::NetworkAttachmentConfig>>,
    placement: TaskSpecPlacement,
}

/// The way the stack's own `migrate` job reaches the database, as the swarm
/// runs it now (the live database is the one the running stack uses, also
/// when the new stack file points elsewhere). A stack without one (deployed
/// from another file): the `data` volume on the stack file's data node.
async fn way_to_the_database(docker: &Docker, node: &DataNode<'_>) -> Result<Way> {
    let services = crate::stack::services(docker, node.stack).await?;
    let specs: Vec<&ServiceSpec> = services.iter().filter_map(|service| service.spec.as_ref()).collect();
    Ok(way_from(node, &specs))
}

fn way_from(node: &DataNode<'_>, specs: &[&ServiceSpec]) -> Way {
    let runs_migrate = |spec: &&&ServiceSpec| {
        let container = spec.task_template.as_ref().and_then(|template| template.container_spec.as_ref());
        let args = container.and_then(|container| container.args.as_ref());
        crate::stack::is_one_shot(spec) && args.and_then(|args| args.first()).is_some_and(|arg| arg == "migrate")
    };
    let Some(migrate) = specs.iter().find(runs_migrate) else {
        return Way {
            mounts: Some(vec![Mount {
                target: Some("/data".to_owned()),
                source: Some(format!("{}_data", node.stack)),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            }]),
            placement: TaskSpecPlacement { constraints: Some(node.constraints.clone()), ..Default::default() },
            ..Default::default()
        };
    };
    let template = migrate.task_template.clone().unwrap_or_default();
    let container = template.container_spec.unwrap_or_default();
    // Its own name on the network, not migrate's.
    let networks = template.networks.map(|networks| {
        networks
            .into_iter()
            .map(|network| bollard::models::NetworkAttachmentConfig { aliases: None, ..network })
            .collect()
    });
    Way {
        env: container.env,
        mounts: container.mounts,
        secrets: container.secrets,
        networks,
        placement: template.placement.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        ServiceSpecMode, ServiceSpecModeReplicated, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
    };

    fn report(json: &str) -> Report {
        Report::parse(json).unwrap()
    }

    const APPLIED: &str = r#"{"version":1,"name":"0001_create_todos","additive":false,"applied":true}"#;

    #[test]
    fn pending_migrations_are_judged_by_their_flag() {
        let absent = report(
            r#"{"database":"absent","schema_version":0,"migrations":[],"unknown_applied":[],"can_serve":true,"problem":null}"#,
        );
        assert_eq!(effect(&absent), Effect::NoDatabase);
        let current = report(&format!(r#"{{"database":"present","migrations":[{APPLIED}],"can_serve":true}}"#));
        assert_eq!(effect(&current), Effect::Nothing);
        let additive = report(&format!(
            r#"{{"database":"present","migrations":[{APPLIED},{{"version":2,"name":"0002_note","additive":true,"applied":false}}],"can_serve":true}}"#
        ));
        assert_eq!(effect(&additive), Effect::Additive(vec!["0002_note".into()]));
        let breaking = report(&format!(
            r#"{{"database":"present","migrations":[{APPLIED},{{"version":2,"name":"0002_note","additive":true,"applied":false}},{{"version":3,"name":"0003_drop","additive":false,"applied":false}}],"can_serve":true}}"#
        ));
        assert_eq!(effect(&breaking), Effect::Breaking(vec!["0003_drop".into()]));
    }

    #[test]
    fn an_older_binary_names_the_migration_it_cannot_live_with() {
        let older = report(&format!(
            r#"{{"database":"present","migrations":[{APPLIED}],"unknown_applied":[{{"version":2,"name":"0002_note","additive":true}},{{"version":3,"name":"0003_drop","additive":false}}],"can_serve":false,"problem":"0003_drop is not additive"}}"#
        ));
        assert_eq!(
            effect(&older),
            Effect::CannotServe { problem: "0003_drop is not additive".into(), migration: Some("0003_drop".into()) }
        );
    }

    #[test]
    fn a_breaking_migration_is_refused_unless_allowed_and_every_verdict_is_one_line() {
        let breaking = Effect::Breaking(vec!["0003_drop".into()]);
        let err = verdict("C", &breaking, false).unwrap_err().to_string();
        assert!(
            err.contains("0003_drop")
                && err.contains("--allow-breaking-migration")
                && err.contains("rollback --restore-data"),
            "{err}"
        );
        assert!(verdict("C", &breaking, true).unwrap().contains("--allow-breaking-migration"));
        assert!(verdict("B", &Effect::Additive(vec!["0002_note".into()]), false).unwrap().contains("additive"));
        let cannot = Effect::CannotServe { problem: "x".into(), migration: Some("0003_drop".into()) };
        let err = verdict("B", &cannot, true).unwrap_err().to_string();
        assert!(err.contains("--restore-data") && err.contains("0003_drop"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    #[test]
    fn a_job_reaches_the_database_as_the_stacks_migrate_does() {
        use bollard::models::{NetworkAttachmentConfig, TaskSpecContainerSpecSecrets};
        let node = DataNode {
            stack: "s",
            constraints: vec!["node.labels.todobackend.data == true".into()],
            credentials: None,
        };
        let service = |args: &[&str], condition, env: &[&str]| ServiceSpec {
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    args: Some(args.iter().map(|arg| arg.to_string()).collect()),
                    env: Some(env.iter().map(|var| var.to_string()).collect()),
                    secrets: Some(vec![TaskSpecContainerSpecSecrets {
                        secret_name: Some("todobackend_db_password".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                networks: Some(vec![NetworkAttachmentConfig {
                    target: Some("net-id".into()),
                    aliases: Some(vec!["migrate".into()]),
                    ..Default::default()
                }]),
                restart_policy: Some(TaskSpecRestartPolicy { condition: Some(condition), ..Default::default() }),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let app = service(&["serve"], TaskSpecRestartPolicyConditionEnum::ANY, &["APP=1"]);
        let migrate = service(&["migrate"], TaskSpecRestartPolicyConditionEnum::ON_FAILURE, &["URL=postgres://db"]);
        let way = way_from(&node, &[&app, &migrate]);
        assert_eq!(way.env, Some(vec!["URL=postgres://db".to_owned()]));
        assert_eq!(way.secrets.unwrap()[0].secret_name.as_deref(), Some("todobackend_db_password"));
        let networks = way.networks.unwrap();
        assert_eq!((networks[0].target.as_deref(), networks[0].aliases.as_ref()), (Some("net-id"), None));
        assert_eq!(way.mounts, None, "no data volume on the PostgreSQL stack");
        assert_eq!(way.placement, TaskSpecPlacement::default(), "the PostgreSQL stack's migrate is not pinned");
        // No migrate job on the stack: the data volume on the data node.
        let way = way_from(&node, &[&app]);
        assert_eq!(way.mounts.unwrap()[0].source.as_deref(), Some("s_data"));
        assert_eq!(way.placement.constraints, Some(node.constraints.clone()));
        assert_eq!((way.env, way.networks), (None, None));
    }

    #[test]
    fn the_report_is_found_after_other_output() {
        let parsed = Report::parse("some line\n{\"database\":\"absent\",\"can_serve\":true}\n").unwrap();
        assert_eq!(parsed.database, "absent");
        assert!(Report::parse("not json").is_err());
    }
}
