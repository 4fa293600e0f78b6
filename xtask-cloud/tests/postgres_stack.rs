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
use std::time::Duration;

use xtask_test_support::{require_docker, unique_name, wait_until};

/// A container the test started, removed with its anonymous volumes when dropped.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "--force", "--volumes", &self.0]).output();
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
    // Hardened as stack.yml's `db` is: the first start and the restart
    // below (an initialised PGDATA, postgres's and mode 0700) both work
    // with only DB_CAPABILITIES.
    let mut hardening = vec!["--read-only", "--tmpfs", "/var/run/postgresql", "--tmpfs", "/tmp", "--cap-drop", "ALL"];
    for cap in DB_CAPABILITIES {
        hardening.extend(["--cap-add", cap]);
    }
    let run = docker(
        &[
            &["run", "--detach", "--name", &name][..],
            &hardening,
            &[
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
            ],
        ]
        .concat(),
    );
    assert!(run.status.success(), "docker run {image}: {}", String::from_utf8_lossy(&run.stderr));
    let ready = || docker(&["exec", &name, "pg_isready", "-U", "todobackend", "-d", "todobackend"]).status.success();
    wait_until("the server answers pg_isready", Duration::from_secs(60), ready);

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
    wait_until("the restarted server answers", Duration::from_secs(60), ready);
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
    use support::debian_image::mirror_in;
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
// ---------------------------------------------------------------- the stack

use std::io::Write;

use support::images::Images;
use support::moto::Moto;
use support::registry::Registry;
use support::swarm::{
    Stack, app_image, assert_acceptance_passes, assert_hardened, docker, docker_login, docker_ok, label_the_node, push,
    spec_image, stack_exists, swarm_lock,
};
use support::variants::{
    ADDED_COLUMN, Added, add_todo, additive, breaking, history, titles, variant_image, wait_for_app,
};
use xtask_test_support::sandbox::{Run, Sandbox};

