//! The edge (issue 28) on the local single-node swarm: HAProxy in front of
//! the app, built like the official image from Debian's package
//! (`support::edge`), the stack's only published port. A deploy and a
//! rollback under a steady load through it drop no request and store every
//! acknowledged POST once; the app's probes and metrics are not routed; the
//! edge's own health answers; HTTPS with a certificate the test makes; a
//! change to the edge's configuration is a new config that `plan` shows and
//! a deploy rolls out. The same on three nodes is `multinode.rs`.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::app::PushedApp;
use support::load::{Load, Options, assert_stored_once};
use support::swarm::docker_ok;
use support::variants::wait_for_app;
use xtask_test_support::http::http;
use xtask_test_support::unique_name;

#[test]
fn a_deploy_and_a_rollback_through_the_edge_drop_no_request() {
    let mut app = PushedApp::start();
    let a = app.version.clone();
    let b = app.version_named("b");
    app.derive(&b, &format!("LABEL version={b}"));
    app.deploy(&a).assert_success();
    wait_for_app(app.port);
    let base = format!("http://127.0.0.1:{}", app.port);

    let deployed = under_load(&base, "deploy A to B on one node", || app.deploy(&b));
    deployed.assert_success();
    assert!(
        deployed.stderr.contains("through edge's task") && deployed.stderr.contains("and through 1 task(s) of edge"),
        "the new version was not verified through the edge:\n{}",
        deployed.stderr
    );
    assert_eq!(app.spec_image("app"), app.tag(&b));

    let rolled_back = under_load(&base, "rollback B to A on one node", || {
        app.at(&b).xtask(&["rollback", "--no-login", "--timeout", "3m"])
    });
    rolled_back.assert_success();
    assert_eq!(app.spec_image("app"), app.tag(&a));

    the_probes_and_metrics_are_not_routed_and_the_edge_has_its_own_health(&base);
    status_counts_the_edge_on_every_node(&app, &a);
}

/// Run `change` under a steady load at `base`: no request fails, and every
/// acknowledged POST is stored once. Returns what `change` returned.
fn under_load<T>(base: &str, scenario: &str, change: impl FnOnce() -> T) -> T {
    let tag = unique_name("load");
    let load = Load::start(&[base.to_owned()], &tag, Options::default());
    load.warm_up(20);
    let result = change();
    // A moment more: the last old task drains after the deploy returned.
    load.warm_up(40);
    let figures = load.stop();
    println!("{}", figures.line(scenario));
    assert!(figures.requests > 0, "{scenario}: the load sent nothing");
    assert_eq!(figures.failed, 0, "{}", figures.line(scenario));
    assert_stored_once(base, &tag, &figures);
    result
}

fn the_probes_and_metrics_are_not_routed_and_the_edge_has_its_own_health(base: &str) {
    for path in ["/metrics", "/readyz", "/healthz"] {
        let response = http(&format!("{base}{path}"), "GET", &[]).expect("the edge answers");
        assert_eq!(response.status, 404, "{path} is routed to the public: {}", response.body);
    }
    let health = http(&format!("{base}/_edge/health"), "GET", &[]).expect("the edge answers");
    assert_eq!(health.status, 200, "the edge's health: {}", health.body);
    let api = http(&format!("{base}/todos"), "GET", &[]).expect("the edge answers");
    assert_eq!(api.status, 200, "the API is not routed: {}", api.body);
}

