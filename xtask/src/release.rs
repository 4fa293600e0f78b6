//! `release`: not built yet.

use anyhow::{Result, bail};

use crate::runner::Ctx;

pub fn run(_ctx: &Ctx) -> Result<()> {
    bail!("`release` is not built yet")
}
