//! The deploy lock: one task at a time changes a stack. It is a Docker
//! config on the swarm named `<stack>_deploy_lock`; the swarm refuses to
//! create a config whose name exists, so taking it is atomic for every
//! operator and CI run, wherever they run. It says who holds it, from which
//! host and process, for which version, and since when.
//!
//! It is released on every way out: success, failure, and Ctrl-C or SIGTERM
//! (caught while it is held). A holder killed outright (SIGKILL, a lost
//! machine) leaves it: `cargo xtask unlock` shows the holder and removes it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use bollard::Docker;
use bollard::models::ConfigSpec;
use serde::{Deserialize, Serialize};
use xtask::ctx::Ctx;
use xtask::exit::Exit;

use crate::async_ctx::AsyncCtx;

const LABEL: &str = "com.todobackend.lock";
/// How often a waiting task asks again.
const RETRY: Duration = Duration::from_secs(2);

/// Who holds the lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub task: String,
    pub version: String,
    pub holder: String,
    pub host: String,
    pub pid: u32,
    /// RFC 3339, UTC.
    pub since: String,
}

impl Holder {
    fn here(task: &str, version: &str) -> Holder {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "an unknown host".to_owned());
        Holder {
            task: task.to_owned(),
            version: version.to_owned(),
            holder: crate::history::actor(),
            host,
            pid: std::process::id(),
            since: crate::clock::rfc3339(SystemTime::now()),
        }
    }

    /// `deploy of 1.2 in progress by alice since 2026-11-24T01:30:00Z (host ci-3, process 4242)`.
    pub fn describe(&self) -> String {
        format!(
            "{} of {} in progress by {} since {} (host {}, process {})",
            self.task, self.version, self.holder, self.since, self.host, self.pid
        )
    }
}

pub fn name(stack: &str) -> String {
    format!("{stack}_deploy_lock")
}

/// Run `body` holding the stack's deploy lock; `wait` for it if another task
/// holds it (else fail at once, naming the holder). A dry run takes no lock.
pub fn hold<T>(
    ctx: &Ctx,
    task: &str,
    version: &str,
    wait: Option<Duration>,
    body: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let stack = ctx.settings.stack.clone();
    let lock = name(&stack);
    let holder = Holder::here(task, version);
    let taken = ctx.call(&format!("take the deploy lock (swarm config {lock})"), async {
        let docker = ctx.docker().await?;
        take(&docker, &stack, &holder, wait).await
    })?;
    if taken.is_none() {
        return body();
    }
    let held = Arc::new(AtomicBool::new(true));
    release_on_signals(ctx.docker_endpoint()?.clone(), &stack, held.clone());
    let result = body();
    held.store(false, Ordering::SeqCst);
    let released = ctx.block_on(async { remove(&ctx.docker().await?, &stack).await });
    if let Err(err) = released {
        eprintln!("warning: could not release the deploy lock {lock}: {err:#}: remove it with `cargo xtask unlock`");
    }
    result
}

async fn take(docker: &Docker, stack: &str, holder: &Holder, wait: Option<Duration>) -> Result<()> {
    let started = Instant::now();
    let mut said = false;
    loop {
        let spec = ConfigSpec {
            name: Some(name(stack)),
            labels: Some(HashMap::from([(LABEL.to_owned(), stack.to_owned())])),
            data: Some(aws_smithy_types::base64::encode(serde_json::to_string(holder)?)),
            ..Default::default()
        };
        match docker.create_config(spec).await {
            Ok(_) => return Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => {}
            Err(err) => return Err(err).with_context(|| format!("cannot take the deploy lock of stack {stack}")),
        }
        let Some(other) = current(docker, stack).await? else { continue };
        match wait {
            Some(wait) if started.elapsed() < wait => {
                if !said {
                    eprintln!("waiting for the deploy lock: {} (up to {}s)", other.describe(), wait.as_secs());
                    said = true;
                }
                tokio::time::sleep(RETRY).await;
            }
            Some(wait) => {
                return Err(Exit::LockHeld.error(format!(
                    "{} and still after {}s: try again later, or if that task was killed, `cargo xtask unlock`",
                    other.describe(),
                    wait.as_secs()
                )));
            }
            None => {
                return Err(Exit::LockHeld.error(format!(
                    "{}: wait for it (--lock-wait DURATION), or if that task was killed, `cargo xtask unlock`",
                    other.describe()
                )));
            }
        }
    }
}

