//! The local single-node swarm, shared by the tests that deploy: one at a
//! time ([`swarm_lock`]), each with its own stack that [`Stack`] removes,
//! with what the xtask keeps beside it (named as xtask-cloud names them).

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use xtask_test_support::http::http;
use xtask_test_support::sandbox::Sandbox;
use xtask_test_support::{poll_until, project_root, require_swarm};

use crate::support::moto::Moto;
use crate::support::registry::Registry;

static SWARM: Mutex<()> = Mutex::new(());

/// The swarm for this test alone, until the guard is dropped.
pub fn swarm_lock() -> MutexGuard<'static, ()> {
    require_swarm();
    SWARM.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker").args(args).stdin(Stdio::null()).output().expect("docker runs")
}

pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The image's own acceptance suite, run from the host's network against the
/// app a stack publishes on `port` (its edge's), passes (`what` names that app on failure).
pub fn assert_acceptance_passes(image: &str, port: u16, what: &str) {
    let url = format!("http://127.0.0.1:{port}");
    let acceptance = docker(&["run", "--rm", "--network", "host", image, "acceptance", "--url", &url]);
    assert!(
        acceptance.status.success(),
        "acceptance suite against {what} failed:\n{}{}",
        String::from_utf8_lossy(&acceptance.stdout),
        String::from_utf8_lossy(&acceptance.stderr)
    );
}

/// The label stack.yml's placement constraints ask for: the node of the data.
pub const DATA_NODE_LABEL: &str = "todobackend.data";

/// stack.yml places every service on the node labelled todobackend.data=true:
/// label this single node (idempotent; the label stays, as a user's would).
pub fn label_the_node() {
    let node = docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"]);
    docker_ok(&["node", "update", "--label-add", &format!("{DATA_NODE_LABEL}=true"), &node]);
}

/// Docker's filter for what belongs to `stack` (services, networks, volumes).
fn stack_filter(stack: &str) -> String {
    format!("label=com.docker.stack.namespace={stack}")
}

pub fn stack_exists(name: &str) -> bool {
    !docker_ok(&["service", "ls", "--quiet", "--filter", &stack_filter(name)]).is_empty()
}

/// The services of `stack`'s database jobs (`deploy`'s one-off services).
pub fn job_services(stack: &str) -> String {
    let filter = format!("label={}={stack}", xtask_cloud::release::job::JOB_LABEL);
    docker_ok(&["service", "ls", "--quiet", "--filter", &filter])
}

/// Whether `stack`'s deploy lock is held (its swarm config exists).
pub fn lock_exists(stack: &str) -> bool {
    docker(&["config", "inspect", &xtask_cloud::records::lock_name(stack)]).status.success()
}

/// The jobs of the stack file `sandbox` deploys (its services that run to
/// completion), in the order `deploy` names them: read with xtask-cloud's own
/// reading of the file, so no test depends on which jobs the stack has.
pub fn stack_file_jobs(sandbox: &Sandbox) -> Vec<String> {
    let path = sandbox.env_value("STACK_FILE").expect("the sandbox names its stack file");
    let text = std::fs::read_to_string(path).unwrap_or_else(|err| panic!("read {path}: {err}"));
    // The sandbox's variables; the file's defaults for the others.
    let lookup = |name: &str| sandbox.env_value(name).map(str::to_owned);
    let services = xtask_cloud::stackfile::load(path, &text, &lookup).expect("the stack file loads");
    services.into_iter().filter(|service| service.one_shot).map(|service| service.name).collect()
}

/// Removes the stack when dropped and waits until its services and network are gone.
pub struct Stack(pub String);

impl Drop for Stack {
    fn drop(&mut self) {
        let stack = &self.0;
        let _ = docker(&["stack", "rm", stack]);
        let label = stack_filter(stack);
        let listed = |what: &str| !docker(&[what, "ls", "--quiet", "--filter", &label]).stdout.is_empty();
        poll_until(Duration::from_secs(90), || !listed("network") && !listed("service"));
        // What the xtask keeps on the swarm beside the stack: its history,
        // and a lock or a database job a killed run left.
        let jobs = format!("label={}={stack}", xtask_cloud::release::job::JOB_LABEL);
        for job in String::from_utf8_lossy(&docker(&["service", "ls", "--quiet", "--filter", &jobs]).stdout).lines() {
            let _ = docker(&["service", "rm", job]);
        }
        let history = format!("label={}={stack}", xtask_cloud::records::HISTORY_LABEL);
        for config in
            String::from_utf8_lossy(&docker(&["config", "ls", "--quiet", "--filter", &history]).stdout).lines()
        {
            let _ = docker(&["config", "rm", config]);
        }
        let _ = docker(&["config", "rm", &xtask_cloud::records::lock_name(stack)]);
        let left = remove_containers_and_volumes(stack);
        if !left.is_empty() {
            let message = format!("stack {stack} left behind after {LEFTOVERS_WAIT:?}: {}", left.join(", "));
            // A second panic while a test's own failure unwinds would abort.
            if std::thread::panicking() {
                eprintln!("{message}");
            } else {
                panic!("{message}");
            }
        }
    }
}

