//! The stack file as deploy, rollback and plan read it, before touching the
//! swarm: the YAML parses, every variable is set or has a default, and each
//! service names an image (after interpolation) and its placement
//! constraints.

mod interpolate;
mod schema;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_yaml::Value;

use crate::image_ref::ImageRef;
use interpolate::Problem;

/// The stack file as a run reads it, once: where it is, how messages name
/// it (relative to the project), and its text.
pub struct Source {
    pub path: PathBuf,
    pub shown: String,
    pub text: String,
}

impl Source {
    /// The stack file of the settings, read, with the digests of its
    /// configs' and secrets' files exported to the run's shell (see
    /// [`file_digests`]) so that `docker stack deploy`, the checks and the
    /// plan all see the names the swarm objects will have.
    pub fn read(ctx: &xtask::ctx::Ctx) -> Result<Source> {
        let settings = &ctx.settings;
        let path = settings.stack_file.clone();
        let shown = path.strip_prefix(&settings.root).unwrap_or(&path).display().to_string();
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read the stack file {}", path.display()))?;
        let source = Source { path, shown, text };
        let sh = ctx.sh();
        let lookup = |name: &str| sh.var(name).ok();
        let base_dir = source.path.parent().unwrap_or(&settings.root);
        for (name, digest) in file_digests(&source.shown, &source.text, base_dir, &lookup)? {
            sh.set_var(name, digest);
        }
        Ok(source)
    }
}

/// For each config and secret of the stack file read from a file (`file:`),
/// the variable `<KEY>_DIGEST` (`edge_config` → `EDGE_CONFIG_DIGEST`) and
/// the first 8 hex digits of the SHA-256 of the file's content. A swarm
/// config or secret cannot change: the stack file names each after its
/// digest (`name: ..._${EDGE_CONFIG_DIGEST:-0}`), so a changed file is a new
/// object, and the services that mount it roll (`docker stack deploy` would
/// otherwise refuse the change: "only updates to Labels are allowed").
pub fn file_digests(
    path: &str,
    text: &str,
    base_dir: &std::path::Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>> {
    use sha2::{Digest, Sha256};
    let raw: Value = serde_yaml::from_str(text).map_err(|err| anyhow::anyhow!("{path} is not valid YAML: {err}"))?;
    let mut digests = Vec::new();
    for section in ["configs", "secrets"] {
        let Some(objects) = raw.get(section).and_then(Value::as_mapping) else { continue };
        for (key, object) in objects {
            let (Some(key), Some(file)) = (key.as_str(), object.get("file").and_then(Value::as_str)) else { continue };
            let file = interpolate::substitute(file, 0, lookup)
                .map_err(|problem| anyhow::anyhow!("{path}: {section}.{key}.file: {problem}"))?;
            let full = base_dir.join(&file);
            let content = std::fs::read(&full).with_context(|| {
                format!(
                    "cannot read {}, the file of {section}.{key} in {path} (a path relative to the stack file)",
                    full.display()
                )
            })?;
            let hash = Sha256::digest(&content);
            let hex: String = hash.iter().take(4).map(|byte| format!("{byte:02x}")).collect();
            digests.push((digest_variable(key), hex));
        }
    }
    Ok(digests)
}

/// `edge_config` → `EDGE_CONFIG_DIGEST`.
fn digest_variable(key: &str) -> String {
    let upper: String =
        key.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("{upper}_DIGEST")
}

/// One service of the stack file, interpolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDef {
    /// The name in the file (`app`); the swarm calls it `<stack>_app`.
    pub name: String,
    pub image: String,
    pub constraints: Vec<String>,
    /// Restarted only on failure (or never): a job that runs to completion,
    /// such as `migrate`, rather than a long-running replicated service.
    pub one_shot: bool,
    /// The services it names in `depends_on`, which the swarm ignores and
    /// deploy honours for the jobs: `migrate` needs `db` running first.
    pub depends_on: Vec<String>,
    /// `replicas: 0` (the PostgreSQL stack's `db` with `DB_REPLICAS=0`, when
    /// the database is elsewhere): its placement needs no node.
    pub scaled_to_zero: bool,
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    services: BTreeMap<String, Service>,
    #[serde(default)]
    secrets: BTreeMap<String, Object>,
    #[serde(default)]
    configs: BTreeMap<String, Object>,
}

