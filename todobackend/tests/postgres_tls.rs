//! TLS to PostgreSQL that is verified, against Debian's server with a
//! certificate from a private CA (`common::postgres`): `verify-full` passes
//! with the right root and fails with another or for a host the certificate
//! does not name; SCRAM binds to the TLS session (`SCRAM-SHA-256-PLUS`), so
//! a relay that terminates TLS cannot pass an authentication on, even with a
//! certificate the CA signed; and no password reaches a relay or a server
//! that does not prove it holds the certificate.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TempDir;
use common::postgres::{APP_USER, PgDatabase, PgServer, issue, make_ca, shared};
use todobackend::store::postgres::client::Conn;
use todobackend::store::postgres::config::{CA_FILE_VAR, PASSWORD_FILE_VAR, Target, URL_VAR};
use todobackend::store::todos::StoreError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const BIN: &str = env!("CARGO_BIN_EXE_todobackend");

/// The settings the service would read: the database reached as `host`,
/// the URL's query, the CA file if any.
fn target(db: &PgDatabase, host: &str, port: u16, query: &str, ca: Option<&Path>) -> Result<Target, String> {
    let url = format!("postgres://{APP_USER}@{host}:{port}/{}{query}", db.name);
    let env = |name: &str| match name {
        URL_VAR => Some(url.clone()),
        PASSWORD_FILE_VAR => Some(db.password_file.to_str().unwrap().to_owned()),
        CA_FILE_VAR => ca.map(|ca| ca.to_str().unwrap().to_owned()),
        _ => None,
    };
    Target::from_env(&env).map(Option::unwrap)
}

/// Why the connection was refused (a refused certificate is `Failed`, a
/// setting to fix; the server's own refusal of a binding is SQLSTATE 08P01,
/// which the service counts as the database being unavailable).
fn refusal(result: Result<Conn, StoreError>) -> String {
    match result {
        Ok(_) => panic!("connected"),
        Err(StoreError::Failed(why) | StoreError::Unavailable(why)) => why,
    }
}

fn pem_certificates(file: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(&std::fs::read(file).unwrap()).collect::<Result<Vec<_>, _>>().unwrap()
}

fn uses_tls(conn: &Conn) -> bool {
    conn.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).unwrap().get(0)
}

#[test]
fn verify_full_with_the_right_root_connects_over_tls_and_binds_the_authentication() {
    let server = shared();
    let db = server.database();
    // The CA file alone makes verify-full and channel_binding=require the defaults.
    let t = target(&db, "localhost", server.port, "", Some(&server.ca_file)).unwrap();
    let conn = Conn::connect(&t).unwrap();
    assert!(uses_tls(&conn));
    // channel_binding=require connected: the server offered and checked
    // SCRAM-SHA-256-PLUS (tokio-postgres refuses anything else before it
    // sends a proof; the relay tests below show the server's check).
    let t =
        target(&db, "localhost", server.port, "?sslmode=verify-full&channel_binding=require", Some(&server.ca_file));
    assert!(uses_tls(&Conn::connect(&t.unwrap()).unwrap()));
    // verify-ca checks the chain only: the address, which the certificate does not name, passes.
    let t = target(&db, "127.0.0.1", server.port, "?sslmode=verify-ca", Some(&server.ca_file)).unwrap();
    assert!(uses_tls(&Conn::connect(&t).unwrap()));
}

