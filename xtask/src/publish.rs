//! `publish`: not built yet.

use anyhow::{Result, bail};

use crate::runner::Ctx;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct Args {

}

pub fn run(_ctx: &Ctx, _args: &Args) -> Result<()> {
    bail!("`publish` is not built yet")
}
