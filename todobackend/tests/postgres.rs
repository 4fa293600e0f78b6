//! The PostgreSQL backend against a real PostgreSQL server on loopback
//! (Debian's, started by the tests): migrations and their safety rules,
//! backups and restore, the database going away and coming back while the
//! app serves, the move from SQLite, TLS, and the binary's one-line errors.

mod common;

use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::postgres::{PgDatabase, PgServer, shared};
use common::{TempDir, json, serving_url, wait_until};
use serde_json::json;
use todobackend::client;
use todobackend::http::server;
use todobackend::store::Database;
use todobackend::store::catalog::{Migration, PG_MIGRATIONS};
use todobackend::store::postgres::client::{Conn, Pool};
use todobackend::store::postgres::todos::Session;
use todobackend::store::postgres::{backups, migrate};
use todobackend::store::todos::Todos;
use todobackend::store::todos::{KEY_LIFETIME_SECS, Keyed, NewTodo, Todo};

const BIN: &str = env!("CARGO_BIN_EXE_todobackend");

const FIRST: Migration = Migration { name: "0001_create_a.sql", sql: "CREATE TABLE a (x BIGINT);" };
const ADDITIVE: Migration =
    Migration { name: "0002_add_note.sql", sql: "-- additive\nALTER TABLE a ADD COLUMN note TEXT;" };
const BREAKING: Migration = Migration { name: "0003_drop_note.sql", sql: "ALTER TABLE a DROP COLUMN note;" };

/// Runs the binary with only the given database variables.
fn run(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for var in [
        "TODOBACKEND_LISTEN",
        "TODOBACKEND_DB",
        "TODOBACKEND_DATABASE_URL",
        "TODOBACKEND_DATABASE_PASSWORD_FILE",
        "TODOBACKEND_DATABASE_CA_FILE",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let child = cmd.spawn().expect("run binary");
    child.wait_with_output().expect("collect output")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_one_line_error(out: &Output, fragment: &str) {
    let text = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("error: ") && text.contains(fragment), "{text}");
}

/// The password must not appear anywhere the binary wrote.
fn assert_no_password(db: &PgDatabase, out: &Output) {
    let password = std::fs::read_to_string(&db.password_file).unwrap();
    let password = password.trim_end();
    assert!(!stderr(out).contains(password) && !stdout(out).contains(password), "the password was printed");
}

fn rows(conn: &Conn) -> Vec<i64> {
    conn.query("SELECT x FROM a ORDER BY x", &[]).unwrap().iter().map(|row| row.get(0)).collect()
}

fn recorded(conn: &Conn) -> Vec<(i32, String)> {
    conn.query("SELECT version, name FROM schema_migrations ORDER BY version", &[])
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

fn migrate_list(db: &PgDatabase, list: &[Migration]) -> Result<migrate::Migrated, String> {
    migrate::migrate(&db.connect(), &db.target(), list)
}

#[test]
fn migrate_applies_then_finds_nothing_to_do_and_serve_needs_it() {
    let db = shared().database();
    let out = run(&["serve", "--listen", "127.0.0.1:0"], &db.env());
    assert_one_line_error(&out, "pending migration(s)");
    let out = run(&["migrate"], &db.env());
    assert!(out.status.success(), "{}", stderr(&out));
    let applied = stderr(&out).lines().filter(|l| l.starts_with("applied migration ")).count();
    assert_eq!(applied, PG_MIGRATIONS.len(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("{} is now at version {}", db.target().display(), PG_MIGRATIONS.len())));
    assert_no_password(&db, &out);
    let out = run(&["migrate"], &db.env());
    assert!(stderr(&out).contains("no pending migrations"), "{}", stderr(&out));
    let out = run(&["migrations", "--json"], &db.env());
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(report["database"], "present");
    assert_eq!(report["can_serve"], true);
    assert_eq!(report["schema_version"], PG_MIGRATIONS.len());
}

#[test]
fn two_concurrent_migrate_processes_apply_each_migration_once() {
    let db = shared().database();
    let children: Vec<_> = (0..2)
        .map(|_| {
            let mut cmd = Command::new(BIN);
            cmd.arg("migrate").env_remove("TODOBACKEND_DB").stdout(Stdio::piped()).stderr(Stdio::piped());
            cmd.envs(db.env());
            cmd.spawn().unwrap()
        })
        .collect();
    let outs: Vec<Output> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    let mut applied = Vec::new();
    for out in &outs {
        assert!(out.status.success(), "{}", stderr(out));
        applied.extend(stderr(out).lines().filter(|l| l.starts_with("applied migration ")).map(str::to_owned));
    }
    applied.sort();
    let expected: Vec<String> = PG_MIGRATIONS.iter().map(|m| format!("applied migration {}", m.name)).collect();
    assert_eq!(applied, expected);
    assert_eq!(recorded(&db.connect()).len(), PG_MIGRATIONS.len());
}

#[test]
fn concurrent_migrates_serialise_on_the_advisory_lock() {
    // A slow migration: without the lock both would start applying it.
    let slow = Migration { name: "0002_slow.sql", sql: "SELECT pg_sleep(0.5); CREATE TABLE b (y BIGINT);" };
    let db = shared().database();
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let db = db.clone();
            thread::spawn(move || migrate_list(&db, &[FIRST, slow]).map(|m| m.outcome.applied))
        })
        .collect();
    let mut applied: Vec<&str> = runs.into_iter().flat_map(|r| r.join().unwrap().unwrap()).collect();
    applied.sort();
    assert_eq!(applied, ["0001_create_a.sql", "0002_slow.sql"]);
}

