//! Backups on PostgreSQL, taken in the database itself: every table of the
//! app's schema (`current_schema()`, with `schema_migrations`) copied into a
//! schema of its own, `todobackend_backup_N`, in one REPEATABLE READ
//! transaction, so the copy is one consistent snapshot while the app keeps
//! writing. A catalog (`todobackend_backups.catalog`) names each backup as
//! the SQLite side names its files (`<schema version>-<UTC timestamp>-before-
//! <migration>`, `...-replaced-by-restore`), so `backups`, `restore --before`
//! and the xtask that reads them see the same thing on both backends.
//!
//! Why not `pg_dump`: the app image is `FROM scratch` (no `pg_dump`, no
//! shell), and on a multi-node swarm the `migrate` job has no node-local
//! volume to write a dump to; a backup in the database survives exactly
//! what the database survives, and the database's own backups (volume
//! snapshots, RDS snapshots) carry these schemas along. What is copied:
//! columns, defaults, constraints, indexes and identity positions
//! (`LIKE ... INCLUDING ALL`); foreign keys between tables are not (the
//! schema has none).

use crate::store::backups::{self, Backup};
use crate::store::postgres::client::Conn;
use crate::store::postgres::schema;
use crate::store::todos::StoreError;

const CATALOG_SCHEMA: &str = "todobackend_backups";
const SETUP: &str = "CREATE SCHEMA IF NOT EXISTS todobackend_backups;
CREATE TABLE IF NOT EXISTS todobackend_backups.catalog (
    name        TEXT PRIMARY KEY,
    schema_name TEXT NOT NULL UNIQUE,
    taken_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE SEQUENCE IF NOT EXISTS todobackend_backups.ids";
const REPLACED: &str = "-replaced-by-restore";

/// `"name"`, quoted as an identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The backups, newest first (none when the catalog does not exist).
pub fn list(conn: &Conn) -> Result<Vec<Backup>, StoreError> {
    let exists = conn.query_one("SELECT to_regclass('todobackend_backups.catalog') IS NOT NULL", &[])?;
    if !exists.get::<_, bool>(0) {
        return Ok(Vec::new());
    }
    let rows = conn.query("SELECT name FROM todobackend_backups.catalog", &[])?;
    let mut found: Vec<Backup> = rows
        .iter()
        .filter_map(|row| {
            let name: String = row.get(0);
            Backup::parse_name(&name, &name)
        })
        .collect();
    found.sort_by(|a, b| b.taken.cmp(&a.taken).then(b.schema_version.cmp(&a.schema_version)).then(b.file.cmp(&a.file)));
    Ok(found)
}

fn schema_of(conn: &Conn, name: &str) -> Result<String, StoreError> {
    let row = conn.query_one("SELECT schema_name FROM todobackend_backups.catalog WHERE name = $1", &[&name])?;
    Ok(row.get(0))
}

fn tables_in(conn: &Conn, schema: Option<&str>) -> Result<(String, Vec<String>), StoreError> {
    let schema: String = match schema {
        Some(schema) => schema.to_owned(),
        None => conn.query_one("SELECT current_schema()", &[])?.get(0),
    };
    let rows = conn.query("SELECT tablename::text FROM pg_tables WHERE schemaname = $1 ORDER BY 1", &[&schema])?;
    Ok((schema, rows.iter().map(|row| row.get(0)).collect()))
}

/// Sets the identity sequences of `to.table` where those of `from.table` are.
fn copy_identity(conn: &Conn, from: &str, to: &str, table: &str) -> Result<(), StoreError> {
    let columns = conn.query(
        "SELECT a.attname::text FROM pg_attribute a JOIN pg_class c ON a.attrelid = c.oid \
         JOIN pg_namespace n ON c.relnamespace = n.oid \
         WHERE n.nspname = $1 AND c.relname = $2 AND a.attidentity <> '' AND NOT a.attisdropped",
        &[&from, &table],
    )?;
    for column in columns {
        let column: String = column.get(0);
        let sequence = |schema: &str| -> Result<Option<String>, StoreError> {
            let qualified = format!("{}.{}", ident(schema), ident(table));
            Ok(conn.query_one("SELECT pg_get_serial_sequence($1, $2)", &[&qualified, &column])?.get(0))
        };
        let (Some(source), Some(target)) = (sequence(from)?, sequence(to)?) else { continue };
        // Both names come from pg_get_serial_sequence, already quoted.
        let state = conn.query_one(&format!("SELECT last_value, is_called FROM {source}"), &[])?;
        let (last, called): (i64, bool) = (state.get(0), state.get(1));
        conn.query_one("SELECT setval($1::text::regclass, $2, $3)", &[&target, &last, &called])?;
    }
    Ok(())
}

/// Copies every table of `from` into `to` (which exists).
fn copy_tables(conn: &Conn, from: &str, to: &str, tables: &[String]) -> Result<(), StoreError> {
    for table in tables {
        let (source, target) = (format!("{}.{}", ident(from), ident(table)), format!("{}.{}", ident(to), ident(table)));
        conn.batch(&format!(
            "CREATE TABLE {target} (LIKE {source} INCLUDING ALL); \
             INSERT INTO {target} OVERRIDING SYSTEM VALUE SELECT * FROM {source}"
        ))?;
        copy_identity(conn, from, to, table)?;
    }
    Ok(())
}

/// A catalog name not yet taken: names are to the second, so a second
/// backup within one waits for the next.
fn fresh_name(conn: &Conn, schema_version: u32, what: &str) -> Result<String, StoreError> {
    loop {
        let name = format!("{schema_version}-{}{what}", backups::timestamp(std::time::SystemTime::now()));
        let taken = conn.query_opt("SELECT 1 FROM todobackend_backups.catalog WHERE name = $1", &[&name])?;
        if taken.is_none() {
            return Ok(name);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn in_transaction<T>(conn: &Conn, begin: &str, work: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    conn.batch(begin)?;
    match work() {
        Ok(value) => {
            conn.batch("COMMIT")?;
            Ok(value)
        }
        Err(e) => {
            let _ = conn.batch("ROLLBACK");
            Err(e)
        }
    }
}

fn new_schema(conn: &Conn, name: &str) -> Result<String, StoreError> {
    let id: i64 = conn.query_one("SELECT nextval('todobackend_backups.ids')", &[])?.get(0);
    let schema = format!("todobackend_backup_{id}");
    conn.batch(&format!("CREATE SCHEMA {}", ident(&schema)))?;
    conn.execute("INSERT INTO todobackend_backups.catalog (name, schema_name) VALUES ($1, $2)", &[&name, &schema])?;
    Ok(schema)
}

/// Drops the oldest backups of `kind` beyond the newest five.
fn rotate(conn: &Conn, kind: &str) -> Result<(), StoreError> {
    for old in backups::beyond_kept(&list(conn)?, kind) {
        let schema = schema_of(conn, &old.file)?;
        in_transaction(conn, "BEGIN", || {
            conn.batch(&format!("DROP SCHEMA IF EXISTS {} CASCADE", ident(&schema)))?;
            conn.execute("DELETE FROM todobackend_backups.catalog WHERE name = $1", &[&old.file]).map(|_| ())
        })?;
    }
    Ok(())
}

/// The backup `migrate` takes before applying `migration` (the caller holds
/// the migrate lock). Returns its name; nothing is kept when it fails.
pub fn before_migration(conn: &Conn, schema_version: u32, migration: &str) -> Result<String, StoreError> {
    conn.batch(SETUP).map_err(|e| prefix(e, "cannot set up the backups catalog"))?;
    let name = fresh_name(conn, schema_version, &format!("-before-{migration}"))?;
    in_transaction(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ", || {
        let schema = new_schema(conn, &name)?;
        let (app, tables) = tables_in(conn, None)?;
        copy_tables(conn, &app, &schema, &tables)
    })
    .map_err(|e| prefix(e, "cannot take the backup"))?;
    rotate(conn, "before-migration")?;
    Ok(name)
}

fn prefix(e: StoreError, what: &str) -> StoreError {
    match e {
        StoreError::Unavailable(why) => StoreError::Unavailable(format!("{what}: {why}")),
        StoreError::Failed(why) => StoreError::Failed(format!("{what}: {why}")),
    }
}

/// What a restore did (as `backups::Restored`, with names for files).
pub struct Restored {
    pub restored: Backup,
    pub kept: String,
    pub schema_version: u32,
}

/// Replaces the app's tables with those of the newest backup taken before
/// `migration`, in one transaction: the current tables are moved (not
/// copied) into a `...-replaced-by-restore` backup, then the backup's are
/// copied in. The app's queries wait on the table locks meanwhile and then
/// see the restored tables; a failure leaves everything as it was.
pub fn restore(conn: &Conn, migration: &str, label: &std::path::Path) -> Result<Restored, String> {
    let text = |e: StoreError| e.to_string();
    let _lock = schema::lock(conn).map_err(text)?;
    let found = list(conn).map_err(text)?;
    let chosen = backups::newest_before(&found, migration, label)?.clone();
    let current = schema::applied(conn).map_err(text)?.map_or(0, |applied| schema::current_version(&applied));
    conn.batch(SETUP).map_err(text)?;
    let kept = fresh_name(conn, current, REPLACED).map_err(text)?;
    let source = schema_of(conn, &chosen.file).map_err(text)?;
    in_transaction(conn, "BEGIN", || {
        let (app, tables) = tables_in(conn, None)?;
        for table in &tables {
            conn.batch(&format!("LOCK TABLE {}.{} IN ACCESS EXCLUSIVE MODE", ident(&app), ident(table)))?;
        }
        let replaced = new_schema(conn, &kept)?;
        for table in &tables {
            conn.batch(&format!("ALTER TABLE {}.{} SET SCHEMA {}", ident(&app), ident(table), ident(&replaced)))?;
        }
        let (_, saved) = tables_in(conn, Some(&source))?;
        copy_tables(conn, &source, &app, &saved)
    })
    .map_err(|e| format!("cannot restore {}: {e}; the database is unchanged", chosen.file))?;
    rotate(conn, "replaced-by-restore").map_err(text)?;
    let schema_version = schema::applied(conn).map_err(text)?.map_or(0, |applied| schema::current_version(&applied));
    Ok(Restored { restored: chosen, kept, schema_version })
}

/// The schema holding backups, for messages.
pub fn location(target: &crate::store::postgres::config::Target) -> String {
    format!("{} (schema {CATALOG_SCHEMA})", target.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(ident("todos"), "\"todos\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }
}
