//! `/readyz` cannot be turned into a flood at the database: 2,000 probes a
//! second for 10 s, beside the API's normal traffic, against `todobackend
//! serve` (the binary, as deployed) on each backend. Every API request is
//! still answered, every probe is answered 200, and the database sees about
//! one check a second. Checks are counted where they land: on PostgreSQL by
//! the server itself (pg_stat_statements), on SQLite by the app's
//! `todobackend_readiness_checks_total` (the check runs in the writer
//! thread's transaction, which SQLite does not count for us).
//!
//! The API's p99 with and without the flood is measured here too, but only
//! printed: timing figures on a shared 2-core machine come from
//! `scripts/bench-readyz-flood.sh`, which runs the ignored
//! `figures_api_p99_with_and_without_a_readyz_flood` in release mode.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::postgres::PgDatabase;
use common::{Backend, TempDir, wait_until};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::json;
use todobackend::client;

const BIN: &str = env!("CARGO_BIN_EXE_todobackend");

/// The flood: this many probes a second, for this long, over this many
/// keep-alive connections (each sends its share on a fixed schedule). At
/// most `FLOOD_RATE * FLOOD_FOR` probes, none after `FLOOD_FOR` plus a
/// grace: bounded in count and in time.
const FLOOD_RATE: u64 = 2000;
const FLOOD_FOR: Duration = Duration::from_secs(10);
const FLOOD_CONNECTIONS: u64 = 20;
const FLOOD_GRACE: Duration = Duration::from_secs(5);
/// Each probe, and each API request, must be answered within this.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// The API's normal traffic: `API_CLIENTS` clients, each starting a round
/// (create, read, update and delete one todo: four requests) every
/// `API_ROUND`, the same with and without the flood.
const API_CLIENTS: usize = 4;
const API_ROUND: Duration = Duration::from_millis(50);
/// Before the API's traffic is measured, `WARM_UP` of it, not measured (a
/// server just started answers its first requests slower).
const WARM_UP: Duration = Duration::from_secs(2);

/// `todobackend serve` over a migrated database of `backend`; killed when dropped.
struct Served {
    child: Child,
    addr: SocketAddr,
    pg: Option<PgDatabase>,
    _dir: TempDir,
}

impl Served {
    fn start(backend: Backend) -> Served {
        let dir = TempDir::new();
        let log = dir.join("serve.log");
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--static-root"])
            .arg(dir.join("public"))
            .env_remove("TODOBACKEND_DB")
            .env_remove("TODOBACKEND_DATABASE_URL")
            .env_remove("TODOBACKEND_LOG")
            .env_remove("TODOBACKEND_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // The access log, as deployed, to a file: 2,000 lines a second.
            .stderr(std::fs::File::create(&log).unwrap());
        let pg = match backend {
            Backend::Sqlite => {
                cmd.env("TODOBACKEND_DB", common::migrated_db(&dir));
                None
            }
            Backend::Postgres => {
                let pg = common::postgres::shared().database();
                todobackend::cli::migrate_postgres(&pg.target(), todobackend::store::catalog::PG_MIGRATIONS)
                    .expect("migrate");
                cmd.envs(pg.env());
                Some(pg)
            }
        };
        let child = cmd.spawn().expect("start todobackend serve");
        let mut served = Served { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), pg, _dir: dir };
        let url = wait_until("serve names its address", Duration::from_secs(30), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Ok(Some(status)) = served.child.try_wait() {
                panic!("serve exited with {status}: {text}");
            }
            let line = text.lines().find(|l| l.contains(" INFO serving on "))?;
            Some(common::serving_url(line))
        });
        served.addr = url.trim_start_matches("http://").parse().expect("serve's address");
        wait_until("ready", Duration::from_secs(30), || (served.get("/readyz").status == 200).then_some(()));
        served
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn get(&self, path: &str) -> client::Response {
        client::request("GET", &self.url(path), &[], None, ANSWER_WITHIN).unwrap_or_else(|e| panic!("{e}"))
    }

    fn metric(&self, name: &str) -> u64 {
        let text = self.get("/metrics").text();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
    }