/// How long the swarm has to remove the containers of `stack`'s services and
/// jobs (replicated jobs' exited ones included) before the test removes them
/// itself, and the volumes to become free.
const LEFTOVERS_WAIT: Duration = Duration::from_secs(60);

/// The containers of `stack`'s services and jobs, any service named
/// `<stack>_...` (the stack's own, a job of deploy's, a test's one-off), as
/// ids; and the volumes they mount.
fn stack_containers(stack: &str) -> (Vec<String>, Vec<String>) {
    let listed =
        docker(&["ps", "--all", "--no-trunc", "--format", "{{.ID}} {{.Label \"com.docker.swarm.service.name\"}}"]);
    let prefix = format!("{stack}_");
    let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, service)| service.starts_with(&prefix))
        .map(|(id, _)| id.to_owned())
        .collect();
    let mut volumes = Vec::new();
    if !ids.is_empty() {
        let format = "{{range .Mounts}}{{if eq .Type \"volume\"}}{{.Name}} {{end}}{{end}}";
        let inspected = docker(
            &[&["container", "inspect", "--format", format][..], &ids.iter().map(String::as_str).collect::<Vec<_>>()]
                .concat(),
        );
        volumes = String::from_utf8_lossy(&inspected.stdout).split_whitespace().map(str::to_owned).collect();
    }
    (ids, volumes)
}

/// Wait (up to [`LEFTOVERS_WAIT`]) for the swarm to remove `stack`'s
/// containers, then remove any still there, by id, with their anonymous
/// volumes; then remove the stack's volumes and those its containers
/// mounted (a one-off's anonymous `/public`). Returns what is still there.
fn remove_containers_and_volumes(stack: &str) -> Vec<String> {
    let (_, mut volumes) = stack_containers(stack);
    poll_until(LEFTOVERS_WAIT, || stack_containers(stack).0.is_empty());
    let (stuck, more) = stack_containers(stack);
    volumes.extend(more);
    for id in &stuck {
        let _ = docker(&["rm", "--force", "--volumes", id]);
    }
    let labelled = docker(&["volume", "ls", "--quiet", "--filter", &stack_filter(stack)]);
    volumes.extend(String::from_utf8_lossy(&labelled.stdout).lines().map(str::to_owned));
    volumes.sort();
    volumes.dedup();
    let exists = |volume: &str| docker(&["volume", "inspect", volume]).status.success();
    let mut left: Vec<String> = stack_containers(stack).0.into_iter().map(|id| format!("container {id}")).collect();
    for volume in volumes {
        let removed =
            poll_until(LEFTOVERS_WAIT, || !exists(&volume) || docker(&["volume", "rm", &volume]).status.success());
        if !removed {
            left.push(format!("volume {volume}"));
        }
    }
    left
}

/// A sandbox that deploys a stack of its own to the local swarm: AWS at
/// the emulator, the registry, the edge on `port` of this node (host mode:
/// the swarm here has no routing mesh), one replica of the app, short waits. The stack
/// file is the single-node SQLite one, `stack.single-node.yml`: the tests
/// of SQLite behaviour (backups on the data volume, restore) run there;
/// [`postgres_stack_sandbox`] is the PostgreSQL stack.
pub fn stack_sandbox(moto: &Moto, registry: &Registry, port: u16) -> Sandbox {
    let single_node = project_root().join("stack.single-node.yml");
    common_stack_sandbox(moto, registry, port).with_env("STACK_FILE", &single_node.display().to_string())
}

/// A sandbox that deploys the PostgreSQL stack, `stack.yml`, as
/// [`stack_sandbox`] does the single-node one: `db` runs `db_image` (the
/// tests' own, in `registry`), its password is the swarm secret
/// `password_secret`.
pub fn postgres_stack_sandbox(
    moto: &Moto,
    registry: &Registry,
    port: u16,
    db_image: &str,
    password_secret: &str,
) -> Sandbox {
    common_stack_sandbox(moto, registry, port)
        .with_env("STACK_FILE", &project_root().join("stack.yml").display().to_string())
        .with_env("DB_IMAGE", db_image)
        .with_env("DB_PASSWORD_SECRET", password_secret)
}

