//! `xtask-cloud`: the tasks of `cargo xtask` that call AWS or the Docker
//! engine API (login, logout, publish, deploy, clean, ci). The light `xtask`
//! binary hands them here; the command line is the same.

mod async_ctx;
mod ci;
mod clean;
mod deploy;
mod docker;
mod ecr;
mod login;
mod logout;
mod progress;
mod publish;

use std::process::ExitCode;

use anyhow::Result;

// The light tasks and shared parts, under the names the modules use.
pub use xtask::cli::{Runner, Task};
pub use xtask::{compose, release, runner, settings, version};

fn main() -> ExitCode {
    xtask::cli::main_with(xtask::cli::parse(), Some(run_cloud_task))
}

/// The cloud tasks; the light ones the shared runner runs itself.
fn run_cloud_task(runner: &mut Runner, task: &Task) -> Result<()> {
    let ctx = runner.ctx();
    match task {
        Task::Clean => clean::run(ctx),
        Task::Login => login::run(ctx),
        Task::Logout => logout::run(ctx),
        Task::Publish(args) => publish::run(ctx, args),
        Task::Deploy(args) => deploy::run(ctx, args),
        Task::Ci(args) => ci::run(runner, args),
        Task::Version | Task::Build | Task::Test | Task::Release(_) => {
            anyhow::bail!("{} is not a cloud task", task.name())
        }
    }
}
