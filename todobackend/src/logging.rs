//! Logs of `serve`: tracing events on stderr through tracing-subscriber,
//! each line with a UTC timestamp (RFC 3339) and a level.
//! `TODOBACKEND_LOG_FORMAT=json` makes each line one JSON object (CloudWatch,
//! Loki); `TODOBACKEND_LOG=debug` adds debug events, among them the
//! container's own healthcheck requests, which are logged at debug level.

use tracing::Level;

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
    let installed = match format.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("text") => builder.try_init(),
        Some("json") => builder.json().flatten_event(true).with_current_span(false).try_init(),
        Some(other) => return Err(format!("invalid TODOBACKEND_LOG_FORMAT '{other}': expected text or json")),
    };
    // Already installed (a second `serve` in one process): keep the first.
    let _ = installed;
    Ok(())
}
