//! Logs of `serve`: tracing events on stderr through tracing-subscriber,
//! each line with a UTC timestamp (RFC 3339) and a level.
//! `TODOBACKEND_LOG_FORMAT=json` makes each line one JSON object (CloudWatch,
//! Loki); `TODOBACKEND_LOG=debug` adds debug events, among them the
//! container's own healthcheck requests, which are logged at debug level.

use std::cell::RefCell;
use std::io::Write as _;
use std::sync::OnceLock;

use tracing::Level;

/// The format `init` installed, for `access`; unset when `init` was not
/// called (a server started by a test), and then `access` goes through
/// tracing.
static ACCESS: OnceLock<AccessLog> = OnceLock::new();

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AccessLog {
    Text,
    Json,
    /// The level is above info: no access lines.
    Off,
}

/// Installs the subscriber for the process. Returns an error line for an
/// unknown format or level.
pub fn init(format: Option<&str>, level: Option<&str>) -> Result<(), String> {
    let level = match level.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("info") => Level::INFO,
        Some("debug") => Level::DEBUG,
        Some("trace") => Level::TRACE,
        Some("warn") => Level::WARN,
        Some("error") => Level::ERROR,
        Some(other) => {
            return Err(format!("invalid TODOBACKEND_LOG '{other}': expected error, warn, info, debug or trace"));
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_ansi(false)
        .with_target(false)
        .with_timer(tracing_subscriber::fmt::time::SystemTime);
    let (installed, access) = match format.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("text") => (builder.try_init(), AccessLog::Text),
        Some("json") => (builder.json().flatten_event(true).with_current_span(false).try_init(), AccessLog::Json),
        Some(other) => return Err(format!("invalid TODOBACKEND_LOG_FORMAT '{other}': expected text or json")),
    };
    // Already installed (a second `serve` in one process): keep the first.
    if installed.is_ok() {
        let _ = ACCESS.set(access_log(access, level));
    }
    Ok(())
}

/// The access log in `format` under the maximum level `level`: its lines
/// are at info level, so off below it (tracing's more verbose levels
/// compare greater).
fn access_log(format: AccessLog, level: Level) -> AccessLog {
    if level >= Level::INFO { format } else { AccessLog::Off }
}

thread_local! {
    /// The line being written, kept between requests: no allocation per line.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The timestamp's date and time to the second (`2026-12-07T18:13:31`),
    /// made again only when the second changes.
    static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
}

