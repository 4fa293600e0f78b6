//! A small progress printer on stderr: on a terminal, one bar redrawn in
//! place; elsewhere (CI logs), a plain line per milestone and no bar. And
//! the heartbeat of a long wait, which says it is alive the same way. -q
//! silences both.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

const BAR_WIDTH: usize = 30;
const REDRAW_EVERY: Duration = Duration::from_millis(100);

/// Whether stderr is a terminal that can redraw a line (not TERM=dumb).
fn redrawable() -> bool {
    std::io::stderr().is_terminal() && std::env::var("TERM").map_or(true, |term| term != "dumb")
}

fn quiet() -> bool {
    xtask::output::verbosity() == xtask::settings::Verbosity::Quiet
}

pub struct Progress {
    label: String,
    quiet: bool,
    tty: bool,
    drawn: bool,
    last_draw: Option<Instant>,
}

impl Progress {
    /// A printer for `label` (e.g. the image being pushed). A terminal gets a
    /// bar unless TERM=dumb; anything else gets lines.
    pub fn new(label: &str) -> Progress {
        Progress { label: label.to_owned(), quiet: quiet(), tty: redrawable(), drawn: false, last_draw: None }
    }

    /// Redraw the bar at `fraction` (0..=1) with `detail`; nothing outside a terminal.
    pub fn update(&mut self, fraction: f64, detail: &str) {
        if !self.tty || self.quiet {
            return;
        }
        let now = Instant::now();
        if self.last_draw.is_some_and(|last| now.duration_since(last) < REDRAW_EVERY) {
            return;
        }
        self.last_draw = Some(now);
        let line = render(&self.label, fraction, detail);
        xtask::output::raw(&format!("\r\x1b[2K{line}"));
        self.drawn = true;
    }

    /// A milestone: a line in CI; on a terminal the next redraw shows it.
    pub fn milestone(&mut self, fraction: f64, text: &str) {
        if self.quiet {
            return;
        }
        if self.tty {
            self.last_draw = None;
            self.update(fraction, text);
        } else {
            xtask::output::say(&format!("{}: {text}", self.label));
        }
    }

    /// The last line: replaces the bar on a terminal, a plain line elsewhere.
    pub fn finish(&mut self, text: &str) {
        if self.drawn {
            xtask::output::raw("\r\x1b[2K");
            self.drawn = false;
        }
        if !self.quiet {
            xtask::output::say(&format!("{}: {text}", self.label));
        }
    }
}

/// In a log, the longest silence a wait keeps before it says it is alive
/// (within the 15 s a CI log reader expects).
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// The heartbeat of a long wait: on a terminal one line, redrawn in place at
/// each beat; elsewhere a plain line once nothing was printed for
/// [`HEARTBEAT`]. Lasting lines (a service's change) go through [`Heartbeat::line`],
/// which clears the redrawn one first.
pub struct Heartbeat {
    quiet: bool,
    tty: bool,
    drawn: bool,
    last_output: Instant,
}

impl Heartbeat {
    pub fn new() -> Heartbeat {
        Heartbeat { quiet: quiet(), tty: redrawable(), drawn: false, last_output: Instant::now() }
    }

    /// A line that stays.
    pub fn line(&mut self, text: &str) {
        if self.quiet {
            return;
        }
        self.clear();
        xtask::output::say(text);
        self.last_output = Instant::now();
    }

    /// Say that the wait goes on: `text` says for how long and for what.
    pub fn beat(&mut self, text: &str) {
        if self.quiet {
            return;
        }
        if self.tty {
            xtask::output::raw(&format!("\r\x1b[2K{text}"));
            self.drawn = true;
        } else if self.last_output.elapsed() >= HEARTBEAT {
            xtask::output::say(text);
            self.last_output = Instant::now();
        }
    }

    /// Remove the redrawn line (before an error or the result).
    pub fn clear(&mut self) {
        if self.drawn {
            xtask::output::raw("\r\x1b[2K");
            self.drawn = false;
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.clear();
    }
}

/// `    waiting 1m05s of 5m00s for app (1/2 on the new version), migrate (...)`
pub fn heartbeat_text(elapsed: Duration, timeout: Duration, waiting: &[(String, String)]) -> String {
    let what: Vec<String> = waiting.iter().map(|(name, text)| format!("{name} ({text})")).collect();
    format!("    waiting {} of {} for {}", minutes(elapsed), minutes(timeout), what.join(", "))
}

/// 65 s → "1m05s", 9 s → "9s".
pub fn minutes(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds < 60 { format!("{seconds}s") } else { format!("{}m{:02}s", seconds / 60, seconds % 60) }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // Never leave a half-drawn bar in front of an error message.
        if self.drawn {
            xtask::output::say("");
        }
    }
}

/// `label [#########.....................]  30% detail`
pub fn render(label: &str, fraction: f64, detail: &str) -> String {
    let fraction = if fraction.is_finite() { fraction.clamp(0.0, 1.0) } else { 0.0 };
    let filled = (fraction * BAR_WIDTH as f64).round() as usize;
    let bar = format!("{}{}", "#".repeat(filled), ".".repeat(BAR_WIDTH - filled));
    format!("{label} [{bar}] {:>3}% {detail}", (fraction * 100.0).round() as u32)
}

/// 1536 → "1.5 KB", in powers of 1024 as Docker prints them.
pub fn bytes(n: i64) -> String {
    const UNITS: [&str; 4] = ["B", "KB", "MB", "GB"];
    let mut value = n.max(0) as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{value:.0} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_is_drawn_to_scale() {
        assert_eq!(render("img", 0.5, "x"), format!("img [{}{}]  50% x", "#".repeat(15), ".".repeat(15)));
        assert_eq!(render("img", 2.0, ""), format!("img [{}] 100% ", "#".repeat(30)));
        assert_eq!(render("img", f64::NAN, ""), format!("img [{}]   0% ", ".".repeat(30)));
    }

    #[test]
    fn the_heartbeat_says_how_long_and_for_what() {
        let waiting = [("app".to_owned(), "1/2 running".to_owned()), ("migrate".to_owned(), "starting".to_owned())];
        assert_eq!(
            heartbeat_text(Duration::from_secs(65), Duration::from_secs(300), &waiting),
            "    waiting 1m05s of 5m00s for app (1/2 running), migrate (starting)"
        );
        assert_eq!(minutes(Duration::from_secs(9)), "9s");
        assert!(HEARTBEAT <= Duration::from_secs(15));
    }

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KB");
        assert_eq!(bytes(5 * 1024 * 1024), "5.0 MB");
        assert_eq!(bytes(-1), "0 B");
    }
}
