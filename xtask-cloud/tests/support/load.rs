//! A steady load on the app through its edge, for the zero-downtime
//! scenarios: a few clients, each sending in turn a POST /todos (a title of
//! its own) and a GET of the todo it made, a new connection every time, to
//! the edge addresses it is given in turn; bounded in count and time, and
//! paced (about 40 requests a second per client). When stopped it says what
//! happened: requests, failures (with the first few reasons), the slowest
//! answer, and which POSTs were acknowledged, so that a test can check that
//! each acknowledged todo is stored exactly once.
//!
//! `front_retries`: what a load balancer in front of the nodes does when a
//! node refuses the connection (nothing reached it, so it is safe even for a
//! POST): the request goes to the next node, and the refusal is counted for
//! the node that refused. Without it a refusal is a failure.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use xtask_test_support::http::{self, Response};

/// At most this many requests per client, and this long: a scenario that
/// hangs ends its load anyway.
const MAX_REQUESTS_PER_CLIENT: u64 = 20_000;
const MAX_DURATION: Duration = Duration::from_secs(300);
/// Pacing between two requests of one client.
const PACE: Duration = Duration::from_millis(25);

#[derive(Debug, Clone)]
pub struct Figures {
    pub requests: u64,
    pub failed: u64,
    /// 503 answers that carried Retry-After (the database away), not counted as failed
    /// when the scenario allows them.
    pub unavailable: u64,
    pub slowest: Duration,
    /// The first failures, as `METHOD url: reason`.
    pub failures: Vec<String>,
    /// Titles of the POSTs answered 201.
    pub acknowledged: Vec<String>,
    /// Per node address, connections it refused that went to another node.
    pub refused_by: BTreeMap<String, u64>,
    /// Per node address, from its first refusal to its last: the gap a
    /// load balancer in front of it would see.
    pub refusing: BTreeMap<String, (Instant, Instant)>,
}

impl Default for Figures {
    fn default() -> Figures {
        Figures {
            requests: 0,
            failed: 0,
            unavailable: 0,
            slowest: Duration::ZERO,
            failures: Vec::new(),
            acknowledged: Vec::new(),
            refused_by: BTreeMap::new(),
            refusing: BTreeMap::new(),
        }
    }
}

impl Figures {
    /// One line for the test's output.
    pub fn line(&self, scenario: &str) -> String {
        let refused: Vec<String> = self
            .refused_by
            .iter()
            .map(|(node, count)| {
                let window = self.refusing.get(node).map_or(0.0, |(first, last)| (*last - *first).as_secs_f64());
                format!("{node} refused {count} within {window:.1} s (sent on)")
            })
            .collect();
        format!(
            "{scenario}: {} requests, {} failed, {} answered 503 with Retry-After, slowest {:.0} ms, {} POSTs \
             acknowledged{}{}",
            self.requests,
            self.failed,
            self.unavailable,
            self.slowest.as_secs_f64() * 1000.0,
            self.acknowledged.len(),
            if refused.is_empty() { String::new() } else { format!("; {}", refused.join(", ")) },
            if self.failures.is_empty() {
                String::new()
            } else {
                format!("; first failures: {}", self.failures.join(" | "))
            }
        )
    }
}

pub struct Load {
    stop: Arc<AtomicBool>,
    figures: Arc<Mutex<Figures>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

#[derive(Clone, Copy)]
pub struct Options {
    pub clients: usize,
    /// A 503 with Retry-After is an expected answer (the database restarts).
    pub allow_unavailable: bool,
    /// See the module: a refused connection goes to the next node.
    pub front_retries: bool,
    /// Each POST carries an Idempotency-Key (its title): the edge may then
    /// replay it on another task, and the app stores it once.
    pub idempotency_keys: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options { clients: 4, allow_unavailable: false, front_retries: false, idempotency_keys: false }
    }
}

impl Load {
    /// Start the clients against `bases` (`http://ADDRESS:PORT`, each a
    /// node's edge); titles start with `tag`.
    pub fn start(bases: &[String], tag: &str, options: Options) -> Load {
        assert!(!bases.is_empty(), "a load needs an address");
        let stop = Arc::new(AtomicBool::new(false));
        let figures = Arc::new(Mutex::new(Figures::default()));
        let threads = (0..options.clients)
            .map(|client| {
                let (stop, figures) = (Arc::clone(&stop), Arc::clone(&figures));
                let bases = bases.to_vec();
                let tag = format!("{tag}-c{client}");
                std::thread::spawn(move || run_client(client, &bases, &tag, options, &stop, &figures))
            })
            .collect();
        Load { stop, figures, threads }
    }

    /// Let the clients send a little before the scenario starts: at least
    /// `requests` answered.
    pub fn warm_up(&self, requests: u64) {
        xtask_test_support::wait_until("the load's first answers", Duration::from_secs(60), || {
            self.figures.lock().unwrap().requests >= requests
        });
    }

