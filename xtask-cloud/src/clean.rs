//! `clean`: the local environment down with its volumes, then the dangling
//! images labelled `application=<app>` (old builds whose tags moved on).
//! Nothing else is touched; with nothing to clean it succeeds.

use std::collections::HashMap;

use anyhow::{Context, Result};
use bollard::query_parameters::{ListImagesOptionsBuilder, RemoveImageOptionsBuilder};

use crate::compose::Compose;
use crate::async_ctx::AsyncCtx;
use crate::runner::Ctx;

pub fn run(ctx: &Ctx) -> Result<()> {
    ctx.step("remove the local environment and its volumes", || {
        let compose = Compose::detect(ctx)?;
        ctx.run(compose.cmd(ctx, &["down", "--volumes", "--remove-orphans"])?)
    })?;
    ctx.step("remove dangling project images", || {
        let label = format!("application={}", ctx.settings.app);
        let description = format!("list dangling images labelled {label} and remove each");
        ctx.call(&description, remove_dangling_images(ctx, label))?;
        Ok(())
    })
}

async fn remove_dangling_images(ctx: &Ctx, label: String) -> Result<()> {
    let docker = ctx.docker().await?;
    let filters = HashMap::from([("dangling", vec!["true"]), ("label", vec![label.as_str()])]);
    let images = docker
        .list_images(Some(ListImagesOptionsBuilder::default().filters(&filters).build()))
        .await
        .context("cannot list images")?;
    if images.is_empty() {
        eprintln!("no dangling images labelled {label}");
    }
    for image in images {
        // Not forced: an image a container still uses is left, and said so.
        // Pruned: its untagged parent layers (labelled too, as the label comes
        // early in the Dockerfile) go with it instead of dangling in turn.
        let options = RemoveImageOptionsBuilder::default().noprune(false).build();
        match docker.remove_image(&image.id, Some(options), None).await {
            Ok(_) => eprintln!("removed {}", image.id),
            // Already gone as the parent of one removed before it.
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(err) => eprintln!("kept {}: {err}", image.id),
        }
    }
    Ok(())
}