#[test]
fn a_failing_migration_leaves_nothing_applied() {
    let db = shared().database();
    let broken = Migration { name: "0002_broken.sql", sql: "CREATE TABLE c (z BIGINT); SELECT no_such_column FROM a;" };
    let err = migrate_list(&db, &[FIRST, broken]).map(|_| ()).unwrap_err();
    assert!(err.starts_with("migration 0002_broken.sql failed: ") && err.contains("no_such_column"), "{err}");
    let conn = db.connect();
    let tables: i64 = conn.query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", &[]).unwrap().get(0);
    assert_eq!(tables, 0, "the first migration or the record table stayed");
    // Applied ones stay when a later one fails.
    migrate_list(&db, &[FIRST]).unwrap();
    migrate_list(&db, &[FIRST, broken]).map(|_| ()).unwrap_err();
    assert_eq!(recorded(&db.connect()), [(1, FIRST.name.to_owned())]);
    assert!(db.connect().query_one("SELECT to_regclass('c') IS NULL", &[]).unwrap().get::<_, bool>(0));
}

#[test]
fn a_changed_applied_migration_is_refused_by_migrate_and_serve() {
    let db = shared().database();
    migrate_list(&db, &[FIRST]).unwrap();
    let edited = Migration { name: FIRST.name, sql: "CREATE TABLE a (x BIGINT, y TEXT);" };
    let err = migrate_list(&db, &[edited, ADDITIVE]).map(|_| ()).unwrap_err();
    assert!(err.contains("0001_create_a.sql was changed after it was applied"), "{err}");
    assert_eq!(recorded(&db.connect()).len(), 1, "something was applied after the refusal");
    let err = migrate::ensure_migrated(&db.connect(), &db.target(), &[edited]).unwrap_err();
    assert!(err.starts_with("refusing to start") && err.contains("was changed"), "{err}");
}

#[test]
fn an_older_binary_serves_an_additive_newer_schema_and_refuses_a_breaking_one() {
    let db = shared().database();
    migrate_list(&db, &[FIRST, ADDITIVE]).unwrap();
    migrate::ensure_migrated(&db.connect(), &db.target(), &[FIRST]).unwrap();
    let older = migrate_list(&db, &[FIRST]).unwrap();
    assert_eq!(older.outcome.newer, ["0002_add_note.sql"]);
    assert!(older.outcome.applied.is_empty());
    migrate_list(&db, &[FIRST, ADDITIVE, BREAKING]).unwrap();
    let err = migrate::ensure_migrated(&db.connect(), &db.target(), &[FIRST]).unwrap_err();
    assert!(err.contains("0003_drop_note.sql is not additive"), "{err}");
    let err = migrate_list(&db, &[FIRST]).map(|_| ()).unwrap_err();
    assert!(err.contains("0003_drop_note.sql is not additive"), "{err}");
}

