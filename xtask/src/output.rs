//! Where the xtask's lines go, and the only place that writes them. Results
//! go to stdout, everything else to stderr, each kind of line with its own
//! rule for `-q` and `--dry-run`, so that a task says what a line is
//! (`say`, `warn`, `progress`) and never decides where it goes. `Ctx`'s
//! output methods write through here; code that runs without a `Ctx` at hand
//! (the signal handler, progress bars, the runner's last error) calls these
//! functions directly.

use std::io::Write;
use std::sync::OnceLock;

use crate::settings::Verbosity;

/// How this run writes: set once by `Ctx::new`; before that, the defaults.
#[derive(Debug, Clone, Copy, Default)]
struct Mode {
    verbosity: Verbosity,
    dry_run: bool,
}

static MODE: OnceLock<Mode> = OnceLock::new();

fn mode() -> Mode {
    MODE.get().copied().unwrap_or_default()
}

/// Fix how the run writes (the first call wins: one command line, one mode).
pub(crate) fn set_mode(verbosity: Verbosity, dry_run: bool) {
    let _ = MODE.set(Mode { verbosity, dry_run });
}

/// How much this run says (-q, -v); `Normal` before a `Ctx` exists.
pub fn verbosity() -> Verbosity {
    mode().verbosity
}

/// A line of the run's result on stdout, the run's only way there. A reader
/// that closed it (`| head`, `| true`) wants no more: the run ends here,
/// quietly and with exit 0, as `cat` does, rather than panicking on the
/// broken pipe.
pub fn result(line: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        warn(&format!("cannot write to stdout: {err}"));
    }
}

/// The task's own account of what it does or did, on stderr: kept with -q
/// and in a dry run (`Deploying version ...`, a failed service's last log
/// lines, what an interrupt undid).
pub fn say(line: &str) {
    eprintln!("{line}");
}

/// `warning: <line>` on stderr, whatever the verbosity.
pub fn warn(line: &str) {
    eprintln!("warning: {line}");
}

/// `error: <line>` on stderr: the run's last line when it fails.
pub fn error(line: &str) {
    eprintln!("error: {line}");
}

/// A line about the run's progress on stderr (what it waits for, which
/// service changed, a remark on what a change did): dropped by -q, and in a
/// dry run, which changes nothing and so has no progress to tell.
pub fn progress(line: &str) {
    let mode = mode();
    if !mode.dry_run && mode.verbosity != Verbosity::Quiet {
        eprintln!("{line}");
    }
}

/// A line shown only with -v (never in a dry run, which plans instead).
pub fn verbose(line: &str) {
    let mode = mode();
    if !mode.dry_run && mode.verbosity == Verbosity::Verbose {
        eprintln!("{line}");
    }
}

/// Text on stderr as it is, without a newline added: a command's own output
/// passed through, a progress bar redrawn in place.
pub fn raw(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.flush();
}
