//! Name resolution for the database host without glibc's NSS. The release
//! binary is linked statically against glibc (`crt-static`), whose
//! `getaddrinfo` needs NSS modules that a `FROM scratch` image does not
//! have, so `db` would not resolve. (Building for `*-linux-musl` instead,
//! whose resolver is self-contained, is the other way; its standard library
//! cannot be installed on this project's machines.) What musl would do is
//! done here: `/etc/hosts` first, then an A and an AAAA query over UDP to the
//! nameservers of `/etc/resolv.conf` (in a Docker container, the engine's
//! embedded DNS at 127.0.0.11, which knows the swarm's service names).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

/// How long one nameserver gets to answer one query.
const QUERY_TIMEOUT: Duration = Duration::from_millis(1500);

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

/// The addresses of `host`: an IP literal as it is, else the hosts file,
/// else DNS (the names as given, then with each `search` domain).
pub fn resolve(host: &str) -> Result<Vec<IpAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let found = lookup_hosts(&hosts, host);
    if !found.is_empty() {
        return Ok(found);
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)]);
    }
    let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv = parse_resolv_conf(&conf);
    if resolv.nameservers.is_empty() {
        return Err(format!("cannot resolve {host}: not in /etc/hosts, and /etc/resolv.conf names no nameserver"));
    }
    let mut names = vec![host.trim_end_matches('.').to_owned()];
    if !host.ends_with('.') {
        names.extend(resolv.search.iter().map(|domain| format!("{}.{domain}", host)));
    }
    let mut last_error = String::new();
    for name in &names {
        match query_all(name, &resolv.nameservers) {
            Ok(found) if !found.is_empty() => return Ok(found),
            Ok(_) => last_error = "no such name".to_owned(),
            Err(e) => last_error = e,
        }
    }
    Err(format!("cannot resolve {host}: {last_error}"))
}

/// The addresses a hosts file gives `name` (case-insensitive), in file order.
pub fn lookup_hosts(hosts: &str, name: &str) -> Vec<IpAddr> {
    let mut found = Vec::new();
    for line in hosts.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let Some(ip) = fields.next().and_then(|ip| ip.parse::<IpAddr>().ok()) else { continue };
        if fields.any(|alias| alias.eq_ignore_ascii_case(name)) && !found.contains(&ip) {
            found.push(ip);
        }
    }
    found
}

/// What resolution needs from resolv.conf.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<SocketAddr>,
    pub search: Vec<String>,
}

pub fn parse_resolv_conf(text: &str) -> ResolvConf {
    let mut conf = ResolvConf::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some("nameserver") => {
                if let Some(ip) = fields.next().and_then(|ip| ip.parse::<IpAddr>().ok()) {
                    conf.nameservers.push(SocketAddr::new(ip, 53));
                }
            }
            // The last of `search` and `domain` wins, as in libc.
            Some("search") | Some("domain") => {
                conf.search = fields.map(|d| d.trim_end_matches('.').to_owned()).collect()
            }
            _ => {}
        }
    }
    conf
}

/// A and AAAA of `name`, asking each nameserver in turn until one answers.
pub fn query_all(name: &str, nameservers: &[SocketAddr]) -> Result<Vec<IpAddr>, String> {
    let mut last_error = "no nameserver".to_owned();
    for server in nameservers {
        let mut found = Vec::new();
        let mut answered = false;
        for qtype in [TYPE_A, TYPE_AAAA] {
            match query(name, qtype, *server) {
                Ok(addresses) => {
                    answered = true;
                    found.extend(addresses);
                }
                Err(e) => last_error = e,
            }
        }
        if answered {
            return Ok(found);
        }
    }
    Err(last_error)
}

/// One query of `qtype` for `name` to `server`; the addresses of the answer
/// (an empty list for a name that does not exist or has no such record).
pub fn query(name: &str, qtype: u16, server: SocketAddr) -> Result<Vec<IpAddr>, String> {
    let id = query_id();
    let packet = build_query(id, name, qtype)?;
    let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0".parse().unwrap() } else { "[::]:0".parse().unwrap() };
    let socket = UdpSocket::bind(bind).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    socket.connect(server).map_err(|e| format!("nameserver {server}: {e}"))?;
    socket.set_read_timeout(Some(QUERY_TIMEOUT)).map_err(|e| format!("nameserver {server}: {e}"))?;
    socket.send(&packet).map_err(|e| format!("nameserver {server}: {e}"))?;
    let mut buffer = [0u8; 1500];
    loop {
        let n = socket.recv(&mut buffer).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                format!("nameserver {server} did not answer within {QUERY_TIMEOUT:?}")
            }
            _ => format!("nameserver {server}: {e}"),
        })?;
        // An answer to some earlier query (or spoofed) is skipped.
        match parse_answer(&buffer[..n], id, qtype) {
            Err(AnswerError::NotOurs) => continue,
            Err(AnswerError::Bad(why)) => return Err(format!("nameserver {server}: {why}")),
            Ok(addresses) => return Ok(addresses),
        }
    }
}

fn query_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.finish() as u16
}

