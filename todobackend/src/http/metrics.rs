//! The Prometheus text exposition of `GET /metrics`, written by hand: a few
//! metric families do not pay for a metrics crate.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Default)]
pub struct Metrics {
    /// (route, status) -> count.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Cumulative counts per bucket, then +Inf.
    latency_buckets: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_micros: AtomicU64,
    pub open_connections: AtomicI64,
    pub refused_connections: AtomicU64,
    pub accept_errors: AtomicU64,
    pub database_errors: AtomicU64,
    /// Checks `/readyz` ran against the database (it answers from the
    /// latest for up to a second, so probes do not each cost one).
    pub readiness_checks: AtomicU64,
}

/// The route label: a fixed set, so a scan of random paths cannot grow the
/// metrics without bound.
pub fn route_label(path: &str) -> &'static str {
    let path = if path.len() > 1 { path.strip_suffix('/').unwrap_or(path) } else { path };
    match path {
        "/" => "/",
        "/todos" => "/todos",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        p if p.starts_with("/todos/") => "/todos/{id}",
        p if p.starts_with("/static/") => "/static/{file}",
        _ => "other",
    }
}

impl Metrics {
    pub fn observe(&self, route: &'static str, status: u16, latency: Duration) {
        *self.requests.lock().unwrap_or_else(|e| e.into_inner()).entry((route, status)).or_insert(0) += 1;
        let secs = latency.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_buckets[BUCKETS.len()].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
    }

    /// The text format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP todobackend_http_requests_total HTTP requests answered, by route and status.\n");
        out.push_str("# TYPE todobackend_http_requests_total counter\n");
        for ((route, status), count) in self.requests.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "todobackend_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}");
        }
        out.push_str("# HELP todobackend_http_request_duration_seconds Time from request head to response.\n");
        out.push_str("# TYPE todobackend_http_request_duration_seconds histogram\n");
        for (i, bound) in BUCKETS.iter().enumerate() {
            let count = self.latency_buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "todobackend_http_request_duration_seconds_bucket{{le=\"{bound}\"}} {count}");
        }
        let total = self.latency_buckets[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "todobackend_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {total}");
        let sum = self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "todobackend_http_request_duration_seconds_sum {sum}");
        let _ = writeln!(out, "todobackend_http_request_duration_seconds_count {total}");
        for (name, kind, help, value) in [
            (
                "todobackend_open_connections",
                "gauge",
                "Client connections open now.",
                self.open_connections.load(Ordering::Relaxed).to_string(),
            ),
            (
                "todobackend_refused_connections_total",
                "counter",
                "Connections closed at once because the connection limit was reached.",
                self.refused_connections.load(Ordering::Relaxed).to_string(),
            ),
            (
                "todobackend_accept_errors_total",
                "counter",
                "Failed accepts (out of file descriptors, ...); the listener backs off and goes on.",
                self.accept_errors.load(Ordering::Relaxed).to_string(),
            ),
            (
                "todobackend_readiness_checks_total",
                "counter",
                "Readiness checks run against the database; /readyz answers from the latest for up to a second.",
                self.readiness_checks.load(Ordering::Relaxed).to_string(),
            ),
            (
                "todobackend_database_errors_total",
                "counter",
                "Database calls that failed (requests and readiness checks).",
                self.database_errors.load(Ordering::Relaxed).to_string(),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_labels_are_bounded() {
        let m = Metrics::default();
        m.observe(route_label("/todos/12"), 200, Duration::from_millis(3));
        m.observe(route_label("/etc/passwd"), 404, Duration::from_secs(20));
        let text = m.render();
        assert!(text.contains("todobackend_http_requests_total{route=\"/todos/{id}\",status=\"200\"} 1"), "{text}");
        assert!(text.contains("todobackend_http_requests_total{route=\"other\",status=\"404\"} 1"), "{text}");
        assert!(text.contains("_bucket{le=\"0.001\"} 0\n"), "{text}");
        assert!(text.contains("_bucket{le=\"0.005\"} 1\n"), "{text}");
        assert!(text.contains("_bucket{le=\"10\"} 1\n"), "{text}");
        assert!(text.contains("_bucket{le=\"+Inf\"} 2\n"), "{text}");
    }
}
