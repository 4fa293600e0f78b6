//! SQLite's migrate: the catalog's SQL files (`store::catalog`) applied in
//! order. The schema version is SQLite's
//! `PRAGMA user_version`, which lives in the database header and changes
//! atomically with the transaction that applies the migrations.
//!
//! The version alone cannot tell that an applied migration file was edited
//! afterwards, so each applied migration's name and a checksum of its SQL are
//! also recorded in `schema_migrations`, in the same transaction, and checked
//! by `migrate` and `serve`.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::store::catalog::{Migration, Outcome, Recorded, Report, check_applied, check_order, newer_problem};

/// The table recording applied migrations. Created by `apply`, never by a
/// migration file, so that it also appears in databases migrated before it
/// existed.
const CREATE_RECORD_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version  INTEGER PRIMARY KEY,
    name     TEXT NOT NULL,
    checksum TEXT NOT NULL,
    additive INTEGER NOT NULL DEFAULT 0
)";

fn has_table(conn: &Connection, table: &str) -> Result<bool, String> {
    conn.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1", [table], |row| {
        row.get::<_, i64>(0)
    })
    .map(|count| count == 1)
    .map_err(|e| format!("cannot read the database's tables: {e}"))
}

fn has_additive_column(conn: &Connection) -> Result<bool, String> {
    conn.query_row("SELECT count(*) FROM pragma_table_info('schema_migrations') WHERE name = 'additive'", [], |row| {
        row.get::<_, i64>(0)
    })
    .map(|count| count == 1)
    .map_err(|e| format!("cannot read the schema_migrations table: {e}"))
}

/// The applied migrations with a version above `known`: those a newer
/// release applied, as recorded (a version without a record counts as not
/// additive).
pub fn newer_than(conn: &Connection, known: usize) -> Result<Vec<Recorded>, String> {
    let current = current_version(conn)?;
    let mut recorded: Vec<Recorded> = Vec::new();
    if has_table(conn, "schema_migrations")? {
        let additive = if has_additive_column(conn)? { "additive" } else { "0" };
        let sql =
            format!("SELECT version, name, {additive} FROM schema_migrations WHERE version > ?1 ORDER BY version");
        let mut statement = conn.prepare(&sql).map_err(|e| format!("cannot read the applied migrations: {e}"))?;
        let rows = statement
            .query_map([known as i64], |row| {
                Ok(Recorded {
                    version: row.get::<_, i64>(0)? as u32,
                    name: row.get(1)?,
                    additive: row.get::<_, i64>(2)? != 0,
                })
            })
            .map_err(|e| format!("cannot read the applied migrations: {e}"))?;
        for row in rows {
            recorded.push(row.map_err(|e| format!("cannot read the applied migrations: {e}"))?);
        }
    }
    for version in known as u32 + 1..=current {
        if !recorded.iter().any(|entry| entry.version == version) {
            recorded.push(Recorded { version, name: format!("{version:04}_unrecorded"), additive: false });
        }
    }
    recorded.sort_by_key(|entry| entry.version);
    Ok(recorded.into_iter().filter(|entry| entry.version <= current).collect())
}

/// The schema version recorded in the database (0 for a new database).
pub fn current_version(conn: &Connection) -> Result<u32, String> {
    conn.query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0))
        .map_err(|e| format!("cannot read the schema version: {e}"))
        .map(|v| u32::try_from(v).unwrap_or(0))
}

/// The migrations not yet applied to this database.
///
/// A database that a later release migrated further is accepted when every
/// migration this binary does not know is recorded as additive (nothing is
/// pending then); otherwise running this code against it is not safe, and it
/// fails naming the first migration that is not additive.
pub fn pending<'a>(conn: &Connection, migrations: &'a [Migration]) -> Result<&'a [Migration], String> {
    let current = current_version(conn)? as usize;
    if current > migrations.len() {
        if let Some(problem) = newer_problem(&newer_than(conn, migrations.len())?, migrations.len()) {
            return Err(problem);
        }
        return Ok(&[]);
    }
    Ok(&migrations[current..])
}

