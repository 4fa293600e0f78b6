//! SQLite under the server, tuned for the two cores it runs on.
//!
//! Profiled (perf, `ab -c 50` on GET /todos/1): a third of the server's time
//! went to waking threads and switching to them, one hop to a blocking
//! thread and one back per request. So:
//! - reads run on the calling thread, on a connection of a small pool. The
//!   database is in WAL mode, where a reader never waits for a writer's lock,
//!   and a read of a few rows takes microseconds: it cannot stall the
//!   runtime. (When WAL cannot be turned on, reads go to blocking threads as
//!   before, since a reader could then wait for a lock.)
//! - writes go to one writer thread with its own connection. It takes every
//!   write queued while the previous commit ran and commits them together in
//!   one transaction (group commit), so 50 concurrent POSTs cost a few
//!   commits instead of 50, and our own writers never queue on SQLite's lock
//!   and its sleeping busy handler (that was POST's p99 of 900 ms). A write
//!   is answered only after its commit succeeded.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};

use rusqlite::Connection;
use tokio::sync::{Semaphore, oneshot};

/// Reader connections. A read on the calling thread runs to its end without
/// yielding, so at most one per runtime worker is in use there; the rest
/// serve reads on blocking threads when WAL is off.
pub const READERS: usize = 4;

/// Connections for long reads (the full list, streamed while its client
/// reads it), apart from `READERS`, so that slow clients of the list never
/// hold a connection that the short reads need; past them, a list waits.
pub const LONG_READERS: usize = 4;

/// Writes committed in one transaction at most: bounds how long the first
/// of a group waits for the others.
const MAX_GROUP: usize = 128;

/// Sends a write's result once its group's commit is known.
type Delivery = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A write: given the writer's connection inside a transaction (or why there
/// is no transaction), runs and returns how to deliver its result.
type Job = Box<dyn FnOnce(Result<&Connection, &str>) -> Delivery + Send>;

pub struct SqlitePool {
    readers: Arc<Mutex<Vec<Connection>>>,
    permits: Arc<Semaphore>,
    long_readers: Arc<Mutex<Vec<Connection>>>,
    long_permits: Arc<Semaphore>,
    /// WAL is on: reads run on the calling thread.
    inline_reads: bool,
    writer: mpsc::Sender<Job>,
}