/// One access log line (message `request`, at info level), byte for byte as
/// tracing-subscriber writes the same event in the format `init` chose, but
/// written straight into a reused buffer: through tracing, the fields' and
/// timestamp's formatting was a sixth of a keep-alive GET's instructions.
pub fn access(request_id: &str, method: &str, path: &str, status: u16, latency_ms: f64) {
    let Some(&format) = ACCESS.get() else {
        tracing::info!(request_id = %request_id, method = %method, path = %path, status, latency_ms, "request");
        return;
    };
    if format == AccessLog::Off {
        return;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    LINE.with_borrow_mut(|line| {
        line.clear();
        access_line(line, format == AccessLog::Json, now, request_id, method, path, status, latency_ms);
        // One write, as tracing's; a closed stderr must not stop the server.
        let _ = std::io::stderr().lock().write_all(line);
    });
}

#[allow(clippy::too_many_arguments)]
fn access_line(
    line: &mut Vec<u8>,
    json: bool,
    now: std::time::Duration,
    request_id: &str,
    method: &str,
    path: &str,
    status: u16,
    latency_ms: f64,
) {
    let mut timestamp = [0u8; 27];
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != now.as_secs() {
            *second = now.as_secs();
            *text = date_time(now.as_secs());
        }
        timestamp[..19].copy_from_slice(text);
    });
    let micros = now.subsec_micros();
    timestamp[19] = b'.';
    for (i, place) in (20..26).enumerate() {
        timestamp[place] = b'0' + (micros / 10u32.pow(5 - i as u32) % 10) as u8;
    }
    timestamp[26] = b'Z';
    if json {
        // serde_json escapes the strings, as tracing's JSON format does.
        line.extend_from_slice(b"{\"timestamp\":\"");
        line.extend_from_slice(&timestamp);
        line.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"request_id\":");
        let _ = serde_json::to_writer(&mut *line, request_id);
        line.extend_from_slice(b",\"method\":");
        let _ = serde_json::to_writer(&mut *line, method);
        line.extend_from_slice(b",\"path\":");
        let _ = serde_json::to_writer(&mut *line, path);
        let _ = write!(line, ",\"status\":{status},\"latency_ms\":");
        let _ = serde_json::to_writer(&mut *line, &latency_ms);
        line.extend_from_slice(b"}\n");
    } else {
        // The text format writes field values as they are (Display), the
        // float as Debug.
        line.extend_from_slice(&timestamp);
        line.extend_from_slice(b"  INFO request request_id=");
        line.extend_from_slice(request_id.as_bytes());
        line.extend_from_slice(b" method=");
        line.extend_from_slice(method.as_bytes());
        line.extend_from_slice(b" path=");
        line.extend_from_slice(path.as_bytes());
        let _ = writeln!(line, " status={status} latency_ms={latency_ms:?}");
    }
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of a Unix time, the proleptic Gregorian
/// calendar (Howard Hinnant's days-to-civil).
fn date_time(unix_secs: u64) -> [u8; 19] {
    let days = (unix_secs / 86_400) as i64;
    let rest = unix_secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = [0u8; 19];
    let mut put = |at: usize, width: usize, mut value: u64| {
        for place in (at..at + width).rev() {
            out[place] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year as u64);
    put(5, 2, month as u64);
    put(8, 2, day as u64);
    put(11, 2, rest / 3600);
    put(14, 2, rest / 60 % 60);
    put(17, 2, rest % 60);
    for (at, sep) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
        out[at] = sep;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// What a subscriber configured as `init` does writes, collected.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn through_tracing(json: bool, path: &str, latency_ms: f64) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(Level::INFO)
            .with_ansi(false)
            .with_target(false)
            .with_timer(tracing_subscriber::fmt::time::SystemTime);
        let event = || tracing::info!(request_id = %"0123abcd", method = %"GET", path = %path, status = 404u16, latency_ms, "request");
        if json {
            tracing::subscriber::with_default(
                builder.json().flatten_event(true).with_current_span(false).finish(),
                event,
            );
        } else {
            tracing::subscriber::with_default(builder.finish(), event);
        }
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    fn ours(json: bool, path: &str, latency_ms: f64) -> String {
        let mut line = Vec::new();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        access_line(&mut line, json, now, "0123abcd", "GET", path, 404, latency_ms);
        String::from_utf8(line).unwrap()
    }

    /// The timestamps differ by the time between the two calls; the rest
    /// must be the same bytes.
    fn without_timestamp(line: &str, json: bool) -> String {
        let at = if json { 14 } else { 0 };
        let mut line = line.to_string();
        line.replace_range(at..at + 27, "<time>");
        line
    }

    #[test]
    fn the_access_line_is_what_tracing_wrote() {
        for json in [false, true] {
            for (path, latency) in [("/todos/1", 0.46), ("/todos/%22%5c\"x\u{e9}", 12.0), ("/", 1234.5)] {
                let expected = through_tracing(json, path, latency);
                let got = ours(json, path, latency);
                assert_eq!(without_timestamp(&got, json), without_timestamp(&expected, json), "json: {json}");
                // The timestamps agree to the second at least (same format).
                let at = if json { 14 } else { 0 };
                assert_eq!(got[at..at + 16], expected[at..at + 16], "{got} / {expected}");
            }
        }
    }

    #[test]
    fn the_access_log_is_off_only_below_info() {
        for level in [Level::TRACE, Level::DEBUG, Level::INFO] {
            assert_eq!(access_log(AccessLog::Json, level), AccessLog::Json, "{level}");
        }
        for level in [Level::WARN, Level::ERROR] {
            assert_eq!(access_log(AccessLog::Text, level), AccessLog::Off, "{level}");
        }
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(&date_time(0), b"1970-01-01T00:00:00");
        assert_eq!(&date_time(951_782_400), b"2000-02-29T00:00:00");
        assert_eq!(&date_time(1_796_668_411), b"2026-12-07T18:33:31");
        assert_eq!(&date_time(4_102_444_799), b"2099-12-31T23:59:59");
    }
}
