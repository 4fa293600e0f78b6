//! Registries as the Docker engine reaches them: what their failures mean
//! (one line with the way out), and the one lookup of an image's digest.

use anyhow::{Context, Result, anyhow};
use bollard::Docker;
use bollard::auth::DockerCredentials;

use crate::image_ref::ImageRef;

/// The digest of `image` as its registry has it, asked through the engine
/// (which reaches the registry as the nodes will when they pull), with
/// `credentials` or none.
pub async fn digest(docker: &Docker, image: &str, credentials: Option<DockerCredentials>) -> Result<String> {
    let anonymous = credentials.is_none();
    let inspect = docker.inspect_registry_image(image, credentials).await.map_err(|err| {
        let registry = ImageRef::parse(image).registry.unwrap_or_else(|| "docker.io".to_owned());
        let reason = docker_error_text(&err);
        // No credential went with the request (`--no-login` with none
        // stored): the one missing is the stored one, not a bad ECR token.
        if anonymous && classify_registry_error(&one_line(&reason)) == RegistryProblem::Refused {
            return anyhow!(
                "resolve {image}: registry {registry} refused a request without credentials ({}), and the Docker \
                 config ({}) stores none for {registry}: log in first (`cargo xtask login`, or drop --no-login)",
                one_line(&reason),
                xtask::docker_endpoint::config_dir(&|name| std::env::var(name).ok()).join("config.json").display()
            );
        }
        explain_registry_error(&format!("resolve {image}"), &registry, &reason)
    })?;
    inspect.descriptor.digest.with_context(|| format!("the registry gave no digest for {image}"))
}

/// bollard's error as the daemon's message, without the wrapper.
pub fn docker_error_text(err: &bollard::errors::Error) -> String {
    match err {
        bollard::errors::Error::DockerStreamError { error } => error.clone(),
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// Text on one line, runs of white space folded.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What a registry (through Docker) said when a login, push or inspect failed.
#[derive(Debug, PartialEq, Eq)]
pub enum RegistryProblem {
    /// It did not accept the credential.
    Refused,
    /// Nothing answers at its address.
    Unreachable,
    /// The repository does not exist there.
    NoRepository,
    /// The repository has no such tag.
    NoImage,
    /// Worth another try: a reset connection, a 5xx.
    Transient,
    Other,
}

/// Classify the text of a Docker error about a registry.
pub fn classify_registry_error(text: &str) -> RegistryProblem {
    let text = text.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|needle| text.contains(needle));
    if has(&["unauthorized", "authentication required", "no basic auth credentials", "denied", "forbidden"]) {
        if has(&["does not exist", "name unknown"]) { RegistryProblem::NoRepository } else { RegistryProblem::Refused }
    } else if has(&["name unknown", "repository with name", "does not exist in the registry"]) {
        RegistryProblem::NoRepository
    } else if has(&["manifest unknown", "not found"]) {
        RegistryProblem::NoImage
    } else if has(&[
        "connection refused",
        "no such host",
        "no route to host",
        "network is unreachable",
        "dial tcp",
        "server misbehaving",
        "cannot assign requested address",
        // A registry that accepts connections but never answers.
        "deadline exceeded",
        "client.timeout exceeded",
    ]) {
        RegistryProblem::Unreachable
    } else if has(&[
        "connection reset",
        "broken pipe",
        "unexpected eof",
        "i/o timeout",
        "tls handshake timeout",
        "500 internal server error",
        "502 bad gateway",
        "503 service unavailable",
        "504 gateway timeout",
        "status: 500",
        "status: 502",
        "status: 503",
        "status: 504",
        "status code 500",
        "status code 502",
        "status code 503",
        "status code 504",
        "internal server error",
        "service unavailable",
        "bad gateway",
        "gateway timeout",
    ]) {
        RegistryProblem::Transient
    } else {
        RegistryProblem::Other
    }
}

/// One line for a registry failure: what failed, Docker's reason, the way out.
pub fn explain_registry_error(what: &str, registry: &str, reason: &str) -> anyhow::Error {
    let reason = one_line(reason);
    match classify_registry_error(&reason) {
        RegistryProblem::Refused => anyhow!(
            "{what}: registry {registry} refused the ECR credential ({reason}): check that ECR_REGISTRY names \
             the registry of this AWS account and region (AWS_PROFILE, AWS_REGION)"
        ),
        RegistryProblem::Unreachable => anyhow!(
            "{what}: registry {registry} is unreachable ({reason}): check ECR_REGISTRY (--registry), the network, \
             and that the registry is up"
        ),
        RegistryProblem::NoRepository => anyhow!(
            "{what}: the repository does not exist in registry {registry} ({reason}): create it, \
             or run `cargo xtask publish --create-repository`"
        ),
        RegistryProblem::Transient => {
            anyhow!("{what}: registry {registry} failed ({reason}): try again later")
        }
        RegistryProblem::NoImage => {
            anyhow!("{what}: the image is not in registry {registry} ({reason}): push it first (`cargo xtask publish`)")
        }
        RegistryProblem::Other => anyhow!("{what}: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_errors_are_classified() {
        assert_eq!(
            classify_registry_error("Get \"http://127.0.0.1:5/v2/\": context deadline exceeded"),
            RegistryProblem::Unreachable
        );
        assert_eq!(
            classify_registry_error("net/http: request canceled (Client.Timeout exceeded while awaiting headers)"),
            RegistryProblem::Unreachable
        );
        use RegistryProblem::*;
        let cases = [
            (
                r#"Error response from daemon: Get "http://127.0.0.1:5000/v2/": unauthorized: authentication required"#,
                Refused,
            ),
            ("no basic auth credentials", Refused),
            (r#"Get "https://127.0.0.1:5/v2/": dial tcp 127.0.0.1:5: connect: connection refused"#, Unreachable),
            ("dial tcp: lookup nohost.invalid: no such host", Unreachable),
            ("name unknown: The repository with name 'x' does not exist in the registry with id '1'", NoRepository),
            ("read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer", Transient),
            ("received unexpected HTTP status: 503 Service Unavailable", Transient),
            ("put https://r/v2/x/blobs/uploads/: unexpected EOF", Transient),
            ("manifest invalid", Other),
            ("manifest unknown: manifest unknown", NoImage),
        ];
        for (text, expected) in cases {
            assert_eq!(classify_registry_error(text), expected, "{text}");
        }
        let err = explain_registry_error("push r/x:1", "r", "connection refused").to_string();
        assert!(err.contains("registry r is unreachable") && err.contains("ECR_REGISTRY"), "{err}");
    }
}
