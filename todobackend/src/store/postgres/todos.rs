//! The `todos` queries on PostgreSQL, for one request: the connection is
//! taken from the pool at the first query and given back when the request
//! is done; one that failed for want of a database is not given back.

use std::cell::RefCell;

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::store::postgres::client::{Conn, Pool};
use crate::store::todos::{KEY_LIFETIME_SECS, Keyed, NewTodo, StoreError, Todo, TodoPatch, Todos};

/// The statements of the API, in one place: every query below names one of
/// these (only `update` builds its text, from fixed column names), so a
/// statement cache keyed by them (the pool's) sees a handful of texts.
mod sql {
    /// The columns of a `Todo`, in `todo_from_row`'s order.
    macro_rules! columns {
        () => {
            r#"id, title, completed, "order""#
        };
    }
    pub const COLUMNS: &str = columns!();
    pub const LIST: &str = concat!("SELECT ", columns!(), " FROM todos ORDER BY id");
    pub const GET: &str = concat!("SELECT ", columns!(), " FROM todos WHERE id = $1");
    pub const CREATE: &str =
        concat!(r#"INSERT INTO todos (title, completed, "order") VALUES ($1, $2, $3) RETURNING "#, columns!());
    pub const CREATED_WITH_KEY: &str =
        r#"SELECT todo_id, title, completed, "order" FROM idempotency_keys WHERE idempotency_key = $1"#;
    pub const RECORD_KEY: &str = r#"INSERT INTO idempotency_keys (idempotency_key, todo_id, title, completed, "order", created_at)
               VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (idempotency_key) DO NOTHING"#;
    pub const DELETE_EXPIRED_KEYS: &str = "DELETE FROM idempotency_keys WHERE created_at < $1";
    pub const DELETE: &str = "DELETE FROM todos WHERE id = $1";
    pub const DELETE_ALL: &str = "DELETE FROM todos";
}

/// Rows the full list reads from its portal at a time: the list is sent as
/// it is read, so at most this many rows are in memory per request.
const LIST_BATCH: i32 = 500;

pub struct Session<'a> {
    pool: &'a Pool,
    conn: RefCell<Option<Conn>>,
}

impl<'a> Session<'a> {
    pub fn new(pool: &'a Pool) -> Session<'a> {
        Session { pool, conn: RefCell::new(None) }
    }

    fn with<T>(&self, work: impl FnOnce(&mut Conn) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut slot = self.conn.borrow_mut();
        if slot.is_none() {
            *slot = Some(self.pool.get()?);
        }
        let result = work(slot.as_mut().expect("connected above"));
        if matches!(result, Err(StoreError::Unavailable(_))) {
            *slot = None;
        }
        result
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.get_mut().take() {
            self.pool.put(conn);
        }
    }
}

fn todo_from_row(row: &Row) -> Result<Todo, StoreError> {
    let read = |e: tokio_postgres::Error| StoreError::Failed(format!("unexpected todos row: {e}"));
    Ok(Todo {
        id: row.try_get(0).map_err(read)?,
        title: row.try_get(1).map_err(read)?,
        completed: row.try_get(2).map_err(read)?,
        order: row.try_get(3).map_err(read)?,
    })
}

impl Session<'_> {
    /// The todo as the POST that recorded `key` created it.
    pub fn created_with_key(&self, key: &str) -> Result<Option<Todo>, StoreError> {
        let row = self.with(|c| c.query_opt(sql::CREATED_WITH_KEY, &[&key]))?;
        row.as_ref().map(todo_from_row).transpose()
    }
}

/// Inserts the todo and records `key` with it in one transaction; `None`,
/// with the transaction rolled back, when another one recorded the key
/// first.
fn insert_with_key(conn: &Conn, key: &str, new: &NewTodo, now: i64) -> Result<Option<Todo>, StoreError> {
    conn.control("BEGIN")?;
    let inserted = (|| {
        let todo = todo_from_row(&conn.query_one(sql::CREATE, &[&new.title, &new.completed, &new.order])?)?;
        let recorded =
            conn.execute(sql::RECORD_KEY, &[&key, &todo.id, &todo.title, &todo.completed, &todo.order, &now])?;
        Ok((recorded == 1).then_some(todo))
    })();
    match inserted {
        Ok(Some(todo)) => {
            conn.control("COMMIT")?;
            Ok(Some(todo))
        }
        other => match conn.control("ROLLBACK") {
            Ok(()) => other,
            // Unavailable: the connection, in no known state, is not pooled.
            Err(e) => Err(StoreError::Unavailable(format!("cannot roll back a keyed POST: {e}"))),
        },
    }
}

