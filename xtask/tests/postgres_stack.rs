//! The PostgreSQL stack (`stack.yml`) on the real single-node swarm, with
//! the tests' own PostgreSQL image (Debian's postgresql-15, built offline by
//! `support::postgres`, pushed to the test registry and passed as
//! DB_IMAGE), a local registry and the ECR emulator.
//!
//! First the image itself, then the stack: a fresh deploy (`secret create`,
//! then `deploy`); a failed release with an additive migration; `rollback`
//! and `rollback --restore-data`; the database task killed under requests.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{require_docker, unique_name};

/// A container the test started, removed with its anonymous volumes when dropped.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "--force", "--volumes", &self.0]).output();
    }
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker").args(args).stdin(Stdio::null()).output().expect("docker runs")
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < timeout, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `psql` in the container `name` over TCP to 127.0.0.1 as `user`, the
/// password in the docker CLI's environment (`-e PGPASSWORD` passes it on
/// without putting it in argv).
fn psql(name: &str, user: &str, password: &str, sql: &str) -> std::process::Output {
    Command::new("docker")
        .args(["exec", "-e", "PGPASSWORD", name, "psql", "-h", "127.0.0.1", "-U", user, "-d", user, "-tAc", sql])
        .env("PGPASSWORD", password)
        .stdin(Stdio::null())
        .output()
        .expect("docker exec psql")
}

#[test]
fn the_tests_postgres_image_starts_as_the_official_one_does() {
    require_docker();
    let image = support::postgres::image();
    let dir = tempfile::tempdir().expect("temp dir");
    let password = unique_name("pw-");
    // A secret file as Docker mounts it: the value and one newline.
    std::fs::write(dir.path().join("password"), format!("{password}\n")).expect("password file");
    let name = unique_name("pgimage");
    let _container = Container(name.clone());
    let mount = format!("{}:/run/secrets/db_password:ro", dir.path().join("password").display());
    let run = docker(&[
        "run",
        "--detach",
        "--name",
        &name,
        "--volume",
        &mount,
        "--env",
        "POSTGRES_PASSWORD_FILE=/run/secrets/db_password",
        "--env",
        "POSTGRES_USER=todobackend",
        "--env",
        "POSTGRES_DB=todobackend",
        "--env",
        "PGDATA=/var/lib/postgresql/data/pgdata",
        &image,
    ]);
    assert!(run.status.success(), "docker run {image}: {}", String::from_utf8_lossy(&run.stderr));
    let ready = || docker(&["exec", &name, "pg_isready", "-U", "todobackend", "-d", "todobackend"]).status.success();
    wait_for("the server answers pg_isready", Duration::from_secs(60), ready);

    // The password is the file's content without its newline, over TCP.
    let who = psql(
        &name,
        "todobackend",
        &password,
        "select current_user, current_database(), current_setting('listen_addresses')",
    );
    assert!(who.status.success(), "psql with the password: {}", String::from_utf8_lossy(&who.stderr));
    assert_eq!(String::from_utf8_lossy(&who.stdout).trim(), "todobackend|todobackend|*");
    let wrong = psql(&name, "todobackend", "not-the-password", "select 1");
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("password authentication failed"), "{wrong:?}");
    // The server runs as postgres, and owns its data.
    let owner = docker(&["exec", &name, "stat", "-c", "%U %a", "/var/lib/postgresql/data/pgdata"]);
    assert_eq!(String::from_utf8_lossy(&owner.stdout).trim(), "postgres 700");
    let logs = docker(&["logs", &name]);
    let logs = format!("{}{}", String::from_utf8_lossy(&logs.stdout), String::from_utf8_lossy(&logs.stderr));
    assert!(!logs.contains(&password), "the password is in the server's log");

    // A restart keeps the data: an initialised PGDATA is not initialised again.
    let created = psql(&name, "todobackend", &password, "create table kept (id int); insert into kept values (7)");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    assert!(docker(&["restart", &name]).status.success());
    wait_for("the restarted server answers", Duration::from_secs(60), ready);
    let kept = psql(&name, "todobackend", &password, "select id from kept");
    assert_eq!(String::from_utf8_lossy(&kept.stdout).trim(), "7", "{}", String::from_utf8_lossy(&kept.stderr));
    let logs = docker(&["logs", &name]);
    assert_eq!(String::from_utf8_lossy(&logs.stderr).matches("initialised ").count(), 1);

    // Without a password an empty PGDATA is refused, saying what to set.
    let refused = docker(&["run", "--rm", &image]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("POSTGRES_PASSWORD_FILE"), "{refused:?}");
}

#[test]
fn the_mirror_is_read_from_both_forms_of_apt_sources() {
    use support::postgres::mirror_in;
    let deb822 = "Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\
                  Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
                  Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\nComponents: main\n";
    assert_eq!(mirror_in(deb822).as_deref(), Some("http://mirror.example/debian"));
    let disabled = "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\nComponents: main\n";
    assert_eq!(mirror_in(disabled), None);
    let one_line = "# deb http://old.example/debian bookworm main\n\
                    deb [signed-by=/k.gpg arch=amd64] http://line.example/debian bookworm main contrib\n";
    assert_eq!(mirror_in(one_line).as_deref(), Some("http://line.example/debian"));
    assert_eq!(mirror_in("deb http://x.example/debian bullseye main\n"), None);
}
