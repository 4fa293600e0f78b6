//! The storage seam: the server reaches the database only through `Store`,
//! with four calls, `read`, `read_long` (the streamed list), `run` and
//! `ready`, the same on both backends:
//! - SQLite (`sqlite`): reads on the calling thread, writes
//!   group-committed on one writer thread;
//! - PostgreSQL (`postgres`): a pool of connections used from blocking
//!   threads, since the API handlers are synchronous.
//!
//! `todos` is the seam itself (the todos, the queries, the errors);
//! `catalog` the migrations both backends apply; `backups` what their
//! backups share. `sqlite/` and `postgres/` each hold their connections,
//! migrate, backups and queries, and never import each other (but for the
//! move from SQLite to PostgreSQL, `postgres::moving`, which reads SQLite).

pub mod backups;
pub mod catalog;
pub mod postgres;
pub mod sqlite;
pub mod todos;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use self::catalog::{MIGRATIONS, PG_MIGRATIONS};
use self::postgres::config::Target;
use self::sqlite::pool::SqlitePool;
use self::todos::Todos;

/// Where the data is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    Postgres(Target),
}

impl Database {
    /// PostgreSQL when `TODOBACKEND_DATABASE_URL` is set (its password file
    /// read now, so a bad one fails before anything starts), else the
    /// SQLite file `path`.
    pub fn select(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Database, String> {
        Ok(match Target::from_env(env)? {
            Some(target) => Database::Postgres(target),
            None => Database::Sqlite(path.to_path_buf()),
        })
    }

    /// The database for messages and logs (never with the password).
    pub fn describe(&self) -> String {
        match self {
            Database::Sqlite(path) => path.display().to_string(),
            Database::Postgres(target) => target.display(),
        }
    }
}

/// Connections in the PostgreSQL pool: a handful per core is plenty for
/// queries of a few rows.
pub const POOL_SIZE: usize = 8;

pub struct Store {
    backend: Backend,
}

enum Backend {
    Sqlite { path: PathBuf, pool: SqlitePool },
    Postgres { pool: postgres::client::Pool, permits: Semaphore },
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
                let first_conn = sqlite::open_existing(db_path)?;
                sqlite::ensure_migrated(&first_conn, db_path, MIGRATIONS)?;
                Backend::Sqlite { path: db_path.clone(), pool: SqlitePool::open(db_path, first_conn)? }
            }
            Database::Postgres(target) => {
                let conn = postgres::client::Conn::connect(target).map_err(|e| format!("refusing to start: {e}"))?;
                postgres::migrate::ensure_migrated(&conn, target, PG_MIGRATIONS)?;
                let pool = postgres::client::Pool::new(target.clone(), POOL_SIZE);
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

    /// Runs `work`, which only reads but may take long (the full list,
    /// sent on while the client reads it), on a blocking thread: on SQLite
    /// with a connection of its own set, so that slow clients never hold
    /// the ones short reads need; on PostgreSQL as any query.
    pub async fn read_long<T, F>(self: &Arc<Self>, work: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Todos) -> T + Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite { pool, .. } => pool.read_long(move |conn| work(conn)).await,
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
            let session = postgres::todos::Session::new(pool);
            // A panic in `work` loses this request, not the pool.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&session)))
                .map_err(|_| "internal error".to_string())
        })
        .await
        .map_err(|e| format!("database task failed: {e}"))?;
        drop(permit);
        outcome
    }

    /// One readiness check, constant time whatever the table holds (callers
    /// share its result: see `readiness`). It fails when a request could
    /// not be served now:
    /// - PostgreSQL: a pooled connection (a new one only when none is idle)
    ///   runs `SELECT 1 FROM todos LIMIT 0`, which proves the server answers
    ///   and the table is there and readable (it waits behind a migration's
    ///   or restore's exclusive lock) without reading a row. A connection
    ///   that failed is dropped, not pooled.
    /// - SQLite: the file is still there, and the writer thread, in the
    ///   group of writes it is committing anyway, finds the table: so it
    ///   fails while another process holds the write lock (a migration, a
    ///   restore), since a replica that cannot write cannot serve a POST,
    ///   but it never takes the lock beside our own writer.
    pub async fn ready(self: &Arc<Self>) -> Result<(), String> {
        match &self.backend {
            Backend::Postgres { .. } => {
                let store = Arc::clone(self);
                tokio::task::spawn_blocking(move || -> Result<(), String> {
                    let Backend::Postgres { pool, .. } = &store.backend else {
                        return Err("not a PostgreSQL store".to_string());
                    };
                    let conn = pool.get().map_err(|e| e.to_string())?;
                    conn.execute(READY_QUERY, &[]).map_err(|e| e.to_string())?;
                    pool.put(conn);
                    Ok(())
                })
                .await
                .map_err(|e| format!("readiness check failed: {e}"))?
            }
            Backend::Sqlite { path, pool } => {
                if !path.exists() {
                    return Err(format!("database {} is gone", path.display()));
                }
                let found = pool
                    .write(|conn| conn.prepare(READY_QUERY).map(|_| ()).map_err(|e| e.to_string()))
                    .await
                    .and_then(|prepared| prepared);
                found.map_err(|e| format!("database {}: {e}", path.display()))
            }
        }
    }

    /// How long one readiness check may take, given the time the database
    /// has to answer: PostgreSQL may need a new connection first.
    pub fn ready_limit(&self, timeout: Duration) -> Duration {
        match &self.backend {
            Backend::Postgres { .. } => timeout + postgres::client::CONNECT_TIMEOUT,
            Backend::Sqlite { .. } => timeout + Duration::from_millis(500),
        }
    }
}

/// The readiness query on both backends: it names the table (so it proves
/// the schema) and reads no row (so it costs the same on any table size).
const READY_QUERY: &str = "SELECT 1 FROM todos LIMIT 0";
