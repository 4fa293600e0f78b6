//! Cargo as a child of the xtask: which program, and an environment without
//! the identity of the package that cargo ran us as.
//!
//! `cargo run` (and `cargo test`, for the test binaries that run the xtask)
//! sets CARGO_PKG_NAME, CARGO_MANIFEST_DIR, OUT_DIR and their kin for the
//! process it starts, and a child cargo inherits them. Some build scripts
//! (ring's, whose `rerun-if-env-changed` names CARGO_PKG_NAME and
//! CARGO_MANIFEST_DIR) then see a changed environment whenever cargo was
//! started from somewhere else: a `cargo build --release` by hand, then
//! `cargo xtask build`, compiled ring, rustls and the service again (about
//! 70 s of CPU on 2 cores), and the test binaries, each with its own package
//! name, did so in turn. Cargo sets these for its own children anyway.

use std::ffi::OsString;
use std::path::PathBuf;

/// `cargo` as cargo ran us (CARGO), else from PATH.
pub fn program() -> PathBuf {
    std::env::var_os("CARGO").map(PathBuf::from).unwrap_or_else(|| "cargo".into())
}

/// The variables of ours that describe the package cargo ran us as, to be
/// removed from a child cargo's environment. A user's own cargo settings
/// (CARGO_HOME, CARGO_TARGET_DIR, CARGO_BUILD_*, CARGO_TARGET_<triple>_*)
/// are not among them.
pub fn package_vars() -> Vec<OsString> {
    std::env::vars_os().map(|(name, _)| name).filter(|name| is_package_var(&name.to_string_lossy())).collect()
}

fn is_package_var(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_MANIFEST_")
        || matches!(
            name,
            "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR" | "OUT_DIR"
        )
}

/// `cmd` with [`package_vars`] removed from its environment.
pub fn clean(mut cmd: xshell::Cmd<'_>) -> xshell::Cmd<'_> {
    for name in package_vars() {
        cmd = cmd.env_remove(name);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::is_package_var;

    #[test]
    fn the_package_identity_goes_and_the_users_settings_stay() {
        for name in [
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_LINKS",
            "OUT_DIR",
            "CARGO_CRATE_NAME",
        ] {
            assert!(is_package_var(name), "{name} should be removed");
        }
        for name in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_JOBS",
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "PATH",
        ] {
            assert!(!is_package_var(name), "{name} should stay");
        }
    }
}
