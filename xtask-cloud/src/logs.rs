//! `logs [SERVICE] [--tail N] [--since DURATION] [--follow] [--timestamps]`: the stack's
//! logs through the engine API, each line prefixed with its service and the
//! version of the task that wrote it. Ctrl-C ends `--follow` cleanly.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use bollard::Docker;
use bollard::query_parameters::{ListTasksOptions, LogsOptions};
use futures_util::StreamExt;
use xtask::ctx::Ctx;
use xtask::flags::LogsArgs as Args;

use crate::async_ctx::AsyncCtx;
use crate::image_ref::ImageRef;

pub fn run(ctx: &Ctx, args: &Args) -> Result<()> {
    let stack = ctx.settings.stack.clone();
    ctx.block_on(async {
        let docker = ctx.docker().await?;
        let services = services(&docker, &stack).await?;
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
        let tasks = tasks(&docker, &stack).await?;
        // A task's logs come from its node's engine, through the manager: of
        // a node that is down they never come, and the stream would wait for
        // it forever. Those tasks are left out, and said so.
        let nodes = crate::swarm_nodes::list(&docker).await?;
        let (tasks, unreachable): (Vec<TaskRef>, Vec<TaskRef>) = tasks.into_iter().partition(|task| {
            !nodes.iter().any(|node| Some(&node.id) == task.node.as_ref() && node.is_down())
        });
        for node in nodes.iter().filter(|node| node.is_down()) {
            let left_out = unreachable
                .iter()
                .filter(|task| task.node.as_ref() == Some(&node.id) && chosen.contains(&&task.service))
                .count();
            if left_out > 0 {
                eprintln!(
                    "warning: node {} is {}: the logs of its {left_out} task(s) are left out (the swarm cannot reach it)",
                    node.name, node.state
                );
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
        // Ctrl-C ends following: the stream stops, the task succeeds.
        let interrupted = std::pin::pin!(tokio::signal::ctrl_c());
        match futures_util::future::select(std::pin::pin!(print), interrupted).await {
            futures_util::future::Either::Left((printed, _)) => printed,
            futures_util::future::Either::Right(_) => Ok(()),
        }
    })
}

/// The stack's services, by their names in the stack file.
async fn services(docker: &Docker, stack: &str) -> Result<Vec<String>> {
    let listed = crate::stack::services(docker, stack).await?;
    let prefix = format!("{stack}_");
    let mut names: Vec<String> = listed
        .iter()
        .filter_map(|service| service.spec.as_ref()?.name.as_ref())
        .map(|name| name.strip_prefix(&prefix).unwrap_or(name).to_owned())
        .collect();
    names.sort();
    Ok(names)
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
async fn tasks(docker: &Docker, stack: &str) -> Result<Vec<TaskRef>> {
    let mut tasks = docker
        .list_tasks(Some(ListTasksOptions { filters: Some(crate::stack::label_filter(stack)) }))
        .await
        .with_context(|| format!("cannot list the tasks of stack {stack}"))?;
    tasks.sort_by(|a, b| a.created_at.cmp(&b.created_at));
    let prefix = format!("{stack}_");
    let service_names: HashMap<String, String> = crate::stack::services(docker, stack)
        .await?
        .into_iter()
        .filter_map(|service| {
            let name = service.spec?.name?;
            Some((service.id?, name.strip_prefix(&prefix).unwrap_or(&name).to_owned()))
        })
        .collect();
    Ok(tasks
        .into_iter()
        .filter_map(|task| {
            let service = service_names.get(task.service_id.as_ref()?)?.clone();
            let node = task.node_id.clone();
            let image = task.spec?.container_spec?.image?;
            let version = ImageRef::parse(&image).tag.unwrap_or_else(|| "latest".to_owned());
            Some(TaskRef { id: task.id?, service, version, node })
        })
        .collect())
}
