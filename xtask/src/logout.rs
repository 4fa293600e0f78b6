//! `logout`: not built yet.

use anyhow::{Result, bail};

use crate::runner::Ctx;

pub fn run(_ctx: &Ctx) -> Result<()> {
    bail!("`logout` is not built yet")
}
