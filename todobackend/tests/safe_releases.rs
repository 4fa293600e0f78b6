//! What makes a release safe to fail, against real database files: older
//! binaries serve a schema that only additive migrations changed, `migrate`
//! backs up before it changes anything (newest five kept, nothing applied
//! when the backup fails), `migrations --json` tells deploy what a binary
//! would do, and `restore` brings back the database from before a migration.

mod common;

use std::path::Path;
use std::process::Command;

use common::TempDir;
use rusqlite::Connection;
use todobackend::cli;
use todobackend::store::backups;
use todobackend::store::catalog::{MIGRATIONS, Migration};
use todobackend::store::sqlite as db;
use todobackend::store::todos::NewTodo;

const BIN: &str = env!("CARGO_BIN_EXE_todobackend");

const FIRST: Migration = Migration { name: "0001_create_a.sql", sql: "CREATE TABLE a (x INTEGER);" };
const ADDITIVE: Migration =
    Migration { name: "0002_add_note.sql", sql: "-- additive\nALTER TABLE a ADD COLUMN note TEXT;" };
const BREAKING: Migration = Migration { name: "0003_drop_note.sql", sql: "CREATE TABLE b (y INTEGER);" };

fn rows(db: &Path) -> Vec<i64> {
    let conn = Connection::open(db).unwrap();
    let mut statement = conn.prepare("SELECT x FROM a ORDER BY x").unwrap();
    statement.query_map([], |row| row.get(0)).unwrap().map(Result::unwrap).collect()
}

fn insert(db: &Path, x: i64) {
    Connection::open(db).unwrap().execute("INSERT INTO a (x) VALUES (?1)", [x]).unwrap();
}

fn version(db: &Path) -> i64 {
    Connection::open(db).unwrap().query_row("PRAGMA user_version", [], |row| row.get(0)).unwrap()
}

fn backups_in(dir: &Path) -> Vec<String> {
    backups::list(dir).unwrap().into_iter().map(|backup| backup.file).collect()
}

#[test]
fn an_older_binary_serves_an_additive_newer_schema_and_refuses_a_breaking_one() {
    let dir = TempDir::new();
    let db_path = dir.join("db.sqlite3");
    let backups_dir = dir.join("backups");
    cli::migrate_with(&db_path, &backups_dir, &[FIRST, ADDITIVE]).unwrap();
    insert(&db_path, 1);

    // The binary that knows only FIRST: migrate is a no-op, serve accepts.
    cli::migrate_with(&db_path, &backups_dir, &[FIRST]).unwrap();
    assert_eq!(version(&db_path), 2, "an older migrate must not lower the schema version");
    let conn = db::open_existing(&db_path).unwrap();
    db::ensure_migrated(&conn, &db_path, &[FIRST]).unwrap();
    drop(conn);

    // After a migration that is not additive, it refuses, naming it.
    cli::migrate_with(&db_path, &backups_dir, &[FIRST, ADDITIVE, BREAKING]).unwrap();
    let conn = db::open_existing(&db_path).unwrap();
    let err = db::ensure_migrated(&conn, &db_path, &[FIRST, ADDITIVE]).unwrap_err();
    assert!(err.contains("0003_drop_note") && err.contains("not additive"), "{err}");
    let err = cli::migrate_with(&db_path, &backups_dir, &[FIRST]).unwrap_err();
    assert!(err.contains("0003_drop_note"), "{err}");
    assert_eq!(rows(&db_path), [1]);
}

#[test]
fn a_database_from_before_the_flag_counts_as_not_additive() {
    let dir = TempDir::new();
    let db_path = dir.join("db.sqlite3");
    cli::migrate_with(&db_path, &dir.join("backups"), &[FIRST, ADDITIVE]).unwrap();
    // As a release before the flag recorded it: no `additive` column.
    let conn = Connection::open(&db_path).unwrap();
    conn.execute_batch(
        "CREATE TABLE old (version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL);
         INSERT INTO old SELECT version, name, checksum FROM schema_migrations;
         DROP TABLE schema_migrations; ALTER TABLE old RENAME TO schema_migrations;",
    )
    .unwrap();
    let err = db::ensure_migrated(&conn, &db_path, &[FIRST]).unwrap_err();
    assert!(err.contains("0002_add_note") && err.contains("not additive"), "{err}");
    // The binary that knows both adds the column and keeps working.
    drop(conn);
    cli::migrate_with(&db_path, &dir.join("backups"), &[FIRST, ADDITIVE]).unwrap();
}

