//! Embeds every `migrations/NNNN_name.sql` in the binary, in name order, so
//! that adding a migration means adding one file. Gaps and repeats in the
//! numbering are refused when the binary starts migrating (`check_order`),
//! and by a test; the build only lists what is there.
//!
//! PostgreSQL gets the same list, except where `migrations/postgres/` holds a
//! file of the same name, whose SQL replaces it there. An override without
//! its portable file, or one whose `-- additive` first line differs from
//! it, fails the build: both backends must agree on what a version is and
//! whether older binaries may serve it.

use std::fmt::Write as _;
use std::path::Path;

fn sql_files(dir: &Path) -> Vec<String> {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", dir.display()))
        .map(|entry| entry.expect("a directory entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sql"))
        .collect();
    files.sort();
    files
}

fn additive(path: &Path) -> bool {
    let text = std::fs::read_to_string(path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    text.lines().next().map(|line| line.trim_end_matches('\r')) == Some("-- additive")
}

fn main() {
    let dir =
        Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("migrations");
    let pg_dir = dir.join("postgres");
    let files = sql_files(&dir);
    let overrides = if pg_dir.is_dir() { sql_files(&pg_dir) } else { Vec::new() };
    for name in &overrides {
        if !files.contains(name) {
            panic!("migrations/postgres/{name} overrides no migrations/{name}: add the portable file (SQLite's) too");
        }
        if additive(&dir.join(name)) != additive(&pg_dir.join(name)) {
            panic!("migrations/{name} and migrations/postgres/{name} disagree on the `-- additive` first line");
        }
    }
    let mut code = String::from(
        "/// The migrations this binary knows, in the order they are applied.\npub const MIGRATIONS: &[Migration] = &[\n",
    );
    let mut pg_code = String::from(
        "/// The same migrations as PostgreSQL runs them (`migrations/postgres/` overrides).\npub const PG_MIGRATIONS: &[Migration] = &[\n",
    );
    for name in &files {
        let path = dir.join(name);
        println!("cargo:rerun-if-changed={}", path.display());
        writeln!(code, "    Migration {{ name: {name:?}, sql: include_str!({:?}) }},", path.display().to_string())
            .expect("writing to a String");
        let pg_path = if overrides.contains(name) { pg_dir.join(name) } else { path };
        println!("cargo:rerun-if-changed={}", pg_path.display());
        writeln!(
            pg_code,
            "    Migration {{ name: {name:?}, sql: include_str!({:?}) }},",
            pg_path.display().to_string()
        )
        .expect("writing to a String");
    }
    code.push_str("];\n");
    pg_code.push_str("];\n");
    code.push_str(&pg_code);
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("migrations.rs");
    std::fs::write(&out, code).unwrap_or_else(|err| panic!("cannot write {}: {err}", out.display()));
}
