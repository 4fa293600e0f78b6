//! `release`: the local environment from the built image, as the Makefile's
//! release did: migrate, collect static files, start the app, wait until it is
//! healthy, run the acceptance tests against it, and leave it running.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::compose::Compose;
use crate::ctx::Ctx;
use crate::{local_lock, notice};

/// How long the app may take to report healthy.
const HEALTHY_WITHIN: Duration = Duration::from_secs(90);

pub fn run(ctx: &Ctx) -> Result<()> {
    // No engine: say so in one line now, not after a compile or a build.
    crate::docker_endpoint::check_reachable(ctx.docker_endpoint())?;
    let compose = Compose::detect(ctx)?;
    // Held to the end: one release or clean of this environment at a time.
    let _lock = ctx.step("take the local environment", || {
        let lock = local_lock::acquire(ctx, "release")?;
        compose.repair_networks(ctx)?;
        Ok(lock)
    })?;
    one_shot(ctx, &compose, "run the migrations", "migrate")?;
    one_shot(ctx, &compose, "collect the static files", "collectstatic")?;
    ctx.step("start the app", || {
        // --no-deps: migrate and collectstatic ran just above, with their
        // failures attributed to them.
        ctx.run_explained(compose.cmd(ctx, &["up", "--detach", "--no-deps", "app"]), &[notice::COMPOSE_SWARM])?;
        ctx.effect("$ docker inspect <app container>, repeated until its healthcheck passes", (), || {
            wait_until_healthy(ctx, &compose).inspect_err(|_| show_logs(ctx, &compose, "app"))
        })
    })?;
    one_shot(ctx, &compose, "run the acceptance tests", "acceptance")?;
    let url = ctx.step("find the app's address", || {
        let port = || compose.cmd(ctx, &["port", "app", "8000"]);
        // A dry run started no app: its address is a placeholder.
        let planned = "http://localhost:<port>".to_owned();
        ctx.effect(&format!("$ {}", port()), planned, || local_url(&ctx.read(port())?))
    })?;
    ctx.print_result(&format!("App running at {url}"));
    Ok(())
}

/// Run one of the compose file's one-shot services to completion. Its output
/// streams to stderr as it runs, so a failure shows the container's logs,
/// and the error ends with its last line: the real cause (the migration's
/// error, a network compose could not attach to), not only "failed". No
/// TTY (-T): the container's stderr stays apart, for that last line.
fn one_shot(ctx: &Ctx, compose: &Compose, title: &str, service: &str) -> Result<()> {
    ctx.step(title, || {
        ctx.run_explained(compose.cmd(ctx, &["run", "--rm", "-T", "--no-deps", service]), &[notice::COMPOSE_SWARM])
            .with_context(|| format!("{service} failed"))
    })
}

/// Poll the app container's health until it is healthy, it stops, or the
/// time is up.
fn wait_until_healthy(ctx: &Ctx, compose: &Compose) -> Result<()> {
    let id = ctx.read(compose.cmd(ctx, &["ps", "-q", "app"]))?;
    let id = id.trim();
    if id.is_empty() {
        bail!("the app container was not created");
    }
    ctx.progress("waiting for the app to be healthy...");
    let sh = ctx.sh();
    let started = Instant::now();
    loop {
        // The docker CLI, not the engine API: `release` stays a light task.
        let format = "{{.State.Running}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}/{{.State.ExitCode}}";
        let state = ctx.read(xshell::cmd!(sh, "docker inspect --format {format} {id}"))?;
        let (running, health, exit_code) = parse_state(&state)?;
        match health {
            "healthy" => return Ok(()),
            "unhealthy" => bail!("the app is unhealthy: its healthcheck fails (logs above)"),
            _ => {}
        }
        if !running {
            bail!("the app stopped (exit code {exit_code}): its logs are above");
        }
        if started.elapsed() > HEALTHY_WITHIN {
            bail!("the app was not healthy within {}s: its logs are above", HEALTHY_WITHIN.as_secs());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `true/starting/0` (running, health, exit code) from `docker inspect`.
fn parse_state(text: &str) -> Result<(bool, &str, &str)> {
    let mut parts = text.trim().splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(running), Some(health), Some(exit_code)) => Ok((running == "true", health, exit_code)),
        _ => bail!("unexpected answer from `docker inspect` of the app container: {text:?}"),
    }
}

/// The last lines of a service's logs, to stderr, after a failure.
fn show_logs(ctx: &Ctx, compose: &Compose, service: &str) {
    ctx.say(&format!("--- last logs of {service}"));
    let _ = ctx.run(compose.cmd(ctx, &["logs", "--no-color", "--tail", "50", service]));
}

/// `0.0.0.0:49153` (what `compose port` prints) → `http://localhost:49153`.
fn local_url(published: &str) -> Result<String> {
    let line = published.lines().next().unwrap_or("").trim();
    let port = line
        .rsplit_once(':')
        .map(|(_, port)| port)
        .filter(|port| port.parse::<u16>().is_ok_and(|port| port != 0))
        .with_context(|| format!("unexpected answer from `compose port app 8000`: {line:?}"))?;
    Ok(format!("http://localhost:{port}"))
}

#[cfg(test)]
mod tests {
    use super::local_url;

    #[test]
    fn container_state_is_read() {
        assert_eq!(super::parse_state("true/healthy/0\n").unwrap(), (true, "healthy", "0"));
        assert_eq!(super::parse_state("false//3").unwrap(), (false, "", "3"));
        assert!(super::parse_state("garbage").is_err());
    }

    #[test]
    fn published_port_becomes_a_localhost_url() {
        assert_eq!(local_url("0.0.0.0:49153\n").unwrap(), "http://localhost:49153");
        assert_eq!(local_url("[::]:8080").unwrap(), "http://localhost:8080");
        assert_eq!(local_url("0.0.0.0:49153\n:::49153\n").unwrap(), "http://localhost:49153");
        assert!(local_url("").is_err());
        assert!(local_url("0.0.0.0:0").is_err());
    }
}