    /// Readiness checks the database has run so far: on PostgreSQL, the
    /// server's own count of the readiness statement in this database.
    fn checks_at_database(&self) -> u64 {
        match &self.pg {
            Some(pg) => {
                let admin = common::postgres::shared().superuser(&pg.name);
                admin.batch("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").unwrap();
                let row = admin
                    .query_one(
                        "SELECT coalesce(sum(s.calls), 0)::int8 FROM pg_stat_statements s \
                         JOIN pg_database d ON d.oid = s.dbid \
                         WHERE d.datname = current_database() AND s.query LIKE 'SELECT $1 FROM todos LIMIT $2'",
                        &[],
                    )
                    .unwrap();
                row.get::<_, i64>(0) as u64
            }
            None => self.metric("todobackend_readiness_checks_total"),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the probes got.
#[derive(Default)]
struct Probes {
    sent: AtomicU64,
    ok: AtomicU64,
    /// Another status, an error or no answer within `ANSWER_WITHIN`.
    failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

impl Probes {
    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.first_failure.lock().unwrap().get_or_insert(why);
    }
}

/// One connection's share of the flood: probe `n` is due at `start + n *
/// every` (sent at once when late, never early), until `count` are sent or
/// `stop_at`. A failed connection is opened again for the next probe.
async fn probe(addr: SocketAddr, start: Instant, every: Duration, count: u64, stop_at: Instant, probes: Arc<Probes>) {
    let mut sender: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> = None;
    for n in 0..count {
        tokio::time::sleep_until((start + every * n as u32).into()).await;
        if Instant::now() >= stop_at {
            break;
        }
        probes.sent.fetch_add(1, Ordering::Relaxed);
        let exchange = async {
            if sender.is_none() {
                let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
                let _ = stream.set_nodelay(true);
                let (new, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
                tokio::spawn(conn);
                sender = Some(new);
            }
            let Some(open) = sender.as_mut() else { unreachable!("opened above") };
            open.ready().await.map_err(|e| format!("connection: {e}"))?;
            let request = hyper::Request::get("/readyz").header("Host", "flood").body(Empty::new()).unwrap();
            let response = open.send_request(request).await.map_err(|e| format!("request: {e}"))?;
            let status = response.status();
            response.into_body().collect().await.map_err(|e| format!("body: {e}"))?;
            Ok::<_, String>(status)
        };
        match tokio::time::timeout(ANSWER_WITHIN, exchange).await {
            Ok(Ok(status)) if status == 200 => {
                probes.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Ok(status)) => probes.fail(format!("status {status}")),
            Ok(Err(e)) => {
                sender = None;
                probes.fail(e);
            }
            Err(_) => {
                sender = None;
                probes.fail(format!("no answer within {ANSWER_WITHIN:?}"));
            }
        }
    }
}

/// The flood, on its own single-threaded runtime (one core's share at most).
fn flood(addr: SocketAddr) -> (Arc<Probes>, Duration) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let probes = Arc::new(Probes::default());
    let each = FLOOD_RATE * FLOOD_FOR.as_secs() / FLOOD_CONNECTIONS;
    let every = Duration::from_secs(FLOOD_CONNECTIONS) / FLOOD_RATE as u32;
    let start = Instant::now();
    let stop_at = start + FLOOD_FOR + FLOOD_GRACE;
    runtime.block_on(async {
        let connections: Vec<_> = (0..FLOOD_CONNECTIONS)
            .map(|c| {
                // Spread over the interval, not all on the same tick.
                let offset = every * c as u32 / FLOOD_CONNECTIONS as u32;
                tokio::spawn(probe(addr, start + offset, every, each, stop_at, Arc::clone(&probes)))
            })
            .collect();
        for connection in connections {
            connection.await.unwrap();
        }
    });
    (probes, start.elapsed())
}

/// The API's traffic for `duration`: every request's latency, and what
/// failed (a wrong status or no answer).
#[derive(Default)]
struct Api {
    latencies: Vec<Duration>,
    failures: Vec<String>,
}

impl Api {
    fn p99(&self) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted.get((sorted.len() * 99).div_ceil(100).saturating_sub(1)).copied().unwrap_or_default()
    }
}

fn api_traffic(served: &Served, duration: Duration) -> Api {
    let start = Instant::now();
    let rounds = (duration.as_millis() / API_ROUND.as_millis()) as u32;
    let clients: Vec<_> = (0..API_CLIENTS)
        .map(|c| {
            let base = served.url("");
            thread::spawn(move || {
                let mut api = Api::default();
                let mut call = |method: &str, path: &str, body: Option<String>, want: u16| {
                    let url = format!("{base}{path}");
                    let headers: &[(&str, &str)] =
                        if body.is_some() { &[("Content-Type", "application/json")] } else { &[] };
                    let sent = Instant::now();
                    let outcome =
                        client::request(method, &url, headers, body.as_deref().map(str::as_bytes), ANSWER_WITHIN);
                    api.latencies.push(sent.elapsed());
                    match outcome {
                        Ok(r) if r.status == want => Some(r),
                        Ok(r) => {
                            api.failures.push(format!("{method} {path}: {} {}", r.status, r.text()));
                            None
                        }
                        Err(e) => {
                            api.failures.push(e);
                            None
                        }
                    }
                };
                // Each client's rounds spread over the round, not in step.
                let offset = API_ROUND * c as u32 / API_CLIENTS as u32;
                for n in 0..rounds {
                    let due = start + offset + API_ROUND * n;
                    thread::sleep(due.saturating_duration_since(Instant::now()));
                    let title = json!({ "title": format!("client {c} round {n}") }).to_string();
                    let Some(created) = call("POST", "/todos", Some(title), 201) else { continue };
                    let id = created.json().ok().and_then(|t| t["id"].as_i64()).unwrap_or_default();
                    let path = format!("/todos/{id}");
                    call("GET", &path, None, 200);
                    call("PATCH", &path, Some(json!({ "completed": true }).to_string()), 200);
                    call("DELETE", &path, None, 204);
                }
                api
            })
        })
        .collect();
    let mut all = Api::default();
    for client in clients {
        let api = client.join().unwrap();
        all.latencies.extend(api.latencies);
        all.failures.extend(api.failures);
    }
    all
}

/// One measurement: the API alone, beside the flood, then alone again.
struct Measured {
    before: Api,
    flooded: Api,
    after: Api,
    probes: Arc<Probes>,
    flood_took: Duration,
    checks: u64,
    counted: u64,
}

impl Measured {
    /// The API's p99 without the flood: the lower of before and after, so
    /// that the ratio errs against the flood.
    fn baseline_p99(&self) -> Duration {
        self.before.p99().min(self.after.p99())
    }
}

/// The API's traffic alone for `baseline_for`, then beside the flood, then
/// alone again for `baseline_for`.
fn measure(served: &Served, baseline_for: Duration) -> Measured {
    let warm_up = api_traffic(served, WARM_UP);
    assert!(warm_up.failures.is_empty(), "warming up: {:?}", warm_up.failures);
    let before = api_traffic(served, baseline_for);
    let checks_before = served.checks_at_database();
    let counted_before = served.metric("todobackend_readiness_checks_total");
    let addr = served.addr;
    let flooding = thread::spawn(move || flood(addr));
    let flooded = api_traffic(served, FLOOD_FOR);
    let (probes, flood_took) = flooding.join().unwrap();
    let checks = served.checks_at_database() - checks_before;
    let counted = served.metric("todobackend_readiness_checks_total") - counted_before;
    Measured { before, flooded, after: api_traffic(served, baseline_for), probes, flood_took, checks, counted }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn a_readyz_flood_costs_about_one_check_a_second_and_the_api_keeps_answering(backend: Backend) {
    let served = Served::start(backend);
    // Short baselines: the p99s are only printed here (see the benchmark).
    let m = measure(&served, Duration::from_secs(2));
    let (sent, ok, failed) = (
        m.probes.sent.load(Ordering::Relaxed),
        m.probes.ok.load(Ordering::Relaxed),
        m.probes.failed.load(Ordering::Relaxed),
    );
    eprintln!(
        "{backend:?}: {sent} probes in {:.2?} ({:.0}/s); {} API requests beside them, p99 {:.1} ms ({:.1} ms without \
         the flood); {} readiness checks at the database ({:.2}/s; the app counted {})",
        m.flood_took,
        sent as f64 / m.flood_took.as_secs_f64(),
        m.flooded.latencies.len(),
        ms(m.flooded.p99()),
        ms(m.baseline_p99()),
        m.checks,
        m.checks as f64 / m.flood_took.as_secs_f64(),
        m.counted,
    );

    // The API: every request answered as it should be, with and without.
    assert!(m.before.failures.is_empty(), "before the flood: {:?}", m.before.failures);
    assert!(m.after.failures.is_empty(), "after the flood: {:?}", m.after.failures);
    assert!(m.flooded.failures.is_empty(), "during the flood: {:?}", m.flooded.failures);
    let rounds = API_CLIENTS as u64 * (FLOOD_FOR.as_millis() / API_ROUND.as_millis()) as u64;
    assert_eq!(m.flooded.latencies.len() as u64, 4 * rounds, "every round of the API's traffic ran");

    // The flood happened as specified: at least 90% of 2,000 a second for
    // 10 s were sent, and every probe was answered 200.
    let planned = FLOOD_RATE * FLOOD_FOR.as_secs();
    assert!(sent <= planned, "{sent} probes, more than the {planned} planned");
    assert!(sent * 10 >= planned * 9, "only {sent} of {planned} probes were sent in {:?}", m.flood_took);
    assert_eq!((ok, failed), (sent, 0), "probes not answered 200: first {:?}", m.probes.first_failure.lock().unwrap());

    // The database: about one check a second, whatever the flood. Checks
    // start at least a second apart: one per started second, and one for the
    // check the flood may have found just expired. And the answer stays
    // fresh: a check at least every two seconds.
    let allowed = m.flood_took.as_secs_f64().ceil() as u64 + 1;
    assert!(m.checks <= allowed, "{} checks in {:?}: more than one a second", m.checks, m.flood_took);
    assert!(m.checks >= m.flood_took.as_secs() / 2, "{} checks in {:?}: the answer went stale", m.checks, m.flood_took);
    if backend == Backend::Postgres {
        assert_eq!(m.counted, m.checks, "the app's counter and the database agree");
    }
}

both_backends!(a_readyz_flood_costs_about_one_check_a_second_and_the_api_keeps_answering);

/// Not a test: the figures `scripts/bench-readyz-flood.sh` prints (a
/// markdown table row per backend and run), measured as the test above
/// measures. `READYZ_FLOOD_RUNS` runs per backend (default 1).
#[test]
#[ignore = "a benchmark: run by scripts/bench-readyz-flood.sh"]
fn figures_api_p99_with_and_without_a_readyz_flood() {
    let runs: usize = std::env::var("READYZ_FLOOD_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    println!(
        "| backend | run | API p99 before the flood (ms) | during it | after it | ratio (during / lower of before and after) | API requests failed | probes/s | probes not 200 | checks at the database/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for backend in [Backend::Sqlite, Backend::Postgres] {
        for run in 1..=runs {
            let served = Served::start(backend);
            // Baselines as long as the flood: as many samples for each p99.
            let m = measure(&served, FLOOD_FOR);
            let seconds = m.flood_took.as_secs_f64();
            println!(
                "| {} | {run} | {:.1} | {:.1} | {:.1} | {:.2} | {} | {:.0} | {} | {:.2} |",
                format!("{backend:?}").to_lowercase(),
                ms(m.before.p99()),
                ms(m.flooded.p99()),
                ms(m.after.p99()),
                ms(m.flooded.p99()) / ms(m.baseline_p99()),
                m.before.failures.len() + m.flooded.failures.len() + m.after.failures.len(),
                m.probes.sent.load(Ordering::Relaxed) as f64 / seconds,
                m.probes.failed.load(Ordering::Relaxed),
                m.checks as f64 / seconds,
            );
        }
    }
}