#[test]
fn migrate_backs_up_first_and_restore_brings_the_rows_back() {
    let db = shared().database();
    let first = migrate_list(&db, &[FIRST]).unwrap();
    assert_eq!(first.backup, None, "a new database has nothing to back up");
    let conn = db.connect();
    conn.batch("INSERT INTO a (x) VALUES (1), (2)").unwrap();
    let migrated = migrate_list(&db, &[FIRST, ADDITIVE]).unwrap();
    let backup = migrated.backup.expect("a backup before 0002");
    assert!(backup.starts_with("1-") && backup.ends_with("-before-0002_add_note"), "{backup}");
    conn.batch("INSERT INTO a (x) VALUES (3)").unwrap();
    // `backups` prints the same format as on SQLite.
    let out = run(&["backups"], &db.env());
    let line = stdout(&out);
    assert!(line.contains("  schema 1  before-migration  ") && line.trim_end().ends_with(&backup), "{line}");
    let out = run(&["backups", "--json"], &db.env());
    let listed: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(listed[0]["file"], backup.as_str());
    assert_eq!(listed[0]["before"], "0002_add_note");

    let out = run(&["restore", "--before", "0002_add_note", "--dry-run"], &db.env());
    assert!(out.status.success() && stderr(&out).contains("dry run"), "{}", stderr(&out));
    assert_eq!(rows(&conn), [1, 2, 3]);
    let out = run(&["restore", "--before", "0002_add_note"], &db.env());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_no_password(&db, &out);
    let restored: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(restored["restored"], backup.as_str());
    assert_eq!(restored["schema_version"], 1);
    let kept = restored["kept"].as_str().unwrap().to_owned();
    assert!(kept.starts_with("2-") && kept.ends_with("-replaced-by-restore"), "{kept}");
    let conn = db.connect();
    assert_eq!(rows(&conn), [1, 2]);
    assert_eq!(recorded(&conn).len(), 1);
    let kinds: Vec<String> = backups::list(&conn).unwrap().iter().map(|b| b.kind().to_owned()).collect();
    assert_eq!(kinds, ["replaced-by-restore", "before-migration"]);
    // A restore before a migration older than every backup is refused.
    let out = run(&["restore", "--before", "0001_create_a"], &db.env());
    assert_one_line_error(&out, "no backup taken before 0001_create_a");
}

#[test]
fn backups_keep_the_newest_five_and_carry_the_identity_position() {
    let db = shared().database();
    migrate_list(&db, PG_MIGRATIONS).unwrap();
    let conn = db.connect();
    let id: i64 = conn.query_one("INSERT INTO todos (title) VALUES ('a') RETURNING id", &[]).unwrap().get(0);
    conn.batch("DELETE FROM todos").unwrap();
    let mut names = Vec::new();
    for _ in 0..6 {
        names.push(backups::before_migration(&conn, 1, "0002_x").unwrap());
    }
    let kept: Vec<String> = backups::list(&conn).unwrap().into_iter().map(|b| b.file).collect();
    let newest_five: Vec<String> = names.iter().rev().take(5).cloned().collect();
    assert_eq!(kept, newest_five);
    let schemas: i64 = conn
        .query_one("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'todobackend\\_backup\\_%'", &[])
        .unwrap()
        .get(0);
    assert_eq!(schemas, 5, "the oldest backup's schema was not dropped");
    // Restored, the ids go on after the last one given out, not reused.
    backups::restore(&conn, "0002_x", std::path::Path::new("test")).unwrap();
    let next: i64 = conn.query_one("INSERT INTO todos (title) VALUES ('b') RETURNING id", &[]).unwrap().get(0);
    assert!(next > id, "id {next} reused after restore (had {id})");
}

#[test]
fn a_backup_that_cannot_be_taken_applies_nothing() {
    let db = shared().database();
    migrate_list(&db, &[FIRST]).unwrap();
    // The catalog schema exists but belongs to someone else: the app's role
    // cannot create the catalog in it, so the backup fails.
    shared().superuser(&db.name).batch("CREATE SCHEMA todobackend_backups").unwrap();
    let err = migrate_list(&db, &[FIRST, ADDITIVE]).map(|_| ()).unwrap_err();
    assert!(err.contains("no migration was applied") && err.contains("permission denied"), "{err}");
    assert_eq!(err.lines().count(), 1);
    assert_eq!(recorded(&db.connect()).len(), 1);
}

fn post(base: &str, title: &str) -> client::Response {
    let body = json!({ "title": title }).to_string();
    client::request(
        "POST",
        &format!("{base}/todos"),
        &[("Content-Type", "application/json")],
        Some(body.as_bytes()),
        Duration::from_secs(30),
    )
    .unwrap()
}

