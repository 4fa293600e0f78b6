//! GET /todos streams the list from the database cursor: 100,000 todos
//! and 32 concurrent full-list GETs keep the server's RSS under 64 MiB above
//! idle, and every answer is the whole list, on both backends. A database
//! that fails after the head was sent aborts the connection: the client
//! sees an incomplete body, never a shorter list that looks whole.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use common::postgres::{self, PgDatabase};
use common::{TempDir, migrated_db, wait_until};
use todobackend::client;

const BIN: &str = env!("CARGO_BIN_EXE_todobackend");
const TODOS: usize = 100_000;
const CLIENTS: usize = 32;
const MIB: u64 = 1024 * 1024;

/// `todobackend serve` as a child process (its RSS is what is measured).
struct Serve {
    child: Child,
    url: String,
    lines: mpsc::Receiver<String>,
}

impl Serve {
    fn start(env: &[(&str, String)], dir: &TempDir) -> Serve {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--static-root"])
            .arg(dir.join("public"))
            .env_remove("TODOBACKEND_LOG_FORMAT")
            .envs(env.iter().map(|(n, v)| (*n, v.as_str())))
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start todobackend serve");
        let (sender, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let first = lines.recv_timeout(Duration::from_secs(20)).expect("serve prints its address");
        Serve { child, url: common::serving_url(&first), lines }
    }

    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).expect("VmRSS in /proc/PID/status");
        kib.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() * 1024
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// 32 concurrent GET /todos while the server's RSS is sampled: every answer
/// is the whole list in id order, and the RSS peak stays under 64 MiB above
/// what the server held idle.
fn concurrent_full_lists_stay_in_bounded_memory(server: &Serve) {
    // Idle: started, and one small request answered.
    assert_eq!(
        client::request("GET", &format!("{}/todos/1", server.url), &[], None, Duration::from_secs(5)).unwrap().status,
        200
    );
    let idle = server.rss();
    let peak = Arc::new(AtomicU64::new(idle));
    let running = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, running, pid) = (Arc::clone(&peak), Arc::clone(&running), server.child.id());
        std::thread::spawn(move || {
            while running.load(Ordering::SeqCst) {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    && let Some(kib) = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))
                    && let Ok(kib) = kib.trim().trim_end_matches("kB").trim().parse::<u64>()
                {
                    peak.fetch_max(kib * 1024, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let url = format!("{}/todos", server.url);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || client::request("GET", &url, &[], None, Duration::from_secs(120)))
        })
        .collect();
    for (n, handle) in clients.into_iter().enumerate() {
        let r = handle.join().unwrap().unwrap_or_else(|e| panic!("client {n}: {e}"));
        assert_eq!(r.status, 200, "client {n}");
        let list: serde_json::Value =
            serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("client {n}: not JSON ({e})"));
        let items = list.as_array().unwrap_or_else(|| panic!("client {n}: not an array"));
        assert_eq!(items.len(), TODOS, "client {n}");
        assert_eq!((items[0]["id"].as_i64(), items[TODOS - 1]["id"].as_i64()), (Some(1), Some(TODOS as i64)));
        assert_eq!(items[TODOS - 1]["title"], format!("todo {TODOS}"));
        assert!(items[0]["url"].as_str().unwrap().ends_with("/todos/1"), "{}", items[0]);
    }
    running.store(false, Ordering::SeqCst);
    sampler.join().unwrap();
    let above = peak.load(Ordering::SeqCst).saturating_sub(idle);
    eprintln!("RSS idle {} MiB, peak {} MiB above idle", idle / MIB, above / MIB);
    assert!(above < 64 * MIB, "RSS peaked {} MiB above idle ({} MiB)", above / MIB, idle / MIB);
}

#[test]
fn sqlite_streams_100k_todos_to_32_clients_in_bounded_memory() {
    let dir = TempDir::new();
    let db = migrated_db(&dir);
    // Inserted straight into the file: the API would take minutes.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(&format!(
            "INSERT INTO todos (title, completed)
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {TODOS})
             SELECT 'todo ' || i, i % 2 FROM n"
        ))
        .unwrap();
    let server = Serve::start(&[("TODOBACKEND_DB", db.to_str().unwrap().to_string())], &dir);
    concurrent_full_lists_stay_in_bounded_memory(&server);
}

/// A PostgreSQL database of 100,000 todos, migrated by the binary.
fn pg_with_todos() -> PgDatabase {
    let db = postgres::shared().database();
    let migrated = Command::new(BIN).arg("migrate").envs(db.env()).output().unwrap();
    assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));
    db.connect()
        .batch(&format!(
            "INSERT INTO todos (title, completed) SELECT 'todo ' || i, i % 2 = 1 FROM generate_series(1, {TODOS}) AS i"
        ))
        .unwrap();
    db
}

#[test]
fn postgres_streams_100k_todos_to_32_clients_in_bounded_memory() {
    let dir = TempDir::new();
    let db = pg_with_todos();
    let server = Serve::start(&db.env(), &dir);
    concurrent_full_lists_stay_in_bounded_memory(&server);
}

#[test]
fn a_database_failure_mid_list_aborts_the_connection() {
    let dir = TempDir::new();
    let db = pg_with_todos();
    let server = Serve::start(&db.env(), &dir);
    let mut conn = TcpStream::connect(server.url.trim_start_matches("http://")).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    conn.write_all(b"GET /todos HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut received = vec![0u8; 4096];
    let n = conn.read(&mut received).unwrap();
    received.truncate(n);
    let head = String::from_utf8_lossy(&received).to_string();
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("Transfer-Encoding: chunked"), "{head}");
    // The client reads no more: the server's reader waits, its transaction
    // open between two batches of the portal. The database goes away then.
    let admin = postgres::shared().superuser("postgres");
    let waiting =
        format!("SELECT pid FROM pg_stat_activity WHERE datname = '{}' AND state = 'idle in transaction'", db.name);
    wait_until("the list's transaction waits for the client", Duration::from_secs(20), || {
        (!admin.query(&waiting, &[]).unwrap().is_empty()).then_some(())
    });
    let terminate = format!("SELECT pg_terminate_backend(pid) FROM ({waiting}) AS w");
    admin.query(&terminate, &[]).unwrap();
    // The rest, to the end of the connection.
    let mut rest = Vec::new();
    let ended = conn.read_to_end(&mut rest);
    received.extend(rest);
    assert!(
        ended.is_ok() || ended.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the connection was not closed: {ended:?}"
    );
    let text = String::from_utf8_lossy(&received);
    assert!(!text.ends_with("\r\n0\r\n\r\n"), "the body was ended as if the list were whole");
    assert!(!text.contains("]\r\n"), "the array was closed: {}", &text[text.len().saturating_sub(200)..]);
    // The failure is logged, after the 200 of the access log.
    wait_until("the failure is logged", Duration::from_secs(10), || {
        server.lines.try_iter().find(|l| l.contains("while the full list was sent")).map(|_| ())
    });
}
