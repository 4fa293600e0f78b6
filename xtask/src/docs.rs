//! `docs`: the command reference written from the command line (markdown
//! pages in `docs/src/reference/`, man pages in `docs/man/`, the reference
//! part of `docs/src/SUMMARY.md`), stale pages of a task that is gone
//! removed; then the book built with `mdbook build docs` when mdbook is on
//! PATH (and a line saying so when it is not). A test fails when the
//! checked-in reference differs from what this writes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use xshell::cmd;

use crate::ctx::Ctx;
use crate::reference;

pub fn run(ctx: &Ctx) -> Result<()> {
    let docs = ctx.settings.root.join("docs");
    ctx.step("write the command reference", || {
        let pages = reference::pages()?;
        let written: BTreeSet<PathBuf> = pages.iter().map(|page| docs.join(&page.path)).collect();
        for dir in [reference::MARKDOWN_DIR, reference::MAN_DIR] {
            let dir = docs.join(dir);
            ctx.effect(&format!("create {}", dir.display()), (), || {
                std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))
            })?;
            for stale in files_in(&dir)?.into_iter().filter(|file| !written.contains(file)) {
                ctx.remove(&stale)?;
            }
        }
        for page in &pages {
            write_if_changed(ctx, &docs.join(&page.path), &page.text)?;
        }
        let summary_path = docs.join(reference::SUMMARY);
        let summary = std::fs::read_to_string(&summary_path)
            .with_context(|| format!("cannot read {}", summary_path.display()))?;
        write_if_changed(ctx, &summary_path, &reference::summary_with_reference(&summary)?)?;
        ctx.report(&format!("the command reference is in {} and {}", reference::MARKDOWN_DIR, reference::MAN_DIR));
        Ok(())
    })?;
    ctx.step("build the book", || {
        let sh = ctx.sh();
        if ctx.read(cmd!(sh, "mdbook --version")).is_err() {
            ctx.say(
                "mdbook is not on PATH: the book was not built (`cargo install mdbook --locked`, then `cargo xtask docs`)",
            );
            return Ok(());
        }
        ctx.run(cmd!(sh, "mdbook build {docs}"))
    })
}

/// Write only what changed, so that a run with nothing new touches no file.
fn write_if_changed(ctx: &Ctx, path: &Path, text: &str) -> Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    ctx.write_file(path, text)
}

/// The files directly in `dir` (none when it does not exist yet, as in a dry run).
fn files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(Vec::new()) };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.with_context(|| format!("cannot list {}", dir.display()))?.path();
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