fn get(base: &str, path: &str) -> client::Response {
    client::request("GET", &format!("{base}{path}"), &[], None, Duration::from_secs(30)).unwrap()
}

/// A link this test makes and removes: a network namespace for the
/// database node, joined to this one by a veth pair on a /24 of 10/8 no
/// interface here uses. `cut` sets this side's end down (the node's link
/// dies: nothing it sent is acknowledged, and connecting fails); `restore`
/// sets it up again.
struct Link {
    netns: String,
    veth: String,
    network: [u8; 3],
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output().expect("run ip (iproute2)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl Link {
    fn make() -> Link {
        let pid = std::process::id();
        let taken = String::from_utf8(Command::new("ip").args(["-o", "-4", "addr"]).output().unwrap().stdout).unwrap();
        let network = (0..250u32)
            .map(|i| [10, 200 + ((pid + i) % 50) as u8, ((pid / 50 + i) % 250) as u8])
            .find(|n| !taken.contains(&format!(" {}.{}.{}.", n[0], n[1], n[2])))
            .expect("a free 10.x.y.0/24");
        let link = Link { netns: format!("tbpg-{pid}"), veth: format!("tbpg{pid}"), network };
        ip(&["netns", "add", &link.netns]);
        ip(&["link", "add", &link.veth, "type", "veth", "peer", "name", "eth0", "netns", &link.netns]);
        ip(&["addr", "add", &format!("{}/24", link.address(1)), "dev", &link.veth]);
        ip(&["link", "set", &link.veth, "up"]);
        let inside = |args: &[&str]| ip(&[&["netns", "exec", link.netns.as_str(), "ip"], args].concat());
        inside(&["addr", "add", &format!("{}/24", link.address(2)), "dev", "eth0"]);
        inside(&["link", "set", "eth0", "up"]);
        inside(&["link", "set", "lo", "up"]);
        link
    }

    fn address(&self, host: u8) -> String {
        let [a, b, c] = self.network;
        format!("{a}.{b}.{c}.{host}")
    }

    fn cut(&self) {
        ip(&["link", "set", &self.veth, "down"]);
    }

    fn restore(&self) {
        ip(&["link", "set", &self.veth, "up"]);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Removes the veth pair with it.
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).status();
    }
}

#[test]
fn a_cut_link_to_the_database_fails_requests_fast_with_pooled_connections_open_and_they_recover() {
    let link = Link::make();
    let pg = PgServer::start_in(&link.netns, &link.address(2));
    let db = pg.database();
    migrate_list(&db, PG_MIGRATIONS).unwrap();
    let dir = TempDir::new();
    let handle =
        server::start_on("127.0.0.1:0", &db.database(), &dir.join("public"), server::Options::default()).unwrap();
    let base = handle.url();
    // Several connections in the pool: concurrent requests each take one.
    thread::scope(|scope| {
        for i in 0..4 {
            let base = &base;
            scope.spawn(move || assert_eq!(post(base, &format!("before {i}")).status, 201));
        }
    });

    link.cut();
    let cut = Instant::now();
    for _ in 0..4 {
        let asked = Instant::now();
        let r = get(&base, "/todos");
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.header("Retry-After"), Some("1"));
        assert!(asked.elapsed() < Duration::from_secs(4), "a request took {:?} with the link cut", asked.elapsed());
    }
    // The old pool waited for the 5 s query timeout once per pooled
    // connection (20 s for these four requests).
    assert!(cut.elapsed() < Duration::from_secs(7), "four requests took {:?} with the link cut", cut.elapsed());

    link.restore();
    let list = wait_until("GET /todos works again", Duration::from_secs(15), || {
        let r = get(&base, "/todos");
        (r.status == 200).then_some(json(&r))
    });
    assert_eq!(list.as_array().unwrap().len(), 4);
}

