//! The tests' HAProxy image (Debian's haproxy, built offline by
//! `support::edge`) starts as the official `haproxy` image does, so that the
//! stacks' `edge` service runs unchanged on either: the configuration at
//! /usr/local/etc/haproxy/haproxy.cfg, HAProxy as PID 1 in master-worker
//! mode in the foreground (`-W -db`), as user haproxy (uid 99), a soft stop
//! on SIGUSR1, a bad configuration a failed start with HAProxy's own error.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use xtask_test_support::http::http;
use xtask_test_support::{free_port, require_docker, unique_name, wait_until};

/// A container the test started, removed when dropped (on failure too).
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "--force", "--volumes", &self.0]).output();
    }
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().expect("docker runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// What the container printed, both streams (HAProxy logs to stderr).
fn logs(name: &str) -> String {
    let out = docker(&["logs", name]);
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A configuration file in `dir`, mounted read-only where the official image
/// reads it.
fn config(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, text).expect("write haproxy.cfg");
    format!("{}:/usr/local/etc/haproxy/haproxy.cfg:ro", path.display())
}

/// An unprivileged port, as a stack's edge listens on as user haproxy.
const SERVING: &str = "
defaults
  mode http
  timeout connect 1s
  timeout client 5s
  timeout server 5s

frontend web
  bind :8000
  monitor-uri /healthz
  http-request return status 200 content-type text/plain string ok
";

#[test]
fn the_tests_haproxy_image_starts_as_the_official_one_does() {
    require_docker();
    let image = support::edge::image();
    let dir = tempfile::tempdir().expect("temp dir");
    let mount = config(&dir, SERVING);
    let name = unique_name("edgeimage");
    let _container = Container(name.clone());
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8000");
    // The image's own ENTRYPOINT and CMD; the stop signal the stacks set.
    let run = docker(&[
        "run",
        "--detach",
        "--name",
        &name,
        "--stop-signal",
        "SIGUSR1",
        "--publish",
        &publish,
        "--volume",
        &mount,
        &image,
    ]);
    assert!(run.status.success(), "docker run {image}: {}", String::from_utf8_lossy(&run.stderr));

    let url = format!("http://127.0.0.1:{port}");
    let answered = |path: &str| http(&format!("{url}{path}"), "GET", &[]).ok();
    wait_until("HAProxy answers on its published port", Duration::from_secs(30), || answered("/").is_some());
    let root = answered("/").expect("HAProxy answers");
    assert_eq!((root.status, root.body.as_str()), (200, "ok"), "{}", logs(&name));
    assert_eq!(root.header("content-type"), Some("text/plain"));
    let monitor = answered("/healthz").expect("HAProxy answers its monitor-uri");
    assert_eq!(monitor.status, 200);
    assert!(monitor.body.contains("Service ready"), "{}", monitor.body);

    // PID 1 is HAProxy itself (the entrypoint exec'd it), as uid and gid 99,
    // with -W -db before the image's CMD. The shell reads /proc (its `read`
    // drops the NULs between arguments): no other tool is in the image.
    let status = docker(&[
        "exec",
        &name,
        "sh",
        "-c",
        r#"while read -r key real rest; do case $key in Uid:|Gid:) echo "$key $real";; esac; done </proc/1/status"#,
    ]);
    assert_eq!(stdout(&status), "Uid: 99\nGid: 99", "{}", String::from_utf8_lossy(&status.stderr));
    let cmdline = docker(&["exec", &name, "sh", "-c", "read -r line </proc/1/cmdline; echo \"$line\""]);
    assert_eq!(stdout(&cmdline), "haproxy-W-db-f/usr/local/etc/haproxy/haproxy.cfg");
    // Every process (the master and its worker) as the engine sees them.
    let top = docker(&["top", &name, "-o", "pid,uid,args"]);
    let processes: Vec<String> = stdout(&top)
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .collect();
    assert!(processes.len() >= 2, "a master and a worker: {processes:?}");
    for process in &processes {
        assert_eq!(process, "99 haproxy -W -db -f /usr/local/etc/haproxy/haproxy.cfg", "{processes:?}");
    }
    let inspect =
        docker(&["image", "inspect", "--format", "{{.Config.User}} {{.Config.WorkingDir}} {{.Size}}", &image]);
    let inspect = stdout(&inspect);
    let [user, workdir, size] = inspect.split(' ').collect::<Vec<_>>()[..] else { panic!("image inspect: {inspect}") };
    assert_eq!((user, workdir), ("haproxy", "/var/lib/haproxy"));
    // Pushed to a fresh registry by almost every swarm test: it stays small.
    let size: u64 = size.parse().expect("image size");
    eprintln!("{image}: {:.1} MB", size as f64 / 1e6);
    assert!(size < 30_000_000, "{image} is {size} bytes: keep it under 30 MB (see support/edge.rs)");

    // SIGUSR1 (the official image's STOPSIGNAL) is a soft stop: the worker
    // finishes and exits 0, then the master, well before `docker stop`
    // would kill it (exit 137).
    let stop = docker(&["stop", "--time", "30", &name]);
    assert!(stop.status.success(), "{}", String::from_utf8_lossy(&stop.stderr));
    let exit = docker(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    let logs = logs(&name);
    assert_eq!(stdout(&exit), "0", "{logs}");
    assert!(logs.contains("exited with code 0 (Exit)"), "no soft stop of the worker: {logs}");
}

#[test]
fn an_option_as_first_argument_is_haproxys() {
    require_docker();
    let image = support::edge::image();
    // `-vv` alone: the entrypoint runs `haproxy -W -db -vv`.
    let version = docker(&["run", "--rm", &image, "-vv"]);
    assert!(version.status.success(), "{}", String::from_utf8_lossy(&version.stderr));
    let text = String::from_utf8_lossy(&version.stdout);
    assert!(text.starts_with("HAProxy version 2.6."), "{text}");
    // Built with TLS, which the edge serves when a certificate is named.
    assert!(text.contains("+OPENSSL"), "{text}");
    // Any other command runs as given.
    let shell = docker(&["run", "--rm", &image, "sh", "-c", "echo $PWD"]);
    assert_eq!(stdout(&shell), "/var/lib/haproxy");
}

#[test]
fn a_bad_configuration_fails_the_start_with_haproxys_error() {
    require_docker();
    let image = support::edge::image();
    let dir = tempfile::tempdir().expect("temp dir");
    let mount = config(&dir, "frontend web\n  bind :8000\n  no-such-keyword here\n");
    let name = unique_name("edgebad");
    let _container = Container(name.clone());
    let run = docker(&["run", "--name", &name, "--volume", &mount, &image]);
    assert!(!run.status.success(), "HAProxy started with a bad configuration: {}", logs(&name));
    let exit = docker(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    assert_ne!(stdout(&exit), "0");
    let logs = logs(&name);
    assert!(logs.contains("[ALERT]") && logs.contains("unknown keyword 'no-such-keyword'"), "{logs}");
}

#[test]
fn ldd_output_names_each_shared_object_once_found() {
    use support::edge::shared_objects;
    let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\
               \tlibssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x00007f7d)\n\
               \t/lib64/ld-linux-x86-64.so.2 (0x00007f7d)\n";
    assert_eq!(
        shared_objects(ldd),
        Ok(vec!["/lib/x86_64-linux-gnu/libssl.so.3".to_owned(), "/lib64/ld-linux-x86-64.so.2".to_owned()])
    );
    let missing = "\tlibssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x1)\n\tliblua5.3.so.0 => not found\n";
    assert_eq!(shared_objects(missing), Err("liblua5.3.so.0".to_owned()));
}
