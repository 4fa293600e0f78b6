//! The server under hostile traffic, on loopback: slow clients, oversized
//! heads and bodies, descriptor exhaustion, HTTP/1.0 keep-alive, SIGTERM
//! with a request in flight, readiness, JSON logs and metrics. Timeouts are
//! shortened through the same settings an operator uses, so the tests stay fast.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::{TempDir, migrated_db, wait_until};
use todobackend::client;
use todobackend::http::{server, static_files};

const BIN: &str = env!("CARGO_BIN_EXE_todobackend");

/// `todobackend serve` as a child process, its stderr collected.
struct ChildServer {
    child: Child,
    addr: SocketAddr,
    url: String,
    lines: Arc<Mutex<Vec<String>>>,
    _dir: TempDir,
}

impl ChildServer {
    fn start(env: &[(&str, &str)], open_files: Option<u64>) -> ChildServer {
        let dir = TempDir::new();
        let db = migrated_db(&dir);
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--static-root"])
            .arg(dir.join("public"))
            .env("TODOBACKEND_DB", &db)
            .env_remove("TODOBACKEND_LOG")
            .env_remove("TODOBACKEND_LOG_FORMAT")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(limit) = open_files {
            // SAFETY: setrlimit is async-signal-safe; it only lowers this
            // child's own descriptor limit before exec.
            unsafe {
                cmd.pre_exec(move || {
                    let rlim = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rlim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("start todobackend serve");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (url_tx, url_rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let collected = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("http://127.0.0.1:") {
                    let url: String = line[i..].chars().take_while(|c| !c.is_whitespace() && *c != '"').collect();
                    let _ = url_tx.send(url);
                }
                collected.lock().unwrap().push(line);
            }
        });
        let url = url_rx.recv_timeout(Duration::from_secs(20)).expect("serve prints its address");
        let addr = url.trim_start_matches("http://").parse().unwrap();
        ChildServer { child, addr, url, lines, _dir: dir }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn sigterm(&self) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) }, 0);
    }

    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let child = &mut self.child;
        wait_until("serve exits", limit, || child.try_wait().unwrap())
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An in-process server with the given limits.
fn start_with(limits: server::Limits) -> (server::ServerHandle, TempDir, std::path::PathBuf) {
    let dir = TempDir::new();
    let db = migrated_db(&dir);
    let root = dir.join("public");
    static_files::collect(&root).unwrap();
    let handle = server::start_with("127.0.0.1:0", &db, &root, server::Options { access_log: false, limits })
        .expect("server starts");
    (handle, dir, db)
}

/// Reads one response (head and Content-Length body) off `stream`.
fn read_response(stream: &mut BufReader<TcpStream>) -> (String, Vec<u8>) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = stream.read_line(&mut line).expect("read response head");
        assert!(n > 0, "connection closed before a full response; got {head:?}");
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).expect("read response body");
    (head, body)
}

/// Sends `raw` and reads until the server closes (bounded by a read timeout).
fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = stream.write_all(raw);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn more_slow_clients_than_open_files_do_not_stop_the_listener() {
    // 150 descriptors for the whole process, 300 slow clients, and a
    // connection bound above the limit so that accept really hits EMFILE.
    let server = ChildServer::start(
        &[("TODOBACKEND_HEADER_TIMEOUT", "1s"), ("TODOBACKEND_MAX_CONNECTIONS", "10000")],
        Some(150),
    );
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(server.addr).expect("the kernel backlog takes the connection");
        let _ = s.write_all(b"GET /todos HTTP/1.1\r\nHost: x\r\n");
        slow.push(s);
    }
    wait_until("accept fails for want of descriptors", Duration::from_secs(20), || {
        server.lines().iter().any(|l| l.contains("accepting a connection failed")).then_some(())
    });
    // A normal request during the attack is answered.
    let r = client::request("GET", &format!("{}/todos", server.url), &[], None, Duration::from_secs(15))
        .expect("a normal request is answered during the attack");
    assert_eq!(r.status, 200);
    drop(slow);
    // And the listener still accepts afterwards.
    let r = client::request("GET", &format!("{}/healthz", server.url), &[], None, Duration::from_secs(10)).unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn a_slow_client_is_closed_within_the_header_timeout() {
    let limits = server::Limits { header_timeout: Duration::from_millis(500), ..Default::default() };
    let (handle, _dir, _db) = start_with(limits);
    let mut stream = TcpStream::connect(handle.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let started = Instant::now();
    stream.write_all(b"GET /todos HTTP/1.1\r\n").unwrap();
    // Trickle a header line every read timeout until the server hangs up.
    let mut i = 0;
    let closed_after = loop {
        assert!(started.elapsed() < Duration::from_secs(5), "the server kept a slow client past 5 s");
        let mut buf = [0u8; 512];
        match stream.read(&mut buf) {
            Ok(_) => break started.elapsed(),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                i += 1;
                if stream.write_all(format!("X-Slow-{i}: y\r\n").as_bytes()).is_err() {
                    break started.elapsed();
                }
            }
            Err(_) => break started.elapsed(),
        }
    };
    assert!(closed_after >= Duration::from_millis(400), "closed too early: {closed_after:?}");
    assert!(closed_after < Duration::from_secs(2), "closed after {closed_after:?}, header timeout 500 ms");
}

