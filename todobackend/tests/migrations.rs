//! Migrations against real database files: idempotence, concurrency,
//! broken and changed migrations, databases from before checksums were
//! recorded, and the server's refusal to start while any are pending or
//! changed.

mod common;

use std::process::Command;
use std::sync::{Arc, Barrier};
use std::thread;

use common::TempDir;
use rusqlite::Connection;
use todobackend::cli;
use todobackend::http::server;
use todobackend::store::catalog::{self, MIGRATIONS, Migration};
use todobackend::store::sqlite::{self as db, migrate};

const BIN: &str = env!("CARGO_BIN_EXE_todobackend");

fn table_exists(conn: &Connection, name: &str) -> bool {
    conn.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1", [name], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap()
        == 1
}

/// The `schema_migrations` rows: (version, name, checksum).
fn recorded(conn: &Connection) -> Vec<(i64, String, String)> {
    let mut stmt = conn.prepare("SELECT version, name, checksum FROM schema_migrations ORDER BY version").unwrap();
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
    rows.map(Result::unwrap).collect()
}

/// The rows `recorded` should return once `list` is applied.
fn expected_records(list: &[Migration]) -> Vec<(i64, String, String)> {
    list.iter().enumerate().map(|(i, m)| (i as i64 + 1, m.name.to_string(), m.checksum())).collect()
}

const GOOD: Migration = Migration { name: "0001_create_a.sql", sql: "CREATE TABLE a (x INTEGER);" };
const ALSO_GOOD: Migration =
    Migration { name: "0002_create_b.sql", sql: "CREATE TABLE b (y INTEGER); INSERT INTO a VALUES (1);" };
const BROKEN: Migration = Migration { name: "0003_broken.sql", sql: "CREATE TABLE c (z INTEGER); CREATE TABLEX oops;" };

#[test]
fn migrate_twice_is_a_no_op() {
    let dir = TempDir::new();
    let path = dir.join("db.sqlite3");
    let mut conn = db::open_for_migrate(&path).unwrap();
    let first = migrate::apply(&mut conn, MIGRATIONS).unwrap();
    assert_eq!(first, MIGRATIONS.iter().map(|m| m.name).collect::<Vec<_>>());
    assert!(migrate::apply(&mut conn, MIGRATIONS).unwrap().is_empty());
    assert_eq!(migrate::current_version(&conn).unwrap() as usize, MIGRATIONS.len());
    assert!(table_exists(&conn, "todos"));
}

#[test]
fn migrate_binary_twice_reports_applied_then_nothing() {
    let dir = TempDir::new();
    let path = dir.join("sub/dir/db.sqlite3"); // parent directories are created
    let run = || Command::new(BIN).arg("migrate").env("TODOBACKEND_DB", &path).output().unwrap();
    let first = run();
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    assert!(stderr.contains("applied migration 0001_create_todos.sql"), "{stderr}");
    let second = run();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(stderr.contains("no pending migrations"), "{stderr}");
    assert!(!stderr.contains("applied migration"), "{stderr}");
}

#[test]
fn concurrent_migrates_in_threads_apply_exactly_once() {
    let dir = TempDir::new();
    let path = Arc::new(dir.join("db.sqlite3"));
    let list: &'static [Migration] = &[GOOD, ALSO_GOOD];
    let barrier = Arc::new(Barrier::new(4));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (path, barrier) = (Arc::clone(&path), Arc::clone(&barrier));
            thread::spawn(move || {
                let mut conn = db::open_for_migrate(&path).unwrap();
                barrier.wait();
                migrate::apply(&mut conn, list)
            })
        })
        .collect();
    let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let applied: Vec<Vec<&str>> = results.into_iter().map(|r| r.expect("every migrate succeeds")).collect();
    // Exactly one did the work; the others found nothing pending.
    assert_eq!(applied.iter().filter(|a| !a.is_empty()).count(), 1, "{applied:?}");
    let conn = Connection::open(&*path).unwrap();
    assert_eq!(conn.query_row("SELECT count(*) FROM a", [], |r| r.get::<_, i64>(0)).unwrap(), 1);
    assert_eq!(recorded(&conn), expected_records(list));
}

#[test]
fn concurrent_migrate_processes_both_succeed() {
    let dir = TempDir::new();
    let path = dir.join("db.sqlite3");
    let children: Vec<_> = (0..3)
        .map(|_| {
            Command::new(BIN).args(["migrate", "--db"]).arg(&path).stderr(std::process::Stdio::piped()).spawn().unwrap()
        })
        .collect();
    let outputs: Vec<_> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    let mut applied = 0;
    for out in &outputs {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        if stderr.contains("applied migration") {
            applied += 1;
        } else {
            assert!(stderr.contains("no pending migrations"), "{stderr}");
        }
    }
    assert_eq!(applied, 1);
    let conn = db::open_existing(&path).unwrap();
    assert!(migrate::pending(&conn, MIGRATIONS).unwrap().is_empty());
    assert_eq!(recorded(&conn), expected_records(MIGRATIONS));
}

