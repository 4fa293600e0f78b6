//! The Todo-Backend HTTP API, independent of the HTTP server library: a
//! request comes in as method, target, headers and body; a response goes out
//! as status, headers and body. `server.rs` does the wire part.

use std::borrow::Cow;
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::http::static_files;
use crate::store::todos::{Keyed, NewTodo, StoreError, Todo, TodoPatch, Todos};

/// Headers sent with every answer so that browser front-ends on other
/// origins (the todobackend.com spec runner and clients) may call the API.
pub const CORS_HEADERS: &[(&str, &str)] = &[
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, POST, PATCH, DELETE, OPTIONS"),
    ("Access-Control-Allow-Headers", "Content-Type, Accept, Authorization, X-Requested-With, Idempotency-Key"),
    // Lets browser code read the Location of a created todo, and whether a
    // keyed POST was answered again.
    ("Access-Control-Expose-Headers", "Location, Idempotent-Replayed"),
    ("Access-Control-Max-Age", "86400"),
];

/// A request as the API sees it.
pub struct ApiRequest<'a> {
    pub method: &'a str,
    /// Path and query, as on the request line.
    pub target: &'a str,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

impl ApiRequest<'_> {
    /// The first header of that name (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A response ready to be written. The CORS headers (`CORS_HEADERS`) go
/// with it when `cors` is set: the server writes them from values it built
/// once, not from strings made per response.
#[derive(Debug)]
pub struct ApiResponse {
    pub status: u16,
    pub cors: bool,
    /// Headers besides the CORS ones; names as written (title case).
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    pub body: Vec<u8>,
    /// The database failed while answering (counted in `/metrics`).
    pub database_failed: bool,
}

/// The content type of every JSON answer.
pub const JSON: &str = "application/json";

impl ApiResponse {
    fn new(status: u16, content_type: Option<&'static str>, body: Vec<u8>) -> Self {
        let mut headers = Vec::with_capacity(2);
        if let Some(ct) = content_type {
            headers.push(("Content-Type", Cow::Borrowed(ct)));
        }
        ApiResponse { status, cors: true, headers, body, database_failed: false }
    }

    fn json(status: u16, value: &Value) -> Self {
        Self::new(status, Some(JSON), value.to_string().into_bytes())
    }

    /// A todo, serialized by `write_todo` (no `Value` tree built first).
    fn todo(status: u16, todo: &Todo, base: &str) -> Self {
        let mut body = Vec::with_capacity(96 + todo.title.len() + base.len());
        write_todo(&mut body, todo, base);
        Self::new(status, Some(JSON), body)
    }

    pub fn error(status: u16, message: &str) -> Self {
        Self::json(status, &json!({ "error": message }))
    }

    fn no_content() -> Self {
        Self::new(204, None, Vec::new())
    }

    fn with_header(mut self, name: &'static str, value: impl Into<Cow<'static, str>>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The value of the first header of that name (CORS headers included).
    pub fn header(&self, name: &str) -> Option<&str> {
        let cors = if self.cors { CORS_HEADERS } else { &[] };
        let own = self.headers.iter().map(|(n, v)| (*n, v.as_ref()));
        cors.iter().copied().chain(own).find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }
}

/// What the handlers need besides the request.
pub struct Context<'a> {
    pub conn: &'a dyn Todos,
    pub static_root: &'a Path,
    /// Host to put in URLs when the request names none (HTTP/1.0 without Host).
    pub fallback_host: &'a str,
}

// ---------------------------------------------------------------------------
// URLs

/// True for what may appear in a Host header: a name or IP (IPv6 in
/// brackets) with an optional port. Anything else is ignored rather than
/// echoed into URLs and Location headers.
fn is_valid_host(host: &str) -> bool {
    !host.is_empty() && host.len() <= 255 && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
}

