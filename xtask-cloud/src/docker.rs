//! The Docker engine API (bollard), connected to the one endpoint the run
//! resolved (`xtask::docker_endpoint`): the one the docker CLI commands of
//! the run reach too.

use anyhow::{Context, Result, bail};
use bollard::{API_DEFAULT_VERSION, Docker};
use xtask::docker_endpoint::Endpoint;

/// Seconds an API call may take (pushes and watches stream for longer; this
/// bounds each request).
const TIMEOUT: u64 = 120;

/// Connect to the engine at `endpoint` (unix, tcp with or without TLS, ssh),
/// agree on an API version it speaks (Debian 12's engine stops at 1.41), and
/// check it answers.
pub async fn connect(endpoint: &Endpoint) -> Result<Docker> {
    let Endpoint { host, origin, tls } = endpoint;
    let unreachable = || {
        format!(
            "no Docker engine answers at {host} ({origin}): start Docker (e.g. `sudo systemctl start docker`, \
             or `sudo dockerd &`), or fix {origin}"
        )
    };
    let docker = if let Some(path) = host.strip_prefix("unix://") {
        Docker::connect_with_unix(path, TIMEOUT, API_DEFAULT_VERSION)
    } else if host.starts_with("tcp://") || host.starts_with("http://") || host.starts_with("https://") {
        match tls {
            Some(tls) => Docker::connect_with_ssl(
                host,
                &tls.cert_dir.join("key.pem"),
                &tls.cert_dir.join("cert.pem"),
                &tls.cert_dir.join("ca.pem"),
                TIMEOUT,
                API_DEFAULT_VERSION,
            ),
            None => Docker::connect_with_http(host, TIMEOUT, API_DEFAULT_VERSION),
        }
    } else if host.starts_with("ssh://") {
        Docker::connect_with_ssh(host, TIMEOUT, API_DEFAULT_VERSION, None)
    } else {
        bail!("{host} ({origin}) is not a Docker endpoint: use unix://, tcp:// or ssh://");
    }
    .with_context(unreachable)?;
    let docker = docker.negotiate_version().await.with_context(unreachable)?;
    docker.ping().await.with_context(unreachable)?;
    Ok(docker)
}
