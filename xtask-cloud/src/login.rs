//! `login`: Docker in to the ECR registry with a fresh authorization token
//! (GetAuthorizationToken through the SDK; no `aws` CLI). The password goes to
//! `docker login --password-stdin`, so it is never in the process list, and
//! the credential lands wherever the Docker config keeps them (credsStore,
//! credHelpers).

use anyhow::Result;
use xshell::cmd;

use crate::docker_config;
use crate::ecr::{self, Authorization};
use xtask::ctx::Ctx;

pub fn run(ctx: &Ctx) -> Result<()> {
    // A named registry can be checked for the ECR helper before any AWS call.
    if let Some(registry) = &ctx.settings.explicit_registry
        && helper_in_use(registry)?
    {
        return Ok(());
    }
    let auth = ctx.step("get an ECR authorization token", || ecr::authorization(ctx))?;
    if ctx.settings.explicit_registry.is_none() && helper_in_use(&auth.registry)? {
        return Ok(());
    }
    login_with(ctx, &auth)
}

/// `docker login` to `auth.registry` with the token's password on stdin.
pub fn login_with(ctx: &Ctx, auth: &Authorization) -> Result<()> {
    let registry = &auth.registry;
    ctx.step(&format!("log Docker in to {registry}"), || {
        let sh = ctx.sh();
        let user = &auth.username;
        ctx.run_with_secret(cmd!(sh, "docker login --username {user} --password-stdin {registry}"), &auth.password)
            .map_err(|err| crate::registry::explain_registry_error("docker login", registry, &format!("{err:#}")))
    })?;
    ctx.report(&format!("logged in to {registry}; the token expires {}", auth.expiry_text()));
    Ok(())
}

/// Whether Docker already gets this registry's credential from
/// docker-credential-ecr-login, which makes a login pointless.
fn helper_in_use(registry: &str) -> Result<bool> {
    if !docker_config::uses_ecr_helper(registry)? {
        return Ok(false);
    }
    xtask::output::say(&format!(
        "Docker gets the credential for {registry} from docker-credential-ecr-login (credHelpers/credsStore in {}): no login needed",
        docker_config::config_path().display()
    ));
    Ok(true)
}