/// RFC 9112 §3.2: a server answers 400 to an HTTP/1.1 request without a
/// Host header, and to any request with several Host headers or one whose
/// value is not `host[:port]` (RFC 3986's uri-host, empty allowed). HTTP/1.0
/// may omit it. Checked before routing, on every path: a request that two
/// hops would route by two different hosts is refused, not guessed at.
/// `hosts` are the values of every Host header, in order.
pub fn host_problem(http_1_1_or_later: bool, hosts: &[&[u8]]) -> Option<String> {
    match hosts {
        [] if http_1_1_or_later => Some("an HTTP/1.1 request must carry a Host header (RFC 9112 section 3.2)".into()),
        [] => None,
        [host] if is_host_value(host) => None,
        [_] => Some("the Host header is not a host name or address with an optional port".into()),
        _ => Some(format!("{} Host headers in one request; send exactly one (RFC 9112 section 3.2)", hosts.len())),
    }
}

/// RFC 3986 `uri-host [":" port]`: an IP literal in brackets, or a reg-name
/// (which covers IPv4), then digits after a colon.
fn is_host_value(value: &[u8]) -> bool {
    let reg_name = |b: &u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(b);
    let (host_ok, rest) = match value.strip_prefix(b"[") {
        Some(literal) => match literal.iter().position(|&b| b == b']') {
            Some(end) => {
                let inside = &literal[..end];
                (!inside.is_empty() && inside.iter().all(|b| reg_name(b) || *b == b':'), &literal[end + 1..])
            }
            None => (false, &[][..]),
        },
        None => {
            let end = value.iter().position(|&b| b == b':').unwrap_or(value.len());
            (value[..end].iter().all(reg_name), &value[end..])
        }
    };
    host_ok && (rest.is_empty() || rest.strip_prefix(b":").is_some_and(|port| port.iter().all(u8::is_ascii_digit)))
}

/// First entry of a possibly comma-separated forwarded header (proxies
/// append, so the first one is what the client used).
fn first_forwarded(value: Option<&str>) -> Option<&str> {
    value.and_then(|v| v.split(',').next()).map(str::trim).filter(|v| !v.is_empty())
}

/// `scheme://host` that clients used to reach us: `X-Forwarded-Proto` and
/// `X-Forwarded-Host` (set by a reverse proxy) win over the `Host` header;
/// the scheme is `http` unless a proxy says `https`.
pub fn base_url(
    host: Option<&str>,
    forwarded_proto: Option<&str>,
    forwarded_host: Option<&str>,
    fallback_host: &str,
) -> String {
    let scheme = match first_forwarded(forwarded_proto).map(str::to_ascii_lowercase) {
        Some(p) if p == "https" => "https",
        _ => "http",
    };
    let host = first_forwarded(forwarded_host)
        .filter(|h| is_valid_host(h))
        .or_else(|| host.map(str::trim).filter(|h| is_valid_host(h)))
        .unwrap_or(fallback_host);
    let mut url = String::with_capacity(scheme.len() + 3 + host.len() + 24);
    url.push_str(scheme);
    url.push_str("://");
    url.push_str(host);
    url
}

/// The base URL (`base_url`) of a request.
pub fn request_base_url(req: &ApiRequest<'_>, fallback_host: &str) -> String {
    base_url(req.header("Host"), req.header("X-Forwarded-Proto"), req.header("X-Forwarded-Host"), fallback_host)
}

/// Appends a todo as the API shows it, a JSON object with the keys in
/// serde_json's (sorted) order as before:
/// `{"completed":..,"id":..,"order":..,"title":..,"url":"{base}/todos/{id}"}`.
/// Written directly, with serde_json escaping the title: a GET of one todo
/// spent more on building and printing a `Value` than on its query.
pub fn write_todo(out: &mut Vec<u8>, todo: &Todo, base: &str) {
    out.extend_from_slice(if todo.completed {
        b"{\"completed\":true,\"id\":"
    } else {
        b"{\"completed\":false,\"id\":"
    });
    push_int(out, todo.id);
    out.extend_from_slice(b",\"order\":");
    match todo.order {
        Some(order) => push_int(out, order),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"title\":");
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &todo.title);
    out.extend_from_slice(b",\"url\":");
    let _ = serde_json::to_writer(&mut *out, base);
    // The base's closing quote gives way to the rest of the URL (digits).
    out.pop();
    out.extend_from_slice(b"/todos/");
    push_int(out, todo.id);
    out.extend_from_slice(b"\"}");
}

