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
    let answered = match docker.negotiate_version().await {
        Ok(docker) => docker.ping().await.map(|_| docker),
        Err(err) => Err(err),
    };
    match answered {
        Ok(docker) => {
            SSH_SAYS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).echo = true;
            Ok(docker)
        }
        Err(err) if matches!(transport, Transport::Ssh) => match ssh_said().await {
            Some(said) => Err(anyhow::Error::new(err).context(format!("ssh said: {said}")).context(unreachable())),
            None => Err(anyhow::Error::new(err).context(unreachable())),
        },
        Err(err) => Err(anyhow::Error::new(err).context(unreachable())),
    }
}

/// What `docker system dial-stdio` (ssh, underneath) wrote on stderr. Until
/// the engine first answers it is kept, not shown, so that a failed
/// connection's error can carry ssh's own reason ("Permission denied",
/// "Connection refused") in its one line; after that it is shown as it comes.
#[derive(Default)]
struct SshSays {
    lines: Vec<String>,
    echo: bool,
    closed: bool,
}

static SSH_SAYS: std::sync::Mutex<SshSays> =
    std::sync::Mutex::new(SshSays { lines: Vec::new(), echo: false, closed: false });

/// ssh's last words once its stderr has closed (a failed ssh exits at once;
/// bounded at 2 s in case it does not).
async fn ssh_said() -> Option<String> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        {
            let says = SSH_SAYS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if says.closed || tokio::time::Instant::now() >= deadline {
                let said: Vec<&str> =
                    says.lines.iter().map(|line| line.trim()).filter(|line| !line.is_empty()).collect();
                return (!said.is_empty()).then(|| said[said.len().saturating_sub(2)..].join(" / "));
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn collect_ssh_stderr(stderr: tokio::process::ChildStderr) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut says = SSH_SAYS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if says.echo {
            xtask::output::say(&line);
        } else {
            says.lines.push(line);
        }
    }
    SSH_SAYS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).closed = true;
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
        // ssh's own complaints (refused, host key, permission) come on
        // stderr: kept for the error of a connection that fails (SshSays).
        command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        Box::pin(async move {
            let mut child = command.spawn()?;
            if let Some(stderr) = child.stderr.take() {
                SSH_SAYS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).closed = false;
                tokio::spawn(collect_ssh_stderr(stderr));
            }
            let stdin = child.stdin.take().ok_or_else(|| io::Error::other("dial-stdio has no stdin"))?;
            let stdout = child.stdout.take().ok_or_else(|| io::Error::other("dial-stdio has no stdout"))?;
            Ok(DialStdioStream { io: TokioIo::new(tokio::io::join(stdout, stdin)), child: Some(child) })
        })
    }
}

/// One HTTP connection: the child's stdout to read, its stdin to write.
struct DialStdioStream {
    io: TokioIo<Join<ChildStdout, ChildStdin>>,
    child: Option<Child>,
}

/// How long a dropped connection's child may take to exit on its own.
const DIAL_STDIO_EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

impl Drop for DialStdioStream {
    /// hyper drops the connection as soon as the engine's side closes, which
    /// for a failed ssh is before `docker system dial-stdio` has written
    /// ssh's reason on stderr. Killing it then would lose that reason (and
    /// the error would say only "connection closed"), so the child gets a
    /// moment to finish (its stdin closes with `io`) and is killed after it.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if tokio::time::timeout(DIAL_STDIO_EXIT_GRACE, child.wait()).await.is_err() {
                        let _ = child.kill().await;
                    }
                });
            }
            // No runtime to wait on: kill_on_drop ends it now.
            Err(_) => drop(child),
        }
    }
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
