//! Schema migrations: SQL files in `migrations/NNNN_name.sql`, embedded in the
//! binary and applied in order. The schema version is SQLite's
//! `PRAGMA user_version`, which lives in the database header and changes
//! atomically with the transaction that applies the migrations.
//!
//! The version alone cannot tell that an applied migration file was edited
//! afterwards, so each applied migration's name and a checksum of its SQL are
//! also recorded in `schema_migrations`, in the same transaction, and checked
//! by `migrate` and `serve`.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

/// One migration: the file name (which starts with its version number) and
/// its SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    /// The version number from the leading digits of the file name
    /// (`0003_add_x.sql` -> 3), or `None` if the name does not start with one.
    pub fn version(&self) -> Option<u32> {
        let digits: String = self.name.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    }

    /// The checksum of this migration's SQL, as recorded in the database.
    pub fn checksum(&self) -> String {
        checksum(self.sql)
    }
}

/// A checksum of a migration's SQL: FNV-1a 64-bit, as 16 hex digits.
///
/// Written out here because the value is stored in databases and compared by
/// later releases: it must never change, which std's `DefaultHasher` does not
/// promise. It only has to notice edits, not resist tampering. Line endings
/// are normalised first so that a checkout with CRLF (git autocrlf) builds a
/// binary that agrees with one built from LF files.
pub fn checksum(sql: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in sql.replace("\r\n", "\n").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The table recording applied migrations. Created by `apply`, never by a
/// migration file, so that it also appears in databases migrated before it
/// existed.
const CREATE_RECORD_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version  INTEGER PRIMARY KEY,
    name     TEXT NOT NULL,
    checksum TEXT NOT NULL
)";

/// Declares the embedded migrations. Adding a file to `migrations/` without
/// listing it here fails the `every_migration_file_is_listed` test.
macro_rules! migrations {
    ($($file:literal),* $(,)?) => {
        &[$(Migration {
            name: $file,
            sql: include_str!(concat!("../migrations/", $file)),
        }),*]
    };
}

/// The migrations this binary knows, in the order they are applied.
pub const MIGRATIONS: &[Migration] = migrations!["0001_create_todos.sql"];

/// Checks that the list is numbered 1, 2, 3, ... without gaps or repeats, so
/// that "version N" always means "the first N migrations have been applied".
pub fn check_order(migrations: &[Migration]) -> Result<(), String> {
    for (index, migration) in migrations.iter().enumerate() {
        let expected = index + 1;
        match migration.version() {
            Some(v) if v as usize == expected => {}
            Some(v) => {
                return Err(format!(
                    "migration {} has number {v}, expected {expected:04}: migrations must be numbered 1, 2, 3, ... in order",
                    migration.name
                ))
            }
            None => {
                return Err(format!(
                    "migration {} does not start with its number (NNNN_name.sql)",
                    migration.name
                ))
            }
        }
    }
    Ok(())
}

/// The schema version recorded in the database (0 for a new database).
pub fn current_version(conn: &Connection) -> Result<u32, String> {
    conn.query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0))
        .map_err(|e| format!("cannot read the schema version: {e}"))
        .map(|v| u32::try_from(v).unwrap_or(0))
}

/// The migrations not yet applied to this database.
///
/// Fails when the database is newer than this binary (it was migrated by a
/// later release): running old code against a newer schema is not safe.
pub fn pending<'a>(
    conn: &Connection,
    migrations: &'a [Migration],
) -> Result<&'a [Migration], String> {
    let current = current_version(conn)? as usize;
    if current > migrations.len() {
        return Err(format!(
            "database schema version {current} is newer than this binary knows ({}); run a newer release",
            migrations.len()
        ));
    }
    Ok(&migrations[current..])
}

/// Checks the applied migrations (the first `user_version` ones) against
/// what the database recorded when it applied them. Fails with one line when
/// one was changed since; returns those with no record at all (the database
/// was migrated by a release that did not record them), which `apply` adopts
/// and `serve` refuses until `migrate` has run.
pub fn unrecorded<'a>(
    conn: &Connection,
    migrations: &'a [Migration],
) -> Result<Vec<&'a Migration>, String> {
    let applied = &migrations[..migrations.len() - pending(conn, migrations)?.len()];
    let read_error = |e: rusqlite::Error| format!("cannot read the applied migrations: {e}");
    let has_table: bool = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
            [],
            |row| row.get::<_, i64>(0),
        )
        .map_err(read_error)?
        == 1;
    if !has_table {
        return Ok(applied.iter().collect());
    }
    let mut missing = Vec::new();
    for (index, migration) in applied.iter().enumerate() {
        let recorded: Option<(String, String)> = conn
            .query_row(
                "SELECT name, checksum FROM schema_migrations WHERE version = ?1",
                [index as i64 + 1],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(read_error)?;
        let Some((name, recorded_checksum)) = recorded else {
            missing.push(migration);
            continue;
        };
        let now = migration.checksum();
        let what = if name != migration.name {
            format!("it was applied as {name}")
        } else if recorded_checksum != now {
            format!("checksum {recorded_checksum} when applied, {now} now")
        } else {
            continue;
        };
        return Err(format!(
            "migration {} was changed after it was applied to this database ({what}); \
             restore the file and put the change in a new migration instead, \
             or, for a throwaway local database, remove the database (e.g. `cargo xtask clean`)",
            migration.name
        ));
    }
    Ok(missing)
}

/// What `migrate` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Migrations applied before their checksums were recorded, whose current
    /// checksums have now been recorded (taken on trust, once).
    pub adopted: Vec<&'static str>,
    /// Migrations applied now.
    pub applied: Vec<&'static str>,
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
    tx.execute_batch(CREATE_RECORD_TABLE)
        .map_err(|e| format!("cannot create the schema_migrations table: {e}"))?;
    let mut outcome = Outcome::default();
    for migration in adopt {
        record(&tx, migration)?;
        outcome.adopted.push(migration.name);
    }
    for migration in todo {
        // Returning the error drops `tx`, which rolls everything back. Only
        // SQLite's own message: rusqlite's also quotes the whole SQL text.
        tx.execute_batch(migration.sql).map_err(|e| {
            format!(
                "migration {} failed: {}",
                migration.name,
                sqlite_message(&e)
            )
        })?;
        record(&tx, migration)?;
        outcome.applied.push(migration.name);
    }
    if !outcome.applied.is_empty() {
        // PRAGMA takes no bound parameters; the value is a number we computed.
        tx.execute_batch(&format!("PRAGMA user_version = {}", migrations.len()))
            .map_err(|e| format!("cannot record the schema version: {e}"))?;
    }
    tx.commit()
        .map_err(|e| format!("cannot commit the migrations: {e}"))?;
    Ok(outcome)
}

fn record(conn: &Connection, migration: &Migration) -> Result<(), String> {
    let version = migration.version().map_or(0, i64::from); // checked by check_order
    conn.execute(
        "INSERT INTO schema_migrations (version, name, checksum) VALUES (?1, ?2, ?3)",
        rusqlite::params![version, migration.name, migration.checksum()],
    )
    .map(|_| ())
    .map_err(|e| format!("cannot record migration {}: {e}", migration.name))
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
    fn every_migration_file_is_listed() {
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
        assert_eq!(
            checksum("CREATE TABLE a (x);\r\n"),
            checksum("CREATE TABLE a (x);\n")
        );
        assert_ne!(
            checksum("CREATE TABLE a (x);"),
            checksum("CREATE TABLE a (y);")
        );
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
