//! The HTTP server: hyper 1 on tokio. Every resource a client can hold is
//! bounded: the time to send a request head (`header_timeout`), to stay idle
//! between requests (`idle_timeout`), to send a body (`body_timeout`), the
//! size of the head (431 past it) and of the body (413), and the number of
//! open connections (past it, a newcomer gets 503 at once). The accept loop
//! survives every accept error, EMFILE included: it backs off and goes on
//! listening. The API itself is `api::handle`, given a connection by the
//! `Store`: reads on the runtime's threads, writes on its writer thread.

use std::future::{Future, poll_fn};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::http::api::{self, ApiRequest, ApiResponse, Context, ListWriter};
use crate::http::metrics::{self, Metrics};
use crate::http::readiness::{self, Readiness};
use crate::net;
use crate::store::Database;
use crate::store::Store;
use crate::store::todos::{StoreError, Todos};

/// Largest request body accepted; a todo is a few hundred bytes.
pub const MAX_BODY: usize = 1024 * 1024;

/// The User-Agent of `todobackend healthcheck`, which the access log skips.
pub const HEALTHCHECK_AGENT: &str = "todobackend-healthcheck";

/// Header carrying the request id, taken from the client or generated.
pub const REQUEST_ID: &str = "x-request-id";

/// What a client may hold, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From the moment the server waits for a request head until the whole
    /// head has arrived. hyper starts this clock when the connection turns
    /// idle, so it also caps the idle time.
    pub header_timeout: Duration,
    /// A keep-alive connection that sends nothing this long is closed.
    pub idle_timeout: Duration,
    /// The whole request body must arrive within this.
    pub body_timeout: Duration,
    /// Request line and headers together (at least 8 KiB, hyper's minimum).
    pub max_header_bytes: usize,
    /// Open client connections; past it, a newcomer is answered 503 and closed.
    pub max_connections: usize,
    /// `serve`, on SIGTERM: how long `/readyz` answers 503 while everything
    /// else is still served and new connections are still accepted, before
    /// accepting stops; long enough for a load balancer's checks (the edge
    /// checks every second and holds DNS answers a second) to take the task
    /// out. Zero stops accepting at once.
    pub drain: Duration,
    /// On shutdown, after the drain, how long requests in flight may take
    /// to finish. `drain + shutdown_grace` is below the stack's
    /// `stop_grace_period` so that they do.
    pub shutdown_grace: Duration,
    /// `/readyz`: how long the database may take to answer.
    pub ready_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            max_connections: default_max_connections(),
            drain: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(25),
            ready_timeout: Duration::from_secs(1),
        }
    }
}

/// File descriptors the process may hold, less a reserve for the database,
/// the listener and the blocking threads' files, so that accepting never
/// starves the rest of the process.
fn default_max_connections() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct we own; no other effect.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    let soft: u64 = if ok { limit.rlim_cur } else { 1024 };
    (soft.saturating_sub(64).clamp(16, 100_000)) as usize
}

/// `500ms`, `10s`, `2m`, `1m30s` (humantime's units) or a bare number of
/// seconds, above zero.
fn parse_duration(name: &str, value: &str) -> Result<Duration, String> {
    parse_duration_from(name, value, false)
}

/// `parse_duration`, with zero allowed when `zero_ok` (a step it turns off).
fn parse_duration_from(name: &str, value: &str, zero_ok: bool) -> Result<Duration, String> {
    let v = value.trim();
    let bad = || format!("invalid {name} '{value}': expected a duration such as 500ms, 10s or 2m");
    let duration = match v.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => Duration::from_secs_f64(seconds),
        Ok(_) => return Err(bad()),
        Err(_) => humantime::parse_duration(v).map_err(|_| bad())?,
    };
    if duration.is_zero() && !zero_ok {
        return Err(bad());
    }
    Ok(duration)
}