    pub fn stop(mut self) -> Figures {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        self.figures.lock().unwrap().clone()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn run_client(
    client: usize,
    bases: &[String],
    tag: &str,
    options: Options,
    stop: &AtomicBool,
    figures: &Mutex<Figures>,
) {
    let started = Instant::now();
    let mut next = client % bases.len();
    for n in 0..MAX_REQUESTS_PER_CLIENT {
        if stop.load(Ordering::SeqCst) || started.elapsed() > MAX_DURATION {
            return;
        }
        let title = format!("{tag}-{n}");
        let body = format!(r#"{{"title":"{title}"}}"#);
        let key = options.idempotency_keys.then_some(title.as_str());
        let post = Request { method: "POST", path: "/todos", body: Some(&body), idempotency_key: key };
        let posted = send(bases, &mut next, &post, options, figures);
        let created = match posted {
            Some(response) if response.status == 201 => {
                figures.lock().unwrap().acknowledged.push(title);
                response.header("location").map(str::to_owned).or_else(|| id_of(&response.body))
            }
            _ => None,
        };
        std::thread::sleep(PACE);
        if let Some(location) = created {
            let path = if location.starts_with('/') { location } else { path_of(&location) };
            let get = Request { method: "GET", path: &path, body: None, idempotency_key: None };
            let _ = send(bases, &mut next, &get, options, figures);
            std::thread::sleep(PACE);
        }
    }
}

struct Request<'a> {
    method: &'a str,
    path: &'a str,
    body: Option<&'a str>,
    idempotency_key: Option<&'a str>,
}

/// One request, to the next node in turn (and on to the others when a node
/// refuses and `front_retries`); counted in `figures`.
fn send(
    bases: &[String],
    next: &mut usize,
    request: &Request<'_>,
    options: Options,
    figures: &Mutex<Figures>,
) -> Option<Response> {
    let Request { method, path, body, idempotency_key } = *request;
    let mut headers = vec![("Content-Type", "application/json")];
    headers.extend(idempotency_key.map(|key| ("Idempotency-Key", key)));
    let sent = Instant::now();
    let mut tries = if options.front_retries { bases.len() } else { 1 };
    let outcome = loop {
        let base = &bases[*next % bases.len()];
        *next = (*next + 1) % bases.len();
        let result = http::request(&format!("{base}{path}"), method, &headers, body);
        match result {
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused && tries > 1 => {
                tries -= 1;
                let mut figures = figures.lock().unwrap();
                *figures.refused_by.entry(base.clone()).or_default() += 1;
                let now = Instant::now();
                figures.refusing.entry(base.clone()).and_modify(|(_, last)| *last = now).or_insert((now, now));
            }
            other => break (base.clone(), other),
        }
    };
    let elapsed = sent.elapsed();
    let mut figures = figures.lock().unwrap();
    figures.requests += 1;
    figures.slowest = figures.slowest.max(elapsed);
    let (base, result) = outcome;
    let failure = match &result {
        Ok(response) if response.status < 400 => None,
        Ok(response)
            if response.status == 503 && response.header("retry-after").is_some() && options.allow_unavailable =>
        {
            figures.unavailable += 1;
            None
        }
        Ok(response) => Some(format!("{} {}", response.status, response.body.chars().take(120).collect::<String>())),
        Err(err) => Some(format!("{err}")),
    };
    if let Some(reason) = failure {
        figures.failed += 1;
        if figures.failures.len() < 5 {
            figures.failures.push(format!("{method} {base}{path}: {reason}"));
        }
        return None;
    }
    result.ok()
}

/// `{"id": 7, ...}` → `/todos/7`.
fn id_of(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    value.get("id").and_then(serde_json::Value::as_i64).map(|id| format!("/todos/{id}"))
}

/// `http://host:port/todos/7` → `/todos/7`.
fn path_of(url: &str) -> String {
    url::Url::parse(url).map_or_else(|_| "/".to_owned(), |url| url.path().to_owned())
}

/// Every acknowledged POST of `figures` is stored exactly once in the list
/// at `base` (and no todo of this load is stored twice): the edge replayed
/// no POST, and lost none it acknowledged.
pub fn assert_stored_once(base: &str, tag: &str, figures: &Figures) {
    let response = http::http(&format!("{base}/todos"), "GET", &[]).expect("GET /todos");
    assert_eq!(response.status, 200, "GET /todos: {}", response.body);
    let list: serde_json::Value = serde_json::from_str(&response.body).expect("a JSON list");
    let mut stored: BTreeMap<String, usize> = BTreeMap::new();
    for todo in list.as_array().expect("a JSON list") {
        let title = todo["title"].as_str().unwrap_or_default();
        if title.starts_with(&format!("{tag}-")) {
            *stored.entry(title.to_owned()).or_default() += 1;
        }
    }
    let twice: Vec<&String> = stored.iter().filter(|(_, count)| **count > 1).map(|(title, _)| title).collect();
    assert!(twice.is_empty(), "stored more than once (a POST was replayed): {twice:?}");
    let lost: Vec<&String> = figures.acknowledged.iter().filter(|title| !stored.contains_key(*title)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged POSTs are not stored: {:?}",
        lost.len(),
        lost.iter().take(5).collect::<Vec<_>>()
    );
}
