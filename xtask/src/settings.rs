//! Settings shared by the tasks: defaults in `delivery.yml` at the project
//! root, with an environment's `delivery.NAME.yml` over it (`--env NAME`,
//! XTASK_ENV), overridden by environment variables, overridden by flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

// The settings flags, under their own heading in the help: before the task's
// name or after it (see `flags::command`, which gives each task those it
// uses). Each one falls back to an environment variable, then to
// `delivery.yml`. (A doc comment here would become each task's description.)
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Settings")]
pub struct Args {
    /// Print the steps (commands and API calls) without running them.
    #[arg(long)]
    pub dry_run: bool,

    /// Only results, warnings and errors: no step headers, command lines,
    /// progress or heartbeat; a failing command's output is still shown.
    #[arg(long, short = 'q', conflicts_with = "verbose")]
    pub quiet: bool,

    /// Also echo the read-only commands and the API calls and file changes,
    /// as they are made (what --dry-run would list).
    #[arg(long, short = 'v')]
    pub verbose: bool,

    /// The environment: read delivery.NAME.yml over delivery.yml (staging, production, ...).
    #[arg(long = "env", env = "XTASK_ENV", value_name = "NAME")]
    pub env: Option<String>,

    /// Registry host (and port) that images are tagged for and pushed to.
    #[arg(long, env = "ECR_REGISTRY", value_name = "HOST[:PORT]")]
    pub registry: Option<String>,

    /// Image repository in the registry.
    #[arg(long, env = "IMAGE_REPOSITORY", value_name = "NAME")]
    pub repository: Option<String>,

    /// AWS region of the ECR registry [env: AWS_REGION, AWS_DEFAULT_REGION].
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,

    /// AWS profile for credentials.
    #[arg(long, env = "AWS_PROFILE", value_name = "NAME")]
    pub profile: Option<String>,

    /// Docker Swarm stack name.
    #[arg(long, env = "STACK_NAME", value_name = "NAME")]
    pub stack: Option<String>,

    /// Docker Swarm stack file.
    #[arg(long, env = "STACK_FILE", value_name = "PATH")]
    pub stack_file: Option<PathBuf>,

    /// Compose project of the local environment.
    #[arg(long, env = "COMPOSE_PROJECT_NAME", value_name = "NAME")]
    pub compose_project: Option<String>,

    /// Compose file of the local environment.
    #[arg(long, env = "COMPOSE_FILE", value_name = "PATH")]
    pub compose_file: Option<PathBuf>,
}

impl Args {
    /// How much the run says (-q, -v).
    pub fn verbosity(&self) -> Verbosity {
        match (self.quiet, self.verbose) {
            (true, _) => Verbosity::Quiet,
            (false, true) => Verbosity::Verbose,
            (false, false) => Verbosity::Normal,
        }
    }

    /// Take from `later` (the flags as a task's own command line read them)
    /// each flag that `given` says was written there: written after the
    /// task's name, it wins over the same flag before it, and over the
    /// environment, which both levels read alike.
    pub fn override_with(&mut self, later: Args, given: impl Fn(&str) -> bool) {
        // -q and -v undo each other: the later one wins.
        if given("quiet") && later.quiet {
            self.verbose = false;
        }
        if given("verbose") && later.verbose {
            self.quiet = false;
        }
        // Destructured in full, so that a new flag cannot be forgotten here.
        macro_rules! take_given {
            ($($flag:ident),*) => {
                let Args { $($flag),* } = later;
                $(if given(stringify!($flag)) {
                    self.$flag = $flag;
                })*
            };
        }
        take_given!(
            env,
            dry_run,
            quiet,
            verbose,
            registry,
            repository,
            region,
            profile,
            stack,
            stack_file,
            compose_project,
            compose_file
        );
    }

    /// The flags of `ids` as `matches` (a task's command line, which has
    /// only the settings that task uses) holds them; the others unset.
    pub fn from_matches(matches: &clap::ArgMatches, ids: &[&str]) -> Args {
        let flag = |id: &str| ids.contains(&id) && matches.get_flag(id);
        let text = |id: &str| if ids.contains(&id) { matches.get_one::<String>(id).cloned() } else { None };
        let path = |id: &str| if ids.contains(&id) { matches.get_one::<PathBuf>(id).cloned() } else { None };
        Args {
            env: text("env"),
            dry_run: flag("dry_run"),
            quiet: flag("quiet"),
            verbose: flag("verbose"),
            registry: text("registry"),
            repository: text("repository"),
            region: text("region"),
            profile: text("profile"),
            stack: text("stack"),
            stack_file: path("stack_file"),
            compose_project: text("compose_project"),
            compose_file: path("compose_file"),
        }
    }
}

