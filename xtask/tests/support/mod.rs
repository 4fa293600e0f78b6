//! Test support: the real components the integration tests run against, each
//! started per test on a free loopback port and stopped when dropped.
//!
//! - [`Registry`]: Debian's `docker-registry` (distribution v2) with htpasswd auth.
//! - [`Moto`]: moto's server, the ECR API emulator, from a virtualenv under target/.
//! - [`require_docker`] / [`require_swarm`]: the local Docker engine, which
//!   must be running (the tests fail, with the way to start it, when it is not).
//! - [`git_repo`]: throwaway git repositories.
//! - [`Sandbox`]: a `cargo xtask` command with a private Docker config and the
//!   AWS variables pointed at the emulator, so no test touches the user's
//!   login or any address but loopback.
//! - [`multinode::MultiNode`]: a swarm of several engines, each in a network
//!   namespace of its own on a private bridge that the harness makes and removes.
#![allow(dead_code)] // each test binary uses its own part of this module

pub mod multinode;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod postgres;
pub mod variants;

/// moto's GetAuthorizationToken answers `AWS:<account>-auth-token`; the
/// account is moto's default.
pub const ECR_ACCOUNT: &str = "123456789012";
pub const ECR_USER: &str = "AWS";
pub const ECR_PASSWORD: &str = "123456789012-auth-token";
pub const REGION: &str = "us-west-2";

pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_owned()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| project_root().join("target"))
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    listener.local_addr().expect("local address").port()
}

/// A unique, Docker-safe name for this test's resources.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}{}x{}x{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst), nanos % 10_000)
}

/// Wait until `ready`, polling: the wait ends on the event, within `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < timeout, "{what} did not come up within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------- Docker engine

/// The local Docker engine must answer; tests that need it fail otherwise.
pub fn require_docker() {
    let out = Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output();
    match out {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "no Docker engine answers (`docker info`: {}). Start one: `dockerd >/tmp/dockerd.log 2>&1 &` as root \
             (or `sudo systemctl start docker`), or point DOCKER_HOST at one; `bash .ci/run` does this.",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(err) => {
            panic!("the docker CLI is missing ({err}): install Debian's docker.io (`apt-get install docker.io`)")
        }
    }
}

/// The local engine must also be a swarm manager.
pub fn require_swarm() {
    require_docker();
    let out = Command::new("docker")
        .args(["info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"])
        .output()
        .expect("docker runs");
    let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(
        state, "active true",
        "the local Docker engine is not a swarm manager: run `docker swarm init --advertise-addr 127.0.0.1`"
    );
}

// ---------------------------------------------------------------- registry

