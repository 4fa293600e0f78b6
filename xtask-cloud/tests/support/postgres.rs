//! A PostgreSQL image built offline from Debian's own packages, for the
//! swarm tests of the PostgreSQL stack: nothing can be pulled here, and
//! stack.yml's default `postgres:16-alpine` is on Docker Hub.
//!
//! `debootstrap --variant=minbase --include=postgresql-15 bookworm` against
//! the mirror apt already uses (or DEBIAN_MIRROR), trimmed (documentation, translations, apt's
//! lists and caches, the LLVM that only JIT needs, the cluster the package
//! makes), with `postgres/entrypoint.sh` honouring the official image's
//! variables, then `docker import`. Built once per machine: the tag carries a
//! hash of the recipe and the entrypoint, so a changed recipe builds anew and
//! an unchanged one is reused. Two test binaries starting at once build it
//! once: the second waits on a lock file and finds the tag.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The entrypoint, embedded: a change to it is a new tag.
const ENTRYPOINT: &str = include_str!("postgres/entrypoint.sh");

/// Bumped when the steps below change what the image holds.
const RECIPE: &str = "debootstrap minbase bookworm postgresql-15; trimmed v1";

/// Removed from the root file system: nothing the server or the entrypoint
/// uses (about 400 MB of 630).
const TRIMMED: &[&str] = &[
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/i18n",
    "var/cache/apt",
    "var/lib/apt/lists",
    "var/cache/debconf/templates.dat-old",
    // JIT only, which the entrypoint turns off (`jit = off`).
    "usr/lib/x86_64-linux-gnu/libLLVM-14.so.1",
    "usr/lib/x86_64-linux-gnu/libLLVM-14.so",
    "usr/lib/aarch64-linux-gnu/libLLVM-14.so.1",
    "usr/lib/aarch64-linux-gnu/libLLVM-14.so",
    "usr/lib/postgresql/15/lib/llvmjit.so",
    "usr/lib/postgresql/15/lib/bitcode",
    // The cluster the package creates; the entrypoint makes its own in PGDATA.
    "var/lib/postgresql/15",
    "etc/postgresql/15",
];

/// The local tag of the image, built if this machine has not built it yet.
pub fn image() -> String {
    let tag = format!("todobackend-tests/postgres:15-{:016x}", fnv1a(&[RECIPE, ENTRYPOINT]));
    if exists(&tag) {
        return tag;
    }
    let target = xtask_test_support::target_dir();
    std::fs::create_dir_all(&target).expect("create target/");
    let lock_path = target.join("postgres-image.lock");
    let lock = File::create(&lock_path).unwrap_or_else(|err| panic!("cannot create {}: {err}", lock_path.display()));
    // Held until the end of this function (closing the file releases it).
    lock.lock().unwrap_or_else(|err| panic!("cannot lock {}: {err}", lock_path.display()));
    if !exists(&tag) {
        build(&tag, &target);
    }
    tag
}

fn exists(tag: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", tag])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn build(tag: &str, target: &Path) {
    let is_root = Command::new("id").arg("-u").output().is_ok_and(|out| out.stdout.starts_with(b"0\n"));
    assert!(is_root, "building the tests' PostgreSQL image needs root (debootstrap): run the tests as root");
    assert!(
        Command::new("debootstrap").arg("--version").output().is_ok_and(|out| out.status.success()),
        "debootstrap is missing: `apt-get install debootstrap` (`bash .ci/run` installs it)"
    );
    let mirror = std::env::var("DEBIAN_MIRROR").ok().filter(|mirror| !mirror.is_empty()).or_else(apt_mirror).expect(
        "no Debian mirror for bookworm main in /etc/apt/sources.list or /etc/apt/sources.list.d: the tests' \
         PostgreSQL image is built from the mirror apt uses, or from DEBIAN_MIRROR (e.g. http://deb.debian.org/debian)",
    );
    let work = tempfile::Builder::new().prefix("postgres-rootfs-").tempdir_in(target).expect("temp dir in target/");
    let root = work.path().join("root");
    let log = work.path().join("debootstrap.log");
    eprintln!("building the tests' PostgreSQL image {tag} from {mirror} (once per machine, about a minute)");
    let started = std::time::Instant::now();
    let log_file = File::create(&log).expect("debootstrap log");
    let status = Command::new("debootstrap")
        .args(["--variant=minbase", "--include=postgresql-15", "bookworm"])
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
        panic!("debootstrap of bookworm with postgresql-15 from {mirror} failed ({status}):\n{tail}");
    }
    for path in TRIMMED {
        let path = root.join(path);
        let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        if let Err(err) = removed
            && err.kind() != std::io::ErrorKind::NotFound
        {
            panic!("cannot remove {}: {err}", path.display());
        }
    }
    for dir in ["var/cache/apt", "var/lib/apt/lists"] {
        std::fs::create_dir_all(root.join(dir)).expect("recreate apt's directories, empty");
    }
    let entrypoint = root.join("usr/local/bin/docker-entrypoint.sh");
    std::fs::write(&entrypoint, ENTRYPOINT).expect("write the entrypoint");
    run_ok(Command::new("chmod").arg("755").arg(&entrypoint), "chmod the entrypoint");
    import(&root, tag);
    // As root, debootstrap's device nodes and root-owned files: removed with
    // the temp dir (the tests run as root).
    drop(work);
    eprintln!("built {tag} in {:.0?}", started.elapsed());
}

/// `tar` of the root file system into `docker import`, with the image's
/// configuration (that of the official image where it matters).
fn import(root: &Path, tag: &str) {
    let mut tar = Command::new("tar")
        .arg("--numeric-owner")
        .arg("-C")
        .arg(root)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run tar");
    let tar_out = tar.stdout.take().expect("tar's stdout");
    let changes = [
        r#"ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]"#,
        r#"CMD ["postgres"]"#,
        // Debian's own binaries first: /usr/bin's are perl wrappers for clusters.
        "ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV PGDATA=/var/lib/postgresql/data",
        "ENV LANG=C.UTF-8",
        // No STOPSIGNAL: `docker import` takes none (Docker 20.10), so
        // stack.yml's `stop_signal: SIGINT` (fast shutdown) does its work.
        "EXPOSE 5432",
        "VOLUME /var/lib/postgresql/data",
        "LABEL org.opencontainers.image.title=todobackend-tests-postgres",
    ];
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
    assert!(tar_status.success(), "tar of the PostgreSQL root file system failed: {tar_status}");
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

fn run_ok(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|err| panic!("{what}: {err}"));
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// FNV-1a, 64 bits: a stable hash for the tag (std's hasher is not stable
/// across Rust releases).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.iter().flat_map(|part| part.bytes().chain([0])) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}
