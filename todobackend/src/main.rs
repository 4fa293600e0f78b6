//! Entry point: parse the command line, run the command, turn the outcome
//! into an exit code. Errors are one `error: ...` line on stderr and exit 1.

use std::process::ExitCode;

use todobackend::{cli, say};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let env = |name: &str| std::env::var(name).ok();
    let outcome = cli::parse(&args, &env).and_then(cli::run);
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            say!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
