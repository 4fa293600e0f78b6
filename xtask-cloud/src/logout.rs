//! `logout`: Docker out of the ECR registry; fine when not logged in.
//!
//! Which registry: ECR_REGISTRY (or --registry, or delivery.yml) when named.
//! Otherwise the one `login` used, the host of the token's proxy endpoint,
//! when the AWS credentials still work; when they do not (expired, absent:
//! `ci` logs out even after a failure), the registry of the settings,
//! `<aws_account_id>.dkr.ecr.<region>.amazonaws.com`. So `logout` never fails
//! for want of credentials.

use anyhow::Result;
use xshell::cmd;

use crate::ecr;
use xtask::ctx::Ctx;

pub fn run(ctx: &Ctx) -> Result<()> {
    let registry = match &ctx.settings.explicit_registry {
        Some(registry) => registry.clone(),
        None => ctx.step("find the registry from an ECR authorization token", || {
            Ok(match ecr::authorization(ctx) {
                Ok(auth) => auth.registry,
                Err(err) => {
                    let fallback = ctx.settings.registry();
                    ctx.say(&format!("cannot get an ECR token ({err:#}); logging out of {fallback}"));
                    fallback
                }
            })
        })?,
    };
    ctx.step(&format!("log Docker out of {registry}"), || {
        let sh = ctx.sh();
        ctx.run(cmd!(sh, "docker logout {registry}"))
    })
}
