//! The light crate's tests run the light binary, `xtask`, as `cargo xtask`
//! does; the rest of their support (the sandbox, the HTTP client, waits, git)
//! is the `xtask-test-support` crate, shared with xtask-cloud's tests.

use xtask_test_support::sandbox::Sandbox;

/// A sandbox that runs the light binary, which hands a cloud task over to
/// `xtask-cloud` as it does for a user.
pub fn sandbox() -> Sandbox {
    Sandbox::new(env!("CARGO_BIN_EXE_xtask"))
}
