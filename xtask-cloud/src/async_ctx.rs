//! What the cloud tasks add to `Ctx`: an async runtime and the Docker engine
//! connection, each made on first use, and API calls that a dry run prints
//! instead of making.

use std::future::Future;
use std::sync::OnceLock;

use anyhow::{Context, Result};

use xtask::ctx::Ctx;

// One process runs one command line: the runtime and the engine connection
// live as long as it does.
static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
static DOCKER: OnceLock<bollard::Docker> = OnceLock::new();

pub trait AsyncCtx {
    /// A call to an API (AWS, the Docker engine) that changes something: in
    /// a dry run, print `description` and return `planned` (the value the
    /// plan goes on with); otherwise run `call` to completion. Reads are not
    /// calls: they run in a dry run too, through `block_on`.
    fn call<T, F: Future<Output = Result<T>>>(&self, description: &str, planned: T, call: F) -> Result<T>;

    /// Run async work on the runtime.
    fn block_on<T>(&self, future: impl Future<Output = Result<T>>) -> Result<T>;

    /// The Docker engine API, connected (and version-negotiated) once per run.
    fn docker(&self) -> impl Future<Output = Result<bollard::Docker>>;
}

impl AsyncCtx for Ctx {
    fn call<T, F: Future<Output = Result<T>>>(&self, description: &str, planned: T, call: F) -> Result<T> {
        self.effect(&format!("api: {description}"), planned, || self.block_on(call))
    }

    fn block_on<T>(&self, future: impl Future<Output = Result<T>>) -> Result<T> {
        if RUNTIME.get().is_none() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime for AWS and Docker calls")?;
            let _ = RUNTIME.set(runtime);
        }
        RUNTIME.get().context("async runtime missing")?.block_on(future)
    }

    async fn docker(&self) -> Result<bollard::Docker> {
        if let Some(docker) = DOCKER.get() {
            return Ok(docker.clone());
        }
        let docker = crate::docker::connect(self.docker_endpoint()).await?;
        Ok(DOCKER.get_or_init(|| docker).clone())
    }
}