#[test]
fn another_root_is_refused_at_once_with_a_one_line_error() {
    let server = shared();
    let db = server.database();
    let dir = TempDir::new();
    let other = make_ca(dir.path(), "other");
    let refused = Conn::connect(&target(&db, "localhost", server.port, "", Some(&other)).unwrap());
    assert!(matches!(refused, Err(StoreError::Failed(_))), "a refused certificate is a setting to fix");
    let why = refusal(refused);
    assert!(why.contains("certificate was refused") && why.contains("UnknownIssuer"), "{why}");
    assert!(why.contains(&format!("{CA_FILE_VAR}={}", other.display())), "{why}");

    // The binary: exit 1, one line, no 60 s of waiting for a database that
    // is there, and neither the password nor the URL's secret in it.
    let started = Instant::now();
    let out = run(&["migrate"], &db, "localhost", server.port, Some(&other));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("certificate was refused") && stderr.contains(CA_FILE_VAR), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let password = std::fs::read_to_string(&db.password_file).unwrap();
    assert!(!stderr.contains(password.trim_end()));

    // An unreadable CA file stops the binary at start, naming the variable and the file.
    let out = run(&["migrate"], &db, "localhost", server.port, Some(&dir.join("absent.pem")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!((out.status.code(), stderr.lines().count()), (Some(1), 1), "{stderr}");
    assert!(stderr.contains(&format!("{CA_FILE_VAR}={}", dir.join("absent.pem").display())), "{stderr}");
}

#[test]
fn verify_full_refuses_a_host_the_certificate_does_not_name() {
    let server = shared();
    let db = server.database();
    // The certificate names localhost; 127.0.0.1 is the same server by another name.
    let t = target(&db, "127.0.0.1", server.port, "", Some(&server.ca_file)).unwrap();
    let why = refusal(Conn::connect(&t));
    assert!(why.contains("not valid for name") && why.contains("127.0.0.1"), "{why}");
}

#[test]
fn a_relay_with_a_certificate_of_its_own_is_refused_before_it_sees_a_byte() {
    let server = shared();
    let db = server.database();
    let dir = TempDir::new();
    make_ca(dir.path(), "attacker");
    issue(dir.path(), "attacker", "relay", "DNS:localhost");
    let relay = Relay::start(dir.path(), server);
    let t = target(&db, "localhost", relay.port, "", Some(&server.ca_file)).unwrap();
    let why = refusal(Conn::connect(&t));
    assert!(why.contains("UnknownIssuer"), "{why}");
    assert!(relay.seen().is_empty(), "the relay read {} bytes from the client", relay.seen().len());

    // The same relay against sslmode=require (TLS, nothing verified): the
    // relay reads the session, yet channel binding stops it at the server,
    // which finds another certificate's hash in the proof.
    let t = target(&db, "localhost", relay.port, "?sslmode=require&channel_binding=require", None).unwrap();
    let why = refusal(Conn::connect(&t));
    assert!(why.contains("SCRAM channel binding check failed"), "{why}");
    assert!(!relay.seen().is_empty());
    // Without the binding the relay takes the session over: what the two
    // defaults above prevent.
    let t = target(&db, "localhost", relay.port, "?sslmode=require&channel_binding=disable", None).unwrap();
    assert!(uses_tls(&Conn::connect(&t).unwrap()));
}

#[test]
fn a_relay_with_a_certificate_the_ca_signed_cannot_pass_the_authentication_on() {
    let server = shared();
    let db = server.database();
    let dir = TempDir::new();
    // A certificate for the right name from the right CA (misissued, or a
    // stolen key of another host's): verify-full accepts the relay.
    std::fs::copy(&server.ca_file, dir.join("ca.crt")).unwrap();
    std::fs::copy(server.ca_file.with_file_name("ca.key"), dir.join("ca.key")).unwrap();
    issue(dir.path(), "ca", "relay", "DNS:localhost");
    let relay = Relay::start(dir.path(), server);
    let t = target(&db, "localhost", relay.port, "", Some(&server.ca_file)).unwrap();
    let why = refusal(Conn::connect(&t));
    assert!(why.contains("SCRAM channel binding check failed"), "{why}");
    // The server's own word: it checked the binding and it did not match.
    common::wait_until("the server logs the failed binding", Duration::from_secs(10), || {
        server.log().contains("SCRAM channel binding check failed").then_some(())
    });
}

#[test]
fn a_server_that_asks_for_a_plain_password_never_gets_it() {
    let server = shared();
    let role = "plain_pw";
    let password = format!("plain-{}", std::process::id());
    server
        .superuser("postgres")
        .batch(&format!("DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
        .unwrap();
    server.allow_plain_password(role);
    let dir = TempDir::new();
    std::fs::write(dir.join("password"), format!("{password}\n")).unwrap();
    // A relay the CA vouches for, recording what the client sends it.
    std::fs::copy(&server.ca_file, dir.join("ca.crt")).unwrap();
    std::fs::copy(server.ca_file.with_file_name("ca.key"), dir.join("ca.key")).unwrap();
    issue(dir.path(), "ca", "relay", "DNS:localhost");
    let relay = Relay::start(dir.path(), server);
    let target_with = |query: &str| {
        let url = format!("postgres://{role}@localhost:{}/postgres{query}", relay.port);
        let env = |name: &str| match name {
            URL_VAR => Some(url.clone()),
            PASSWORD_FILE_VAR => Some(dir.join("password").to_str().unwrap().to_owned()),
            CA_FILE_VAR => Some(server.ca_file.to_str().unwrap().to_owned()),
            _ => None,
        };
        Target::from_env(&env).unwrap().unwrap()
    };
    let why = refusal(Conn::connect(&target_with("")));
    assert!(why.contains("server did not use channel binding"), "{why}");
    let seen = String::from_utf8_lossy(&relay.seen()).into_owned();
    assert!(seen.contains(role), "the relay did not see the startup message");
    assert!(!seen.contains(&password), "the password was sent");
    // The check can fail: without the binding, the password goes out.
    let conn = Conn::connect(&target_with("?channel_binding=disable")).unwrap();
    assert!(uses_tls(&conn));
    assert!(String::from_utf8_lossy(&relay.seen()).contains(&password));
}

/// Runs the binary with the database reached as `host`.
fn run(args: &[&str], db: &PgDatabase, host: &str, port: u16, ca: Option<&Path>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for var in ["TODOBACKEND_DB", URL_VAR, PASSWORD_FILE_VAR, CA_FILE_VAR] {
        cmd.env_remove(var);
    }
    cmd.env(URL_VAR, format!("postgres://{APP_USER}@{host}:{port}/{}", db.name))
        .env(PASSWORD_FILE_VAR, &db.password_file)
        .env("TODOBACKEND_DATABASE_WAIT", "30");
    if let Some(ca) = ca {
        cmd.env(CA_FILE_VAR, ca);
    }
    cmd.output().expect("run binary")
}

/// A relay that terminates the client's TLS with `<dir>/relay.crt`, opens
/// its own TLS to the real server (verified against the tests' CA), and
/// passes bytes both ways, recording what the client sent in the clear.
struct Relay {
    port: u16,
    seen: Arc<Mutex<Vec<u8>>>,
    _runtime: tokio::runtime::Runtime,
}

/// PostgreSQL's SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 4, 210, 22, 47];

impl Relay {
    fn start(dir: &Path, server: &PgServer) -> Relay {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = pem_certificates(&dir.join("relay.crt"));
        let key = PrivateKeyDer::from_pem_slice(&std::fs::read(dir.join("relay.key")).unwrap()).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap(),
        ));
        let mut roots = rustls::RootCertStore::empty();
        for root in pem_certificates(&server.ca_file) {
            roots.add(root).unwrap();
        }
        let connector = tokio_rustls::TlsConnector::from(Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        ));
        let upstream = SocketAddr::from(([127, 0, 0, 1], server.port));
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&seen);
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (acceptor, connector, recorded) = (acceptor.clone(), connector.clone(), Arc::clone(&recorded));
                tokio::spawn(async move {
                    let _ = relay_one(client, upstream, acceptor, connector, recorded).await;
                });
            }
        });
        Relay { port, seen, _runtime: runtime }
    }

    fn seen(&self) -> Vec<u8> {
        self.seen.lock().unwrap().clone()
    }
}

async fn relay_one(
    mut client: tokio::net::TcpStream,
    upstream: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
    recorded: Arc<Mutex<Vec<u8>>>,
) -> std::io::Result<()> {
    let mut request = [0u8; 8];
    client.read_exact(&mut request).await?;
    assert_eq!(request, SSL_REQUEST, "the client did not ask for TLS");
    client.write_all(b"S").await?;
    let client = acceptor.accept(client).await?;
    let mut server = tokio::net::TcpStream::connect(upstream).await?;
    server.write_all(&SSL_REQUEST).await?;
    let mut answer = [0u8; 1];
    server.read_exact(&mut answer).await?;
    let server = connector.connect(ServerName::try_from("localhost").unwrap(), server).await?;
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut server_read, mut server_write) = tokio::io::split(server);
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = client_read.read(&mut buf).await?;
            if n == 0 {
                return server_write.shutdown().await;
            }
            recorded.lock().unwrap().extend_from_slice(&buf[..n]);
            server_write.write_all(&buf[..n]).await?;
        }
    });
    tokio::io::copy(&mut server_read, &mut client_write).await?;
    client_write.shutdown().await?;
    up.await.map_err(std::io::Error::other)?
}
