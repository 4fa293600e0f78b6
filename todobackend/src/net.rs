//! Listen addresses. Names a client connects to are resolved in dns.rs
//! (hickory-resolver), never by getaddrinfo, which cannot work in the
//! static binary's `FROM scratch` image (no glibc NSS modules there).

use std::net::{Ipv4Addr, SocketAddr};

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
    fn wildcard_listen_is_reached_on_loopback() {
        assert_eq!(local_target("0.0.0.0:8000".parse().unwrap()), "127.0.0.1:8000".parse().unwrap());
        assert_eq!(local_target("[::]:8000".parse().unwrap()), "127.0.0.1:8000".parse().unwrap());
        assert_eq!(local_target("10.1.2.3:80".parse().unwrap()), "10.1.2.3:80".parse().unwrap());
    }
}
