//! The `todos` queries on PostgreSQL, for one request: the connection is
//! taken from the pool at the first query and given back when the request
//! is done; one that failed for want of a database is not given back.

use std::cell::RefCell;

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::backend::{StoreError, Todos};
use crate::db::{KEY_LIFETIME_SECS, Keyed, NewTodo, Todo, TodoPatch};
use crate::pg::client::{Conn, Pool};

const COLUMNS: &str = r#"id, title, completed, "order""#;

pub struct Session<'a> {
    pool: &'a Pool,
    conn: RefCell<Option<Conn>>,
}

impl<'a> Session<'a> {
    pub fn new(pool: &'a Pool) -> Session<'a> {
        Session { pool, conn: RefCell::new(None) }
    }

    fn with<T>(&self, work: impl FnOnce(&Conn) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut slot = self.conn.borrow_mut();
        if slot.is_none() {
            *slot = Some(self.pool.get()?);
        }
        let result = work(slot.as_ref().expect("connected above"));
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
        let sql = r#"SELECT todo_id, title, completed, "order" FROM idempotency_keys WHERE idempotency_key = $1"#;
        let row = self.with(|c| c.query_opt(sql, &[&key]))?;
        row.as_ref().map(todo_from_row).transpose()
    }
}

/// Inserts the todo and records `key` with it in one transaction; `None`,
/// with the transaction rolled back, when another one recorded the key
/// first.
fn insert_with_key(conn: &Conn, key: &str, new: &NewTodo, now: i64) -> Result<Option<Todo>, StoreError> {
    conn.control("BEGIN")?;
    let inserted = (|| {
        let sql = format!(r#"INSERT INTO todos (title, completed, "order") VALUES ($1, $2, $3) RETURNING {COLUMNS}"#);
        let todo = todo_from_row(&conn.query_one(&sql, &[&new.title, &new.completed, &new.order])?)?;
        let recorded = conn.execute(
            r#"INSERT INTO idempotency_keys (idempotency_key, todo_id, title, completed, "order", created_at)
               VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (idempotency_key) DO NOTHING"#,
            &[&key, &todo.id, &todo.title, &todo.completed, &todo.order, &now],
        )?;
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
    fn list(&self) -> Result<Vec<Todo>, StoreError> {
        let rows = self.with(|c| c.query(&format!("SELECT {COLUMNS} FROM todos ORDER BY id"), &[]))?;
        rows.iter().map(todo_from_row).collect()
    }

    fn get(&self, id: i64) -> Result<Option<Todo>, StoreError> {
        let row = self.with(|c| c.query_opt(&format!("SELECT {COLUMNS} FROM todos WHERE id = $1"), &[&id]))?;
        row.as_ref().map(todo_from_row).transpose()
    }

    fn create(&self, new: &NewTodo) -> Result<Todo, StoreError> {
        let sql = format!(r#"INSERT INTO todos (title, completed, "order") VALUES ($1, $2, $3) RETURNING {COLUMNS}"#);
        let row = self.with(|c| c.query_one(&sql, &[&new.title, &new.completed, &new.order]))?;
        todo_from_row(&row)
    }

    /// Keyed POSTs run on several connections (and app tasks) at once, so
    /// the key's PRIMARY KEY decides: of two that both found no key, the
    /// second's key insert waits for the first's transaction, then inserts
    /// nothing (`ON CONFLICT DO NOTHING`), and it rolls its todo back and
    /// answers with the first's.
    fn create_once(&self, key: &str, new: &NewTodo, now: i64) -> Result<Keyed, StoreError> {
        // On its own, before the transaction: a failure here (two cleanups
        // deadlocking) only keeps expired keys a little longer.
        let expired = now - KEY_LIFETIME_SECS;
        if let Err(e) = self.with(|c| c.execute("DELETE FROM idempotency_keys WHERE created_at < $1", &[&expired])) {
            tracing::warn!(error = %e, "expired idempotency keys were not deleted this time");
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
        let sql = format!("UPDATE todos SET {} WHERE id = ${} RETURNING {COLUMNS}", sets.join(", "), values.len());
        let row = self.with(|c| c.query_opt(&sql, &values))?;
        row.as_ref().map(todo_from_row).transpose()
    }

    fn delete(&self, id: i64) -> Result<bool, StoreError> {
        Ok(self.with(|c| c.execute("DELETE FROM todos WHERE id = $1", &[&id]))? > 0)
    }

    fn delete_all(&self) -> Result<(), StoreError> {
        self.with(|c| c.execute("DELETE FROM todos", &[])).map(|_| ())
    }
}
