//! A real PostgreSQL server for the tests: Debian's server binaries
//! (`/usr/lib/postgresql/N/bin`), a cluster made by `initdb` in a temporary
//! directory, listening on a free loopback port, with a password (SCRAM) so
//! that the password file is exercised. As root (CI), the cluster runs as the
//! `postgres` user, since PostgreSQL refuses to run as root. Each test gets a
//! database of its own (`database()`), so tests share one server per test
//! binary and stay parallel-safe; a test that stops the server starts its own.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::wait_until;
use todobackend::store::Database;
use todobackend::store::postgres::client::Conn;
use todobackend::store::postgres::config::{PASSWORD_FILE_VAR, Target, URL_VAR};

/// The role the app connects as (not a superuser: it owns its database).
pub const APP_USER: &str = "app";

fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("postgres").is_file())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: install Debian's server \
             (`apt-get install postgresql-15`, as .ci/run does); the PostgreSQL tests need it"
        )
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of `postgres`, from /etc/passwd.
fn postgres_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres")).then(|| (fields[2].parse().unwrap(), fields[3].parse().unwrap()))
        })
        .expect("no postgres user: install Debian's postgresql package, which creates it")
}

/// A command run as the cluster's owner.
fn as_owner(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    if is_root() {
        let (uid, gid) = postgres_ids();
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// A private CA made with the openssl CLI: `<dir>/<name>.crt` and `.key`;
/// returns the certificate's path.
pub fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let crt = dir.join(format!("{name}.crt"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={name} test root"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        dir.join(format!("{name}.key")).to_str().unwrap(),
        "-out",
        crt.to_str().unwrap(),
    ]);
    crt
}

/// A server certificate for `san` (`DNS:localhost`) signed by the CA
/// `<dir>/<ca>.crt`: `<dir>/<name>.crt` and `.key`.
pub fn issue(dir: &Path, ca: &str, name: &str, san: &str) {
    let path = |ext: &str| dir.join(format!("{name}.{ext}")).to_str().unwrap().to_owned();
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        &path("key"),
        "-out",
        &path("csr"),
    ]);
    std::fs::write(
        path("ext"),
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    let serial =
        format!("0x{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    openssl(&[
        "x509",
        "-req",
        "-in",
        &path("csr"),
        "-days",
        "2",
        "-set_serial",
        &serial,
        "-CA",
        dir.join(format!("{ca}.crt")).to_str().unwrap(),
        "-CAkey",
        dir.join(format!("{ca}.key")).to_str().unwrap(),
        "-extfile",
        &path("ext"),
        "-out",
        &path("crt"),
    ]);
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(out.status.success(), "openssl {}: {}", args[0], String::from_utf8_lossy(&out.stderr));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running PostgreSQL cluster; stopped and removed when dropped.
pub struct PgServer {
    dir: PathBuf,
    /// The address it listens on: loopback, or its namespace's (`start_in`).
    pub host: String,
    /// The network namespace it runs in, if not this process's.
    netns: Option<String>,
    pub port: u16,
    child: Option<Child>,
    pub password_file: PathBuf,
    /// The root that signed the server's certificate (PEM).
    pub ca_file: PathBuf,
    databases: AtomicUsize,
}

impl PgServer {
    pub fn start() -> PgServer {
        PgServer::start_at(None, "127.0.0.1")
    }

    /// A server in the network namespace `netns` (made by the test), listening
    /// on `host`, an address of that namespace, and accepting the app from
    /// any address (it is reached over the test's link, not loopback).
    pub fn start_in(netns: &str, host: &str) -> PgServer {
        PgServer::start_at(Some(netns.to_owned()), host)
    }