/// The holder of the stack's lock, if it is held.
pub async fn current(docker: &Docker, stack: &str) -> Result<Option<Holder>> {
    match docker.inspect_config(&name(stack)).await {
        Ok(config) => {
            let data = config.spec.and_then(|spec| spec.data).unwrap_or_default();
            let holder = aws_smithy_types::base64::decode(&data)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Holder>(&bytes).ok())
                .unwrap_or_else(|| Holder {
                    task: "a task".into(),
                    version: "an unknown version".into(),
                    holder: "someone".into(),
                    host: "an unknown host".into(),
                    pid: 0,
                    since: "an unknown time".into(),
                });
            Ok(Some(holder))
        }
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
        Err(err) => Err(err).with_context(|| format!("cannot read the deploy lock of stack {stack}")),
    }
}

/// Remove the stack's lock; gone already is fine.
pub async fn remove(docker: &Docker, stack: &str) -> Result<()> {
    match docker.delete_config(&name(stack)).await {
        Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
        Err(err) => Err(err).with_context(|| format!("cannot remove the deploy lock {}", name(stack))),
    }
}

/// While the lock is held, SIGINT and SIGTERM release it and end the process
/// (130 / 143): the task's commands get the same signal from the terminal or
/// the CI runner, and the lock must not outlive it.
fn release_on_signals(endpoint: xtask::docker_endpoint::Endpoint, stack: &str, held: Arc<AtomicBool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let stack = stack.to_owned();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!(
                "warning: cannot watch for Ctrl-C ({err}): an interrupted run leaves the lock; `cargo xtask unlock` removes it"
            );
            return;
        }
    };
    let signals = runtime.block_on(async {
        Ok::<_, std::io::Error>((signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?))
    });
    let Ok((mut interrupt, mut terminate)) = signals else {
        eprintln!(
            "warning: cannot watch for Ctrl-C: an interrupted run leaves the lock; `cargo xtask unlock` removes it"
        );
        return;
    };
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let int = std::pin::pin!(interrupt.recv());
            let term = std::pin::pin!(terminate.recv());
            let (name, code) = match futures_util::future::select(int, term).await {
                futures_util::future::Either::Left(_) => ("SIGINT", 130),
                futures_util::future::Either::Right(_) => ("SIGTERM", 143),
            };
            if held.load(Ordering::SeqCst) {
                let removed = async { remove(&crate::docker::connect(&endpoint).await?, &stack).await }.await;
                match removed {
                    Ok(()) => eprintln!(
                        "interrupted by {name}: released the deploy lock; the stack may be part way through its update: \
                         see `cargo xtask status`"
                    ),
                    Err(err) => eprintln!("interrupted by {name}: could not release the deploy lock ({err:#}): `cargo xtask unlock`"),
                }
            }
            std::process::exit(code);
        })
    });
}

/// `cargo xtask unlock`: show who holds the lock, then remove it.
pub fn unlock(ctx: &Ctx) -> Result<()> {
    let stack = ctx.settings.stack.clone();
    let holder = ctx.block_on(async { current(&ctx.docker().await?, &stack).await })?;
    let Some(holder) = holder else {
        eprintln!("stack {stack} has no deploy lock");
        return Ok(());
    };
    eprintln!("the deploy lock of stack {stack}: {}", holder.describe());
    ctx.call(&format!("remove the swarm config {}", name(&stack)), async {
        remove(&ctx.docker().await?, &stack).await
    })?;
    ctx.report(&format!("removed the deploy lock of stack {stack}"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_described_for_the_refusal() {
        let holder = Holder {
            task: "deploy".into(),
            version: "1.2".into(),
            holder: "alice".into(),
            host: "ci-3".into(),
            pid: 42,
            since: "2026-11-24T01:30:00Z".into(),
        };
        assert_eq!(
            holder.describe(),
            "deploy of 1.2 in progress by alice since 2026-11-24T01:30:00Z (host ci-3, process 42)"
        );
        let json = serde_json::to_string(&holder).unwrap();
        assert_eq!(serde_json::from_str::<Holder>(&json).unwrap(), holder);
        assert_eq!(name("todobackend"), "todobackend_deploy_lock");
    }
}
