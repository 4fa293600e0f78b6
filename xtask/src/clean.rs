//! `clean`: the local environment down with its volumes, then the dangling
//! images labelled `application=<app>` (old builds whose tags moved on).
//! Nothing else is touched; with nothing to clean it succeeds. A light task:
//! the docker CLI does all of it, so `clean` never builds the AWS SDK.

use anyhow::{Context, Result};
use xshell::cmd;

use crate::compose::Compose;
use crate::ctx::Ctx;

pub fn run(ctx: &Ctx) -> Result<()> {
    ctx.step("remove the local environment and its volumes", || {
        let compose = Compose::detect(ctx)?;
        ctx.run(compose.cmd(ctx, &["down", "--volumes", "--remove-orphans"]))
    })?;
    ctx.step("remove dangling project images", || {
        let sh = ctx.sh();
        let label = format!("label=application={}", ctx.settings.app);
        let listed =
            ctx.read(cmd!(sh, "docker image ls --quiet --no-trunc --filter dangling=true --filter {label}"))?;
        let ids: Vec<&str> = listed.lines().map(str::trim).filter(|id| !id.is_empty()).collect();
        if ids.is_empty() {
            eprintln!("no dangling images with the {label}");
        }
        for id in ids {
            // Not forced: an image a container still uses is kept, and said so.
            // Pruned (the default): its untagged parent layers, labelled too,
            // go with it instead of dangling in turn.
            let remove = cmd!(sh, "docker image rm {id}");
            let line = remove.to_string();
            ctx.effect(&format!("$ {line}"), || {
                let output = remove.quiet().ignore_status().output().with_context(|| format!("cannot run `{line}`"))?;
                let stderr = String::from_utf8_lossy(&output.stderr);
                match removal(output.status.success(), &stderr) {
                    Removal::Removed => eprintln!("removed {id}"),
                    Removal::AlreadyGone => {}
                    Removal::Kept(reason) => eprintln!("kept {id}: {reason}"),
                }
                Ok(())
            })?;
        }
        Ok(())
    })
}

#[derive(Debug, PartialEq)]
enum Removal {
    Removed,
    /// Removed before it, as the parent of an image removed earlier.
    AlreadyGone,
    Kept(String),
}

fn removal(success: bool, stderr: &str) -> Removal {
    if success {
        return Removal::Removed;
    }
    let reason = stderr.lines().map(str::trim).rfind(|line| !line.is_empty()).unwrap_or("no reason given");
    if reason.contains("No such image") {
        Removal::AlreadyGone
    } else {
        Removal::Kept(reason.trim_start_matches("Error response from daemon: ").to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_are_told_apart() {
        assert_eq!(removal(true, ""), Removal::Removed);
        assert_eq!(removal(false, "Error response from daemon: No such image: sha256:ab\n"), Removal::AlreadyGone);
        assert_eq!(
            removal(
                false,
                "Error response from daemon: conflict: unable to delete ab (must be forced) - image is being used by stopped container 1\n"
            ),
            Removal::Kept(
                "conflict: unable to delete ab (must be forced) - image is being used by stopped container 1".into()
            )
        );
    }
}
