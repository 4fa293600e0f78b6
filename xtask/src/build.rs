//! `build`: not built yet.

use anyhow::{Result, bail};

use crate::runner::Ctx;

pub fn run(_ctx: &Ctx) -> Result<()> {
    bail!("`build` is not built yet")
}
