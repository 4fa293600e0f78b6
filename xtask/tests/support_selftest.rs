//! The test support itself: the registry enforces its auth, a stopped
//! registry refuses connections, moto answers the ECR API with the registry's
//! credential at a loopback address, and the loopback guard refuses others.

mod support;

use aws_config::BehaviorVersion;
use aws_sdk_ecr::config::{Credentials, Region};
use support::{Moto, Registry, http};

#[test]
fn registry_enforces_htpasswd_auth() {
    let registry = Registry::start("alice", "s3cret-for-test");
    let url = format!("{}/v2/", registry.url());
    assert_eq!(http(&url, "GET", None, &[]).unwrap().status, 401);
    assert_eq!(http(&url, "GET", Some(("alice", "wrong")), &[]).unwrap().status, 401);
    assert_eq!(http(&url, "GET", Some(("alice", "s3cret-for-test")), &[]).unwrap().status, 200);
    assert_eq!(registry.manifest_digest("nothing-here", "latest"), None);
}

#[test]
fn stopped_registry_refuses_connections_and_restarts() {
    let mut registry = Registry::start_for_ecr();
    let url = format!("{}/v2/", registry.url());
    registry.stop();
    assert!(http(&url, "GET", None, &[]).is_err());
    registry.restart();
    assert_eq!(http(&url, "GET", None, &[]).unwrap().status, 401);
}

#[test]
fn moto_answers_ecr_on_loopback_with_the_registry_credential() {
    let moto = Moto::start();
    let env = moto.aws_env();
    let endpoint = &env.iter().find(|(key, _)| *key == "AWS_ENDPOINT_URL").unwrap().1;
    // Every address the tests hand the AWS SDK is on loopback.
    for (key, value) in &env {
        if value.contains("://") {
            support::assert_loopback(value);
        } else {
            assert!(!key.starts_with("AWS_ENDPOINT"), "{key} is not a URL: {value}");
        }
    }

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let config = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client)
            .endpoint_url(endpoint)
            .region(Region::new(support::REGION))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
            .load()
            .await;
        let client = aws_sdk_ecr::Client::new(&config);
        let token = client.get_authorization_token().send().await.expect("moto answers GetAuthorizationToken");
        let data = &token.authorization_data()[0];
        let decoded = aws_smithy_types::base64::decode(data.authorization_token().unwrap()).unwrap();
        let expected = format!("{}:{}", support::ECR_USER, support::ECR_PASSWORD);
        assert!(decoded == expected.as_bytes(), "moto's token is not the registry's credential");
    });
}

#[test]
fn loopback_guard_refuses_other_hosts() {
    support::assert_loopback("http://127.0.0.1:1234");
    support::assert_loopback("http://localhost:1234/x");
    let refused = std::panic::catch_unwind(|| support::assert_loopback("https://ecr.example.com"));
    assert!(refused.is_err());
}
