//! Settings shared by the tasks: defaults in `delivery.yml` at the project
//! root, overridden by environment variables, overridden by flags.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

// The settings flags, under their own heading in the help: before the task's
// name or after it (see `tasks::command`, which gives each task those it
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
    /// Take from `later` (the flags as a task's own command line read them)
    /// each flag that `given` says was written there: written after the
    /// task's name, it wins over the same flag before it, and over the
    /// environment, which both levels read alike.
    pub fn override_with(&mut self, later: Args, given: impl Fn(&str) -> bool) {
        // Destructured in full, so that a new flag cannot be forgotten here.
        let Args {
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
            compose_file,
        } = later;
        // -q and -v undo each other: the later one wins.
        if given("quiet") && quiet {
            self.verbose = false;
        }
        if given("verbose") && verbose {
            self.quiet = false;
        }
        macro_rules! take_given {
            ($($flag:ident),*) => {
                $(if given(stringify!($flag)) {
                    self.$flag = $flag;
                })*
            };
        }
        take_given!(
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
    compose_project: String,
    compose_file: PathBuf,
}

pub const DEFAULTS_FILE: &str = "delivery.yml";

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
}

impl Settings {
    pub fn load(root: &Path, args: &Args) -> Result<Settings> {
        let path = root.join(DEFAULTS_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the settings file {}", path.display()))?;
        let defaults: Defaults = serde_yaml::from_str(&text).map_err(|err| {
            anyhow::anyhow!("{} is not valid: {err}: fix the file (see README.md, Settings)", path.display())
        })?;
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
            verbosity: match (args.quiet, args.verbose) {
                (true, _) => Verbosity::Quiet,
                (false, true) => Verbosity::Verbose,
                (false, false) => Verbosity::Normal,
            },
            app: defaults.app,
            repository: pick(&args.repository, defaults.repository),
            aws_account_id: defaults.aws_account_id,
            region: args.region.clone().or(env_region).unwrap_or(defaults.aws_region),
            profile: args.profile.clone().filter(|value| !value.trim().is_empty()),
            explicit_registry: explicit_registry.map(|value| strip_scheme(&value)),
            stack: pick(&args.stack, defaults.stack),
            stack_file: root.join(args.stack_file.clone().unwrap_or(defaults.stack_file)),
            compose_project: pick(&args.compose_project, defaults.compose_project),
            compose_file: root.join(args.compose_file.clone().unwrap_or(defaults.compose_file)),
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

    /// `<registry>/<repository>`, without a tag.
    pub fn image_name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository)
    }

    /// `<registry>/<repository>:<tag>`.
    pub fn image(&self, tag: &str) -> String {
        format!("{}:{tag}", self.image_name())
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn unknown_keys_in_the_file_are_errors() {
        let err = serde_yaml::from_str::<Defaults>("app: x\nregion: y\n").unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{err}");
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