    fn start_at(netns: Option<String>, host: &str) -> PgServer {
        let bin = bin_dir();
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "todobackend-pg-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // Secrets of this test run only (never printed).
        let secret = |salt: &str| {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write(salt.as_bytes());
            format!("pw{:016x}", h.finish())
        };
        let superuser_password = secret("super");
        let superuser_file = dir.join("superuser-password");
        std::fs::write(&superuser_file, format!("{superuser_password}\n")).unwrap();
        let password_file = dir.join("app-password");
        std::fs::write(&password_file, format!("{}\n", secret("app"))).unwrap();
        if is_root() {
            let (uid, gid) = postgres_ids();
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
            std::os::unix::fs::chown(&superuser_file, Some(uid), Some(gid)).unwrap();
        }
        // A private CA and a server certificate it signed for `localhost`
        // (not 127.0.0.1: a URL by address is a name the certificate does
        // not hold, for sslmode=verify-full's refusal), so connections
        // negotiate TLS (the URLs' default `sslmode=prefer`) and can verify it.
        let ca_file = make_ca(&dir, "ca");
        issue(&dir, "ca", "server", "DNS:localhost");
        std::fs::set_permissions(dir.join("server.key"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        if is_root() {
            let (uid, gid) = postgres_ids();
            for file in ["server.key", "server.crt"] {
                std::os::unix::fs::chown(dir.join(file), Some(uid), Some(gid)).unwrap();
            }
        }
        let out = as_owner(&bin.join("initdb"))
            .args(["--auth=scram-sha-256", "--username=postgres", "--encoding=UTF8", "--no-sync", "--pwfile"])
            .arg(&superuser_file)
            .arg("-D")
            .arg(dir.join("data"))
            .stdin(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        if netns.is_some() {
            let hba = dir.join("data/pg_hba.conf");
            let mut rules = std::fs::read_to_string(&hba).unwrap();
            rules.push_str("host all all 0.0.0.0/0 scram-sha-256\n");
            std::fs::write(&hba, rules).unwrap();
        }
        let mut server = PgServer {
            dir,
            host: host.to_owned(),
            netns,
            port: free_port(),
            child: None,
            password_file,
            ca_file,
            databases: AtomicUsize::new(0),
        };
        // The port was free a moment ago; another test run may take it
        // first, so a refused bind picks another.
        let mut tries = 0;
        while let Err(why) = server.spawn_and_wait() {
            tries += 1;
            assert!(tries < 3 && why.contains("could not"), "postgres did not start: {why}");
            server.port = free_port();
        }
        let admin = server.superuser("postgres");
        let app_password = std::fs::read_to_string(&server.password_file).unwrap();
        admin
            .batch(&format!(
                "CREATE ROLE {APP_USER} LOGIN PASSWORD '{}'",
                app_password.trim_end_matches('\n').replace('\'', "''")
            ))
            .unwrap();
        server
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// Lets `user` in with a plain password over TLS from loopback (pg_hba
    /// `password`, above the cluster's scram-sha-256 rules), as an old or
    /// misconfigured server would ask, and reloads the rules.
    pub fn allow_plain_password(&self, user: &str) {
        let hba = self.dir.join("data").join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba).unwrap();
        std::fs::write(&hba, format!("hostssl all {user} 127.0.0.1/32 password\n{rules}")).unwrap();
        self.superuser("postgres").batch("SELECT pg_reload_conf()").unwrap();
    }

    /// Starts the stopped server again, on the same port and data.
    pub fn start_again(&mut self) {
        if let Err(why) = self.spawn_and_wait() {
            panic!("postgres did not start again: {why}");
        }
    }

    /// Starts postgres and waits until it accepts connections; the log's
    /// tail when it exits instead.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_file()).unwrap();
        if is_root() {
            let (uid, gid) = postgres_ids();
            std::os::unix::fs::chown(self.log_file(), Some(uid), Some(gid)).unwrap();
        }
        let mut postgres = match &self.netns {
            // `ip netns exec` needs root, so the switch to the cluster's owner
            // comes after it (setpriv); both exec, so the pid is postgres's.
            Some(netns) => {
                let (uid, gid) = postgres_ids();
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", netns, "setpriv", "--reuid", &uid.to_string(), "--regid", &gid.to_string()])
                    .args(["--clear-groups", "--"])
                    .arg(bin_dir().join("postgres"));
                cmd
            }
            None => as_owner(&bin_dir().join("postgres")),
        };
        let child = postgres
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-c", &format!("listen_addresses={}", self.host), "-c", "fsync=off", "-c", "max_connections=200"])
            // Counts of each statement the server ran, for tests that show
            // how often the app asks (the readiness flood test).
            .args(["-c", "shared_preload_libraries=pg_stat_statements"])
            .args(["-c", "ssl=on", "-c", &format!("ssl_cert_file={}", self.dir.join("server.crt").display())])
            .args(["-c", &format!("ssl_key_file={}", self.dir.join("server.key").display())])
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let port = self.port.to_string();
        let host = self.host.clone();
        let log_file = self.log_file();
        let child = self.child.as_mut().expect("just started");
        let outcome = wait_until("PostgreSQL accepts connections", Duration::from_secs(60), || {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_file).unwrap_or_default();
                return Some(Err(format!("postgres exited ({status}): {log}")));
            }
            let ready = Command::new(bin_dir().join("pg_isready"))
                .args(["-q", "-h", &host, "-p", &port])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            ready.then_some(Ok(()))
        });
        if outcome.is_err() {
            self.child = None;
        }
        outcome
    }