/// Debian's `docker-registry` on a loopback port, with htpasswd auth for one user.
pub struct Registry {
    /// The address it listens on: 127.0.0.1, or a multi-node harness's bridge.
    pub ip: String,
    pub port: u16,
    pub user: String,
    password: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Registry {
    /// A registry whose only user is the one moto's ECR token names, so that
    /// login → push → deploy is real end to end.
    pub fn start_for_ecr() -> Registry {
        Registry::start(ECR_USER, ECR_PASSWORD)
    }

    pub fn start(user: &str, password: &str) -> Registry {
        Registry::start_on("127.0.0.1", user, password)
    }

    /// A registry listening on `ip` (loopback, or an address the test made).
    pub fn start_on(ip: &str, user: &str, password: &str) -> Registry {
        let dir = tempfile::tempdir().expect("temp dir");
        // htpasswd reads the password from stdin (-i): it never is an argument.
        let mut htpasswd = Command::new("htpasswd")
            .args(["-iBn", user])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("htpasswd is missing: install Debian's apache2-utils");
        htpasswd.stdin.take().expect("stdin").write_all(password.as_bytes()).expect("write password");
        let out = htpasswd.wait_with_output().expect("htpasswd runs");
        assert!(out.status.success(), "htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(dir.path().join("htpasswd"), &out.stdout).expect("write htpasswd");
        let mut registry = Registry {
            ip: ip.to_owned(),
            port: 0,
            user: user.to_owned(),
            password: password.to_owned(),
            dir,
            child: None,
        };
        registry.run();
        registry
    }

    fn run(&mut self) {
        let port = if self.port == 0 { free_port() } else { self.port };
        let config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n\
             http:\n  addr: {ip}:{port}\n\
             auth:\n  htpasswd:\n    realm: test-registry\n    path: {htpasswd}\n",
            root = self.dir.path().join("data").display(),
            htpasswd = self.dir.path().join("htpasswd").display(),
            ip = self.ip,
        );
        let config_path = self.dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let log = std::fs::File::create(self.dir.path().join("registry.log")).expect("registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry is missing: install Debian's docker-registry");
        self.port = port;
        self.child = Some(child);
        // Without credentials /v2/ answers 401: up, and enforcing auth.
        wait_until("docker-registry", Duration::from_secs(20), || {
            http(&format!("{}/v2/", self.url()), "GET", None, &[]).is_ok_and(|r| r.status == 401)
        });
    }

    /// `IP:PORT`, the registry host as images name it.
    pub fn host(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// Stop the registry (to test an unreachable registry); `restart` brings it
    /// back on the same port with the same content.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// The digest of `repository:tag` from the registry's HTTP API, if present.
    pub fn manifest_digest(&self, repository: &str, tag: &str) -> Option<String> {
        let accept = "application/vnd.docker.distribution.manifest.v2+json, \
                      application/vnd.docker.distribution.manifest.list.v2+json, \
                      application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";
        let response = http(
            &format!("{}/v2/{repository}/manifests/{tag}", self.url()),
            "HEAD",
            Some((&self.user, &self.password)),
            &[("Accept", accept)],
        )
        .expect("registry answers");
        (response.status == 200).then(|| response.header("docker-content-digest").expect("digest header").to_owned())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------- moto

/// moto's server on a loopback port: the ECR API.
pub struct Moto {
    pub port: u16,
    child: Child,
}

impl Moto {
    pub fn start() -> Moto {
        Moto::start_with_env(&[])
    }

    /// moto checking every request's credentials against its own IAM: the
    /// dummy keys of [`Moto::aws_env`] are then rejected, as AWS rejects bad keys.
    pub fn start_with_auth() -> Moto {
        Moto::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")])
    }

    fn start_with_env(env: &[(&str, &str)]) -> Moto {
        let server = moto_server();
        let port = free_port();
        let child = Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto { port, child };
        wait_until("moto_server", Duration::from_secs(30), || {
            http(&format!("{}/moto-api/", moto.url()), "GET", None, &[]).is_ok_and(|r| r.status < 500)
        });
        moto
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment every AWS-touching test gives the xtask: the emulator's
    /// endpoint, dummy static credentials, a region, no instance metadata, and
    /// no profile or config file of the user's.
    pub fn aws_env(&self) -> Vec<(&'static str, String)> {
        let url = self.url();
        assert_loopback(&url);
        vec![
            ("AWS_ENDPOINT_URL", url),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_SESSION_TOKEN", "testing".into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_DEFAULT_REGION", REGION.into()),
            ("AWS_CONFIG_FILE", "/dev/null".into()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Panics unless `url` points at a loopback address, or into the private
/// network of a live multi-node harness (a bridge this test process made and
/// removes): the hard network rule.
pub fn assert_loopback(url: &str) {
    let host = url.split("://").nth(1).unwrap_or(url).split(['/', ':']).next().unwrap_or("");
    assert!(
        host == "localhost" || host.starts_with("127.") || host == "[::1]" || multinode::is_harness_address(host),
        "{url} is not a loopback address"
    );
}

/// `moto_server` from the virtualenv (MOTO_VENV, default target/moto-venv),
/// installed from PyPI on first use. A marker file says the install finished,
/// so a half-made venv is made again rather than used.
fn moto_server() -> PathBuf {
    static SERVER: OnceLock<PathBuf> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let venv =
                std::env::var_os("MOTO_VENV").map(PathBuf::from).unwrap_or_else(|| target_dir().join("moto-venv"));
            let server = venv.join("bin/moto_server");
            let marker = venv.join("installed-by-xtask-tests");
            if server.is_file() && marker.is_file() {
                return server;
            }
            let _ = std::fs::remove_dir_all(&venv);
            run_ok(Command::new("python3").arg("-m").arg("venv").arg(&venv), "python3 -m venv (install python3-venv)");
            run_ok(
                Command::new(venv.join("bin/pip")).args(["install", "--quiet", "moto[server]"]),
                "pip install moto[server]",
            );
            std::fs::write(&marker, "").expect("write venv marker");
            server
        })
        .clone()
}

fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|err| panic!("{what}: {err}"));
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

// ---------------------------------------------------------------- git

/// A throwaway git repository with one commit of `files`.
pub fn git_repo(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    git(dir.path(), &["init", "-q"]);
    for (name, content) in files {
        let path = dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, content).expect("write file");
    }
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-q", "-m", "test commit"]);
    dir
}

/// Run git in `dir` with a fixed identity; returns trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

// ---------------------------------------------------------------- the xtask

/// What a run of the xtask printed.
pub struct Run {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics, showing both streams, unless the run succeeded.
    pub fn assert_success(&self) -> &Run {
        assert!(self.success(), "xtask failed\n--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr);
        self
    }

    pub fn assert_failure(&self) -> &Run {
        assert!(
            !self.success(),
            "xtask succeeded but should not\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics if `secret` appears in either stream.
    pub fn assert_not_leaked(&self, secret: &str) -> &Run {
        assert!(!self.stdout.contains(secret), "the secret appears on stdout");
        assert!(!self.stderr.contains(secret), "the secret appears on stderr");
        self
    }

    /// The `error: ...` lines of stderr.
    pub fn error_lines(&self) -> Vec<&str> {
        self.stderr.lines().filter(|line| line.starts_with("error:")).collect()
    }
}

/// An isolated place to run the xtask: a private DOCKER_CONFIG, a unique
/// compose project and stack, and (with [`Sandbox::with_aws`]) the emulator.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
    pub root: PathBuf,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("temp dir");
        let docker_config = dir.path().join("docker-config");
        std::fs::create_dir_all(&docker_config).expect("docker config dir");
        let name = unique_name("t");
        let env = vec![
            ("DOCKER_CONFIG".to_owned(), docker_config.display().to_string()),
            ("COMPOSE_PROJECT_NAME".to_owned(), format!("{name}env")),
            ("STACK_NAME".to_owned(), format!("{name}stack")),
        ];
        Sandbox { dir, env, root: project_root() }
    }

    pub fn with_aws(mut self, moto: &Moto) -> Sandbox {
        for (key, value) in moto.aws_env() {
            self.env.push((key.to_owned(), value));
        }
        self
    }

    pub fn with_registry(self, registry: &Registry) -> Sandbox {
        self.with_env("ECR_REGISTRY", &registry.host())
    }

    pub fn with_env(mut self, key: &str, value: &str) -> Sandbox {
        self.env.retain(|(existing, _)| existing != key);
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Run the project's xtask in `root` (the checkout, or a copy of it).
    pub fn xtask(&self, args: &[&str]) -> Run {
        self.xtask_in(&self.root, args)
    }

    pub fn xtask_in(&self, dir: &Path, args: &[&str]) -> Run {
        let out = self.command_in(dir, args).output().expect("run the xtask binary");
        Run {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The `cargo xtask` command [`Sandbox::xtask_in`] runs, to spawn.
    pub fn command_in(&self, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
        cmd.args(args).current_dir(dir).stdin(Stdio::null());
        // Nothing of the caller's AWS, Docker login or CI setup leaks in.
        for key in [
            "AWS_PROFILE",
            "AWS_ENDPOINT_URL_ECR",
            "ECR_REGISTRY",
            "IMAGE_REPOSITORY",
            "GITHUB_ACTIONS",
            "CARGO_MANIFEST_DIR",
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
        ] {
            cmd.env_remove(key);
        }
        cmd.env("AWS_EC2_METADATA_DISABLED", "true");
        cmd.env("AWS_CONFIG_FILE", "/dev/null").env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        cmd
    }
}

impl Sandbox {
    /// Remove an environment variable the sandbox would set.
    pub fn without_env(mut self, key: &str) -> Sandbox {
        self.env.retain(|(existing, _)| existing != key);
        self
    }

    /// The sandbox's private Docker config directory (DOCKER_CONFIG).
    pub fn docker_config(&self) -> PathBuf {
        self.dir.path().join("docker-config")
    }

    /// The real docker CLI with the sandbox's DOCKER_CONFIG and nothing else of it.
    pub fn docker(&self, args: &[&str]) -> Run {
        let out = Command::new("docker")
            .args(args)
            .env("DOCKER_CONFIG", self.docker_config())
            .stdin(Stdio::null())
            .output()
            .expect("run docker");
        Run {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

// ---------------------------------------------------------------- images

/// Local image tags made by a test, removed (untagged) when dropped.
pub struct Images(pub Vec<String>);

impl Images {
    /// A tiny image `FROM scratch` (one text file, `LABEL application=todobackend`),
    /// built locally (nothing pulled) and tagged `tag`. `content` makes it unique.
    pub fn build_scratch(tag: &str, content: &str) -> Images {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("hello.txt"), content).expect("write file");
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM scratch\nLABEL application=todobackend\nCOPY hello.txt /hello.txt\n",
        )
        .expect("write Dockerfile");
        run_ok(
            Command::new("docker").args(["build", "--quiet", "--tag", tag]).arg(dir.path()).env("DOCKER_BUILDKIT", "0"),
            "docker build of a scratch image",
        );
        Images(vec![tag.to_owned()])
    }

    /// Also remove `tag` when dropped (a tag the code under test made).
    pub fn track(&mut self, tag: &str) {
        self.0.push(tag.to_owned());
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        for tag in &self.0 {
            let _ = Command::new("docker").args(["image", "rm", "--force", tag]).output();
        }
    }
}

// ---------------------------------------------------------------- HTTP

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }
}

/// A minimal HTTP/1.1 client for loopback URLs (`http://127.0.0.1:PORT/...`).
pub fn http(
    url: &str,
    method: &str,
    basic_auth: Option<(&str, &str)>,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    request(url, method, basic_auth, headers, None)
}

/// [`http`] with a request body.
pub fn request(
    url: &str,
    method: &str,
    basic_auth: Option<(&str, &str)>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<Response> {
    assert_loopback(url);
    let rest = url.strip_prefix("http://").expect("http URL");
    let (authority, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let authority = authority.replace("localhost", "127.0.0.1");
    let addr: SocketAddr = authority.parse().expect("IP:port authority");
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    if let Some((user, password)) = basic_auth {
        let token = aws_smithy_types::base64::encode(format!("{user}:{password}"));
        request.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    for (key, value) in headers {
        request.push_str(&format!("{key}: {value}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!("Content-Length: {}\r\nContent-Type: application/json\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or(""));
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad HTTP answer from {url}")))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect();
    Ok(Response { status, headers, body: body.to_owned() })
}

// ---------------------------------------------------------------- the swarm

/// The local single-node swarm, shared by the tests that deploy: one at a
/// time (`swarm_lock`), each with its own stack that `Stack` removes.
pub mod swarm {
    use std::io::Write;
    use std::process::{Command, Stdio};
    use std::sync::{Mutex, MutexGuard};
    use std::time::{Duration, Instant};

    use super::{Images, Registry, Run, Sandbox};

    static SWARM: Mutex<()> = Mutex::new(());

    pub fn swarm_lock() -> MutexGuard<'static, ()> {
        super::require_swarm();
        SWARM.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn docker(args: &[&str]) -> std::process::Output {
        Command::new("docker").args(args).stdin(Stdio::null()).output().expect("docker runs")
    }

    pub fn docker_ok(args: &[&str]) -> String {
        let out = docker(args);
        assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// stack.yml places every service on the node labelled todobackend.data=true:
    /// label this single node (idempotent; the label stays, as a user's would).
    pub fn label_the_node() {
        let node = docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"]);
        docker_ok(&["node", "update", "--label-add", "todobackend.data=true", &node]);
    }

    pub fn stack_exists(name: &str) -> bool {
        let services =
            docker_ok(&["service", "ls", "--quiet", "--filter", &format!("label=com.docker.stack.namespace={name}")]);
        !services.is_empty()
    }

    /// Removes the stack when dropped and waits until its services and network are gone.
    pub struct Stack(pub String);

    impl Drop for Stack {
        fn drop(&mut self) {
            let _ = docker(&["stack", "rm", &self.0]);
            let label = format!("label=com.docker.stack.namespace={}", self.0);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(90) {
                let networks = docker(&["network", "ls", "--quiet", "--filter", &label]);
                let services = docker(&["service", "ls", "--quiet", "--filter", &label]);
                if networks.stdout.is_empty() && services.stdout.is_empty() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            // What the xtask keeps on the swarm beside the stack: its history,
            // and a lock or a database job a killed run left.
            let jobs =
                docker(&["service", "ls", "--quiet", "--filter", &format!("label=com.todobackend.job={}", self.0)]);
            for job in String::from_utf8_lossy(&jobs.stdout).lines() {
                let _ = docker(&["service", "rm", job]);
            }
            let history =
                docker(&["config", "ls", "--quiet", "--filter", &format!("label=com.todobackend.history={}", self.0)]);
            for config in String::from_utf8_lossy(&history.stdout).lines() {
                let _ = docker(&["config", "rm", config]);
            }
            let _ = docker(&["config", "rm", &format!("{}_deploy_lock", self.0)]);
            // The stack's volumes, once no container uses them.
            let volumes = docker(&["volume", "ls", "--quiet", "--filter", &label]);
            for volume in String::from_utf8_lossy(&volumes.stdout).lines() {
                for _ in 0..20 {
                    if docker(&["volume", "rm", volume]).status.success() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }

    /// A sandbox that deploys a stack of its own to the local swarm: AWS at
    /// the emulator, the registry, the app published on `port` of this node
    /// (host mode: the swarm here has no routing mesh), one replica (a host
    /// port binds once per node) updated stop-first, short waits. The stack
    /// file is the single-node SQLite one, `stack.single-node.yml`: the tests
    /// of SQLite behaviour (backups on the data volume, restore) run there;
    /// [`postgres_stack_sandbox`] is the PostgreSQL stack.
    pub fn stack_sandbox(moto: &super::Moto, registry: &Registry, port: u16) -> Sandbox {
        let single_node = super::project_root().join("stack.single-node.yml");
        common_stack_sandbox(moto, registry, port).with_env("STACK_FILE", &single_node.display().to_string())
    }

    /// A sandbox that deploys the PostgreSQL stack, `stack.yml`, as
    /// [`stack_sandbox`] does the single-node one: `db` runs `db_image` (the
    /// tests' own, in `registry`), its password is the swarm secret
    /// `password_secret`, and at most one app replica runs per node (host
    /// mode).
    pub fn postgres_stack_sandbox(
        moto: &super::Moto,
        registry: &Registry,
        port: u16,
        db_image: &str,
        password_secret: &str,
    ) -> Sandbox {
        common_stack_sandbox(moto, registry, port)
            .with_env("STACK_FILE", &super::project_root().join("stack.yml").display().to_string())
            .with_env("DB_IMAGE", db_image)
            .with_env("DB_PASSWORD_SECRET", password_secret)
            .with_env("APP_MAX_REPLICAS_PER_NODE", "1")
    }

    fn common_stack_sandbox(moto: &super::Moto, registry: &Registry, port: u16) -> Sandbox {
        Sandbox::new()
            .with_aws(moto)
            .with_registry(registry)
            .with_env("APP_PUBLISH_MODE", "host")
            .with_env("APP_UPDATE_ORDER", "stop-first")
            .with_env("APP_PUBLISHED_PORT", &port.to_string())
            .with_env("APP_REPLICAS", "1")
            .with_env("APP_UPDATE_DELAY", "1s")
            .with_env("APP_UPDATE_MONITOR", "5s")
            .with_env("JOB_RESTART_DELAY", "1s")
    }

    /// `docker login` of the sandbox's Docker config, the password on stdin.
    pub fn docker_login(sandbox: &Sandbox, registry: &Registry) {
        let mut child = Command::new("docker")
            .args(["login", "--username", &registry.user, "--password-stdin", &registry.host()])
            .env("DOCKER_CONFIG", sandbox.docker_config())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker login");
        child.stdin.take().expect("stdin").write_all(registry.password().as_bytes()).expect("password");
        let out = child.wait_with_output().expect("docker login runs");
        assert!(out.status.success(), "docker login: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn push(sandbox: &Sandbox, tag: &str) {
        let run = sandbox.docker(&["push", tag]);
        assert!(run.success(), "docker push {tag}: {}", run.stderr);
    }

    /// Version A of the app in the registry's namespace, as a local image: the real
    /// release image built by `cargo xtask build`.
    pub fn app_image(sandbox: &Sandbox, registry: &Registry, version: &str, images: &mut Images) -> String {
        let tag = format!("{}/todobackend:{version}", registry.host());
        images.track(&tag);
        images.track(&format!("{}/todobackend:latest", registry.host()));
        let built =
            sandbox.clone_with(&[("APP_VERSION", version), ("ECR_REGISTRY", &registry.host())]).xtask(&["build"]);
        built.assert_success();
        tag
    }

    /// An image `FROM base` with more Dockerfile lines, tagged `tag`.
    pub fn derive(base: &str, tag: &str, lines: &str, images: &mut Images) {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("Dockerfile"), format!("FROM {base}\n{lines}\n")).expect("Dockerfile");
        images.track(tag);
        let out = Command::new("docker")
            .args(["build", "--quiet", "--tag", tag])
            .arg(dir.path())
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .expect("docker build");
        assert!(out.status.success(), "docker build {tag}: {}", String::from_utf8_lossy(&out.stderr));
    }

    impl Sandbox {
        /// The same sandbox (same Docker config and stack) with more variables.
        pub fn clone_with(&self, env: &[(&str, &str)]) -> Sandbox {
            let mut copy =
                Sandbox { dir: tempfile::tempdir().expect("temp dir"), env: self.env.clone(), root: self.root.clone() };
            for (key, value) in env {
                copy = copy.with_env(key, value);
            }
            copy
        }
    }

    /// The app answers GET / with 200 on the host-mode port.
    pub fn answers(port: u16) -> bool {
        super::http(&format!("http://127.0.0.1:{port}/"), "GET", None, &[]).is_ok_and(|response| response.status == 200)
    }

    /// The images of the app's running containers.
    pub fn running_app_images(stack: &str) -> Vec<String> {
        let out = docker_ok(&[
            "ps",
            "--filter",
            &format!("label=com.docker.swarm.service.name={stack}_app"),
            "--format",
            "{{.Image}}",
        ]);
        out.lines().map(|line| line.split('@').next().unwrap_or(line).to_owned()).collect()
    }

    pub fn spec_image(stack: &str, service: &str) -> String {
        let image = docker_ok(&[
            "service",
            "inspect",
            &format!("{stack}_{service}"),
            "--format",
            "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
        ]);
        image.split('@').next().unwrap_or(&image).to_owned()
    }

    pub fn stack_name(sandbox: &Sandbox) -> String {
        sandbox.env.iter().find(|(key, _)| key == "STACK_NAME").map(|(_, value)| value.clone()).expect("sandbox stack")
    }

    pub fn error_text(run: &Run) -> String {
        run.error_lines().join("\n")
    }
}
