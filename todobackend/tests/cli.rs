//! The binary as a container runs it: exit codes, one-line errors, and the
//! subcommands end to end. Servers listen on 127.0.0.1 only.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{TempDir, migrated_db, poll, serving_url, start_server};
use todobackend::client;
use todobackend::http::static_files;

const BIN: &str = env!("CARGO_BIN_EXE_todobackend");

/// Runs the binary with a clean todobackend environment. A command that
/// should end but does not (e.g. `serve` that fails to refuse) is killed
/// after a while, so the test fails instead of hanging.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for var in [
        "TODOBACKEND_LISTEN",
        "TODOBACKEND_DB",
        "TODOBACKEND_STATIC_ROOT",
        "TODOBACKEND_DATABASE_URL",
        "TODOBACKEND_DATABASE_PASSWORD_FILE",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().expect("run binary");
    if poll(Duration::from_secs(20), || child.try_wait().expect("wait")).is_none() {
        let _ = child.kill();
        let out = child.wait_with_output().expect("collect output");
        panic!("{args:?} did not exit in time; stderr: {}", String::from_utf8_lossy(&out.stderr));
    }
    child.wait_with_output().expect("collect output")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Exit code 1 and exactly one line, `error: ...` containing `fragment`.
fn assert_one_line_error(out: &Output, fragment: &str) {
    let text = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].starts_with("error: "), "{text}");
    assert!(lines[0].contains(fragment), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn serve_refuses_while_migrations_are_pending() {
    let dir = TempDir::new();
    let db = dir.join("db.sqlite3");
    let db_arg = db.to_str().unwrap();
    let out = run(&["serve", "--listen", "127.0.0.1:0", "--db", db_arg], &[]);
    assert_one_line_error(&out, "run `todobackend migrate` first");

    // An existing but unmigrated database is refused the same way.
    rusqlite::Connection::open(&db).unwrap().execute_batch("CREATE TABLE t (x);").unwrap();
    let out = run(&["serve"], &[("TODOBACKEND_LISTEN", "127.0.0.1:0"), ("TODOBACKEND_DB", db_arg)]);
    assert_one_line_error(&out, "pending migration");
}

#[test]
fn serve_runs_and_stops_on_sigterm() {
    let dir = TempDir::new();
    let db = migrated_db(&dir);
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--static-root"])
        .arg(dir.join("public"))
        .env("TODOBACKEND_DB", &db)
        // The drain is tested in hostile.rs; here a short one keeps it quick.
        .env("TODOBACKEND_DRAIN", "100ms")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first line names the bound address (after its timestamp and level).
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = serving_url(&first);
    // The container's healthcheck, which the access log leaves out.
    let port = url.rsplit(':').next().unwrap().to_string();
    let health = run(&["healthcheck", "--listen", &format!("127.0.0.1:{port}")], &[]);
    assert!(health.status.success(), "{}", String::from_utf8_lossy(&health.stderr));
    let r = client::request("GET", &format!("{url}/todos"), &[], None, Duration::from_secs(5)).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "[]"));

    let killed = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let Some(status) = poll(Duration::from_secs(10), || child.try_wait().unwrap()) else {
        let _ = child.kill();
        panic!("serve did not stop on SIGTERM");
    };
    assert!(status.success(), "{status:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("method=GET path=/todos status=200")), "access log: {rest:?}");
    assert!(rest.iter().any(|l| l.contains(" INFO stopping")), "{rest:?}");
    assert!(!rest.iter().any(|l| l.contains("path=/healthz")), "the healthcheck was logged: {rest:?}");
}

#[test]
fn migrate_errors_are_one_line() {
    let dir = TempDir::new();
    // A directory where the database file should be.
    std::fs::create_dir(dir.join("db")).unwrap();
    let out = run(&["migrate", "--db", dir.join("db").to_str().unwrap()], &[]);
    assert_one_line_error(&out, "db");
}

#[test]
fn a_failing_migration_is_one_line_with_only_sqlites_message() {
    // The real 0001 fails on a database that already has a `todos` table
    // (its SQL spans several lines, none of which may be printed).
    let dir = TempDir::new();
    let db = dir.join("db.sqlite3");
    rusqlite::Connection::open(&db).unwrap().execute_batch("CREATE TABLE todos (x);").unwrap();
    let out = run(&["migrate", "--db", db.to_str().unwrap()], &[]);
    assert_one_line_error(&out, "");
    assert_eq!(stderr(&out), "error: migration 0001_create_todos.sql failed: table todos already exists\n");
}

#[test]
fn a_changed_applied_migration_stops_migrate_and_serve() {
    let dir = TempDir::new();
    let db = migrated_db(&dir);
    let db_arg = db.to_str().unwrap();
    // As if 0001_create_todos.sql had been edited since it was applied.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
        .unwrap();
    let before = std::fs::read(&db).unwrap();
    let changed = "migration 0001_create_todos.sql was changed after it was applied to this database";

    let out = run(&["migrate", "--db", db_arg], &[]);
    assert_one_line_error(&out, changed);
    assert!(stderr(&out).contains("cargo xtask clean"), "{}", stderr(&out));

    let out = run(&["serve", "--listen", "127.0.0.1:0", "--db", db_arg], &[]);
    assert_one_line_error(&out, changed);
    assert_eq!(std::fs::read(&db).unwrap(), before, "database changed");
}