#[test]
fn requests_get_503_quickly_while_the_database_is_down_and_recover_without_a_restart() {
    let mut pg = PgServer::start();
    let db = pg.database();
    migrate_list(&db, PG_MIGRATIONS).unwrap();
    let dir = TempDir::new();
    let handle =
        server::start_on("127.0.0.1:0", &db.database(), &dir.join("public"), server::Options::default()).unwrap();
    let base = handle.url();
    let created = json(&post(&base, "before"));
    assert_eq!(get(&base, "/readyz").status, 200);

    pg.stop();
    let started = Instant::now();
    let r = post(&base, "while down");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("Retry-After"), Some("1"));
    assert_eq!(json(&r), json!({ "error": "database unavailable" }));
    assert!(started.elapsed() < Duration::from_secs(5), "POST took {:?}", started.elapsed());
    // /readyz may answer from a check up to a second old; each answer comes
    // within the check's limit (1 s to answer, 3 s to connect).
    let stopped = Instant::now();
    let r = wait_until("/readyz answers 503", Duration::from_secs(10), || {
        let asked = Instant::now();
        let r = get(&base, "/readyz");
        assert!(asked.elapsed() < Duration::from_secs(5), "/readyz took {:?}", asked.elapsed());
        (r.status == 503).then_some(r)
    });
    assert_eq!(r.header("Retry-After"), Some("1"));
    assert!(stopped.elapsed() < Duration::from_secs(6), "/readyz turned 503 after {:?}", stopped.elapsed());
    assert_eq!(get(&base, "/todos").status, 503);
    assert_eq!(get(&base, "/healthz").status, 200, "liveness does not depend on the database");

    pg.start_again();
    wait_until("POST /todos works again", Duration::from_secs(30), || {
        (post(&base, "after").status == 201).then_some(())
    });
    wait_until("/readyz answers 200 again", Duration::from_secs(10), || {
        (get(&base, "/readyz").status == 200).then_some(())
    });
    let list = json(&get(&base, "/todos"));
    let titles: Vec<&str> = list.as_array().unwrap().iter().map(|t| t["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["before", "after"]);
    assert_eq!(list[0]["id"], created["id"]);
    handle.shutdown();
}

#[test]
fn the_binary_migrates_serves_and_passes_the_acceptance_suite_on_postgres() {
    let db = shared().database();
    let out = run(&["migrate"], &db.env());
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = TempDir::new();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--static-root"]).arg(dir.join("public"));
    cmd.env_remove("TODOBACKEND_DB").envs(db.env()).stdout(Stdio::null()).stderr(Stdio::piped());
    // The drain is tested in hostile.rs; a short one keeps this quick.
    cmd.env("TODOBACKEND_DRAIN", "100ms");
    let mut child = cmd.spawn().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
    let first = lines.next().unwrap().unwrap();
    let url = serving_url(&first);
    assert!(first.contains(&format!("database={}", db.target().display())), "{first}");
    let acceptance = run(&["acceptance", "--url", &url], &[]);
    assert!(acceptance.status.success(), "{}", stderr(&acceptance));
    assert!(stderr(&acceptance).lines().last().unwrap().ends_with("passed, 0 failed"), "{}", stderr(&acceptance));
    // SAFETY: a signal to the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let log: Vec<String> = lines.map_while(Result::ok).collect();
    let password = std::fs::read_to_string(&db.password_file).unwrap();
    assert!(!first.contains(password.trim_end()) && !log.iter().any(|l| l.contains(password.trim_end())));
    assert!(log.iter().any(|l| l.contains("method=POST path=/todos status=201")), "{log:?}");
}

#[test]
fn migrate_waits_for_a_database_that_is_not_up_yet() {
    let mut pg = PgServer::start();
    let db = pg.database();
    pg.stop();
    let mut cmd = Command::new(BIN);
    cmd.arg("migrate").env_remove("TODOBACKEND_DB").stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.envs(db.env());
    let mut child = cmd.spawn().unwrap();
    let mut stderr_pipe = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stderr_pipe, &mut first).unwrap();
    assert!(first.starts_with("waiting for the database"), "{first}");
    pg.start_again();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr_pipe, &mut rest).unwrap();
    assert!(child.wait().unwrap().success(), "{first}{rest}");
    assert!(rest.contains("is now at version"), "{rest}");
}

