//! Which Docker engine the xtask talks to, resolved once, the way the docker
//! CLI resolves it: `DOCKER_HOST`; else the context `DOCKER_CONTEXT` names;
//! else the `currentContext` of `$DOCKER_CONFIG/config.json`; else the
//! default socket. `Ctx` exports the result to every docker CLI command it
//! runs, and the cloud tasks connect the engine API to the same endpoint, so
//! both always talk to one engine.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// An engine's address and how it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `unix:///var/run/docker.sock`, `tcp://host:2376`, `ssh://user@host`.
    pub host: String,
    /// Where it came from, for messages: `DOCKER_HOST`, `context "other"`, ...
    pub origin: String,
    pub tls: Option<Tls>,
}

/// TLS material for a `tcp://` endpoint: a directory with `ca.pem`,
/// `cert.pem` and `key.pem`, as `DOCKER_CERT_PATH` and contexts keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub cert_dir: PathBuf,
    pub verify: bool,
}

/// The Docker CLI's configuration directory: DOCKER_CONFIG, else ~/.docker.
pub fn config_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    match env("DOCKER_CONFIG").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env("HOME").unwrap_or_default()).join(".docker"),
    }
}

/// Resolve the endpoint from the environment (`env`) and the CLI's
/// configuration directory.
pub fn resolve(env: &dyn Fn(&str) -> Option<String>) -> Result<Endpoint> {
    let set = |name: &str| env(name).filter(|value| !value.trim().is_empty());
    let config = config_dir(env);
    if let Some(host) = set("DOCKER_HOST") {
        let tls = (set("DOCKER_TLS_VERIFY").is_some() || set("DOCKER_TLS").is_some()).then(|| Tls {
            cert_dir: set("DOCKER_CERT_PATH").map_or_else(|| config.clone(), PathBuf::from),
            verify: set("DOCKER_TLS_VERIFY").is_some(),
        });
        return Ok(Endpoint { host, origin: "DOCKER_HOST".to_owned(), tls });
    }
    let (name, origin) = match set("DOCKER_CONTEXT") {
        Some(name) => (name.clone(), format!("context {name:?} (DOCKER_CONTEXT)")),
        None => match current_context(&config)? {
            Some(name) => {
                (name.clone(), format!("context {name:?} (currentContext in {})", config.join("config.json").display()))
            }
            None => {
                return Ok(Endpoint {
                    host: DEFAULT_HOST.to_owned(),
                    origin: "the default socket".to_owned(),
                    tls: None,
                });
            }
        },
    };
    if name == "default" {
        return Ok(Endpoint { host: DEFAULT_HOST.to_owned(), origin, tls: None });
    }
    context(&config, &name, origin)
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(rename = "currentContext", default)]
    current_context: Option<String>,
}

/// `currentContext` of config.json (JSON is YAML, so the light binary reads
/// it with the YAML parser it has).
fn current_context(config: &Path) -> Result<Option<String>> {
    let path = config.join("config.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("cannot read the Docker config {}", path.display())),
    };
    let file: ConfigFile = serde_yaml::from_str(&text)
        .map_err(|err| anyhow::anyhow!("the Docker config {} is not valid JSON: {err}", path.display()))?;
    Ok(file.current_context.filter(|name| !name.is_empty()))
}

#[derive(Deserialize)]
struct Meta {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Endpoints", default)]
    endpoints: Endpoints,
}

#[derive(Deserialize, Default)]
struct Endpoints {
    docker: Option<DockerEndpoint>,
}

#[derive(Deserialize)]
struct DockerEndpoint {
    #[serde(rename = "Host")]
    host: Option<String>,
    #[serde(rename = "SkipTLSVerify", default)]
    skip_tls_verify: bool,
}

