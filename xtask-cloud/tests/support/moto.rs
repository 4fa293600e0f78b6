//! moto's server on a loopback port, the ECR API emulator, from a virtualenv
//! under target/; and the AWS environment that points the xtask at it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use xtask_test_support::http::{assert_loopback, http};
use xtask_test_support::sandbox::Sandbox;
use xtask_test_support::{free_port, run_ok, target_dir, wait_until};

/// moto's GetAuthorizationToken answers `AWS:<account>-auth-token`; the
/// account is moto's default.
pub const ECR_ACCOUNT: &str = "123456789012";
pub const ECR_PASSWORD: &str = "123456789012-auth-token";
pub const REGION: &str = "us-west-2";

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
            http(&format!("{}/moto-api/", moto.url()), "GET", &[]).is_ok_and(|r| r.status < 500)
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

    /// `sandbox` with AWS pointed at this emulator.
    pub fn sandbox(&self, sandbox: Sandbox) -> Sandbox {
        sandbox.with_envs(self.aws_env())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
