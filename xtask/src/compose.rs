//! The local environment (`docker-compose.yml`), through Docker Compose v2
//! (`docker compose`) or v1 (`docker-compose`, the one Debian 12 ships).

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
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

/// Networks of one compose project that share a name: what two compose
/// commands racing to create the project's network leave (before the lock
/// of `local_lock`, two `release` at once did). Every compose command of the
/// project then fails ("network ... is ambiguous"). Returns, for each
/// duplicated name, the ids to remove: those no container is attached to,
/// or all of them when none has a container (compose makes the network
/// again). More than one with containers: the way out, as an error.
pub fn duplicate_networks(networks: &[(String, String, usize)]) -> Result<Vec<(String, Vec<String>)>> {
    let mut by_name: BTreeMap<&str, Vec<(&str, usize)>> = BTreeMap::new();
    for (id, name, containers) in networks {
        by_name.entry(name).or_default().push((id, *containers));
    }
    let mut repairs = Vec::new();
    for (name, copies) in by_name.into_iter().filter(|(_, copies)| copies.len() > 1) {
        let in_use: Vec<&str> = copies.iter().filter(|(_, containers)| *containers > 0).map(|(id, _)| *id).collect();
        if in_use.len() > 1 {
            let project = name.rsplit_once('_').map_or(name, |(project, _)| project);
            bail!(
                "{} networks are named {name} and containers are attached to several of them ({}): remove the \
                 project's containers (`docker ps --all --filter label=com.docker.compose.project={project}`), \
                 then run this again",
                copies.len(),
                in_use.join(", ")
            );
        }
        let unused = copies.iter().filter(|(_, containers)| *containers == 0).map(|(id, _)| (*id).to_owned()).collect();
        repairs.push((name.to_owned(), unused));
    }
    Ok(repairs)
}

impl Compose {
    /// Remove, by id, the duplicated networks of this project (see
    /// [`duplicate_networks`]); run under the local environment's lock,
    /// when no other compose command of the project is under way.
    pub fn repair_networks(&self, ctx: &Ctx) -> Result<()> {
        let sh = ctx.sh();
        let project = &ctx.settings.compose_project;
        let prefix = format!("{project}_");
        let name_filter = format!("name={prefix}");
        let ids = ctx.read(cmd!(sh, "docker network ls --quiet --no-trunc --filter {name_filter}"))?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.len() < 2 {
            return Ok(());
        }
        let format = "{{.Id}} {{.Name}} {{len .Containers}}";
        let inspected = ctx
            .read(cmd!(sh, "docker network inspect --format {format} {ids...}"))
            .context("cannot inspect the local environment's networks")?;
        let networks: Vec<(String, String, usize)> = inspected
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let (id, name, containers) = (parts.next()?, parts.next()?, parts.next()?.parse().ok()?);
                // The name filter matches anywhere in a name: keep the project's own.
                name.starts_with(&prefix).then(|| (id.to_owned(), name.to_owned(), containers))
            })
            .collect();
        for (name, remove) in duplicate_networks(&networks)? {
            ctx.say(&format!(
                "repairing the local environment: networks named {name} more than once (left by two compose \
                 commands at once); removing {} by id",
                remove.join(", ")
            ));
            ctx.run(cmd!(sh, "docker network rm {remove...}"))
                .with_context(|| format!("cannot remove the duplicated networks {name}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::duplicate_networks;

    fn net(id: &str, name: &str, containers: usize) -> (String, String, usize) {
        (id.to_owned(), name.to_owned(), containers)
    }

    #[test]
    fn duplicated_networks_are_removed_except_the_one_in_use() {
        assert!(duplicate_networks(&[net("a", "p_default", 1), net("b", "p_other", 0)]).unwrap().is_empty());
        let repairs = duplicate_networks(&[net("a", "p_default", 0), net("b", "p_default", 0)]).unwrap();
        assert_eq!(repairs, [("p_default".to_owned(), vec!["a".to_owned(), "b".to_owned()])], "none used: all go");
        let repairs =
            duplicate_networks(&[net("a", "p_default", 2), net("b", "p_default", 0), net("c", "p_default", 0)])
                .unwrap();
        assert_eq!(repairs, [("p_default".to_owned(), vec!["b".to_owned(), "c".to_owned()])], "the used one stays");
        let err = duplicate_networks(&[net("a", "p_default", 1), net("b", "p_default", 1)]).unwrap_err().to_string();
        assert!(err.contains("p_default") && err.contains("a, b") && err.contains("project=p`"), "{err}");
    }
}