/// A context from the CLI's context store: `contexts/meta/<id>/meta.json`,
/// its TLS material in `contexts/tls/<id>/docker/`. The id is a SHA-256 of
/// the name; the store is read by the `Name` in each meta.json instead, so
/// the light binary needs no hash function.
fn context(config: &Path, name: &str, origin: String) -> Result<Endpoint> {
    let meta_dir = config.join("contexts/meta");
    let entries = std::fs::read_dir(&meta_dir).ok().into_iter().flatten().filter_map(|entry| entry.ok());
    for entry in entries {
        let Ok(text) = std::fs::read_to_string(entry.path().join("meta.json")) else { continue };
        let Ok(meta) = serde_yaml::from_str::<Meta>(&text) else { continue };
        if meta.name != name {
            continue;
        }
        let docker = meta.endpoints.docker.with_context(|| format!("{origin} has no Docker endpoint"))?;
        let host = docker.host.filter(|host| !host.is_empty()).with_context(|| format!("{origin} names no host"))?;
        let tls_dir = config.join("contexts/tls").join(entry.file_name()).join("docker");
        let has_tls = tls_dir.join("ca.pem").is_file();
        let tls = has_tls.then_some(Tls { cert_dir: tls_dir, verify: !docker.skip_tls_verify });
        return Ok(Endpoint { host, origin, tls });
    }
    bail!("{origin} does not exist in {}: `docker context ls` lists the contexts", meta_dir.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    fn store(dir: &Path, id: &str, name: &str, host: &str) {
        let meta = dir.join("contexts/meta").join(id);
        std::fs::create_dir_all(&meta).unwrap();
        let json = format!(
            r#"{{"Name":"{name}","Metadata":{{}},"Endpoints":{{"docker":{{"Host":"{host}","SkipTLSVerify":false}}}}}}"#
        );
        std::fs::write(meta.join("meta.json"), json).unwrap();
    }

    #[test]
    fn docker_host_wins_then_docker_context_then_the_config_then_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().to_str().unwrap();
        store(dir.path(), "aa11", "other", "unix:///somewhere/docker.sock");
        store(dir.path(), "bb22", "remote", "ssh://deploy@manager");
        std::fs::write(dir.path().join("config.json"), r#"{"auths": {}, "currentContext": "remote"}"#).unwrap();

        let both =
            resolve(&env(&[("DOCKER_CONFIG", config), ("DOCKER_HOST", "tcp://h:1"), ("DOCKER_CONTEXT", "other")]))
                .unwrap();
        assert_eq!((both.host.as_str(), both.origin.as_str()), ("tcp://h:1", "DOCKER_HOST"));
        let context = resolve(&env(&[("DOCKER_CONFIG", config), ("DOCKER_CONTEXT", "other")])).unwrap();
        assert_eq!(context.host, "unix:///somewhere/docker.sock");
        assert!(context.origin.contains("context \"other\""), "{}", context.origin);
        let current = resolve(&env(&[("DOCKER_CONFIG", config)])).unwrap();
        assert_eq!(current.host, "ssh://deploy@manager");
        assert!(current.origin.contains("currentContext"), "{}", current.origin);
        let default = resolve(&env(&[("DOCKER_CONFIG", config), ("DOCKER_CONTEXT", "default")])).unwrap();
        assert_eq!(default.host, DEFAULT_HOST);
        let empty = tempfile::tempdir().unwrap();
        let nothing = resolve(&env(&[("DOCKER_CONFIG", empty.path().to_str().unwrap())])).unwrap();
        assert_eq!((nothing.host.as_str(), nothing.origin.as_str()), (DEFAULT_HOST, "the default socket"));
    }

    #[test]
    fn an_unknown_context_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve(&env(&[("DOCKER_CONFIG", dir.path().to_str().unwrap()), ("DOCKER_CONTEXT", "nope")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("context \"nope\"") && err.contains("docker context ls"), "{err}");
    }

    #[test]
    fn tls_comes_from_the_environment_or_the_context_store() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().to_str().unwrap();
        let tls = resolve(&env(&[
            ("DOCKER_CONFIG", config),
            ("DOCKER_HOST", "tcp://h:2376"),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", "/certs"),
        ]))
        .unwrap();
        assert_eq!(tls.tls, Some(Tls { cert_dir: "/certs".into(), verify: true }));
        let plain = resolve(&env(&[("DOCKER_CONFIG", config), ("DOCKER_HOST", "tcp://h:2375")])).unwrap();
        assert_eq!(plain.tls, None);
        store(dir.path(), "cc33", "secure", "tcp://h:2376");
        let material = dir.path().join("contexts/tls/cc33/docker");
        std::fs::create_dir_all(&material).unwrap();
        std::fs::write(material.join("ca.pem"), "x").unwrap();
        let secure = resolve(&env(&[("DOCKER_CONFIG", config), ("DOCKER_CONTEXT", "secure")])).unwrap();
        assert_eq!(secure.tls, Some(Tls { cert_dir: material, verify: true }));
    }
}
