//! ECR through the AWS SDK, shared by `login`, `logout`, `publish` and
//! `deploy`: the client (default credential chain, AWS_PROFILE, the region of
//! the settings, AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_ECR read by aws-config
//! itself), the authorization token, and AWS errors turned into one line that
//! says what to do.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_ecr::config::Region;
use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

use crate::async_ctx::AsyncCtx;
use xtask::ctx::Ctx;
use xtask::settings::{Settings, strip_scheme};

/// The user name in every ECR authorization token.
pub const ECR_USER: &str = "AWS";

/// Where an ECR token lets Docker in, and with what. `Debug` masks the password.
#[derive(Clone)]
pub struct Authorization {
    /// The registry host[:port] Docker logs in to: ECR_REGISTRY (or --registry,
    /// or delivery.yml) when set, else the host of the token's proxy endpoint.
    pub registry: String,
    /// The host of the token's proxy endpoint (`None` in a dry run).
    pub proxy_host: Option<String>,
    pub username: String,
    /// The registry password. Goes on stdin or into an X-Registry-Auth header,
    /// never into argv, a log or an error.
    pub password: String,
    /// When the token expires.
    pub expires_at: Option<SystemTime>,
}

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorization")
            .field("registry", &self.registry)
            .field("proxy_host", &self.proxy_host)
            .field("username", &self.username)
            .field("password", &"********")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl Authorization {
    /// The credentials for bollard (push, distribution inspect).
    pub fn docker_credentials(&self) -> bollard::auth::DockerCredentials {
        bollard::auth::DockerCredentials {
            username: Some(self.username.clone()),
            password: Some(self.password.clone()),
            serveraddress: Some(self.registry.clone()),
            ..Default::default()
        }
    }

    /// "at 2024-01-01T12:00:00Z (in 11h 59m)", or "at an unknown time".
    pub fn expiry_text(&self) -> String {
        match self.expires_at {
            Some(at) => format!("at {} (in {})", rfc3339(at), remaining(at, SystemTime::now())),
            None => "at an unknown time".to_owned(),
        }
    }
}

/// An ECR client for the settings' region and profile. The HTTPS client is
/// rustls with ring (see Cargo.toml); endpoint overrides come from the
/// environment or the profile, read by aws-config.
pub async fn client(settings: &Settings) -> Result<aws_sdk_ecr::Client> {
    check_region(&settings.region)?;
    let http_client =
        aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(20))
        .operation_timeout(Duration::from_secs(60))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .timeout_config(timeouts)
        .region(Region::new(settings.region.clone()));
    if let Some(profile) = &settings.profile {
        loader = loader.profile_name(profile);
    }
    let config = loader.load().await;
    Ok(aws_sdk_ecr::Client::new(&config))
}

/// A fresh authorization token (GetAuthorizationToken), decoded. In a dry run
/// the call is printed and a placeholder comes back: the registry of the
/// settings and a masked password, so that later steps can print their plan.
pub fn authorization(ctx: &Ctx) -> Result<Authorization> {
    let settings = &ctx.settings;
    let description = format!("ecr GetAuthorizationToken (region {})", settings.region);
    let fetched = ctx.call(&description, async {
        let client = client(settings).await?;
        fetch_authorization(&client, settings).await
    })?;
    Ok(fetched.unwrap_or_else(|| Authorization {
        registry: settings.registry(),
        proxy_host: None,
        username: ECR_USER.to_owned(),
        password: "********".to_owned(),
        expires_at: None,
    }))
}

