//! The stack's services as specs, field by field: as the stack file
//! describes them and as the swarm runs them, what a deploy recorded of them,
//! and the plan between the two.
//!
//! The desired side is the stack file as deploy reads it
//! (`stackfile::interpolated`, the same code), turned into fields as the
//! docker CLI turns it into a service spec (`fields::desired`); the live side
//! is each service's spec from the engine API (`fields::live`). Images are
//! compared by tag and, when the registry answers, by the digest it resolves
//! the tag to.

pub mod diff;
pub mod drift;
pub mod fields;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Context, Result};
use xtask::ctx::Ctx;

use crate::async_ctx::AsyncCtx;
use crate::stackfile;
use fields::Fields;

/// The stack file's services as fields, with the digest of each image where
/// `digests` has one.
pub fn desired_services(
    ctx: &Ctx,
    source: &stackfile::Source,
    digests: &HashMap<String, String>,
) -> Result<BTreeMap<String, Fields>> {
    let sh = ctx.sh();
    let lookup = |name: &str| sh.var(name).ok();
    let file = stackfile::interpolated(&source.shown, &source.text, &lookup)?;
    let base_dir = source.path.parent().unwrap_or(&ctx.settings.root);
    let stack = fields::StackFile { stack: &ctx.settings.stack, file: &file, base_dir, lookup: &lookup };
    let mut services = BTreeMap::new();
    for (name, service) in file.get("services").and_then(serde_yaml::Value::as_mapping).into_iter().flatten() {
        let Some(name) = name.as_str() else { continue };
        let mut fields = fields::desired(&stack, service);
        let image = service.get("image").and_then(serde_yaml::Value::as_str).unwrap_or_default();
        if let Some(digest) = digests.get(image).filter(|digest| digest.starts_with("sha256:")) {
            fields.insert("image.digest".into(), digest.clone());
        }
        services.insert(name.to_owned(), fields);
    }
    Ok(services)
}

/// The stack's services as the swarm runs them, as fields, by their name in
/// the stack file.
///
/// The specs are the engine's JSON as it sends it, read with `docker service
/// inspect` on the same endpoint: bollard's model names the healthcheck
/// `HealthCheck` where the engine sends `Healthcheck`, so its typed spec
/// loses it (and a plan would always show the healthcheck as added).
pub fn live_services(ctx: &Ctx, docker: &bollard::Docker, stack: &str) -> Result<BTreeMap<String, Fields>> {
    let (services, networks) = ctx.block_on(async {
        let services = crate::stack::services(docker, stack).await?;
        let networks = docker.list_networks(None).await.context("cannot list the swarm's networks")?;
        Ok((services, networks))
    })?;
    let network_names: BTreeMap<String, String> =
        networks.into_iter().filter_map(|network| Some((network.id?, network.name?))).collect();
    let ids: Vec<String> = services.into_iter().filter_map(|service| service.id).collect();
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let sh = ctx.sh();
    let inspected = ctx.read(xshell::cmd!(sh, "docker service inspect {ids...}"))?;
    let inspected: Vec<serde_json::Value> =
        serde_json::from_str(&inspected).context("`docker service inspect` did not answer a JSON list")?;
    let prefix = format!("{stack}_");
    let mut live = BTreeMap::new();
    for service in inspected {
        let spec = &service["Spec"];
        let full = spec["Name"].as_str().unwrap_or_default();
        let name = full.strip_prefix(&prefix).unwrap_or(full).to_owned();
        live.insert(name, fields::live(spec, &network_names));
    }
    Ok(live)
}

/// The digests of the stack file's images as the registry resolves them,
/// with the Docker config's stored credentials; the images it did not
/// resolve (said on stderr: the plan goes on by tag).
pub fn resolve_digests(
    ctx: &Ctx,
    docker: &bollard::Docker,
    services: &[stackfile::ServiceDef],
) -> (HashMap<String, String>, Vec<String>) {
    let images: BTreeSet<&str> = services.iter().map(|service| service.image.as_str()).collect();
    let mut digests = HashMap::new();
    let mut unresolved = Vec::new();
    for image in images {
        let reference = crate::image_ref::ImageRef::parse(image);
        let resolved = match &reference.registry {
            Some(registry) => crate::docker_config::credential(ctx.sh(), registry),
            None => Ok(None),
        }
        .and_then(|credentials| ctx.block_on(crate::registry::digest(docker, image, credentials)));
        match resolved {
            Ok(digest) => {
                digests.insert(image.to_owned(), digest);
            }
            Err(err) => {
                ctx.warn(&format!("{err:#}"));
                unresolved.push(image.to_owned());
            }
        }
    }
    (digests, unresolved)
}
