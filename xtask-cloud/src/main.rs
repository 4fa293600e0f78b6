//! `xtask-cloud`: the tasks of `cargo xtask` that call AWS or the Docker
//! engine API. The light `xtask` binary hands them here with the same command
//! line; this binary's runner runs the light prerequisites itself. The tasks
//! are the library's (`lib.rs`).

use std::process::ExitCode;

use xtask::{flags, runner};

fn main() -> ExitCode {
    runner::main_with(flags::parse(), Some(xtask_cloud::cloud()))
}
