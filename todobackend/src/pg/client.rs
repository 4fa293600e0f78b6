//! Connections to PostgreSQL, used synchronously. The API handlers and the
//! operational commands are synchronous (as rusqlite is), so each call here
//! blocks its thread on a future. The connections' own tasks (tokio-postgres
//! splits a connection into a `Client` and a future that drives the socket)
//! run on one small runtime of this module's, never dropped, so a call works
//! the same from a server's blocking thread and from a command's `main`.

use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use crate::backend::StoreError;
use crate::pg::config::{CA_FILE_VAR, ChannelBinding, PASSWORD_FILE_VAR, SslMode, Target};
use crate::pg::{resolve, tls};

/// Reaching the server, TLS and authentication, all included: a database
/// that is away makes a request fail within this, not hang.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

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

/// One open connection.
pub struct Conn {
    client: Client,
}

impl Conn {
    /// Resolves the host (see `resolve`), then tries its addresses in turn.
    /// A server that refuses (wrong password, no such database) fails at
    /// once, as `Failed`; one that cannot be reached is `Unavailable`.
    pub fn connect(target: &Target) -> Result<Conn, StoreError> {
        let cannot = |why: String| format!("cannot connect to {}: {why}", target.display());
        let addresses = resolve::resolve(&target.host).map_err(|why| StoreError::Unavailable(cannot(why)))?;
        let mut last = String::from("no address");
        for ip in addresses {
            match Self::connect_to(target, SocketAddr::new(ip, target.port)) {
                Ok(conn) => return Ok(conn),
                Err(StoreError::Failed(why)) => return Err(StoreError::Failed(cannot(why))),
                Err(StoreError::Unavailable(why)) => last = why,
            }
        }
        Err(StoreError::Unavailable(cannot(last)))
    }

    fn connect_to(target: &Target, address: SocketAddr) -> Result<Conn, StoreError> {
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
        let attempt = async {
            let stream =
                TcpStream::connect(address).await.map_err(|e| StoreError::Unavailable(format!("{address}: {e}")))?;
            let _ = stream.set_nodelay(true);
            config.connect_raw(stream, tls).await.map_err(|e| {
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
            })
        };
        let (client, connection) = block_on(async { tokio::time::timeout(CONNECT_TIMEOUT, attempt).await })
            .map_err(|_| StoreError::Unavailable(format!("{address} did not answer within {CONNECT_TIMEOUT:?}")))??;
        runtime().spawn(async move {
            // Ends when the server or the client closes; `Client` then
            // reports closed and the pool drops it.
            let _ = connection.await;
        });
        Ok(Conn { client })
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

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    fn timed<T>(
        &self,
        future: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        match block_on(async { tokio::time::timeout(QUERY_TIMEOUT, future).await }) {
            Ok(result) => result.map_err(|e| classify(&e)),
            Err(_) => Err(StoreError::Unavailable(format!("the database did not answer within {QUERY_TIMEOUT:?}"))),
        }
    }

    pub fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        self.timed(self.client.query(sql, params))
    }

    pub fn query_opt(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, StoreError> {
        self.timed(self.client.query_opt(sql, params))
    }

    pub fn query_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, StoreError> {
        self.timed(self.client.query_one(sql, params))
    }

    pub fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        self.timed(self.client.execute(sql, params))
    }

    /// A short statement without parameters (BEGIN, COMMIT, ROLLBACK of a
    /// request's transaction), with the timeout of a query.
    pub fn control(&self, sql: &str) -> Result<(), StoreError> {
        self.timed(self.client.batch_execute(sql))
    }

    /// Statements without parameters, several separated by `;` (migrations).
    /// No timeout: a migration or a backup may take long, and waits for
    /// the locks it needs.
    pub fn batch(&self, sql: &str) -> Result<(), StoreError> {
        block_on(self.client.batch_execute(sql)).map_err(|e| classify(&e))
    }
}

/// Open connections kept for reuse. How many are in use at once is bounded
/// by the caller (`Store`'s semaphore); this keeps at most `size` idle.
pub struct Pool {
    target: Target,
    idle: Mutex<Vec<Conn>>,
    size: usize,
}

impl Pool {
    pub fn new(target: Target, size: usize) -> Pool {
        Pool { target, idle: Mutex::new(Vec::new()), size }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// An idle connection still open, else a new one. A database that
    /// restarted closed the old ones; they are dropped here, so the first
    /// request after it is back gets a fresh connection instead of an error.
    pub fn get(&self) -> Result<Conn, StoreError> {
        loop {
            let conn = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match conn {
                Some(conn) if !conn.is_closed() => return Ok(conn),
                Some(_) => continue,
                None => return Conn::connect(&self.target),
            }
        }
    }

    pub fn put(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if !conn.is_closed() && idle.len() < self.size {
            idle.push(conn);
        }
    }
}

impl Conn {
    /// A prepared statement, to run many times (bulk inserts).
    pub fn prepare(&self, sql: &str) -> Result<tokio_postgres::Statement, StoreError> {
        self.timed(self.client.prepare(sql))
    }

    pub fn execute_statement(
        &self,
        statement: &tokio_postgres::Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        self.timed(self.client.execute(statement, params))
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