#[test]
fn move_to_postgres_copies_every_row_with_its_id_and_refuses_a_non_empty_target() {
    let dir = TempDir::new();
    let sqlite = common::migrated_db(&dir);
    let source = rusqlite::Connection::open(&sqlite).unwrap();
    for (title, completed, order) in
        [("one", 0, Some(3)), ("two", 1, None), ("three", 0, Some(1)), ("four", 1, Some(2))]
    {
        source
            .execute(
                r#"INSERT INTO todos (title, completed, "order") VALUES (?1, ?2, ?3)"#,
                rusqlite::params![title, completed, order],
            )
            .unwrap();
    }
    // A keyed POST (id 5), whose key moves with the todo as it was created.
    let keyed = NewTodo { title: "keyed".into(), completed: true, order: None };
    let Keyed::Created(keyed_todo) =
        todobackend::store::sqlite::create_once(&source, "moved-key", &keyed, unix_now()).unwrap()
    else {
        panic!("not created")
    };
    // Gaps, and the highest id deleted: it must not be given out again.
    source.execute("DELETE FROM todos WHERE title IN ('two', 'four', 'keyed')", []).unwrap();
    drop(source);
    let sqlite_arg = sqlite.to_str().unwrap();

    let db = shared().database();
    let out = run(&["move-to-postgres", "--from", sqlite_arg], &db.env());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_no_password(&db, &out);
    let summary: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(summary["moved"]["todos"], 2, "{summary}");
    assert_eq!(summary["moved"]["idempotency_keys"], 1, "{summary}");

    // The moved database serves the same todos with the same ids.
    let sqlite_server = common::start_server_from(&sqlite, &dir);
    let static_root = dir.join("public");
    let pg_server = server::start_on("127.0.0.1:0", &db.database(), &static_root, server::Options::default()).unwrap();
    let strip = |v: serde_json::Value| -> Vec<serde_json::Value> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let mut t = t.clone();
                t.as_object_mut().unwrap().remove("url");
                t
            })
            .collect()
    };
    let from_sqlite = strip(json(&get(&sqlite_server.url(), "/todos")));
    let from_pg = strip(json(&get(&pg_server.url(), "/todos")));
    assert_eq!(from_pg, from_sqlite);
    assert_eq!(from_pg.iter().map(|t| t["id"].as_i64().unwrap()).collect::<Vec<_>>(), [1, 3]);
    let next = json(&post(&pg_server.url(), "six"));
    assert_eq!(next["id"], 6, "the sequence did not continue after SQLite's highest id");
    // The moved key answers its POST again on PostgreSQL, creating nothing.
    let body = json!({ "title": "keyed", "completed": true }).to_string();
    let headers = [("Content-Type", "application/json"), ("Idempotency-Key", "moved-key")];
    let url = format!("{}/todos", pg_server.url());
    let again = client::request("POST", &url, &headers, Some(body.as_bytes()), Duration::from_secs(30)).unwrap();
    assert_eq!((again.status, again.header("Idempotent-Replayed")), (201, Some("true")), "{}", again.text());
    assert_eq!(json(&again)["id"], keyed_todo.id);
    assert_eq!(json(&get(&pg_server.url(), "/todos")).as_array().map(Vec::len), Some(3));
    pg_server.shutdown();

    let out = run(&["move-to-postgres", "--from", sqlite_arg], &db.env());
    assert_one_line_error(&out, "already holds");
    let out = run(&["move-to-postgres", "--from", "/nonexistent.sqlite3"], &db.env());
    assert_one_line_error(&out, "does not exist");
    let out = run(&["move-to-postgres", "--from", sqlite_arg], &[]);
    assert_one_line_error(&out, "TODOBACKEND_DATABASE_URL");
}

/// Whether the database holds a table of that name (the app's schema).
fn has_table(db: &PgDatabase, table: &str) -> bool {
    db.connect().query_one("SELECT to_regclass($1) IS NOT NULL", &[&table]).unwrap().get(0)
}

