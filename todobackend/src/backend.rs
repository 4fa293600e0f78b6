//! Which database the service uses, and what the API needs from it.
//! `TODOBACKEND_DATABASE_URL` set: PostgreSQL (`pg`); unset: SQLite at
//! `TODOBACKEND_DB` (`db`), exactly as before there was a choice.

use std::fmt;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::db::{self, Keyed, NewTodo, Todo, TodoPatch};
use crate::pg::config::Target;

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

/// Why the database could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// It cannot be reached now (down, restarting, too many connections):
    /// the client gets 503 and may retry.
    Unavailable(String),
    /// It answered with an error: 500.
    Failed(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable(why) => write!(f, "database unavailable: {why}"),
            StoreError::Failed(why) => f.write_str(why),
        }
    }
}

/// The queries on the `todos` table, the same on both backends.
pub trait Todos {
    /// Every todo in id order, handed to `each` one at a time as the
    /// database yields them (the list is never held whole), until `each`
    /// returns `false`.
    fn for_each(&self, each: &mut dyn FnMut(Todo) -> bool) -> Result<(), StoreError>;
    fn get(&self, id: i64) -> Result<Option<Todo>, StoreError>;
    fn create(&self, new: &NewTodo) -> Result<Todo, StoreError>;
    /// `create` at most once per `Idempotency-Key` (see `db::Keyed`); `now`
    /// in Unix seconds, for the keys' 24 hours.
    fn create_once(&self, key: &str, new: &NewTodo, now: i64) -> Result<Keyed, StoreError>;
    /// `Ok(None)` when there is no such todo.
    fn update(&self, id: i64, patch: &TodoPatch) -> Result<Option<Todo>, StoreError>;
    /// `false` when there was none.
    fn delete(&self, id: i64) -> Result<bool, StoreError>;
    fn delete_all(&self) -> Result<(), StoreError>;
}

fn sqlite_failed(e: rusqlite::Error) -> StoreError {
    StoreError::Failed(e.to_string())
}

impl Todos for Connection {
    fn for_each(&self, each: &mut dyn FnMut(Todo) -> bool) -> Result<(), StoreError> {
        db::for_each(self, each).map_err(sqlite_failed)
    }
    fn get(&self, id: i64) -> Result<Option<Todo>, StoreError> {
        db::get(self, id).map_err(sqlite_failed)
    }
    fn create(&self, new: &NewTodo) -> Result<Todo, StoreError> {
        db::create(self, new).map_err(sqlite_failed)
    }
    fn create_once(&self, key: &str, new: &NewTodo, now: i64) -> Result<Keyed, StoreError> {
        db::create_once(self, key, new, now).map_err(sqlite_failed)
    }
    fn update(&self, id: i64, patch: &TodoPatch) -> Result<Option<Todo>, StoreError> {
        db::update(self, id, patch).map_err(sqlite_failed)
    }
    fn delete(&self, id: i64) -> Result<bool, StoreError> {
        db::delete(self, id).map_err(sqlite_failed)
    }
    fn delete_all(&self) -> Result<(), StoreError> {
        db::delete_all(self).map_err(sqlite_failed)
    }
}
