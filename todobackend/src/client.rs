//! The HTTP client of `healthcheck` and `acceptance`: hyper's HTTP/1.1
//! client, one request per connection (`Connection: close`); hyper does the
//! framing (Content-Length, chunked, end of stream).
//! Plain HTTP only: the image has no CA certificates and the checks run
//! against the service directly, not through a TLS proxy.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;

use crate::dns;

/// Refuse to buffer more than this; the API's answers are far smaller.
const MAX_BODY: usize = 16 * 1024 * 1024;

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

/// Parses an `http://host[:port][/path]` URL with `http::Uri` (the URI
/// parser hyper itself uses); the refusals are this client's: https, other
/// schemes, user info, a missing host or a bad port.
pub fn parse_url(url: &str) -> Result<Url, String> {
    let url = url.trim();
    let usage = || format!("invalid URL '{url}': expected http://HOST[:PORT][/PATH]");
    let uri: hyper::Uri = url.parse().map_err(|_| usage())?;
    match uri.scheme_str() {
        Some(scheme) if scheme.eq_ignore_ascii_case("http") => {}
        Some(scheme) if scheme.eq_ignore_ascii_case("https") => {
            return Err(format!(
                "unsupported URL '{url}': https is not supported, this client speaks plain HTTP only; use http://"
            ));
        }
        Some(_) => return Err(format!("unsupported URL '{url}': only http:// URLs are supported")),
        None => return Err(usage()),
    }
    let authority = uri.authority().ok_or_else(usage)?;
    if authority.as_str().contains('@') {
        return Err(usage());
    }
    let host = authority.host();
    if host.is_empty() {
        return Err(format!("invalid URL '{url}': no host"));
    }
    // `Uri` keeps a port that is not a number as text (`port()` is None):
    // anything after the host is a port, and must be one.
    let port = match authority.port() {
        Some(port) => port.as_u16(),
        None if authority.as_str().len() > host.len() => return Err(format!("invalid port in URL '{url}'")),
        None => 80,
    };
    let path = match uri.path_and_query().map(|p| p.as_str()).unwrap_or("") {
        "" => "/".to_string(),
        query if query.starts_with('?') => format!("/{query}"),
        path => path.to_string(),
    };
    Ok(Url { authority: authority.as_str().to_string(), host: host.to_string(), port, path })
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

/// Sends one request and reads the whole response, all within `timeout`.
/// `headers` are sent as given; Host, Connection and Content-Length are
/// added here. The HTTP is hyper's client (one connection per request, on a
/// single-threaded runtime), not a second hand-written implementation.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Response, String> {
    let deadline = Instant::now() + timeout;
    let parsed = parse_url(url)?;
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{method} {url}: {what}: {e}");
    let body = Bytes::copy_from_slice(body.unwrap_or(b""));
    let mut req = hyper::Request::builder()
        .method(hyper::Method::from_bytes(method.as_bytes()).map_err(|e| fail("invalid method", &e))?)
        .uri(parsed.path.as_str())
        .header(hyper::header::HOST, parsed.authority.as_str())
        .header(hyper::header::CONNECTION, "close");
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("user-agent")) {
        req = req.header(hyper::header::USER_AGENT, "todobackend");
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        req = req.header(hyper::header::CONTENT_LENGTH, body.len());
    }
    let req = req.body(Full::new(body)).map_err(|e| fail("invalid request", &e))?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| fail("cannot start the async runtime", &e))?;
    runtime.block_on(async {
        // Resolving and connecting count against the deadline, as the
        // exchange does.
        let left = deadline.saturating_duration_since(Instant::now());
        let stream = match tokio::time::timeout(left, connect(&parsed)).await {
            Ok(connected) => connected?,
            Err(_) => return Err(format!("cannot connect to {}: timed out", parsed.authority)),
        };
        let exchange = async {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| fail("connection", &e))?;
            // Drives the connection; it ends with the response (Connection: close).
            tokio::spawn(conn);
            let response = sender.send_request(req).await.map_err(|e| fail("sending request", &e))?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| fail("reading response", &e))?
                .to_bytes()
                .to_vec();
            Ok(Response { status, headers, body })
        };
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(left, exchange).await.unwrap_or_else(|_| Err(fail("reading response", &"timed out")))
    })
}

/// Resolves the host (dns.rs: hosts file, then resolv.conf's nameservers)
/// and connects to its addresses in turn; the caller bounds the whole.
async fn connect(url: &Url) -> Result<tokio::net::TcpStream, String> {
    let addresses = dns::Resolver::from_system()?.lookup(&url.host).await?;
    let mut last = None;
    for ip in addresses {
        let address = std::net::SocketAddr::new(ip, url.port);
        match tokio::net::TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(format!("cannot connect to {address}: {e}")),
        }
    }
    Err(last.unwrap_or_else(|| format!("cannot connect to {}: no address", url.authority)))
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
}
