//! The storage seam: the server reaches the database only through `Store`.
//! Today it is a small pool of SQLite connections used from blocking
//! threads (rusqlite is synchronous); a PostgreSQL backend replaces this
//! module's insides and keeps its two calls, `run` and `ready`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::Semaphore;

use crate::db;

/// Connections in the pool: SQLite serialises writers anyway, and readers
/// on two cores gain nothing from more.
pub const POOL_SIZE: usize = 8;

pub struct Store {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl Store {
    /// Opens `POOL_SIZE` connections to an existing database; `first` is
    /// one the caller already opened (and checked the schema with).
    pub fn open(path: &Path, first: Connection) -> Result<Arc<Store>, String> {
        let mut conns = vec![first];
        for _ in 1..POOL_SIZE {
            conns.push(db::open_existing(path)?);
        }
        Ok(Arc::new(Store { path: path.to_path_buf(), idle: Mutex::new(conns), permits: Semaphore::new(POOL_SIZE) }))
    }

    /// Runs `work` with a connection of the pool on a blocking thread, so
    /// that a slow query never stalls the threads serving sockets.
    pub async fn run<T, F>(self: &Arc<Self>, work: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> T + Send + 'static,
    {
        let permit = self.permits.acquire().await.map_err(|_| "database pool closed".to_string())?;
        let store = Arc::clone(self);
        let outcome = tokio::task::spawn_blocking(move || {
            let conn = store.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some(conn) = conn else { return Err("database pool empty".to_string()) };
            // A panic in `work` loses this request, not the connection.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&conn)));
            store.idle.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
            result.map_err(|_| "internal error".to_string())
        })
        .await
        .map_err(|e| format!("database task failed: {e}"))?;
        drop(permit);
        outcome
    }

    /// Readiness: a fresh connection (so a pool connection stuck behind a
    /// lock is never the one asked) reads the todos table within `timeout`.
    /// Fails while another process holds an exclusive lock, or the file is
    /// gone or unreadable.
    pub async fn ready(&self, timeout: Duration) -> Result<(), String> {
        let path = self.path.clone();
        let check = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let conn = db::open_existing(&path)?;
            conn.busy_timeout(timeout).map_err(|e| e.to_string())?;
            conn.query_row("SELECT count(*) FROM todos", [], |row| row.get::<_, i64>(0))
                .map(|_| ())
                .map_err(|e| format!("database {}: {e}", path.display()))
        });
        match tokio::time::timeout(timeout + Duration::from_millis(500), check).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(format!("readiness check failed: {e}")),
            Err(_) => Err(format!("database did not answer within {timeout:?}")),
        }
    }
}
