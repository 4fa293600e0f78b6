//! SQLite's backups, taken by `migrate` before it changes the schema and by
//! `restore` before it replaces the database: consistent snapshots
//! (`VACUUM INTO`) in `backups/` beside the database (`/data/backups` in the
//! image; `TODOBACKEND_BACKUPS` elsewhere). Their names, listing, rotation
//! and choice are shared with PostgreSQL's (`store::backups`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OpenFlags};

use crate::store::backups::{BEFORE, REPLACED, Restored, beyond_kept, file_name, list, newest_before, timestamp};

/// The backups directory for a database: `TODOBACKEND_BACKUPS`, else
/// `backups/` beside the database file.
pub fn dir_for(db: &Path, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    match env("TODOBACKEND_BACKUPS").filter(|value| !value.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => db.parent().unwrap_or(Path::new(".")).join("backups"),
    }
}

/// Write a consistent snapshot of `conn`'s database into `dir`, then drop the
/// oldest of that kind beyond five. Nothing else is touched when it fails.
pub fn snapshot(conn: &Connection, dir: &Path, schema_version: u32, what: &str) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the backups directory {}: {e}", dir.display()))?;
    let mut path = dir.join(file_name(schema_version, &timestamp(SystemTime::now()), what));
    // Names are to the second: a second backup within one waits for the next.
    while path.exists() {
        std::thread::sleep(Duration::from_millis(100));
        path = dir.join(file_name(schema_version, &timestamp(SystemTime::now()), what));
    }
    let target = path.to_str().ok_or_else(|| format!("the backup path {} is not UTF-8", path.display()))?;
    conn.execute("VACUUM INTO ?1", [target]).map_err(|e| {
        let _ = std::fs::remove_file(&path);
        format!("cannot write the backup {}: {e}", path.display())
    })?;
    let kind = if what == REPLACED { "replaced-by-restore" } else { "before-migration" };
    for old in beyond_kept(&list(dir)?, kind) {
        let _ = std::fs::remove_file(dir.join(&old.file));
    }
    Ok(path)
}

/// The snapshot `migrate` takes before applying `migration`.
pub fn before_migration(
    conn: &Connection,
    dir: &Path,
    schema_version: u32,
    migration: &str,
) -> Result<PathBuf, String> {
    snapshot(conn, dir, schema_version, &format!("{BEFORE}{migration}"))
}

/// Replace the database at `db` with the newest backup taken before
/// `migration`, after keeping the current database as a backup. The online
/// backup API copies the pages under SQLite's locks, so a server that has
/// the database open sees the restored database at its next statement.
pub fn restore(db: &Path, dir: &Path, migration: &str) -> Result<Restored, String> {
    let backups = list(dir)?;
    let chosen = newest_before(&backups, migration, dir)?.clone();
    let mut conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|e| format!("cannot open database {}: {e}", db.display()))?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(|e| format!("cannot configure database {}: {e}", db.display()))?;
    let current = crate::store::sqlite::migrate::current_version(&conn)?;
    let kept = snapshot(&conn, dir, current, REPLACED)?;
    let source = dir.join(&chosen.file);
    conn.restore(rusqlite::MAIN_DB, &source, None::<fn(rusqlite::backup::Progress)>).map_err(|e| {
        format!("cannot restore {}: {e}; the database is unchanged or as kept in {}", source.display(), kept.display())
    })?;
    let schema_version = crate::store::sqlite::migrate::current_version(&conn)?;
    Ok(Restored { restored: chosen, kept, schema_version })
}