/// Checks the applied migrations (the first `user_version` ones) against
/// what the database recorded when it applied them. Fails with one line when
/// one was changed since; returns those with no record at all (the database
/// was migrated by a release that did not record them), which `apply` adopts
/// and `serve` refuses until `migrate` has run.
pub fn unrecorded<'a>(conn: &Connection, migrations: &'a [Migration]) -> Result<Vec<&'a Migration>, String> {
    let applied = &migrations[..migrations.len() - pending(conn, migrations)?.len()];
    let read_error = |e: rusqlite::Error| format!("cannot read the applied migrations: {e}");
    if !has_table(conn, "schema_migrations")? {
        return Ok(applied.iter().collect());
    }
    let mut missing = Vec::new();
    for (index, migration) in applied.iter().enumerate() {
        let recorded: Option<(String, String)> = conn
            .query_row("SELECT name, checksum FROM schema_migrations WHERE version = ?1", [index as i64 + 1], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()
            .map_err(read_error)?;
        let Some((name, recorded_checksum)) = recorded else {
            missing.push(migration);
            continue;
        };
        check_applied(migration, &name, &recorded_checksum)?;
    }
    Ok(missing)
}

/// Applies the pending migrations and returns the names of those applied
/// (empty when there was nothing to do). See `migrate`.
pub fn apply(conn: &mut Connection, migrations: &[Migration]) -> Result<Vec<&'static str>, String> {
    migrate(conn, migrations).map(|outcome| outcome.applied)
}

/// Verifies the applied migrations, records checksums for any applied ones
/// without a record, then applies the pending migrations.
///
/// All pending migrations run in one `BEGIN IMMEDIATE` transaction: a broken
/// migration leaves the database exactly as it was, and a second `migrate`
/// started at the same time waits for the lock (busy timeout) and then finds
/// nothing left to do, because the version is read again inside the
/// transaction. The checks run in that transaction too, so they see exactly
/// what is being built upon, and a changed migration leaves the database
/// untouched.
pub fn migrate(conn: &mut Connection, migrations: &[Migration]) -> Result<Outcome, String> {
    check_order(migrations)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| format!("cannot lock the database for migrating: {e}"))?;
    let todo = pending(&tx, migrations)?;
    let adopt = unrecorded(&tx, migrations)?;
    tx.execute_batch(CREATE_RECORD_TABLE).map_err(|e| format!("cannot create the schema_migrations table: {e}"))?;
    if !has_additive_column(&tx)? {
        // Recorded before the flag was kept: those count as not additive.
        tx.execute_batch("ALTER TABLE schema_migrations ADD COLUMN additive INTEGER NOT NULL DEFAULT 0")
            .map_err(|e| format!("cannot add the additive column to schema_migrations: {e}"))?;
    }
    let mut outcome = Outcome {
        newer: newer_than(&tx, migrations.len())?.into_iter().map(|entry| entry.name).collect(),
        ..Outcome::default()
    };
    for migration in adopt {
        record(&tx, migration)?;
        outcome.adopted.push(migration.name);
    }
    for migration in todo {
        // Returning the error drops `tx`, which rolls everything back. Only
        // SQLite's own message: rusqlite's also quotes the whole SQL text.
        tx.execute_batch(migration.sql)
            .map_err(|e| format!("migration {} failed: {}", migration.name, sqlite_message(&e)))?;
        record(&tx, migration)?;
        outcome.applied.push(migration.name);
    }
    if !outcome.applied.is_empty() {
        // PRAGMA takes no bound parameters; the value is a number we computed.
        tx.execute_batch(&format!("PRAGMA user_version = {}", migrations.len()))
            .map_err(|e| format!("cannot record the schema version: {e}"))?;
    }
    tx.commit().map_err(|e| format!("cannot commit the migrations: {e}"))?;
    Ok(outcome)
}

fn record(conn: &Connection, migration: &Migration) -> Result<(), String> {
    let version = migration.version().map_or(0, i64::from); // checked by check_order
    conn.execute(
        "INSERT INTO schema_migrations (version, name, checksum, additive) VALUES (?1, ?2, ?3, ?4)",
        rusqlite::params![version, migration.name, migration.checksum(), migration.additive()],
    )
    .map(|_| ())
    .map_err(|e| format!("cannot record migration {}: {e}", migration.name))
}

