//! Connections to PostgreSQL, used synchronously. The API handlers and the
//! operational commands are synchronous (as rusqlite is), so each call here
//! blocks its thread on a future. The connections' own tasks (tokio-postgres
//! splits a connection into a `Client` and a future that drives the socket)
//! run on one small runtime of this module's, never dropped, so a call works
//! the same from a server's blocking thread and from a command's `main`.
//!
//! The pool is deadpool's, under a manager of ours (`Manager`): connecting
//! stays here (hickory resolution, the socket and its keepalive, the TLS
//! connector, the refusal messages), deadpool keeps and recycles the
//! connections, and deadpool-postgres's `ClientWrapper` caches each
//! connection's prepared statements.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use deadpool::managed::{Metrics, Object, RecycleError, RecycleResult};
use deadpool_postgres::ClientWrapper;
use tokio::net::TcpStream;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::dns;
use crate::store::postgres::config::{CA_FILE_VAR, ChannelBinding, PASSWORD_FILE_VAR, SslMode, Target};
use crate::store::postgres::tls;
use crate::store::todos::StoreError;

/// Resolving the host, reaching the server, TLS and authentication, all
/// included: a database that is away makes a request fail within this, not
/// hang.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// TCP keepalive on an idle connection: the first probe after this long
/// without traffic, then one a second. With `UNACKED_LIMIT` (which also
/// bounds the probes) a pooled connection to a node whose link died is
/// closed within about three seconds, so the pool drops it before a request
/// waits on it.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(1);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// TCP_USER_TIMEOUT: data sent and not acknowledged for this long closes
/// the connection (a query sent to a dead node fails in two seconds, not at
/// the query timeout). Far above a LAN's round trip.
const UNACKED_LIMIT: Duration = Duration::from_secs(2);

/// A connection older than this is closed on its next return to use and a
/// new one made: the server's per-session memory (plans, caches) does not
/// grow forever, and a failed-over or rebalanced database is reached at
/// its current address within this.
pub const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// One statement. Long enough for any query of the API; a server that
/// stopped answering (a killed node) is given up on after it.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("todobackend-pg")
            .enable_io()
            .enable_time()
            .build()
            .expect("cannot start the PostgreSQL runtime")
    })
}

/// Runs a future to completion on the calling thread (not from inside an
/// async task: callers are blocking threads or `main`).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    runtime().block_on(future)
}

/// One line for a tokio-postgres error: the server's own message when it
/// sent one, else the error and its causes.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().lines().collect::<Vec<_>>().join(" ");
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    if text.contains("password missing") {
        return format!("the server asks for a password; set {PASSWORD_FILE_VAR} to a file holding it");
    }
    text
}

/// The reason when the TLS handshake failed on the server's certificate: a
/// setting to fix (the CA file, the host name), not a database away.
fn refused_certificate(e: &tokio_postgres::Error) -> Option<String> {
    let io = std::error::Error::source(e)?.downcast_ref::<std::io::Error>()?;
    match io.get_ref()?.downcast_ref::<tokio_rustls::rustls::Error>()? {
        certificate @ tokio_rustls::rustls::Error::InvalidCertificate(_) => Some(certificate.to_string()),
        _ => None,
    }
}

/// Connection trouble (503, retry later) or an error the server answered
/// with (500).
pub fn classify(e: &tokio_postgres::Error) -> StoreError {
    let unavailable = match e.code() {
        // connection_exception, operator intervention (admin shutdown,
        // crash shutdown, cannot connect now), insufficient resources.
        Some(code) => {
            let code = code.code();
            code.starts_with("08") || code.starts_with("57P") || code.starts_with("53")
        }
        // No SQLSTATE: the connection broke (closed, or an I/O error),
        // else a client-side error such as a type mismatch.
        None => {
            e.is_closed()
                || std::error::Error::source(e).is_some_and(|source| source.downcast_ref::<std::io::Error>().is_some())
        }
    };
    if unavailable { StoreError::Unavailable(describe(e)) } else { StoreError::Failed(describe(e)) }
}

/// How long `migrate` waits for a database that is not up yet (on a swarm,
/// the `migrate` job may start before `db`): `TODOBACKEND_DATABASE_WAIT`
/// seconds, 60 by default, 0 to try once.
pub const WAIT_VAR: &str = "TODOBACKEND_DATABASE_WAIT";