/// `status`: the edge is a global service, one task on this node, converged.
fn status_counts_the_edge_on_every_node(app: &PushedApp, version: &str) {
    let status = app.at(version).xtask(&["status", "--json"]);
    status.assert_success();
    let json: serde_json::Value = serde_json::from_str(&status.stdout).expect("status --json");
    let edge = json["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|service| service["name"] == "edge")
        .unwrap_or_else(|| panic!("no edge in status: {json}"));
    assert_eq!(edge["kind"], "global", "{edge}");
    assert_eq!((edge["running"].as_u64(), edge["desired"].as_u64()), (Some(1), Some(1)), "{edge}");
    assert_eq!(edge["converged"], true, "{edge}");
}

#[test]
fn the_edge_serves_https_with_a_certificate_and_rolls_out_a_changed_configuration() {
    let app = PushedApp::start();
    let a = app.version.clone();
    let dir = tempfile::tempdir().expect("temp dir");
    let pem = self_signed_pem(dir.path());
    let https_port: u16 = app.sandbox.env_value("EDGE_HTTPS_PORT").expect("the HTTPS port").parse().unwrap();
    let tls = app.at(&a).with_env("EDGE_TLS_CERT", &pem.display().to_string());
    tls.xtask(&["deploy", "--no-login", "--timeout", "3m"]).assert_success();
    xtask_test_support::wait_until("the edge answers over HTTPS", std::time::Duration::from_secs(60), || {
        https_get(https_port, "/todos").starts_with("HTTP/1.1 200")
    });
    let over_https = https_get(https_port, "/todos");
    assert!(over_https.starts_with("HTTP/1.1 200"), "{over_https}");
    let over_http = http(&format!("http://127.0.0.1:{}/todos", app.port), "GET", &[]).expect("the edge answers");
    assert_eq!(over_http.status, 308, "HTTP is not redirected: {}", over_http.body);
    assert!(
        over_http.header("location").is_some_and(|to| to.starts_with("https://")),
        "{:?}",
        over_http.header("location")
    );
    // The edge's health answers over HTTP for a load balancer all the same.
    let health = http(&format!("http://127.0.0.1:{}/_edge/health", app.port), "GET", &[]).expect("health");
    assert_eq!(health.status, 200);
    assert!(!https_get(https_port, "/metrics").starts_with("HTTP/1.1 200"), "/metrics is routed over HTTPS");

    // The configuration changed (a copy of the stack file and edge/, a
    // comment added): plan shows the edge's new config, deploy rolls it.
    let config_before = edge_config_names(&app.stack);
    let text = std::fs::read_to_string(xtask_test_support::project_root().join("stack.single-node.yml")).unwrap();
    let file = support::swarm::stack_file_in(dir.path(), &text);
    let cfg = dir.path().join("edge/haproxy.cfg");
    let changed = format!("{}\n# changed by the test\n", std::fs::read_to_string(&cfg).unwrap());
    std::fs::write(&cfg, changed).unwrap();
    let moved = tls.with_env("STACK_FILE", &file.display().to_string());
    let plan = moved.xtask(&["plan"]);
    plan.assert_success();
    let edge_lines: Vec<&str> = plan.stdout.lines().filter(|line| line.contains("configs")).collect();
    assert!(
        plan.stdout.contains("edge") && edge_lines.iter().any(|line| line.contains("_edge_")),
        "plan does not show the edge's new config:\n{}",
        plan.stdout
    );
    moved.xtask(&["deploy", "--no-login", "--timeout", "3m"]).assert_success();
    let config_after = edge_config_names(&app.stack);
    assert_ne!(config_before, config_after, "the edge still mounts its old config");
    assert!(https_get(https_port, "/todos").starts_with("HTTP/1.1 200"));
}

/// The names of the configs the stack's edge mounts.
fn edge_config_names(stack: &str) -> String {
    docker_ok(&[
        "service",
        "inspect",
        "--format",
        "{{range .Spec.TaskTemplate.ContainerSpec.Configs}}{{.ConfigName}} {{end}}",
        &format!("{stack}_edge"),
    ])
}

/// A certificate for localhost and its key, in one PEM file, as HAProxy takes them.
fn self_signed_pem(dir: &std::path::Path) -> std::path::PathBuf {
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs (`apt-get install openssl`; .ci/run installs it)");
    assert!(made.status.success(), "openssl req: {}", String::from_utf8_lossy(&made.stderr));
    let pem = dir.join("edge.pem");
    let both = format!("{}{}", std::fs::read_to_string(&cert).unwrap(), std::fs::read_to_string(&key).unwrap());
    std::fs::write(&pem, both).unwrap();
    pem
}

/// `GET path` over HTTPS on loopback (openssl s_client, the certificate not
/// checked: it is the test's own): the response's text, or the error.
fn https_get(port: u16, path: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", &format!("127.0.0.1:{port}"), "-servername", "localhost"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let _ = child.stdin.take().expect("stdin").write_all(request.as_bytes());
    let out = child.wait_with_output().expect("openssl s_client ends");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if text.is_empty() { String::from_utf8_lossy(&out.stderr).into_owned() } else { text }
}

/// A release whose edge configuration HAProxy refuses fails halfway, on the
/// real swarm: the swarm rolls the edge back to the configuration that
/// served, the deploy exits 3 naming the edge, and the app answers through
/// the edge again with every row it had.
#[test]
fn an_edge_configuration_haproxy_refuses_is_rolled_back_and_every_row_is_kept() {
    let app = PushedApp::start();
    let a = app.version.clone();
    app.deploy(&a).assert_success();
    wait_for_app(app.port);
    let base = format!("http://127.0.0.1:{}", app.port);
    support::variants::add_todo(app.port, "written before the broken edge");
    let rows = support::variants::titles(app.port);
    let config_before = edge_config_names(&app.stack);

    let dir = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string(xtask_test_support::project_root().join("stack.single-node.yml")).unwrap();
    let file = support::swarm::stack_file_in(dir.path(), &text);
    let cfg = dir.path().join("edge/haproxy.cfg");
    let broken = std::fs::read_to_string(&cfg).unwrap().replacen("global\n", "global\n    no-such-keyword\n", 1);
    std::fs::write(&cfg, broken).unwrap();
    let failed = app.at(&a).with_env("STACK_FILE", &file.display().to_string()).xtask(&[
        "deploy",
        "--no-login",
        "--timeout",
        "3m",
    ]);
    assert_eq!(failed.status.code(), Some(3), "{}\n{}", failed.stdout, failed.stderr);
    assert!(failed.error_text().contains("edge"), "the error does not name the edge: {}", failed.stderr);

    xtask_test_support::wait_until("the edge answers again", std::time::Duration::from_secs(60), || {
        http(&format!("{base}/todos"), "GET", &[]).is_ok_and(|response| response.status == 200)
    });
    assert_eq!(edge_config_names(&app.stack), config_before, "the edge does not run the configuration that served");
    assert_eq!(support::variants::titles(app.port), rows, "rows were lost");
}
