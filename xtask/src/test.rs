//! `test`: not built yet.

use anyhow::{Result, bail};

use crate::runner::Ctx;

pub fn run(_ctx: &Ctx) -> Result<()> {
    bail!("`test` is not built yet")
}