/// Which settings a task uses, by flag id, in groups.
pub mod used {
    /// Every task: --dry-run, -q, -v.
    pub const OUTPUT: &[&str] = &["dry_run", "quiet", "verbose"];
    /// Every task that reads delivery.yml's settings: --env.
    pub const ENV: &[&str] = &["env"];
    /// The image's name: --registry, --repository.
    pub const IMAGE: &[&str] = &["registry", "repository"];
    /// The registry's host alone (login, logout).
    pub const REGISTRY: &[&str] = &["registry"];
    /// AWS: --region, --profile.
    pub const AWS: &[&str] = &["region", "profile"];
    /// The swarm stack's name alone.
    pub const STACK: &[&str] = &["stack"];
    /// The swarm stack and its file.
    pub const STACK_FILE: &[&str] = &["stack", "stack_file"];
    /// The local environment: --compose-project, --compose-file.
    pub const COMPOSE: &[&str] = &["compose_project", "compose_file"];
}

/// How much a run says on stderr (-q, -v).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verbosity {
    /// Results, warnings and errors only.
    Quiet,
    #[default]
    Normal,
    /// Also the read-only commands, API calls and file changes.
    Verbose,
}

/// The defaults, as written in `delivery.yml`.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct Defaults {
    app: String,
    repository: String,
    aws_account_id: String,
    aws_region: String,
    #[serde(default)]
    registry: String,
    stack: String,
    stack_file: PathBuf,
    /// Empty or absent: derived from the checkout's directory
    /// ([`checkout_project`]), so that each checkout has its own.
    #[serde(default)]
    compose_project: String,
    compose_file: PathBuf,
    /// The Docker engine, when neither DOCKER_HOST nor DOCKER_CONTEXT is set.
    #[serde(default)]
    docker_host: Option<String>,
    #[serde(default)]
    docker_context: Option<String>,
    /// The stack file's variables (`APP_REPLICAS: 1`), when the
    /// environment does not set them.
    #[serde(default)]
    variables: BTreeMap<String, serde_yaml::Value>,
    /// The suite `deploy` runs against each new app task before it records
    /// the deploy as converged.
    #[serde(default)]
    verify: Option<VerifyDefaults>,
}

/// `verify:` in delivery.yml.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct VerifyDefaults {
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    timeout: Option<String>,
}

/// How `deploy` verifies a new version in the swarm: `command` (the app
/// image's arguments, `{task}` replaced by each new app task's address) runs
/// as a one-off task on the stack's network, once per task, within `timeout`.
#[derive(Debug, Clone, PartialEq)]
pub struct Verify {
    pub command: Vec<String>,
    pub timeout: Duration,
}

/// Where the verify command names the task it checks.
pub const VERIFY_TASK: &str = "{task}";

impl Default for Verify {
    fn default() -> Verify {
        Verify {
            command: ["acceptance", "--keep-data", "--url", "http://{task}:8000"].map(str::to_owned).to_vec(),
            timeout: Duration::from_secs(120),
        }
    }
}

fn verify_settings(raw: Option<VerifyDefaults>) -> Result<Verify> {
    let mut verify = Verify::default();
    let Some(raw) = raw else { return Ok(verify) };
    if let Some(command) = raw.command {
        if command.is_empty() || !command.iter().any(|arg| arg.contains(VERIFY_TASK)) {
            bail!(
                "verify.command in {DEFAULTS_FILE} must name the task it checks as {VERIFY_TASK} \
                 (e.g. [acceptance, --url, \"http://{VERIFY_TASK}:8000\"])"
            );
        }
        verify.command = command;
    }
    if let Some(timeout) = raw.timeout {
        verify.timeout = parse_duration(&timeout)
            .map_err(|err| anyhow::anyhow!("verify.timeout in {DEFAULTS_FILE} is not valid: {err}"))?;
    }
    Ok(verify)
}

pub const DEFAULTS_FILE: &str = "delivery.yml";

