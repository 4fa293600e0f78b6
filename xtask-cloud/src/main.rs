//! `xtask-cloud`: the tasks of `cargo xtask` that call AWS or the Docker
//! engine API. The light `xtask` binary hands them here with the same command
//! line; this binary's runner runs the light prerequisites itself. The tasks
//! are the library's (`lib.rs`).

use std::process::ExitCode;

use xtask::tasks;

fn main() -> ExitCode {
    tasks::main_with(tasks::parse(), Some(xtask_cloud::run))
}