fn common_stack_sandbox(moto: &Moto, registry: &Registry, port: u16) -> Sandbox {
    moto.sandbox(crate::support::sandbox())
        .with_env("ECR_REGISTRY", &registry.host())
        .with_envs(edge_env(&registry.host(), port))
        .with_env("APP_REPLICAS", "1")
        .with_env("APP_UPDATE_DELAY", "1s")
        .with_env("APP_UPDATE_MONITOR", "5s")
        .with_env("JOB_RESTART_DELAY", "1s")
}

/// The edge of a test's stack: the tests' HAProxy image in the test's
/// registry (pushed by [`push_edge_image`]), its HTTP port `port` on each
/// node, its HTTPS port another free one, a short wait between nodes.
pub fn edge_env(registry_host: &str, port: u16) -> Vec<(String, String)> {
    [
        ("EDGE_IMAGE", edge_image_in(registry_host)),
        ("EDGE_HTTP_PORT", port.to_string()),
        ("EDGE_HTTPS_PORT", xtask_test_support::free_port().to_string()),
        ("EDGE_UPDATE_DELAY", "1s".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

/// Where a test's registry keeps the edge's image.
pub fn edge_image_in(registry_host: &str) -> String {
    format!("{registry_host}/todobackend-edge:2.6")
}

/// The tests' HAProxy image (`support::edge`, built once per machine) in
/// the sandbox's registry, as its EDGE_IMAGE names it; the sandbox's Docker
/// config must be logged in there.
pub fn push_edge_image(sandbox: &Sandbox, images: &mut crate::support::images::Images) {
    let image = sandbox.env_value("EDGE_IMAGE").expect("the sandbox names the edge's image").to_owned();
    docker_ok(&["tag", &crate::support::edge::image(), &image]);
    images.track(&image);
    push(sandbox, &image);
}

/// The project's edge/ (the edge's configuration and placeholder
/// certificate) copied into `dir`, where a copied stack file reads them.
pub fn copy_edge_files(dir: &std::path::Path) {
    let edge = dir.join("edge");
    std::fs::create_dir_all(&edge).expect("create edge/ beside the stack file");
    for entry in std::fs::read_dir(project_root().join("edge")).expect("read edge/") {
        let entry = entry.expect("an entry of edge/");
        std::fs::copy(entry.path(), edge.join(entry.file_name())).expect("copy the edge's files");
    }
}

/// db/ beside a copy of stack.yml (the database's client rules).
pub fn copy_db_files(dir: &std::path::Path) {
    let db = dir.join("db");
    std::fs::create_dir_all(&db).expect("create db/ beside the stack file");
    for entry in std::fs::read_dir(project_root().join("db")).expect("read db/") {
        let entry = entry.expect("an entry of db/");
        std::fs::copy(entry.path(), db.join(entry.file_name())).expect("copy the database's files");
    }
}

/// A copy of a stack file's text at `dir/stack.yml`, with the files it
/// reads beside it (the edge's configuration and placeholder certificate,
/// the database's client rules),
/// for a test that deploys a changed stack file.
pub fn stack_file_in(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    copy_edge_files(dir);
    copy_db_files(dir);
    let path = dir.join("stack.yml");
    std::fs::write(&path, text).expect("write the stack file");
    path
}

/// `docker login` of the sandbox's Docker config, the password on stdin.
pub fn docker_login(sandbox: &Sandbox, registry: &Registry) {
    let mut child = Command::new("docker")
        .args(["login", "--username", &registry.user, "--password-stdin", &registry.host()])
        .env("DOCKER_CONFIG", sandbox.docker_config())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker login");
    child.stdin.take().expect("stdin").write_all(registry.password().as_bytes()).expect("password");
    let out = child.wait_with_output().expect("docker login runs");
    assert!(out.status.success(), "docker login: {}", String::from_utf8_lossy(&out.stderr));
}

pub fn push(sandbox: &Sandbox, tag: &str) {
    let run = sandbox.docker(&["push", tag]);
    assert!(run.success(), "docker push {tag}: {}", run.stderr);
}

/// `version` of the app in the registry's namespace, as a local image: the
/// real release image built by `cargo xtask build`.
pub fn app_image(
    sandbox: &Sandbox,
    registry: &Registry,
    version: &str,
    images: &mut crate::support::images::Images,
) -> String {
    let tag = format!("{}/todobackend:{version}", registry.host());
    let local = sandbox.local_image("todobackend", version);
    images.track(&tag);
    images.track(&local);
    // The SBOM image `build` makes beside it.
    images.track(&format!("{local}.sbom"));
    let built = sandbox.clone_with(&[("APP_VERSION", version), ("ECR_REGISTRY", &registry.host())]).xtask(&["build"]);
    built.assert_success();
    // `build` names it locally; the registry's name is `publish`'s or, here, ours.
    docker_ok(&["tag", &local, &tag]);
    tag
}

/// The app answers GET / with 200 through the edge's port.
pub fn answers(port: u16) -> bool {
    http(&format!("http://127.0.0.1:{port}/"), "GET", &[]).is_ok_and(|response| response.status == 200)
}

/// The images of the app's running containers.
pub fn running_app_images(stack: &str) -> Vec<String> {
    let out = docker_ok(&[
        "ps",
        "--filter",
        &format!("label=com.docker.swarm.service.name={stack}_app"),
        "--format",
        "{{.Image}}",
    ]);
    out.lines().map(|line| line.split('@').next().unwrap_or(line).to_owned()).collect()
}

/// The image `service`'s spec names, without its digest.
pub fn spec_image(stack: &str, service: &str) -> String {
    let image = docker_ok(&[
        "service",
        "inspect",
        &format!("{stack}_{service}"),
        "--format",
        "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
    ]);
    image.split('@').next().unwrap_or(&image).to_owned()
}

/// The bits of the capabilities the stacks add (linux/capability.h), to
/// read a process's capability sets.
fn capability_bit(name: &str) -> u32 {
    match name {
        "CAP_CHOWN" => 0,
        "CAP_DAC_OVERRIDE" => 1,
        "CAP_DAC_READ_SEARCH" => 2,
        "CAP_FOWNER" => 3,
        "CAP_SETGID" => 6,
        "CAP_SETUID" => 7,
        "CAP_NET_BIND_SERVICE" => 10,
        other => panic!("no bit known for {other}: add it to capability_bit"),
    }
}

/// The stack's `service` is hardened as its stack file says, in its spec
/// and in the process the engine started for it on this node: a read-only
/// root file system, every capability dropped but `cap_add` (as the spec
/// names them, `CAP_...`), and its first process running with no effective
/// capability (a root entrypoint that drops to its user keeps none), as
/// `uid` when given. A one-shot service (`running: false`) is checked in
/// its spec only: its task has ended.
pub fn assert_hardened(stack: &str, service: &str, cap_add: &[&str], uid: Option<u32>, running: bool) {
    let name = format!("{stack}_{service}");
    let spec = docker_ok(&["service", "inspect", &name, "--format", "{{json .Spec.TaskTemplate.ContainerSpec}}"]);
    let spec: serde_json::Value = serde_json::from_str(&spec).expect("the container spec as JSON");
    assert_eq!(spec["ReadOnly"], true, "{name} is not read-only: {spec}");
    assert_eq!(spec["CapabilityDrop"], serde_json::json!(["ALL"]), "{name} keeps capabilities: {spec}");
    let added: Vec<&str> =
        spec["CapabilityAdd"].as_array().into_iter().flatten().filter_map(serde_json::Value::as_str).collect();
    assert_eq!(added, cap_add, "{name}'s added capabilities: {spec}");
    if !running {
        return;
    }
    let filter = format!("label=com.docker.swarm.service.name={name}");
    let containers = docker_ok(&["ps", "--quiet", "--filter", &filter]);
    let container = containers.lines().next().unwrap_or_else(|| panic!("no running container of {name}"));
    let host = docker_ok(&["inspect", container, "--format", "{{.HostConfig.ReadonlyRootfs}} {{.State.Pid}}"]);
    let (read_only, pid) = host.split_once(' ').expect("two words");
    assert_eq!(read_only, "true", "{name}'s container has a writable root file system");
    // Its first process, as the kernel sees it (the tests run as root on the engine's host).
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process's status");
    let field = |key: &str| {
        let line = status.lines().find(|line| line.starts_with(key)).unwrap_or_else(|| panic!("no {key} in {status}"));
        line[key.len()..].split_whitespace().map(str::to_owned).collect::<Vec<_>>()
    };
    let mask = |key: &str| u64::from_str_radix(&field(key)[0], 16).expect("a capability mask");
    let bounding = cap_add.iter().fold(0u64, |mask, cap| mask | 1 << capability_bit(cap));
    assert_eq!(mask("CapBnd:"), bounding, "{name}'s bounding set is not its cap_add:\n{status}");
    assert_eq!(mask("CapEff:"), 0, "{name}'s process runs with capabilities:\n{status}");
    if let Some(uid) = uid {
        assert!(field("Uid:").iter().all(|id| *id == uid.to_string()), "{name} does not run as {uid}:\n{status}");
    }
}