/// The environments of the project at `root`: NAME of each
/// `delivery.NAME.yml` beside delivery.yml, sorted.
pub fn known_environments(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|name| name.strip_prefix("delivery.")?.strip_suffix(".yml").map(str::to_owned))
        .filter(|name| !name.is_empty() && check_environment_name(name).is_ok())
        .collect();
    names.sort();
    names
}

/// Environment names are file-name parts: letters, digits, `-` and `_`.
fn check_environment_name(name: &str) -> Result<()> {
    let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        bail!("environment name {name:?} is not valid: use letters, digits, '-' and '_' (--env or XTASK_ENV)");
    }
    Ok(())
}

/// `delivery.yml` with the environment's file over it: each key the
/// environment's file writes replaces delivery.yml's (`variables` key by key).
fn merged_defaults(root: &Path, env: Option<&str>) -> Result<(Defaults, Option<PathBuf>)> {
    let read = |path: &Path| -> Result<serde_yaml::Mapping> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the settings file {}", path.display()))?;
        let value: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|err| {
            anyhow::anyhow!(
                "{} is not valid: {err}: fix the file (see docs/src/configuration.md, Settings)",
                path.display()
            )
        })?;
        match value {
            serde_yaml::Value::Mapping(map) => Ok(map),
            serde_yaml::Value::Null => Ok(serde_yaml::Mapping::new()),
            _ => bail!(
                "{} is not valid: it must be a mapping of settings (see docs/src/configuration.md, Settings)",
                path.display()
            ),
        }
    };
    let base_path = root.join(DEFAULTS_FILE);
    let mut merged = read(&base_path)?;
    let mut env_path = None;
    if let Some(env) = env.filter(|env| !env.trim().is_empty()) {
        check_environment_name(env)?;
        let path = root.join(format!("delivery.{env}.yml"));
        if !path.is_file() {
            let known = known_environments(root);
            let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
            bail!(
                "unknown environment {env:?}: there is no delivery.{env}.yml in {} (known environments: {known}); \
                 add the file or pick a known one with --env or XTASK_ENV",
                root.display()
            );
        }
        for (key, value) in read(&path)? {
            match (key.as_str(), merged.get_mut(&key), value) {
                (Some("variables"), Some(serde_yaml::Value::Mapping(base)), serde_yaml::Value::Mapping(over)) => {
                    base.extend(over)
                }
                (_, _, value) => {
                    merged.insert(key, value);
                }
            }
        }
        env_path = Some(path);
    }
    let files = match &env_path {
        Some(path) => format!("{} over {}", path.display(), base_path.display()),
        None => base_path.display().to_string(),
    };
    let defaults: Defaults = serde_yaml::from_value(serde_yaml::Value::Mapping(merged)).map_err(|err| {
        anyhow::anyhow!("{files} is not valid: {err}: fix the file (see docs/src/configuration.md, Settings)")
    })?;
    Ok((defaults, env_path))
}

/// The project root: the nearest directory, from the current one up, that
/// holds delivery.yml; else the parent of the crate that cargo ran.
pub fn project_root() -> Result<PathBuf> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let from_cwd = cwd.ancestors().find(|dir| dir.join(DEFAULTS_FILE).is_file());
    let from_cargo = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .and_then(|manifest_dir| manifest_dir.parent().map(|dir| dir.to_owned()))
        .filter(|dir| dir.join(DEFAULTS_FILE).is_file());
    from_cwd.map(|dir| dir.to_owned()).or(from_cargo).with_context(|| {
        format!("no {DEFAULTS_FILE} in {} or above: run `cargo xtask` inside the todobackend checkout", cwd.display())
    })
}

/// Every setting, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub root: PathBuf,
    pub dry_run: bool,
    pub verbosity: Verbosity,
    /// Images carry the label `application=<app>`.
    pub app: String,
    pub repository: String,
    pub aws_account_id: String,
    pub region: String,
    pub profile: Option<String>,
    /// The registry named by flag, ECR_REGISTRY or delivery.yml; `None` when
    /// it is to be derived (see [`Settings::registry`]).
    pub explicit_registry: Option<String>,
    pub stack: String,
    pub stack_file: PathBuf,
    pub compose_project: String,
    pub compose_file: PathBuf,
    /// The environment (`--env`, XTASK_ENV) whose delivery.NAME.yml was read.
    pub env: Option<String>,
    /// The Docker engine or context from the settings files, used when
    /// neither DOCKER_HOST nor DOCKER_CONTEXT is set.
    pub docker_host: Option<String>,
    pub docker_context: Option<String>,
    /// The stack file's variables from the settings files; a variable set in
    /// the environment wins.
    pub variables: BTreeMap<String, String>,
    /// `deploy`'s verification in the swarm (`verify:` in delivery.yml).
    pub verify: Verify,
}