/// A top-level secret or config of the stack file.
#[derive(Deserialize, Default)]
struct Object {
    #[serde(default)]
    external: bool,
    /// The name in the swarm, when it differs from the key.
    name: Option<String>,
}

/// A secret or config the stack file expects the swarm to have already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum External {
    Secret(String),
    Config(String),
}

#[derive(Deserialize)]
struct Service {
    image: Option<String>,
    #[serde(default)]
    deploy: Deploy,
    #[serde(default)]
    depends_on: DependsOn,
}

/// `depends_on: [db]`, or the long form `depends_on: {db: {condition: ...}}`
/// (the swarm heeds no condition; deploy waits until the service converged).
#[derive(Deserialize)]
#[serde(untagged)]
enum DependsOn {
    List(Vec<String>),
    Map(BTreeMap<String, Value>),
}

impl Default for DependsOn {
    fn default() -> DependsOn {
        DependsOn::List(Vec::new())
    }
}

impl DependsOn {
    fn names(self) -> Vec<String> {
        match self {
            DependsOn::List(names) => names,
            DependsOn::Map(map) => map.into_keys().collect(),
        }
    }
}

#[derive(Deserialize, Default)]
struct Deploy {
    /// An integer, or a string once interpolated (`${DB_REPLICAS:-1}`).
    replicas: Option<Value>,
    #[serde(default)]
    placement: Placement,
    #[serde(default)]
    restart_policy: RestartPolicy,
}

#[derive(Deserialize, Default)]
struct RestartPolicy {
    condition: Option<String>,
}

#[derive(Deserialize, Default)]
struct Placement {
    #[serde(default)]
    constraints: Vec<String>,
}

