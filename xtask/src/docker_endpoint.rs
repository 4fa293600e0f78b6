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
    /// `unix:///var/run/docker.sock`, `tcp://host:2376`, `ssh://user@host`:
    /// as written, for the docker CLI's DOCKER_HOST.
    pub host: String,
    /// Where it came from, for messages: `DOCKER_HOST`, `context "other"`, ...
    pub origin: String,
    pub tls: Option<Tls>,
    /// How the engine API reaches it, read from `host`.
    pub transport: Transport,
}

/// The kinds of endpoint the docker CLI and this xtask both speak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A socket file: `unix:///var/run/docker.sock`.
    Unix(PathBuf),
    /// HTTP over TCP, with TLS when the endpoint has its material:
    /// `tcp://host:2376` (or `http://`, `https://`).
    Tcp,
    /// `docker system dial-stdio` over ssh: `ssh://[user@]host[:port]`.
    Ssh,
}

impl Endpoint {
    /// An endpoint whose `host` is a URL of a kind in [`Transport`]; anything
    /// else is an error that names it, where it came from, and the forms.
    pub fn new(host: String, origin: String, tls: Option<Tls>) -> Result<Endpoint> {
        let forms = "write unix:///path/to/docker.sock, tcp://HOST:PORT or ssh://[USER@]HOST[:PORT]";
        let url = url::Url::parse(&host)
            .map_err(|err| anyhow::anyhow!("{host:?} ({origin}) is not a Docker endpoint ({err}): {forms}"))?;
        let has_host = url.host_str().is_some_and(|name| !name.is_empty());
        let transport = match url.scheme() {
            // No host, an absolute path (percent-decoded, as the URL allows).
            "unix" if !has_host => url.to_file_path().ok().map(Transport::Unix),
            "tcp" | "http" | "https" if has_host => Some(Transport::Tcp),
            "ssh" if has_host && matches!(url.path(), "" | "/") => Some(Transport::Ssh),
            _ => None,
        };
        let Some(transport) = transport else {
            bail!("{host:?} ({origin}) is not a Docker endpoint this xtask can reach: {forms}");
        };
        Ok(Endpoint { host, origin, tls, transport })
    }

    /// The default socket, as the docker CLI falls back to it.
    fn default_socket(origin: String) -> Endpoint {
        let transport = Transport::Unix(PathBuf::from(DEFAULT_HOST.trim_start_matches("unix://")));
        Endpoint { host: DEFAULT_HOST.to_owned(), origin, tls: None, transport }
    }
}

/// The one line for an engine that does not answer at `endpoint`: where,
/// from which setting, and what to do. The cloud tasks say the same.
pub fn unreachable_message(endpoint: &Endpoint) -> String {
    let Endpoint { host, origin, .. } = endpoint;
    match &endpoint.transport {
        // The docker CLI's own check, not `ssh HOST docker version`: a key
        // restricted on the manager to `docker system dial-stdio`
        // (docs/src/ci.md) runs that whatever ssh asks.
        Transport::Ssh => format!(
            "no Docker engine answers at {host} ({origin}): check the ssh connection and the engine behind it \
             (`docker --host {host} version` must work), or fix {origin}"
        ),
        _ => format!(
            "no Docker engine answers at {host} ({origin}): start Docker (e.g. `sudo systemctl start docker`, \
             or `sudo dockerd &`), or fix {origin}"
        ),
    }
}

/// How long the light tasks wait for the engine to answer before saying it
/// does not: a local engine answers in milliseconds.
const REACH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Check, before any compile or build, that an engine answers `GET /_ping`
/// at `endpoint` (unix socket or plain tcp; TLS and ssh endpoints are left to
/// the docker CLI, whose own message then says why).
pub fn check_reachable(endpoint: &Endpoint) -> Result<()> {
    use std::io::{Read, Write};
    fn ping(mut stream: impl Read + Write) -> std::io::Result<bool> {
        stream.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")?;
        let mut answer = [0u8; 12];
        stream.read_exact(&mut answer)?;
        Ok(answer.starts_with(b"HTTP/1."))
    }
    let answered = match &endpoint.transport {
        Transport::Unix(path) => std::os::unix::net::UnixStream::connect(path).and_then(|stream| {
            stream.set_read_timeout(Some(REACH_TIMEOUT))?;
            stream.set_write_timeout(Some(REACH_TIMEOUT))?;
            ping(stream)
        }),
        Transport::Tcp if endpoint.tls.is_none() => {
            let address = url::Url::parse(&endpoint.host)
                .ok()
                .and_then(|url| url.socket_addrs(|| Some(2375)).ok())
                .and_then(|addresses| addresses.into_iter().next());
            match address {
                Some(address) => std::net::TcpStream::connect_timeout(&address, REACH_TIMEOUT).and_then(|stream| {
                    stream.set_read_timeout(Some(REACH_TIMEOUT))?;
                    stream.set_write_timeout(Some(REACH_TIMEOUT))?;
                    ping(stream)
                }),
                None => Ok(false),
            }
        }
        Transport::Tcp | Transport::Ssh => return Ok(()),
    };
    match answered {
        Ok(true) => Ok(()),
        Ok(false) => bail!("{}", unreachable_message(endpoint)),
        Err(err) => bail!("{} ({err})", unreachable_message(endpoint)),
    }
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
        return Endpoint::new(host, "DOCKER_HOST".to_owned(), tls);
    }
    let (name, origin) = match set("DOCKER_CONTEXT") {
        Some(name) => (name.clone(), format!("context {name:?} (DOCKER_CONTEXT)")),
        None => match current_context(&config)? {
            Some(name) => {
                (name.clone(), format!("context {name:?} (currentContext in {})", config.join("config.json").display()))
            }
            None => return Ok(Endpoint::default_socket("the default socket".to_owned())),
        },
    };
    if name == "default" {
        return Ok(Endpoint::default_socket(origin));
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
        return Endpoint::new(host, origin, tls);
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
    fn the_endpoint_url_says_how_to_reach_the_engine() {
        let transport =
            |host: &str| Endpoint::new(host.to_owned(), "DOCKER_HOST".to_owned(), None).map(|e| e.transport);
        assert_eq!(transport("unix:///var/run/docker.sock").unwrap(), Transport::Unix("/var/run/docker.sock".into()));
        assert_eq!(transport("unix:///tmp/my%20engine.sock").unwrap(), Transport::Unix("/tmp/my engine.sock".into()));
        assert_eq!(transport("tcp://127.0.0.1:2376").unwrap(), Transport::Tcp);
        assert_eq!(transport("https://engine.example.invalid:2376").unwrap(), Transport::Tcp);
        assert_eq!(transport("ssh://deploy@manager:2222").unwrap(), Transport::Ssh);
        assert_eq!(transport("ssh://manager").unwrap(), Transport::Ssh);
        for bad in
            ["manager:2375", "unix://docker.sock", "tcp://", "ssh://manager/var/run", "npipe:////./pipe/x", "ftp://h"]
        {
            let err = transport(bad).unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains("(DOCKER_HOST)") && err.contains("ssh://"), "{bad}: {err}");
        }
        let env = env(&[("DOCKER_HOST", "localhost:2375"), ("DOCKER_CONFIG", "/nonexistent")]);
        assert!(resolve(&env).unwrap_err().to_string().contains("is not a Docker endpoint"));
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
