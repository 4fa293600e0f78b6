//! `history [--json]`: the stack's deploys and rollbacks as the swarm keeps
//! them (`records::history`), newest first.

use anyhow::{Context, Result};
use xtask::ctx::Ctx;
use xtask::flags::HistoryArgs as Args;

use crate::records::history::{Entry, list};

/// `cargo xtask history [--json]`.
pub fn run(ctx: &Ctx, args: &Args) -> Result<()> {
    let stack = &ctx.settings.stack;
    let entries = list(ctx, stack)?;
    if args.json {
        let json = serde_json::to_string_pretty(&entries).context("cannot encode the history")?;
        ctx.print_result(&json);
        return Ok(());
    }
    if entries.is_empty() {
        ctx.say(&format!("no deploy of stack {stack} is recorded yet"));
        return Ok(());
    }
    ctx.print_result(&table(&entries));
    Ok(())
}

/// One line per entry: when, what, version, outcome, who, commit, digest.
fn table(entries: &[Entry]) -> String {
    let short = |text: Option<&str>, len: usize| {
        text.map(|text| text.chars().take(len).collect()).unwrap_or_else(|| "-".to_owned())
    };
    let mut lines = vec![format!(
        "{:<20}  {:<8}  {:<16}  {:<19}  {:<12}  {:<8}  {}",
        "WHEN", "KIND", "VERSION", "OUTCOME", "BY", "COMMIT", "DIGEST"
    )];
    for entry in entries {
        let digest = entry.digest.as_deref().map(|digest| digest.trim_start_matches("sha256:"));
        // A deploy that skipped its verification says so where it says it converged.
        let outcome = match entry.verification.as_deref() {
            Some(skipped) if skipped.starts_with("skipped") => format!("{} (--no-verify)", entry.outcome),
            _ => entry.outcome.to_string(),
        };
        lines.push(format!(
            "{:<20}  {:<8}  {:<16}  {:<19}  {:<12}  {:<8}  {}",
            entry.at,
            entry.kind,
            entry.version,
            outcome,
            entry.actor,
            short(entry.commit.as_deref(), 8),
            short(digest, 12)
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::history::Outcome;
    use crate::records::history::tests::at;

    #[test]
    fn the_table_has_a_line_per_entry_under_a_header() {
        let mut entry = at("A", "2026-11-24T01:00:00Z", Outcome::Converged);
        entry.digest = Some("sha256:0123456789abcdef".into());
        let table = table(&[entry]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("WHEN"));
        assert!(lines[1].contains("converged") && lines[1].contains("0123456789ab") && !lines[1].contains("sha256"));
    }
}