/// Parse and check `text` (the file at `path`, named in errors). `lookup`
/// gives the variables the docker CLI will see.
/// The secrets and configs marked `external: true`, by their swarm names.
pub fn externals(path: &str, text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Vec<External>> {
    let file = parse(path, text, lookup)?;
    let named = |(key, object): (String, Object)| object.external.then(|| object.name.unwrap_or(key));
    let secrets = file.secrets.into_iter().filter_map(named).map(External::Secret);
    let configs = file.configs.into_iter().filter_map(named).map(External::Config);
    Ok(secrets.chain(configs).collect())
}

fn parse(path: &str, text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<File> {
    let value = interpolated(path, text, lookup)?;
    serde_yaml::from_value(value).map_err(|err| anyhow::anyhow!("{path} is not a stack file: {err}"))
}

/// The whole stack file, checked and interpolated as `docker stack deploy`
/// will read it: what deploy loads its services from, and what `plan`
/// compares with the swarm (one reading for both).
pub fn interpolated(path: &str, text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Value> {
    let raw: Value = serde_yaml::from_str(text).map_err(|err| anyhow::anyhow!("{path} is not valid YAML: {err}"))?;
    let problems = interpolate::check(text, lookup);
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(Problem::to_string).collect();
        bail!("{path}: {}", list.join("; "));
    }
    let value = substitute_values(raw, lookup).map_err(|problem| anyhow::anyhow!("{path}: {problem}"))?;
    let violations = schema::check(&value);
    if !violations.is_empty() {
        let list: Vec<String> = violations
            .iter()
            .map(|violation| {
                let line =
                    schema::line_of(text, &violation.path).map(|line| format!(" (line {line})")).unwrap_or_default();
                format!("{}{line} {}", violation.path.join("."), violation.problem)
            })
            .collect();
        bail!("{path} would be refused or ignored by `docker stack deploy`: {}", list.join("; "));
    }
    Ok(value)
}

pub fn load(path: &str, text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Vec<ServiceDef>> {
    let file = parse(path, text, lookup)?;
    if file.services.is_empty() {
        bail!("{path} defines no services");
    }
    let mut services = Vec::new();
    for (name, service) in file.services {
        let image = service.image.filter(|image| !image.trim().is_empty());
        let Some(image) = image else {
            bail!("{path}: service {name} has no image: a stack deploys images, it does not build them");
        };
        check_image_reference(&image)
            .map_err(|why| anyhow::anyhow!("{path}: service {name}: image {image:?} {why}"))?;
        let one_shot = matches!(service.deploy.restart_policy.condition.as_deref(), Some("on-failure" | "none"));
        let depends_on = service.depends_on.names();
        let replicas = service.deploy.replicas.as_ref();
        let scaled_to_zero = replicas.is_some_and(|replicas| {
            replicas.as_u64() == Some(0) || replicas.as_str().is_some_and(|text| text.trim() == "0")
        });
        let constraints = service.deploy.placement.constraints;
        services.push(ServiceDef { name, image, constraints, one_shot, depends_on, scaled_to_zero });
    }
    for service in &services {
        if let Some(missing) = service.depends_on.iter().find(|name| !services.iter().any(|s| &&s.name == name)) {
            bail!("{path}: service {} depends on {missing}, which the file does not define", service.name);
        }
    }
    Ok(services)
}

/// The stack file with only the services named in `keep`, everything else
/// (networks, volumes, variables) as written: what `deploy` applies first so
/// that the jobs (migrations) finish before the app is updated.
pub fn only_services(path: &str, text: &str, keep: &[&str]) -> Result<String> {
    let mut raw: Value =
        serde_yaml::from_str(text).map_err(|err| anyhow::anyhow!("{path} is not valid YAML: {err}"))?;
    let services = raw
        .get_mut("services")
        .and_then(Value::as_mapping_mut)
        .ok_or_else(|| anyhow::anyhow!("{path} defines no services"))?;
    services.retain(|name, _| name.as_str().is_some_and(|name| keep.contains(&name)));
    serde_yaml::to_string(&raw).map_err(|err| anyhow::anyhow!("cannot write the jobs of {path}: {err}"))
}

/// Interpolate every string value (not keys), as the CLI does.
fn substitute_values(value: Value, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Value, Problem> {
    Ok(match value {
        Value::String(text) => Value::String(interpolate::substitute(&text, 0, lookup)?),
        Value::Sequence(items) => {
            Value::Sequence(items.into_iter().map(|item| substitute_values(item, lookup)).collect::<Result<_, _>>()?)
        }
        Value::Mapping(map) => {
            let mut out = serde_yaml::Mapping::new();
            for (key, item) in map {
                out.insert(key, substitute_values(item, lookup)?);
            }
            Value::Mapping(out)
        }
        Value::Tagged(tagged) => {
            let tagged = *tagged;
            Value::Tagged(Box::new(serde_yaml::value::TaggedValue {
                tag: tagged.tag,
                value: substitute_values(tagged.value, lookup)?,
            }))
        }
        other => other,
    })
}

/// What `docker stack deploy` would turn into a broken reference: an empty
/// part from an empty variable (`/repo:`, `reg//repo`), spaces, upper case.
fn check_image_reference(image: &str) -> std::result::Result<(), &'static str> {
    let parsed = ImageRef::parse(image);
    if image.contains(char::is_whitespace) {
        return Err("contains whitespace");
    }
    if parsed.name.is_empty() || parsed.name.split('/').any(str::is_empty) {
        return Err("has an empty part (is a variable empty?)");
    }
    if parsed.tag.as_deref() == Some("") {
        return Err("has an empty tag (is APP_VERSION empty?)");
    }
    let path = match &parsed.registry {
        Some(registry) => &parsed.name[registry.len() + 1..],
        None => parsed.name.as_str(),
    };
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("has upper-case letters in its repository");
    }
    Ok(())
}

/// `node.labels.KEY == VALUE` constraints, as (KEY, VALUE), of the services
/// that run at all; other constraints (node.role, node.hostname, ...) need no
/// pre-flight.
pub fn label_constraints(services: &[ServiceDef]) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let running = services.iter().filter(|service| !service.scaled_to_zero);
    for constraint in running.flat_map(|service| &service.constraints) {
        let Some((left, right)) = constraint.split_once("==") else { continue };
        if let Some(key) = left.trim().strip_prefix("node.labels.") {
            let pair = (key.trim().to_owned(), right.trim().to_owned());
            if !labels.contains(&pair) {
                labels.push(pair);
            }
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_are_told_from_services_and_kept_alone() {
        let text = "version: \"3.8\"\nservices:\n  app:\n    image: \"${ECR_REGISTRY}/t:${APP_VERSION}\"\n    deploy:\n      restart_policy:\n        condition: any\n  migrate:\n    image: \"${ECR_REGISTRY}/t:${APP_VERSION}\"\n    deploy:\n      restart_policy:\n        condition: on-failure\nnetworks:\n  net:\n    driver: overlay\n";
        let services = load("stack.yml", text, &env).unwrap();
        let one_shot: Vec<(&str, bool)> = services.iter().map(|s| (s.name.as_str(), s.one_shot)).collect();
        assert_eq!(one_shot, [("app", false), ("migrate", true)]);
        let jobs = only_services("stack.yml", text, &["migrate"]).unwrap();
        let reparsed = load("jobs.yml", &jobs, &env).unwrap();
        assert_eq!(reparsed.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["migrate"]);
        assert!(jobs.contains("${ECR_REGISTRY}/t:${APP_VERSION}"), "variables are left to the docker CLI:\n{jobs}");
        assert!(jobs.contains("net:") && jobs.contains("overlay"), "networks are kept:\n{jobs}");
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "ECR_REGISTRY" => Some("127.0.0.1:5000".into()),
            "APP_VERSION" => Some("abc123".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn the_projects_stack_files_load_with_the_exported_variables() {
        // The single-node stack: SQLite, the app and its jobs on the data
        // node, the edge on every node.
        let text = include_str!("../../../stack.single-node.yml");
        let services = load("stack.single-node.yml", text, &env).unwrap();
        let names: Vec<&str> = services.iter().map(|service| service.name.as_str()).collect();
        assert_eq!(names, ["app", "collectstatic", "edge", "migrate"]);
        for service in services.iter().filter(|service| service.name != "edge") {
            assert_eq!(service.image, "127.0.0.1:5000/todobackend:abc123", "{}", service.name);
            assert_eq!(service.constraints, ["node.labels.todobackend.data == true"], "{}", service.name);
            assert!(service.depends_on.is_empty(), "{}", service.name);
        }
        let edge = services.iter().find(|service| service.name == "edge").unwrap();
        // Pinned by digest (.github/images/Dockerfile; ci_files.rs checks the pins).
        assert!(edge.image.starts_with("haproxy:2.8-alpine@sha256:"), "{}", edge.image);
        assert_eq!(edge.constraints, ["node.platform.os == linux"], "the edge is kept off some node by default");
        assert_eq!(label_constraints(&services), [("todobackend.data".to_owned(), "true".to_owned())]);

        // The PostgreSQL stack: only the database is pinned, and migrate
        // waits for it.
        let text = include_str!("../../../stack.yml");
        let services = load("stack.yml", text, &env).unwrap();
        let by_name = |name: &str| services.iter().find(|service| service.name == name).unwrap();
        assert_eq!(by_name("app").image, "127.0.0.1:5000/todobackend:abc123");
        assert!(by_name("app").constraints.is_empty(), "the app is pinned: {:?}", by_name("app").constraints);
        assert!(!by_name("app").one_shot && !by_name("db").one_shot && by_name("migrate").one_shot);
        assert_eq!(by_name("migrate").depends_on, ["db"]);
        assert!(by_name("db").image.starts_with("postgres:16-alpine@sha256:"), "{}", by_name("db").image);
        assert_eq!(by_name("db").constraints, ["node.labels.todobackend.data == true"]);
        assert_eq!(label_constraints(&services), [("todobackend.data".to_owned(), "true".to_owned())]);
        let db_image = |name: &str| if name == "DB_IMAGE" { Some("127.0.0.1:5000/pg:15".into()) } else { env(name) };
        let services = load("stack.yml", text, &db_image).unwrap();
        assert_eq!(services.iter().find(|service| service.name == "db").unwrap().image, "127.0.0.1:5000/pg:15");
        let found = externals("stack.yml", text, &env).unwrap();
        let secret = |name: &str| External::Secret(name.into());
        // The password and the database's TLS, created once before the first deploy.
        assert_eq!(
            found,
            [
                secret("todobackend_db_ca"),
                secret("todobackend_db_password"),
                secret("todobackend_db_tls_cert"),
                secret("todobackend_db_tls_key")
            ]
        );
        // The database elsewhere (RDS) and db not run: no node needs the label.
        let elsewhere = |name: &str| if name == "DB_REPLICAS" { Some("0".into()) } else { env(name) };
        let services = load("stack.yml", text, &elsewhere).unwrap();
        assert!(label_constraints(&services).is_empty(), "{:?}", label_constraints(&services));
    }

    #[test]
    fn depends_on_takes_both_forms_and_names_only_services_of_the_file() {
        let text = "services:\n  db:\n    image: pg:1\n  job:\n    image: r/j:1\n    depends_on:\n      db:\n        condition: service_healthy\n";
        let services = load("s.yml", text, &env).unwrap();
        assert_eq!(services.iter().find(|s| s.name == "job").unwrap().depends_on, ["db"]);
        let err = load("s.yml", "services:\n  job:\n    image: r/j:1\n    depends_on: [nope]\n", &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("job depends on nope"), "{err}");
    }

    #[test]
    fn the_projects_stack_file_names_a_missing_version() {
        let text = include_str!("../../../stack.yml");
        let only_registry = |name: &str| (name == "ECR_REGISTRY").then(|| "r:1".to_owned());
        let err = load("stack.yml", text, &only_registry).unwrap_err().to_string();
        assert!(err.contains("APP_VERSION"), "{err}");
        assert!(err.contains("line "), "{err}");
    }

    #[test]
    fn values_are_interpolated_and_keys_and_comments_are_not() {
        let text = "services:\n  # $$ ${NOT_CHECKED}\n  web:\n    image: \"${ECR_REGISTRY}/web:${TAG:-1}\"\n";
        let services = load("s.yml", text, &env).unwrap();
        assert_eq!(services[0].image, "127.0.0.1:5000/web:1");
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let err = load("s.yml", "services: [unclosed", &env).unwrap_err().to_string();
        assert!(err.contains("not valid YAML"), "{err}");
        let err = load("s.yml", "services:\n  web:\n    build: .\n", &env).unwrap_err().to_string();
        assert!(err.contains("web has no image"), "{err}");
        let err = load("s.yml", "services:\n  web:\n    image: \"${EMPTY}/web:1\"\n", &env).unwrap_err().to_string();
        assert!(err.contains("empty part"), "{err}");
        let err = load("s.yml", "services:\n  web:\n    image: \"r/web:${EMPTY}\"\n", &env).unwrap_err().to_string();
        assert!(err.contains("empty tag"), "{err}");
        let err = load("s.yml", "version: '3.8'\n", &env).unwrap_err().to_string();
        assert!(err.contains("no services"), "{err}");
        let err = load("s.yml", "services:\n  web:\n    image: \"r/web:${NOPE}\"\n", &env).unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("NOPE"), "{err}");
    }

    #[test]
    fn configs_and_secrets_from_files_are_named_by_their_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.cfg"), "one").unwrap();
        std::fs::write(dir.path().join("b.pem"), "two").unwrap();
        let text = "services: {}\nconfigs:\n  edge_config:\n    file: ./a.cfg\n  other:\n    external: true\nsecrets:\n  tls:\n    file: ${CERT:-./b.pem}\n";
        let digests = file_digests("s.yml", text, dir.path(), &env).unwrap();
        // SHA-256 of "one" and "two", first 8 hex digits.
        assert_eq!(
            digests,
            [
                ("EDGE_CONFIG_DIGEST".to_owned(), "7692c3ad".to_owned()),
                ("TLS_DIGEST".to_owned(), "3fc4ccfe".to_owned())
            ]
        );
        std::fs::write(dir.path().join("a.cfg"), "changed").unwrap();
        let changed = file_digests("s.yml", text, dir.path(), &env).unwrap();
        assert_ne!(changed[0], digests[0], "a changed file keeps its name");
        assert_eq!(changed[1], digests[1]);
        let missing = "services: {}\nconfigs:\n  c:\n    file: ./nope.cfg\n";
        let err = format!("{:#}", file_digests("s.yml", missing, dir.path(), &env).unwrap_err());
        assert!(err.contains("nope.cfg") && err.contains("configs.c"), "{err}");
    }

    #[test]
    fn label_constraints_are_found() {
        let service = |constraints: &[&str]| ServiceDef {
            name: "s".into(),
            image: "i".into(),
            constraints: constraints.iter().map(|c| c.to_string()).collect(),
            one_shot: false,
            depends_on: Vec::new(),
            scaled_to_zero: false,
        };
        let services = [service(&["node.role == manager", "node.labels.zone==a"]), service(&["node.labels.zone == a"])];
        assert_eq!(label_constraints(&services), [("zone".to_owned(), "a".to_owned())]);
    }

    #[test]
    fn external_secrets_and_configs_are_found_by_their_swarm_names() {
        let text = "services:\n  app:\n    image: r/app:1\nsecrets:\n  db:\n    external: true\n    name: db_v2\n  local:\n    file: ./x\n  token:\n    external: true\nconfigs:\n  nginx:\n    external: true\n";
        let found = externals("s.yml", text, &|_| None).unwrap();
        assert_eq!(
            found,
            [External::Secret("db_v2".into()), External::Secret("token".into()), External::Config("nginx".into())]
        );
    }
}
