//! A minimal HTTP/1.1 client over `std::net::TcpStream`, for `healthcheck`
//! and `acceptance`: one request per connection (`Connection: close`),
//! bodies framed by Content-Length, chunked encoding or end of stream.
//! Plain HTTP only: the image has no CA certificates and the checks run
//! against the service directly, not through a TLS proxy.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::net;

/// Refuse to buffer more than this; the API's answers are far smaller.
const MAX_BODY: usize = 16 * 1024 * 1024;
const MAX_HEADER_LINE: usize = 16 * 1024;
const MAX_HEADERS: usize = 200;

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Host and optional port as written (what the Host header carries).
    pub authority: String,
    /// Host without port; IPv6 keeps its brackets.
    pub host: String,
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
}

/// Parses an `http://host[:port][/path]` URL.
pub fn parse_url(url: &str) -> Result<Url, String> {
    let url = url.trim();
    let (scheme, rest) =
        url.split_once("://").ok_or_else(|| format!("invalid URL '{url}': expected http://HOST[:PORT][/PATH]"))?;
    if scheme.eq_ignore_ascii_case("https") {
        return Err(format!(
            "unsupported URL '{url}': https is not supported, this client speaks plain HTTP only; use http://"
        ));
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(format!("unsupported URL '{url}': only http:// URLs are supported"));
    }
    let rest = rest.split('#').next().unwrap_or("");
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("invalid URL '{url}': expected http://HOST[:PORT][/PATH]"));
    }
    // The port separator is the last ':' outside IPv6 brackets.
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => {
            let port = authority[i + 1..].parse::<u16>().map_err(|_| format!("invalid port in URL '{url}'"))?;
            (&authority[..i], port)
        }
        _ => (authority, 80),
    };
    if host.is_empty() {
        return Err(format!("invalid URL '{url}': no host"));
    }
    Ok(Url { authority: authority.to_string(), host: host.to_string(), port, path })
}

/// An HTTP response, fully read.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("body is not JSON ({e}): {}", self.text()))
    }
}

/// Reads from the socket, but never past the overall deadline.
struct DeadlineStream {
    stream: TcpStream,
    deadline: Instant,
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

/// Sends one request and reads the whole response, all within `timeout`.
/// `headers` are sent as given; Host, Connection and Content-Length are
/// added here.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Response, String> {
    let deadline = Instant::now() + timeout;
    let parsed = parse_url(url)?;
    let stream = connect(&parsed, deadline)?;
    let fail = |what: &str, e: io::Error| format!("{method} {url}: {what}: {e}");

    let mut head = format!("{method} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", parsed.path, parsed.authority);
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("user-agent")) {
        head.push_str("User-Agent: todobackend\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or(b"");
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    stream.set_write_timeout(Some(left)).map_err(|e| fail("socket", e))?;
    let mut writer = &stream;
    writer
        .write_all(head.as_bytes())
        .and_then(|()| writer.write_all(body))
        .and_then(|()| writer.flush())
        .map_err(|e| fail("sending request", e))?;

    let mut reader = BufReader::new(DeadlineStream { stream, deadline });
    read_response(&mut reader, method == "HEAD").map_err(|e| fail("reading response", e))
}

fn connect(url: &Url, deadline: Instant) -> Result<TcpStream, String> {
    let addrs = net::resolve(&url.host, url.port)?;
    let mut last = None;
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(format!("cannot connect to {addr}: {e}")),
        }
    }
    Err(last.unwrap_or_else(|| format!("cannot connect to {}: timed out", url.authority)))
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    let n = r.take(MAX_HEADER_LINE as u64).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(bad("connection closed early"));
    }
    if line.last() != Some(&b'\n') {
        return Err(bad("line too long or truncated"));
    }
    let text = String::from_utf8_lossy(&line);
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

/// Parses a response from `r`; `head_only` for answers to HEAD.
pub fn read_response(r: &mut impl BufRead, head_only: bool) -> io::Result<Response> {
    loop {
        let status_line = read_line(r)?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        let status = parts
            .next()
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|_| version.starts_with("HTTP/1."))
            .ok_or_else(|| bad(format!("not an HTTP response: {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = read_line(r)?;
            if line.is_empty() {
                break;
            }
            if headers.len() >= MAX_HEADERS {
                return Err(bad("too many headers"));
            }
            let (name, value) = line.split_once(':').ok_or_else(|| bad(format!("malformed header line: {line:?}")))?;
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        // An interim answer (100 Continue) is followed by the real one.
        if (100..200).contains(&status) {
            continue;
        }
        let mut response = Response { status, headers, body: Vec::new() };
        if head_only || status == 204 || status == 304 {
            return Ok(response);
        }
        let chunked =
            response.header("Transfer-Encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        response.body = if chunked {
            read_chunked(r)?
        } else if let Some(len) = response.header("Content-Length") {
            let len: usize = len.parse().map_err(|_| bad("invalid Content-Length"))?;
            if len > MAX_BODY {
                return Err(bad("response body too large"));
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body)?;
            body
        } else {
            let mut body = Vec::new();
            r.take(MAX_BODY as u64 + 1).read_to_end(&mut body)?;
            if body.len() > MAX_BODY {
                return Err(bad("response body too large"));
            }
            body
        };
        return Ok(response);
    }
}

fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(r)?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| bad(format!("invalid chunk size {size_text:?}")))?;
        if size == 0 {
            // Trailer fields, if any, end with an empty line.
            while !read_line(r)?.is_empty() {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(bad("response body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        if !read_line(r)?.is_empty() {
            return Err(bad("chunk not followed by CRLF"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://127.0.0.1:8000").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1:8000", "127.0.0.1", 8000, "/")
        );
        let u = parse_url("HTTP://localhost/todos/3?x=1#frag").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("localhost", 80, "/todos/3?x=1"));
        let u = parse_url("http://[::1]:9/a").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("[::1]", 9, "/a"));
        let u = parse_url("http://[::1]").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("[::1]", 80));
        let u = parse_url("http://h?q").unwrap();
        assert_eq!(u.path, "/?q");

        assert!(parse_url("https://example.com").unwrap_err().contains("https is not supported"));
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("127.0.0.1:8000").is_err());
        assert!(parse_url("http://").is_err());
        assert!(parse_url("http://h:notaport/").is_err());
        assert!(parse_url("http://user@h/").is_err());
    }

    #[test]
    fn content_length_response() {
        let raw = b"HTTP/1.1 201 Created\r\nLocation: http://x/todos/1\r\nContent-Length: 5\r\n\r\nhelloEXTRA";
        let r = read_response(&mut &raw[..], false).unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.header("location"), Some("http://x/todos/1"));
        assert_eq!(r.body, b"hello");
    }

    #[test]
    fn chunked_response_after_continue() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-Trailer: y\r\n\r\n";
        let r = read_response(&mut &raw[..], false).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "abc0123456789");
    }

    #[test]
    fn body_until_close_and_no_body_cases() {
        let raw = b"HTTP/1.0 200 OK\r\n\r\nall of it";
        assert_eq!(read_response(&mut &raw[..], false).unwrap().text(), "all of it");
        let raw = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n";
        assert!(read_response(&mut &raw[..], false).unwrap().body.is_empty());
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
        assert!(read_response(&mut &raw[..], true).unwrap().body.is_empty());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for raw in [
            &b""[..],
            b"hello\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            assert!(read_response(&mut &raw[..], false).is_err(), "{:?}", String::from_utf8_lossy(raw));
        }
    }
}