impl Settings {
    pub fn load(root: &Path, args: &Args) -> Result<Settings> {
        let (defaults, _) = merged_defaults(root, args.env.as_deref())?;
        let env_region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
            .iter()
            .filter_map(|name| std::env::var(name).ok())
            .find(|value| !value.trim().is_empty());
        Settings::merge(root, args, defaults, env_region)
    }

    fn merge(root: &Path, args: &Args, defaults: Defaults, env_region: Option<String>) -> Result<Settings> {
        let pick = |flag: &Option<String>, default: String| {
            flag.clone().filter(|value| !value.trim().is_empty()).unwrap_or(default)
        };
        let explicit_registry = args
            .registry
            .clone()
            .filter(|value| !value.trim().is_empty())
            .or(Some(defaults.registry).filter(|value| !value.trim().is_empty()));
        let settings = Settings {
            root: root.to_owned(),
            dry_run: args.dry_run,
            verbosity: args.verbosity(),
            app: defaults.app,
            repository: pick(&args.repository, defaults.repository),
            aws_account_id: defaults.aws_account_id,
            region: args.region.clone().or(env_region).unwrap_or(defaults.aws_region),
            profile: args.profile.clone().filter(|value| !value.trim().is_empty()),
            explicit_registry: explicit_registry.map(|value| strip_scheme(&value)),
            stack: pick(&args.stack, defaults.stack),
            stack_file: root.join(args.stack_file.clone().unwrap_or(defaults.stack_file)),
            compose_project: pick(
                &args.compose_project,
                Some(defaults.compose_project)
                    .filter(|name| !name.trim().is_empty())
                    .unwrap_or_else(|| checkout_project(root)),
            ),
            compose_file: root.join(args.compose_file.clone().unwrap_or(defaults.compose_file)),
            env: args.env.clone().filter(|env| !env.trim().is_empty()),
            docker_host: defaults.docker_host.filter(|value| !value.trim().is_empty()),
            docker_context: defaults.docker_context.filter(|value| !value.trim().is_empty()),
            variables: variables(defaults.variables)?,
            verify: verify_settings(defaults.verify)?,
        };
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<()> {
        if let Some(registry) = &self.explicit_registry
            && (registry.contains('/') || registry.contains(char::is_whitespace))
        {
            bail!("registry {registry:?} is not a host: set ECR_REGISTRY (or --registry) to HOST or HOST:PORT");
        }
        let repository_ok = !self.repository.is_empty()
            && self
                .repository
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '/'));
        if !repository_ok {
            bail!(
                "image repository {:?} is not valid: use lowercase letters, digits, '.', '_', '-' and '/' (IMAGE_REPOSITORY or --repository)",
                self.repository
            );
        }
        if self.compose_project == self.stack {
            bail!(
                "the local environment (COMPOSE_PROJECT_NAME) and the swarm stack (STACK_NAME) are both named {:?}: \
                 they would share volumes, so `release` would test against and `clean` delete the stack's data; \
                 give them different names",
                self.stack
            );
        }
        check_region(&self.region)
    }

    /// The registry images are tagged for: the one named by flag, ECR_REGISTRY
    /// or delivery.yml, else the ECR registry of the account and region.
    pub fn registry(&self) -> String {
        match &self.explicit_registry {
            Some(registry) => registry.clone(),
            // ECR's registry host naming, used only when no registry is named.
            None => format!("{}.dkr.ecr.{}.amazonaws.com", self.aws_account_id, self.region),
        }
    }

    /// The local name of the release image, without a tag:
    /// `<compose project>/<repository>`. Local: no registry host, no account,
    /// until `publish` tags it for the registry; and the checkout's own: the
    /// compose project is the checkout's (see [`checkout_project`]), so
    /// another checkout's build never moves its tags.
    pub fn local_image_name(&self) -> String {
        format!("{}/{}", path_component(&self.compose_project), self.repository)
    }

    /// `<compose project>/<repository>:<tag>`: see [`Settings::local_image_name`].
    pub fn local_image(&self, tag: &str) -> String {
        format!("{}:{tag}", self.local_image_name())
    }

    /// The label that marks the images this checkout's builds made, for
    /// `clean` to prune only those: `xtask.local-project=<compose project>`.
    pub fn local_label(&self) -> String {
        format!("{LOCAL_PROJECT_LABEL}={}", self.compose_project)
    }

    /// `<registry>/<repository>`, without a tag.
    pub fn image_name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository)
    }

    /// `<registry>/<repository>:<tag>`.
    pub fn image(&self, tag: &str) -> String {
        format!("{}:{tag}", self.image_name())
    }
}