    /// Stops it (fast shutdown: sessions are ended) and waits for the exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill with a pid we own and a valid signal.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let _ = child.wait();
        }
    }

    /// A connection as the superuser, to set things up.
    pub fn superuser(&self, dbname: &str) -> Conn {
        let url = format!("postgres://postgres@{}:{}/{dbname}?sslmode=disable", self.host, self.port);
        let file = self.dir.join("superuser-password");
        let env = |name: &str| match name {
            URL_VAR => Some(url.clone()),
            PASSWORD_FILE_VAR => Some(file.to_str().unwrap().to_owned()),
            _ => None,
        };
        Conn::connect(&Target::from_env(&env).unwrap().unwrap()).unwrap()
    }

    /// A new empty database owned by the app's role.
    pub fn database(&self) -> PgDatabase {
        let name = format!("todos_{}", self.databases.fetch_add(1, Ordering::SeqCst));
        self.superuser("postgres").batch(&format!("CREATE DATABASE {name} OWNER {APP_USER}")).unwrap();
        let url = format!("postgres://{APP_USER}@{}:{}/{name}", self.host, self.port);
        PgDatabase { name, url, password_file: self.password_file.clone() }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A database of a test: its URL and password file, as the service gets them.
#[derive(Clone)]
pub struct PgDatabase {
    pub name: String,
    pub url: String,
    pub password_file: PathBuf,
}

impl PgDatabase {
    /// The two variables that select it.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![(URL_VAR, self.url.clone()), (PASSWORD_FILE_VAR, self.password_file.to_str().unwrap().to_owned())]
    }

    pub fn target(&self) -> Target {
        let env = self.env();
        let lookup = |name: &str| env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
        Target::from_env(&lookup).unwrap().unwrap()
    }

    pub fn database(&self) -> Database {
        Database::Postgres(self.target())
    }

    pub fn connect(&self) -> Conn {
        Conn::connect(&self.target()).unwrap()
    }
}

/// The server shared by the tests of one test binary, stopped and removed
/// when the binary exits (statics are never dropped, so at exit).
pub fn shared() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    static mut STOP: Option<(u32, PathBuf)> = None;
    extern "C" fn stop_at_exit() {
        // SAFETY: written once before registration, read only here at exit.
        if let Some((pid, dir)) = unsafe { (*std::ptr::addr_of!(STOP)).clone() } {
            unsafe { libc::kill(pid as i32, libc::SIGINT) };
            let mut status = 0;
            unsafe { libc::waitpid(pid as i32, &mut status, 0) };
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    SERVER.get_or_init(|| {
        let server = PgServer::start();
        let pid = server.child.as_ref().unwrap().id();
        // SAFETY: written once here, inside get_or_init, before atexit runs.
        unsafe {
            *std::ptr::addr_of_mut!(STOP) = Some((pid, server.dir.clone()));
            libc::atexit(stop_at_exit);
        }
        server
    })
}
