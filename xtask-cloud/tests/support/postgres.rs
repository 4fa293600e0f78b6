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

/// The uid of `postgres` in the tests' image: stack.yml's `DB_UID`, the
/// owner the swarm gives the TLS key (PostgreSQL reads a key only if it owns
/// it; the official alpine image's 70 is not Debian's).
pub fn postgres_uid() -> String {
    let out = Command::new("docker")
        .args(["run", "--rm", "--entrypoint", "id", &image(), "-u", "postgres"])
        .output()
        .expect("docker run id");
    assert!(out.status.success(), "id -u postgres in the tests' image: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The database's TLS for a test's stack, as docs/src/scaling-out.md makes
/// it: a private CA, and a certificate for `db` (the name the app connects
/// to) that it signed, made with the openssl CLI. The three secrets' names
/// are unique to the test.
pub struct DbTls {
    /// (stack.yml's variable, the secret's name, its PEM value).
    pub secrets: Vec<(&'static str, String, String)>,
}

impl DbTls {
    pub fn new() -> DbTls {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = |name: &str| dir.path().join(name).display().to_string();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl").args(args).output().expect("run openssl");
            assert!(out.status.success(), "openssl {}: {}", args[0], String::from_utf8_lossy(&out.stderr));
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &["-days", "2", "-subj", "/CN=todobackend test db root"],
                &["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
                &["-keyout", &path("ca.key"), "-out", &path("ca.crt")],
            ]
            .concat(),
        );
        openssl(
            &[&["req", "-new"][..], &ec, &["-subj", "/CN=db", "-keyout", &path("db.key"), "-out", &path("db.csr")]]
                .concat(),
        );
        std::fs::write(
            path("db.ext"),
            "subjectAltName=DNS:db\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write the extensions");
        openssl(&[
            "x509",
            "-req",
            "-in",
            &path("db.csr"),
            "-days",
            "2",
            "-CA",
            &path("ca.crt"),
            "-CAkey",
            &path("ca.key"),
            "-CAcreateserial",
            "-extfile",
            &path("db.ext"),
            "-out",
            &path("db.crt"),
        ]);
        let read = |name: &str| std::fs::read_to_string(path(name)).expect("read what openssl wrote");
        let suffix = xtask_test_support::unique_name("");
        DbTls {
            secrets: vec![
                ("DB_CA_SECRET", format!("todobackend_db_ca{suffix}"), read("ca.crt")),
                ("DB_TLS_CERT_SECRET", format!("todobackend_db_tls_cert{suffix}"), read("db.crt")),
                ("DB_TLS_KEY_SECRET", format!("todobackend_db_tls_key{suffix}"), read("db.key")),
            ],
        }
    }

    /// The variables that point stack.yml at these secrets and give the key
    /// to the image's postgres user.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> =
            self.secrets.iter().map(|(variable, name, _)| (variable.to_string(), name.clone())).collect();
        env.push(("DB_UID".into(), postgres_uid()));
        env
    }

    /// Creates the secrets the book's way: `cargo xtask secret create NAME < file`.
    pub fn create(&self, sandbox: &xtask_test_support::sandbox::Sandbox) {
        for (_, name, value) in &self.secrets {
            sandbox.xtask_with_stdin(&["secret", "create", name], value).assert_success();
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.secrets.iter().map(|(_, name, _)| name.clone()).collect()
    }
}