/// Appends an integer's decimal digits, without going through `fmt`.
fn push_int(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
}

/// The full list's JSON array, written piece by piece as the database
/// yields todos: `start`, then `push` for each (a comma before all but the
/// first), then `finish`. The bytes so far are taken with `take`, so that
/// the list is sent in chunks and never held whole.
pub struct ListWriter {
    base: String,
    buf: Vec<u8>,
    first: bool,
}

impl ListWriter {
    pub fn start(base: String, capacity: usize) -> ListWriter {
        let mut buf = Vec::with_capacity(capacity);
        buf.push(b'[');
        ListWriter { base, buf, first: true }
    }

    pub fn push(&mut self, todo: &Todo) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        write_todo(&mut self.buf, todo, &self.base);
    }

    /// Bytes written since the last `take`.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn take(&mut self) -> Vec<u8> {
        let capacity = self.buf.capacity();
        std::mem::replace(&mut self.buf, Vec::with_capacity(capacity))
    }

    /// Closes the array: the last bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.push(b']');
        self.buf
    }
}

/// True when the request is for the whole list (GET or HEAD /todos), which
/// the server streams from the database (`ListWriter`) instead of asking
/// `handle`.
pub fn is_full_list(method: &str, target: &str) -> bool {
    matches!(method, "GET" | "HEAD") && matches!(route(target), Route::Todos)
}

/// The answer that goes with a streamed list: status and headers; the body
/// comes from a `ListWriter`.
pub fn list_head() -> ApiResponse {
    ApiResponse::new(200, Some(JSON), Vec::new())
}

// ---------------------------------------------------------------------------
// Request bodies

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("request body must be a JSON object".into()),
        Err(e) => Err(format!("request body is not valid JSON: {e}")),
    }
}

/// The rule for every text the API stores, the same on both backends: no
/// U+0000 (NUL). SQLite would store it and PostgreSQL cannot (its `text`
/// refuses the character), so a todo must not be accepted by one backend and
/// fail on the other, nor block `move-to-postgres` later. A JSON string is
/// already valid UTF-8 (serde_json refuses a lone surrogate), so NUL is the
/// one character left to refuse.
pub fn check_text(field: &str, text: &str) -> Result<(), String> {
    match text.find('\0') {
        Some(at) => Err(format!(
            "{field} must not contain the character U+0000 (NUL), found at byte {at}; remove it and send again"
        )),
        None => Ok(()),
    }
}

fn parse_title(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) if s.trim().is_empty() => Err("title must not be empty".into()),
        Value::String(s) => check_text("title", s).map(|()| s.clone()),
        _ => Err("title must be a string".into()),
    }
}

fn parse_completed(value: &Value) -> Result<bool, String> {
    value.as_bool().ok_or_else(|| "completed must be true or false".to_string())
}

fn parse_order(value: &Value) -> Result<Option<i64>, String> {
    match value {
        Value::Null => Ok(None),
        v => v.as_i64().map(Some).ok_or_else(|| "order must be an integer or null".to_string()),
    }
}

/// Validates a POST body: a JSON object with a non-empty string `title`,
/// optional boolean `completed` and optional integer (or null) `order`.
/// Unknown fields are ignored.
pub fn parse_new_todo(body: &[u8]) -> Result<NewTodo, String> {
    let obj = parse_object(body)?;
    let title = match obj.get("title") {
        None => return Err("title is required".into()),
        Some(v) => parse_title(v)?,
    };
    let completed = obj.get("completed").map(parse_completed).transpose()?.unwrap_or(false);
    let order = obj.get("order").map(parse_order).transpose()?.flatten();
    Ok(NewTodo { title, completed, order })
}

