//! The test support itself: the registry enforces its auth, a stopped
//! registry refuses connections, moto answers the ECR API with the registry's
//! credential at a loopback address, and the loopback guard refuses others.

mod support;

use aws_config::BehaviorVersion;
use aws_sdk_ecr::config::{Credentials, Region};
use support::moto::{ECR_PASSWORD, Moto, REGION};
use support::registry::{Registry, basic_auth};
use xtask_test_support::http::{assert_loopback, http};

#[test]
fn registry_enforces_htpasswd_auth() {
    let registry = Registry::start("alice", "s3cret-for-test");
    let url = format!("{}/v2/", registry.url());
    assert_eq!(http(&url, "GET", &[]).unwrap().status, 401);
    assert_eq!(http(&url, "GET", &[("Authorization", &basic_auth("alice", "wrong"))]).unwrap().status, 401);
    assert_eq!(http(&url, "GET", &[("Authorization", &basic_auth("alice", "s3cret-for-test"))]).unwrap().status, 200);
    assert_eq!(registry.manifest_digest("nothing-here", "latest"), None);
}

#[test]
fn stopped_registry_refuses_connections_and_restarts() {
    let mut registry = Registry::start_for_ecr();
    let url = format!("{}/v2/", registry.url());
    registry.stop();
    assert!(http(&url, "GET", &[]).is_err());
    registry.restart();
    assert_eq!(http(&url, "GET", &[]).unwrap().status, 401);
}

#[test]
fn moto_answers_ecr_on_loopback_with_the_registry_credential() {
    let moto = Moto::start();
    let env = moto.aws_env();
    let endpoint = &env.iter().find(|(key, _)| *key == "AWS_ENDPOINT_URL").unwrap().1;
    // Every address the tests hand the AWS SDK is on loopback.
    for (key, value) in &env {
        if value.contains("://") {
            assert_loopback(value);
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
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
            .load()
            .await;
        let client = aws_sdk_ecr::Client::new(&config);
        let token = client.get_authorization_token().send().await.expect("moto answers GetAuthorizationToken");
        let data = &token.authorization_data()[0];
        let decoded = aws_smithy_types::base64::decode(data.authorization_token().unwrap()).unwrap();
        let expected = format!("{}:{}", xtask_cloud::ecr::ECR_USER, ECR_PASSWORD);
        assert!(decoded == expected.as_bytes(), "moto's token is not the registry's credential");
    });
}

#[test]
fn loopback_guard_refuses_other_hosts() {
    assert_loopback("http://127.0.0.1:1234");
    assert_loopback("http://localhost:1234/x");
    let refused = std::panic::catch_unwind(|| assert_loopback("https://ecr.example.com"));
    assert!(refused.is_err());
}
