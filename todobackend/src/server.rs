//! The HTTP server: tiny_http accepts connections and parses requests; a
//! fixed pool of worker threads, each with its own SQLite connection,
//! answers them through `api::handle`.

use std::io::Read;
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tiny_http::{Header, Request, Response, Server};

use crate::api::{self, ApiRequest, ApiResponse, Context};
use crate::db;
use crate::migrations::MIGRATIONS;
use crate::net;

/// Requests answered at once. Slow clients do not hold a worker (tiny_http
/// reads each request fully on its own connection thread first), so a few
/// are plenty for SQLite-bound work on a small machine.
pub const WORKERS: usize = 8;

/// Largest request body accepted; a todo is a few hundred bytes.
pub const MAX_BODY: usize = 1024 * 1024;

/// A running server. Dropping it (or calling `shutdown`) stops it: workers
/// finish the request in hand and exit.
pub struct ServerHandle {
    addr: SocketAddr,
    server: Arc<Server>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl ServerHandle {
    /// The address actually bound (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT` of the server, reachable from this machine.
    pub fn url(&self) -> String {
        format!("http://{}", net::local_target(self.addr))
    }

    /// Stops accepting work and waits for the workers to finish.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for _ in 0..self.workers.len() {
            // Each unblock wakes exactly one worker waiting in recv().
            self.server.unblock();
        }
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Settings beyond the three every caller gives.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// One line per request on stderr (`serve` turns it on; tests keep
    /// their output quiet).
    pub access_log: bool,
    /// Also log the container's own healthcheck requests. Off by default:
    /// every few seconds they would bury what the logs are read for (a
    /// crashing release's one error line among the healthy tasks' lines).
    pub log_healthchecks: bool,
}

/// The User-Agent of `todobackend healthcheck`, which the access log skips.
pub const HEALTHCHECK_AGENT: &str = "todobackend-healthcheck";

/// Starts the server on `listen` (`IP:PORT`; port 0 picks a free one),
/// without an access log. See `start_with`.
pub fn start(listen: &str, db_path: &Path, static_root: &Path) -> Result<ServerHandle, String> {
    start_with(listen, db_path, static_root, Options::default())
}

/// Starts the server on `listen` (`IP:PORT`; port 0 picks a free one).
///
/// Refuses to start while the database at `db_path` is missing or has
/// pending migrations, so that a service restarts until `migrate` has run.
/// Files under `/static/` are served from `static_root`.
pub fn start_with(listen: &str, db_path: &Path, static_root: &Path, options: Options) -> Result<ServerHandle, String> {
    let listen = net::parse_listen(listen)?;
    if !db_path.exists() {
        return Err(format!(
            "refusing to start: database {} does not exist, so all {} migration(s) are pending; run `todobackend migrate` first",
            db_path.display(),
            MIGRATIONS.len()
        ));
    }
    let first_conn = db::open_existing(db_path)?;
    db::ensure_migrated(&first_conn, db_path, MIGRATIONS)?;

    let server = Server::http(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = server.server_addr().to_ip().ok_or_else(|| format!("cannot listen on {listen}: no IP address bound"))?;
    let server = Arc::new(server);
    let stop = Arc::new(AtomicBool::new(false));
    let fallback_host = net::local_target(addr).to_string();

    let mut conns = vec![first_conn];
    for _ in 1..WORKERS {
        conns.push(db::open_existing(db_path)?);
    }
    let mut workers = Vec::with_capacity(WORKERS);
    for (i, conn) in conns.into_iter().enumerate() {
        let worker = Worker {
            server: Arc::clone(&server),
            stop: Arc::clone(&stop),
            conn,
            static_root: static_root.to_path_buf(),
            fallback_host: fallback_host.clone(),
            access_log: options.access_log,
            log_healthchecks: options.log_healthchecks,
        };
        let spawned = thread::Builder::new().name(format!("worker-{i}")).spawn(move || worker.run());
        match spawned {
            Ok(handle) => workers.push(handle),
            Err(e) => {
                // Stop the workers already running before reporting.
                drop(ServerHandle { addr, server, stop, workers });
                return Err(format!("cannot start worker thread: {e}"));
            }
        }
    }
    Ok(ServerHandle { addr, server, stop, workers })
}

struct Worker {
    server: Arc<Server>,
    stop: Arc<AtomicBool>,
    conn: Connection,
    static_root: PathBuf,
    fallback_host: String,
    access_log: bool,
    log_healthchecks: bool,
}

impl Worker {
    fn run(self) {
        loop {
            match self.server.recv() {
                Ok(request) => self.answer(request),
                Err(_) if self.stop.load(Ordering::SeqCst) => return,
                Err(e) => {
                    crate::say!("warning: accepting a connection failed: {e}");
                    // Avoid spinning if accept keeps failing (e.g. out of fds).
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    fn answer(&self, mut request: Request) {
        let started = Instant::now();
        let method = request.method().as_str().to_string();
        let target = request.url().to_string();
        let headers: Vec<(String, String)> =
            request.headers().iter().map(|h| (h.field.as_str().to_string(), h.value.as_str().to_string())).collect();

        let mut body = Vec::new();
        let read = request.as_reader().take(MAX_BODY as u64 + 1).read_to_end(&mut body);
        let response = match read {
            Err(e) => ApiResponse::error(400, &format!("cannot read request body: {e}")),
            Ok(_) if body.len() > MAX_BODY => {
                ApiResponse::error(413, &format!("request body larger than {MAX_BODY} bytes"))
            }
            Ok(_) => {
                let req = ApiRequest { method: &method, target: &target, headers: &headers, body: &body };
                let ctx =
                    Context { conn: &self.conn, static_root: &self.static_root, fallback_host: &self.fallback_host };
                // A bug in a handler must cost one request, not a worker.
                panic::catch_unwind(AssertUnwindSafe(|| api::handle(&req, &ctx)))
                    .unwrap_or_else(|_| ApiResponse::error(500, "internal error"))
            }
        };

        let status = response.status;
        let mut out = Response::from_data(response.body).with_status_code(status);
        for (name, value) in &response.headers {
            match Header::from_bytes(name.as_bytes(), value.as_bytes()) {
                Ok(h) => out.add_header(h),
                Err(()) => crate::say!("warning: dropped invalid response header {name}"),
            }
        }
        let result = request.respond(out);
        let healthcheck =
            headers.iter().any(|(name, value)| name.eq_ignore_ascii_case("user-agent") && value == HEALTHCHECK_AGENT);
        if self.access_log && (self.log_healthchecks || !healthcheck) {
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            // escape_debug: the target is client-controlled and goes to a log.
            crate::say!("{method} {} {status} {ms:.1}ms", target.escape_debug());
        }
        if let Err(e) = result {
            crate::say!("warning: sending the response failed: {e}");
        }
    }
}
