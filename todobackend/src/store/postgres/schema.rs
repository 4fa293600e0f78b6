//! The schema's state on PostgreSQL, which `migrate`, `backups` and the move
//! all read: the migrations `schema_migrations` records, the version they
//! make, and the advisory lock that serialises whatever changes the schema
//! or replaces the data (`migrate`, `restore`, the move).

use crate::store::postgres::client::Conn;
use crate::store::todos::StoreError;

/// The advisory lock `migrate` and `restore` hold ("todomigr").
pub const LOCK_KEY: i64 = 0x746f_646f_6d69_6772;

/// A row of `schema_migrations`.
#[derive(Debug, Clone)]
pub struct Applied {
    pub version: u32,
    pub name: String,
    pub checksum: String,
    pub additive: bool,
}

/// The recorded migrations, in order; `None` for a database never migrated.
pub fn applied(conn: &Conn) -> Result<Option<Vec<Applied>>, StoreError> {
    let exists = conn.query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])?;
    if !exists.get::<_, bool>(0) {
        return Ok(None);
    }
    let rows = conn.query("SELECT version, name, checksum, additive FROM schema_migrations ORDER BY version", &[])?;
    Ok(Some(
        rows.iter()
            .map(|row| Applied {
                version: row.get::<_, i32>(0) as u32,
                name: row.get(1),
                checksum: row.get(2),
                additive: row.get(3),
            })
            .collect(),
    ))
}

/// The version the recorded migrations make (0 for none).
pub fn current_version(applied: &[Applied]) -> u32 {
    applied.last().map_or(0, |entry| entry.version)
}

/// Holds the advisory lock for as long as it lives (and the session ends
/// it anyway if the process dies).
pub struct Locked<'a>(&'a Conn);

pub fn lock(conn: &Conn) -> Result<Locked<'_>, StoreError> {
    conn.batch(&format!("SELECT pg_advisory_lock({LOCK_KEY})"))?;
    Ok(Locked(conn))
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let _ = self.0.batch(&format!("SELECT pg_advisory_unlock({LOCK_KEY})"));
    }
}
