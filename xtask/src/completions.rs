//! `completions bash|zsh|fish`: the shell completion script of the command line.

use anyhow::{Context, Result};

use crate::ctx::Printer;
use crate::flags::{self, CompletionsArgs, Shell};

/// `completions SHELL`: the script on stdout, generated from the command line
/// with every task complete ([`flags::full_command`]), so it completes
/// exactly the tasks and flags the help lists. It completes the
/// command `xtask`: shells complete `cargo` itself through rustup's script,
/// so the book (docs/src/configuration.md) has `alias xtask='cargo xtask'` beside the install line.
pub fn run(printer: Printer, args: &CompletionsArgs) -> Result<()> {
    let mut full = flags::full_command();
    let mut script = Vec::new();
    let name = "xtask";
    match args.shell {
        Shell::Bash => clap_complete::generate(clap_complete::Shell::Bash, &mut full, name, &mut script),
        Shell::Zsh => clap_complete::generate(clap_complete::Shell::Zsh, &mut full, name, &mut script),
        Shell::Fish => clap_complete::generate(clap_complete::Shell::Fish, &mut full, name, &mut script),
    }
    let script = String::from_utf8(script).context("the completion script is not UTF-8")?;
    printer.print_result(script.trim_end());
    Ok(())
}