/// The image label naming the compose project (the local environment) whose
/// build made the image.
pub const LOCAL_PROJECT_LABEL: &str = "xtask.local-project";

/// The compose project of a checkout at `root`, when no setting names one:
/// its directory's name as `docker compose` derives a project name from it
/// (lowercase; letters, digits, `-` and `_`; starting with a letter or
/// digit), then `-local`, so that a checkout named like the stack
/// (`todobackend`) never shares the stack's volumes. Two checkouts in
/// directories of different names get different projects.
pub fn checkout_project(root: &Path) -> String {
    let dir = root.file_name().map(|name| name.to_string_lossy().to_lowercase()).unwrap_or_default();
    let kept: String =
        dir.chars().filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_')).collect();
    let name = kept.trim_start_matches(['-', '_']);
    let name = if name.is_empty() { "todobackend" } else { name };
    format!("{name}-local")
}

/// A compose project name as one path component of an image name: Docker
/// allows `_` and `-` only between letters and digits.
fn path_component(project: &str) -> String {
    let mut component = String::new();
    for c in project.chars() {
        match c {
            'a'..='z' | '0'..='9' => component.push(c),
            'A'..='Z' => component.push(c.to_ascii_lowercase()),
            _ if !component.is_empty() && !component.ends_with('-') => component.push('-'),
            _ => {}
        }
    }
    let trimmed = component.trim_end_matches('-');
    if trimmed.is_empty() { "local".to_owned() } else { trimmed.to_owned() }
}

/// The settings files' `variables` as text; only scalars are variables.
fn variables(raw: BTreeMap<String, serde_yaml::Value>) -> Result<BTreeMap<String, String>> {
    raw.into_iter()
        .map(|(name, value)| {
            let text = match value {
                serde_yaml::Value::String(text) => text,
                serde_yaml::Value::Number(number) => number.to_string(),
                serde_yaml::Value::Bool(flag) => flag.to_string(),
                _ => bail!(
                    "variables.{name} in the settings is not a string, number or boolean: write `{name}: \"value\"`"
                ),
            };
            Ok((name, text))
        })
        .collect()
}

impl Settings {
    /// The variables the Docker endpoint is resolved from: the process's,
    /// with the settings files' `docker_host` / `docker_context` standing in
    /// for DOCKER_HOST / DOCKER_CONTEXT when neither of those is set.
    pub fn docker_lookup(&self, name: &str) -> Option<String> {
        let set = |name: &str| std::env::var(name).ok().filter(|value| !value.trim().is_empty());
        let from_env = set(name);
        if from_env.is_some() || set("DOCKER_HOST").is_some() || set("DOCKER_CONTEXT").is_some() {
            return from_env;
        }
        match name {
            "DOCKER_HOST" => self.docker_host.clone(),
            "DOCKER_CONTEXT" if self.docker_host.is_none() => self.docker_context.clone(),
            _ => None,
        }
    }
}

/// Regions look like `us-west-2`, `eu-central-1`, `us-gov-east-1`, `cn-north-1`.
/// Anything else has no ECR endpoint: refuse it before any call.
pub fn check_region(region: &str) -> Result<()> {
    let parts: Vec<&str> = region.split('-').collect();
    let plausible = parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].chars().all(|c| c.is_ascii_lowercase())
        && parts[1..parts.len() - 1].iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok();
    if !plausible {
        bail!(
            "unknown AWS region {region:?}: set AWS_REGION (or --region, or aws_region in delivery.yml) to the registry's region, such as us-west-2"
        );
    }
    Ok(())
}

/// `https://host/` → `host`: ECR proxy endpoints and pasted URLs carry a scheme.
pub fn strip_scheme(registry: &str) -> String {
    let trimmed = registry.trim();
    let without = trimmed.strip_prefix("https://").or_else(|| trimmed.strip_prefix("http://")).unwrap_or(trimmed);
    without.trim_end_matches('/').to_owned()
}

