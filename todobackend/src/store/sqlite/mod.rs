//! SQLite access: opening connections the same way everywhere, and the
//! queries on the `todos` table.

pub mod backups;
pub mod migrate;
pub mod pool;

use std::path::Path;
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row};

use crate::store::catalog::Migration;
use crate::store::todos::{KEY_LIFETIME_SECS, Keyed, NewTodo, StoreError, Todo, TodoPatch, Todos};

/// How long a connection waits for another one's lock before giving up:
/// long enough for a concurrent `migrate` or a burst of writes to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

fn configure(conn: &Connection, path: &Path) -> Result<(), String> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| format!("cannot configure database {}: {e}", path.display()))?;
    // Keep temporary tables and sort files in memory: in a `FROM scratch`
    // image there is no /tmp for SQLite to put them in.
    conn.execute_batch("PRAGMA temp_store = MEMORY")
        .map_err(|e| format!("cannot configure database {}: {e}", path.display()))
}

/// Turns the database file to WAL mode (it stays so: the mode is recorded in
/// the file). In WAL mode readers never wait for a writer and a writer never
/// waits for readers, so the server can read on its own threads; a commit
/// appends to the `-wal` file beside the database (with its `-shm` index)
/// instead of rewriting pages through a rollback journal. Fails (and the
/// server keeps the rollback journal) where WAL is not possible, such as on
/// a network file system without shared memory.
pub fn enable_wal(conn: &Connection) -> Result<(), String> {
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|e| format!("cannot turn on WAL mode: {e}"))?;
    if mode.eq_ignore_ascii_case("wal") { Ok(()) } else { Err(format!("the database stays in {mode} journal mode")) }
}

/// How long a reader on the server's own threads may wait for a lock. In WAL
/// mode it waits only in rare moments (another process recovering the WAL
/// after a crash); it must not stall the threads serving sockets for long.
const INLINE_READ_BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// A connection that reads on the server's runtime threads.
pub fn configure_inline_reader(conn: &Connection, path: &Path) -> Result<(), String> {
    conn.busy_timeout(INLINE_READ_BUSY_TIMEOUT)
        .and_then(|()| conn.execute_batch("PRAGMA query_only = ON"))
        .map_err(|e| format!("cannot configure database {}: {e}", path.display()))
}

/// A connection that only reads, on blocking threads (the streamed list):
/// the usual busy timeout, and no write can slip through it.
pub fn configure_query_only(conn: &Connection, path: &Path) -> Result<(), String> {
    conn.execute_batch("PRAGMA query_only = ON")
        .map_err(|e| format!("cannot configure database {}: {e}", path.display()))
}

/// The server's one writer connection. `synchronous = FULL` (SQLite's
/// default, kept on purpose): each commit is on disk before its requests are
/// answered, so a todo that got its 201 survives a power cut. Group commit
/// (see `pool`) pays for the fsync once per group of writes, which is
/// what makes POST fast, not a weaker durability.
pub fn configure_writer(conn: &Connection, path: &Path) -> Result<(), String> {
    conn.execute_batch("PRAGMA synchronous = FULL")
        .map_err(|e| format!("cannot configure database {}: {e}", path.display()))
}

/// Opens (creating it and its directory if needed) the database for `migrate`.
pub fn open_for_migrate(path: &Path) -> Result<Connection, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
    }
    let conn = Connection::open(path).map_err(|e| format!("cannot open database {}: {e}", path.display()))?;
    configure(&conn, path)?;
    Ok(conn)
}

/// Opens an existing database for serving. It is never created here: a
/// missing file means `migrate` has not run, which the caller reports.
pub fn open_existing(path: &Path) -> Result<Connection, String> {
    if !path.exists() {
        return Err(format!("database {} does not exist; run `todobackend migrate` first", path.display()));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| format!("cannot open database {}: {e}", path.display()))?;
    configure(&conn, path)?;
    Ok(conn)
}