impl SqlitePool {
    /// Turns on WAL mode, opens the readers and starts the writer thread;
    /// `first` is a connection the caller already opened.
    pub fn open(path: &Path, first: Connection) -> Result<SqlitePool, String> {
        let inline_reads = match super::enable_wal(&first) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(database = %path.display(), reason = %e, "WAL mode is off: reads go to blocking threads");
                false
            }
        };
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let conn = super::open_existing(path)?;
            if inline_reads {
                super::configure_inline_reader(&conn, path)?;
            }
            readers.push(conn);
        }
        let mut long_readers = Vec::with_capacity(LONG_READERS);
        for _ in 0..LONG_READERS {
            let conn = super::open_existing(path)?;
            super::configure_query_only(&conn, path)?;
            long_readers.push(conn);
        }
        super::configure_writer(&first, path)?;
        let (writer, jobs) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("todobackend-db-writer".into())
            .spawn(move || write_loop(&first, &jobs))
            .map_err(|e| format!("cannot start the database writer thread: {e}"))?;
        Ok(SqlitePool {
            readers: Arc::new(Mutex::new(readers)),
            permits: Arc::new(Semaphore::new(READERS)),
            long_readers: Arc::new(Mutex::new(long_readers)),
            long_permits: Arc::new(Semaphore::new(LONG_READERS)),
            inline_reads,
            writer,
        })
    }

    /// Runs `work`, which only reads, with a reader connection.
    pub async fn read<T, F>(&self, work: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> T + Send + 'static,
    {
        if self.inline_reads
            && let Ok(permit) = self.permits.try_acquire()
        {
            let result = with_reader(&self.readers, work);
            drop(permit);
            return result;
        }
        on_blocking_reader(&self.permits, &self.readers, work).await
    }

    /// Runs `work`, which only reads but may take long (it may wait for a
    /// client to read what it sends), on a blocking thread with one of the
    /// long readers.
    pub async fn read_long<T, F>(&self, work: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> T + Send + 'static,
    {
        on_blocking_reader(&self.long_permits, &self.long_readers, work).await
    }

    /// Runs `work` on the writer thread inside a transaction shared with the
    /// writes queued beside it; its result comes back once that transaction
    /// is committed (an error if the commit failed: nothing was written).
    pub async fn write<T, F>(&self, work: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> T + Send + 'static,
    {
        let (sender, result) = oneshot::channel::<Result<T, String>>();
        let job: Job = Box::new(move |conn| {
            let outcome = match conn {
                Ok(conn) => catch_unwind(AssertUnwindSafe(|| work(conn))).map_err(|_| "internal error".to_string()),
                Err(why) => Err(why.to_string()),
            };
            Box::new(move |committed| {
                let _ = sender.send(committed.and(outcome));
            })
        });
        self.writer.send(job).map_err(|_| "the database writer has stopped".to_string())?;
        result.await.map_err(|_| "the database writer has stopped".to_string())?
    }
}

/// Runs `work` with one of `readers` on a blocking thread, once one of
/// `permits` (as many as the readers) is free.
async fn on_blocking_reader<T, F>(
    permits: &Arc<Semaphore>,
    readers: &Arc<Mutex<Vec<Connection>>>,
    work: F,
) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> T + Send + 'static,
{
    let permit = Arc::clone(permits).acquire_owned().await.map_err(|_| "database pool closed".to_string())?;
    let readers = Arc::clone(readers);
    tokio::task::spawn_blocking(move || {
        let result = with_reader(&readers, work);
        drop(permit);
        result
    })
    .await
    .map_err(|e| format!("database task failed: {e}"))?
}

/// A connection of the pool for `work`; a permit guarantees there is one.
fn with_reader<T>(readers: &Mutex<Vec<Connection>>, work: impl FnOnce(&Connection) -> T) -> Result<T, String> {
    let conn = readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
    let Some(conn) = conn else { return Err("database pool empty".to_string()) };
    // A panic in `work` loses this request, not the connection.
    let result = catch_unwind(AssertUnwindSafe(|| work(&conn)));
    readers.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
    result.map_err(|_| "internal error".to_string())
}

/// The writer thread: ends when the pool (the only sender) is dropped.
fn write_loop(conn: &Connection, jobs: &mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        commit_group(conn, group);
    }
}

/// Runs a group of writes in one transaction and delivers each result after
/// the commit. A write whose error made SQLite roll the whole transaction
/// back (disk full, I/O error) takes the writes before it in the group with
/// it: they get an error too, and the rest start a new transaction.
fn commit_group(conn: &Connection, group: Vec<Job>) {
    let mut ran: Vec<Delivery> = Vec::with_capacity(group.len());
    let mut in_transaction = false;
    for job in group {
        if !in_transaction {
            if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
                let why = format!("cannot start a write transaction: {e}");
                job(Err(&why))(Ok(()));
                continue;
            }
            in_transaction = true;
        }
        let deliver = job(Ok(conn));
        if conn.is_autocommit() {
            let lost = "the database rolled back the transaction of this write".to_string();
            for earlier in ran.drain(..) {
                earlier(Err(lost.clone()));
            }
            deliver(Err(lost));
            in_transaction = false;
            continue;
        }
        ran.push(deliver);
    }
    if !in_transaction {
        return;
    }
    let committed = conn.execute_batch("COMMIT").map_err(|e| format!("the write was not committed: {e}"));
    if committed.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for deliver in ran {
        deliver(committed.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::catalog::MIGRATIONS;
    use crate::store::sqlite::migrate::apply;

    fn pool() -> (SqlitePool, tempdir::Dir) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("db.sqlite3");
        let mut conn = crate::store::sqlite::open_for_migrate(&path).unwrap();
        apply(&mut conn, MIGRATIONS).unwrap();
        drop(conn);
        let pool = SqlitePool::open(&path, crate::store::sqlite::open_existing(&path).unwrap()).unwrap();
        (pool, dir)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let path = std::env::temp_dir().join(format!(
                    "todobackend-pool-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::SeqCst)
                ));
                std::fs::create_dir_all(&path).unwrap();
                Dir(path)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    }

    fn insert(conn: &Connection, title: &str) -> i64 {
        conn.query_row("INSERT INTO todos (title, completed) VALUES (?1, 0) RETURNING id", [title], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn writes_queued_together_are_committed_and_each_gets_its_result() {
        let (pool, _dir) = pool();
        assert!(pool.inline_reads, "WAL mode is on for a database on a local disk");
        let pool = Arc::new(pool);
        let ids = block_on(async {
            let writes: Vec<_> = (0..20)
                .map(|i| {
                    let pool = Arc::clone(&pool);
                    tokio::spawn(async move { pool.write(move |c| insert(c, &format!("t{i}"))).await })
                })
                .collect();
            let mut ids = Vec::new();
            for w in writes {
                ids.push(w.await.unwrap().unwrap());
            }
            ids
        });
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 20, "every write got its own row: {ids:?}");
        let count: i64 =
            block_on(pool.read(|c| c.query_row("SELECT count(*) FROM todos", [], |r| r.get(0)).unwrap())).unwrap();
        assert_eq!(count, 20);
    }

    #[test]
    fn a_write_that_panics_fails_alone() {
        let (pool, _dir) = pool();
        let failed = block_on(pool.write(|_c| -> i64 { panic!("boom") }));
        assert_eq!(failed.unwrap_err(), "internal error");
        let id = block_on(pool.write(|c| insert(c, "after"))).unwrap();
        assert!(id > 0);
    }

    #[test]
    fn a_write_rolled_back_by_sqlite_takes_its_group_with_it_and_says_so() {
        let (_pool, dir) = pool();
        let conn = crate::store::sqlite::open_existing(&dir.0.join("db.sqlite3")).unwrap();
        let first: Job = Box::new(|c| {
            let c = c.unwrap();
            insert(c, "lost");
            Box::new(|committed: Result<(), String>| assert!(committed.is_err(), "{committed:?}"))
        });
        // ROLLBACK inside a write stands for SQLite's own rollback on an I/O error.
        let second: Job = Box::new(|c| {
            c.unwrap().execute_batch("ROLLBACK").unwrap();
            Box::new(|committed: Result<(), String>| assert!(committed.is_err(), "{committed:?}"))
        });
        let third: Job = Box::new(|c| {
            insert(c.unwrap(), "kept");
            Box::new(|committed: Result<(), String>| assert!(committed.is_ok(), "{committed:?}"))
        });
        commit_group(&conn, vec![first, second, third]);
        let titles: Vec<String> = conn
            .prepare("SELECT title FROM todos")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(titles, ["kept"]);
    }
}
