//! The command line of `cargo xtask`, shared by both binaries: the light
//! `xtask` (what the alias runs) and `xtask-cloud` (the tasks that talk to
//! AWS or the Docker engine API). Also the task graph: prerequisites run
//! first, each task at most once.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::runner::Ctx;
use crate::{build, release, settings, test, version};

/// The delivery workflow of todobackend: build, test, release, publish, deploy.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", disable_version_flag = true)]
pub struct Cli {
    #[command(flatten)]
    pub settings: settings::Args,
    #[command(subcommand)]
    pub task: Task,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Task {
    /// Print {"Version": "<APP_VERSION>"} (APP_VERSION, else the git short hash).
    Version,
    /// Build the release image from a static build of the service.
    Build,
    /// Run the service's tests and build the release image.
    Test,
    /// Start the local environment from the built image and run acceptance tests.
    Release(release::Args),
    /// Remove the local environment, its volumes and dangling project images.
    Clean,
    /// Log Docker in to the ECR registry.
    Login,
    /// Log Docker out of the ECR registry.
    Logout,
    /// Push the release image as `latest` and as APP_VERSION.
    Publish(PublishArgs),
    /// Deploy stack.yml to Docker Swarm and wait until it converges.
    Deploy(DeployArgs),
    /// The CI pipeline: login, test, release, publish, version file; then clean and logout.
    Ci(CiArgs),
}

impl Task {
    pub fn name(&self) -> &'static str {
        match self {
            Task::Version => "version",
            Task::Build => "build",
            Task::Test => "test",
            Task::Release(_) => "release",
            Task::Clean => "clean",
            Task::Login => "login",
            Task::Logout => "logout",
            Task::Publish(_) => "publish",
            Task::Deploy(_) => "deploy",
            Task::Ci(_) => "ci",
        }
    }

    /// The tasks that run before this one, like a Makefile's prerequisites.
    pub fn needs(&self) -> Vec<Task> {
        match self {
            Task::Test => vec![Task::Build],
            Task::Release(args) if !args.no_build => vec![Task::Build],
            Task::Deploy(args) if !args.no_login => vec![Task::Login],
            _ => Vec::new(),
        }
    }

    /// Tasks that call AWS or the Docker engine API: they live in the
    /// `xtask-cloud` binary, so that the light tasks never compile or load
    /// the AWS SDK and bollard (issue 6).
    pub fn is_cloud(&self) -> bool {
        matches!(self, Task::Clean | Task::Login | Task::Logout | Task::Publish(_) | Task::Deploy(_) | Task::Ci(_))
    }

    /// This task or one of its prerequisites is a cloud task.
    pub fn needs_cloud(&self) -> bool {
        self.is_cloud() || self.needs().iter().any(Task::needs_cloud)
    }
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct PublishArgs {
    /// Publish a version built from uncommitted changes (APP_VERSION ending in -dirty).
    #[arg(long)]
    pub allow_dirty: bool,

    /// Create the ECR repository when DescribeRepositories says it is missing.
    #[arg(long, env = "ECR_CREATE_REPOSITORY")]
    pub create_repository: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DeployArgs {
    /// Do not run `login` first.
    #[arg(long)]
    pub no_login: bool,

    /// Return once the stack is deployed, without waiting for it to converge.
    #[arg(long)]
    pub detach: bool,

    /// How long to wait for the services to converge: 300, 90s, 5m, 1h.
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `300`, `300s`, `5m`, `1h`, `1m30s` → a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration: write e.g. 300, 90s, 5m or 1h");
    let text = text.trim();
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
        let value: u64 = number.parse().map_err(|_| bad())?;
        total = value.checked_mul(unit).and_then(|part| total.checked_add(part)).ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct CiArgs {
    /// Where to write {"Version": "<APP_VERSION>"} [default: version.json at the project root].
    #[arg(long, value_name = "PATH")]
    pub version_file: Option<PathBuf>,
}

/// Runs a cloud task; given by the binary that has them.
pub type CloudDispatch = fn(&mut Runner, &Task) -> Result<()>;

/// Runs tasks with their prerequisites, each at most once.
pub struct Runner {
    ctx: Ctx,
    done: HashSet<&'static str>,
    cloud: Option<CloudDispatch>,
}

impl Runner {
    pub fn new(ctx: Ctx, cloud: Option<CloudDispatch>) -> Runner {
        Runner { ctx, done: HashSet::new(), cloud }
    }

    pub fn run(&mut self, task: Task) -> Result<()> {
        for need in task.needs() {
            self.run(need)?;
        }
        if !self.done.insert(task.name()) {
            return Ok(());
        }
        self.ctx.enter_task(task.name());
        let result = match &task {
            Task::Version => version::run(&self.ctx),
            Task::Build => build::run(&self.ctx),
            Task::Test => test::run(&self.ctx),
            Task::Release(_) => release::run(&self.ctx),
            _ => match self.cloud {
                Some(cloud) => cloud(self, &task),
                None => Err(anyhow::anyhow!("this binary has no cloud tasks: run it through `cargo xtask`")),
            },
        };
        result.with_context(|| format!("{} failed", task.name()))
    }

    pub fn ctx(&self) -> &Ctx {
        &self.ctx
    }
}

/// The project root: the nearest directory, from the current one up, that
/// holds delivery.yml; else the parent of the crate that cargo ran.
pub fn project_root() -> Result<PathBuf> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let from_cwd = cwd.ancestors().find(|dir| dir.join(settings::DEFAULTS_FILE).is_file());
    let from_cargo = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .and_then(|manifest_dir| manifest_dir.parent().map(|dir| dir.to_owned()))
        .filter(|dir| dir.join(settings::DEFAULTS_FILE).is_file());
    from_cwd.map(|dir| dir.to_owned()).or(from_cargo).with_context(|| {
        format!(
            "no {} in {} or above: run `cargo xtask` inside the todobackend checkout",
            settings::DEFAULTS_FILE,
            cwd.display()
        )
    })
}

/// The command line, or exit: help as clap prints it; a usage error as one
/// line (`error: ...`), exit code 2, like other command-line tools.
pub fn parse() -> Cli {
    use clap::error::ErrorKind;
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if matches!(err.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand) => err.exit(),
        Err(err) => {
            let text = err.to_string();
            let first = text.lines().next().unwrap_or("error: the command line is not valid");
            eprintln!("{first} (see `cargo xtask --help`)");
            std::process::exit(2);
        }
    }
}

/// Parse the command line, load the settings, and run the task with `cloud`
/// for the cloud tasks. Errors print as one line; the exit code is 1.
pub fn main_with(cli: Cli, cloud: Option<CloudDispatch>) -> std::process::ExitCode {
    let result = (|| {
        let root = project_root()?;
        let settings = settings::Settings::load(&root, &cli.settings)?;
        Runner::new(Ctx::new(settings)?, cloud).run(cli.task)
    })();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
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
        for bad in ["", "5x", "m", "5m3", "-1", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn light_tasks_stay_light() {
        assert!(!Task::Version.needs_cloud());
        assert!(!Task::Test.needs_cloud());
        assert!(!Task::Release(release::Args { no_build: false }).needs_cloud());
        assert!(Task::Clean.needs_cloud());
        let deploy = DeployArgs { no_login: true, detach: false, timeout: Duration::from_secs(1) };
        assert!(Task::Deploy(deploy).needs_cloud());
    }
}