#[test]
fn an_oversized_head_is_431() {
    let (handle, _dir, _db) = start_with(server::Limits::default());
    let raw = format!("GET /todos HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(32 * 1024));
    let answer = exchange(handle.addr(), raw.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}

#[test]
fn a_declared_body_over_1_mib_is_413_without_reading_it() {
    let (handle, _dir, _db) = start_with(server::Limits::default());
    let raw = format!("POST /todos HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{{", server::MAX_BODY + 1);
    let answer = exchange(handle.addr(), raw.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("Connection: close"), "{answer}");
}

#[test]
fn a_body_sent_too_slowly_is_cut_off() {
    let limits = server::Limits { body_timeout: Duration::from_millis(300), ..Default::default() };
    let (handle, _dir, _db) = start_with(limits);
    let started = Instant::now();
    let answer = exchange(handle.addr(), b"POST /todos HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"ti");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn an_http_1_1_request_without_one_valid_host_is_400_before_routing() {
    let (handle, _dir, _db) = start_with(server::Limits::default());
    let before = samples(&handle.metrics());
    // Probes and the API alike: the rule comes before the route.
    for (raw, why) in [
        (&b"GET /todos HTTP/1.1\r\n\r\n"[..], "must carry a Host header"),
        (b"GET /healthz HTTP/1.1\r\nConnection: keep-alive\r\n\r\n", "must carry a Host header"),
        (b"GET /todos HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "2 Host headers"),
        (b"GET /todos HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", "2 Host headers"),
        (b"GET /todos HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", "2 Host headers"),
        (b"GET /readyz HTTP/1.1\r\nHost: evil.example/x\r\n\r\n", "not a host name"),
        (
            b"POST /todos HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"title\":\"x\"}",
            "must carry a Host header",
        ),
    ] {
        let request = String::from_utf8_lossy(raw);
        // Read to the end: the server answers, then closes the connection.
        let answer = exchange(handle.addr(), raw);
        let http_1_0 = request.contains("HTTP/1.0");
        let status = if http_1_0 { "HTTP/1.0 400" } else { "HTTP/1.1 400" };
        assert!(answer.starts_with(status), "{request:?}: {answer}");
        assert!(answer.contains("Content-Type: application/json") && answer.contains(why), "{request:?}: {answer}");
        // HTTP/1.0 closes anyway; HTTP/1.1 is told.
        assert!(http_1_0 || answer.to_ascii_lowercase().contains("connection: close"), "{request:?}: {answer}");
    }
    // Nothing was routed: the POST without Host stored nothing.
    let listed = exchange(handle.addr(), b"GET /todos HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(listed.starts_with("HTTP/1.1 200") && listed.ends_with("[]"), "{listed}");
    let counted = |samples: &[(String, f64)]| {
        samples
            .iter()
            .filter(|(n, _)| n.starts_with("todobackend_http_requests_total{") && n.contains("status=\"400\""))
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    assert_eq!(counted(&samples(&handle.metrics())) - counted(&before), 7.0, "{}", handle.metrics());

    // What stays allowed: HTTP/1.0 without Host, an empty Host (RFC 9112
    // for a target without authority), and one Host with a port or an IPv6 literal.
    for raw in [
        &b"GET /todos HTTP/1.0\r\n\r\n"[..],
        b"GET /todos HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n",
        b"GET /todos HTTP/1.1\r\nHost: api.example:8443\r\nConnection: close\r\n\r\n",
        b"GET /todos HTTP/1.1\r\nHost: [::1]:8000\r\nConnection: close\r\n\r\n",
    ] {
        let answer = exchange(handle.addr(), raw);
        assert!(answer.contains(" 200 ") && answer.ends_with("[]"), "{:?}: {answer}", String::from_utf8_lossy(raw));
    }
}

#[test]
fn http_1_0_keep_alive_is_answered_per_spec() {
    let (handle, _dir, _db) = start_with(server::Limits::default());
    let stream = TcpStream::connect(handle.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    for _ in 0..2 {
        writer.write_all(b"GET /todos HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        let (head, body) = read_response(&mut reader);
        assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.to_ascii_lowercase().contains("connection: keep-alive"), "{head}");
        assert_eq!(body, b"[]");
    }
    // Without keep-alive, HTTP/1.0 means one request: the server closes.
    let answer = exchange(handle.addr(), b"GET /todos HTTP/1.0\r\n\r\n");
    assert!(answer.ends_with("[]"), "{answer}");
}

#[test]
fn sigterm_lets_a_request_in_flight_finish_then_exits_0() {
    // No drain: accepting stops at once.
    let mut server = ChildServer::start(&[("TODOBACKEND_DRAIN", "0")], None);
    let upload = HeldUpload::start(&server, br#"{"title":"finished after SIGTERM"}"#);

    server.sigterm();
    // It stops accepting while the upload is still in flight...
    wait_until("the listener closes", Duration::from_secs(10), || {
        TcpStream::connect(server.addr).is_err().then_some(())
    });
    // ...and the upload still completes.
    let (head, answer) = upload.finish();
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");
    assert!(String::from_utf8_lossy(&answer).contains("finished after SIGTERM"));
    let status = server.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{:?}", server.lines());
}

/// One GET on a new connection.
fn get(base: &str, path: &str) -> client::Response {
    client::request("GET", &format!("{base}{path}"), &[], None, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// A POST whose head and first bytes are sent, the rest held back until
/// `finish`: a request in flight for as long as the test wants. It sends
/// `Expect: 100-continue` and waits for the server's "100 Continue", which
/// says the server read its head and waits for its body: only then is it in
/// flight (a connection whose head is not read yet is idle, and closed at
/// shutdown; under load a request sent just before a SIGTERM was that).
struct HeldUpload {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    body: &'static [u8],
}

impl HeldUpload {
    fn start(server: &ChildServer, body: &'static [u8]) -> HeldUpload {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            stream,
            "POST /todos HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        )
        .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let (continue_head, _) = read_response(&mut reader);
        assert!(continue_head.starts_with("HTTP/1.1 100"), "{continue_head}");
        stream.write_all(&body[..5]).unwrap();
        HeldUpload { stream, reader, body }
    }

    /// Sends the rest and reads the answer's head and body.
    fn finish(mut self) -> (String, Vec<u8>) {
        self.stream.write_all(&self.body[5..]).unwrap();
        read_response(&mut self.reader)
    }
}

#[test]
fn sigterm_drains_readyz_fails_while_everything_else_is_served_then_accepting_stops() {
    let mut server = ChildServer::start(&[("TODOBACKEND_DRAIN", "2s")], None);
    assert_eq!(get(&server.url, "/readyz").status, 200);
    let upload = HeldUpload::start(&server, br#"{"title":"sent before the drain ended"}"#);

    let signalled = Instant::now();
    server.sigterm();
    let draining = wait_until("/readyz answers 503", Duration::from_secs(1), || {
        let r = get(&server.url, "/readyz");
        (r.status == 503).then_some(r)
    });
    assert!(draining.text().contains("draining"), "{}", draining.text());
    // Meanwhile everything else is served, on new connections, and each
    // answer asks its client to take the next request elsewhere.
    let mut served = 0;
    while signalled.elapsed() < Duration::from_millis(1500) {
        let r = get(&server.url, "/todos");
        assert_eq!((r.status, r.text().as_str()), (200, "[]"), "GET /todos while draining");
        assert_eq!(r.header("Connection"), Some("close"));
        assert_eq!(get(&server.url, "/healthz").status, 200, "liveness holds while draining");
        served += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(served >= 5, "only {served} requests while draining");

    // Accepting stops once the drain is over, not before...
    let closed = wait_until("the listener closes", Duration::from_secs(10), || {
        TcpStream::connect(server.addr).is_err().then(|| signalled.elapsed())
    });
    assert!(closed >= Duration::from_secs(2), "the listener closed {closed:?} after SIGTERM, before the 2s drain");
    // ...and the request in flight then still completes.
    let (head, answer) = upload.finish();
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");
    assert!(String::from_utf8_lossy(&answer).contains("sent before the drain ended"));
    let status = server.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{:?}", server.lines());
    let lines = server.lines();
    let started = lines.iter().position(|l| l.contains("draining: /readyz answers 503")).expect("a drain line");
    let over = lines.iter().position(|l| l.contains("drain over")).unwrap_or_else(|| panic!("{lines:?}"));
    let stopping = lines.iter().position(|l| l.contains(" INFO stopping")).unwrap_or_else(|| panic!("{lines:?}"));
    assert!(started < over && over < stopping, "{lines:?}");
    eprintln!("drain: listener closed {closed:?} after SIGTERM; {served} rounds of requests served while draining");
}

#[test]
fn a_second_sigterm_cuts_the_drain_short() {
    let mut server = ChildServer::start(&[("TODOBACKEND_DRAIN", "60s")], None);
    let upload = HeldUpload::start(&server, br#"{"title":"in flight at the second signal"}"#);
    server.sigterm();
    wait_until("/readyz answers 503", Duration::from_secs(5), || {
        (get(&server.url, "/readyz").status == 503).then_some(())
    });
    assert_eq!(get(&server.url, "/todos").status, 200, "served while draining");

    let second = Instant::now();
    server.sigterm();
    // Straight to the graceful stop: accepting stops long before the 60 s
    // drain would have ended, and the request in flight still completes.
    wait_until("the listener closes", Duration::from_secs(10), || {
        TcpStream::connect(server.addr).is_err().then_some(())
    });
    let (head, _) = upload.finish();
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");
    let status = server.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{:?}", server.lines());
    assert!(second.elapsed() < Duration::from_secs(30), "exit took {:?} after the second SIGTERM", second.elapsed());
    let lines = server.lines();
    assert!(lines.iter().any(|l| l.contains("drain cut short by a second signal")), "{lines:?}");
}

#[test]
fn readyz_is_503_while_the_database_is_locked_and_200_again_after() {
    let limits = server::Limits { ready_timeout: Duration::from_millis(200), ..Default::default() };
    let (handle, _dir, db) = start_with(limits);
    let ready =
        || client::request("GET", &format!("{}/readyz", handle.url()), &[], None, Duration::from_secs(5)).unwrap();
    let live =
        || client::request("GET", &format!("{}/healthz", handle.url()), &[], None, Duration::from_secs(5)).unwrap();
    assert_eq!(ready().status, 200);

    // Another process's exclusive lock: in WAL mode readers still read, but
    // nothing can write, and a replica that cannot write is not ready. The
    // answer may come from a check up to a second old, so it turns within
    // about two.
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let locked = Instant::now();
    let not_ready = wait_until("/readyz answers 503", Duration::from_secs(5), || {
        let r = ready();
        (r.status == 503).then_some(r)
    });
    assert_eq!(not_ready.header("Retry-After"), Some("1"));
    assert_eq!(live().status, 200, "liveness does not depend on the database");
    let errors = handle.metrics();
    assert!(!errors.contains("todobackend_database_errors_total 0\n"), "{errors}");
    eprintln!("readyz turned 503 {:?} after the lock was taken", locked.elapsed());

    locker.execute_batch("COMMIT").unwrap();
    wait_until("ready again without a restart", Duration::from_secs(15), || (ready().status == 200).then_some(()));
}

#[test]
fn json_logs_carry_timestamp_level_status_latency_and_request_id() {
    let mut server = ChildServer::start(&[("TODOBACKEND_LOG_FORMAT", "json"), ("TODOBACKEND_DRAIN", "200ms")], None);
    let url = format!("{}/todos", server.url);
    let r = client::request("GET", &url, &[("X-Request-Id", "req-given-1")], None, Duration::from_secs(5)).unwrap();
    assert_eq!(r.header("X-Request-Id"), Some("req-given-1"));
    let r = client::request("GET", &url, &[], None, Duration::from_secs(5)).unwrap();
    let generated = r.header("X-Request-Id").expect("a generated request id").to_string();
    assert!(!generated.is_empty());
    server.sigterm();
    assert!(server.wait_exit(Duration::from_secs(10)).success());

    let lines = server.lines();
    let mut requests = Vec::new();
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let ts = v["timestamp"].as_str().unwrap_or_else(|| panic!("no timestamp: {line}"));
        assert!(ts.ends_with('Z') && ts.contains('T'), "not a UTC RFC 3339 time: {line}");
        assert!(v["level"].is_string(), "no level: {line}");
        if v["message"] == "request" {
            requests.push(v);
        }
    }
    for id in ["req-given-1", generated.as_str()] {
        let r = requests.iter().find(|r| r["request_id"] == id).unwrap_or_else(|| panic!("no log for {id}: {lines:?}"));
        assert_eq!(
            (r["method"].as_str(), r["path"].as_str(), r["status"].as_u64()),
            (Some("GET"), Some("/todos"), Some(200))
        );
        assert!(r["latency_ms"].as_f64().is_some(), "{r}");
    }
}

/// Parses the Prometheus text format: every sample line is `name{labels} value`.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line: {l}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in: {l}"));
            assert!(name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()), "bad name: {l}");
            (name.to_string(), value)
        })
        .collect()
}

#[test]
fn metrics_parse_and_the_counters_move() {
    let (handle, _dir, _db) = start_with(server::Limits::default());
    let get = |path: &str| {
        client::request("GET", &format!("{}{path}", handle.url()), &[], None, Duration::from_secs(5)).unwrap()
    };
    let value = |text: &str, name: &str| samples(text).into_iter().find(|(n, _)| n == name).map_or(0.0, |(_, v)| v);
    let todos = "todobackend_http_requests_total{route=\"/todos\",status=\"200\"}";
    let count = "todobackend_http_request_duration_seconds_count";

    let before = get("/metrics");
    assert_eq!(before.status, 200);
    assert!(before.header("Content-Type").unwrap_or("").starts_with("text/plain; version=0.0.4"));
    let before = before.text();
    for _ in 0..3 {
        assert_eq!(get("/todos").status, 200);
    }
    let after = get("/metrics").text();
    assert_eq!(value(&after, todos) - value(&before, todos), 3.0, "{after}");
    assert!(value(&after, count) >= value(&before, count) + 3.0, "{after}");
    assert!(value(&after, "todobackend_open_connections") >= 1.0, "{after}");
    assert!(samples(&after).iter().any(|(n, _)| n == "todobackend_database_errors_total"), "{after}");
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let limits = server::Limits { idle_timeout: Duration::from_millis(300), ..Default::default() };
    let (handle, _dir, _db) = start_with(limits);
    let stream = TcpStream::connect(handle.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    (&stream).write_all(b"GET /todos HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (head, _) = read_response(&mut reader);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let answered = Instant::now();
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).expect("the server closes the idle connection");
    let idle = answered.elapsed();
    assert!(idle >= Duration::from_millis(250) && idle < Duration::from_secs(3), "closed after {idle:?}");
}

#[test]
fn a_silent_connection_is_closed_within_the_header_timeout() {
    let limits = server::Limits { header_timeout: Duration::from_millis(500), ..Default::default() };
    let (handle, _dir, _db) = start_with(limits);
    let mut stream = TcpStream::connect(handle.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).unwrap_or(0);
    let closed_after = started.elapsed();
    assert_eq!(n, 0, "closed without an answer");
    assert!(closed_after >= Duration::from_millis(400), "closed too early: {closed_after:?}");
    assert!(closed_after < Duration::from_secs(2), "closed after {closed_after:?}, header timeout 500 ms");
}

#[test]
fn past_max_connections_a_newcomer_gets_503_at_once_and_is_counted() {
    let limits = server::Limits { max_connections: 2, ..Default::default() };
    let (handle, _dir, _db) = start_with(limits);
    let open = |handle: &server::ServerHandle| {
        samples(&handle.metrics()).into_iter().find(|(n, _)| n == "todobackend_open_connections").map(|(_, v)| v)
    };
    let refused = |handle: &server::ServerHandle| {
        samples(&handle.metrics())
            .into_iter()
            .find(|(n, _)| n == "todobackend_refused_connections_total")
            .map_or(-1.0, |(_, v)| v)
    };
    assert_eq!(refused(&handle), 0.0);
    let first = TcpStream::connect(handle.addr()).unwrap();
    let _second = TcpStream::connect(handle.addr()).unwrap();
    wait_until("both connections are accepted", Duration::from_secs(5), || (open(&handle) == Some(2.0)).then_some(()));

    let answer = exchange(handle.addr(), b"GET /todos HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("Retry-After: 1") && answer.contains("too many open connections"), "{answer}");
    assert_eq!(refused(&handle), 1.0);

    // A slot freed is a slot taken again: the next newcomer is served.
    drop(first);
    wait_until("the closed connection is given back", Duration::from_secs(5), || {
        (open(&handle) == Some(1.0)).then_some(())
    });
    let answer = exchange(handle.addr(), b"GET /todos HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(refused(&handle), 1.0);
}
