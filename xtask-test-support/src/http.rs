//! A minimal HTTP/1.1 client for the tests, and the network rule it keeps:
//! it talks to loopback only, or to a private network a test of this
//! process made and has not removed yet ([`admit_private_network`]).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }
}

/// A request without a body to a loopback URL (`http://127.0.0.1:PORT/...`).
pub fn http(url: &str, method: &str, headers: &[(&str, &str)]) -> std::io::Result<Response> {
    request(url, method, headers, None)
}

/// [`http`] with a JSON request body.
pub fn request(url: &str, method: &str, headers: &[(&str, &str)], body: Option<&str>) -> std::io::Result<Response> {
    assert_loopback(url);
    let rest = url.strip_prefix("http://").expect("http URL");
    let (authority, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let authority = authority.replace("localhost", "127.0.0.1");
    let addr: SocketAddr = authority.parse().expect("IP:port authority");
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    for (key, value) in headers {
        request.push_str(&format!("{key}: {value}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!("Content-Length: {}\r\nContent-Type: application/json\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or(""));
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw.windows(4).position(|window| window == b"\r\n\r\n").map_or(raw.len(), |at| at + 4);
    let (head, body) = raw.split_at(split);
    let head = String::from_utf8_lossy(head);
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad HTTP answer from {url}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(key, value)| key.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked"));
    // A long list is streamed in chunks: the body is their content, and one
    // without its last (empty) chunk was cut short.
    let body = if chunked {
        dechunk(body).ok_or_else(|| std::io::Error::other(format!("the chunked body from {url} ended early")))?
    } else {
        body.to_vec()
    };
    Ok(Response { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

/// The content of a chunked body (RFC 9112 §7.1), or None if it does not
/// end with its last chunk. A dozen lines here rather than hyper's client
/// (in the lock, async): this client is blocking on purpose, reads whole
/// answers under one timeout, and must see a body cut short as an error.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|pair| pair == b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

/// The private /24 networks (their first three bytes) that tests of this
/// process made and have not removed yet: a multi-node harness's bridge.
static PRIVATE_NETWORKS: Mutex<Vec<[u8; 3]>> = Mutex::new(Vec::new());

fn private_networks() -> std::sync::MutexGuard<'static, Vec<[u8; 3]>> {
    PRIVATE_NETWORKS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Let the tests talk to `network`.0/24, a network this process made (and
/// routed nowhere), until [`withdraw_private_network`].
pub fn admit_private_network(network: [u8; 3]) {
    private_networks().push(network);
}

/// The network is gone: addresses on it are refused again.
pub fn withdraw_private_network(network: [u8; 3]) {
    private_networks().retain(|live| *live != network);
}

/// Whether `host` is an address on a network [`admit_private_network`] let in.
pub fn is_admitted_private_address(host: &str) -> bool {
    let Ok(ip) = host.parse::<Ipv4Addr>() else { return false };
    let [a, b, c, _] = ip.octets();
    private_networks().contains(&[a, b, c])
}

/// Panics unless `url` points at a loopback address, or into a private
/// network a test of this process made: the hard network rule.
pub fn assert_loopback(url: &str) {
    let host = url.split("://").nth(1).unwrap_or(url).split(['/', ':']).next().unwrap_or("");
    assert!(
        host == "localhost" || host.starts_with("127.") || host == "[::1]" || is_admitted_private_address(host),
        "{url} is not a loopback address"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_chunked_body_is_its_chunks_and_one_cut_short_is_none() {
        assert_eq!(super::dechunk(b"3\r\n[1,\r\n2;x=y\r\n2]\r\n0\r\n\r\n").unwrap(), b"[1,2]");
        assert_eq!(super::dechunk(b"3\r\n[1,\r\n2\r\n2]\r\n"), None);
    }
}
