//! The Docker CLI's configuration (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`) and its credential helpers: the one reader of
//! both, for `login` (is the ECR helper in use?) and `deploy` (the credential
//! `docker stack deploy --with-registry-auth` will send).

use std::path::PathBuf;

use anyhow::{Context, Result};
use bollard::auth::DockerCredentials;
use xtask::settings::strip_scheme;

/// The Docker CLI's config file: $DOCKER_CONFIG/config.json, else
/// ~/.docker/config.json (the directory the endpoint's contexts come from).
pub fn config_path() -> PathBuf {
    xtask::docker_endpoint::config_dir(&|name| std::env::var(name).ok()).join("config.json")
}

/// The config file's path and text; `None` when there is no file.
fn read_config() -> Result<Option<(PathBuf, String)>> {
    let path = config_path();
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some((path, text))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("cannot read the Docker config {}", path.display())),
    }
}

/// Where a registry's credential is kept in the Docker config.
#[derive(Debug, PartialEq)]
pub enum Stored {
    /// `auths.<host>.auth`: base64 of `user:password`, or an identity token.
    Inline(DockerCredentials),
    /// A credential helper, `docker-credential-<name>`.
    Helper(String),
    None,
}

/// A key of `auths` or `credHelpers` (`https://host/v1/`, `host`) names `registry`.
fn same_host(key: &str, registry: &str) -> bool {
    strip_scheme(key).split('/').next() == Some(registry)
}

/// Find `registry`'s credential in the text of a config.json (pure), in the
/// docker CLI's order: the registry's own helper (`credHelpers`), else the
/// store for all registries (`credsStore`), else the file itself (`auths`).
pub fn find_credential(config: &str, registry: &str) -> Result<Stored> {
    let config: serde_json::Value = serde_json::from_str(config).context("the Docker config.json is not valid JSON")?;
    let helper = config.get("credHelpers").and_then(|helpers| helpers.as_object()).and_then(|helpers| {
        helpers.iter().find(|(key, _)| same_host(key, registry)).and_then(|(_, name)| name.as_str())
    });
    let store = config.get("credsStore").and_then(|store| store.as_str()).filter(|store| !store.is_empty());
    if let Some(name) = helper.or(store) {
        return Ok(Stored::Helper(name.to_owned()));
    }
    let entry = config
        .get("auths")
        .and_then(|auths| auths.as_object())
        .and_then(|auths| auths.iter().find(|(key, _)| same_host(key, registry)).map(|(_, entry)| entry));
    let Some(entry) = entry else { return Ok(Stored::None) };
    if let Some(token) = entry.get("identitytoken").and_then(|token| token.as_str()) {
        return Ok(Stored::Inline(DockerCredentials {
            identitytoken: Some(token.to_owned()),
            serveraddress: Some(registry.to_owned()),
            ..Default::default()
        }));
    }
    let Some(auth) = entry.get("auth").and_then(|auth| auth.as_str()).filter(|auth| !auth.is_empty()) else {
        return Ok(Stored::None);
    };
    let decoded = aws_smithy_types::base64::decode(auth)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .with_context(|| format!("the Docker config's credential for {registry} is not base64 of user:password"))?;
    let (username, password) = decoded
        .split_once(':')
        .with_context(|| format!("the Docker config's credential for {registry} is not user:password"))?;
    Ok(Stored::Inline(DockerCredentials {
        username: Some(username.to_owned()),
        password: Some(password.to_owned()),
        serveraddress: Some(registry.to_owned()),
        ..Default::default()
    }))
}

/// Whether Docker gets `registry`'s credential from the ECR credential
/// helper (`docker-credential-ecr-login`), which makes a login pointless. No
/// config file means no helper.
pub fn uses_ecr_helper(registry: &str) -> Result<bool> {
    let Some((path, text)) = read_config()? else { return Ok(false) };
    let stored = find_credential(&text, registry).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(stored == Stored::Helper("ecr-login".into()))
}

/// The credential Docker keeps for `registry` (what `docker login` stored),
/// or `None` when it has none.
pub fn credential(sh: &xshell::Shell, registry: &str) -> Result<Option<DockerCredentials>> {
    let Some((path, text)) = read_config()? else { return Ok(None) };
    match find_credential(&text, registry).with_context(|| format!("in {}", path.display()))? {
        Stored::Inline(credentials) => Ok(Some(credentials)),
        Stored::None => Ok(None),
        Stored::Helper(name) => from_helper(sh, &name, registry),
    }
}