/// GetAuthorizationToken with `client`, decoded; the registry is the explicit
/// one of the settings, else the proxy endpoint's host.
pub async fn fetch_authorization(client: &aws_sdk_ecr::Client, settings: &Settings) -> Result<Authorization> {
    let output = client
        .get_authorization_token()
        .send()
        .await
        .map_err(|err| explain_sdk_error("ECR GetAuthorizationToken", &err, settings))?;
    let data = output
        .authorization_data()
        .first()
        .context("ECR answered GetAuthorizationToken without a token: check AWS_ENDPOINT_URL points at ECR")?;
    let token = data.authorization_token().context("ECR's authorization data carries no token")?;
    let (username, password) = decode_token(token)?;
    let proxy_host = data.proxy_endpoint().map(proxy_host).transpose()?;
    let registry = match (&settings.explicit_registry, &proxy_host) {
        (Some(registry), _) => registry.clone(),
        (None, Some(host)) => host.clone(),
        (None, None) => bail!("ECR's authorization data names no registry: set ECR_REGISTRY to the registry host"),
    };
    let expires_at = data.expires_at().and_then(|at| SystemTime::try_from(*at).ok());
    Ok(Authorization { registry, proxy_host, username, password, expires_at })
}

/// `base64("AWS:<password>")` → ("AWS", password). The error never quotes the token.
pub fn decode_token(token: &str) -> Result<(String, String)> {
    let bytes = aws_smithy_types::base64::decode(token.trim())
        .map_err(|_| anyhow!("ECR's authorization token is not base64"))?;
    let text = String::from_utf8(bytes).map_err(|_| anyhow!("ECR's authorization token is not UTF-8 text"))?;
    let (user, password) = text.split_once(':').context("ECR's authorization token is not `user:password`")?;
    if user.is_empty() || password.is_empty() {
        bail!("ECR's authorization token has an empty user or password");
    }
    Ok((user.to_owned(), password.to_owned()))
}

/// `https://123456789012.dkr.ecr.us-west-2.amazonaws.com` → the host (and port).
pub fn proxy_host(endpoint: &str) -> Result<String> {
    let host = strip_scheme(endpoint);
    let host = host.split('/').next().unwrap_or_default().to_owned();
    if host.is_empty() || host.contains(char::is_whitespace) {
        bail!("ECR's proxy endpoint {endpoint:?} names no host: set ECR_REGISTRY to the registry host");
    }
    Ok(host)
}

/// Regions look like `us-west-2`, `eu-central-1`, `us-gov-east-1`, `cn-north-1`.
/// Anything else has no ECR endpoint: refuse it before any call.
pub fn check_region(region: &str) -> Result<()> {
    let parts: Vec<&str> = region.split('-').collect();
    let plausible = parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].chars().all(|c| c.is_ascii_lowercase())
        && parts[1..parts.len() - 1].iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok();
    if !plausible {
        bail!(
            "unknown AWS region {region:?}: set AWS_REGION (or --region, or aws_region in delivery.yml) to the registry's region, such as us-west-2"
        );
    }
    Ok(())
}

/// What went wrong with an AWS call, for the message.
#[derive(Debug, PartialEq, Eq)]
pub enum AwsProblem {
    /// No credentials anywhere in the chain.
    NoCredentials,
    /// AWS refused the credentials (message and code shown).
    Rejected,
    /// The endpoint's host has no address: in practice an unknown region.
    UnknownHost,
    /// No answer: network, proxy, endpoint override.
    Unreachable,
    /// Anything else: shown as AWS said it.
    Other,
}

/// Codes AWS answers when it does not accept the credentials.
const REJECTED_CODES: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "ExpiredTokenException",
    "ExpiredToken",
    "AccessDeniedException",
    "AccessDenied",
    "IncompleteSignature",
    "MissingAuthenticationToken",
];

/// Classify an AWS failure from its service error code (if AWS answered) and
/// the full text of the error chain.
pub fn classify(code: Option<&str>, text: &str) -> AwsProblem {
    if let Some(code) = code {
        return if REJECTED_CODES.contains(&code) { AwsProblem::Rejected } else { AwsProblem::Other };
    }
    let text = text.to_ascii_lowercase();
    if text.contains("no credentials")
        || text.contains("credentialsnotloaded")
        || text.contains("credentials not loaded")
        || text.contains("provided credentials")
        || text.contains("credential provider was not enabled")
    {
        AwsProblem::NoCredentials
    } else if text.contains("dns error")
        || text.contains("failed to lookup address")
        || text.contains("name or service not known")
    {
        AwsProblem::UnknownHost
    } else if text.contains("timeout")
        || text.contains("timed out")
        || text.contains("connection refused")
        || text.contains("connection reset")
        || text.contains("io error")
        || text.contains("dispatch failure")
    {
        AwsProblem::Unreachable
    } else {
        AwsProblem::Other
    }
}

