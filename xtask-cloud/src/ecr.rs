//! ECR through the AWS SDK, shared by `login`, `logout`, `publish` and
//! `deploy`: the client (default credential chain, AWS_PROFILE, the region of
//! the settings, AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_ECR read by aws-config
//! itself), the authorization token, and AWS errors turned into one line that
//! says what to do.

use std::fmt;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ecr::config::Region;
use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

use crate::async_ctx::AsyncCtx;
use xtask::ctx::Ctx;
use xtask::settings::Settings;

/// The user name in every ECR authorization token.
pub const ECR_USER: &str = "AWS";

/// Where an ECR token lets Docker in, and with what. `Debug` masks the password.
#[derive(Clone)]
pub struct Authorization {
    /// The registry host[:port] Docker logs in to: ECR_REGISTRY (or --registry,
    /// or delivery.yml) when set, else the host of the token's proxy endpoint.
    pub registry: String,
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
            Some(at) => format!("at {} (in {})", crate::clock::rfc3339(at), remaining(at, SystemTime::now())),
            None => "at an unknown time".to_owned(),
        }
    }
}

/// An ECR client for the settings' region and profile. The HTTPS client is
/// rustls with ring (see Cargo.toml); endpoint overrides come from the
/// environment or the profile, read by aws-config.
pub async fn client(settings: &Settings) -> Result<aws_sdk_ecr::Client> {
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
    let planned = Authorization {
        registry: settings.registry(),
        username: ECR_USER.to_owned(),
        password: "********".to_owned(),
        expires_at: None,
    };
    ctx.call(&description, planned, async {
        let client = client(settings).await?;
        fetch_authorization(&client, settings).await
    })
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
    Ok(Authorization { registry, username, password, expires_at })
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
    let no_host = || anyhow!("ECR's proxy endpoint {endpoint:?} names no host: set ECR_REGISTRY to the registry host");
    let trimmed = endpoint.trim();
    // An endpoint without a scheme is a host and a path.
    let with_scheme = if trimmed.contains("://") { trimmed.to_owned() } else { format!("https://{trimmed}") };
    let url = url::Url::parse(&with_scheme).map_err(|_| no_host())?;
    let host = url.host_str().filter(|host| !host.is_empty()).ok_or_else(no_host)?;
    Ok(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
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

/// Classify a failed AWS call: by the service's error code when AWS answered,
/// else by the SDK error's type (a timeout, a dispatch failure carrying a
/// credentials error or an I/O error).
pub fn classify<E, R>(err: &SdkError<E, R>, code: Option<&str>) -> AwsProblem
where
    SdkError<E, R>: std::error::Error + 'static,
{
    if let Some(code) = code {
        return if REJECTED_CODES.contains(&code) { AwsProblem::Rejected } else { AwsProblem::Other };
    }
    let sources = || std::iter::successors(Some(err as &(dyn std::error::Error + 'static)), |err| err.source());
    if sources().any(|source| source.is::<CredentialsError>()) {
        return AwsProblem::NoCredentials;
    }
    match err {
        SdkError::TimeoutError(_) => AwsProblem::Unreachable,
        SdkError::DispatchFailure(failure) if failure.is_io() => {
            // hyper's connector names a failed name lookup only in its text;
            // every other I/O failure means nothing answered.
            if sources().any(|source| source.to_string().starts_with("dns error")) {
                AwsProblem::UnknownHost
            } else {
                AwsProblem::Unreachable
            }
        }
        SdkError::DispatchFailure(_) => AwsProblem::Unreachable,
        _ => AwsProblem::Other,
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
    let profile = settings.profile.as_deref().map(|p| format!(" (profile {p})")).unwrap_or_default();
    match classify(err, code.as_deref()) {
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
            None => anyhow!("{call} failed: {}", chain_text(err)),
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
    crate::registry::one_line(&parts.join(": "))
}

/// `<Code>X</Code>` in `body` (also inside a Debug dump of bytes) → `X`.
fn xml_tag(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{name}>"))? + start;
    Some(body[start..end].trim().to_owned()).filter(|value| !value.is_empty())
}

// ---------------------------------------------------------------- time

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
    fn xml_error_bodies_name_code_and_message() {
        let body = r#"b"<?xml version=\"1.0\"?>\n<ErrorResponse><Errors><Error><Code>InvalidClientTokenId</Code><Message>The security token is invalid.</Message></Error></Errors></ErrorResponse>""#;
        assert_eq!(xml_tag(body, "Code").as_deref(), Some("InvalidClientTokenId"));
        assert_eq!(xml_tag(body, "Message").as_deref(), Some("The security token is invalid."));
        assert_eq!(xml_tag("<Code></Code>", "Code"), None);
        assert_eq!(xml_tag("{}", "Code"), None);
    }

    #[test]
    fn errors_are_classified_by_their_type() {
        use aws_sdk_ecr::error::ConnectorError;
        type Error = SdkError<aws_sdk_ecr::operation::get_authorization_token::GetAuthorizationTokenError, ()>;
        let io = |kind| ConnectorError::io(Box::new(std::io::Error::from(kind)));
        let refused: Error = SdkError::dispatch_failure(io(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(classify(&refused, None), AwsProblem::Unreachable);
        let timeout: Error = SdkError::timeout_error("operation timed out");
        assert_eq!(classify(&timeout, None), AwsProblem::Unreachable);
        let no_credentials: Error = SdkError::dispatch_failure(ConnectorError::other(
            Box::new(CredentialsError::not_loaded("no providers")),
            None,
        ));
        assert_eq!(classify(&no_credentials, None), AwsProblem::NoCredentials);
        #[derive(Debug)]
        struct Dns;
        impl std::fmt::Display for Dns {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("dns error: failed to lookup address information")
            }
        }
        impl std::error::Error for Dns {}
        let dns: Error = SdkError::dispatch_failure(ConnectorError::io(Box::new(Dns)));
        assert_eq!(classify(&dns, None), AwsProblem::UnknownHost);
        let construction: Error = SdkError::construction_failure("bad input");
        assert_eq!(classify(&construction, None), AwsProblem::Other);
        assert_eq!(classify(&construction, Some("UnrecognizedClientException")), AwsProblem::Rejected);
        assert_eq!(classify(&construction, Some("ExpiredTokenException")), AwsProblem::Rejected);
        assert_eq!(classify(&construction, Some("ServerException")), AwsProblem::Other);
    }

    #[test]
    fn expiry_is_readable() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(remaining(now + Duration::from_secs(12 * 3600 - 30), now), "11h 59m");
        assert_eq!(remaining(now + Duration::from_secs(180), now), "3m");
        assert!(remaining(now - Duration::from_secs(1), now).contains("expired"));
    }

    #[test]
    fn debug_masks_the_password() {
        let auth = Authorization {
            registry: "r".into(),
            username: "AWS".into(),
            password: "topsecret".into(),
            expires_at: None,
        };
        assert!(!format!("{auth:?}").contains("topsecret"));
    }
}
