//! The supply-chain gate's offline half: cargo-deny's licence, ban and
//! source checks (deny.toml) pass on Cargo.lock, and the LICENSE file is the
//! licence Cargo.toml declares. The advisories need RustSec's database, a
//! download: they run in a GitHub job (.github/workflows/supply-chain.yml).

use std::process::Command;

/// How to install the cargo-deny version the project pins.
const INSTALL: &str = "run `bash .ci/install-cargo-deny` (it runs `cargo install cargo-deny --locked` at the pinned \
                       version; `bash .ci/run` does it too)";

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

#[test]
fn cargo_deny_passes_the_licences_bans_and_sources_offline() {
    let root = xtask_test_support::project_root();
    let version = cargo().args(["deny", "--version"]).output().expect("run cargo");
    assert!(
        version.status.success(),
        "cargo-deny is missing: {INSTALL}\n{}",
        String::from_utf8_lossy(&version.stderr).trim()
    );
    let out = cargo()
        .args([
            "deny",
            "--offline",
            "--locked",
            "--color",
            "never",
            "check",
            "--show-stats",
            "licenses",
            "bans",
            "sources",
        ])
        .current_dir(&root)
        .output()
        .expect("run cargo deny");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "cargo deny check licenses bans sources fails (deny.toml; docs/src/security.md says what each rule is for):\n{said}"
    );
    // Each check ran (its stats line), not a run that checked nothing.
    for check in ["bans ok", "licenses ok", "sources ok"] {
        assert!(said.contains(check), "cargo deny did not report {check:?}:\n{said}");
    }
}

#[test]
fn the_license_file_is_the_licence_cargo_toml_declares() {
    let root = xtask_test_support::project_root();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    assert!(manifest.lines().any(|line| line.trim() == r#"license = "MIT""#), "Cargo.toml does not declare MIT");
    let license = std::fs::read_to_string(root.join("LICENSE")).expect("LICENSE is missing");
    assert!(license.starts_with("MIT License\n"), "LICENSE is not the MIT licence");
    assert!(license.contains("Permission is hereby granted, free of charge"), "LICENSE is not the MIT text");
}
