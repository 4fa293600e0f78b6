//! `refresh-auth`: hand the stack's services a fresh ECR credential, and
//! change nothing else in their specs.
//!
//! `docker stack deploy --with-registry-auth` gives the swarm the ECR token
//! of the moment, which lasts 12 hours; a task rescheduled later, on a node
//! without the image, cannot pull it (moby#36126). This sends each service's
//! own spec back with a fresh credential. The swarm keeps the credential in
//! the tasks' pull options, which it leaves out when it decides whether a
//! task must be replaced: no task restarts (the ops test checks it on the
//! real swarm, with the app answering throughout).

use std::collections::HashMap;

use anyhow::{Context, Result};
use bollard::query_parameters::{ListServicesOptions, UpdateServiceOptions};
use xtask::ctx::Ctx;

use crate::async_ctx::AsyncCtx;
use crate::ecr;

pub fn run(ctx: &Ctx) -> Result<()> {
    let stack = ctx.settings.stack.clone();
    crate::lock::hold(ctx, "refresh-auth", ctx.version(), None, || {
        let auth = ctx.step("get an ECR authorization token", || ecr::authorization(ctx))?;
        let description =
            format!("update every service of stack {stack} with the token's credential, its spec unchanged");
        let updated = ctx.call(&description, async {
            let docker = ctx.docker().await?;
            let filters = HashMap::from([("label".to_owned(), vec![format!("com.docker.stack.namespace={stack}")])]);
            let services = docker
                .list_services(Some(ListServicesOptions { filters: Some(filters), ..Default::default() }))
                .await
                .with_context(|| format!("cannot list the services of stack {stack}"))?;
            if services.is_empty() {
                anyhow::bail!("stack {stack} is not deployed: there is nothing to refresh");
            }
            let mut names = Vec::new();
            for service in services {
                let (Some(id), Some(spec)) = (service.id, service.spec) else { continue };
                let name = spec.name.clone().unwrap_or_else(|| id.clone());
                let version = service.version.and_then(|version| version.index).unwrap_or_default() as i32;
                let options = UpdateServiceOptions { version, ..Default::default() };
                docker
                    .update_service(&id, spec, options, Some(auth.docker_credentials()))
                    .await
                    .with_context(|| format!("cannot hand {name} the new credential"))?;
                names.push(name);
            }
            Ok(names)
        })?;
        if let Some(names) = updated {
            eprintln!(
                "handed {} the credential for {}, valid until {}",
                names.join(", "),
                auth.registry,
                auth.expiry_text()
            );
        }
        Ok(())
    })
}
