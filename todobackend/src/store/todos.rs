//! What the API needs from a database, the same on both backends: the
//! todos as the API sees them, the queries (`Todos`), and why a database
//! could not answer (`StoreError`: 503 or 500).

use std::fmt;

/// A stored todo, without its URL (that depends on the request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Todo {
    pub id: i64,
    pub title: String,
    pub completed: bool,
    pub order: Option<i64>,
}

/// The fields of a new todo, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTodo {
    pub title: String,
    pub completed: bool,
    pub order: Option<i64>,
}

/// How long an `Idempotency-Key` is honoured after the POST that first
/// used it: a keyed POST first deletes the keys older than this.
pub const KEY_LIFETIME_SECS: i64 = 24 * 60 * 60;

/// What a POST with an `Idempotency-Key` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keyed {
    /// The key was new: the todo was inserted and the key recorded with it.
    Created(Todo),
    /// The key was used before for the same request: nothing was inserted;
    /// this is the todo as that first POST created it (since updated or
    /// deleted or not).
    Replayed(Todo),
    /// The key was used before for a request with other fields: nothing was
    /// inserted.
    OtherRequest,
}

impl Keyed {
    /// The answer to `new` under a key that already created `stored`: the
    /// same request (the same title, completed and order, which the insert
    /// stored as given) is answered again, another one is refused.
    pub fn again(stored: Todo, new: &NewTodo) -> Keyed {
        let same = stored.title == new.title && stored.completed == new.completed && stored.order == new.order;
        if same { Keyed::Replayed(stored) } else { Keyed::OtherRequest }
    }
}

/// A partial update: `None` leaves a field alone; for `order`,
/// `Some(None)` sets it to null.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TodoPatch {
    pub title: Option<String>,
    pub completed: Option<bool>,
    pub order: Option<Option<i64>>,
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
    /// `create` at most once per `Idempotency-Key` (see `Keyed`); `now`
    /// in Unix seconds, for the keys' 24 hours.
    fn create_once(&self, key: &str, new: &NewTodo, now: i64) -> Result<Keyed, StoreError>;
    /// `Ok(None)` when there is no such todo.
    fn update(&self, id: i64, patch: &TodoPatch) -> Result<Option<Todo>, StoreError>;
    /// `false` when there was none.
    fn delete(&self, id: i64) -> Result<bool, StoreError>;
    fn delete_all(&self) -> Result<(), StoreError>;
}
