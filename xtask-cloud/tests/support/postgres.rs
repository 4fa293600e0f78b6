//! A PostgreSQL image built offline from Debian's own packages, for the
//! swarm tests of the PostgreSQL stack: nothing can be pulled here, and
//! stack.yml's default `postgres:16-alpine` is on Docker Hub.
//!
//! `debootstrap --variant=minbase --include=postgresql-15 bookworm` against
//! the mirror apt already uses (or DEBIAN_MIRROR), trimmed (documentation,
//! translations, apt's lists and caches, the LLVM that only JIT needs, the
//! cluster the package makes), with `postgres/entrypoint.sh` honouring the
//! official image's variables, then `docker import`. Built once per machine
//! under a lock, its tag carrying a hash of the recipe and the entrypoint
//! (see [`super::debian_image`], which the tests' HAProxy image shares).

use std::path::Path;
use std::process::Command;

use xtask_test_support::run_ok;

use super::debian_image;

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
    let tag = format!("todobackend-tests/postgres:15-{:016x}", debian_image::recipe_hash(&[RECIPE, ENTRYPOINT]));
    debian_image::built_once(&tag, "postgres-image.lock", build);
    tag
}

fn build(tag: &str, work: &Path) {
    let root = debian_image::debootstrap(work, "postgresql-15", "PostgreSQL");
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
    debian_image::import(&root, tag, &CONFIG);
}

/// The image's configuration (that of the official image where it matters).
const CONFIG: [&str; 8] = [
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
