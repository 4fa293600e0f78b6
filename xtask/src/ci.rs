//! `ci`: not built yet.

use anyhow::{Result, bail};

use crate::Runner;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct Args {}

pub fn run(_runner: &mut Runner, _args: &Args) -> Result<()> {
    bail!("`ci` is not built yet")
}
