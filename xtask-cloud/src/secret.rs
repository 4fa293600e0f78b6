//! `secret create NAME`: a Docker secret for the stack, its value read from
//! stdin. The value goes to the engine through its API, so no process's
//! argv, no environment and no log ever holds it. Secrets cannot change: an
//! existing name is refused, and rotation is a new, versioned name (docs/src/operating.md, Secrets).

use std::collections::HashMap;
use std::io::{IsTerminal, Read};

use anyhow::{Context, Result, bail};
use bollard::models::SecretSpec;
use xtask::ctx::Ctx;
use xtask::flags::{SecretAction, SecretArgs as Args};

use crate::async_ctx::AsyncCtx;

pub fn run(ctx: &Ctx, args: &Args) -> Result<()> {
    match &args.action {
        SecretAction::Create { name } => create(ctx, name),
    }
}

fn create(ctx: &Ctx, name: &str) -> Result<()> {
    check_name(name)?;
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        bail!(
            "secret create reads the value from stdin: `cargo xtask secret create {name} < value-file` (a value typed on the command line would stay in your shell history)"
        );
    }
    let description = format!("create the swarm secret {name} from stdin");
    ctx.call(&description, (), async {
        let mut value = Vec::new();
        stdin.lock().read_to_end(&mut value).context("cannot read the secret's value from stdin")?;
        if value.is_empty() {
            bail!("stdin was empty: pipe the value in, `cargo xtask secret create {name} < value-file`");
        }
        let spec = SecretSpec {
            name: Some(name.to_owned()),
            labels: Some(HashMap::from([("com.todobackend.stack".to_owned(), ctx.settings.stack.clone())])),
            data: Some(aws_smithy_types::base64::encode(&value)),
            ..Default::default()
        };
        let docker = ctx.docker().await?;
        match docker.create_secret(spec).await {
            Ok(_) => {
                ctx.say(&format!("created the swarm secret {name} ({} bytes)", value.len()));
                Ok(())
            }
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => bail!(
                "the swarm has a secret {name} already, and secrets cannot change: create the new value under a new \
                 name (e.g. {name}_v2) and point the stack file at it (docs/src/operating.md, Secrets)"
            ),
            Err(err) => Err(err).with_context(|| format!("cannot create the secret {name}")),
        }
    })
}

/// Docker's secret names: letters, digits, `-`, `_`, `.`, up to 64, starting
/// and ending with a letter or digit.
fn check_name(name: &str) -> Result<()> {
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let ok = name.len() <= 64
        && ends_ok(name.chars().next())
        && ends_ok(name.chars().last())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        bail!(
            "{name:?} is not a secret name: use up to 64 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_follow_docker() {
        for ok in ["db_password", "db-password.v2", "a"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "_x", "x_", "has space", "a/b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
