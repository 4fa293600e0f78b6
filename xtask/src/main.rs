//! `cargo xtask`: the delivery workflow of todobackend, in place of the
//! Makefile. This binary is the light one: it parses the command line, runs
//! the light tasks (`version`, `build`, `test`, `release`, `clean`,
//! `completions`, `docs`) itself, and hands the tasks that
//! call AWS or the Docker engine API to `xtask-cloud` (built on first use),
//! so that those never cost the light tasks a compile or a load (issue 6).

use std::process::{Command, ExitCode};

use anyhow::{Context, Result};

use xtask::flags::{self, Task};
use xtask::runner;
use xtask::settings::project_root;

fn main() -> ExitCode {
    let cli = flags::parse();
    match cli.task {
        // A light task needs only light tasks (see `runner::needs`).
        Task::Light(_) => runner::main_with(cli, None),
        Task::Cloud(_) => {
            // Only returns if the hand-over failed.
            let err = hand_to_cloud();
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Replace this process by `cargo run --quiet --package xtask-cloud -- <same
/// args>`: same PID, so signals (ci's cleanup on Ctrl-C) and the exit code
/// pass straight through. Cargo's own lines stay out of the task's output,
/// except on the first build, where its progress is what shows that
/// something happens.
fn hand_to_cloud() -> anyhow::Error {
    let result: Result<std::convert::Infallible> = (|| {
        let root = project_root()?;
        let cargo = xtask::cargo::program();
        let first_build = announce_first_build(&root);
        let mut command = Command::new(&cargo);
        // Without the light xtask's package identity: a `cargo build
        // --package xtask-cloud` by hand or by a test then sees the same
        // environment, and neither compiles build scripts again (cargo.rs).
        for name in xtask::cargo::package_vars() {
            command.env_remove(name);
        }
        command.arg("run");
        if !first_build {
            command.arg("--quiet");
        }
        command
            .arg("--manifest-path")
            .arg(root.join("Cargo.toml"))
            .args(["--package", "xtask-cloud", "--"])
            .args(std::env::args_os().skip(1));
        exec(command).with_context(|| format!("cannot run {:?} for the AWS and Docker tasks", cargo))
    })();
    match result {
        Ok(never) => match never {},
        Err(err) => err,
    }
}

/// Before the first build of `xtask-cloud`, say what comes (cargo's progress
/// follows); whether this is that first build.
fn announce_first_build(root: &std::path::Path) -> bool {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir));
    let binary = target.join("debug").join(format!("xtask-cloud{}", std::env::consts::EXE_SUFFIX));
    if !binary.exists() {
        eprintln!(
            "compiling the AWS and Docker tasks (xtask-cloud) once; this takes about {} on 2 cores, and later runs start at once",
            FIRST_BUILD
        );
    }
    !binary.exists()
}

/// The cold build of `xtask-cloud` after the light binary, as measured by
/// `scripts/bench.sh` (docs/src/performance.md).
const FIRST_BUILD: &str = "75 s";

#[cfg(unix)]
fn exec(mut command: Command) -> Result<std::convert::Infallible> {
    use std::os::unix::process::CommandExt;
    Err(command.exec().into())
}

#[cfg(not(unix))]
fn exec(mut command: Command) -> Result<std::convert::Infallible> {
    let status = command.status()?;
    std::process::exit(status.code().unwrap_or(1));
}
