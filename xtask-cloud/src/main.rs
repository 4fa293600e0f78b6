//! `xtask-cloud`: the tasks of `cargo xtask` that call AWS or the Docker
//! engine API. The light `xtask` binary hands them here with the same command
//! line; this binary's runner runs the light prerequisites itself.

mod async_ctx;
mod ci;
mod clock;
mod deploy;
mod docker;
mod docker_config;
mod ecr;
mod history;
mod image_ref;
mod interrupt;
mod lock;
mod login;
mod logout;
mod logs;
mod plan;
mod progress;
mod publish;
mod records;
mod refresh_auth;
mod registry;
mod rollback;
mod secret;
mod signals;
mod stack;
mod status;
mod swarm_nodes;

use std::process::ExitCode;

use anyhow::Result;
use xtask::tasks::{self, CloudTask, Runner};

fn main() -> ExitCode {
    tasks::main_with(tasks::parse(), Some(run))
}

/// The cloud tasks' dispatch; the runner runs the light ones itself.
fn run(runner: &mut Runner, task: &CloudTask) -> Result<()> {
    let ctx = runner.ctx();
    match task {
        CloudTask::Login => login::run(ctx),
        CloudTask::Logout => logout::run(ctx),
        CloudTask::Publish(args) => publish::run(ctx, args),
        CloudTask::Deploy(args) => deploy::run(ctx, args),
        CloudTask::Ci(args) => ci::run(runner, args),
        CloudTask::Rollback(args) => rollback::run(ctx, args),
        CloudTask::History(args) => history::run(ctx, args),
        CloudTask::Unlock(args) => lock::unlock(ctx, args),
        CloudTask::Status(args) => status::run(ctx, args),
        CloudTask::Logs(args) => logs::run(ctx, args),
        CloudTask::Secret(args) => secret::run(ctx, args),
        CloudTask::RefreshAuth => refresh_auth::run(ctx),
        CloudTask::Plan(args) => plan::run(ctx, args),
    }
}
