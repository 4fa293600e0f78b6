//! What `cargo xtask version` costs, counted in instructions: it runs on
//! every build and must stay within 2x `git rev-parse --short HEAD` (the book,
//! Performance). Timings on a shared machine wander by a third from one
//! minute to the next; instruction counts do not, so this is what fails when
//! start-up work creeps back in (issue 35: settings files, clap's command,
//! each added unnoticed). valgrind's callgrind counts them; `.ci/run`
//! installs it.
//!
//! The number it is held to is in `version_instructions.txt` beside this
//! file. When a change makes `version` cost more on purpose, or a new
//! toolchain or libc moves the count, write the count this test prints there
//! (the book, Performance, says how the number was taken).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use xtask_test_support::git::{git, git_repo};

/// How far above the checked-in number the count may go before this fails.
const MARGIN: f64 = 1.20;

/// The number checked in: the first line of the file that is not a comment.
fn checked_in() -> u64 {
    let text = include_str!("version_instructions.txt");
    let line = text.lines().map(str::trim).find(|line| !line.is_empty() && !line.starts_with('#'));
    let line = line.expect("version_instructions.txt holds no number");
    line.replace([',', '_'], "").parse().unwrap_or_else(|_| panic!("version_instructions.txt: {line:?} is no number"))
}

/// A checkout the size of this project's (160 tracked files in 8 folders),
/// fixed here so that the count does not move with the project: settled, so
/// that `version` proves it clean from the index's stat data, as it finds a
/// checkout that git has looked at since its last change.
fn settled_checkout() -> tempfile::TempDir {
    let settings = include_str!("../../delivery.yml");
    let files: Vec<(String, String)> = (0..160)
        .map(|i| (format!("folder{}/file-{i:03}.rs", i % 8), format!("// file {i}\n")))
        .chain([("delivery.yml".to_owned(), settings.to_owned())])
        .collect();
    let files: Vec<(&str, &str)> = files.iter().map(|(path, text)| (path.as_str(), text.as_str())).collect();
    let repo = git_repo(&files);
    let past = SystemTime::now() - Duration::from_secs(10);
    for path in git(repo.path(), &["ls-files"]).lines() {
        std::fs::File::options().write(true).open(repo.path().join(path)).unwrap().set_modified(past).unwrap();
    }
    git(repo.path(), &["update-index", "-q", "--refresh"]);
    repo
}

/// The instructions `xtask version` runs in `checkout`, with its output.
fn count_instructions(checkout: &Path) -> (u64, String) {
    let home = tempfile::tempdir().unwrap();
    let counts = home.path().join("callgrind.out");
    let run = Command::new("valgrind")
        .args(["--tool=callgrind", "--quiet"])
        .arg(format!("--callgrind-out-file={}", counts.display()))
        .arg(env!("CARGO_BIN_EXE_xtask"))
        .arg("version")
        .current_dir(checkout)
        // The same small environment on every machine: no user git config,
        // no APP_VERSION (which would skip git), no settings from the caller.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path())
        .output();
    let run = match run {
        Ok(run) => run,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
            "valgrind is missing: this test counts `version`'s instructions with it; install it \
             (Debian: apt-get install valgrind; .ci/run does)"
        ),
        Err(err) => panic!("cannot run valgrind: {err}"),
    };
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "valgrind xtask version failed: {}", String::from_utf8_lossy(&run.stderr));
    let text = std::fs::read_to_string(&counts).expect("callgrind wrote its counts");
    let total = text
        .lines()
        .find_map(|line| line.strip_prefix("summary:"))
        .and_then(|count| count.trim().parse().ok())
        .expect("callgrind's output has a summary line");
    (total, stdout)
}

#[test]
fn version_runs_no_more_instructions_than_the_checked_in_number_allows() {
    let checkout = settled_checkout();
    let (count, stdout) = count_instructions(checkout.path());
    // The count is of the fast path: a clean checkout's hash, nothing else.
    let hash = git(checkout.path(), &["rev-parse", "--short", "HEAD"]);
    assert_eq!(stdout, format!("{{\"Version\": \"{hash}\"}}\n"));
    let allowed = checked_in();
    let limit = (allowed as f64 * MARGIN) as u64;
    eprintln!("xtask version: {count} instructions (checked in: {allowed}, limit {limit})");
    assert!(
        count <= limit,
        "`xtask version` ran {count} instructions, more than {limit} ({:.0} % over the {allowed} in \
         xtask/tests/version_instructions.txt): find what start-up work was added with \
         `valgrind --tool=callgrind target/debug/xtask version` and callgrind_annotate --inclusive=yes \
         (the book, Performance); if the cost is wanted, write {count} in that file",
        (count as f64 / allowed as f64 - 1.0) * 100.0
    );
}