impl Todos for Session<'_> {
    /// Through a portal in a read-only transaction, `LIST_BATCH` rows at a
    /// time: the whole result is never in memory, and it is one snapshot.
    fn for_each(&self, each: &mut dyn FnMut(Todo) -> bool) -> Result<(), StoreError> {
        let mut unreadable = None;
        self.with(|c| {
            c.for_each_row(sql::LIST, LIST_BATCH, &mut |row| match todo_from_row(row) {
                Ok(todo) => each(todo),
                Err(e) => {
                    unreadable = Some(e);
                    false
                }
            })
        })?;
        unreadable.map_or(Ok(()), Err)
    }

    fn get(&self, id: i64) -> Result<Option<Todo>, StoreError> {
        let row = self.with(|c| c.query_opt(sql::GET, &[&id]))?;
        row.as_ref().map(todo_from_row).transpose()
    }

    fn create(&self, new: &NewTodo) -> Result<Todo, StoreError> {
        let row = self.with(|c| c.query_one(sql::CREATE, &[&new.title, &new.completed, &new.order]))?;
        todo_from_row(&row)
    }

    /// Keyed POSTs run on several connections (and app tasks) at once, so
    /// the key's PRIMARY KEY decides: of two that both found no key, the
    /// second's key insert waits for the first's transaction, then inserts
    /// nothing (`ON CONFLICT DO NOTHING`), and it rolls its todo back and
    /// answers with the first's.
    fn create_once(&self, key: &str, new: &NewTodo, now: i64) -> Result<Keyed, StoreError> {
        // On its own, before the transaction: a failure of the database's
        // (two cleanups deadlocking) only keeps expired keys a little longer.
        // A database that is away fails the request now: going on would
        // spend a new connection's wait again, past the edge's wait for it.
        let expired = now - KEY_LIFETIME_SECS;
        match self.with(|c| c.execute(sql::DELETE_EXPIRED_KEYS, &[&expired])) {
            Err(away @ StoreError::Unavailable(_)) => return Err(away),
            Err(e) => tracing::warn!(error = %e, "expired idempotency keys were not deleted this time"),
            Ok(_) => {}
        }
        if let Some(stored) = self.created_with_key(key)? {
            return Ok(Keyed::again(stored, new));
        }
        match self.with(|c| insert_with_key(c, key, new, now))? {
            Some(todo) => Ok(Keyed::Created(todo)),
            None => {
                let stored = self.created_with_key(key)?.ok_or_else(|| {
                    StoreError::Failed(format!("idempotency key recorded by another request and then gone: {key:?}"))
                })?;
                Ok(Keyed::again(stored, new))
            }
        }
    }

    fn update(&self, id: i64, patch: &TodoPatch) -> Result<Option<Todo>, StoreError> {
        let mut sets: Vec<String> = Vec::new();
        let mut values: Vec<&(dyn ToSql + Sync)> = Vec::new();
        if let Some(title) = &patch.title {
            values.push(title);
            sets.push(format!("title = ${}", values.len()));
        }
        if let Some(completed) = &patch.completed {
            values.push(completed);
            sets.push(format!("completed = ${}", values.len()));
        }
        if let Some(order) = &patch.order {
            values.push(order);
            sets.push(format!(r#""order" = ${}"#, values.len()));
        }
        if sets.is_empty() {
            return self.get(id);
        }
        values.push(&id);
        // Only fixed column names are interpolated; every value is a parameter.
        let text =
            format!("UPDATE todos SET {} WHERE id = ${} RETURNING {}", sets.join(", "), values.len(), sql::COLUMNS);
        let row = self.with(|c| c.query_opt(&text, &values))?;
        row.as_ref().map(todo_from_row).transpose()
    }

    fn delete(&self, id: i64) -> Result<bool, StoreError> {
        Ok(self.with(|c| c.execute(sql::DELETE, &[&id]))? > 0)
    }

    fn delete_all(&self) -> Result<(), StoreError> {
        self.with(|c| c.execute(sql::DELETE_ALL, &[])).map(|_| ())
    }
}