/// Validates a PATCH body: a JSON object whose `title`, `completed` and
/// `order`, where present, follow the same rules as on POST.
pub fn parse_patch(body: &[u8]) -> Result<TodoPatch, String> {
    let obj = parse_object(body)?;
    Ok(TodoPatch {
        title: obj.get("title").map(parse_title).transpose()?,
        completed: obj.get("completed").map(parse_completed).transpose()?,
        order: obj.get("order").map(parse_order).transpose()?,
    })
}

/// The request header that makes a POST /todos store at most one todo
/// (draft-ietf-httpapi-idempotency-key-header; Stripe's API).
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// Set to `true` on the answer to a keyed POST that created nothing, being
/// the answer of the first POST with that key (Stripe's name).
pub const REPLAYED: &str = "Idempotent-Replayed";

/// The longest key accepted, in characters (bytes: they are ASCII).
pub const MAX_KEY_LEN: usize = 255;

/// The request's `Idempotency-Key`, if it sent one: exactly one header of
/// 1 to 255 visible ASCII characters (0x21 to 0x7E: no space, no control
/// character, nothing beyond ASCII), taken as it is, byte for byte (the
/// draft's quoted form `"abc"` is the key `"abc"`, quotes included).
pub fn idempotency_key(headers: &[(String, String)]) -> Result<Option<&str>, String> {
    let mut values = headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(IDEMPOTENCY_KEY)).map(|(_, v)| v.as_str());
    let Some(key) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(format!("{IDEMPOTENCY_KEY} must be sent once, not in several headers"));
    }
    let visible = key.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if key.is_empty() || key.len() > MAX_KEY_LEN || !visible {
        return Err(format!(
            "{IDEMPOTENCY_KEY} must be 1 to {MAX_KEY_LEN} visible ASCII characters (no space or control character), \
             got {} byte(s){}",
            key.len(),
            if visible { "" } else { " with others" }
        ));
    }
    Ok(Some(key))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

// ---------------------------------------------------------------------------
// Routing

enum Route<'a> {
    Root,
    Todos,
    Todo(&'a str),
    Static(&'a str),
    NotFound,
}

fn route(target: &str) -> Route<'_> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    // `/todos/` and `/todos` are the same resource.
    let path = if path.len() > 1 { path.strip_suffix('/').unwrap_or(path) } else { path };
    match path {
        "/" => Route::Root,
        "/todos" => Route::Todos,
        _ => {
            if let Some(id) = path.strip_prefix("/todos/")
                && !id.contains('/')
            {
                return Route::Todo(id);
            }
            if let Some(file) = path.strip_prefix("/static/") {
                return Route::Static(file);
            }
            Route::NotFound
        }
    }
}

fn method_not_allowed(method: &str, allowed: &'static str) -> ApiResponse {
    ApiResponse::error(405, &format!("method {method} is not allowed here")).with_header("Allow", allowed)
}

/// The answer when the database failed: 503 with Retry-After when it is
/// away, else 500; the details go to the log.
pub fn db_error(e: StoreError) -> ApiResponse {
    // The details go to the log, not to the client.
    tracing::error!(error = %e, "database");
    let mut response = match e {
        // Away (stopped, restarting, unreachable): the client may retry.
        StoreError::Unavailable(_) => ApiResponse::error(503, "database unavailable").with_header("Retry-After", "1"),
        StoreError::Failed(_) => ApiResponse::error(500, "internal database error"),
    };
    response.database_failed = true;
    response
}