#[test]
fn migrate_adopts_a_database_from_before_checksums() {
    let dir = TempDir::new();
    let db = migrated_db(&dir);
    let db_arg = db.to_str().unwrap();
    // What the release before checksums left behind.
    rusqlite::Connection::open(&db).unwrap().execute_batch("DROP TABLE schema_migrations;").unwrap();
    let out = run(&["serve", "--listen", "127.0.0.1:0", "--db", db_arg], &[]);
    assert_one_line_error(&out, "run `todobackend migrate` first");

    let out = run(&["migrate", "--db", db_arg], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Every embedded migration was applied before checksums were kept.
    let recorded = format!("recorded the checksums of {} migration(s)", todobackend::store::catalog::MIGRATIONS.len());
    assert!(stderr(&out).contains(&recorded), "{}", stderr(&out));
    let out = run(&["migrate", "--db", db_arg], &[]);
    assert!(!stderr(&out).contains("recorded"), "{}", stderr(&out));
}

#[test]
fn collectstatic_copies_bundled_files_idempotently() {
    let dir = TempDir::new();
    let root = dir.join("public/nested");
    let root_arg = root.to_str().unwrap();
    let out = run(&["collectstatic", "--static-root", root_arg], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    for (name, contents) in static_files::BUNDLED {
        assert_eq!(std::fs::read_to_string(root.join(name)).unwrap(), *contents);
        assert!(stderr(&out).contains(&format!("copied {}", root.join(name).display())));
    }
    let out = run(&["collectstatic"], &[("TODOBACKEND_STATIC_ROOT", root_arg)]);
    assert!(out.status.success());
    assert!(!stderr(&out).contains("copied"), "{}", stderr(&out));
    assert_eq!(stderr(&out).matches("unchanged").count(), static_files::BUNDLED.len());

    // A changed file is put back.
    std::fs::write(root.join("style.css"), "edited").unwrap();
    let out = run(&["collectstatic", "--static-root", root_arg], &[]);
    assert!(stderr(&out).contains("copied") && out.status.success());
    assert_eq!(std::fs::read_to_string(root.join("style.css")).unwrap(), static_files::BUNDLED[1].1);
}

#[test]
fn healthcheck_passes_against_a_live_server_and_fails_otherwise() {
    let s = start_server();
    let port = s.handle.addr().port();
    // The listen address as the container sets it: wildcard host, our port.
    let out = run(&["healthcheck"], &[("TODOBACKEND_LISTEN", &format!("0.0.0.0:{port}"))]);
    assert!(out.status.success(), "{}", stderr(&out));

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = run(&["healthcheck", "--listen", &format!("0.0.0.0:{closed}")], &[]);
    assert_one_line_error(&out, "unhealthy");
}

#[test]
fn healthcheck_fails_on_a_non_200_answer_and_on_silence() {
    // A server that answers 503, and one that accepts but never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        if let Ok((mut conn, _)) = listener.accept() {
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let out = run(&["healthcheck", "--listen", &format!("127.0.0.1:{port}")], &[]);
    assert_one_line_error(&out, "503");

    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = std::time::Instant::now();
    let out = run(&["healthcheck", "--listen", &format!("127.0.0.1:{port}")], &[]);
    assert_one_line_error(&out, "unhealthy");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(2500) && took < Duration::from_secs(6), "{took:?}");
    drop(silent);
}

#[test]
fn acceptance_binary_passes_against_the_real_server() {
    let s = start_server();
    let url = format!("http://localhost:{}", s.handle.addr().port());
    let out = run(&["acceptance", "--url", &url], &[]);
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("FAILED"), "{text}");
    let last = text.lines().last().unwrap_or("");
    assert!(last.ends_with(" passed, 0 failed"), "{text}");
}

#[test]
fn acceptance_binary_fails_against_a_missing_server_and_on_https() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = run(&["acceptance", "--url", &format!("http://127.0.0.1:{closed}")], &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(text.lines().last().unwrap_or("").starts_with("0 passed, "), "{text}");

    let out = run(&["acceptance", "--url", "https://127.0.0.1:1"], &[]);
    assert_one_line_error(&out, "https is not supported");
}

#[test]
fn bad_command_lines_are_one_line_errors() {
    assert_one_line_error(&run(&[], &[]), "no command");
    assert_one_line_error(&run(&["frobnicate"], &[]), "unknown command");
    assert_one_line_error(&run(&["migrate", "--url", "x"], &[]), "unknown option");
    assert_one_line_error(&run(&["acceptance"], &[]), "--url");
    assert_one_line_error(&run(&["serve", "--listen", "example.com:80"], &[]), "invalid listen address");
    let out = run(&["help"], &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("collectstatic"));
}
