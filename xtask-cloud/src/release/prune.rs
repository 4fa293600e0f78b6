//! Services the stack file no longer has: `docker stack deploy` leaves them
//! running unless `--prune`. `deploy` says so (a warning naming them);
//! `deploy --prune` passes `--prune` to the whole stack's deploy (never to
//! the jobs-first deploy, whose file holds only the jobs).

use xtask::ctx::Ctx;

use crate::async_ctx::AsyncCtx;
use crate::stackfile::ServiceDef;

/// The stack's services, by their name in the file, that `services` (the
/// stack file's) does not have.
pub async fn left_out(docker: &bollard::Docker, stack: &str, services: &[ServiceDef]) -> anyhow::Result<Vec<String>> {
    let prefix = format!("{stack}_");
    let live = crate::stack::services(docker, stack).await?;
    Ok(live
        .iter()
        .filter_map(|service| service.spec.as_ref()?.name.clone())
        .map(|name| name.strip_prefix(&prefix).map(str::to_owned).unwrap_or(name))
        .filter(|name| !services.iter().any(|service| &service.name == name))
        .collect())
}

/// Warn about the services a deploy without `--prune` leaves running.
pub fn warn_about_left_services(ctx: &Ctx, docker: &bollard::Docker, stack: &str, services: &[ServiceDef]) {
    match ctx.block_on(left_out(docker, stack, services)) {
        Ok(names) if names.is_empty() => {}
        Ok(names) => ctx.warn(&format!(
            "{} of stack {stack} {} not in {}: left running; `cargo xtask deploy --prune` removes {}",
            names.join(", "),
            if names.len() == 1 { "is" } else { "are" },
            ctx.settings.stack_file.file_name().map(|name| name.to_string_lossy()).unwrap_or_default(),
            if names.len() == 1 { "it" } else { "them" }
        )),
        Err(err) => {
            ctx.warn(&format!("cannot tell whether stack {stack} runs services its file no longer has: {err:#}"))
        }
    }
}
