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
use xtask::ctx::Ctx;
use xtask::flags::{self, CloudTask};
use xtask::runner::{self, Cloud};

fn main() -> ExitCode {
    let cloud = Cloud { dispatch, catch_signals: ci::catch_signals };
    runner::main_with(flags::parse(), Some(cloud))
}

/// The cloud tasks' dispatch; the runner runs the light ones, and `ci`'s
/// pipeline, itself.
fn dispatch(ctx: &Ctx, task: &CloudTask) -> Result<()> {
    match task {
        CloudTask::Login => login::run(ctx),
        CloudTask::Logout => logout::run(ctx),
        CloudTask::Publish(args) => publish::run(ctx, args),
        CloudTask::Deploy(args) => deploy::run(ctx, args),
        // The runner runs ci's stages itself and never hands it here.
        CloudTask::Ci(_) => anyhow::bail!("ci is a pipeline of tasks, run by the runner"),
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
