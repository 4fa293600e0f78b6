//! `cargo xtask`: the delivery workflow of todobackend, in place of the
//! Makefile. This binary is the light one: it parses the command line, runs
//! `version`, `build`, `test` and `release` itself, and hands the tasks that
//! call AWS or the Docker engine API to `xtask-cloud` (built on first use),
//! so that those never cost the light tasks a compile or a load (issue 6).

use std::process::{Command, ExitCode};

use anyhow::{Context, Result};

use xtask::cli;

fn main() -> ExitCode {
    let cli = cli::parse();
    if !cli.task.needs_cloud() {
        return cli::main_with(cli, None);
    }
    // Only returns if the hand-over failed.
    let err = hand_to_cloud();
    eprintln!("error: {err:#}");
    ExitCode::FAILURE
}

/// Replace this process by `cargo run --package xtask-cloud -- <same args>`:
/// same PID, so signals (ci's cleanup on Ctrl-C) and the exit code pass
/// straight through.
fn hand_to_cloud() -> anyhow::Error {
    let result: Result<std::convert::Infallible> = (|| {
        let root = cli::project_root()?;
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(&cargo);
        command
            .arg("run")
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