#[test]
fn migrate_backs_up_first_and_keeps_the_newest_five() {
    let dir = TempDir::new();
    let db_path = dir.join("db.sqlite3");
    let backups_dir = dir.join("backups");
    // A new database has nothing to back up.
    let first = Migration { name: "0001_m.sql", sql: "CREATE TABLE a (x INTEGER);" };
    cli::migrate_with(&db_path, &backups_dir, &[first]).unwrap();
    assert!(backups_in(&backups_dir).is_empty());
    insert(&db_path, 7);

    let names: Vec<String> = (2..=8).map(|n| format!("{n:04}_m.sql")).collect();
    let sqls: Vec<String> = (2..=8).map(|n| format!("-- additive\nCREATE TABLE t{n} (x INTEGER);")).collect();
    let mut list = vec![first];
    for (name, sql) in names.iter().zip(&sqls) {
        list.push(Migration { name: name.clone().leak(), sql: sql.clone().leak() });
        cli::migrate_with(&db_path, &backups_dir, &list).unwrap();
    }
    let kept = backups_in(&backups_dir);
    assert_eq!(kept.len(), 5, "{kept:?}");
    // The newest five: before 0004 ... 0008, each at the schema it saved.
    for (file, n) in kept.iter().zip((4..=8).rev()) {
        assert!(
            file.starts_with(&format!("{}-", n - 1)) && file.ends_with(&format!("-before-{n:04}_m.sqlite3")),
            "{file}"
        );
    }
    // A backup is the database as it was: the row, schema 7 before 0008.
    let newest = backups_dir.join(&kept[0]);
    assert_eq!(version(&newest), 7);
    assert_eq!(rows(&newest), [7]);
}

#[test]
fn a_backup_that_cannot_be_written_applies_nothing() {
    let dir = TempDir::new();
    let db_path = dir.join("db.sqlite3");
    cli::migrate_with(&db_path, &dir.join("backups"), &[FIRST]).unwrap();
    insert(&db_path, 1);
    let before = std::fs::read(&db_path).unwrap();
    // A file where the backups directory should be: it cannot be created,
    // as a read-only directory cannot be written (the tests run as root,
    // which permissions do not stop).
    std::fs::write(dir.join("in-the-way"), "").unwrap();
    let err = cli::migrate_with(&db_path, &dir.join("in-the-way/backups"), &[FIRST, ADDITIVE]).unwrap_err();
    assert!(err.contains("cannot create the backups directory") && err.contains("no migration was applied"), "{err}");
    assert_eq!(err.lines().count(), 1);
    assert_eq!(std::fs::read(&db_path).unwrap(), before, "the database changed although the backup failed");
}