/// Fails with a one-line explanation unless every migration has been applied
/// and none was changed since (by checksum).
pub fn ensure_migrated(conn: &Connection, path: &Path, all: &[Migration]) -> Result<(), String> {
    let refuse = |why: String| format!("refusing to start: database {}: {why}", path.display());
    let pending = migrate::pending(conn, all).map_err(refuse)?;
    if !pending.is_empty() {
        let names: Vec<&str> = pending.iter().map(|m| m.name).collect();
        return Err(format!(
            "refusing to start: database {} has {} pending migration(s) ({}); run `todobackend migrate` first",
            path.display(),
            pending.len(),
            names.join(", ")
        ));
    }
    // Unrecorded ones come from a database migrated by an older release;
    // `migrate` records them, and serving must not write to the schema.
    let unrecorded = migrate::unrecorded(conn, all).map_err(refuse)?;
    if !unrecorded.is_empty() {
        return Err(format!(
            "refusing to start: database {} has no checksums recorded for its applied migrations yet; run `todobackend migrate` first",
            path.display()
        ));
    }
    Ok(())
}

fn todo_from_row(row: &Row<'_>) -> rusqlite::Result<Todo> {
    Ok(Todo { id: row.get(0)?, title: row.get(1)?, completed: row.get(2)?, order: row.get(3)? })
}

/// The columns of a `Todo`, in `todo_from_row`'s order.
macro_rules! columns {
    () => {
        r#"id, title, completed, "order""#
    };
}
const COLUMNS: &str = columns!();
const LIST: &str = concat!("SELECT ", columns!(), " FROM todos ORDER BY id");
const GET: &str = concat!("SELECT ", columns!(), " FROM todos WHERE id = ?1");
const CREATE: &str =
    concat!(r#"INSERT INTO todos (title, completed, "order") VALUES (?1, ?2, ?3) RETURNING "#, columns!());

// Every query goes through the connection's statement cache
// (`prepare_cached`): SQLite parses and plans each SQL text once per
// connection, not once per request.

pub fn list(conn: &Connection) -> rusqlite::Result<Vec<Todo>> {
    let mut todos = Vec::new();
    for_each(conn, &mut |todo| {
        todos.push(todo);
        true
    })?;
    Ok(todos)
}

/// Calls `each` with every todo in id order, one row at a time (nothing
/// but the current row is held), until it returns `false`.
pub fn for_each(conn: &Connection, each: &mut dyn FnMut(Todo) -> bool) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(LIST)?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        if !each(todo_from_row(row)?) {
            break;
        }
    }
    Ok(())
}

pub fn get(conn: &Connection, id: i64) -> rusqlite::Result<Option<Todo>> {
    conn.prepare_cached(GET)?.query_row([id], todo_from_row).optional()
}

/// Inserts a todo. One statement with RETURNING, so no multi-statement
/// transaction is needed (and none can deadlock with another worker).
pub fn create(conn: &Connection, new: &NewTodo) -> rusqlite::Result<Todo> {
    conn.prepare_cached(CREATE)?.query_row(rusqlite::params![new.title, new.completed, new.order], todo_from_row)
}

/// Creates `new` at most once per `key` (see `Keyed`). Runs on the writer
/// connection, inside its transaction (or as its own one), whose lock
/// serialises keyed POSTs: the second of two with one key finds the first's
/// row. Should it not, the key's PRIMARY KEY decides (`insert_with_key`).
pub fn create_once(conn: &Connection, key: &str, new: &NewTodo, now: i64) -> rusqlite::Result<Keyed> {
    conn.prepare_cached("DELETE FROM idempotency_keys WHERE created_at < ?1")?.execute([now - KEY_LIFETIME_SECS])?;
    if let Some(stored) = created_with_key(conn, key)? {
        return Ok(Keyed::again(stored, new));
    }
    match insert_with_key(conn, key, new, now)? {
        Some(todo) => Ok(Keyed::Created(todo)),
        None => {
            let stored = created_with_key(conn, key)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
            Ok(Keyed::again(stored, new))
        }
    }
}

/// The todo as the POST that recorded `key` created it.
pub fn created_with_key(conn: &Connection, key: &str) -> rusqlite::Result<Option<Todo>> {
    conn.prepare_cached(
        r#"SELECT todo_id, title, completed, "order" FROM idempotency_keys WHERE idempotency_key = ?1"#,
    )?
    .query_row([key], todo_from_row)
    .optional()
}

