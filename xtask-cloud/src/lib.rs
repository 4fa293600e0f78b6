//! `xtask-cloud`: the tasks of `cargo xtask` that call AWS or the Docker
//! engine API, as a library: the binary (`main.rs`) runs them through
//! [`cloud`], and the integration tests import from here the names the tasks
//! give what they keep on the swarm (lock, history, job labels) instead of
//! spelling them again. Only those modules are public.

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
mod lock;
mod login;
mod logout;
mod logs;
mod plan;
mod progress;
mod publish;
pub mod records;
mod refresh_auth;
mod registry;
mod rollback;
mod secret;
mod signals;
mod stack;
mod status;
mod swarm_nodes;

use anyhow::Result;
use xtask::ctx::Ctx;
use xtask::flags::CloudTask;
use xtask::runner::Cloud;

/// What this binary gives the runner: the cloud tasks' dispatch, and the
/// signal handling of `ci`, whose pipeline the runner runs itself.
pub fn cloud() -> Cloud {
    Cloud { dispatch, catch_signals: ci::catch_signals }
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
