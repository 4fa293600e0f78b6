//! `xtask-cloud`: the tasks of `cargo xtask` that call AWS or the Docker
//! engine API, as a library: the binary (`main.rs`) runs [`run`], and the
//! integration tests import from here the names the tasks give what they
//! keep on the swarm (lock, history, job labels) instead of spelling them
//! again. Only those modules are public.

mod async_ctx;
mod ci;
mod clock;
pub mod deploy;
mod docker;
mod docker_config;
pub mod ecr;
pub mod history;
mod image_ref;
mod interrupt;
pub mod lock;
mod login;
mod logout;
mod logs;
mod plan;
mod progress;
mod publish;
mod refresh_auth;
mod registry;
mod rollback;
mod secret;
mod stack;
mod status;
mod swarm_nodes;

use anyhow::Result;
use xtask::tasks::{CloudTask, Runner};

/// The cloud tasks' dispatch; the runner runs the light ones itself.
pub fn run(runner: &mut Runner, task: &CloudTask) -> Result<()> {
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
