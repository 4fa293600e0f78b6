//! Schema migrations: SQL files in `migrations/NNNN_name.sql`, embedded in the
//! binary and applied in order. The schema version is SQLite's
//! `PRAGMA user_version`, which lives in the database header and changes
//! atomically with the transaction that applies the migrations.

use rusqlite::{Connection, TransactionBehavior};

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
}

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

/// Applies the pending migrations and returns the names of those applied
/// (empty when there was nothing to do).
///
/// All pending migrations run in one `BEGIN IMMEDIATE` transaction: a broken
/// migration leaves the database exactly as it was, and a second `migrate`
/// started at the same time waits for the lock (busy timeout) and then finds
/// nothing left to do, because the version is read again inside the
/// transaction.
pub fn apply(conn: &mut Connection, migrations: &[Migration]) -> Result<Vec<&'static str>, String> {
    check_order(migrations)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| format!("cannot lock the database for migrating: {e}"))?;
    let todo = pending(&tx, migrations)?;
    let current = migrations.len() - todo.len();
    let mut applied = Vec::with_capacity(todo.len());
    for migration in todo {
        // Returning the error drops `tx`, which rolls everything back.
        tx.execute_batch(migration.sql).map_err(|e| {
            format!(
                "migration {} failed: {e}; nothing was applied, the database is still at version {current}",
                migration.name
            )
        })?;
        applied.push(migration.name);
    }
    if !applied.is_empty() {
        // PRAGMA takes no bound parameters; the value is a number we computed.
        tx.execute_batch(&format!("PRAGMA user_version = {}", migrations.len()))
            .map_err(|e| format!("cannot record the schema version: {e}"))?;
    }
    tx.commit()
        .map_err(|e| format!("cannot commit the migrations: {e}"))?;
    Ok(applied)
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
