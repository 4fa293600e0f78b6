//! Shared helpers for the integration tests: temporary directories, a
//! migrated database, an in-process server, and HTTP calls over real
//! sockets on 127.0.0.1.

#![allow(dead_code)] // each test crate uses a different subset

pub mod postgres;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use todobackend::client::{self, Response};
use todobackend::http::server::{self, ServerHandle};
use todobackend::http::static_files;
use todobackend::store::Database;
use todobackend::store::catalog as migrations;

/// A directory removed when dropped (std only: no tempfile dependency).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let name =
            format!("todobackend-test-{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running server over a migrated database with collected static files.
pub struct TestServer {
    pub handle: ServerHandle,
    pub base: String,
    pub db: PathBuf,
    pub static_root: PathBuf,
    pub dir: TempDir,
    pub database: Database,
}

pub fn migrated_db(dir: &TempDir) -> PathBuf {
    let db = dir.join("todos.sqlite3");
    todobackend::cli::migrate_with(&db, &db.with_file_name("backups"), migrations::MIGRATIONS).expect("migrate");
    db
}

pub fn start_server() -> TestServer {
    start_server_on(Backend::Sqlite)
}

/// A server over an existing SQLite database (static files from `dir`).
pub fn start_server_from(db: &Path, dir: &TempDir) -> ServerHandle {
    let static_root = dir.join("public");
    static_files::collect(&static_root).expect("collectstatic");
    server::start("127.0.0.1:0", db, &static_root).expect("server starts")
}

/// The two storage backends, for tests that run on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A server over a migrated database of `backend` (on PostgreSQL, a new
/// database of the shared test server).
pub fn start_server_on(backend: Backend) -> TestServer {
    let dir = TempDir::new();
    let static_root = dir.join("public");
    static_files::collect(&static_root).expect("collectstatic");
    let (db, database) = match backend {
        Backend::Sqlite => {
            let db = migrated_db(&dir);
            (db.clone(), Database::Sqlite(db))
        }
        Backend::Postgres => {
            let pg = postgres::shared().database();
            todobackend::cli::migrate_postgres(&pg.target(), migrations::PG_MIGRATIONS).expect("migrate");
            (PathBuf::new(), pg.database())
        }
    };
    let handle =
        server::start_on("127.0.0.1:0", &database, &static_root, server::Options::default()).expect("server starts");
    let base = handle.url();
    TestServer { handle, base, db, static_root, dir, database }
}

/// `#[test]`s for each backend: `both_backends!(name, ...)` turns each
/// `fn name(backend: Backend)` into `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name($crate::common::Backend::Sqlite) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name($crate::common::Backend::Postgres) } )*
        }
    };
}

const TIMEOUT: Duration = Duration::from_secs(10);

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> Response {
        self.call("GET", path, &[], None)
    }

    pub fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Response {
        client::request(method, &self.url(path), headers, body.map(str::as_bytes), TIMEOUT)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Response {
        let text = body.to_string();
        self.call("POST", path, &[("Content-Type", "application/json")], Some(&text))
    }

    pub fn patch_json(&self, path: &str, body: &Value) -> Response {
        let text = body.to_string();
        self.call("PATCH", path, &[("Content-Type", "application/json")], Some(&text))
    }

    /// Sends `raw` bytes as they are and returns the whole answer as text,
    /// for requests the client would not produce (no Host, odd paths).
    pub fn raw(&self, raw: &str) -> String {
        let mut stream = TcpStream::connect(self.handle.addr()).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        stream.write_all(raw.as_bytes()).expect("send");
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The path of a todo URL (`http://host/todos/3` -> `/todos/3`).
    pub fn path_of(url: &str) -> String {
        let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
        rest.find('/').map(|i| rest[i..].to_string()).unwrap_or_else(|| "/".into())
    }
}

pub fn json(r: &Response) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.text()))
}

/// Asserts the JSON error body `{"error": "..."}` and returns the message.
pub fn error_message(r: &Response) -> String {
    match json(r).get("error") {
        Some(Value::String(s)) => s.clone(),
        other => panic!("expected {{\"error\": ...}}, got {other:?} in {}", r.text()),
    }
}

/// The address `serve` names in its first log line (after the timestamp and
/// level): `... INFO serving on http://127.0.0.1:PORT ...`.
pub fn serving_url(first_line: &str) -> String {
    first_line
        .split_once(" INFO serving on ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {first_line}"))
        .to_string()
}

/// Polls `check` every 20 ms until it gives a value, or `None` after `limit`
/// (for a caller that must clean up before it fails).
pub fn poll<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `check` until it gives a value, failing after `limit`.
pub fn wait_until<T>(what: &str, limit: Duration, check: impl FnMut() -> Option<T>) -> T {
    poll(limit, check).unwrap_or_else(|| panic!("timed out waiting until {what}"))
}