/// `300` (seconds), `90s`, `5m`, `1h`, `1m 30s` → a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text).map_err(|_| format!("{text:?} is not a duration: write e.g. 300, 90s, 5m or 1h"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "5x", "m", "-1", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    fn defaults() -> Defaults {
        serde_yaml::from_str(include_str!("../../delivery.yml")).expect("delivery.yml parses")
    }

    #[test]
    fn file_defaults_apply() {
        let settings = Settings::merge(Path::new("/p"), &Args::default(), defaults(), None).unwrap();
        assert_eq!(settings.repository, "todobackend");
        assert_eq!(settings.region, "us-west-2");
        assert_eq!(settings.registry(), "123456789012.dkr.ecr.us-west-2.amazonaws.com");
        assert_eq!(settings.image("abc"), "123456789012.dkr.ecr.us-west-2.amazonaws.com/todobackend:abc");
        assert_eq!(settings.stack_file, Path::new("/p/stack.yml"));
    }

    #[test]
    fn each_checkout_has_its_own_compose_project_and_local_image_names() {
        let at = |root: &str| Settings::merge(Path::new(root), &Args::default(), defaults(), None).unwrap();
        let (one, two) = (at("/home/me/todobackend"), at("/home/me/Todo Backend.2"));
        assert_eq!(one.compose_project, "todobackend-local");
        assert_eq!(two.compose_project, "todobackend2-local");
        assert_ne!(one.local_image("v1"), two.local_image("v1"), "one checkout's build cannot move another's tags");
        assert_eq!(one.local_image("abc"), "todobackend-local/todobackend:abc", "no registry, no AWS account");
        assert_eq!(at("/srv/_x").compose_project, "x-local");
        assert_eq!(at("/").compose_project, "todobackend-local");
        // The setting still wins: the flag or COMPOSE_PROJECT_NAME, then delivery.yml.
        let args = Args { compose_project: Some("Mine__a_".into()), ..Args::default() };
        let named = Settings::merge(Path::new("/p"), &args, defaults(), None).unwrap();
        assert_eq!(named.compose_project, "Mine__a_");
        assert_eq!(named.local_image_name(), "mine-a/todobackend", "a valid image name from any project name");
        let mut file = defaults();
        file.compose_project = "from-file".into();
        assert_eq!(
            Settings::merge(Path::new("/p"), &Args::default(), file, None).unwrap().compose_project,
            "from-file"
        );
    }

    #[test]
    fn environment_beats_file_and_flag_beats_environment() {
        let settings =
            Settings::merge(Path::new("/p"), &Args::default(), defaults(), Some("eu-west-1".into())).unwrap();
        assert_eq!(settings.region, "eu-west-1");
        let args = Args { region: Some("ap-south-1".into()), ..Args::default() };
        let settings = Settings::merge(Path::new("/p"), &args, defaults(), Some("eu-west-1".into())).unwrap();
        assert_eq!(settings.region, "ap-south-1");
    }

    #[test]
    fn named_registry_is_used_as_is() {
        let args = Args { registry: Some("https://127.0.0.1:5000/".into()), ..Args::default() };
        let settings = Settings::merge(Path::new("/p"), &args, defaults(), None).unwrap();
        assert_eq!(settings.registry(), "127.0.0.1:5000");
        assert_eq!(settings.image("1"), "127.0.0.1:5000/todobackend:1");
    }

    #[test]
    fn bad_values_are_refused_with_the_way_out() {
        let args = Args { registry: Some("host/path".into()), ..Args::default() };
        let err = Settings::merge(Path::new("/p"), &args, defaults(), None).unwrap_err().to_string();
        assert!(err.contains("ECR_REGISTRY"), "{err}");
        let args = Args { repository: Some("Upper".into()), ..Args::default() };
        let err = Settings::merge(Path::new("/p"), &args, defaults(), None).unwrap_err().to_string();
        assert!(err.contains("IMAGE_REPOSITORY"), "{err}");
        let err = Settings::merge(Path::new("/p"), &Args::default(), defaults(), Some("us west".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("AWS_REGION"), "{err}");
    }

    #[test]
    fn local_environment_and_stack_never_share_a_name() {
        let settings = Settings::merge(Path::new("/p"), &Args::default(), defaults(), None).unwrap();
        assert_ne!(settings.compose_project, settings.stack, "the defaults must differ");
        let args = Args { compose_project: Some("todobackend".into()), ..Args::default() };
        let err = Settings::merge(Path::new("/p"), &args, defaults(), None).unwrap_err().to_string();
        assert!(err.contains("COMPOSE_PROJECT_NAME") && err.contains("STACK_NAME"), "{err}");
    }

    #[test]
    fn the_verify_suite_is_read_from_the_file_with_a_default() {
        let settings = Settings::merge(Path::new("/p"), &Args::default(), defaults(), None).unwrap();
        assert_eq!(settings.verify, Verify::default(), "delivery.yml writes the defaults");
        let mut own = defaults();
        own.verify = serde_yaml::from_str("command: [check, \"{task}:9000\"]\ntimeout: 30s\n").unwrap();
        let settings = Settings::merge(Path::new("/p"), &Args::default(), own, None).unwrap();
        assert_eq!(settings.verify.command, ["check", "{task}:9000"]);
        assert_eq!(settings.verify.timeout, Duration::from_secs(30));
        let mut no_task = defaults();
        no_task.verify = serde_yaml::from_str("command: [acceptance, --url, http://app:8000]\n").unwrap();
        let err = Settings::merge(Path::new("/p"), &Args::default(), no_task, None).unwrap_err().to_string();
        assert!(err.contains("verify.command") && err.contains("{task}"), "{err}");
        let mut bad_timeout = defaults();
        bad_timeout.verify = serde_yaml::from_str("timeout: soon\n").unwrap();
        let err = Settings::merge(Path::new("/p"), &Args::default(), bad_timeout, None).unwrap_err().to_string();
        assert!(err.contains("verify.timeout"), "{err}");
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        let err = serde_yaml::from_str::<Defaults>("app: x\nregion: y\n").unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn an_environment_file_overrides_delivery_yml_key_by_key_and_unknown_ones_are_listed() {
        let root = tempfile_dir();
        std::fs::write(root.join(DEFAULTS_FILE), include_str!("../../delivery.yml")).unwrap();
        std::fs::write(
            root.join("delivery.staging.yml"),
            "stack: todobackend-staging\ndocker_host: ssh://deploy@staging\nvariables:\n  APP_REPLICAS: 1\n",
        )
        .unwrap();
        std::fs::write(root.join("delivery.production.yml"), "stack: todobackend\n").unwrap();
        let args = Args { env: Some("staging".into()), ..Args::default() };
        let settings = Settings::load(&root, &args).unwrap();
        assert_eq!(settings.stack, "todobackend-staging");
        assert_eq!(settings.repository, "todobackend", "a key the environment leaves is delivery.yml's");
        assert_eq!(settings.docker_host.as_deref(), Some("ssh://deploy@staging"));
        assert_eq!(settings.variables.get("APP_REPLICAS").map(String::as_str), Some("1"));
        // The environment variable still beats the file.
        let args = Args { env: Some("staging".into()), stack: Some("mine".into()), ..Args::default() };
        assert_eq!(Settings::load(&root, &args).unwrap().stack, "mine");
        let args = Args { env: Some("prod".into()), ..Args::default() };
        let err = format!("{:#}", Settings::load(&root, &args).unwrap_err());
        assert!(err.contains("unknown environment \"prod\"") && err.contains("production, staging"), "{err}");
        let args = Args { env: Some("../x".into()), ..Args::default() };
        assert!(Settings::load(&root, &args).is_err());
        std::fs::write(root.join("delivery.bad.yml"), "stak: x\n").unwrap();
        let args = Args { env: Some("bad".into()), ..Args::default() };
        let err = format!("{:#}", Settings::load(&root, &args).unwrap_err());
        assert!(err.contains("delivery.bad.yml") && err.contains("unknown field"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A fresh directory under the system's temp dir (this crate has no tempfile).
    fn tempfile_dir() -> PathBuf {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let dir = std::env::temp_dir().join(format!("xtask-settings-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn regions_are_checked_for_shape() {
        for ok in ["us-west-2", "eu-central-1", "us-gov-east-1", "ap-southeast-3", "cn-northwest-1"] {
            check_region(ok).unwrap();
        }
        for bad in ["nowhere", "us-west", "usa-west-2", "us-west-x", "US-WEST-2", "us--2"] {
            let err = check_region(bad).unwrap_err().to_string();
            assert!(err.contains("unknown AWS region") && err.contains("AWS_REGION"), "{bad}: {err}");
        }
    }
}