/// Ask `docker-credential-<name>`: the registry on stdin, JSON on stdout. The
/// secret is read, never echoed.
fn from_helper(sh: &xshell::Shell, name: &str, registry: &str) -> Result<Option<DockerCredentials>> {
    let program = format!("docker-credential-{name}");
    let output = xshell::cmd!(sh, "{program} get").stdin(registry).quiet().ignore_status().output();
    let output = output.with_context(|| format!("cannot run the Docker credential helper {program}"))?;
    if !output.status.success() {
        // Helpers answer "credentials not found" with a failure: not logged in.
        return Ok(None);
    }
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("the Docker credential helper {program} gave no JSON"))?;
    let field = |key: &str| answer.get(key).and_then(|value| value.as_str()).map(str::to_owned);
    let (Some(username), Some(secret)) = (field("Username"), field("Secret")) else {
        return Ok(None);
    };
    let mut credentials = DockerCredentials { serveraddress: Some(registry.to_owned()), ..Default::default() };
    if username == "<token>" {
        credentials.identitytoken = Some(secret);
    } else {
        credentials.username = Some(username);
        credentials.password = Some(secret);
    }
    Ok(Some(credentials))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ecr_helper(config: &str, registry: &str) -> Result<bool> {
        Ok(find_credential(config, registry)? == Stored::Helper("ecr-login".into()))
    }

    #[test]
    fn ecr_helper_is_detected_per_registry_or_as_store() {
        let host = "123456789012.dkr.ecr.us-west-2.amazonaws.com";
        assert!(ecr_helper(&format!(r#"{{"credHelpers": {{"{host}": "ecr-login"}}}}"#), host).unwrap());
        assert!(ecr_helper(&format!(r#"{{"credHelpers": {{"https://{host}": "ecr-login"}}}}"#), host).unwrap());
        assert!(!ecr_helper(r#"{"credHelpers": {"other.example": "ecr-login"}}"#, host).unwrap());
        assert!(ecr_helper(r#"{"credsStore": "ecr-login"}"#, host).unwrap());
        // A registry's own helper wins over the store.
        assert!(
            !ecr_helper(&format!(r#"{{"credsStore": "ecr-login", "credHelpers": {{"{host}": "pass"}}}}"#), host)
                .unwrap()
        );
        assert!(!ecr_helper(r#"{"credsStore": "desktop", "auths": {}}"#, host).unwrap());
        assert!(!ecr_helper("{}", host).unwrap());
        assert!(ecr_helper("not json", host).is_err());
    }

    #[test]
    fn credentials_are_found_inline_by_host_or_via_a_helper() {
        // base64("AWS:pw")
        let config = r#"{"auths": {"https://127.0.0.1:5000": {"auth": "QVdTOnB3"}, "other:1": {}}}"#;
        let Stored::Inline(found) = find_credential(config, "127.0.0.1:5000").unwrap() else { panic!("inline") };
        assert_eq!((found.username.as_deref(), found.password.as_deref()), (Some("AWS"), Some("pw")));
        // With a store, as in the docker CLI, the store has the credential
        // and `auths` only remembers the login.
        let stored = r#"{"auths": {"127.0.0.1:5000": {"auth": "QVdTOnB3"}}, "credsStore": "desktop"}"#;
        assert_eq!(find_credential(stored, "127.0.0.1:5000").unwrap(), Stored::Helper("desktop".into()));
        let helpers = r#"{"auths": {}, "credHelpers": {"1.dkr.ecr.us-west-2.amazonaws.com": "ecr-login"}}"#;
        assert_eq!(
            find_credential(helpers, "1.dkr.ecr.us-west-2.amazonaws.com").unwrap(),
            Stored::Helper("ecr-login".into())
        );
        assert_eq!(find_credential(r#"{"auths": {}}"#, "r:1").unwrap(), Stored::None);
        assert!(find_credential("{", "r:1").is_err());
        assert!(find_credential(r#"{"auths": {"r:1": {"auth": "bm9jb2xvbg=="}}}"#, "r:1").is_err());
    }
}
