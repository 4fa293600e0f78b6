//! Debian's `docker-registry` (distribution v2) on a loopback port, with
//! htpasswd auth for one user.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use xtask_test_support::http::http;
use xtask_test_support::{free_port, wait_until};

use crate::support::moto::ECR_PASSWORD;

pub struct Registry {
    /// The address it listens on: 127.0.0.1, or a multi-node harness's bridge.
    pub ip: String,
    pub port: u16,
    pub user: String,
    password: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// The `Authorization` header of HTTP basic auth.
pub fn basic_auth(user: &str, password: &str) -> String {
    format!("Basic {}", aws_smithy_types::base64::encode(format!("{user}:{password}")))
}

impl Registry {
    /// A registry whose only user is the one the emulator's ECR token names
    /// (ECR's user, moto's password), so that login → push → deploy is real
    /// end to end.
    pub fn start_for_ecr() -> Registry {
        Registry::start(xtask_cloud::ecr::ECR_USER, ECR_PASSWORD)
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
            http(&format!("{}/v2/", self.url()), "GET", &[]).is_ok_and(|r| r.status == 401)
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
        let auth = basic_auth(&self.user, &self.password);
        let response = http(
            &format!("{}/v2/{repository}/manifests/{tag}", self.url()),
            "HEAD",
            &[("Authorization", &auth), ("Accept", accept)],
        )
        .expect("registry answers");
        (response.status == 200).then(|| response.header("docker-content-digest").expect("digest header").to_owned())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
        self.forget_local_references();
    }
}

impl Registry {
    /// Removes the engine's references into this registry (`<host>/<repo>:<tag>`
    /// and the `<host>/<repo>@<digest>` a push leaves): its port is this
    /// test's alone, so they are this test's. An image that another name
    /// still holds (the tests' shared edge image) only loses the reference.
    fn forget_local_references(&self) {
        let prefix = format!("{}/", self.host());
        let listed = Command::new("docker")
            .args(["image", "ls", "--digests", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}"])
            .output();
        let Ok(listed) = listed else { return };
        for line in String::from_utf8_lossy(&listed.stdout).lines() {
            let mut fields = line.split(' ');
            let (Some(repository), Some(tag), Some(digest)) = (fields.next(), fields.next(), fields.next()) else {
                continue;
            };
            if !repository.starts_with(&prefix) {
                continue;
            }
            if tag != "<none>" {
                let _ = Command::new("docker").args(["image", "rm", &format!("{repository}:{tag}")]).output();
            }
            if digest != "<none>" {
                let _ = Command::new("docker").args(["image", "rm", &format!("{repository}@{digest}")]).output();
            }
        }
    }
}