impl Limits {
    /// The defaults, each overridden by its environment variable.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Limits, String> {
        let mut limits = Limits::default();
        let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        for (name, field) in [
            ("TODOBACKEND_HEADER_TIMEOUT", &mut limits.header_timeout),
            ("TODOBACKEND_IDLE_TIMEOUT", &mut limits.idle_timeout),
            ("TODOBACKEND_BODY_TIMEOUT", &mut limits.body_timeout),
            ("TODOBACKEND_SHUTDOWN_GRACE", &mut limits.shutdown_grace),
            ("TODOBACKEND_READY_TIMEOUT", &mut limits.ready_timeout),
        ] {
            if let Some(v) = set(name) {
                *field = parse_duration(name, &v)?;
            }
        }
        if let Some(v) = set(DRAIN_VAR) {
            limits.drain = parse_duration_from(DRAIN_VAR, &v, true)?;
        }
        for (name, field, min) in [
            ("TODOBACKEND_MAX_HEADER_BYTES", &mut limits.max_header_bytes, 8192),
            ("TODOBACKEND_MAX_CONNECTIONS", &mut limits.max_connections, 1),
        ] {
            if let Some(v) = set(name) {
                *field = v
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n >= min)
                    .ok_or_else(|| format!("invalid {name} '{v}': expected a whole number of at least {min}"))?;
            }
        }
        Ok(limits)
    }
}

/// The drain on SIGTERM (`Limits::drain`); `0` turns it off.
pub const DRAIN_VAR: &str = "TODOBACKEND_DRAIN";

/// Settings beyond the three every caller gives.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// One line per request (`serve` turns it on), at info level; the
    /// container's own healthchecks at debug level, so that every few
    /// seconds they do not bury what the logs are read for.
    pub access_log: bool,
    pub limits: Limits,
}

/// A running server. Dropping it (or calling `shutdown`) stops it.
pub struct ServerHandle {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    runtime: Option<tokio::runtime::Runtime>,
    accept_loop: Option<tokio::task::JoinHandle<()>>,
    state: Arc<State>,
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

    /// The server's metrics, as `/metrics` shows them.
    pub fn metrics(&self) -> String {
        self.state.metrics.render()
    }

    /// Starts the drain: from now on `/readyz` answers 503 and every other
    /// response asks its client to close the connection (`Connection:
    /// close`), so that keep-alive connections move elsewhere before
    /// accepting stops; everything is still served, new connections still
    /// accepted. `shutdown` ends it.
    pub fn start_draining(&self) {
        self.state.draining.store(true, Ordering::SeqCst);
    }

    /// Stops accepting, lets requests in flight finish (within the grace
    /// period), then returns.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let _ = self.stop.send(true);
        if let (Some(runtime), Some(accept_loop)) = (self.runtime.take(), self.accept_loop.take()) {
            let _ = runtime.block_on(accept_loop);
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

struct State {
    store: Arc<Store>,
    static_root: PathBuf,
    fallback_host: String,
    options: Options,
    metrics: Metrics,
    /// Connections being served; shutdown waits for zero.
    active: AtomicUsize,
    /// `start_draining` was called: `/readyz` answers 503.
    draining: AtomicBool,
    /// `/readyz`'s latest result and the check under way.
    readiness: Arc<Readiness>,
    drained: Notify,
    request_ids: AtomicU64,
    id_seed: u64,
    lingering_refusals: Arc<Semaphore>,
}

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
    start_on(listen, &Database::Sqlite(db_path.to_path_buf()), static_root, options)
}

/// `start_with` on either backend (see `Store::for_serving`).
pub fn start_on(
    listen: &str,
    database: &Database,
    static_root: &Path,
    options: Options,
) -> Result<ServerHandle, String> {
    let listen = net::parse_listen(listen)?;
    let store = Store::for_serving(database)?;

    // One worker per core (two here); blocking threads only for readiness
    // checks (and reads, when WAL is off): writes have their own thread.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .max_blocking_threads(16)
        .enable_io()
        .enable_time()
        .thread_name("todobackend-io")
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let listener = runtime
        .block_on(async { TcpListener::bind(listen).await })
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let state = Arc::new(State {
        store,
        static_root: static_root.to_path_buf(),
        fallback_host: net::local_target(addr).to_string(),
        options,
        metrics: Metrics::default(),
        active: AtomicUsize::new(0),
        draining: AtomicBool::new(false),
        readiness: Arc::new(Readiness::new(readiness::MAX_AGE)),
        drained: Notify::new(),
        request_ids: AtomicU64::new(0),
        id_seed: std::collections::hash_map::RandomState::new().build_hasher().finish(),
        lingering_refusals: Arc::new(Semaphore::new(LINGERING_REFUSALS)),
    });
    let (stop, stop_rx) = watch::channel(false);
    let accept_loop = runtime.spawn(accept_loop(listener, Arc::clone(&state), stop_rx));
    Ok(ServerHandle { addr, stop, runtime: Some(runtime), accept_loop: Some(accept_loop), state })
}

enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Whichever of two futures finishes first (`a` is polled first).
async fn race<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let mut a = pin!(a);
    let mut b = pin!(b);
    poll_fn(|cx| {
        if let Poll::Ready(x) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(x));
        }
        b.as_mut().poll(cx).map(Either::Right)
    })
    .await
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// What the accept loop waits for.
enum Event {
    Stop,
    Slot(OwnedSemaphorePermit),
    Accepted(std::io::Result<(TcpStream, SocketAddr)>),
}