pub fn wait_from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Duration, String> {
    match env(WAIT_VAR).filter(|v| !v.is_empty()) {
        None => Ok(Duration::from_secs(60)),
        Some(value) => value
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("{WAIT_VAR}={value:?} is not a number of seconds; write e.g. {WAIT_VAR}=60")),
    }
}

/// One open connection: a pooled one goes back to its pool when dropped,
/// unless a call on it found the database unavailable.
pub struct Conn {
    own: Option<ClientWrapper>,
    pooled: Option<Object<Manager>>,
    broken: Cell<bool>,
}

/// The socket options that find a dead peer in seconds (see the constants).
fn keep_alive(stream: &TcpStream) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(stream);
    socket.set_tcp_nodelay(true)?;
    socket.set_tcp_keepalive(
        &socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE).with_interval(KEEPALIVE_INTERVAL).with_retries(2),
    )?;
    socket.set_tcp_user_timeout(Some(UNACKED_LIMIT))
}

/// Resolves the host (dns.rs), then tries its addresses in turn, the whole
/// within `CONNECT_TIMEOUT`. A server that refuses (wrong password, no such
/// database) fails at once, as `Failed`; one that cannot be reached is
/// `Unavailable`. Runs on this module's runtime.
async fn open(target: &Target) -> Result<ClientWrapper, StoreError> {
    let cannot = |why: String| format!("cannot connect to {}: {why}", target.display());
    // What the attempt was waiting for, should the timeout end it.
    let mut last = format!("{} was not resolved within {CONNECT_TIMEOUT:?}", target.host);
    let attempt = async {
        let resolver = dns::Resolver::from_system().map_err(|why| StoreError::Failed(cannot(why)))?;
        let addresses = resolver.lookup(&target.host).await.map_err(|why| StoreError::Unavailable(cannot(why)))?;
        for ip in addresses {
            let address = SocketAddr::new(ip, target.port);
            last = format!("{address} did not answer within {CONNECT_TIMEOUT:?}");
            match open_at(target, address).await {
                Ok(client) => return Ok(client),
                Err(StoreError::Failed(why)) => return Err(StoreError::Failed(cannot(why))),
                Err(StoreError::Unavailable(why)) => last = why,
            }
        }
        Err(StoreError::Unavailable(cannot(last.clone())))
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(outcome) => outcome,
        Err(_) => Err(StoreError::Unavailable(cannot(last))),
    }
}

async fn open_at(target: &Target, address: SocketAddr) -> Result<ClientWrapper, StoreError> {
    let mut config = tokio_postgres::Config::new();
    config.user(&target.user).dbname(&target.dbname).application_name("todobackend");
    if let Some(password) = &target.password {
        config.password(password.expose());
    }
    config.ssl_mode(match target.sslmode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        // The verifying modes are `require` to tokio-postgres; the
        // verification is the TLS connector's (`tls`).
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
    });
    config.channel_binding(match target.channel_binding {
        ChannelBinding::Disable => tokio_postgres::config::ChannelBinding::Disable,
        ChannelBinding::Prefer => tokio_postgres::config::ChannelBinding::Prefer,
        ChannelBinding::Require => tokio_postgres::config::ChannelBinding::Require,
    });
    let tls = tls::Tls::new(target).map_err(StoreError::Failed)?;
    let stream = TcpStream::connect(address).await.map_err(|e| StoreError::Unavailable(format!("{address}: {e}")))?;
    keep_alive(&stream).map_err(|e| StoreError::Unavailable(format!("{address}: socket options: {e}")))?;
    let (client, connection) = config.connect_raw(stream, tls).await.map_err(|e| {
        if let Some(why) = refused_certificate(&e) {
            return StoreError::Failed(format!(
                "the server's certificate was refused ({why}); {}",
                match &target.ca {
                    Some(ca) => format!(
                        "{CA_FILE_VAR}={} must hold the root that signed it, and with sslmode=verify-full it must name {}",
                        ca.path, target.host
                    ),
                    None => format!("set {CA_FILE_VAR} to the root that signed it"),
                }
            ));
        }
        match classify(&e) {
            // Missing password: a setting to fix, not a database away.
            StoreError::Unavailable(why) if why.contains(PASSWORD_FILE_VAR) => StoreError::Failed(why),
            other => other,
        }
    })?;
    // Ends when the server or the client closes; `Client` then reports
    // closed and the pool drops it.
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(ClientWrapper::new(client, task))
}

