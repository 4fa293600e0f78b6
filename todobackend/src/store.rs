//! The storage seam: the server reaches the database only through `Store`.
//! Either a small pool of SQLite connections used from blocking threads
//! (rusqlite is synchronous), or a pool of PostgreSQL connections (`pg`),
//! used from blocking threads too, since the API handlers are synchronous.
//! Both behind the same two calls, `run` and `ready`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::Semaphore;

use crate::backend::{Database, Todos};
use crate::db;
use crate::migrations::{MIGRATIONS, PG_MIGRATIONS};
use crate::pg;

/// Connections in the pool: SQLite serialises writers anyway, and readers
/// on two cores gain nothing from more.
pub const POOL_SIZE: usize = 8;

pub struct Store {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
    /// Set for PostgreSQL; the SQLite fields are then unused.
    postgres: Option<pg::client::Pool>,
}

impl Store {
    /// The store `serve` uses: refuses (one line) a database that is missing,
    /// unreachable or has pending or changed migrations, so that a service
    /// restarts until `migrate` has run.
    pub fn for_serving(database: &Database) -> Result<Arc<Store>, String> {
        match database {
            Database::Sqlite(db_path) => {
                if !db_path.exists() {
                    return Err(format!(
                        "refusing to start: database {} does not exist, so all {} migration(s) are pending; run `todobackend migrate` first",
                        db_path.display(),
                        MIGRATIONS.len()
                    ));
                }
                let first_conn = db::open_existing(db_path)?;
                db::ensure_migrated(&first_conn, db_path, MIGRATIONS)?;
                Store::open(db_path, first_conn)
            }
            Database::Postgres(target) => {
                let conn = pg::client::Conn::connect(target).map_err(|e| format!("refusing to start: {e}"))?;
                pg::migrate::ensure_migrated(&conn, target, PG_MIGRATIONS)?;
                let pool = pg::client::Pool::new(target.clone(), POOL_SIZE);
                pool.put(conn);
                Ok(Arc::new(Store {
                    path: PathBuf::new(),
                    idle: Mutex::new(Vec::new()),
                    permits: Semaphore::new(POOL_SIZE),
                    postgres: Some(pool),
                }))
            }
        }
    }

    /// Opens `POOL_SIZE` connections to an existing database; `first` is
    /// one the caller already opened (and checked the schema with).
    pub fn open(path: &Path, first: Connection) -> Result<Arc<Store>, String> {
        let mut conns = vec![first];
        for _ in 1..POOL_SIZE {
            conns.push(db::open_existing(path)?);
        }
        Ok(Arc::new(Store {
            path: path.to_path_buf(),
            idle: Mutex::new(conns),
            permits: Semaphore::new(POOL_SIZE),
            postgres: None,
        }))
    }

    /// Runs `work` with a connection of the pool on a blocking thread, so
    /// that a slow query never stalls the threads serving sockets.
    pub async fn run<T, F>(self: &Arc<Self>, work: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Todos) -> T + Send + 'static,
    {
        let permit = self.permits.acquire().await.map_err(|_| "database pool closed".to_string())?;
        let store = Arc::clone(self);
        let outcome = tokio::task::spawn_blocking(move || {
            if let Some(pool) = &store.postgres {
                // Connects (or reuses) at the first query; a database that
                // is away answers each query with `Unavailable` (503).
                let session = pg::todos::Session::new(pool);
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&session)));
                return result.map_err(|_| "internal error".to_string());
            }
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
        if let Some(pool) = &self.postgres {
            let target = pool.target().clone();
            let check = tokio::task::spawn_blocking(move || -> Result<(), String> {
                let conn = pg::client::Conn::connect(&target).map_err(|e| e.to_string())?;
                conn.query_one("SELECT count(*) FROM todos", &[]).map(|_| ()).map_err(|e| e.to_string())
            });
            return match tokio::time::timeout(timeout + pg::client::CONNECT_TIMEOUT, check).await {
                Ok(Ok(result)) => result,
                Ok(Err(e)) => Err(format!("readiness check failed: {e}")),
                Err(_) => Err(format!("database did not answer within {timeout:?}")),
            };
        }
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
