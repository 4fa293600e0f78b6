//! The local environment (`docker-compose.yml`), through Docker Compose v2
//! (`docker compose`) or v1 (`docker-compose`, the one Debian 12 ships).

use anyhow::{Result, bail};
use xshell::{Cmd, cmd};

use crate::ctx::Ctx;

pub struct Compose {
    /// `["docker", "compose"]` or `["docker-compose"]`.
    program: Vec<&'static str>,
}

impl Compose {
    /// Find Compose: the v2 plugin if the docker CLI has it, else v1. Refuses
    /// a project whose name is a swarm stack's on this engine: compose would
    /// share that stack's volumes (its production data).
    pub fn detect(ctx: &Ctx) -> Result<Compose> {
        let sh = ctx.sh();
        let project = &ctx.settings.compose_project;
        let stack_label = format!("label=com.docker.stack.namespace={project}");
        let stack_volumes = ctx.read(cmd!(sh, "docker volume ls --quiet --filter {stack_label}"))?;
        if !stack_volumes.trim().is_empty() {
            bail!(
                "the compose project {project:?} has the name of a swarm stack on this engine, whose volumes it would \
                 share: set COMPOSE_PROJECT_NAME (or --compose-project) to another name"
            );
        }
        if cmd!(sh, "docker compose version").quiet().ignore_stdout().ignore_stderr().run().is_ok() {
            return Ok(Compose { program: vec!["docker", "compose"] });
        }
        if cmd!(sh, "docker-compose version").quiet().ignore_stdout().ignore_stderr().run().is_ok() {
            return Ok(Compose { program: vec!["docker-compose"] });
        }
        bail!(
            "neither `docker compose` (v2) nor `docker-compose` (v1) is installed: install Docker Compose \
             (Debian: `apt-get install docker-compose`; Docker Desktop includes v2)"
        )
    }

    /// `<compose> -p <project> -f <file> <args...>`, at the project root with
    /// the workflow's variables exported.
    pub fn cmd<'a>(&self, ctx: &'a Ctx, args: &[&str]) -> Cmd<'a> {
        let sh = ctx.sh();
        let (program, prefix) = self.program.split_first().expect("compose program is never empty");
        let project = &ctx.settings.compose_project;
        let file = &ctx.settings.compose_file;
        cmd!(sh, "{program} {prefix...} -p {project} -f {file} {args...}")
    }
}
