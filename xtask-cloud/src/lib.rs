//! `xtask-cloud`: the tasks of `cargo xtask` that call AWS or the Docker
//! engine API, as a library: the binary (`main.rs`) runs them through
//! [`cloud`], and the integration tests import from here the names the tasks
//! give what they keep on the swarm (lock, history, job labels) instead of
//! spelling them again. Only those modules are public.

// The tasks, one module each with its `run`; none imports another.
mod ci;
mod deploy;
mod history;
mod login;
mod logout;
mod logs;
mod plan;
mod publish;
mod refresh_auth;
mod rollback;
mod secret;
mod status;
mod unlock;

// What the tasks share: the stack as the swarm runs it, the stack file, the
// services' specs, the release engine, the records kept on the swarm, and the
// plumbing under them (the engine, ECR, the registry, signals, progress).
mod async_ctx;
mod clock;
mod docker;
mod docker_config;
pub mod ecr;
mod image_ref;
mod interrupt;
mod lock;
mod progress;
pub mod records;
mod registry;
pub mod release;
mod service_spec;
mod signals;
mod stack;
pub mod stackfile;
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
    // Every task that names the stack checks its name the one way, before
    // it reads or takes anything by that name: `status` of a name the engine
    // refuses would otherwise report "not deployed".
    if names_the_stack(task) {
        stack::check_name(&ctx.settings.stack)?;
    }
    match task {
        CloudTask::Login => login::run(ctx),
        CloudTask::Logout => logout::run(ctx),
        CloudTask::Publish(args) => publish::run(ctx, args),
        CloudTask::Deploy(args) => deploy::run(ctx, args),
        // The runner runs ci's stages itself and never hands it here.
        CloudTask::Ci(_) => anyhow::bail!("ci is a pipeline of tasks, run by the runner"),
        CloudTask::Rollback(args) => rollback::run(ctx, args),
        CloudTask::History(args) => history::run(ctx, args),
        CloudTask::Unlock(args) => unlock::run(ctx, args),
        CloudTask::Status(args) => status::run(ctx, args),
        CloudTask::Logs(args) => logs::run(ctx, args),
        CloudTask::Secret(args) => secret::run(ctx, args),
        CloudTask::RefreshAuth => refresh_auth::run(ctx),
        CloudTask::Plan(args) => plan::run(ctx, args),
    }
}

/// Whether `task` reads or changes the stack (and so uses its name).
fn names_the_stack(task: &CloudTask) -> bool {
    match task {
        CloudTask::Login | CloudTask::Logout | CloudTask::Publish(_) | CloudTask::Ci(_) => false,
        CloudTask::Deploy(_)
        | CloudTask::Rollback(_)
        | CloudTask::History(_)
        | CloudTask::Unlock(_)
        | CloudTask::Status(_)
        | CloudTask::Logs(_)
        | CloudTask::RefreshAuth
        | CloudTask::Plan(_)
        // It labels the secret with the stack.
        | CloudTask::Secret(_) => true,
    }
}
