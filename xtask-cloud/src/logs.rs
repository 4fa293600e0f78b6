//! `logs [SERVICE] [--tail N] [--since DURATION] [--follow] [--timestamps]`: the stack's
//! logs through the engine API, each line prefixed with its service and the
//! version of the task that wrote it. Ctrl-C ends `--follow` cleanly, and so
//! does the stack, or every service followed, going away (`docker stack rm`):
//! the engine's streams of a removed service's tasks need not end, and a
//! silent follower of nothing looks like a quiet service.

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use bollard::query_parameters::LogsOptions;
use futures_util::StreamExt;
use xtask::ctx::Ctx;
use xtask::exit::Signal;
use xtask::flags::LogsArgs as Args;

use crate::async_ctx::AsyncCtx;
use crate::image_ref::ImageRef;
use crate::stack::{Snapshot, Task};

pub fn run(ctx: &Ctx, args: &Args) -> Result<()> {
    let stack = ctx.settings.stack.clone();
    ctx.block_on(async {
        let docker = ctx.docker().await?;
        let snapshot = Snapshot::read(&docker, &stack).await?;
        let services = snapshot.names();
        if services.is_empty() {
            bail!("stack {stack} is not deployed: deploy it with `cargo xtask deploy`");
        }
        let chosen: Vec<&String> = match &args.service {
            Some(wanted) => {
                let found: Vec<&String> = services.iter().filter(|name| *name == wanted).collect();
                if found.is_empty() {
                    bail!("stack {stack} has no service {wanted:?}: its services are {}", services.join(", "));
                }
                found
            }
            None => services.iter().collect(),
        };
        let tasks = tasks(&snapshot);
        // A task's logs come from its node's engine, through the manager: of
        // a node that is down they never come, and the stream would wait for
        // it forever. Those tasks are left out, and said so.
        let nodes = crate::swarm_nodes::list(&docker).await?;
        let (tasks, unreachable): (Vec<TaskRef>, Vec<TaskRef>) = tasks
            .into_iter()
            .partition(|task| !nodes.iter().any(|node| Some(&node.id) == task.node.as_ref() && node.is_down()));
        for node in nodes.iter().filter(|node| node.is_down()) {
            let left_out = unreachable
                .iter()
                .filter(|task| task.node.as_ref() == Some(&node.id) && chosen.contains(&&task.service))
                .count();
            if left_out > 0 {
                ctx.warn(&format!(
                    "node {} is {}: the logs of its {left_out} task(s) are left out (the swarm cannot reach it)",
                    node.name, node.state
                ));
            }
        }
        let since = args.since.map_or(0, |ago| {
            let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO);
            now.saturating_sub(ago).as_secs() as i32
        });
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            follow: args.follow,
            timestamps: args.timestamps,
            since,
            tail: args.tail.map_or("all".to_owned(), |n| n.to_string()),
            ..Default::default()
        };
        // One stream per task: the engine names no task in a service's
        // stream, and the prefix must say which version wrote a line.
        let streams = tasks.iter().filter(|task| chosen.contains(&&task.service)).map(|task| {
            let prefix = format!("{}@{}", task.service, task.version);
            docker.task_logs(&task.id, Some(options.clone())).map(move |item| (prefix.clone(), item))
        });
        let mut merged = futures_util::stream::select_all(streams);
        let print = async {
            while let Some((prefix, item)) = merged.next().await {
                let output = item.with_context(|| format!("cannot read the logs of {prefix}"))?;
                for line in output.to_string().lines() {
                    ctx.print_result(&format!("{prefix} | {line}"));
                }
            }
            Ok::<(), anyhow::Error>(())
        };
        if !args.follow {
            return print.await;
        }
        // Ctrl-C ends following: the stream stops, the task succeeds. So
        // does the end of what is followed, said in one line.
        let interrupted = crate::signals::first(&[Signal::Int]).context("cannot catch Ctrl-C")?;
        let chosen: Vec<String> = chosen.into_iter().cloned().collect();
        let gone = gone(&docker, &stack, &chosen);
        let (print, gone) = (std::pin::pin!(print), std::pin::pin!(gone));
        let ended = futures_util::future::select(print, gone);
        let why = match futures_util::future::select(ended, interrupted).await {
            // The streams ended (or failed) first: as the stack went away?
            futures_util::future::Either::Left((futures_util::future::Either::Left((printed, _)), _)) => {
                match gone_now(&docker, &stack, &chosen).await {
                    Ok(Some(why)) => why,
                    _ => return printed,
                }
            }
            futures_util::future::Either::Left((futures_util::future::Either::Right((why, _)), _)) => why?,
            futures_util::future::Either::Right(_) => return Ok(()),
        };
        ctx.say(&why);
        Ok(())
    })
}

/// How often `--follow` looks whether what it follows is still there.
const STILL_THERE: Duration = Duration::from_secs(2);

/// Resolves once none of `chosen` (services by their names in the stack
/// file) is in the stack any more: why there are no more lines to follow.
async fn gone(docker: &bollard::Docker, stack: &str, chosen: &[String]) -> Result<String> {
    loop {
        tokio::time::sleep(STILL_THERE).await;
        if let Some(why) = gone_now(docker, stack, chosen).await? {
            return Ok(why);
        }
    }
}

/// Why there is nothing more to follow, when none of `chosen` is in the
/// stack now.
async fn gone_now(docker: &bollard::Docker, stack: &str, chosen: &[String]) -> Result<Option<String>> {
    let names = Snapshot::read(docker, stack).await?.names();
    if names.is_empty() {
        return Ok(Some(format!("stack {stack} was removed: no more logs to follow")));
    }
    if !chosen.iter().any(|name| names.contains(name)) {
        let verb = if chosen.len() == 1 { "is" } else { "are" };
        return Ok(Some(format!("{} {verb} no longer in stack {stack}: no more logs to follow", chosen.join(", "))));
    }
    Ok(None)
}

/// A task of the stack: its id, service (as the stack file names it) and
/// version (image tag).
struct TaskRef {
    id: String,
    service: String,
    version: String,
    /// The node it runs (or ran) on, if the swarm placed it yet.
    node: Option<String>,
}

/// The stack's tasks that still have logs, oldest first.
fn tasks(stack: &Snapshot) -> Vec<TaskRef> {
    let mut tasks: Vec<(&str, &Task)> = stack
        .services
        .iter()
        .flat_map(|(service, described)| described.tasks.iter().map(move |task| (stack.short_name(service), task)))
        .filter(|(_, task)| !task.id.is_empty() && !task.image.is_empty())
        .collect();
    tasks.sort_by(|(_, a), (_, b)| a.created_at.cmp(&b.created_at));
    tasks
        .into_iter()
        .map(|(service, task)| TaskRef {
            id: task.id.clone(),
            service: service.to_owned(),
            version: ImageRef::parse(&task.image).version(),
            node: task.node.clone(),
        })
        .collect()
}
