//! The resolver the static binary uses for every name it connects to (no
//! glibc NSS): hickory-resolver reading a resolv.conf and a hosts file, and
//! real UDP queries to a DNS responder this test runs on port 53 of a
//! loopback address of its own (resolv.conf names no port), answering as
//! Docker's embedded DNS would. Binding port 53 needs root, as CI runs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use todobackend::dns::Resolver;

/// A loopback address (127.0.0.0/8) no other test of this run uses.
fn loopback_address() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = std::process::id().wrapping_mul(16) + NEXT.fetch_add(1, Ordering::SeqCst);
    Ipv4Addr::new(127, 100 + (n % 100) as u8, ((n / 100) % 250) as u8, 2 + ((n / 25_000) % 250) as u8)
}

/// A UDP socket on port 53 of a fresh loopback address.
fn bind_53() -> UdpSocket {
    UdpSocket::bind(SocketAddr::new(loopback_address().into(), 53))
        .expect("bind a loopback address's port 53 (the resolver tests run as root, as CI does)")
}

/// Answers A and AAAA queries for `db` (through a CNAME, with compressed
/// names, after a stray answer to another query), NXDOMAIN for anything
/// else, until the test binary exits.
fn start_responder() -> SocketAddr {
    let socket = bind_53();
    let addr = socket.local_addr().unwrap();
    thread::spawn(move || {
        let mut buffer = [0u8; 512];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buffer) else { return };
            let query = &buffer[..n];
            let question = &query[12..];
            let name_end = question.iter().position(|b| *b == 0).unwrap();
            let name = &question[..name_end];
            let qtype = u16::from_be_bytes([question[name_end + 1], question[name_end + 2]]);
            let question = &question[..name_end + 5];
            // A stray response with another id comes first.
            let mut stray = query.to_vec();
            stray[0] ^= 0xff;
            stray[2] = 0x81;
            socket.send_to(&stray, peer).unwrap();
            let mut answer = query[..2].to_vec();
            if name != b"\x02db" {
                answer.extend_from_slice(&[0x81, 0x83, 0, 1, 0, 0, 0, 0, 0, 0]);
                answer.extend_from_slice(question);
                socket.send_to(&answer, peer).unwrap();
                continue;
            }
            answer.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0]);
            answer.extend_from_slice(question);
            // db CNAME tasks.db (rdata: "tasks" + pointer to "db" at 12).
            answer.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 8, 5]);
            answer.extend_from_slice(b"tasks");
            answer.extend_from_slice(&[0xc0, 12]);
            let cname_at = answer.len() - 8;
            let (rtype, rdata): (u16, Vec<u8>) = if qtype == 1 {
                (1, vec![10, 0, 9, 7])
            } else {
                (28, "fd00::7".parse::<std::net::Ipv6Addr>().unwrap().octets().to_vec())
            };
            answer.extend_from_slice(&[0xc0, cname_at as u8]);
            answer.extend_from_slice(&rtype.to_be_bytes());
            answer.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
            answer.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            answer.extend_from_slice(&rdata);
            socket.send_to(&answer, peer).unwrap();
        }
    });
    addr
}

fn lookup(resolver: &Resolver, host: &str) -> Result<Vec<IpAddr>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(resolver.lookup(host))
}

fn sorted(mut found: Vec<IpAddr>) -> Vec<IpAddr> {
    found.sort();
    found
}

#[test]
fn a_service_name_resolves_through_the_nameserver_after_its_search_domains() {
    let server = start_responder();
    // ndots:1: `db` has fewer dots, so db.swarm.internal is asked first
    // (NXDOMAIN here), then `db` itself, as a libc resolver does.
    let conf = format!("nameserver {}\nsearch swarm.internal\noptions ndots:1 timeout:1 attempts:1\n", server.ip());
    let resolver = Resolver::from_files(&conf, "").unwrap();
    let found = lookup(&resolver, "db").unwrap();
    // Docker answers A only for IPv4 services; the responder has both, and
    // the resolver asks AAAA only when there is no A (hickory's default).
    assert!(found.contains(&"10.0.9.7".parse().unwrap()), "{found:?}");
    let err = lookup(&resolver, "nosuch").unwrap_err();
    assert!(err.contains("nosuch"), "{err}");
}

#[test]
fn a_silent_nameserver_is_given_up_on_within_its_timeout_and_the_next_one_is_asked() {
    let silent = bind_53();
    let conf = format!("nameserver {}\noptions timeout:1 attempts:1\n", silent.local_addr().unwrap().ip());
    let resolver = Resolver::from_files(&conf, "").unwrap();
    let asked = Instant::now();
    let err = lookup(&resolver, "db").unwrap_err();
    assert!(err.starts_with("cannot resolve db"), "{err}");
    assert!(asked.elapsed() < Duration::from_secs(5), "gave up after {:?}", asked.elapsed());

    let server = start_responder();
    let conf = format!(
        "nameserver {}\nnameserver {}\noptions timeout:1 attempts:1\n",
        silent.local_addr().unwrap().ip(),
        server.ip()
    );
    let found = lookup(&Resolver::from_files(&conf, "").unwrap(), "db").unwrap();
    assert!(found.contains(&"10.0.9.7".parse().unwrap()), "{found:?}");
}

#[test]
fn the_hosts_file_comes_before_dns_and_literals_need_no_lookup() {
    let server = start_responder();
    let conf = format!("nameserver {}\n", server.ip());
    let resolver = Resolver::from_files(&conf, "192.0.2.5 db # pinned\n").unwrap();
    assert_eq!(lookup(&resolver, "db").unwrap(), vec!["192.0.2.5".parse::<IpAddr>().unwrap()]);
    assert_eq!(lookup(&resolver, "127.0.0.1").unwrap(), vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(sorted(lookup(&resolver, "::1").unwrap()), vec!["::1".parse::<IpAddr>().unwrap()]);
    assert!(lookup(&resolver, "localhost").unwrap().contains(&"127.0.0.1".parse::<IpAddr>().unwrap()));
}

/// Resolving counts against the 3 s connect timeout: with a nameserver that
/// never answers and a resolv.conf that would let the resolver try for 10 s,
/// `migrate` (waiting 0 s) gives up at the connect timeout, naming the host.
/// The binary runs in a mount namespace of its own, where a bind mount puts
/// this test's resolv.conf at /etc/resolv.conf.
#[test]
fn resolving_the_database_host_counts_against_the_connect_timeout() {
    let silent = bind_53();
    let dir = std::env::temp_dir().join(format!(
        "todobackend-resolv-{}-{}",
        std::process::id(),
        silent.local_addr().unwrap().ip()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("resolv.conf");
    std::fs::write(&conf, format!("nameserver {}\noptions timeout:5 attempts:2\n", silent.local_addr().unwrap().ip()))
        .unwrap();
    let script = r#"mount --bind "$1" /etc/resolv.conf && exec "$2" migrate"#;
    let started = Instant::now();
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(&conf)
        .arg(env!("CARGO_BIN_EXE_todobackend"))
        .env("TODOBACKEND_DATABASE_URL", "postgres://app@unresolvable-db:5432/x?sslmode=disable")
        .env("TODOBACKEND_DATABASE_WAIT", "0")
        .env_remove("TODOBACKEND_DATABASE_PASSWORD_FILE")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run unshare (util-linux)");
    let elapsed = started.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "cannot connect to postgres://app@unresolvable-db:5432/x: unresolvable-db was not resolved within 3s"
        ),
        "{stderr}"
    );
    assert!(elapsed < Duration::from_secs(6), "migrate gave up after {elapsed:?}");
}