/// What stack.yml's `db` adds back after dropping every capability.
const DB_CAPABILITIES: [&str; 5] = ["CAP_CHOWN", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_SETGID", "CAP_SETUID"];

/// Removes a swarm secret when dropped (after the stack that uses it).
struct Secret(String);

impl Drop for Secret {
    fn drop(&mut self) {
        let _ = docker(&["secret", "rm", &self.0]);
    }
}

/// One PostgreSQL stack of its own, not deployed yet: the registry holding
/// the tests' PostgreSQL image and version A of the app (the real release
/// image), the secret's name (not created), the edge's host-mode port.
/// Dropped in this order: the stack, then the secret, then the rest.
struct PgStack {
    stack: Stack,
    secret: Secret,
    /// The database's TLS secrets (created in `new`: only the password is
    /// left for the tests to create).
    db_tls: support::postgres::DbTls,
    _tls_secrets: Vec<Secret>,
    password: String,
    sandbox: Sandbox,
    port: u16,
    a: String,
    image_a: String,
    images: Images,
    registry: Registry,
    _moto: Moto,
}

impl PgStack {
    fn new() -> PgStack {
        label_the_node();
        let local_db_image = support::postgres::image();
        let registry = Registry::start_for_ecr();
        let moto = Moto::start();
        let port = xtask_test_support::free_port();
        let host = registry.host();
        // Pushed like any other image: every node pulls it from the
        // registry, and pre-flight checks it there.
        let db_image = format!("{host}/postgres:15");
        let secret = unique_name("todobackend_db_password");
        let db_tls = support::postgres::DbTls::new();
        let sandbox =
            support::swarm::postgres_stack_sandbox(&moto, &registry, port, &db_image, &secret).with_envs(db_tls.env());
        db_tls.create(&sandbox);
        let tls_secrets = db_tls.names().into_iter().map(Secret).collect();
        let stack = Stack(sandbox.stack_name());
        let mut images = Images::new();
        docker_login(&sandbox, &registry);
        docker_ok(&["tag", &local_db_image, &db_image]);
        images.track(&db_image);
        push(&sandbox, &db_image);
        let a = unique_name("a");
        let image_a = app_image(&sandbox, &registry, &a, &mut images);
        push(&sandbox, &image_a);
        support::swarm::push_edge_image(&sandbox, &mut images);
        let password = unique_name("pg-s3cret-");
        PgStack {
            stack,
            secret: Secret(secret),
            db_tls,
            _tls_secrets: tls_secrets,
            password,
            sandbox,
            port,
            a,
            image_a,
            images,
            registry,
            _moto: moto,
        }
    }

    fn name(&self) -> &str {
        &self.stack.0
    }

    fn at(&self, version: &str) -> Sandbox {
        self.sandbox.clone_with(&[("APP_VERSION", version)])
    }

    fn deploy(&self, version: &str, extra: &[&str]) -> Run {
        let mut args = vec!["deploy", "--no-login", "--timeout", "4m"];
        args.extend_from_slice(extra);
        self.at(version).xtask(&args)
    }

    /// `cargo xtask secret create`, the password on stdin.
    fn create_secret(&self) -> Run {
        let mut child = self
            .sandbox
            .command_in(&self.sandbox.root, &["secret", "create", &self.secret.0])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn secret create");
        child.stdin.take().expect("stdin").write_all(format!("{}\n", self.password).as_bytes()).expect("password");
        let out = child.wait_with_output().expect("secret create");
        Run {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The secret, then version A: converged.
    fn deployed(self) -> PgStack {
        self.create_secret().assert_success();
        self.deploy(&self.a, &[]).assert_success().assert_not_leaked(&self.password);
        wait_for_app(self.port);
        self
    }

    /// A variant of the service (more migrations), pushed.
    fn variant(&mut self, version: &str, migrations: &[&Added]) -> String {
        let image = variant_image(&self.sandbox, &self.registry, version, migrations, &mut self.images);
        push(&self.sandbox, &image);
        image
    }

    /// `derive` from `base` with `lines`, pushed.
    fn derived(&mut self, base: &str, version: &str, lines: &str) -> String {
        let tag = format!("{}/todobackend:{version}", self.registry.host());
        self.images.derive(base, &tag, lines);
        push(&self.sandbox, &tag);
        tag
    }

    /// The running container of the stack's `service` on this node.
    fn container(&self, service: &str) -> String {
        let filter = format!("label=com.docker.swarm.service.name={}_{service}", self.name());
        let ids = docker_ok(&["ps", "--quiet", "--filter", &filter]);
        ids.lines().next().unwrap_or_else(|| panic!("no running container of {service}")).to_owned()
    }

    /// SQL in the database, through its local socket (trust inside the
    /// container, as the official image has it): the app's data, as
    /// PostgreSQL holds it.
    fn sql(&self, sql: &str) -> String {
        let db = self.container("db");
        docker_ok(&["exec", &db, "psql", "-U", "todobackend", "-d", "todobackend", "-tAc", sql])
    }

    /// The IDs of the app's tasks that are running now.
    fn app_tasks(&self) -> Vec<String> {
        let tasks = docker_ok(&[
            "service",
            "ps",
            "--quiet",
            "--filter",
            "desired-state=running",
            &format!("{}_app", self.name()),
        ]);
        tasks.lines().map(str::to_owned).collect()
    }
}

/// The book's way (docs/src/scaling-out.md), from a fresh stack: the missing secret is named with
/// its command, `secret create`, then `deploy` converges with db, migrate
/// and app; the app answers from PostgreSQL on every node (no placement
/// constraint); the password is in no inspect output and no log.
#[test]
fn a_fresh_postgres_stack_deploys_after_secret_create_and_keeps_the_password_out_of_sight() {
    let _lock = swarm_lock();
    let fixture = PgStack::new();
    let (stack, secret, port) = (fixture.name().to_owned(), fixture.secret.0.clone(), fixture.port);

    // No secret yet: pre-flight names it with the command that creates it,
    // before the swarm changes.
    for args in [&["deploy", "--no-login", "--dry-run"][..], &["deploy", "--no-login"]] {
        let refused = fixture.at(&fixture.a).xtask(args);
        refused.assert_failure();
        let error = refused.error_text();
        assert!(error.contains(&format!("cargo xtask secret create {secret}")), "{args:?}: {error}");
        assert!(!stack_exists(&stack), "{args:?}: the swarm was touched");
    }

    let created = fixture.create_secret();
    created.assert_success().assert_not_leaked(&fixture.password);
    let deployed = fixture.deploy(&fixture.a, &[]);
    deployed.assert_success().assert_not_leaked(&fixture.password);
    assert!(deployed.stderr.contains("start what the jobs need first: db"), "{}", deployed.stderr);
    // db ran and was healthy before migrate, migrate before the app.
    let (db_first, jobs) = (
        deployed.stderr.find("start what the jobs need first").unwrap(),
        deployed.stderr.find("run the jobs first: migrate"),
    );
    assert!(jobs.is_some_and(|jobs| jobs > db_first), "{}", deployed.stderr);
    let live = &deployed.stdout;
    assert!(live.contains(&format!("Version {} is live", fixture.a)), "{live}");
    for service in ["db ", "migrate completed", "app "] {
        assert!(live.contains(service), "{service:?} missing from {live}");
    }
    wait_for_app(port);

    // The acceptance suite against the deployed app; its todos are in PostgreSQL.
    assert_acceptance_passes(&fixture.image_a, port, "the PostgreSQL stack");
    // Every service read-only with no capability but the five db's
    // entrypoint needs (its server, as postgres, keeps none); the app as uid
    // 10001. The plan of the same file against it: no change, so the
    // spec's reading of the new keys agrees with the CLI's.
    assert_hardened(&stack, "app", &[], Some(10001), true);
    assert_hardened(&stack, "edge", &[], None, true);
    assert_hardened(&stack, "db", &DB_CAPABILITIES, None, true);
    assert_hardened(&stack, "migrate", &[], None, false);
    let plan = fixture.at(&fixture.a).xtask(&["plan", "--exit-code"]);
    assert_eq!(plan.status.code(), Some(0), "{}\n{}", plan.stdout, plan.stderr);
    add_todo(port, "kept in PostgreSQL");
    // Over TLS: every session of the app (verify-full against the CA
    // secret, SCRAM bound to the session, or no connection at all), and
    // the server refuses plain TCP before any password.
    assert_eq!(
        fixture.sql(
            "select bool_and(s.ssl) and count(*) > 0 from pg_stat_activity a join pg_stat_ssl s using (pid) \
             where a.application_name = 'todobackend'"
        ),
        "t"
    );
    let db = fixture.container("db");
    let plain = docker(&[
        "exec",
        &db,
        "psql",
        "host=127.0.0.1 user=todobackend dbname=todobackend sslmode=disable",
        "-tAc",
        "select 1",
    ]);
    assert!(!plain.status.success(), "a plain TCP connection was let in");
    assert!(String::from_utf8_lossy(&plain.stderr).contains("no encryption"), "{plain:?}");
    assert_eq!(fixture.sql("select title from todos where title = 'kept in PostgreSQL'"), "kept in PostgreSQL");
    // Static files come from the binary: no volume, no collectstatic.
    let style =
        xtask_test_support::http::http(&format!("http://127.0.0.1:{port}/static/style.css"), "GET", &[]).unwrap();
    assert_eq!(style.status, 200, "{}", style.body);

    // The app is not pinned: it spreads over the nodes, reached by its tasks'
    // addresses (the edge finds them by DNS). Only db is placed on the data
    // node, reached by name.
    let placement = docker_ok(&[
        "service",
        "inspect",
        &format!("{stack}_app"),
        "--format",
        "{{json .Spec.TaskTemplate.Placement}}",
    ]);
    let placement: serde_json::Value = serde_json::from_str(&placement).expect("placement JSON");
    assert!(placement.get("Constraints").is_none_or(|c| c.as_array().is_some_and(Vec::is_empty)), "{placement}");
    assert_eq!(placement["Preferences"][0]["Spread"]["SpreadDescriptor"], "node.id", "{placement}");
    assert!(placement.get("MaxReplicas").is_none_or(|max| max == 0), "capped per node: {placement}");
    let app_endpoint =
        docker_ok(&["service", "inspect", &format!("{stack}_app"), "--format", "{{.Spec.EndpointSpec.Mode}}"]);
    assert_eq!(app_endpoint, "dnsrr");
    let db = docker_ok(&[
        "service",
        "inspect",
        &format!("{stack}_db"),
        "--format",
        "{{.Spec.EndpointSpec.Mode}} {{json .Spec.TaskTemplate.Placement.Constraints}}",
    ]);
    assert_eq!(db, r#"dnsrr ["node.labels.todobackend.data == true"]"#);

    // The password: in no service's inspect output, in no log, in no output
    // of the xtask (status and logs included).
    let services =
        docker_ok(&["service", "ls", "--quiet", "--filter", &format!("label=com.docker.stack.namespace={stack}")]);
    for service in services.lines() {
        let inspect = docker_ok(&["service", "inspect", service]);
        assert!(!inspect.contains(&fixture.password), "the password is in `docker service inspect {service}`");
        let logs = docker(&["service", "logs", "--raw", service]);
        let logs = format!("{}{}", String::from_utf8_lossy(&logs.stdout), String::from_utf8_lossy(&logs.stderr));
        assert!(!logs.contains(&fixture.password), "the password is in the log of {service}");
    }
    let status = fixture.sandbox.xtask(&["status"]);
    status.assert_success().assert_not_leaked(&fixture.password);
    // db is a long-running service of the stack, not a job.
    let db_line = status.stdout.lines().find(|line| line.starts_with("db ")).expect("status lists db");
    assert!(db_line.contains("replicated") && db_line.contains("1/1") && db_line.contains("converged"), "{db_line}");
    fixture.sandbox.xtask(&["logs", "--tail", "50"]).assert_success().assert_not_leaked(&fixture.password);
    let entries = history(&fixture.sandbox);
    assert_eq!(entries[0]["image"].as_str(), Some(fixture.image_a.as_str()), "the history records the app's image");

    // refresh-auth hands the app a new credential and leaves db running.
    let db_before = fixture.container("db");
    let refreshed = fixture.sandbox.xtask(&["refresh-auth"]);
    refreshed.assert_success();
    assert!(refreshed.stderr.contains(&format!("left alone: {stack}_db")), "{}", refreshed.stderr);
    assert_eq!(fixture.container("db"), db_before, "refresh-auth restarted the database");
    wait_for_app(port);
    assert_eq!(fixture.sql("select count(*) from todos where title = 'kept in PostgreSQL'"), "1");
}

/// The releases of `releases.rs`, on PostgreSQL: a failed release that
/// carries an additive migration keeps A serving with every row; rollback;
/// a breaking migration only with `--allow-breaking-migration`, and back
/// past it only with `rollback --restore-data` (the database job reaches db
/// by name, with no data volume).
#[test]
fn failed_releases_keep_serving_and_rollback_restores_on_postgres() {
    let _lock = swarm_lock();
    let mut fixture = PgStack::new();
    let suffix = unique_name("v");
    let [b, b_crash, c] = ["b", "bcrash", "c"].map(|name| format!("{name}{suffix}"));
    let (additive, breaking) = (additive(), breaking());
    let image_b = fixture.variant(&b, &[&additive]);
    fixture.derived(&image_b, &b_crash, "ENV TODOBACKEND_LISTEN=not-an-address");
    let image_c = fixture.variant(&c, &[&additive, &breaking]);
    let fixture = fixture.deployed();
    let (stack, port, a) = (fixture.name().to_owned(), fixture.port, fixture.a.clone());
    add_todo(port, "written under A");

    let crashed = fixture.deploy(&b_crash, &[]);
    crashed.assert_failure();
    assert!(crashed.stderr.contains(&format!("{}, all additive", additive.name())), "{}", crashed.stderr);
    assert!(crashed.error_text().contains("rolled back"), "{}", crashed.stderr);
    assert_eq!(spec_image(&stack, "app"), fixture.image_a, "the swarm did not roll back to A");
    wait_for_app(port);
    assert_eq!(titles(port), ["written under A"]);
    // A serves on B's schema, in PostgreSQL.
    assert_eq!(
        fixture.sql(&format!(
            "select count(*) from information_schema.columns where table_name = 'todos' and column_name = '{ADDED_COLUMN}'"
        )),
        "1"
    );

    fixture.deploy(&b, &[]).assert_success();
    add_todo(port, "written under B");
    let rollback = fixture.sandbox.xtask(&["rollback", "--no-login", "--timeout", "4m"]);
    rollback.assert_success();
    assert!(rollback.stderr.contains(&format!("from version {b} to {a}")), "{}", rollback.stderr);
    assert_eq!(spec_image(&stack, "app"), fixture.image_a);
    wait_for_app(port);
    assert_eq!(titles(port), ["written under A", "written under B"]);

    let refused = fixture.deploy(&c, &[]);
    refused.assert_failure();
    assert!(refused.error_text().contains(breaking.name()), "{}", refused.stderr);
    fixture.deploy(&c, &["--allow-breaking-migration"]).assert_success();
    add_todo(port, "written under C");

    let back_to_b = fixture.sandbox.xtask(&["rollback", "--no-login", "--to", &b]);
    back_to_b.assert_failure();
    assert!(back_to_b.error_text().contains("--restore-data"), "{}", back_to_b.stderr);
    assert_eq!(spec_image(&stack, "app"), image_c, "a refused rollback changed the swarm");
    let restored = fixture.sandbox.xtask(&["rollback", "--no-login", "--to", &b, "--restore-data", "--timeout", "4m"]);
    restored.assert_success().assert_not_leaked(&fixture.password);
    assert!(restored.stderr.contains("restored "), "{}", restored.stderr);
    assert_eq!(spec_image(&stack, "app"), image_b);
    wait_for_app(port);
    assert_eq!(titles(port), ["written under A", "written under B"]);
    // The database jobs ran on no data volume: the stack has only db's.
    let volumes =
        docker_ok(&["volume", "ls", "--quiet", "--filter", &format!("label=com.docker.stack.namespace={stack}")]);
    assert_eq!(volumes.lines().collect::<Vec<_>>(), [format!("{stack}_db")], "volumes of the stack");
}

/// The database task killed while the app is under requests: the app
/// answers 503 while it is away, then 200 again once the swarm restarted it,
/// with the same app tasks (no app restart). The counts are printed.
#[test]
fn the_app_answers_503_while_the_database_is_away_and_recovers_without_a_restart() {
    let _lock = swarm_lock();
    let fixture = PgStack::new().deployed();
    let port = fixture.port;
    add_todo(port, "before the database went away");
    let tasks_before = fixture.app_tasks();
    let db_before = fixture.container("db");

    // A client, one GET /todos every 50 ms: each answer's status (or
    // "error" when the connection fails), in order.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let client = {
        let (stop, seen) = (stop.clone(), seen.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let url = format!("http://127.0.0.1:{port}/todos");
                let status = match xtask_test_support::http::http(&url, "GET", &[]) {
                    Ok(response) => response.status.to_string(),
                    Err(_) => "error".to_owned(),
                };
                seen.lock().unwrap().push(status);
                // Pacing, not a wait: one request every 50 ms, until stopped.
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let answers = || seen.lock().unwrap().len();
    wait_until("the client's first answers", Duration::from_secs(10), || answers() >= 5);
    assert!(docker(&["kill", &db_before]).status.success(), "docker kill the db task");
    // The swarm starts a new db task (restart_policy any) ...
    wait_until("a new db task", Duration::from_secs(120), || {
        let filter = format!("label=com.docker.swarm.service.name={}_db", fixture.name());
        let ids = docker_ok(&["ps", "--quiet", "--filter", &filter]);
        ids.lines().any(|id| id != db_before)
    });
    // ... and the client gets 200 again, without anyone touching the app.
    let healthy_again = |seen: &[String]| seen.iter().rev().take(10).filter(|status| *status == "200").count() == 10;
    wait_until("ten 200s in a row after the database came back", Duration::from_secs(120), || {
        let seen = seen.lock().unwrap();
        seen.iter().any(|status| status == "503") && healthy_again(&seen)
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    client.join().expect("the client thread");
    let seen = seen.lock().unwrap().clone();

    let count = |status: &str| seen.iter().filter(|seen| *seen == status).count();
    // Runs of the same answer: 200 x40 → 503 x61 → 200 x10.
    let mut runs: Vec<(String, usize)> = Vec::new();
    for status in &seen {
        match runs.last_mut() {
            Some((last, n)) if last == status => *n += 1,
            _ => runs.push((status.clone(), 1)),
        }
    }
    let statuses: Vec<String> = runs.iter().map(|(status, n)| format!("{status} x{n}")).collect();
    println!(
        "GET /todos while the database was killed and restarted: {} requests, {} answered 200, {} answered 503, \
         {} other, {} failed to connect; in order: {}",
        seen.len(),
        count("200"),
        count("503"),
        seen.len() - count("200") - count("503") - count("error"),
        count("error"),
        statuses.join(" → ")
    );
    assert!(count("503") > 0, "no 503 while the database was away: {statuses:?}");
    assert_eq!(count("error"), 0, "the app stopped answering (connection failed): {statuses:?}");
    assert!(
        seen.iter().all(|status| status == "200" || status == "503"),
        "answers other than 200 and 503: {statuses:?}"
    );
    assert_eq!(fixture.app_tasks(), tasks_before, "the app was restarted");
    assert_eq!(titles(port), ["before the database went away"]);
}

/// The todos the app serves, as (id, title), sorted by id.
fn todos(port: u16) -> Vec<(i64, String)> {
    let response =
        xtask_test_support::http::http(&format!("http://127.0.0.1:{port}/todos"), "GET", &[]).expect("GET /todos");
    assert_eq!(response.status, 200, "GET /todos: {}", response.body);
    let list: serde_json::Value = serde_json::from_str(&response.body).expect("a JSON list");
    let mut todos: Vec<(i64, String)> = list
        .as_array()
        .expect("a JSON list")
        .iter()
        .map(|todo| (todo["id"].as_i64().expect("an id"), todo["title"].as_str().unwrap_or_default().to_owned()))
        .collect();
    todos.sort();
    todos
}

/// The book's move (docs/src/scaling-out.md), step by step: the single-node SQLite stack serves
/// todos; the secret; the app stopped; the PostgreSQL stack with no app
/// replica (db, migrate); `move-to-postgres` as a one-off job on the data
/// node; the app on PostgreSQL serves the same todos with the same ids, and
/// a new todo gets an id after the highest one SQLite gave.
#[test]
fn the_single_node_stack_moves_to_postgres_with_every_todo_and_its_id() {
    let _lock = swarm_lock();
    let fixture = PgStack::new();
    let (stack, port, a) = (fixture.name().to_owned(), fixture.port, fixture.a.clone());
    let single_node = xtask_test_support::project_root().join("stack.single-node.yml");
    let on_sqlite =
        fixture.sandbox.clone_with(&[("APP_VERSION", &a), ("STACK_FILE", &single_node.display().to_string())]);
    on_sqlite.xtask(&["deploy", "--no-login", "--timeout", "4m"]).assert_success();
    wait_for_app(port);
    for title in ["first", "deleted", "third"] {
        add_todo(port, title);
    }
    let deleted = todos(port).into_iter().find(|(_, title)| title == "deleted").expect("the todo to delete").0;
    let url = format!("http://127.0.0.1:{port}/todos/{deleted}");
    assert_eq!(xtask_test_support::http::http(&url, "DELETE", &[]).expect("DELETE").status, 204);
    let before = todos(port);
    assert_eq!(before.len(), 2);

    fixture.create_secret().assert_success();
    docker_ok(&["service", "scale", "--detach", &format!("{stack}_app=0")]);
    fixture.at(&a).with_env("APP_REPLICAS", "0").xtask(&["deploy", "--no-login", "--timeout", "4m"]).assert_success();
    let moved = docker(&[
        "service",
        "create",
        "--name",
        &format!("{stack}_move"),
        "--mode",
        "replicated-job",
        // Hardened as the stacks' services are.
        "--read-only",
        "--cap-drop",
        "ALL",
        "--constraint",
        "node.labels.todobackend.data==true",
        "--mount",
        &format!("type=volume,source={stack}_data,target=/data"),
        "--network",
        &format!("{stack}_net"),
        "--secret",
        &format!("source={},target=todobackend_db_password", fixture.secret.0),
        "--secret",
        &format!("source={},target=todobackend_db_ca.pem", fixture.db_tls.secrets[0].1),
        "--env",
        "TODOBACKEND_DATABASE_URL=postgres://todobackend@db:5432/todobackend?sslmode=verify-full",
        "--env",
        "TODOBACKEND_DATABASE_PASSWORD_FILE=/run/secrets/todobackend_db_password",
        "--env",
        "TODOBACKEND_DATABASE_CA_FILE=/run/secrets/todobackend_db_ca.pem",
        &fixture.image_a,
        "move-to-postgres",
        "--from",
        "/data/todobackend.sqlite3",
    ]);
    let logs = docker(&["service", "logs", "--raw", &format!("{stack}_move")]);
    let logs = format!("{}{}", String::from_utf8_lossy(&logs.stdout), String::from_utf8_lossy(&logs.stderr));
    let _ = docker(&["service", "rm", &format!("{stack}_move"), &format!("{stack}_collectstatic")]);
    assert!(moved.status.success(), "the move job failed: {}\n{logs}", String::from_utf8_lossy(&moved.stderr));
    assert!(!logs.contains(&fixture.password), "the password is in the move's log");

    fixture.deploy(&a, &[]).assert_success();
    wait_for_app(port);
    assert_eq!(todos(port), before, "the app on PostgreSQL serves other todos");
    assert_eq!(fixture.sql("select count(*) from todos"), "2");
    add_todo(port, "after the move");
    let newest = todos(port).into_iter().map(|(id, _)| id).max().unwrap();
    assert!(newest > deleted, "a new todo got id {newest}, not after the highest SQLite gave ({deleted})");
}