#[test]
fn migrations_json_tells_what_a_binary_would_do_without_touching_the_database() {
    let dir = TempDir::new();
    let db_path = dir.join("todobackend.sqlite3");
    let json = |db: &Path| -> serde_json::Value {
        let out = Command::new(BIN).args(["migrations", "--json", "--db"]).arg(db).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let absent = json(&db_path);
    assert_eq!(absent["database"], "absent");
    assert_eq!(absent["can_serve"], true);
    assert!(!db_path.exists(), "migrations --json created the database");
    let name = MIGRATIONS[0].name.strip_suffix(".sql").unwrap();
    assert_eq!(absent["migrations"][0]["name"], name);
    assert_eq!(absent["migrations"][0]["applied"], false);

    // Migrated by a later release with an additive and then a breaking one,
    // numbered after this binary's own (however many it has).
    let newest: u32 = MIGRATIONS.last().unwrap().name[..4].parse().unwrap();
    let named = |steps: u32, slug: &str| -> &'static str { format!("{:04}_{slug}.sql", newest + steps).leak() };
    let additive =
        Migration { name: named(1, "add_test_note"), sql: "-- additive\nALTER TABLE todos ADD COLUMN test_note TEXT;" };
    let mut later = MIGRATIONS.to_vec();
    later.push(additive);
    cli::migrate_with(&db_path, &dir.join("backups"), &later).unwrap();
    let report = json(&db_path);
    assert_eq!(report["database"], "present");
    assert_eq!(report["schema_version"], newest + 1);
    assert_eq!(report["migrations"][0]["applied"], true);
    assert_eq!(
        report["unknown_applied"][0],
        serde_json::json!({
            "version": newest + 1,
            "name": additive.name.strip_suffix(".sql").unwrap(),
            "additive": true
        })
    );
    assert_eq!(report["can_serve"], true);
    let breaking = Migration { name: named(2, "b"), sql: "CREATE TABLE test_b (y);" };
    later.push(breaking);
    cli::migrate_with(&db_path, &dir.join("backups"), &later).unwrap();
    let report = json(&db_path);
    assert_eq!(report["can_serve"], false);
    let breaking_name = breaking.name.strip_suffix(".sql").unwrap();
    assert!(report["problem"].as_str().unwrap().contains(breaking_name), "{report}");
}

#[test]
fn restore_brings_back_the_database_from_before_a_migration_and_keeps_the_replaced_one() {
    let dir = TempDir::new();
    let db_path = dir.join("db.sqlite3");
    let backups_dir = dir.join("backups");
    cli::migrate_with(&db_path, &backups_dir, &[FIRST, ADDITIVE]).unwrap();
    insert(&db_path, 1);
    cli::migrate_with(&db_path, &backups_dir, &[FIRST, ADDITIVE, BREAKING]).unwrap();
    insert(&db_path, 2);
    // A connection kept open across the restore, as a running app's.
    let app = Connection::open(&db_path).unwrap();

    let dry = Command::new(BIN)
        .args(["restore", "--before", "0003_drop_note", "--dry-run", "--db"])
        .arg(&db_path)
        .env("TODOBACKEND_BACKUPS", &backups_dir)
        .output()
        .unwrap();
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    let said = String::from_utf8_lossy(&dry.stderr);
    assert!(said.contains("0003_drop_note") && said.contains("lost") && said.contains("UTC"), "{said}");
    assert_eq!(rows(&db_path), [1, 2], "a dry run restored");

    let out = Command::new(BIN)
        .args(["restore", "--before", "0003_drop_note", "--db"])
        .arg(&db_path)
        .env("TODOBACKEND_BACKUPS", &backups_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["schema_version"], 2);
    assert!(answer["restored"].as_str().unwrap().ends_with("-before-0003_drop_note.sqlite3"));
    let kept = answer["kept"].as_str().unwrap();
    assert!(kept.starts_with("3-") && kept.ends_with("-replaced-by-restore.sqlite3"), "{kept}");
    assert_eq!(rows(&backups_dir.join(kept)), [1, 2], "the replaced database was not kept as it was");

    // The restored database is the one from before 0003, also as the open
    // connection sees it.
    assert_eq!(rows(&db_path), [1]);
    let seen: i64 = app.query_row("SELECT count(*) FROM a", [], |row| row.get(0)).unwrap();
    assert_eq!(seen, 1);
    assert_eq!(version(&db_path), 2);

    // No backup was taken before a migration older than every backup (a
    // backup from before an earlier migration counts for a later one).
    let none = Command::new(BIN)
        .args(["restore", "--before", "0000_nothing", "--db"])
        .arg(&db_path)
        .env("TODOBACKEND_BACKUPS", &backups_dir)
        .output()
        .unwrap();
    assert!(!none.status.success());
    let err = String::from_utf8_lossy(&none.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no backup taken before 0000_nothing") && err.contains("before-0003_drop_note"), "{err}");
}

#[test]
fn the_release_before_idempotency_keys_keeps_serving_after_their_migration() {
    let position = MIGRATIONS.iter().position(|m| m.name == "0002_idempotency_keys.sql").expect("the migration");
    let (older, _) = MIGRATIONS.split_at(position);
    let keys = todobackend::store::catalog::PG_MIGRATIONS[position];
    assert!(MIGRATIONS[position].additive() && keys.additive(), "0002_idempotency_keys must be additive");
    let dir = TempDir::new();
    let db_path = dir.join("db.sqlite3");
    // Up to that migration only: later ones are not its business.
    cli::migrate_with(&db_path, &dir.join("backups"), &MIGRATIONS[..=position]).unwrap();
    // The older binary: its migrate does nothing, its serve accepts, its
    // POST (without a key) stores as before.
    cli::migrate_with(&db_path, &dir.join("backups"), older).unwrap();
    let conn = db::open_existing(&db_path).unwrap();
    db::ensure_migrated(&conn, &db_path, older).unwrap();
    let new = NewTodo { title: "old release".into(), completed: false, order: None };
    let todo = db::create(&conn, &new).unwrap();
    assert_eq!(db::list(&conn).unwrap(), vec![todo]);
}
