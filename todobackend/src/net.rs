//! Address parsing and name resolution that work in a static binary.
//!
//! A statically linked glibc cannot load its NSS modules in a `FROM scratch`
//! image, so `getaddrinfo` fails there for every name. IP literals never need
//! it, and `localhost` is mapped to 127.0.0.1 here; only other names go to
//! the system resolver, with an error that says what to use instead.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

/// Parses a listen address: `IP:PORT`, `[IPv6]:PORT` or `localhost:PORT`.
/// Names are not resolved: a server binds to addresses.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some(port) = s.strip_prefix("localhost:")
        && let Ok(port) = port.parse::<u16>()
    {
        return Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port));
    }
    Err(format!("invalid listen address '{s}': expected IP:PORT, e.g. 0.0.0.0:8000"))
}

/// Resolves `host` (an IP literal, `[IPv6]`, `localhost` or a name) with
/// `port` to socket addresses.
pub fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if bare.eq_ignore_ascii_case("localhost") {
        return Ok(vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)]);
    }
    match (bare, port).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                Err(format!("host '{bare}' resolved to no address; use an IP address such as 127.0.0.1"))
            } else {
                Ok(addrs)
            }
        }
        Err(e) => Err(format!("cannot resolve host '{bare}' ({e}); use an IP address such as 127.0.0.1")),
    }
}

/// Where a client on this machine reaches a server listening on `listen`:
/// the wildcard addresses become loopback, anything else is used as is.
pub fn local_target(listen: SocketAddr) -> SocketAddr {
    if listen.ip().is_unspecified() { SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port()) } else { listen }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen("0.0.0.0:8000").unwrap(), "0.0.0.0:8000".parse().unwrap());
        assert_eq!(parse_listen("[::]:80").unwrap(), "[::]:80".parse().unwrap());
        assert_eq!(parse_listen("localhost:9").unwrap(), "127.0.0.1:9".parse().unwrap());
        assert!(parse_listen("8000").is_err());
        assert!(parse_listen("example.com:80").is_err());
        assert!(parse_listen("0.0.0.0:99999").is_err());
    }

    #[test]
    fn resolving_literals_and_localhost_needs_no_resolver() {
        assert_eq!(resolve("127.0.0.1", 5).unwrap(), vec!["127.0.0.1:5".parse().unwrap()]);
        assert_eq!(resolve("[::1]", 5).unwrap(), vec!["[::1]:5".parse().unwrap()]);
        assert_eq!(resolve("LOCALHOST", 5).unwrap(), vec!["127.0.0.1:5".parse().unwrap()]);
    }

    #[test]
    fn wildcard_listen_is_reached_on_loopback() {
        assert_eq!(local_target("0.0.0.0:8000".parse().unwrap()), "127.0.0.1:8000".parse().unwrap());
        assert_eq!(local_target("[::]:8000".parse().unwrap()), "127.0.0.1:8000".parse().unwrap());
        assert_eq!(local_target("10.1.2.3:80".parse().unwrap()), "10.1.2.3:80".parse().unwrap());
    }
}