/// Inserts the todo and records `key` with it, both or neither (a
/// savepoint, inside the writer's group transaction); `None`, with nothing
/// inserted, when the key was recorded meanwhile.
pub fn insert_with_key(conn: &Connection, key: &str, new: &NewTodo, now: i64) -> rusqlite::Result<Option<Todo>> {
    conn.execute_batch("SAVEPOINT create_once")?;
    let inserted = (|| {
        let todo = create(conn, new)?;
        let recorded = conn
            .prepare_cached(
                r#"INSERT INTO idempotency_keys (idempotency_key, todo_id, title, completed, "order", created_at)
               VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (idempotency_key) DO NOTHING"#,
            )?
            .execute(rusqlite::params![key, todo.id, todo.title, todo.completed, todo.order, now])?;
        Ok((recorded == 1).then_some(todo))
    })();
    match inserted {
        Ok(Some(todo)) => {
            conn.execute_batch("RELEASE create_once")?;
            Ok(Some(todo))
        }
        other => {
            // Undoes the todo too; fails only if SQLite already rolled the
            // whole transaction back, which the writer reports anyway.
            let _ = conn.execute_batch("ROLLBACK TO create_once; RELEASE create_once");
            other
        }
    }
}

/// Applies a partial update; `Ok(None)` when there is no such todo.
pub fn update(conn: &Connection, id: i64, patch: &TodoPatch) -> rusqlite::Result<Option<Todo>> {
    let mut sets: Vec<&str> = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    if let Some(title) = &patch.title {
        sets.push("title = ?");
        values.push(Value::Text(title.clone()));
    }
    if let Some(completed) = patch.completed {
        sets.push("completed = ?");
        values.push(Value::Integer(i64::from(completed)));
    }
    if let Some(order) = patch.order {
        sets.push(r#""order" = ?"#);
        values.push(order.map_or(Value::Null, Value::Integer));
    }
    if sets.is_empty() {
        return get(conn, id);
    }
    values.push(Value::Integer(id));
    // Only fixed column names are interpolated; every value is a parameter.
    let sql = format!("UPDATE todos SET {} WHERE id = ? RETURNING {COLUMNS}", sets.join(", "));
    // At most seven texts (which fields are set), each cached once.
    conn.prepare_cached(&sql)?.query_row(rusqlite::params_from_iter(values), todo_from_row).optional()
}

/// Deletes one todo; `false` when there was none.
pub fn delete(conn: &Connection, id: i64) -> rusqlite::Result<bool> {
    Ok(conn.prepare_cached("DELETE FROM todos WHERE id = ?1")?.execute([id])? > 0)
}

pub fn delete_all(conn: &Connection) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM todos")?.execute([]).map(|_| ())
}

fn sqlite_failed(e: rusqlite::Error) -> StoreError {
    StoreError::Failed(e.to_string())
}