#[test]
fn move_to_postgres_names_every_value_postgresql_cannot_store_and_moves_nothing() {
    let dir = TempDir::new();
    let sqlite = common::migrated_db(&dir);
    // Written straight into SQLite: the API refuses these titles now.
    let source = rusqlite::Connection::open(&sqlite).unwrap();
    let add = |title: &str| source.execute("INSERT INTO todos (title) VALUES (?1)", [title]).unwrap();
    add("fine"); // id 1
    add("bad\u{0}title"); // id 2: U+0000
    source.execute("INSERT INTO todos (title) VALUES (CAST(X'66ff6f' AS TEXT))", []).unwrap(); // id 3: not UTF-8
    for n in 4..=24 {
        add(&format!("nul {n}\u{0}"));
    }
    source
        .execute(
            "INSERT INTO idempotency_keys (idempotency_key, todo_id, title, completed, created_at) \
             VALUES ('k', 1, ?1, 0, 0)",
            ["x\u{0}"],
        )
        .unwrap();
    let sqlite_arg = sqlite.to_str().unwrap();
    let db = shared().database();

    let out = run(&["move-to-postgres", "--from", sqlite_arg], &db.env());
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    let mut lines = text.lines();
    let first = lines.next().unwrap();
    assert!(
        first.starts_with("error: refusing to move: 24 value(s) in ")
            && first.contains("cannot be stored by PostgreSQL, so nothing was moved"),
        "{text}"
    );
    let listed: Vec<&str> = lines.collect();
    // One line per value, tables in name order, rows in id order; the first
    // 20, then how many more.
    assert_eq!(listed.len(), 21, "{text}");
    assert_eq!(
        listed[..3],
        [
            "  table idempotency_keys, row rowid 1, column title: text holds U+0000 (NUL) at byte 1, which PostgreSQL text cannot store",
            "  table todos, row id 2, column title: text holds U+0000 (NUL) at byte 3, which PostgreSQL text cannot store",
            "  table todos, row id 3, column title: text is not UTF-8 (at byte 1), which PostgreSQL text cannot store",
        ],
        "{text}"
    );
    assert!(listed[19].starts_with("  table todos, row id 20, column title: text holds U+0000"), "{text}");
    assert_eq!(listed[20], "  and 4 more", "{text}");
    assert_no_password(&db, &out);
    // Found before the target was touched: not even its schema was made.
    assert!(!has_table(&db, "todos"), "the target was migrated");

    // A value of the wrong type for its PostgreSQL column (SQLite's INTEGER
    // column keeps text it cannot convert) is found in the target's
    // transaction, before the first row goes in.
    source.execute("DELETE FROM todos WHERE id > 1", []).unwrap();
    source.execute("DELETE FROM idempotency_keys", []).unwrap();
    source.execute(r#"UPDATE todos SET "order" = 'abc' WHERE id = 1"#, []).unwrap();
    let out = run(&["move-to-postgres", "--from", sqlite_arg], &db.env());
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    // After the progress lines (the target was migrated): the error.
    let text = &text[text.find("error: ").unwrap_or(0)..];
    assert!(text.starts_with("error: refusing to move: 1 value(s) in "), "{text}");
    assert!(
        text.contains(
            "\n  table todos, row id 1, column order: a SQLite text of 3 byte(s) does not fit PostgreSQL type int8"
        ),
        "{text}"
    );
    assert_eq!(text.lines().count(), 2, "{text}");
    let rows: i64 = db.connect().query_one("SELECT count(*) FROM todos", &[]).unwrap().get(0);
    assert_eq!(rows, 0, "nothing was moved");

    // Corrected in SQLite, the same database moves.
    source.execute(r#"UPDATE todos SET "order" = 7 WHERE id = 1"#, []).unwrap();
    let out = run(&["move-to-postgres", "--from", sqlite_arg], &db.env());
    assert!(out.status.success(), "{}", stderr(&out));
    let moved: (String, Option<i64>) = {
        let row = db.connect().query_one(r#"SELECT title, "order" FROM todos WHERE id = 1"#, &[]).unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(moved, ("fine".to_string(), Some(7)));
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn a_keyed_post_that_loses_the_race_rolls_back_and_answers_with_the_winners_todo() {
    let db = shared().database();
    migrate_list(&db, PG_MIGRATIONS).unwrap();
    let now = unix_now();
    // The winner: a keyed POST's transaction, not yet committed.
    let winner = db.connect();
    winner.batch("BEGIN").unwrap();
    let id: i64 = winner
        .query_one("INSERT INTO todos (title, completed) VALUES ('won', false) RETURNING id", &[])
        .unwrap()
        .get(0);
    winner
        .execute(
            r#"INSERT INTO idempotency_keys (idempotency_key, todo_id, title, completed, "order", created_at)
               VALUES ('k', $1, 'won', false, NULL, $2)"#,
            &[&id, &now],
        )
        .unwrap();
    // The loser finds no key (uncommitted), inserts its todo, and waits on
    // the key.
    let target = db.target();
    let loser = thread::spawn(move || {
        let pool = Pool::new(target, 1);
        let session = Session::new(&pool);
        let outcome = session.create_once("k", &NewTodo { title: "won".into(), completed: false, order: None }, now);
        // Its connection is usable afterwards: not left in a transaction.
        let mut listed = 0;
        let list = session.for_each(&mut |_| {
            listed += 1;
            true
        });
        (outcome, list.map(|()| listed))
    });
    let watcher = db.connect();
    wait_until("the second POST waits for the first one's key", Duration::from_secs(10), || {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .unwrap()
            .get(0);
        (waiting == 1).then_some(())
    });
    winner.batch("COMMIT").unwrap();
    let (outcome, listed) = loser.join().unwrap();
    let won = Todo { id, title: "won".into(), completed: false, order: None };
    assert_eq!(outcome.unwrap(), Keyed::Replayed(won));
    assert_eq!(listed.unwrap(), 1, "the loser's todo was kept");
    let rows: i64 = watcher.query_one("SELECT count(*) FROM todos", &[]).unwrap().get(0);
    assert_eq!(rows, 1);
}

#[test]
fn keys_are_forgotten_after_24_hours_on_postgres_too() {
    let db = shared().database();
    migrate_list(&db, PG_MIGRATIONS).unwrap();
    let pool = Pool::new(db.target(), 1);
    let session = Session::new(&pool);
    let new = NewTodo { title: "a".into(), completed: false, order: Some(1) };
    let now = unix_now();
    let Keyed::Created(first) = session.create_once("old", &new, now).unwrap() else { panic!("not created") };
    let last_second = now + KEY_LIFETIME_SECS;
    assert_eq!(session.create_once("old", &new, last_second).unwrap(), Keyed::Replayed(first.clone()));
    let other = NewTodo { title: "b".into(), ..new.clone() };
    assert_eq!(session.create_once("old", &other, last_second).unwrap(), Keyed::OtherRequest);
    session.create_once("another", &new, last_second + 1).unwrap();
    assert_eq!(session.created_with_key("old").unwrap(), None, "an expired key was kept");
    let Keyed::Created(again) = session.create_once("old", &new, last_second + 1).unwrap() else {
        panic!("not created after its key expired")
    };
    assert!(again.id > first.id);
}

#[test]
fn sslmode_require_connects_over_tls_and_disable_does_not() {
    let db = shared().database();
    for (mode, ssl) in [("require", true), ("disable", false), ("prefer", true)] {
        let mut env = db.env();
        env[0].1 = format!("{}?sslmode={mode}", db.url);
        let lookup = |name: &str| env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
        let Database::Postgres(target) = Database::select(std::path::Path::new(""), &lookup).unwrap() else {
            panic!("not PostgreSQL")
        };
        let conn = Conn::connect(&target).unwrap();
        let row = conn.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).unwrap();
        assert_eq!(row.get::<_, bool>(0), ssl, "sslmode={mode}");
    }
}

#[test]
fn bad_settings_are_one_line_errors_and_a_wrong_password_is_not_echoed() {
    let db = shared().database();
    let url = |value: &str| vec![("TODOBACKEND_DATABASE_URL", value.to_owned())];
    assert_one_line_error(&run(&["migrate"], &url("mysql://app@db/x")), "TODOBACKEND_DATABASE_URL");
    assert_one_line_error(&run(&["migrate"], &url("postgres://app:secret@db/x")), "PASSWORD_FILE");
    let mut env = db.env();
    env[1].1 = "/nonexistent/password".into();
    assert_one_line_error(&run(&["migrate"], &env), "TODOBACKEND_DATABASE_PASSWORD_FILE=/nonexistent/password");
    let dir = TempDir::new();
    std::fs::write(dir.join("wrong"), "not-the-password-42\n").unwrap();
    env[1].1 = dir.join("wrong").to_str().unwrap().to_owned();
    let out = run(&["migrate"], &env);
    assert_one_line_error(&out, "password authentication failed");
    assert!(!stderr(&out).contains("not-the-password-42"));
    let out = run(&["migrate"], &[db.env()[0].clone()]);
    assert_one_line_error(&out, "TODOBACKEND_DATABASE_PASSWORD_FILE");
    // Nothing listens there: a quick one-line refusal, not a hang.
    let started = Instant::now();
    let mut nowhere = url("postgres://app@127.0.0.1:1/x");
    nowhere.push(("TODOBACKEND_DATABASE_WAIT", "0".into()));
    let out = run(&["migrate"], &nowhere);
    assert_one_line_error(&out, "cannot connect to postgres://app@127.0.0.1:1/x");
    nowhere[1].1 = "soon".into();
    assert_one_line_error(&run(&["migrate"], &nowhere), "TODOBACKEND_DATABASE_WAIT");
    assert!(started.elapsed() < Duration::from_secs(10));
}
