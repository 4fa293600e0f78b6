//! `/readyz` cannot be turned into a flood at the database: however many
//! probes arrive, they share one check at a time, about one a second, and
//! the API keeps answering. Counted where the checks land: on PostgreSQL by
//! the server itself (pg_stat_statements), on SQLite by the app's
//! `todobackend_readiness_checks_total` (the check runs in the writer
//! thread's transaction, which SQLite does not count for us).

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{Backend, TestServer, start_server_on};
use serde_json::json;
use todobackend::backend::Database;
use todobackend::client;

/// Probing clients, each sending `PROBES_EACH` probes `PROBE_GAP` apart:
/// 400 probes over about two seconds, a bounded flood.
const CLIENTS: usize = 20;
const PROBES_EACH: usize = 20;
const PROBE_GAP: Duration = Duration::from_millis(100);

fn metric(server: &TestServer, name: &str) -> u64 {
    let text = server.get("/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// Readiness checks the database has run so far: on PostgreSQL, the
/// server's own count of the readiness statement in this test's database.
fn checks_at_database(server: &TestServer, backend: Backend) -> u64 {
    match (&server.database, backend) {
        (Database::Postgres(target), Backend::Postgres) => {
            let admin = common::postgres::shared().superuser(&target.dbname);
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
        _ => metric(server, "todobackend_readiness_checks_total"),
    }
}

fn a_readyz_flood_costs_about_one_check_a_second_and_the_api_keeps_answering(backend: Backend) {
    let server = start_server_on(backend);
    assert_eq!(server.get("/readyz").status, 200);
    let checks_before = checks_at_database(&server, backend);
    let counted_before = metric(&server, "todobackend_readiness_checks_total");
    assert!(checks_before >= 1, "the first probe ran a check at the database");

    let started = Instant::now();
    let probers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let url = server.url("/readyz");
            thread::spawn(move || {
                (0..PROBES_EACH)
                    .map(|_| {
                        let status = client::request("GET", &url, &[], None, Duration::from_secs(10)).map(|r| r.status);
                        thread::sleep(PROBE_GAP);
                        status
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    // Meanwhile, the API: a write and a read, over and over.
    let mut api_requests = 0;
    while probers.iter().any(|p| !p.is_finished()) {
        let created = server.post_json("/todos", &json!({ "title": format!("during the flood {api_requests}") }));
        assert_eq!(created.status, 201, "POST during the flood: {}", created.text());
        let listed = server.get("/todos");
        assert_eq!(listed.status, 200, "GET during the flood: {}", listed.text());
        api_requests += 2;
        thread::sleep(Duration::from_millis(20));
    }
    let probes: Vec<_> = probers.into_iter().flat_map(|p| p.join().unwrap()).collect();
    let elapsed = started.elapsed();
    assert_eq!(probes.len(), CLIENTS * PROBES_EACH);
    for status in &probes {
        assert_eq!(status.as_ref().ok(), Some(&200), "a probe during the flood: {status:?}");
    }

    let checks = checks_at_database(&server, backend) - checks_before;
    let counted = metric(&server, "todobackend_readiness_checks_total") - counted_before;
    // Checks start at least a second apart: one per started second, and
    // one for the check the flood may have found just expired.
    let allowed = elapsed.as_secs_f64().ceil() as u64 + 1;
    eprintln!(
        "{backend:?}: {} probes and {api_requests} API requests in {elapsed:.2?}: {checks} readiness checks at the database \
         ({:.1}/s; the app counted {counted})",
        probes.len(),
        checks as f64 / elapsed.as_secs_f64()
    );
    assert!(checks >= 1, "the flood outlived the cached result, so at least one check ran");
    assert!(checks <= allowed, "{checks} checks in {elapsed:?}: more than one a second");
    if backend == Backend::Postgres {
        assert_eq!(counted, checks, "the app's counter and the database agree");
    }
}

both_backends!(a_readyz_flood_costs_about_one_check_a_second_and_the_api_keeps_answering);