impl Todos for Connection {
    fn for_each(&self, each: &mut dyn FnMut(Todo) -> bool) -> Result<(), StoreError> {
        self::for_each(self, each).map_err(sqlite_failed)
    }
    fn get(&self, id: i64) -> Result<Option<Todo>, StoreError> {
        self::get(self, id).map_err(sqlite_failed)
    }
    fn create(&self, new: &NewTodo) -> Result<Todo, StoreError> {
        self::create(self, new).map_err(sqlite_failed)
    }
    fn create_once(&self, key: &str, new: &NewTodo, now: i64) -> Result<Keyed, StoreError> {
        self::create_once(self, key, new, now).map_err(sqlite_failed)
    }
    fn update(&self, id: i64, patch: &TodoPatch) -> Result<Option<Todo>, StoreError> {
        self::update(self, id, patch).map_err(sqlite_failed)
    }
    fn delete(&self, id: i64) -> Result<bool, StoreError> {
        self::delete(self, id).map_err(sqlite_failed)
    }
    fn delete_all(&self) -> Result<(), StoreError> {
        self::delete_all(self).map_err(sqlite_failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::catalog::MIGRATIONS;
    use crate::store::sqlite::migrate::apply;

    fn db() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        apply(&mut conn, MIGRATIONS).unwrap();
        conn
    }

    #[test]
    fn create_get_update_delete() {
        let conn = db();
        let new = NewTodo { title: "a".into(), completed: false, order: Some(3) };
        let t = create(&conn, &new).unwrap();
        assert_eq!((t.title.as_str(), t.completed, t.order), ("a", false, Some(3)));
        assert_eq!(get(&conn, t.id).unwrap(), Some(t.clone()));

        let patch = TodoPatch { completed: Some(true), order: Some(None), ..Default::default() };
        let u = update(&conn, t.id, &patch).unwrap().unwrap();
        assert_eq!((u.title.as_str(), u.completed, u.order), ("a", true, None));
        assert_eq!(update(&conn, t.id + 100, &patch).unwrap(), None);

        assert!(delete(&conn, t.id).unwrap());
        assert!(!delete(&conn, t.id).unwrap());
        assert_eq!(get(&conn, t.id).unwrap(), None);
    }

    fn count(conn: &Connection, table: &str) -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get(0)).unwrap()
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_key_creates_once_and_answers_again_with_the_todo_as_created() {
        let conn = db();
        let new = NewTodo { title: "a".into(), completed: false, order: Some(1) };
        let Keyed::Created(first) = create_once(&conn, "k1", &new, NOW).unwrap() else { panic!("not created") };
        assert_eq!(create_once(&conn, "k1", &new, NOW + 5).unwrap(), Keyed::Replayed(first.clone()));
        assert_eq!(count(&conn, "todos"), 1);
        // Changed or deleted since: the answer is still the one of the first POST.
        update(&conn, first.id, &TodoPatch { title: Some("b".into()), ..Default::default() }).unwrap();
        assert_eq!(create_once(&conn, "k1", &new, NOW + 6).unwrap(), Keyed::Replayed(first.clone()));
        delete(&conn, first.id).unwrap();
        assert_eq!(create_once(&conn, "k1", &new, NOW + 7).unwrap(), Keyed::Replayed(first));
        assert_eq!(count(&conn, "todos"), 0);
        // Another key is another todo.
        assert!(matches!(create_once(&conn, "k2", &new, NOW).unwrap(), Keyed::Created(_)));
        assert_eq!(count(&conn, "todos"), 1);
    }

    #[test]
    fn a_key_reused_for_other_fields_is_refused_without_inserting() {
        let conn = db();
        let new = NewTodo { title: "a".into(), completed: false, order: None };
        create_once(&conn, "k", &new, NOW).unwrap();
        for other in [
            NewTodo { title: "b".into(), ..new.clone() },
            NewTodo { completed: true, ..new.clone() },
            NewTodo { order: Some(0), ..new.clone() },
        ] {
            assert_eq!(create_once(&conn, "k", &other, NOW).unwrap(), Keyed::OtherRequest, "{other:?}");
        }
        assert_eq!(count(&conn, "todos"), 1);
    }

    #[test]
    fn keys_are_forgotten_after_24_hours_by_the_next_keyed_post() {
        let conn = db();
        let new = NewTodo { title: "a".into(), completed: false, order: None };
        let Keyed::Created(first) = create_once(&conn, "old", &new, NOW).unwrap() else { panic!("not created") };
        let still = NOW + KEY_LIFETIME_SECS;
        assert_eq!(create_once(&conn, "old", &new, still).unwrap(), Keyed::Replayed(first.clone()));
        let later = still + 1;
        create_once(&conn, "other", &new, later).unwrap();
        assert_eq!(created_with_key(&conn, "old").unwrap(), None, "an expired key was kept");
        let Keyed::Created(again) = create_once(&conn, "old", &new, later).unwrap() else { panic!("not created") };
        assert!(again.id > first.id);
    }

    #[test]
    fn a_key_recorded_meanwhile_undoes_the_insert() {
        let conn = db();
        let new = NewTodo { title: "a".into(), completed: false, order: None };
        let first = insert_with_key(&conn, "k", &new, NOW).unwrap().expect("the first insert records the key");
        // As a racing writer that looked the key up before the first committed.
        assert_eq!(insert_with_key(&conn, "k", &new, NOW).unwrap(), None);
        assert_eq!(list(&conn).unwrap(), vec![first.clone()]);
        assert_eq!(create_once(&conn, "k", &new, NOW).unwrap(), Keyed::Replayed(first));
    }

    #[test]
    fn ids_are_not_reused_after_delete() {
        let conn = db();
        let new = NewTodo { title: "a".into(), completed: false, order: None };
        let first = create(&conn, &new).unwrap();
        delete_all(&conn).unwrap();
        let second = create(&conn, &new).unwrap();
        assert!(second.id > first.id);
        assert_eq!(list(&conn).unwrap(), vec![second]);
    }
}
