//! The storage seam: the server reaches the database only through `Store`,
//! with three calls, `read`, `run` and `ready`, the same on both backends:
//! - SQLite (`sqlite_pool`): reads on the calling thread, writes
//!   group-committed on one writer thread;
//! - PostgreSQL (`pg`): a pool of connections used from blocking threads,
//!   since the API handlers are synchronous.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::backend::{Database, Todos};
use crate::db;
use crate::migrations::{MIGRATIONS, PG_MIGRATIONS};
use crate::pg;
use crate::sqlite_pool::SqlitePool;

/// Connections in the PostgreSQL pool: a handful per core is plenty for
/// queries of a few rows.
pub const POOL_SIZE: usize = 8;

pub struct Store {
    backend: Backend,
}

enum Backend {
    Sqlite { path: PathBuf, pool: SqlitePool },
    Postgres { pool: pg::client::Pool, permits: Semaphore },
}

impl Store {
    /// The store `serve` uses: refuses (one line) a database that is missing,
    /// unreachable or has pending or changed migrations, so that a service
    /// restarts until `migrate` has run.
    pub fn for_serving(database: &Database) -> Result<Arc<Store>, String> {
        let backend = match database {
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
                Backend::Sqlite { path: db_path.clone(), pool: SqlitePool::open(db_path, first_conn)? }
            }
            Database::Postgres(target) => {
                let conn = pg::client::Conn::connect(target).map_err(|e| format!("refusing to start: {e}"))?;
                pg::migrate::ensure_migrated(&conn, target, PG_MIGRATIONS)?;
                let pool = pg::client::Pool::new(target.clone(), POOL_SIZE);
                pool.put(conn);
                Backend::Postgres { pool, permits: Semaphore::new(POOL_SIZE) }
            }
        };
        Ok(Arc::new(Store { backend }))
    }

    /// Runs `work`, which may write, off the threads serving sockets; its
    /// result comes back once what it wrote is committed.
    pub async fn run<T, F>(self: &Arc<Self>, work: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Todos) -> T + Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite { pool, .. } => pool.write(move |conn| work(conn)).await,
            Backend::Postgres { .. } => self.on_postgres(work).await,
        }
    }

    /// Runs `work`, which only reads (on SQLite, a connection that refuses
    /// writes).
    pub async fn read<T, F>(self: &Arc<Self>, work: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Todos) -> T + Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite { pool, .. } => pool.read(move |conn| work(conn)).await,
            Backend::Postgres { .. } => self.on_postgres(work).await,
        }
    }

    /// `work` with a PostgreSQL session on a blocking thread. It connects (or
    /// reuses a connection) at the first query; a database that is away
    /// answers each query with `Unavailable` (503).
    async fn on_postgres<T, F>(self: &Arc<Self>, work: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Todos) -> T + Send + 'static,
    {
        let Backend::Postgres { permits, .. } = &self.backend else {
            return Err("not a PostgreSQL store".to_string());
        };
        let permit = permits.acquire().await.map_err(|_| "database pool closed".to_string())?;
        let store = Arc::clone(self);
        let outcome = tokio::task::spawn_blocking(move || {
            let Backend::Postgres { pool, .. } = &store.backend else {
                return Err("not a PostgreSQL store".to_string());
            };
            let session = pg::todos::Session::new(pool);
            // A panic in `work` loses this request, not the pool.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&session)))
                .map_err(|_| "internal error".to_string())
        })
        .await
        .map_err(|e| format!("database task failed: {e}"))?;
        drop(permit);
        outcome
    }

    /// Readiness, on a fresh connection (so a pool connection stuck behind a
    /// lock is never the one asked), within `timeout`. SQLite: reads the
    /// todos table and takes the write lock (then lets it go), so it fails
    /// while another process holds the write lock (a migration, a restore),
    /// or the file is gone or unreadable: a replica that cannot write cannot
    /// serve POSTs. PostgreSQL: connects and reads the todos table.
    pub async fn ready(&self, timeout: Duration) -> Result<(), String> {
        let (check, allowance) = match &self.backend {
            Backend::Postgres { pool, .. } => {
                let target = pool.target().clone();
                let check = tokio::task::spawn_blocking(move || -> Result<(), String> {
                    let conn = pg::client::Conn::connect(&target).map_err(|e| e.to_string())?;
                    conn.query_one("SELECT count(*) FROM todos", &[]).map(|_| ()).map_err(|e| e.to_string())
                });
                (check, pg::client::CONNECT_TIMEOUT)
            }
            Backend::Sqlite { path, .. } => {
                let path = path.clone();
                let check = tokio::task::spawn_blocking(move || -> Result<(), String> {
                    let conn = db::open_existing(&path)?;
                    conn.busy_timeout(timeout).map_err(|e| e.to_string())?;
                    conn.query_row("SELECT count(*) FROM (SELECT 1 FROM todos LIMIT 1)", [], |row| row.get::<_, i64>(0))
                        .and_then(|_| conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK"))
                        .map_err(|e| format!("database {}: {e}", path.display()))
                });
                (check, Duration::from_millis(500))
            }
        };
        match tokio::time::timeout(timeout + allowance, check).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(format!("readiness check failed: {e}")),
            Err(_) => Err(format!("database did not answer within {timeout:?}")),
        }
    }
}