/// The answer past `max_connections`, written without waiting (the socket
/// buffer of a fresh connection always takes it) before the connection is
/// closed: the client learns at once, instead of waiting in the backlog.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 50\r\nRetry-After: 1\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n{\"error\":\"too many open connections; retry later\"}";

async fn accept_loop(listener: TcpListener, state: Arc<State>, stop: watch::Receiver<bool>) {
    let limits = state.options.limits;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut backoff = Duration::from_millis(5);
    let mut slot: Option<OwnedSemaphorePermit> = None;
    loop {
        if slot.is_none() {
            slot = Arc::clone(&slots).try_acquire_owned().ok();
        }
        let event = if slot.is_some() {
            match race(stopped(stop.clone()), listener.accept()).await {
                Either::Left(()) => Event::Stop,
                Either::Right(accepted) => Event::Accepted(accepted),
            }
        } else {
            // Every slot taken: a connection closing frees one; a newcomer
            // meanwhile is refused at once.
            match race(stopped(stop.clone()), race(Arc::clone(&slots).acquire_owned(), listener.accept())).await {
                Either::Left(()) | Either::Right(Either::Left(Err(_))) => Event::Stop,
                Either::Right(Either::Left(Ok(freed))) => Event::Slot(freed),
                Either::Right(Either::Right(accepted)) => Event::Accepted(accepted),
            }
        };
        match event {
            Event::Stop => break,
            Event::Slot(freed) => slot = Some(freed),
            Event::Accepted(Ok((stream, _peer))) => {
                backoff = Duration::from_millis(5);
                let Some(slot) = slot.take() else {
                    refuse(stream, &state);
                    continue;
                };
                state.active.fetch_add(1, Ordering::SeqCst);
                state.metrics.open_connections.fetch_add(1, Ordering::Relaxed);
                let open = OpenConnection { state: Arc::clone(&state), _slot: slot };
                tokio::spawn(serve_connection(stream, open, stop.clone()));
            }
            Event::Accepted(Err(e)) => {
                // EMFILE, ENFILE, ENOBUFS, ECONNABORTED...: none is a reason to
                // stop listening. Back off so a full descriptor table is not
                // a busy loop, and try again.
                state.metrics.accept_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "accepting a connection failed; retrying");
                if let Either::Left(()) = race(stopped(stop.clone()), tokio::time::sleep(backoff)).await {
                    break;
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    drop(listener);
    tracing::info!(
        open_connections = state.active.load(Ordering::SeqCst),
        "stopped accepting; finishing requests in flight"
    );
    let deadline = tokio::time::Instant::now() + limits.shutdown_grace;
    while state.active.load(Ordering::SeqCst) > 0 {
        let notified = state.drained.notified();
        if state.active.load(Ordering::SeqCst) == 0 {
            break;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            tracing::warn!(
                open_connections = state.active.load(Ordering::SeqCst),
                grace_ms = limits.shutdown_grace.as_millis() as u64,
                "shutdown grace period over; closing the connections left"
            );
            break;
        }
    }
}

/// Refused connections that may linger to be closed cleanly; past it, a
/// refusal closes at once. Each holds a descriptor from the reserve that
/// `max_connections` leaves (64) for at most `REFUSAL_LINGER`.
const LINGERING_REFUSALS: usize = 32;
const REFUSAL_LINGER: Duration = Duration::from_millis(500);

/// Past `max_connections`: 503 and close, counted. Closing a socket with
/// unread bytes resets the connection, which can destroy the 503 before the
/// client reads it, so the client's request is read and dropped (for a
/// moment, while few refusals linger) after the answer is sent.
fn refuse(mut stream: TcpStream, state: &State) {
    state.metrics.refused_connections.fetch_add(1, Ordering::Relaxed);
    tracing::debug!("refused a connection: max_connections reached");
    let _ = stream.try_write(REFUSAL);
    let Ok(lingering) = Arc::clone(&state.lingering_refusals).try_acquire_owned() else { return };
    tokio::spawn(async move {
        let _ = poll_fn(|cx| std::pin::Pin::new(&mut stream).poll_shutdown(cx)).await;
        let deadline = tokio::time::Instant::now() + REFUSAL_LINGER;
        let mut sink = [0u8; 1024];
        while let Ok(Ok(())) = tokio::time::timeout_at(deadline, stream.readable()).await {
            match stream.try_read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        drop(lingering);
    });
}

/// A connection's slot and its place in the counts, given back on drop.
struct OpenConnection {
    state: Arc<State>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.state.metrics.open_connections.fetch_sub(1, Ordering::Relaxed);
        if self.state.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.state.drained.notify_waiters();
        }
    }
}

/// Per connection: when it last received bytes, whether a request is being
/// answered, and whether one ever was, for the idle and first-head timeouts.
struct Activity {
    started: Instant,
    last_read_ms: AtomicU64,
    in_flight: AtomicUsize,
    requests: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        self.last_read_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn idle_for(&self) -> Duration {
        Duration::from_millis(
            (self.started.elapsed().as_millis() as u64).saturating_sub(self.last_read_ms.load(Ordering::Relaxed)),
        )
    }
}

/// The socket, noting each read in `Activity`.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = std::pin::Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A connection's task. Until the client sends its first byte it holds only
/// the socket, one timer and this small future: hyper's connection (its read
/// and write buffers, its timers) is built once there is something to read,
/// so 10,000 idle connections cost little more than their sockets. Idle past
/// the header timeout, or at shutdown, the connection is closed.
async fn serve_connection(stream: TcpStream, open: OpenConnection, stop: watch::Receiver<bool>) {
    let header_timeout = open.state.options.limits.header_timeout;
    let started = Instant::now();
    // Peek, not `readable()`: tokio assumes a freshly accepted socket is
    // readable, so only a read that finds bytes (or the end) tells.
    let mut first_byte = [0u8; 1];
    let first = tokio::time::timeout(header_timeout, stream.peek(&mut first_byte));
    if let Either::Right(Ok(Ok(1..))) = race(stopped(stop.clone()), first).await {
        Box::pin(serve_http(stream, &open.state, stop, started)).await;
    }
    drop(open);
}

async fn serve_http(stream: TcpStream, state: &Arc<State>, stop: watch::Receiver<bool>, started: Instant) {
    let limits = state.options.limits;
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity {
        started,
        last_read_ms: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        requests: AtomicUsize::new(0),
    });
    let io = TokioIo::new(Watched { stream, activity: Arc::clone(&activity) });
    let service_state = Arc::clone(state);
    let service_activity = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |req| {
        let state = Arc::clone(&service_state);
        let activity = Arc::clone(&service_activity);
        async move {
            activity.in_flight.fetch_add(1, Ordering::SeqCst);
            activity.requests.fetch_add(1, Ordering::Relaxed);
            let response = answer(req, &state).await;
            activity.touch();
            activity.in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .title_case_headers(true)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    let mut conn = pin!(conn);
    let mut stop_signal = pin!(stopped(stop));
    // One timer per connection, moved forward as the connection is used:
    // it fires when the first head is overdue (hyper's own header timer
    // started only once the first byte was there) or the connection may
    // have idled past the idle timeout.
    let first_head_due = started + limits.header_timeout;
    let mut check = pin!(tokio::time::sleep_until(first_head_due.min(started + limits.idle_timeout).into()));
    let mut closing = false;
    let result = poll_fn(|cx| {
        if !closing {
            let stopping = stop_signal.as_mut().poll(cx).is_ready();
            let mut close_now = false;
            while check.as_mut().poll(cx).is_ready() {
                let now = Instant::now();
                let served = activity.requests.load(Ordering::Relaxed) > 0;
                if !served && now >= first_head_due {
                    // The first head is overdue: hang up, as hyper does
                    // when its own header timer fires.
                    return Poll::Ready(Ok(()));
                }
                let idle = activity.idle_for();
                let next = if activity.in_flight.load(Ordering::SeqCst) > 0 {
                    now + limits.idle_timeout
                } else if idle >= limits.idle_timeout {
                    close_now = true;
                    break;
                } else {
                    now + (limits.idle_timeout - idle)
                };
                let next = if served { next } else { next.min(first_head_due) };
                check.as_mut().reset(next.into());
            }
            if stopping || close_now {
                // Finishes a response in flight, then closes; an idle
                // connection closes at once.
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
        conn.as_mut().poll(cx)
    })
    .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// A request id from the client when it is a sane token, else a new one.
fn request_id(req: &Request<Incoming>, state: &State) -> String {
    let given = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).filter(|v| {
        !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    });
    match given {
        Some(id) => id.to_string(),
        None => {
            let n = state.request_ids.fetch_add(1, Ordering::Relaxed);
            let id = state.id_seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            // 16 hex digits, as `{:016x}` wrote them, without `fmt`.
            (0..16).rev().map(|nibble| char::from(b"0123456789abcdef"[(id >> (nibble * 4)) as usize & 0xf])).collect()
        }
    }
}

fn plain(status: u16, content_type: &'static str, body: String) -> ApiResponse {
    ApiResponse {
        status,
        cors: false,
        headers: vec![("Content-Type", content_type.into()), ("Cache-Control", "no-store".into())],
        body: body.into_bytes(),
        database_failed: false,
    }
}

async fn answer(req: Request<Incoming>, state: &Arc<State>) -> Response<Body> {
    let started = Instant::now();
    let id = request_id(&req, state);
    let method = req.method().as_str().to_string();
    let target = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    let path = req.uri().path().to_string();
    // Values beyond visible ASCII are kept (lossily), not dropped: an
    // Idempotency-Key with such bytes must be refused, not ignored.
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let healthcheck = req.headers().get(hyper::header::USER_AGENT).is_some_and(|ua| ua == HEALTHCHECK_AGENT);
    let limits = state.options.limits;

    let hosts: Vec<&[u8]> = req.headers().get_all(hyper::header::HOST).iter().map(HeaderValue::as_bytes).collect();
    let host_problem = api::host_problem(req.version() >= hyper::Version::HTTP_11, &hosts);

    let log_method = method.clone();
    let mut close = false;
    let mut list = None;
    let response = match (method.as_str(), path.as_str()) {
        // Before routing, probes included. The connection closes after the
        // answer: a peer that frames requests this way is not one to keep.
        _ if host_problem.is_some() => {
            close = true;
            ApiResponse::error(400, host_problem.as_deref().unwrap_or_default())
        }
        ("GET" | "HEAD", "/healthz") => plain(200, "text/plain; charset=utf-8", "ok\n".into()),
        ("GET" | "HEAD", "/readyz") if state.draining.load(Ordering::SeqCst) => {
            plain(503, "text/plain; charset=utf-8", "draining: shutting down\n".into())
        }
        ("GET" | "HEAD", "/readyz") => match ready(state, limits.ready_timeout).await {
            Ok(()) => plain(200, "text/plain; charset=utf-8", "ready\n".into()),
            Err(_) => {
                let mut unavailable = plain(503, "text/plain; charset=utf-8", "database unavailable\n".into());
                unavailable.headers.push(("Retry-After", "1".into()));
                unavailable
            }
        },
        ("GET" | "HEAD", "/metrics") => plain(200, "text/plain; version=0.0.4; charset=utf-8", state.metrics.render()),
        _ => {
            let declared =
                req.headers().get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if declared.is_some_and(|n| n > MAX_BODY as u64) {
                close = true;
                ApiResponse::error(413, &format!("request body larger than {MAX_BODY} bytes"))
            } else {
                let body = Limited::new(req.into_body(), MAX_BODY);
                match tokio::time::timeout(limits.body_timeout, body.collect()).await {
                    Err(_) => {
                        close = true;
                        ApiResponse::error(408, &format!("request body not received within {:?}", limits.body_timeout))
                    }
                    Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                        close = true;
                        ApiResponse::error(413, &format!("request body larger than {MAX_BODY} bytes"))
                    }
                    Ok(Err(e)) => {
                        close = true;
                        ApiResponse::error(400, &format!("cannot read request body: {e}"))
                    }
                    Ok(Ok(_)) if api::is_full_list(&method, &target) => {
                        let req = ApiRequest { method: &method, target: &target, headers: &headers, body: &[] };
                        match full_list(state, api::request_base_url(&req, &state.fallback_host)).await {
                            Ok(body) => {
                                list = Some(body);
                                api::list_head()
                            }
                            Err(e) => api::db_error(e),
                        }
                    }
                    Ok(Ok(collected)) => {
                        let body = collected.to_bytes();
                        let call_state = Arc::clone(state);
                        let method = log_method.clone();
                        let reads_only = matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS");
                        let work = move |conn: &dyn crate::store::todos::Todos| {
                            let req = ApiRequest { method: &method, target: &target, headers: &headers, body: &body };
                            let ctx = Context {
                                conn,
                                static_root: &call_state.static_root,
                                fallback_host: &call_state.fallback_host,
                            };
                            api::handle(&req, &ctx)
                        };
                        let outcome =
                            if reads_only { state.store.read(work).await } else { state.store.run(work).await };
                        outcome.unwrap_or_else(|e| {
                            tracing::error!(request_id = %id, error = %e, "request failed");
                            let mut failed = ApiResponse::error(500, "internal error");
                            failed.database_failed = true;
                            failed
                        })
                    }
                }
            }
        }
    };
    if response.database_failed {
        state.metrics.database_errors.fetch_add(1, Ordering::Relaxed);
    }
    // Draining: the client should take its next request elsewhere.
    let close = close || state.draining.load(Ordering::SeqCst);
    let status = response.status;
    let latency = started.elapsed();
    state.metrics.observe(metrics::route_label(&path), status, latency);
    if state.options.access_log {
        let latency_ms = (latency.as_secs_f64() * 1000.0 * 100.0).round() / 100.0;
        // Paths are client-controlled: tracing's formatters escape them.
        if healthcheck {
            tracing::debug!(request_id = %id, method = %log_method, path = %path, status, latency_ms, "request");
        } else {
            crate::logging::access(&id, &log_method, &path, status, latency_ms);
        }
    }
    to_hyper(response, &id, close, list)
}

/// The full list is sent in chunks of about this many bytes (a few hundred
/// todos each)...
const LIST_CHUNK: usize = 32 * 1024;
/// ...of which at most this many wait between the database reader and the
/// socket: the reader waits for the client (backpressure), so a list of
/// any length holds a few chunks of memory per request.
const LIST_QUEUE: usize = 2;

/// A piece of the list on its way from the database reader to the body.
enum ListPiece {
    More(Bytes),
    /// The closing bytes: the list is complete.
    Last(Bytes),
    Failed(StoreError),
}

/// Starts reading the full list (`Store::read_long`, on a blocking thread)
/// and waits for its first chunk: a database that fails before any byte is
/// sent gets its usual answer (503 or 500). Past that the status is sent,
/// and a failure aborts the connection (see `Body`). A list that fits in
/// its first chunk goes whole, with a Content-Length as before (so an
/// HTTP/1.0 client can keep its connection alive).
async fn full_list(state: &Arc<State>, base: String) -> Result<Body, StoreError> {
    let (sender, mut receiver) = mpsc::channel(LIST_QUEUE);
    let stall = state.options.limits.body_timeout;
    let reader_sender = sender.clone();
    let runtime = tokio::runtime::Handle::current();
    let store = Arc::clone(&state.store);
    tokio::spawn(async move {
        let read = store.read_long(move |conn| send_list(conn, base, &reader_sender, &runtime, stall)).await;
        if let Err(e) = read {
            // The reader never ran, or panicked: the head (or the body) says so.
            let _ = tokio::time::timeout(stall, sender.send(ListPiece::Failed(StoreError::Failed(e)))).await;
        }
    });
    match receiver.recv().await {
        Some(ListPiece::Failed(e)) => Err(e),
        Some(ListPiece::Last(whole)) => Ok(Body::Full(Some(whole))),
        Some(first) => {
            Ok(Body::List(Box::new(ListBody { first: Some(first), receiver, done: false, state: Arc::clone(state) })))
        }
        None => Err(StoreError::Failed("the list reader stopped before the first row".into())),
    }
}

/// The database side of `full_list`: reads the todos in order, sends them
/// on as JSON chunks and waits while the queue is full. A client that reads
/// nothing for `stall` (the body timeout) is given up on: the reader stops
/// without the closing piece, and the body ends in an error.
fn send_list(
    conn: &dyn Todos,
    base: String,
    sender: &mpsc::Sender<ListPiece>,
    runtime: &tokio::runtime::Handle,
    stall: Duration,
) {
    let send = |piece| matches!(runtime.block_on(tokio::time::timeout(stall, sender.send(piece))), Ok(Ok(())));
    let mut list = ListWriter::start(base, LIST_CHUNK + 1024);
    let mut gone = false;
    let read = conn.for_each(&mut |todo| {
        list.push(&todo);
        if list.len() >= LIST_CHUNK && !send(ListPiece::More(Bytes::from(list.take()))) {
            gone = true;
        }
        !gone
    });
    match read {
        Err(e) => {
            send(ListPiece::Failed(e));
        }
        Ok(()) if !gone => {
            send(ListPiece::Last(Bytes::from(list.finish())));
        }
        Ok(()) => {}
    }
}

/// A list being sent: its first piece (already received) and the rest.
struct ListBody {
    first: Option<ListPiece>,
    receiver: mpsc::Receiver<ListPiece>,
    done: bool,
    state: Arc<State>,
}

/// A response body: whole, or the full list as it is read. The list has no
/// Content-Length (HTTP/1.1 sends it chunked); when the database fails
/// after the head was sent, or the reader stops early, the body ends in an
/// error, on which hyper closes the connection without the last chunk: the
/// client sees an incomplete body, never a shorter list that looks whole.
enum Body {
    Full(Option<Bytes>),
    List(Box<ListBody>),
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = String;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, String>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::List(list) => {
                if list.done {
                    return Poll::Ready(None);
                }
                let piece = match list.first.take() {
                    Some(first) => first,
                    None => match list.receiver.poll_recv(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Some(piece)) => piece,
                        Poll::Ready(None) => {
                            list.done = true;
                            let why =
                                "the list reader stopped before the end (a client that stalled past the body timeout)";
                            tracing::warn!(why, "full list cut short; closing the connection");
                            return Poll::Ready(Some(Err(why.to_string())));
                        }
                    },
                };
                Poll::Ready(Some(match piece {
                    ListPiece::More(bytes) => Ok(Frame::data(bytes)),
                    ListPiece::Last(bytes) => {
                        list.done = true;
                        Ok(Frame::data(bytes))
                    }
                    ListPiece::Failed(e) => {
                        list.done = true;
                        list.state.metrics.database_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, "database failed while the full list was sent; closing the connection");
                        Err(e.to_string())
                    }
                }))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(bytes) => bytes.is_none(),
            Body::List(list) => list.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::List(_) => SizeHint::default(),
        }
    }
}

/// Readiness from the latest check at most `readiness::MAX_AGE` old, or
/// the one under way, or a new one: however many probes arrive, the
/// database sees one check at a time, about one a second. A failed check is
/// logged and counted once, not once per probe that answers from it.
async fn ready(state: &Arc<State>, timeout: Duration) -> Result<(), String> {
    let limit = state.store.ready_limit(timeout);
    let check = || {
        let state = Arc::clone(state);
        async move {
            state.metrics.readiness_checks.fetch_add(1, Ordering::Relaxed);
            state.store.ready().await
        }
    };
    let report_state = Arc::clone(state);
    let report = move |outcome: &Result<(), String>| {
        if let Err(e) = outcome {
            report_state.metrics.database_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "not ready");
        }
    };
    state.readiness.ready(limit, check, report).await
}

