//! The Docker engine the xtask talks to is the one the docker CLI would:
//! `DOCKER_HOST`, else the context (`DOCKER_CONTEXT`, else config.json's
//! `currentContext`), else the default socket; the engine API and every
//! docker command of a run use the same one.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::app::PushedApp;
use xtask_test_support::sandbox::Sandbox;

/// `docker context create NAME --docker host=HOST` in the sandbox's Docker config.
fn create_context(sandbox: &Sandbox, name: &str, host: &str) {
    let made = sandbox.docker(&["context", "create", name, "--docker", &format!("host={host}")]);
    assert!(made.success(), "docker context create: {}", made.stderr);
}

#[test]
fn a_context_is_followed_and_docker_host_wins_over_it() {
    let app = PushedApp::start();
    let (sandbox, version) = (&app.sandbox, app.version.clone());

    // A context whose endpoint does not exist: the pre-flight fails, naming
    // the endpoint and the context.
    create_context(sandbox, "nowhere", "unix:///nonexistent/docker.sock");
    let nowhere = sandbox.clone_with(&[("APP_VERSION", &version), ("DOCKER_CONTEXT", "nowhere")]);
    let dry = nowhere.xtask(&["deploy", "--no-login", "--dry-run"]);
    dry.assert_failure();
    let error = dry.error_text();
    assert!(error.contains("unix:///nonexistent/docker.sock") && error.contains("context \"nowhere\""), "{error}");

    // DOCKER_HOST wins over the context.
    let host_wins = nowhere.clone_with(&[("DOCKER_HOST", "unix:///var/run/docker.sock")]);
    let dry = host_wins.xtask(&["deploy", "--no-login", "--dry-run"]);
    dry.assert_success();
    assert!(!app.stack_exists(), "a dry run deployed");

    // The current context of config.json, reaching the engine through
    // another path to its socket: a real deploy converges through it.
    let socket_dir = tempfile::tempdir().expect("temp dir");
    let socket = socket_dir.path().join("engine.sock");
    std::os::unix::fs::symlink("/var/run/docker.sock", &socket).expect("link the engine's socket");
    create_context(sandbox, "elsewhere", &format!("unix://{}", socket.display()));
    let used = sandbox.docker(&["context", "use", "elsewhere"]);
    assert!(used.success(), "docker context use: {}", used.stderr);
    let deployed = app.deploy(&version);
    deployed.assert_success();
    assert!(deployed.stdout.contains(&format!("Version {version} is live")), "{}", deployed.stdout);
    // The engine behind the context is this one.
    assert!(app.stack_exists());

    // And with the link gone, the same context fails: the run did go through it.
    std::fs::remove_file(&socket).expect("remove the link");
    let gone = app.at(&version).xtask(&["status"]);
    gone.assert_failure();
    assert!(gone.error_text().contains("context \"elsewhere\""), "{}", gone.stderr);
}

#[test]
fn a_deploy_converges_through_ssh_on_a_port_of_its_own() {
    let app = PushedApp::start();
    let version = app.version.clone();

    // DOCKER_HOST=ssh://root@127.0.0.1:PORT, Debian's sshd on a loopback
    // port, the key restricted to `docker system dial-stdio` as the book
    // tells a manager to (Sshd::start).
    let sshd = Sshd::start();
    let path = format!("{}:{}", sshd.bin_dir().display(), std::env::var("PATH").unwrap_or_default());
    let ssh_host = format!("ssh://root@127.0.0.1:{}", sshd.port);
    let run = app.at(&version).clone_with(&[("DOCKER_HOST", &ssh_host), ("PATH", &path)]).xtask(&[
        "deploy",
        "--no-login",
        "--timeout",
        "3m",
    ]);
    run.assert_success();
    assert!(run.stdout.contains(&format!("Version {version} is live")), "{}", run.stdout);
    assert!(app.stack_exists());
    // The engine API (dial-stdio) and the CLI (stack deploy) both logged in.
    assert!(sshd.logins() >= 2, "not both the API and the CLI went through sshd:\n{}", sshd.log());
}

/// An ssh endpoint that refuses the login: the advice is the ssh
/// connection, with the command that checks it, not starting Docker.
#[test]
fn an_ssh_endpoint_that_fails_points_to_the_ssh_connection() {
    let sshd = Sshd::start();
    let path = format!("{}:{}", sshd.bin_dir().display(), std::env::var("PATH").unwrap_or_default());
    let host = format!("ssh://nobody-{}@127.0.0.1:{}", std::process::id(), sshd.port);
    let sandbox = support::sandbox().with_env("DOCKER_HOST", &host).with_env("PATH", &path);
    let run = sandbox.xtask(&["history"]);
    run.assert_failure();
    let error = run.error_text();
    let check = format!("docker --host {host} version");
    assert!(error.contains("check the ssh connection") && error.contains(&check), "{error}");
    assert!(!error.contains("systemctl"), "{error}");
    // ssh's own reason, in the same line: an unknown user is refused.
    assert!(error.contains("ssh said:") && error.contains("Permission denied"), "{error}");
}