impl Conn {
    /// A connection of its own, outside the pool (commands, the first
    /// check of `serve`).
    pub fn connect(target: &Target) -> Result<Conn, StoreError> {
        let client = block_on(open(target))?;
        Ok(Conn { own: Some(client), pooled: None, broken: Cell::new(false) })
    }

    /// `connect`, trying again while the database is unavailable (not when
    /// it refuses: a wrong password or database fails at once), for up to
    /// `wait`; `waiting` is told why before each new try.
    pub fn connect_waiting(target: &Target, wait: Duration, mut waiting: impl FnMut(&str)) -> Result<Conn, StoreError> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match Conn::connect(target) {
                Err(StoreError::Unavailable(why)) if std::time::Instant::now() < deadline => {
                    waiting(&why);
                    std::thread::sleep(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    fn client(&self) -> &ClientWrapper {
        match (&self.own, &self.pooled) {
            (Some(own), _) => own,
            (None, Some(pooled)) => pooled,
            (None, None) => unreachable!("a Conn holds a client until dropped"),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.client().is_closed()
    }

    fn timed<T>(
        &self,
        future: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        let outcome = within_query_timeout(future);
        if matches!(outcome, Err(StoreError::Unavailable(_))) {
            self.broken.set(true);
        }
        outcome
    }

    fn client_mut(&mut self) -> &mut tokio_postgres::Client {
        match (&mut self.own, &mut self.pooled) {
            (Some(own), _) => own,
            (None, Some(pooled)) => pooled,
            (None, None) => unreachable!("a Conn holds a client until dropped"),
        }
    }

    /// Runs `sql` (no parameters) in a read-only transaction through a
    /// portal, `batch` rows at a time, calling `each` with every row until
    /// it returns `false`: however many rows the result has, at most
    /// `batch` are in memory. Each step has the timeout of a query; `each`
    /// may block (it sends the rows on), since no step is in flight then.
    pub fn for_each_row(
        &mut self,
        sql: &str,
        batch: i32,
        each: &mut dyn FnMut(&Row) -> bool,
    ) -> Result<(), StoreError> {
        let outcome = rows_through_portal(self.client_mut(), sql, batch, each);
        if matches!(outcome, Err(StoreError::Unavailable(_))) {
            self.broken.set(true);
        }
        outcome
    }

    /// The statement prepared on this connection by an earlier call with
    /// the same SQL, else prepared now and kept (deadpool-postgres's
    /// statement cache): a request's queries cost one round trip, not two.
    fn statement(&self, sql: &str) -> Result<tokio_postgres::Statement, StoreError> {
        self.timed(self.client().prepare_cached(sql))
    }

    pub fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        let statement = self.statement(sql)?;
        self.timed(self.client().query(&statement, params))
    }

    pub fn query_opt(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, StoreError> {
        let statement = self.statement(sql)?;
        self.timed(self.client().query_opt(&statement, params))
    }

    pub fn query_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, StoreError> {
        let statement = self.statement(sql)?;
        self.timed(self.client().query_one(&statement, params))
    }

    pub fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let statement = self.statement(sql)?;
        self.timed(self.client().execute(&statement, params))
    }

    /// A short statement without parameters (BEGIN, COMMIT, ROLLBACK of a
    /// request's transaction), with the timeout of a query.
    pub fn control(&self, sql: &str) -> Result<(), StoreError> {
        self.timed(self.client().batch_execute(sql))
    }

    /// Statements without parameters, several separated by `;` (migrations).
    /// No timeout: a migration or a backup may take long, and waits for
    /// the locks it needs.
    pub fn batch(&self, sql: &str) -> Result<(), StoreError> {
        block_on(self.client().batch_execute(sql)).map_err(|e| classify(&e))
    }

    /// A prepared statement, to run many times (bulk inserts); not cached,
    /// since its SQL is made for one table.
    pub fn prepare(&self, sql: &str) -> Result<tokio_postgres::Statement, StoreError> {
        self.timed(self.client().prepare(sql))
    }

    pub fn execute_statement(
        &self,
        statement: &tokio_postgres::Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        self.timed(self.client().execute(statement, params))
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // A connection that timed out or broke may still have a query in
        // flight: it is closed, not handed to the next request.
        if self.broken.get()
            && let Some(pooled) = self.pooled.take()
        {
            drop(Object::take(pooled));
        }
    }
}

/// [`Conn::for_each_row`]'s steps, on the connection's client.
fn rows_through_portal(
    client: &mut tokio_postgres::Client,
    sql: &str,
    batch: i32,
    each: &mut dyn FnMut(&Row) -> bool,
) -> Result<(), StoreError> {
    let transaction = within_query_timeout(client.build_transaction().read_only(true).start())?;
    let statement = within_query_timeout(transaction.prepare(sql))?;
    let portal = within_query_timeout(transaction.bind(&statement, &[]))?;
    loop {
        let rows = within_query_timeout(transaction.query_portal(&portal, batch))?;
        for row in &rows {
            if !each(row) {
                // Dropping the transaction rolls it back.
                return Ok(());
            }
        }
        if rows.len() < batch as usize {
            break;
        }
    }
    within_query_timeout(transaction.commit())
}

/// A step on a connection, within `QUERY_TIMEOUT`.
fn within_query_timeout<T>(
    future: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, StoreError> {
    match block_on(async { tokio::time::timeout(QUERY_TIMEOUT, future).await }) {
        Ok(result) => result.map_err(|e| classify(&e)),
        Err(_) => Err(StoreError::Unavailable(format!("the database did not answer within {QUERY_TIMEOUT:?}"))),
    }
}

/// How deadpool makes and checks our connections.
pub struct Manager {
    target: Target,
}

impl deadpool::managed::Manager for Manager {
    type Type = ClientWrapper;
    type Error = StoreError;

    async fn create(&self) -> Result<ClientWrapper, StoreError> {
        open(&self.target).await
    }

    /// The recycle check is deadpool-postgres's `RecyclingMethod::Fast`
    /// (is the connection closed?) plus the maximum lifetime, not
    /// `Verified` (a round trip before every request's first query): the
    /// socket's keepalive and unacknowledged-data limit close a connection
    /// to a dead node within seconds, which is what a test query would find.
    async fn recycle(&self, client: &mut ClientWrapper, metrics: &Metrics) -> RecycleResult<StoreError> {
        if client.is_closed() {
            return Err(RecycleError::message("the connection is closed"));
        }
        if metrics.age() > MAX_LIFETIME {
            return Err(RecycleError::message("the connection reached its maximum lifetime"));
        }
        Ok(())
    }
}

/// Open connections kept for reuse (deadpool's pool). How many are in use
/// at once is bounded by the caller (`Store`'s semaphore, `size`); the pool
/// has one more for the readiness check, which runs beside the requests.
pub struct Pool {
    target: Target,
    pool: deadpool::managed::Pool<Manager>,
}

impl Pool {
    pub fn new(target: Target, size: usize) -> Pool {
        let manager = Manager { target: target.clone() };
        // Without timeouts deadpool needs no runtime of its own: the wait
        // is bounded by `Store`'s semaphore, a connect by CONNECT_TIMEOUT.
        let pool = deadpool::managed::Pool::builder(manager)
            .max_size(size + 1)
            .build()
            .expect("a pool without timeouts needs no runtime");
        Pool { target, pool }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// An idle connection that passes the recycle check, else a new one. A
    /// database that restarted closed the old ones; they are dropped here,
    /// so the first request after it is back gets a fresh connection
    /// instead of an error.
    pub fn get(&self) -> Result<Conn, StoreError> {
        match block_on(self.pool.get()) {
            Ok(pooled) => Ok(Conn { own: None, pooled: Some(pooled), broken: Cell::new(false) }),
            Err(deadpool::managed::PoolError::Backend(e)) => Err(e),
            Err(deadpool::managed::PoolError::PostCreateHook(e)) => Err(StoreError::Unavailable(e.to_string())),
            Err(other) => Err(StoreError::Unavailable(format!("the connection pool: {other}"))),
        }
    }

    /// Gives a connection back: a pooled one returns to the pool (a broken
    /// one is closed, see `Conn`'s drop); one made outside it is closed.
    pub fn put(&self, conn: Conn) {
        drop(conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_is_whole_seconds_with_a_default() {
        assert_eq!(wait_from_env(&|_| None).unwrap(), Duration::from_secs(60));
        assert_eq!(wait_from_env(&|_| Some("0".into())).unwrap(), Duration::ZERO);
        let err = wait_from_env(&|_| Some("1m".into())).unwrap_err();
        assert!(err.contains(WAIT_VAR) && err.contains("1m"), "{err}");
    }
}
