//! The storage seam: the server reaches the database only through `Store`.
//! Today it is SQLite (`sqlite_pool`: reads on the calling thread, writes
//! group-committed on one writer thread); a PostgreSQL backend replaces this
//! module's insides and keeps its calls, `read`, `run` and `ready`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;

use crate::db;
use crate::sqlite_pool::SqlitePool;

pub struct Store {
    path: PathBuf,
    pool: SqlitePool,
}

impl Store {
    /// Opens the connections to an existing database; `first` is one the
    /// caller already opened (and checked the schema with).
    pub fn open(path: &Path, first: Connection) -> Result<Arc<Store>, String> {
        Ok(Arc::new(Store { path: path.to_path_buf(), pool: SqlitePool::open(path, first)? }))
    }

    /// Runs `work`, which may write, off the threads serving sockets; its
    /// result comes back once what it wrote is committed.
    pub async fn run<T, F>(self: &Arc<Self>, work: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> T + Send + 'static,
    {
        self.pool.write(work).await
    }

    /// Runs `work`, which only reads (a connection refuses writes here).
    pub async fn read<T, F>(self: &Arc<Self>, work: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> T + Send + 'static,
    {
        self.pool.read(work).await
    }

    /// Readiness: a fresh connection (so a pool connection stuck behind a
    /// lock is never the one asked) reads the todos table and takes the
    /// write lock (then lets it go) within `timeout`. Fails while another
    /// process holds the write lock (a migration, a restore), or the file is
    /// gone or unreadable: a replica that cannot write cannot serve POSTs.
    pub async fn ready(&self, timeout: Duration) -> Result<(), String> {
        let path = self.path.clone();
        let check = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let conn = db::open_existing(&path)?;
            conn.busy_timeout(timeout).map_err(|e| e.to_string())?;
            conn.query_row("SELECT count(*) FROM (SELECT 1 FROM todos LIMIT 1)", [], |row| row.get::<_, i64>(0))
                .and_then(|_| conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK"))
                .map_err(|e| format!("database {}: {e}", path.display()))
        });
        match tokio::time::timeout(timeout + Duration::from_millis(500), check).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(format!("readiness check failed: {e}")),
            Err(_) => Err(format!("database did not answer within {timeout:?}")),
        }
    }
}