/// Reads the database at `path` without changing it or creating it (deploy
/// runs this against the live database while the app serves it).
pub fn report(path: &std::path::Path, migrations: &[Migration]) -> Result<Report, String> {
    let mut report = Report {
        present: path.exists(),
        schema_version: 0,
        migrations: migrations.iter().map(|migration| (*migration, false)).collect(),
        unknown_applied: Vec::new(),
        problem: None,
    };
    if !report.present {
        return Ok(report);
    }
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| format!("cannot open database {}: {e}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| format!("cannot configure database {}: {e}", path.display()))?;
    report.schema_version = current_version(&conn)?;
    let applied = (report.schema_version as usize).min(migrations.len());
    for (index, (_, is_applied)) in report.migrations.iter_mut().enumerate() {
        *is_applied = index < applied;
    }
    report.unknown_applied = newer_than(&conn, migrations.len())?;
    report.problem =
        newer_problem(&report.unknown_applied, migrations.len()).or_else(|| unrecorded(&conn, migrations).err());
    Ok(report)
}

/// SQLite's message for an error, on one line.
fn sqlite_message(e: &rusqlite::Error) -> String {
    let text = match e {
        rusqlite::Error::SqlInputError { msg, .. } => msg.clone(),
        rusqlite::Error::SqliteFailure(_, Some(msg)) => msg.clone(),
        other => other.to_string(),
    };
    text.lines().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::catalog::{MIGRATIONS, checksum};

    fn m(name: &'static str) -> Migration {
        Migration { name, sql: "" }
    }

    #[test]
    fn version_is_read_from_the_file_name() {
        assert_eq!(m("0001_create.sql").version(), Some(1));
        assert_eq!(m("0042_x.sql").version(), Some(42));
        assert_eq!(m("create.sql").version(), None);
    }

    #[test]
    fn ordered_list_is_accepted() {
        assert!(check_order(&[m("0001_a.sql"), m("0002_b.sql"), m("0003_c.sql")]).is_ok());
        assert!(check_order(&[]).is_ok());
    }

    #[test]
    fn gaps_repeats_and_wrong_order_are_rejected() {
        let gap = check_order(&[m("0001_a.sql"), m("0003_c.sql")]).unwrap_err();
        assert!(gap.contains("0003_c.sql"), "{gap}");
        assert!(check_order(&[m("0001_a.sql"), m("0001_b.sql")]).is_err());
        assert!(check_order(&[m("0002_b.sql"), m("0001_a.sql")]).is_err());
        assert!(check_order(&[m("a.sql")]).is_err());
    }

    #[test]
    fn embedded_migrations_are_in_order() {
        check_order(MIGRATIONS).unwrap();
    }

    #[test]
    fn the_additive_mark_is_the_first_line_exactly() {
        let migration = |sql| Migration { name: "0002_x.sql", sql };
        assert!(migration("-- additive\nALTER TABLE t ADD COLUMN c TEXT;").additive());
        assert!(migration("-- additive\r\nCREATE TABLE u (x);").additive());
        assert!(!migration("ALTER TABLE t ADD COLUMN c TEXT; -- additive").additive());
        assert!(!migration("-- additive: no\nDROP TABLE t;").additive());
        assert!(!migration("\n-- additive\n").additive());
        assert_eq!(migration("").stem(), "0002_x");
    }

    #[test]
    fn an_older_binary_serves_a_schema_made_newer_only_by_additive_migrations() {
        let newer = |additive: &[bool]| -> Vec<Recorded> {
            additive
                .iter()
                .enumerate()
                .map(|(i, additive)| Recorded {
                    version: i as u32 + 2,
                    name: format!("{:04}_m", i + 2),
                    additive: *additive,
                })
                .collect()
        };
        assert_eq!(newer_problem(&newer(&[true, true]), 1), None);
        let problem = newer_problem(&newer(&[true, false]), 1).unwrap();
        assert!(problem.contains("0003_m") && problem.contains("not additive"), "{problem}");
        assert_eq!(newer_problem(&[], 1), None);
    }

    #[test]
    fn every_migration_file_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        on_disk.sort();
        let listed: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(on_disk, listed);
    }

    #[test]
    fn checksum_is_fnv1a_64_and_never_changes() {
        // Published FNV-1a 64-bit test vectors: databases store these values,
        // so any change here breaks every existing database.
        assert_eq!(checksum(""), "cbf29ce484222325");
        assert_eq!(checksum("a"), "af63dc4c8601ec8c");
        assert_eq!(checksum("foobar"), "85944171f73967e8");
        assert_eq!(checksum("CREATE TABLE a (x);\r\n"), checksum("CREATE TABLE a (x);\n"));
        assert_ne!(checksum("CREATE TABLE a (x);"), checksum("CREATE TABLE a (y);"));
    }

    #[test]
    fn pending_and_apply_on_a_memory_database() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(pending(&conn, MIGRATIONS).unwrap().len(), MIGRATIONS.len());
        let applied = apply(&mut conn, MIGRATIONS).unwrap();
        assert_eq!(applied.len(), MIGRATIONS.len());
        assert!(pending(&conn, MIGRATIONS).unwrap().is_empty());
        assert!(apply(&mut conn, MIGRATIONS).unwrap().is_empty());
        assert_eq!(current_version(&conn).unwrap() as usize, MIGRATIONS.len());
    }
}
