//! `deploy`: not built yet.

use anyhow::{Result, bail};

use crate::runner::Ctx;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct Args {
    /// Do not run `login` first.
    #[arg(long)]
    pub no_login: bool,
}

pub fn run(_ctx: &Ctx, _args: &Args) -> Result<()> {
    bail!("`deploy` is not built yet")
}