/// A standard recursive query with one question.
pub fn build_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, String> {
    let mut packet = Vec::with_capacity(64);
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&[0x01, 0x00]); // RD
    packet.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // 1 question
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("cannot resolve {name}: not a valid host name"));
        }
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.push(0);
    packet.extend_from_slice(&qtype.to_be_bytes());
    packet.extend_from_slice(&[0, 1]); // IN
    Ok(packet)
}

#[derive(Debug, PartialEq, Eq)]
pub enum AnswerError {
    /// Another id, or not a response: not the answer to this query.
    NotOurs,
    Bad(String),
}

/// The addresses of type `qtype` in the answer section of a response to
/// query `id` (CNAMEs are followed by the server: their targets' records
/// are in the same answer section).
pub fn parse_answer(packet: &[u8], id: u16, qtype: u16) -> Result<Vec<IpAddr>, AnswerError> {
    let bad = |why: &str| AnswerError::Bad(why.to_owned());
    if packet.len() < 12 {
        return Err(AnswerError::NotOurs);
    }
    let u16_at = |at: usize| -> Result<u16, AnswerError> {
        packet.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or_else(|| bad("truncated answer"))
    };
    if u16_at(0)? != id || packet[2] & 0x80 == 0 {
        return Err(AnswerError::NotOurs);
    }
    match packet[3] & 0x0f {
        0 => {}
        3 => return Ok(Vec::new()), // NXDOMAIN
        rcode => return Err(AnswerError::Bad(format!("answered with error code {rcode}"))),
    }
    let questions = u16_at(4)?;
    let answers = u16_at(6)?;
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(packet, at).ok_or_else(|| bad("malformed question"))? + 4;
    }
    let mut found = Vec::new();
    for _ in 0..answers {
        at = skip_name(packet, at).ok_or_else(|| bad("malformed answer"))?;
        let rtype = u16_at(at)?;
        let length = u16_at(at + 8)? as usize;
        let data = packet.get(at + 10..at + 10 + length).ok_or_else(|| bad("truncated answer"))?;
        at += 10 + length;
        match (rtype, data.len()) {
            (TYPE_A, 4) if qtype == TYPE_A => found.push(IpAddr::V4(Ipv4Addr::new(data[0], data[1], data[2], data[3]))),
            (TYPE_AAAA, 16) if qtype == TYPE_AAAA => {
                let octets: [u8; 16] = data.try_into().map_err(|_| bad("bad AAAA record"))?;
                found.push(IpAddr::V6(Ipv6Addr::from(octets)));
            }
            _ => {}
        }
    }
    Ok(found)
}

/// The offset just past a (possibly compressed) name at `at`.
fn skip_name(packet: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let length = *packet.get(at)?;
        match length {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return packet.get(at + 1).map(|_| at + 2),
            l => at += 1 + l as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_files_are_read_like_libc_reads_them() {
        let hosts = "127.0.0.1\tlocalhost\n# 10.0.0.9 db\n::1 localhost ip6-localhost\n10.0.1.5 db db.internal # the database\n10.0.1.6 DB\nnot-an-ip db\n";
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(lookup_hosts(hosts, "db"), vec![ip("10.0.1.5"), ip("10.0.1.6")]);
        assert_eq!(lookup_hosts(hosts, "db.internal"), vec![ip("10.0.1.5")]);
        assert_eq!(lookup_hosts(hosts, "localhost"), vec![ip("127.0.0.1"), ip("::1")]);
        assert!(lookup_hosts(hosts, "d").is_empty());
    }

    #[test]
    fn resolv_conf_gives_nameservers_and_search_domains() {
        let conf = parse_resolv_conf(
            "# Docker\nnameserver 127.0.0.11\nnameserver ::1 # second\nsearch a.example b.example.\noptions ndots:0\nnameserver bogus\n",
        );
        assert_eq!(conf.nameservers, vec!["127.0.0.11:53".parse().unwrap(), "[::1]:53".parse().unwrap()]);
        assert_eq!(conf.search, vec!["a.example", "b.example"]);
    }

    #[test]
    fn queries_are_standard_packets_and_bad_names_are_refused() {
        let packet = build_query(0x1234, "db.example.", TYPE_A).unwrap();
        assert_eq!(packet[..4], [0x12, 0x34, 0x01, 0x00]);
        assert_eq!(&packet[12..], b"\x02db\x07example\x00\x00\x01\x00\x01");
        assert!(build_query(1, "a..b", TYPE_A).is_err());
    }

    #[test]
    fn answers_from_another_query_are_not_ours_and_nxdomain_is_empty() {
        let mut response = build_query(7, "db", TYPE_A).unwrap();
        response[2] |= 0x80;
        assert_eq!(parse_answer(&response, 8, TYPE_A), Err(AnswerError::NotOurs));
        assert_eq!(parse_answer(&response, 7, TYPE_A), Ok(Vec::new()));
        response[3] = 3;
        assert_eq!(parse_answer(&response, 7, TYPE_A), Ok(Vec::new()));
        response[3] = 2;
        assert!(matches!(parse_answer(&response, 7, TYPE_A), Err(AnswerError::Bad(_))));
        assert_eq!(parse_answer(&response[..5], 7, TYPE_A), Err(AnswerError::NotOurs));
    }
}