fn endpoint_hint() -> String {
    ["AWS_ENDPOINT_URL_ECR", "AWS_ENDPOINT_URL"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()).map(|v| format!("{v} ({name})")))
        .unwrap_or_else(|| "the ECR endpoint".to_owned())
}

/// One line for a failed AWS call: what failed, why, and the way out.
pub fn explain_sdk_error<E, R>(call: &str, err: &SdkError<E, R>, settings: &Settings) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug + 'static,
    SdkError<E, R>: std::error::Error,
{
    let service = err.as_service_error();
    // An answer the SDK could not parse (an XML error from a proxy or an
    // emulator) still names its code and message in the body.
    let body = match err {
        SdkError::ServiceError(context) => Some(format!("{:?}", context.raw())),
        _ => None,
    };
    let tag = |name: &str| body.as_deref().and_then(|body| xml_tag(body, name));
    let code = service.and_then(|service| service.code()).map(str::to_owned).or_else(|| tag("Code"));
    let message = service
        .and_then(|service| service.message())
        .map(str::to_owned)
        .or_else(|| tag("Message"))
        .unwrap_or_else(|| "no message".to_owned());
    let text = chain_text(err);
    let profile = settings.profile.as_deref().map(|p| format!(" (profile {p})")).unwrap_or_default();
    match classify(code.as_deref(), &text) {
        AwsProblem::NoCredentials => anyhow!(
            "{call}: no AWS credentials found{profile}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
             or AWS_PROFILE (--profile) to a profile in ~/.aws/config (for SSO run `aws sso login`), \
             or run where a container or instance role provides them"
        ),
        AwsProblem::Rejected => anyhow!(
            "{call}: AWS rejected the credentials{profile}: {message} ({}): check AWS_PROFILE / AWS_ACCESS_KEY_ID, \
             refresh expired credentials, or grant ecr:GetAuthorizationToken",
            code.as_deref().unwrap_or_default()
        ),
        AwsProblem::UnknownHost => anyhow!(
            "{call}: the ECR endpoint for region {} has no address (unknown region, or no DNS): \
             check AWS_REGION (--region) or set AWS_ENDPOINT_URL_ECR",
            settings.region
        ),
        AwsProblem::Unreachable => anyhow!(
            "{call}: cannot reach {} in region {}: check the network or proxy, AWS_REGION, AWS_ENDPOINT_URL(_ECR)",
            endpoint_hint(),
            settings.region
        ),
        AwsProblem::Other => match code {
            Some(code) => anyhow!("{call}: AWS answered {code}: {message}"),
            None => anyhow!("{call} failed: {text}"),
        },
    }
}

/// The Display of an error and its sources, on one line (no Debug dumps).
fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    one_line(&parts.join(": "))
}

/// `<Code>X</Code>` in `body` (also inside a Debug dump of bytes) → `X`.
fn xml_tag(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{name}>"))? + start;
    Some(body[start..end].trim().to_owned()).filter(|value| !value.is_empty())
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------- registry errors

/// What a registry (through Docker) said when a login, push or inspect failed.
#[derive(Debug, PartialEq, Eq)]
pub enum RegistryProblem {
    /// It did not accept the credential.
    Refused,
    /// Nothing answers at its address.
    Unreachable,
    /// The repository does not exist there.
    NoRepository,
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
        RegistryProblem::Other => anyhow!("{what}: {reason}"),
    }
}

// ---------------------------------------------------------------- Docker config

/// The Docker CLI's config file: $DOCKER_CONFIG/config.json, else ~/.docker/config.json.
pub fn docker_config_path() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG").filter(|dir| !dir.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir).join("config.json")),
        None => std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json")),
    }
}

