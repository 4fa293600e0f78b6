//! What the tests' images built offline from Debian's packages share
//! ([`super::postgres`], [`super::edge`]): nothing can be pulled here, so
//! each is `debootstrap --variant=minbase --include=PACKAGE bookworm` against
//! the mirror apt already uses (or DEBIAN_MIRROR), shaped into a root file
//! system, then `docker import`ed with the official image's configuration.
//!
//! Built once per machine: a tag carries a hash of its recipe
//! ([`recipe_hash`]), so a changed recipe builds anew and an unchanged one
//! is reused; two test binaries starting at once build it once, the second
//! waiting on a lock file and finding the tag ([`built_once`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `tag`, made by `build` unless this machine has it already. `build` gets
/// a fresh directory in target/ for its work (debootstrap's root, its log),
/// removed afterwards; `lock_name` is the lock file's name in target/, one
/// per image, so that building one image does not hold up another.
pub fn built_once(tag: &str, lock_name: &str, build: impl FnOnce(&str, &Path)) {
    if exists(tag) {
        return;
    }
    let target = xtask_test_support::target_dir();
    std::fs::create_dir_all(&target).expect("create target/");
    let lock_path = target.join(lock_name);
    let lock = File::create(&lock_path).unwrap_or_else(|err| panic!("cannot create {}: {err}", lock_path.display()));
    // Held until the end of this function (closing the file releases it).
    lock.lock().unwrap_or_else(|err| panic!("cannot lock {}: {err}", lock_path.display()));
    if exists(tag) {
        return;
    }
    let started = std::time::Instant::now();
    let work = tempfile::Builder::new().prefix("debian-image-").tempdir_in(&target).expect("temp dir in target/");
    build(tag, work.path());
    // As root, debootstrap's device nodes and root-owned files: removed with
    // the temp dir (the tests run as root).
    drop(work);
    eprintln!("built {tag} in {:.0?}", started.elapsed());
}

fn exists(tag: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", tag])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// `debootstrap --variant=minbase --include=<include> bookworm` into
/// `work/root`, which it returns; `what` names the image in messages.
pub fn debootstrap(work: &Path, include: &str, what: &str) -> PathBuf {
    let is_root = Command::new("id").arg("-u").output().is_ok_and(|out| out.stdout.starts_with(b"0\n"));
    assert!(is_root, "building the tests' {what} image needs root (debootstrap): run the tests as root");
    assert!(
        Command::new("debootstrap").arg("--version").output().is_ok_and(|out| out.status.success()),
        "debootstrap is missing: `apt-get install debootstrap` (`bash .ci/run` installs it)"
    );
    let mirror = std::env::var("DEBIAN_MIRROR").ok().filter(|mirror| !mirror.is_empty()).or_else(apt_mirror).expect(
        "no Debian mirror for bookworm main in /etc/apt/sources.list or /etc/apt/sources.list.d: the tests' \
         images are built from the mirror apt uses, or from DEBIAN_MIRROR (e.g. http://deb.debian.org/debian)",
    );
    let root = work.join("root");
    let log = work.join("debootstrap.log");
    eprintln!(
        "building the tests' {what} image from Debian's {include} on {mirror} (once per machine, a minute or two)"
    );
    let log_file = File::create(&log).expect("debootstrap log");
    let status = Command::new("debootstrap")
        .args(["--variant=minbase", &format!("--include={include}"), "bookworm"])
        .arg(&root)
        .arg(&mirror)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("debootstrap log"))
        .stderr(log_file)
        .status()
        .expect("run debootstrap");
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        panic!("debootstrap of bookworm with {include} from {mirror} failed ({status}):\n{tail}");
    }
    root
}

/// `tar` of the root file system `root` into `docker import` as `tag`, with
/// the image's configuration (`--change` lines: that of the official image
/// where it matters). `docker import` takes no STOPSIGNAL (Docker 20.10):
/// the stack files set `stop_signal` where the official image has one.
pub fn import(root: &Path, tag: &str, changes: &[&str]) {
    let mut tar = Command::new("tar")
        .arg("--numeric-owner")
        .arg("-C")
        .arg(root)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run tar");
    let tar_out = tar.stdout.take().expect("tar's stdout");
    let mut import = Command::new("docker");
    import.arg("import");
    for change in changes {
        import.arg("--change").arg(change);
    }
    import.args(["-", tag]).stdin(Stdio::from(tar_out)).stderr(Stdio::piped());
    let out = import.output().expect("docker import");
    // The pipe's read end goes with the command: tar ends if import did not read it all.
    drop(import);
    if !out.status.success() {
        let _ = tar.kill();
        let _ = tar.wait();
        panic!("docker import of {tag}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let tar_status = tar.wait().expect("tar ends");
    assert!(tar_status.success(), "tar of the root file system of {tag} failed: {tar_status}");
}

/// The first mirror apt uses for Debian's bookworm main, from one-line
/// (`deb URI bookworm main`) or deb822 (`URIs:` / `Suites:`) sources.
pub fn apt_mirror() -> Option<String> {
    let mut files: Vec<PathBuf> = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "list" || ext == "sources"))
            .collect();
        more.sort();
        files.extend(more);
    }
    files.iter().find_map(|path| mirror_in(&std::fs::read_to_string(path).ok()?))
}

pub fn mirror_in(text: &str) -> Option<String> {
    let serves = |types: &str, suites: &str, components: &str| {
        types.split_whitespace().any(|t| t == "deb")
            && suites.split_whitespace().any(|s| s == "bookworm")
            && components.split_whitespace().any(|c| c == "main")
    };
    // One-line form.
    for line in text.lines().map(str::trim).filter(|line| !line.starts_with('#')) {
        let mut words = line.split_whitespace();
        let Some("deb") = words.next() else { continue };
        let mut rest: Vec<&str> = words.collect();
        if rest.first().is_some_and(|word| word.starts_with('[')) {
            let end = rest.iter().position(|word| word.ends_with(']')).unwrap_or(0);
            rest.drain(..=end);
        }
        if let [uri, suite, components @ ..] = rest.as_slice()
            && serves("deb", suite, &components.join(" "))
        {
            return Some((*uri).to_owned());
        }
    }
    // deb822 stanzas, separated by blank lines.
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .filter(|line| !line.starts_with('#'))
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':').map(str::trim))
                .unwrap_or("")
        };
        let enabled = !field("Enabled").eq_ignore_ascii_case("no");
        if enabled && serves(field("Types"), field("Suites"), field("Components")) {
            return field("URIs").split_whitespace().next().map(str::to_owned);
        }
    }
    None
}

/// FNV-1a, 64 bits, of the recipe's parts: a stable hash for a tag (std's
/// hasher is not stable across Rust releases).
pub fn recipe_hash(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.iter().flat_map(|part| part.bytes().chain([0])) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}
