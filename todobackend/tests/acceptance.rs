//! The acceptance suite passes against the real server on both backends,
//! and fails against a server that gets the API wrong (so it is able to fail).

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;

use common::{Backend, start_server_on};
use todobackend::acceptance;

fn suite_passes_against_the_real_server(backend: Backend) {
    let s = start_server_on(backend);
    let mut out = Vec::new();
    let summary = acceptance::run(&s.base, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(summary.ok(), "{text}");
    assert!(summary.passed >= 15, "{text}");
    assert_eq!(text.lines().count(), summary.passed + 1, "{text}");
    assert_eq!(text.lines().last(), Some(format!("{} passed, 0 failed", summary.passed).as_str()));
    // The suite cleans up after itself.
    assert_eq!(s.get("/todos").text(), "[]");
}

fn suite_accepts_a_trailing_slash_in_the_url(backend: Backend) {
    let s = start_server_on(backend);
    let summary = acceptance::run(&format!("{}/", s.base), &mut Vec::new()).unwrap();
    assert!(summary.ok());
}

/// A server that answers every request `200 {}`: wrong for nearly
/// everything the suite checks.
fn start_wrong_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
        }
    });
    format!("http://{addr}")
}

#[test]
fn suite_fails_against_a_wrong_server() {
    let url = start_wrong_server();
    let mut out = Vec::new();
    let summary = acceptance::run(&url, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(!summary.ok(), "{text}");
    assert!(summary.failures.iter().any(|f| f.contains("POST /todos")), "{text}");
    assert!(summary.failures.iter().any(|f| f.contains("404")), "{text}");
    assert!(text.contains("FAILED  POST /todos answers 201"), "{text}");
    assert!(text.lines().last().unwrap().ends_with(&format!("{} failed", summary.failed)));
}

#[test]
fn an_invalid_url_is_an_error_not_a_run() {
    assert!(acceptance::run("not a url", &mut Vec::new()).is_err());
    assert!(acceptance::run("https://127.0.0.1:1", &mut Vec::new()).is_err());
}

/// `--keep-data` (what `deploy` runs against a live stack): the users'
/// todos are all there afterwards, unchanged, and the suite's own is gone.
fn suite_keeping_data_leaves_the_other_todos_alone(backend: Backend) {
    let s = start_server_on(backend);
    for title in ["a user's todo", "another one"] {
        assert_eq!(s.post_json("/todos", &serde_json::json!({ "title": title })).status, 201);
    }
    let before = s.get("/todos").text();
    let mut out = Vec::new();
    let summary = acceptance::run_keeping_data(&s.base, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(summary.ok(), "{text}");
    assert!(!text.contains("after DELETE /todos"), "{text}");
    assert!(text.contains("ok      GET /todos lists the new todo"), "{text}");
    assert_eq!(s.get("/todos").text(), before, "the users' todos are kept as they were");
}

#[test]
fn suite_keeping_data_still_fails_against_a_wrong_server() {
    let url = start_wrong_server();
    let mut out = Vec::new();
    let summary = acceptance::run_keeping_data(&url, &mut out).unwrap();
    assert!(!summary.ok() && summary.failures.iter().any(|f| f.contains("POST /todos")));
}

both_backends!(
    suite_passes_against_the_real_server,
    suite_accepts_a_trailing_slash_in_the_url,
    suite_keeping_data_leaves_the_other_todos_alone
);