/// Answers one request.
pub fn handle(req: &ApiRequest<'_>, ctx: &Context<'_>) -> ApiResponse {
    // Methods are case-sensitive tokens, but this API always took any case.
    let upper;
    let method = if req.method.bytes().any(|b| b.is_ascii_lowercase()) {
        upper = req.method.to_ascii_uppercase();
        upper.as_str()
    } else {
        req.method
    };
    let route = route(req.target);
    if method == "OPTIONS" {
        // CORS preflight (or a plain OPTIONS): answered on every path.
        return ApiResponse::no_content().with_header("Allow", "GET, POST, PATCH, DELETE, OPTIONS");
    }
    // HEAD is GET without a body; the server library drops the body.
    let method = if method == "HEAD" { "GET" } else { method };
    match route {
        Route::Root => match method {
            "GET" => {
                let base = request_base_url(req, ctx.fallback_host);
                ApiResponse::json(200, &json!({ "todos": format!("{base}/todos") }))
            }
            m => method_not_allowed(m, "GET, HEAD, OPTIONS"),
        },
        Route::Todos => match method {
            // The server streams the list (`is_full_list`); this builds it
            // whole, for callers of `handle` without a stream.
            "GET" => {
                let mut list = ListWriter::start(request_base_url(req, ctx.fallback_host), 1024);
                match ctx.conn.for_each(&mut |todo| {
                    list.push(&todo);
                    true
                }) {
                    Ok(()) => ApiResponse::new(200, Some(JSON), list.finish()),
                    Err(e) => db_error(e),
                }
            }
            "POST" => {
                let created = |todo: &Todo| {
                    let base = request_base_url(req, ctx.fallback_host);
                    let location = format!("{base}/todos/{}", todo.id);
                    ApiResponse::todo(201, todo, &base).with_header("Location", location)
                };
                let key = match idempotency_key(req.headers) {
                    Ok(key) => key,
                    Err(msg) => return ApiResponse::error(400, &msg),
                };
                let new = match parse_new_todo(req.body) {
                    Ok(new) => new,
                    Err(msg) => return ApiResponse::error(400, &msg),
                };
                let Some(key) = key else {
                    return ctx.conn.create(&new).map_or_else(db_error, |todo| created(&todo));
                };
                match ctx.conn.create_once(key, &new, unix_now()) {
                    Ok(Keyed::Created(todo)) => created(&todo),
                    Ok(Keyed::Replayed(todo)) => created(&todo).with_header(REPLAYED, "true"),
                    Ok(Keyed::OtherRequest) => ApiResponse::error(
                        422,
                        &format!(
                            "this {IDEMPOTENCY_KEY} was already used for a POST with another title, completed or order; \
                             use a new key for a new todo"
                        ),
                    ),
                    Err(e) => db_error(e),
                }
            }
            "DELETE" => match ctx.conn.delete_all() {
                Ok(()) => ApiResponse::no_content(),
                Err(e) => db_error(e),
            },
            m => method_not_allowed(m, "GET, HEAD, POST, DELETE, OPTIONS"),
        },
        Route::Todo(raw_id) => {
            let allowed = "GET, HEAD, PATCH, DELETE, OPTIONS";
            if !matches!(method, "GET" | "PATCH" | "DELETE") {
                return method_not_allowed(method, allowed);
            }
            let not_found = || ApiResponse::error(404, &format!("no todo with id {raw_id}"));
            let Ok(id) = raw_id.parse::<i64>() else {
                return not_found();
            };
            let result = match method {
                "GET" => ctx.conn.get(id),
                "PATCH" => match parse_patch(req.body) {
                    Err(msg) => return ApiResponse::error(400, &msg),
                    Ok(patch) => ctx.conn.update(id, &patch),
                },
                _ => {
                    return match ctx.conn.delete(id) {
                        Ok(true) => ApiResponse::no_content(),
                        Ok(false) => not_found(),
                        Err(e) => db_error(e),
                    };
                }
            };
            match result {
                Ok(Some(todo)) => ApiResponse::todo(200, &todo, &request_base_url(req, ctx.fallback_host)),
                Ok(None) => not_found(),
                Err(e) => db_error(e),
            }
        }
        Route::Static(file) => match method {
            "GET" => match static_files::read(ctx.static_root, file) {
                Some((content_type, data)) => ApiResponse::new(200, Some(content_type), data),
                None => ApiResponse::error(404, &format!("no static file {file}")),
            },
            m => method_not_allowed(m, "GET, HEAD, OPTIONS"),
        },
        Route::NotFound => ApiResponse::error(404, "not found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_uses_host_header() {
        assert_eq!(base_url(Some("example.com:8080"), None, None, "fb"), "http://example.com:8080");
        assert_eq!(base_url(Some("[::1]:8000"), None, None, "fb"), "http://[::1]:8000");
    }

    #[test]
    fn base_url_honours_forwarded_headers() {
        assert_eq!(
            base_url(Some("internal:8000"), Some("https"), Some("todo.example.org"), "fb"),
            "https://todo.example.org"
        );
        // Proxies append: the first entry is the client-facing one.
        assert_eq!(base_url(Some("h"), Some("HTTPS, http"), Some("a.example, b.internal"), "fb"), "https://a.example");
        assert_eq!(base_url(Some("h"), Some("http"), None, "fb"), "http://h");
    }

    #[test]
    fn base_url_ignores_bad_or_missing_values() {
        assert_eq!(base_url(None, None, None, "127.0.0.1:8000"), "http://127.0.0.1:8000");
        assert_eq!(base_url(Some(""), None, None, "fb"), "http://fb");
        assert_eq!(base_url(Some("evil.com/x?y"), None, None, "fb"), "http://fb");
        assert_eq!(base_url(Some("good"), Some("gopher"), Some("bad host"), "fb"), "http://good");
    }

    #[test]
    fn host_header_rules() {
        for (http_1_1, hosts) in [
            (true, &[&b"example.com"[..]][..]),
            (true, &[b"example.com:8080"]),
            (true, &[b"127.0.0.1:8000"]),
            (true, &[b"[::1]:8000"]),
            (true, &[b"[::1]"]),
            (true, &[b"my_host.internal"]),
            (true, &[b""]),
            (false, &[]),
            (false, &[b"h"]),
        ] {
            assert_eq!(host_problem(http_1_1, hosts), None, "{hosts:?}");
        }
        let missing = host_problem(true, &[]).unwrap();
        assert!(missing.contains("must carry a Host header"), "{missing}");
        for version in [true, false] {
            let twice = host_problem(version, &[b"a", b"a"]).unwrap();
            assert!(twice.starts_with("2 Host headers"), "{twice}");
        }
        for bad in [&b"evil.com/x?y"[..], b"a b", b"h:80x", b"[::1", b"[]", b"h:8:9", b"caf\xc3\xa9", b"a@b"] {
            let err =
                host_problem(true, &[bad]).unwrap_or_else(|| panic!("{:?} accepted", String::from_utf8_lossy(bad)));
            assert!(err.contains("not a host name"), "{err}");
        }
    }

    #[test]
    fn new_todo_validation() {
        let t = parse_new_todo(br#"{"title":"walk","order":5,"completed":true,"x":1}"#).unwrap();
        assert_eq!(t, NewTodo { title: "walk".into(), completed: true, order: Some(5) });
        let t = parse_new_todo(br#"{"title":"walk","order":null}"#).unwrap();
        assert_eq!(t, NewTodo { title: "walk".into(), completed: false, order: None });

        for (body, fragment) in [
            (&b"{not json"[..], "not valid JSON"),
            (b"[1,2]", "JSON object"),
            (b"\"title\"", "JSON object"),
            (b"", "not valid JSON"),
            (b"{}", "title is required"),
            (br#"{"title":""}"#, "must not be empty"),
            (br#"{"title":"   "}"#, "must not be empty"),
            (br#"{"title":5}"#, "must be a string"),
            (br#"{"title":null}"#, "must be a string"),
            (br#"{"title":"a","completed":"yes"}"#, "completed"),
            (br#"{"title":"a","order":1.5}"#, "order"),
            (br#"{"title":"a","order":"1"}"#, "order"),
            (br#"{"title":"a\u0000b"}"#, "title must not contain the character U+0000 (NUL), found at byte 1"),
            (br#"{"title":"\u0000"}"#, "title must not contain the character U+0000"),
        ] {
            let err = parse_new_todo(body).unwrap_err();
            assert!(err.contains(fragment), "{:?}: {err}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn patch_validation() {
        assert_eq!(parse_patch(b"{}").unwrap(), TodoPatch::default());
        let p = parse_patch(br#"{"completed":true,"order":null}"#).unwrap();
        assert_eq!(p, TodoPatch { title: None, completed: Some(true), order: Some(None) });
        let p = parse_patch(br#"{"title":"b","order":7}"#).unwrap();
        assert_eq!(p, TodoPatch { title: Some("b".into()), completed: None, order: Some(Some(7)) });
        assert!(parse_patch(br#"{"title":""}"#).is_err());
        let nul = parse_patch(br#"{"title":"a\u0000"}"#).unwrap_err();
        assert!(nul.starts_with("title must not contain the character U+0000"), "{nul}");
        assert!(parse_patch(br#"{"completed":null}"#).is_err());
        assert!(parse_patch(b"[]").is_err());
        assert!(parse_patch(b"nope").is_err());
    }

    #[test]
    fn idempotency_key_rules() {
        let headers = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
        };
        assert_eq!(idempotency_key(&headers(&[("Content-Type", "application/json")])), Ok(None));
        let longest = "k".repeat(MAX_KEY_LEN);
        for key in ["a", "8e03978e-40d5-43e8-bc93-6894a57f9324", "\"quoted\"", "~!{}", longest.as_str()] {
            assert_eq!(idempotency_key(&headers(&[("idempotency-key", key)])), Ok(Some(key)), "{key}");
        }
        let too_long = "k".repeat(MAX_KEY_LEN + 1);
        for key in ["", "a b", "tab\there", "caf\u{e9}", "\u{fffd}", too_long.as_str()] {
            let err = idempotency_key(&headers(&[("Idempotency-Key", key)])).unwrap_err();
            assert!(err.starts_with("Idempotency-Key must be 1 to 255 visible ASCII characters"), "{key:?}: {err}");
        }
        let twice = idempotency_key(&headers(&[("Idempotency-Key", "a"), ("IDEMPOTENCY-KEY", "a")])).unwrap_err();
        assert!(twice.contains("once"), "{twice}");
    }

    #[test]
    fn a_todo_is_written_as_serde_json_wrote_its_value() {
        let base = "http://h:1";
        for todo in [
            Todo { id: 1, title: "walk".into(), completed: false, order: None },
            Todo {
                id: i64::MAX,
                title: "q\"uote\\ \u{1}\n caf\u{e9} \u{1F600}".into(),
                completed: true,
                order: Some(-7),
            },
            Todo { id: 0, title: String::new(), completed: false, order: Some(i64::MIN) },
        ] {
            let expected = json!({
                "id": todo.id,
                "title": todo.title,
                "completed": todo.completed,
                "order": todo.order,
                "url": format!("{base}/todos/{}", todo.id),
            })
            .to_string();
            let mut out = Vec::new();
            write_todo(&mut out, &todo, base);
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }

    #[test]
    fn the_list_is_a_json_array_in_any_chunks() {
        let todos: Vec<Todo> =
            (1..=3).map(|id| Todo { id, title: format!("t{id}"), completed: id == 2, order: None }).collect();
        let mut list = ListWriter::start("http://h".into(), 16);
        let mut sent = Vec::new();
        for todo in &todos {
            list.push(todo);
            sent.extend(list.take());
        }
        sent.extend(list.finish());
        let value: Value = serde_json::from_slice(&sent).unwrap();
        assert_eq!(value.as_array().unwrap().len(), 3);
        assert_eq!(value[1]["completed"], true);
        assert_eq!(ListWriter::start("b".into(), 0).finish(), b"[]");
    }

    #[test]
    fn routing() {
        assert!(matches!(route("/"), Route::Root));
        assert!(matches!(route("/?x=1"), Route::Root));
        assert!(matches!(route("/todos"), Route::Todos));
        assert!(matches!(route("/todos/"), Route::Todos));
        assert!(matches!(route("/todos/12"), Route::Todo("12")));
        assert!(matches!(route("/todos/12/"), Route::Todo("12")));
        assert!(matches!(route("/todos/12/x"), Route::NotFound));
        assert!(matches!(route("/static/style.css"), Route::Static("style.css")));
        assert!(matches!(route("/nope"), Route::NotFound));
        assert!(matches!(route(""), Route::NotFound));
    }
}
