//! The Docker engine API (bollard), connected to the one endpoint the run
//! resolved (`xtask::docker_endpoint`): the one the docker CLI commands of
//! the run reach too.

use std::io;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use anyhow::{Context, Result};
use bollard::{API_DEFAULT_VERSION, Docker};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::Join;
use tokio::process::{Child, ChildStdin, ChildStdout};
use xtask::docker_endpoint::{Endpoint, Transport};

/// Seconds an API call may take (pushes and watches stream for longer; this
/// bounds each request).
const TIMEOUT: u64 = 120;

/// Connect to the engine at `endpoint` (unix, tcp with or without TLS, ssh),
/// agree on an API version it speaks (Debian 12's engine stops at 1.41), and
/// check it answers.
pub async fn connect(endpoint: &Endpoint) -> Result<Docker> {
    let Endpoint { host, tls, transport, .. } = endpoint;
    let unreachable = || xtask::docker_endpoint::unreachable_message(endpoint);
    let docker = match transport {
        Transport::Unix(path) => Docker::connect_with_unix(&path.to_string_lossy(), TIMEOUT, API_DEFAULT_VERSION),
        Transport::Tcp => match tls {
            Some(tls) => Docker::connect_with_ssl(
                host,
                &tls.cert_dir.join("key.pem"),
                &tls.cert_dir.join("cert.pem"),
                &tls.cert_dir.join("ca.pem"),
                TIMEOUT,
                API_DEFAULT_VERSION,
            ),
            None => Docker::connect_with_http(host, TIMEOUT, API_DEFAULT_VERSION),
        },
        Transport::Ssh => dial_stdio(endpoint),
    }
    .with_context(unreachable)?;
    let docker = docker.negotiate_version().await.with_context(unreachable)?;
    docker.ping().await.with_context(unreachable)?;
    Ok(docker)
}

/// The engine through `docker system dial-stdio`, which the docker CLI runs
/// with the resolved endpoint: over ssh it is `ssh [-p port] user@host docker
/// system dial-stdio`, so ports, ~/.ssh/config and keys work exactly as they
/// do for `docker stack deploy`. (bollard's own ssh connector passes
/// `user@host:port` to openssh as a host name.) hyper keeps the connection
/// alive, so a run pays the ssh handshake once, not once per request.
fn dial_stdio(endpoint: &Endpoint) -> Result<Docker, bollard::errors::Error> {
    let client = Client::builder(TokioExecutor::new()).build(DialStdio { host: endpoint.host.clone() });
    let transport = move |request: bollard::BollardRequest| {
        let client = client.clone();
        async move { client.request(request).await.map_err(bollard::errors::Error::from) }
    };
    // The address only fills the requests' URIs; the child process is the connection.
    Docker::connect_with_custom_transport(transport, Some("http://docker"), TIMEOUT, API_DEFAULT_VERSION)
}

/// Opens a connection by starting `docker system dial-stdio`.
#[derive(Clone)]
struct DialStdio {
    host: String,
}

impl tower_service::Service<hyper::Uri> for DialStdio {
    type Response = DialStdioStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<DialStdioStream>> + Send>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper::Uri) -> Self::Future {
        let mut command = tokio::process::Command::new("docker");
        // The endpoint as the run's other docker commands get it (see Ctx).
        command.args(["system", "dial-stdio"]).env("DOCKER_HOST", &self.host).env("DOCKER_CONTEXT", "");
        // ssh's own complaints (refused, host key, permission) reach stderr.
        command.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).kill_on_drop(true);
        Box::pin(async move {
            let mut child = command.spawn()?;
            let stdin = child.stdin.take().ok_or_else(|| io::Error::other("dial-stdio has no stdin"))?;
            let stdout = child.stdout.take().ok_or_else(|| io::Error::other("dial-stdio has no stdout"))?;
            Ok(DialStdioStream { io: TokioIo::new(tokio::io::join(stdout, stdin)), _child: child })
        })
    }
}

/// One HTTP connection: the child's stdout to read, its stdin to write. The
/// child is killed when hyper drops the connection.
struct DialStdioStream {
    io: TokioIo<Join<ChildStdout, ChildStdin>>,
    _child: Child,
}

impl Connection for DialStdioStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for DialStdioStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for DialStdioStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