/// Whether a Docker config (its JSON text) sends `registry` to the ECR
/// credential helper (`docker-credential-ecr-login`): a `credHelpers` entry
/// for the registry wins over `credsStore`, as in the Docker CLI.
pub fn uses_ecr_helper(config_json: &str, registry: &str) -> Result<bool> {
    let config: serde_json::Value = serde_json::from_str(config_json).context("the Docker config is not valid JSON")?;
    let helper_for_registry = config.get("credHelpers").and_then(|helpers| helpers.as_object()).and_then(|helpers| {
        helpers.iter().find(|(key, _)| strip_scheme(key) == registry).map(|(_, helper)| helper.as_str())
    });
    Ok(match helper_for_registry {
        Some(helper) => helper == Some("ecr-login"),
        None => config.get("credsStore").and_then(|store| store.as_str()) == Some("ecr-login"),
    })
}

/// [`uses_ecr_helper`] on the user's Docker config; no file means no helper.
pub fn docker_uses_ecr_helper(registry: &str) -> Result<bool> {
    let Some(path) = docker_config_path() else { return Ok(false) };
    match std::fs::read_to_string(&path) {
        Ok(text) => uses_ecr_helper(&text, registry).with_context(|| format!("cannot read {}", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err).with_context(|| format!("cannot read the Docker config {}", path.display())),
    }
}

// ---------------------------------------------------------------- time

/// RFC 3339 in UTC, seconds precision.
fn rfc3339(at: SystemTime) -> String {
    aws_smithy_types::DateTime::from(at)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_else(|_| "an unknown time".to_owned())
}

/// "11h 59m", "3m", or "already" when past.
fn remaining(at: SystemTime, now: SystemTime) -> String {
    match at.duration_since(now) {
        Ok(left) => {
            let minutes = left.as_secs() / 60;
            if minutes >= 60 { format!("{}h {}m", minutes / 60, minutes % 60) } else { format!("{minutes}m") }
        }
        Err(_) => "the past: it has expired".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_decodes_to_user_and_password() {
        let token = aws_smithy_types::base64::encode("AWS:pass:with:colons");
        assert_eq!(decode_token(&token).unwrap(), ("AWS".to_owned(), "pass:with:colons".to_owned()));
    }

    #[test]
    fn bad_tokens_are_errors_that_do_not_quote_them() {
        let err = decode_token("!!not base64!!").unwrap_err().to_string();
        assert!(err.contains("not base64") && !err.contains("!!"), "{err}");
        let no_colon = aws_smithy_types::base64::encode("AWSsecretpart");
        let err = decode_token(&no_colon).unwrap_err().to_string();
        assert!(!err.contains("secretpart"), "{err}");
        assert!(decode_token(&aws_smithy_types::base64::encode("AWS:")).is_err());
    }

    #[test]
    fn proxy_endpoint_to_host() {
        assert_eq!(
            proxy_host("https://123456789012.dkr.ecr.us-west-2.amazonaws.com").unwrap(),
            "123456789012.dkr.ecr.us-west-2.amazonaws.com"
        );
        assert_eq!(proxy_host("http://127.0.0.1:5000/").unwrap(), "127.0.0.1:5000");
        assert_eq!(proxy_host("host.example/v2/").unwrap(), "host.example");
        assert!(proxy_host("https://").is_err());
    }

    #[test]
    fn regions_are_checked_for_shape() {
        for ok in ["us-west-2", "eu-central-1", "us-gov-east-1", "ap-southeast-3", "cn-northwest-1"] {
            check_region(ok).unwrap();
        }
        for bad in ["nowhere", "us-west", "usa-west-2", "us-west-x", "US-WEST-2", "us--2"] {
            let err = check_region(bad).unwrap_err().to_string();
            assert!(err.contains("unknown AWS region") && err.contains("AWS_REGION"), "{bad}: {err}");
        }
    }

    #[test]
    fn xml_error_bodies_name_code_and_message() {
        let body = r#"b"<?xml version=\"1.0\"?>\n<ErrorResponse><Errors><Error><Code>InvalidClientTokenId</Code><Message>The security token is invalid.</Message></Error></Errors></ErrorResponse>""#;
        assert_eq!(xml_tag(body, "Code").as_deref(), Some("InvalidClientTokenId"));
        assert_eq!(xml_tag(body, "Message").as_deref(), Some("The security token is invalid."));
        assert_eq!(xml_tag("<Code></Code>", "Code"), None);
        assert_eq!(xml_tag("{}", "Code"), None);
    }

    #[test]
    fn errors_are_classified() {
        assert_eq!(classify(Some("UnrecognizedClientException"), ""), AwsProblem::Rejected);
        assert_eq!(classify(Some("ExpiredTokenException"), ""), AwsProblem::Rejected);
        assert_eq!(classify(Some("ServerException"), ""), AwsProblem::Other);
        assert_eq!(
            classify(
                None,
                "dispatch failure: other: no credentials provider: the credential provider was not enabled: no providers in chain provided credentials"
            ),
            AwsProblem::NoCredentials
        );
        assert_eq!(
            classify(
                None,
                "dispatch failure: other: the credential provider was not enabled: no providers in chain provided credentials"
            ),
            AwsProblem::NoCredentials
        );
        assert_eq!(
            classify(
                None,
                "dispatch failure: io error: client error (Connect): dns error: failed to lookup address information"
            ),
            AwsProblem::UnknownHost
        );
        assert_eq!(
            classify(
                None,
                "dispatch failure: io error: client error (Connect): tcp connect error: Connection refused (os error 111)"
            ),
            AwsProblem::Unreachable
        );
        assert_eq!(classify(None, "timeout: operation timed out"), AwsProblem::Unreachable);
        assert_eq!(classify(None, "response error: bad json"), AwsProblem::Other);
    }

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
        ];
        for (text, expected) in cases {
            assert_eq!(classify_registry_error(text), expected, "{text}");
        }
        let err = explain_registry_error("push r/x:1", "r", "connection refused").to_string();
        assert!(err.contains("registry r is unreachable") && err.contains("ECR_REGISTRY"), "{err}");
    }

    #[test]
    fn ecr_helper_is_detected_per_registry_or_as_store() {
        let host = "123456789012.dkr.ecr.us-west-2.amazonaws.com";
        assert!(uses_ecr_helper(&format!(r#"{{"credHelpers": {{"{host}": "ecr-login"}}}}"#), host).unwrap());
        assert!(uses_ecr_helper(&format!(r#"{{"credHelpers": {{"https://{host}": "ecr-login"}}}}"#), host).unwrap());
        assert!(!uses_ecr_helper(r#"{"credHelpers": {"other.example": "ecr-login"}}"#, host).unwrap());
        assert!(uses_ecr_helper(r#"{"credsStore": "ecr-login"}"#, host).unwrap());
        // A registry's own helper wins over the store.
        assert!(
            !uses_ecr_helper(&format!(r#"{{"credsStore": "ecr-login", "credHelpers": {{"{host}": "pass"}}}}"#), host)
                .unwrap()
        );
        assert!(!uses_ecr_helper(r#"{"credsStore": "desktop", "auths": {}}"#, host).unwrap());
        assert!(!uses_ecr_helper("{}", host).unwrap());
        assert!(uses_ecr_helper("not json", host).is_err());
    }

    #[test]
    fn expiry_is_readable() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(remaining(now + Duration::from_secs(12 * 3600 - 30), now), "11h 59m");
        assert_eq!(remaining(now + Duration::from_secs(180), now), "3m");
        assert!(remaining(now - Duration::from_secs(1), now).contains("expired"));
        assert_eq!(rfc3339(now), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn debug_masks_the_password() {
        let auth = Authorization {
            registry: "r".into(),
            proxy_host: None,
            username: "AWS".into(),
            password: "topsecret".into(),
            expires_at: None,
        };
        assert!(!format!("{auth:?}").contains("topsecret"));
    }
}