/// The key restricted as the book's `authorized_keys` line restricts it
/// (`restrict,command="docker system dial-stdio"`): the docker CLI's ssh
/// transport works through it (the deploy above goes through it too), and
/// a command asked over ssh never runs, though the login is accepted.
#[test]
fn a_restricted_key_serves_the_docker_cli_and_runs_no_command_asked() {
    let sshd = Sshd::start();
    let path = format!("{}:{}", sshd.bin_dir().display(), std::env::var("PATH").unwrap_or_default());
    let host = format!("ssh://root@127.0.0.1:{}", sshd.port);

    // What the xtask's advice for an unreachable ssh endpoint runs.
    let version = Command::new("docker")
        .args(["--host", &host, "version", "--format", "{{.Server.Version}}"])
        .env("PATH", &path)
        .env("DOCKER_CONTEXT", "")
        .stdin(Stdio::null())
        .output()
        .expect("docker version");
    assert!(
        version.status.success() && !version.stdout.is_empty(),
        "the docker CLI does not reach the engine through the restricted key: {}\n{}",
        String::from_utf8_lossy(&version.stderr),
        sshd.log()
    );

    // Commands asked over ssh: each login is accepted, and the forced
    // command runs instead of the one asked (so no marker appears and `id`
    // prints nothing).
    let marker = sshd.dir.path().join("marker");
    let logins = sshd.logins();
    let asked =
        [format!("touch {}", marker.display()), "id".to_owned(), format!("docker ps; touch {}", marker.display())];
    for command in &asked {
        let out = sshd.ssh(command);
        assert!(
            !String::from_utf8_lossy(&out).contains("uid="),
            "`{command}` ran over ssh: {}",
            String::from_utf8_lossy(&out)
        );
    }
    assert!(!marker.exists(), "a command asked over ssh ran with the restricted key");
    assert_eq!(sshd.logins(), logins + asked.len(), "not every login was accepted:\n{}", sshd.log());
}

// ---------------------------------------------------------------- sshd

/// The options the book puts before the deploy key in the manager's
/// `authorized_keys` (docs/src/ci.md): the fixture uses that very text, so
/// the page and what is tested cannot drift apart.
fn documented_key_options() -> String {
    let book = xtask_test_support::project_root().join("docs/src/ci.md");
    let text = std::fs::read_to_string(&book).expect("docs/src/ci.md");
    let line = text
        .lines()
        .find(|line| line.starts_with("restrict,command="))
        .unwrap_or_else(|| panic!("{} has no `restrict,command=...` authorized_keys line", book.display()));
    line.split(" ssh-ed25519 ").next().unwrap().to_owned()
}

/// Debian's sshd on a free loopback port, with a throwaway host key and
/// client key, the key restricted by the book's options
/// ([`documented_key_options`]), killed when dropped. The client side is an `ssh` wrapper
/// (first on PATH) that reads a private ssh_config: ssh takes ~/.ssh from
/// the passwd entry, not from HOME, and the user's own files stay untouched.
struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl Sshd {
    fn start() -> Sshd {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(sshd.exists(), "sshd is missing: `apt-get install openssh-server` (`bash .ci/run` does this)");
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        for key in ["host_key", "id"] {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(d.join(key))
                .output()
                .expect("ssh-keygen");
            assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
        }
        let key = std::fs::read_to_string(d.join("id.pub")).expect("id.pub");
        std::fs::write(d.join("authorized_keys"), format!("{} {key}", documented_key_options()))
            .expect("authorized_keys");
        let config = format!(
            "Host *\n  IdentityFile {}\n  IdentitiesOnly yes\n  BatchMode yes\n  StrictHostKeyChecking accept-new\n  UserKnownHostsFile {}\n",
            d.join("id").display(),
            d.join("known_hosts").display()
        );
        std::fs::write(d.join("ssh_config"), config).expect("ssh_config");
        std::fs::create_dir(d.join("bin")).expect("bin dir");
        let wrapper = format!("#!/bin/sh\nexec /usr/bin/ssh -F '{}' \"$@\"\n", d.join("ssh_config").display());
        std::fs::write(d.join("bin/ssh"), wrapper).expect("ssh wrapper");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("bin/ssh"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        // sshd refuses to start without its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");

        let port = xtask_test_support::free_port();
        let log = std::fs::File::create(d.join("sshd.log")).expect("sshd log");
        let opt = |value: String| ["-o".to_owned(), value];
        let child = Command::new(sshd)
            .args(["-D", "-e", "-p", &port.to_string()])
            .args(opt("ListenAddress=127.0.0.1".into()))
            .args(opt(format!("HostKey={}", d.join("host_key").display())))
            .args(opt(format!("AuthorizedKeysFile={}", d.join("authorized_keys").display())))
            .args(opt("PidFile=none".into()))
            .args(opt("StrictModes=no".into()))
            .args(opt("PermitRootLogin=prohibit-password".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let sshd = Sshd { dir, port, child };
        let listening = xtask_test_support::poll_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(listening, "sshd did not listen:\n{}", sshd.log());
        sshd
    }

    fn bin_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("bin")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// `ssh root@127.0.0.1 COMMAND`, stdin closed, through the wrapper:
    /// what it printed. Killed if it has not ended within 30 s.
    fn ssh(&self, command: &str) -> Vec<u8> {
        let mut child = Command::new(self.bin_dir().join("ssh"))
            .args(["-p", &self.port.to_string(), "root@127.0.0.1", command])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh");
        let ended =
            xtask_test_support::poll_until(Duration::from_secs(30), || child.try_wait().ok().flatten().is_some());
        if !ended {
            let _ = child.kill();
        }
        child.wait_with_output().expect("ssh output").stdout
    }

    /// Accepted logins so far.
    fn logins(&self) -> usize {
        self.log().lines().filter(|line| line.contains("Accepted publickey")).count()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
