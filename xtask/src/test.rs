//! `test`: the service's unit and integration tests (the API in-process,
//! against a real SQLite file). `build` runs first, so the release image is
//! built too.

use anyhow::Result;
use xshell::cmd;

use crate::ctx::Ctx;

pub fn run(ctx: &Ctx) -> Result<()> {
    ctx.step("the service's tests", || {
        let sh = ctx.sh();
        let cargo = crate::cargo::program();
        ctx.run(crate::cargo::clean(cmd!(sh, "{cargo} test --locked --package todobackend")))
    })
}
