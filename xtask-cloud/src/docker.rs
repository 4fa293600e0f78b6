//! The Docker engine API (bollard), shared by the tasks that talk to the engine
//! directly rather than through the docker CLI.

use anyhow::{Context, Result};
use bollard::Docker;

/// Where the engine is: DOCKER_HOST, else the local socket.
pub fn host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|host| !host.trim().is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned())
}

/// Connect to the engine at DOCKER_HOST (unix, tcp or ssh), agree on an API
/// version it speaks (Debian 12's engine stops at 1.41), and check it answers.
pub async fn connect() -> Result<Docker> {
    let host = host();
    let unreachable = || {
        format!(
            "no Docker engine answers at {host}: start Docker (e.g. `sudo systemctl start docker`, or `sudo dockerd &`) or set DOCKER_HOST"
        )
    };
    let docker = Docker::connect_with_defaults().with_context(unreachable)?;
    let docker = docker.negotiate_version().await.with_context(unreachable)?;
    docker.ping().await.with_context(unreachable)?;
    Ok(docker)
}
