//! The resolver the static binary uses for the database host (no glibc
//! NSS): real UDP queries to a DNS responder on a loopback port that this
//! test runs, answering as Docker's embedded DNS would.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::thread;

use todobackend::pg::resolve;

/// Answers A and AAAA queries for `db` (through a CNAME, with compressed
/// names, after a stray answer to another query), NXDOMAIN for anything
/// else; stops after `queries` queries.
fn start_responder(queries: usize) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    thread::spawn(move || {
        let mut buffer = [0u8; 512];
        for _ in 0..queries {
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

#[test]
fn a_service_name_resolves_through_the_nameserver() {
    let server = start_responder(2);
    let found = resolve::query_all("db", &[server]).unwrap();
    let expected: Vec<IpAddr> = vec!["10.0.9.7".parse().unwrap(), "fd00::7".parse().unwrap()];
    assert_eq!(found, expected);
}

#[test]
fn an_unknown_name_has_no_addresses_and_a_silent_server_is_an_error() {
    let server = start_responder(2);
    assert_eq!(resolve::query_all("nosuch", &[server]).unwrap(), Vec::<IpAddr>::new());
    // Bound but never answering.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let err = resolve::query_all("db", &[silent.local_addr().unwrap()]).unwrap_err();
    assert!(err.contains("did not answer"), "{err}");
    // The next nameserver is asked when the first is silent.
    let server = start_responder(2);
    let found = resolve::query_all("db", &[silent.local_addr().unwrap(), server]).unwrap();
    assert_eq!(found.len(), 2);
}

#[test]
fn ip_literals_and_localhost_need_no_lookup() {
    assert_eq!(resolve::resolve("127.0.0.1").unwrap(), vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(resolve::resolve("::1").unwrap(), vec!["::1".parse::<IpAddr>().unwrap()]);
    assert!(resolve::resolve("localhost").unwrap().contains(&"127.0.0.1".parse::<IpAddr>().unwrap()));
}