/// `api::CORS_HEADERS` as hyper's values, built once: every API answer
/// carries them.
fn cors_headers() -> &'static [(HeaderName, HeaderValue)] {
    static BUILT: std::sync::OnceLock<Vec<(HeaderName, HeaderValue)>> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        api::CORS_HEADERS
            .iter()
            .map(|(name, value)| {
                let name = HeaderName::from_bytes(name.as_bytes()).expect("a CORS header name is valid");
                (name, HeaderValue::from_static(value))
            })
            .collect()
    })
}

fn to_hyper(response: ApiResponse, request_id: &str, close: bool, list: Option<Body>) -> Response<Body> {
    let body = list.unwrap_or_else(|| Body::Full(Some(Bytes::from(response.body))));
    let mut out = Response::new(body);
    // Room for every header at once: growing the map cost more than filling it.
    *out.headers_mut() = hyper::HeaderMap::with_capacity(16);
    *out.status_mut() = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = out.headers_mut();
    if response.cors {
        for (name, value) in cors_headers() {
            headers.append(name.clone(), value.clone());
        }
    }
    for (name, value) in response.headers {
        let value = match value {
            std::borrow::Cow::Borrowed(fixed) => Ok(HeaderValue::from_static(fixed)),
            std::borrow::Cow::Owned(made) => HeaderValue::try_from(made),
        };
        match (HeaderName::from_bytes(name.as_bytes()), value) {
            (Ok(n), Ok(v)) => {
                headers.append(n, v);
            }
            _ => tracing::warn!(header = %name, "dropped an invalid response header"),
        }
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID, v);
    }
    if close {
        headers.insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_from_env() {
        let env = |name: &str| match name {
            "TODOBACKEND_HEADER_TIMEOUT" => Some("250ms".to_string()),
            "TODOBACKEND_BODY_TIMEOUT" => Some("2".to_string()),
            "TODOBACKEND_MAX_CONNECTIONS" => Some("300".to_string()),
            _ => None,
        };
        let limits = Limits::from_env(&env).unwrap();
        assert_eq!(limits.header_timeout, Duration::from_millis(250));
        assert_eq!(limits.body_timeout, Duration::from_secs(2));
        assert_eq!(limits.max_connections, 300);
        assert_eq!(limits.idle_timeout, Limits::default().idle_timeout);

        let bad =
            |value: &'static str| move |name: &str| (name == "TODOBACKEND_IDLE_TIMEOUT").then(|| value.to_string());
        for value in ["soon", "0", "-1s", "ms"] {
            let err = Limits::from_env(&bad(value)).unwrap_err();
            assert!(err.contains("TODOBACKEND_IDLE_TIMEOUT") && err.contains(value), "{err}");
        }
        let err = Limits::from_env(&|n: &str| (n == "TODOBACKEND_MAX_HEADER_BYTES").then(|| "100".into())).unwrap_err();
        assert!(err.contains("at least 8192"), "{err}");
    }

    #[test]
    fn the_drain_defaults_to_5s_and_zero_turns_it_off() {
        assert_eq!(Limits::default().drain, Duration::from_secs(5));
        let drain =
            |value: &'static str| Limits::from_env(&move |name: &str| (name == DRAIN_VAR).then(|| value.into()));
        assert_eq!(drain("2s").unwrap().drain, Duration::from_secs(2));
        assert_eq!(drain("0").unwrap().drain, Duration::ZERO);
        assert_eq!(drain("0s").unwrap().drain, Duration::ZERO);
        assert_eq!(drain("1m30s").unwrap().drain, Duration::from_secs(90));
        assert_eq!(drain("1.5").unwrap().drain, Duration::from_millis(1500));
        let err = drain("-1s").unwrap_err();
        assert!(err.contains(DRAIN_VAR) && err.contains("-1s"), "{err}");
        // Zero stays refused where it would mean "no time at all".
        let err = Limits::from_env(&|n: &str| (n == "TODOBACKEND_SHUTDOWN_GRACE").then(|| "0".into())).unwrap_err();
        assert!(err.contains("TODOBACKEND_SHUTDOWN_GRACE"), "{err}");
    }
}