#[test]
fn broken_migration_fails_cleanly_and_applies_nothing() {
    let dir = TempDir::new();
    let path = dir.join("db.sqlite3");
    let mut conn = db::open_for_migrate(&path).unwrap();

    let err = migrate::apply(&mut conn, &[GOOD, ALSO_GOOD, BROKEN]).unwrap_err();
    assert!(err.contains("0003_broken.sql"), "{err}");
    assert!(err.contains("syntax error"), "names SQLite's error: {err}");
    assert!(!err.contains('\n'), "one line: {err}");
    // Nothing half-applied: not the good ones before it, not the first
    // statement of the broken one, not the version.
    assert_eq!(migrate::current_version(&conn).unwrap(), 0);
    for table in ["a", "b", "c"] {
        assert!(!table_exists(&conn, table), "table {table} was left behind");
    }

    // Once the file is fixed, everything applies.
    let fixed = Migration { name: "0003_broken.sql", sql: "CREATE TABLE c (z INTEGER);" };
    assert_eq!(migrate::apply(&mut conn, &[GOOD, ALSO_GOOD, fixed]).unwrap().len(), 3);
}

#[test]
fn broken_migration_after_applied_ones_keeps_the_old_version() {
    let dir = TempDir::new();
    let path = dir.join("db.sqlite3");
    cli::migrate_with(&path, &path.with_file_name("backups"), &[GOOD]).unwrap();
    let err = cli::migrate_with(&path, &path.with_file_name("backups"), &[GOOD, ALSO_GOOD, BROKEN]).unwrap_err();
    // Exactly SQLite's message after the file name: no SQL text, no path.
    assert_eq!(err, r#"migration 0003_broken.sql failed: near "TABLEX": syntax error"#);
    let conn = db::open_existing(&path).unwrap();
    assert_eq!(migrate::current_version(&conn).unwrap(), 1);
    assert!(table_exists(&conn, "a") && !table_exists(&conn, "b"));
}

#[test]
fn misnumbered_migrations_are_refused_before_touching_the_database() {
    let dir = TempDir::new();
    let path = dir.join("db.sqlite3");
    let mut conn = db::open_for_migrate(&path).unwrap();
    let err = migrate::apply(&mut conn, &[GOOD, BROKEN]).unwrap_err();
    assert!(err.contains("0003_broken.sql"), "{err}");
    assert!(!table_exists(&conn, "a"));
}

#[test]
fn server_refuses_to_start_while_migrations_are_pending() {
    let dir = TempDir::new();
    let root = dir.join("public");

    // No database at all.
    let missing = dir.join("missing.sqlite3");
    let err = server::start("127.0.0.1:0", &missing, &root).err().expect("refused");
    assert!(err.contains("pending") && err.contains("migrate"), "{err}");
    assert!(!missing.exists(), "serve must not create the database");

    // A database at version 0 (the file exists, nothing applied).
    let empty = dir.join("empty.sqlite3");
    Connection::open(&empty).unwrap().execute_batch("CREATE TABLE unrelated (x);").unwrap();
    let err = server::start("127.0.0.1:0", &empty, &root).err().expect("refused");
    let names: Vec<&str> = MIGRATIONS.iter().map(|migration| migration.name).collect();
    let pending = format!("{} pending migration(s) ({})", MIGRATIONS.len(), names.join(", "));
    assert!(err.contains(&pending), "{err}");

    // After migrating it starts.
    cli::migrate(&empty).unwrap();
    server::start("127.0.0.1:0", &empty, &root).expect("starts").shutdown();
}

#[test]
fn a_database_newer_than_the_binary_is_refused() {
    let dir = TempDir::new();
    let path = dir.join("db.sqlite3");
    cli::migrate(&path).unwrap();
    Connection::open(&path).unwrap().execute_batch("PRAGMA user_version = 99").unwrap();
    let err = server::start("127.0.0.1:0", &path, &dir.join("public")).err().expect("refused");
    assert!(err.contains("newer"), "{err}");
    let err = cli::migrate(&path).unwrap_err();
    assert!(err.contains("newer"), "{err}");
}

#[test]
fn applied_migrations_are_recorded_with_their_checksums() {
    let dir = TempDir::new();
    let path = dir.join("db.sqlite3");
    cli::migrate_with(&path, &path.with_file_name("backups"), &[GOOD]).unwrap();
    cli::migrate_with(&path, &path.with_file_name("backups"), &[GOOD, ALSO_GOOD]).unwrap();
    let conn = Connection::open(&path).unwrap();
    assert_eq!(recorded(&conn), expected_records(&[GOOD, ALSO_GOOD]));
}

#[test]
fn a_changed_applied_migration_is_refused_and_the_database_left_alone() {
    let dir = TempDir::new();
    let path = dir.join("db.sqlite3");
    cli::migrate_with(&path, &path.with_file_name("backups"), &[GOOD]).unwrap();
    let before = std::fs::read(&path).unwrap();

    // Edited after it was applied, with a new migration pending behind it:
    // neither may touch the database.
    let edited = Migration { name: GOOD.name, sql: "CREATE TABLE a (x INTEGER, extra TEXT);" };
    let err = cli::migrate_with(&path, &path.with_file_name("backups"), &[edited, ALSO_GOOD]).unwrap_err();
    assert!(!err.contains('\n'), "one line: {err}");
    assert!(
        err.starts_with("migration 0001_create_a.sql was changed after it was applied to this database ("),
        "{err}"
    );
    assert!(err.contains(&GOOD.checksum()) && err.contains(&edited.checksum()), "{err}");
    assert!(
        err.contains("restore the file") && err.contains("new migration") && err.contains("cargo xtask clean"),
        "says what to do: {err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before, "database changed");

    // A renamed file counts as changed too.
    let renamed = Migration { name: "0001_renamed.sql", sql: GOOD.sql };
    let err = cli::migrate_with(&path, &path.with_file_name("backups"), &[renamed]).unwrap_err();
    assert!(err.contains("0001_renamed.sql was changed") && err.contains("applied as 0001_create_a.sql"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "database changed");

    // Restoring the file is enough.
    cli::migrate_with(&path, &path.with_file_name("backups"), &[GOOD, ALSO_GOOD]).unwrap();
}

#[test]
fn server_refuses_to_start_when_an_applied_migration_changed() {
    let dir = TempDir::new();
    let path = dir.join("db.sqlite3");
    cli::migrate(&path).unwrap();
    // The embedded file cannot be edited from a test; changing the recorded
    // checksum is the same mismatch seen from the other side.
    Connection::open(&path)
        .unwrap()
        .execute_batch("UPDATE schema_migrations SET checksum = '0000000000000000' WHERE version = 1")
        .unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = server::start("127.0.0.1:0", &path, &dir.join("public")).err().expect("refused");
    assert!(!err.contains('\n'), "one line: {err}");
    assert!(
        err.starts_with(&format!("refusing to start: database {}: ", path.display()))
            && err.contains("migration 0001_create_todos.sql was changed after it was applied to this database"),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before, "database changed");
}

/// A database as the release before checksums left it: migrations applied
/// and `user_version` set, but no `schema_migrations` table.
fn legacy_db(path: &std::path::Path, applied: &[Migration]) {
    let conn = Connection::open(path).unwrap();
    for m in applied {
        conn.execute_batch(m.sql).unwrap();
    }
    conn.execute_batch(&format!("PRAGMA user_version = {}", applied.len())).unwrap();
}

#[test]
fn a_database_from_before_checksums_is_adopted_once() {
    let dir = TempDir::new();
    let path = dir.join("db.sqlite3");
    legacy_db(&path, &[GOOD]);

    let mut conn = db::open_for_migrate(&path).unwrap();
    let outcome = migrate::migrate(&mut conn, &[GOOD, ALSO_GOOD]).unwrap();
    assert_eq!(outcome.adopted, vec![GOOD.name]);
    assert_eq!(outcome.applied, vec![ALSO_GOOD.name]);
    assert_eq!(recorded(&conn), expected_records(&[GOOD, ALSO_GOOD]));

    // Once only: afterwards it is an ordinary database.
    let again = migrate::migrate(&mut conn, &[GOOD, ALSO_GOOD]).unwrap();
    assert_eq!(again, catalog::Outcome::default());
    let edited = Migration { name: GOOD.name, sql: "CREATE TABLE a (x TEXT);" };
    assert!(
        migrate::migrate(&mut conn, &[edited, ALSO_GOOD]).unwrap_err().contains("was changed after it was applied")
    );
}

#[test]
fn server_asks_for_migrate_on_a_database_from_before_checksums() {
    let dir = TempDir::new();
    let path = dir.join("db.sqlite3");
    legacy_db(&path, MIGRATIONS);
    let root = dir.join("public");
    let err = server::start("127.0.0.1:0", &path, &root).err().expect("refused");
    assert!(err.contains("no checksums recorded") && err.contains("run `todobackend migrate` first"), "{err}");
    let conn = Connection::open(&path).unwrap();
    assert!(!table_exists(&conn, "schema_migrations"), "serve wrote to it");

    cli::migrate(&path).unwrap();
    assert_eq!(recorded(&conn), expected_records(MIGRATIONS));
    server::start("127.0.0.1:0", &path, &root).expect("starts").shutdown();
}
