//! `cargo xtask`: the delivery workflow of todobackend, in place of the
//! Makefile. Each task is a module with a `run`; this file finds the project,
//! orders tasks by what they need, and dispatches.

mod build;
mod ci;
mod clean;
mod compose;
mod deploy;
mod docker;
mod ecr;
mod login;
mod logout;
mod progress;
mod publish;
mod release;
mod runner;
mod settings;
mod test;
mod version;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use runner::Ctx;

/// The delivery workflow of todobackend: build, test, release, publish, deploy.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", disable_version_flag = true)]
struct Cli {
    #[command(flatten)]
    settings: settings::Args,
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand, Debug, Clone)]
enum Task {
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
    Publish(publish::Args),
    /// Deploy stack.yml to Docker Swarm and wait until it converges.
    Deploy(deploy::Args),
    /// The CI pipeline: login, test, release, publish, version file; then clean and logout.
    Ci(ci::Args),
}

impl Task {
    fn name(&self) -> &'static str {
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
    fn needs(&self) -> Vec<Task> {
        match self {
            Task::Test => vec![Task::Build],
            Task::Release(args) if !args.no_build => vec![Task::Build],
            Task::Deploy(args) if !args.no_login => vec![Task::Login],
            _ => Vec::new(),
        }
    }
}

/// Runs tasks with their prerequisites, each at most once.
pub struct Runner {
    ctx: Ctx,
    done: HashSet<&'static str>,
}

impl Runner {
    fn run(&mut self, task: Task) -> Result<()> {
        for need in task.needs() {
            self.run(need)?;
        }
        if !self.done.insert(task.name()) {
            return Ok(());
        }
        let ctx = &self.ctx;
        ctx.enter_task(task.name());
        let result = match &task {
            Task::Version => version::run(ctx),
            Task::Build => build::run(ctx),
            Task::Test => test::run(ctx),
            Task::Release(_) => release::run(ctx),
            Task::Clean => clean::run(ctx),
            Task::Login => login::run(ctx),
            Task::Logout => logout::run(ctx),
            Task::Publish(args) => publish::run(ctx, args),
            Task::Deploy(args) => deploy::run(ctx, args),
            Task::Ci(args) => ci::run(self, args),
        };
        result.with_context(|| format!("{} failed", task.name()))
    }

    pub fn ctx(&self) -> &Ctx {
        &self.ctx
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match try_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn try_main(cli: Cli) -> Result<()> {
    let root = project_root()?;
    let settings = settings::Settings::load(&root, &cli.settings)?;
    let mut runner = Runner { ctx: Ctx::new(settings)?, done: HashSet::new() };
    runner.run(cli.task)
}

/// The project root: the nearest directory, from the current one up, that
/// holds delivery.yml; else the parent of the xtask crate that cargo ran.
fn project_root() -> Result<PathBuf> {
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
