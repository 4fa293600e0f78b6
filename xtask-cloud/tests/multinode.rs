//! The xtask on a swarm of three nodes (issue 19): Docker engines in network
//! namespaces of their own, joined into one swarm on a private bridge
//! (`support::multinode`). The xtask talks to node 1, the manager; the
//! data lives on node 2, so the jobs, logs and tasks it must follow run on
//! an engine it is not connected to.
//!
//! Nothing here touches the host's engine or its swarm: each test makes its
//! own swarm, and removes it, so these tests run beside the other swarm tests.

mod support;

use support::multinode::{MultiNode, Step};

#[test]
fn a_set_up_that_fails_part_way_leaves_nothing_behind() {
    for step in [Step::Bridge, Step::Namespaces, Step::Engines, Step::Registry, Step::Swarm] {
        let failed = std::panic::catch_unwind(|| MultiNode::start_failing_after(3, step));
        assert!(failed.is_err(), "the set-up did not fail after {step:?}");
        let trace = MultiNode::last_trace().expect("the harness recorded its names");
        let left = trace.leftovers();
        assert!(left.is_empty(), "after a set-up failed after {step:?}, these remain:\n{}", left.join("\n"));
    }
    // And a whole swarm once dropped (the deploy tests check it with the stack running).
    let swarm = MultiNode::start(3);
    let trace = swarm.trace();
    assert!(!trace.leftovers().is_empty(), "the trace does not see a live harness");
    drop(swarm);
    let left = trace.leftovers();
    assert!(left.is_empty(), "after the harness was dropped, these remain:\n{}", left.join("\n"));
}

// ---------------------------------------------------------------- the stack on three nodes

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use support::moto::Moto;
use support::multinode::Node;
use xtask_cloud::release::job::{JOB_LABEL, job_prefix};
use xtask_test_support::sandbox::{Run, Sandbox};
use xtask_test_support::wait_until;

/// The port the edge publishes in host mode on each node, through which the
/// app answers: every node has a network namespace of its own, so any port
/// is free there.
const PORT: u16 = 8080;

/// The SQLite stack of one data node: `stack.single-node.yml` once the
/// PostgreSQL stack took `stack.yml`'s place, `stack.yml` before.
fn sqlite_stack_file() -> PathBuf {
    let root = xtask_test_support::project_root();
    let single = root.join("stack.single-node.yml");
    if single.exists() { single } else { root.join("stack.yml") }
}

/// A sandbox that deploys through the manager's socket: AWS at the
/// emulator, the harness's registry, the edge on `PORT` of every node, one
/// replica, short waits.
fn sandbox(swarm: &MultiNode, moto: &Moto, stack_file: &std::path::Path) -> Sandbox {
    support::sandbox()
        .with_envs(moto.aws_env())
        .with_env("ECR_REGISTRY", &swarm.registry().host())
        .with_env("DOCKER_HOST", &swarm.manager().docker_host())
        .with_env("STACK_FILE", &stack_file.display().to_string())
        .with_envs(support::swarm::edge_env(&swarm.registry().host(), PORT))
        .with_env("APP_REPLICAS", "1")
        .with_env("APP_UPDATE_DELAY", "1s")
        .with_env("APP_UPDATE_MONITOR", "5s")
        .with_env("JOB_RESTART_DELAY", "1s")
}

/// The docker CLI on `node` with the sandbox's Docker config.
fn docker_as(node: &Node, sandbox: &Sandbox, args: &[&str]) -> Run {
    let out = Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", node.docker_host())
        .env("DOCKER_CONFIG", sandbox.docker_config())
        .env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::null())
        .output()
        .expect("docker runs");
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The real release image, built by `cargo xtask build` on the manager's
/// engine (the only engine here that trusts the bridge's registry) and
/// pushed by `cargo xtask publish`; then versions derived from it, pushed
/// with the credential of `cargo xtask login`. Returns the image of `version`.
fn publish_versions(swarm: &MultiNode, sandbox: &Sandbox, version: &str, derived: &[(&str, &str)]) -> String {
    let at = sandbox.clone_with(&[("APP_VERSION", version)]);
    at.xtask(&["build"]).assert_success();
    at.xtask(&["publish", "--create-repository"]).assert_success();
    let image = format!("{}/todobackend:{version}", swarm.registry().host());
    at.xtask(&["login"]).assert_success();
    push_local_image(swarm, sandbox, &support::edge::image(), &support::swarm::edge_image_in(&swarm.registry().host()));
    for (tag, lines) in derived {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("Dockerfile"), format!("FROM {image}\n{lines}\n")).expect("Dockerfile");
        let derived_image = format!("{}/todobackend:{tag}", swarm.registry().host());
        let context = dir.path().display().to_string();
        let built = docker_as(swarm.manager(), sandbox, &["build", "--quiet", "--tag", &derived_image, &context]);
        assert!(built.success(), "docker build {derived_image}: {}", built.stderr);
        let pushed = docker_as(swarm.manager(), sandbox, &["push", &derived_image]);
        assert!(pushed.success(), "docker push {derived_image}: {}", pushed.stderr);
    }
    // From here on each deploy logs in itself, as a user's does.
    assert!(docker_as(swarm.manager(), sandbox, &["logout", &swarm.registry().host()]).success());
    image
}

/// The nodes (host names) of a service's tasks that should run.
fn running_on(swarm: &MultiNode, service: &str) -> Vec<String> {
    let out = swarm.manager().docker_ok(&[
        "service",
        "ps",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Node}} {{.CurrentState}}",
        service,
    ]);
    let mut nodes: Vec<String> = out
        .lines()
        .filter(|line| line.contains(" Running"))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    nodes.sort();
    nodes
}

fn answers(node: &Node, path: &str) -> Option<u16> {
    xtask_test_support::http::http(&node.url(PORT, path), "GET", &[]).ok().map(|response| response.status)
}

fn spec_image(manager: &Node, stack: &str, service: &str) -> String {
    let image = manager.docker_ok(&[
        "service",
        "inspect",
        "--format",
        "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
        &format!("{stack}_{service}"),
    ]);
    image.split('@').next().unwrap_or(&image).to_owned()
}

fn assert_gone(trace: support::multinode::Trace) {
    let left = trace.leftovers();
    assert!(left.is_empty(), "the harness left these behind:\n{}", left.join("\n"));
}

#[test]
fn the_sqlite_stack_deploys_updates_and_rolls_back_with_its_data_on_a_worker() {
    let swarm = MultiNode::start(3);
    let trace = swarm.trace();
    let moto = Moto::start();
    let sandbox = sandbox(&swarm, &moto, &sqlite_stack_file());
    let on = DataOnAWorker { swarm: &swarm, sandbox: &sandbox, stack: sandbox.stack_name(), data_node: swarm.node(2) };
    let suffix = xtask_test_support::unique_name("v");
    let (a, b, crash) = (format!("a{suffix}"), format!("b{suffix}"), format!("crash{suffix}"));
    publish_versions(
        &swarm,
        &sandbox,
        &a,
        &[(&b, &format!("LABEL version={b}")), (&crash, "ENV TODOBACKEND_LISTEN=not-an-address")],
    );

    on.an_unlabelled_swarm_is_refused_with_the_label_to_set(&a);
    on.the_jobs_and_the_app_run_on_the_data_node_alone(&a);
    on.the_node_that_pulls_has_only_the_swarms_credential(&a);
    on.status_and_logs_name_the_nodes_of_the_tasks(&a);
    on.an_interrupt_stops_the_job_on_its_worker_and_removes_it(&b);
    on.updates_failures_and_rollbacks_work_across_nodes(&a, &b, &crash);

    drop(swarm);
    assert_gone(trace);
}

/// The SQLite stack of a three-node swarm whose data lives on node 2, a
/// worker: the xtask talks to node 1, the manager.
struct DataOnAWorker<'a> {
    swarm: &'a MultiNode,
    sandbox: &'a Sandbox,
    stack: String,
    data_node: &'a Node,
}

impl DataOnAWorker<'_> {
    fn at(&self, version: &str) -> Sandbox {
        self.sandbox.clone_with(&[("APP_VERSION", version)])
    }

    fn manager(&self) -> &Node {
        self.swarm.manager()
    }

    fn app_image(&self, version: &str) -> String {
        format!("{}/todobackend:{version}", self.swarm.registry().host())
    }

    /// On a swarm of three nodes the xtask labels none: it says which to label.
    fn an_unlabelled_swarm_is_refused_with_the_label_to_set(&self, a: &str) {
        let manager = self.manager();
        let unlabelled = self.at(a).xtask(&["deploy"]);
        unlabelled.assert_failure();
        assert!(unlabelled.stderr.contains("todobackend.data"), "{}", unlabelled.stderr);
        assert!(manager.docker_ok(&["node", "ls", "--format", "{{.Hostname}} {{.Status}}"]).lines().count() == 3);
        let labels = manager.docker_ok(&["node", "inspect", "--format", "{{.Spec.Labels}}", &manager.node_id()]);
        assert!(!labels.contains("todobackend.data"), "the manager was labelled: {labels}");
    }

    /// Node 2 labelled: the jobs and the app run there, where the manager,
    /// the engine the xtask talks to, lists no container.
    fn the_jobs_and_the_app_run_on_the_data_node_alone(&self, a: &str) {
        let (manager, data_node, stack) = (self.manager(), self.data_node, &self.stack);
        manager.docker_ok(&["node", "update", "--label-add", "todobackend.data=true", &data_node.node_id()]);
        let first = self.at(a).xtask(&["deploy", "--timeout", "3m"]);
        first.assert_success().assert_not_leaked(support::moto::ECR_PASSWORD);
        assert!(
            first.stdout.contains("migrate completed") && first.stdout.contains("collectstatic completed"),
            "{}",
            first.stdout
        );
        for service in ["app", "migrate", "collectstatic"] {
            let nodes = manager.docker_ok(&["service", "ps", "--format", "{{.Node}}", &format!("{stack}_{service}")]);
            assert!(nodes.lines().all(|node| node == data_node.hostname), "{service} ran on {nodes}");
        }
        // Only the edge, which runs on every node.
        let on_manager = manager.docker_ok(&[
            "ps",
            "--all",
            "--filter",
            &format!("label=com.docker.stack.namespace={stack}"),
            "--format",
            "{{.Label \"com.docker.swarm.service.name\"}}",
        ]);
        let edge = format!("{stack}_edge");
        let others: Vec<&str> = on_manager.lines().filter(|service| *service != edge).collect();
        assert!(others.is_empty(), "the manager runs containers of the stack: {others:?}");
        assert!(on_manager.lines().any(|service| service == edge), "no edge on the manager: {on_manager}");
        assert_eq!(answers(data_node, "/"), Some(200), "version {a} does not answer on {}", data_node.hostname);
    }

    /// The node that pulled had no credential of its own: the swarm's
    /// (--with-registry-auth) was the only one.
    fn the_node_that_pulls_has_only_the_swarms_credential(&self, a: &str) {
        let bare = support::sandbox();
        let pull = docker_as(self.swarm.node(3), &bare, &["pull", &self.app_image(a)]);
        assert!(!pull.success(), "node3 pulls without a credential: the registry does not check");
    }

    /// status: each service's node; logs: a job's lines, from node 2.
    fn status_and_logs_name_the_nodes_of_the_tasks(&self, a: &str) {
        let data_node = self.data_node;
        let status = self.at(a).xtask(&["status"]);
        status.assert_success();
        let app_line = status.stdout.lines().find(|line| line.starts_with("app ")).expect("an app line");
        assert!(app_line.ends_with(&data_node.hostname), "{}", status.stdout);
        assert!(status.stdout.contains("nodes: node1 (manager) ready, node2 ready, node3 ready"), "{}", status.stdout);
        let json: serde_json::Value =
            serde_json::from_str(&self.at(a).xtask(&["status", "--json"]).stdout).expect("json");
        assert_eq!(json["task_nodes"]["migrate"], serde_json::json!([data_node.hostname]), "{json}");
        let logs = self.at(a).xtask(&["logs", "migrate"]);
        logs.assert_success();
        assert!(logs.stdout.lines().any(|line| line.starts_with(&format!("migrate@{a} | "))), "{}", logs.stdout);
    }

    /// Ctrl-C while the database check runs as a job on node 2: the
    /// interrupt stops the job's task there (the manager sees only its
    /// state), then removes the job; nothing of it keeps running.
    fn an_interrupt_stops_the_job_on_its_worker_and_removes_it(&self, b: &str) {
        let (manager, data_node, stack) = (self.manager(), self.data_node, &self.stack);
        let job_filter = format!("label={}={stack}", JOB_LABEL);
        let deploy = self
            .at(b)
            .command_in(&self.sandbox.root, &["deploy", "--no-login", "--timeout", "3m"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn a deploy");
        wait_until("the database job", Duration::from_secs(120), || {
            !manager.docker_ok(&["service", "ls", "--quiet", "--filter", &job_filter]).is_empty()
        });
        signal(deploy.id(), "-STOP");
        wait_until("the job's task placed on node 2", Duration::from_secs(60), || {
            let jobs = manager.docker_ok(&["service", "ls", "--quiet", "--filter", &job_filter]);
            jobs.lines().any(|job| {
                manager.docker_ok(&["service", "ps", "--format", "{{.Node}}", job]).contains(&data_node.hostname)
            })
        });
        signal(deploy.id(), "-INT");
        signal(deploy.id(), "-CONT");
        let out = deploy.wait_with_output().expect("the deploy ends");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "{stderr}");
        let said = stderr.lines().find(|line| line.starts_with("interrupted by SIGINT")).unwrap_or_default();
        assert!(
            said.contains(&format!("removed the database job {}", job_prefix(stack)))
                && said.contains(&format!("its container on node {} had stopped", data_node.hostname)),
            "{stderr}"
        );
        assert_eq!(manager.docker_ok(&["service", "ls", "--quiet", "--filter", &job_filter]), "");
        let job_container = format!("label={}={stack}", JOB_LABEL);
        assert_eq!(
            data_node.docker_ok(&["ps", "--quiet", "--filter", &job_container]),
            "",
            "the job still runs on node 2"
        );
        wait_until("the swarm removes the job's container on node 2", Duration::from_secs(60), || {
            data_node.docker_ok(&["ps", "--all", "--quiet", "--filter", &job_container]).is_empty()
        });
    }

    /// A rolling update, watched to convergence, its jobs on node 2 again; a
    /// release that crashes on node 2, rolled back with its error read from
    /// node 2 through the manager, B still serving; a rollback, whose
    /// database check runs as a job on node 2.
    fn updates_failures_and_rollbacks_work_across_nodes(&self, a: &str, b: &str, crash: &str) {
        let (manager, data_node, stack) = (self.manager(), self.data_node, &self.stack);
        let update = self.at(b).xtask(&["deploy", "--no-login", "--timeout", "3m"]);
        update.assert_success();
        assert!(update.stdout.contains(&format!("Version {b} is live")), "{}", update.stdout);
        assert_eq!(answers(data_node, "/"), Some(200));

        let failed = self.at(crash).xtask(&["deploy", "--no-login", "--timeout", "3m"]);
        assert_eq!(failed.status.code(), Some(3), "{}\n{}", failed.stdout, failed.stderr);
        assert!(failed.stderr.contains("rolled it back"), "{}", failed.stderr);
        assert!(failed.stderr.contains("not-an-address"), "the crash's own log line is missing:\n{}", failed.stderr);
        assert_eq!(answers(data_node, "/"), Some(200), "nothing serves after the failed release");
        assert_eq!(spec_image(manager, stack, "app"), self.app_image(b));

        let rollback = self.at(b).xtask(&["rollback", "--to", a, "--no-login", "--timeout", "3m"]);
        rollback.assert_success();
        assert_eq!(spec_image(manager, stack, "app"), self.app_image(a), "{}\n{}", rollback.stdout, rollback.stderr);
        assert_eq!(answers(data_node, "/"), Some(200));
    }
}

/// The SQLite stack with the app free to run on any node, spread over them,
/// and the jobs global, so that every node has its own
/// database: a fixture for what happens to the app's replicas across nodes
/// (drain, loss, logs), not a stack to run (its nodes' data differ).
fn unpinned_stack_file(dir: &std::path::Path) -> PathBuf {
    let text = std::fs::read_to_string(sqlite_stack_file()).expect("read the SQLite stack file");
    let pinned_job =
        "      replicas: 1\n      placement:\n        constraints: [\"node.labels.todobackend.data == true\"]\n";
    assert_eq!(text.matches(pinned_job).count(), 2, "the stack's jobs are no longer pinned as this test expects");
    let text = text.replace(pinned_job, "      mode: global\n");
    let pinned_app = "constraints: [\"node.labels.todobackend.data == true\"]";
    assert_eq!(text.matches(pinned_app).count(), 1, "the stack's app is no longer pinned as this test expects");
    // Spread over the nodes, not capped: the app's updates are start-first,
    // and a cap of one per node would leave no node for the new task once a
    // node is lost.
    support::swarm::stack_file_in(dir, &text.replace(pinned_app, "preferences: [{spread: node.id}]"))
}

/// A client sending GET requests to one node's port in a loop, until stopped.
struct Client {
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Client {
    fn start(url: String) -> Client {
        let (sent, failed, stop) = (Arc::default(), Arc::default(), Arc::new(AtomicBool::new(false)));
        let thread = {
            let (sent, failed, stop): (Arc<AtomicU64>, Arc<AtomicU64>, Arc<AtomicBool>) =
                (Arc::clone(&sent), Arc::clone(&failed), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    sent.fetch_add(1, Ordering::SeqCst);
                    let ok =
                        xtask_test_support::http::http(&url, "GET", &[]).is_ok_and(|response| response.status == 200);
                    if !ok {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                    // Pacing, not a wait: about 50 requests a second, until stopped.
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Client { sent, failed, stop, thread: Some(thread) }
    }

    /// Stop it: (requests sent, requests failed).
    fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        (self.sent.load(Ordering::SeqCst), self.failed.load(Ordering::SeqCst))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The node of `swarm` named `name`.
fn named<'a>(swarm: &'a MultiNode, name: &str) -> &'a Node {
    swarm.nodes.iter().find(|node| node.hostname == name).unwrap_or_else(|| panic!("no node {name}"))
}

/// `cargo xtask ARGS` that must end within `timeout` (a read that waits on
/// a lost node must not hang).
fn xtask_within(sandbox: &Sandbox, args: &[&str], timeout: Duration) -> Run {
    let mut child = sandbox
        .command_in(&sandbox.root, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the xtask");
    let ended = xtask_test_support::poll_until(timeout, || child.try_wait().expect("wait for the xtask").is_some());
    if !ended {
        let _ = child.kill();
        let out = child.wait_with_output().expect("the xtask's output");
        panic!(
            "`cargo xtask {}` did not end within {timeout:?}:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Run::of(child.wait_with_output().expect("the xtask's output"))
}

#[test]
fn the_app_keeps_answering_while_a_node_is_drained_or_lost() {
    let swarm = MultiNode::start(3);
    let trace = swarm.trace();
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let sandbox = sandbox(&swarm, &moto, &unpinned_stack_file(dir.path())).with_env("APP_REPLICAS", "2");
    let suffix = xtask_test_support::unique_name("v");
    let (a, b) = (format!("a{suffix}"), format!("b{suffix}"));
    publish_versions(&swarm, &sandbox, &a, &[(&b, &format!("LABEL version={b}"))]);
    let spread = Spread { swarm: &swarm, app: format!("{}_app", sandbox.stack_name()), sandbox, suffix };

    // Not verified: each node's app has a database of its own in this
    // fixture, so a todo posted through the edge may be read on another.
    spread.at(&a).xtask(&["deploy", "--no-verify", "--timeout", "3m"]).assert_success();
    let app_nodes = running_on(&swarm, &spread.app);
    assert_eq!(app_nodes.len(), 2, "{app_nodes:?}");
    for name in &app_nodes {
        wait_until(&format!("the app answers on {name}"), Duration::from_secs(60), || {
            answers(named(&swarm, name), "/") == Some(200)
        });
    }
    spread.status_and_logs_name_both_nodes(&a, &app_nodes);
    let (app_nodes, drained) = spread.a_drained_nodes_task_moves_and_no_request_fails(&a, &app_nodes);
    spread.a_lost_nodes_task_moves_no_request_fails_and_deploy_still_works(&a, &b, &app_nodes, &drained);

    drop(swarm);
    assert_gone(trace);
}

/// The app's two replicas on two of three nodes (`unpinned_stack_file`).
struct Spread<'a> {
    swarm: &'a MultiNode,
    sandbox: Sandbox,
    /// The app's service.
    app: String,
    suffix: String,
}

impl Spread<'_> {
    fn at(&self, version: &str) -> Sandbox {
        self.sandbox.clone_with(&[("APP_VERSION", version)])
    }

    /// status names both nodes; logs has lines from the tasks on both (each
    /// node's request carries an id of its own, which the app logs).
    fn status_and_logs_name_both_nodes(&self, a: &str, app_nodes: &[String]) {
        let status = self.at(a).xtask(&["status"]);
        status.assert_success();
        let app_line = status.stdout.lines().find(|line| line.starts_with("app ")).expect("an app line");
        assert!(app_line.ends_with(&app_nodes.join(",")), "{}", status.stdout);
        let ids: Vec<String> = app_nodes.iter().map(|name| format!("via-{name}-{}", self.suffix)).collect();
        for (name, id) in app_nodes.iter().zip(&ids) {
            let url = named(self.swarm, name).url(PORT, "/todos");
            let response =
                xtask_test_support::http::http(&url, "GET", &[("X-Request-Id", id)]).expect("the app answers");
            assert_eq!(response.status, 200);
        }
        wait_until("logs app shows both nodes' requests", Duration::from_secs(30), || {
            let logs = self.at(a).xtask(&["logs", "app"]);
            logs.assert_success();
            ids.iter().all(|id| logs.stdout.lines().any(|line| line.starts_with("app@") && line.contains(id.as_str())))
        });
    }

    /// Drain a node with an app task (a worker), while a client loops on the
    /// other app node's port: no request fails, the task moves to the spare.
    /// The node is made active again; gives the app's nodes now, and the
    /// drained node (free again).
    fn a_drained_nodes_task_moves_and_no_request_fails(&self, a: &str, app_nodes: &[String]) -> (Vec<String>, String) {
        let (swarm, manager) = (self.swarm, self.swarm.manager());
        let drained =
            app_nodes.iter().find(|name| **name != manager.hostname).expect("an app task on a worker").clone();
        let kept = app_nodes.iter().find(|name| **name != drained).expect("the other app node").clone();
        let spare = swarm.nodes.iter().find(|node| !app_nodes.contains(&node.hostname)).expect("a spare node");
        let client = Client::start(named(swarm, &kept).url(PORT, "/todos"));
        let drained_id = named(swarm, &drained).node_id();
        manager.docker_ok(&["node", "update", "--availability", "drain", &drained_id]);
        let rescheduled = wait_until("the drained node's task runs on the spare", Duration::from_secs(120), || {
            running_on(swarm, &self.app) == sorted(&[&kept, &spare.hostname]) && answers(spare, "/") == Some(200)
        });
        let (sent, failed) = client.stop();
        eprintln!(
            "drain: {sent} requests sent to {kept}, {failed} failed; the app task of {drained} answered on {} after \
             {:.1} s",
            spare.hostname,
            rescheduled.as_secs_f64()
        );
        assert!(sent > 0, "the client sent nothing");
        assert_eq!(failed, 0, "{failed} of {sent} requests to {kept} failed while {drained} drained");
        self.at(a).xtask(&["status"]).assert_success();
        manager.docker_ok(&["node", "update", "--availability", "active", &drained_id]);
        (sorted(&[&kept, &spare.hostname]), drained)
    }

    /// Lose a worker with an app task (its link cut): the other keeps
    /// answering, the swarm marks it down and reschedules on `free`, the node
    /// that is free again; status and logs say so, and a deploy still works.
    fn a_lost_nodes_task_moves_no_request_fails_and_deploy_still_works(
        &self,
        a: &str,
        b: &str,
        app_nodes: &[String],
        free: &str,
    ) {
        let (swarm, manager) = (self.swarm, self.swarm.manager());
        let lost = app_nodes.iter().find(|name| **name != manager.hostname).expect("an app task on a worker").clone();
        let answering = app_nodes.iter().find(|name| **name != lost).expect("the other app node").clone();
        let client = Client::start(named(swarm, &answering).url(PORT, "/todos"));
        let lost_id = named(swarm, &lost).node_id();
        swarm.cut_link(named(swarm, &lost).index);
        let marked_down = wait_until("the swarm marks the lost node down", Duration::from_secs(120), || {
            manager.docker_ok(&["node", "inspect", "--format", "{{.Status.State}}", &lost_id]) == "down"
        });
        let replaced = wait_until("the lost node's task runs elsewhere", Duration::from_secs(120), || {
            running_on(swarm, &self.app) == sorted(&[&answering, free]) && answers(named(swarm, free), "/") == Some(200)
        });
        let (sent, failed) = client.stop();
        eprintln!(
            "loss: {sent} requests sent to {answering}, {failed} failed; {lost} marked down after {:.1} s, its task \
             answered on {free} {:.1} s later",
            marked_down.as_secs_f64(),
            replaced.as_secs_f64()
        );
        assert_eq!(failed, 0, "{failed} of {sent} requests to {answering} failed while {lost} was lost");
        let status = self.at(a).xtask(&["status"]);
        status.assert_success();
        assert!(status.stdout.contains(&format!("{lost} DOWN")), "{}", status.stdout);
        // logs: the lost node's task is left out, said so, and the rest comes.
        let logs = xtask_within(&self.at(a), &["logs", "app", "--tail", "5"], Duration::from_secs(60));
        logs.assert_success();
        assert!(logs.stderr.contains(&format!("warning: node {lost} is down")), "{}", logs.stderr);
        assert!(logs.stdout.lines().any(|line| line.starts_with("app@")), "{}", logs.stdout);
        let update = self.at(b).xtask(&["deploy", "--no-verify", "--timeout", "3m"]);
        update.assert_success();
        for name in [answering.as_str(), free] {
            wait_until(&format!("version {b} answers on {name}"), Duration::from_secs(60), || {
                answers(named(swarm, name), "/") == Some(200)
            });
        }
        assert!(spec_image(manager, &self.sandbox.stack_name(), "app").ends_with(&format!(":{b}")));
    }
}

fn signal(pid: u32, which: &str) {
    let sent = Command::new("kill").args([which, &pid.to_string()]).status().expect("kill runs");
    assert!(sent.success(), "kill {which} {pid}");
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    names.sort();
    names
}

/// The tests' PostgreSQL image (`support::postgres`, built on the host's
/// engine) in the harness's registry, loaded through the manager's engine.
fn push_postgres(swarm: &MultiNode, sandbox: &Sandbox) -> String {
    let image = format!("{}/todobackend-postgres:15", swarm.registry().host());
    sandbox.xtask(&["login"]).assert_success();
    push_local_image(swarm, sandbox, &support::postgres::image(), &image);
    image
}

/// An image of the host's engine (`local`) as `image` in the harness's
/// registry: saved, loaded into the manager's engine, tagged and pushed with
/// the sandbox's Docker config (logged in).
fn push_local_image(swarm: &MultiNode, sandbox: &Sandbox, local: &str, image: &str) {
    let mut saved = Command::new("docker").args(["save", local]).stdout(Stdio::piped()).spawn().expect("docker save");
    let loaded = Command::new("docker")
        .args(["load", "--quiet"])
        .env("DOCKER_HOST", swarm.manager().docker_host())
        .stdin(saved.stdout.take().expect("docker save's output"))
        .output()
        .expect("docker load");
    assert!(saved.wait().expect("docker save ends").success(), "docker save {local} failed");
    assert!(loaded.status.success(), "docker load: {}", String::from_utf8_lossy(&loaded.stderr));
    swarm.manager().docker_ok(&["tag", local, image]);
    let pushed = docker_as(swarm.manager(), sandbox, &["push", image]);
    assert!(pushed.success(), "docker push {image}: {}", pushed.stderr);
}

fn create_secret(sandbox: &Sandbox, name: &str, value: &str) {
    sandbox.xtask_with_stdin(&["secret", "create", name], value).assert_success();
}

#[test]
fn the_postgres_stack_serves_one_database_from_two_nodes_and_waits_out_the_db_node() {
    let swarm = MultiNode::start(3);
    let trace = swarm.trace();
    let moto = Moto::start();
    let (manager, data_node) = (swarm.manager(), swarm.node(2));
    let secret = xtask_test_support::unique_name("dbpw");
    let db_tls = support::postgres::DbTls::new();
    let base = sandbox(&swarm, &moto, &xtask_test_support::project_root().join("stack.yml"))
        .with_env("APP_REPLICAS", "2")
        .with_env("DB_PASSWORD_SECRET", &secret)
        .with_envs(db_tls.env());
    let db_image = push_postgres(&swarm, &base);
    let sandbox = base.with_env("DB_IMAGE", &db_image);
    let stack = sandbox.stack_name();
    let a = format!("a{}", xtask_test_support::unique_name("v"));
    publish_versions(&swarm, &sandbox, &a, &[]);
    create_secret(&sandbox, &secret, &xtask_test_support::unique_name("pw"));
    db_tls.create(&sandbox);
    manager.docker_ok(&["node", "update", "--label-add", "todobackend.data=true", &data_node.node_id()]);

    let at = sandbox.clone_with(&[("APP_VERSION", &a)]);
    at.xtask(&["deploy", "--timeout", "4m"]).assert_success();
    assert_eq!(running_on(&swarm, &format!("{stack}_db")), vec![data_node.hostname.clone()]);
    let app_nodes = running_on(&swarm, &format!("{stack}_app"));
    assert_eq!(app_nodes.len(), 2, "the app's replicas are not on two nodes: {app_nodes:?}");
    let (first, second) = (named(&swarm, &app_nodes[0]), named(&swarm, &app_nodes[1]));
    for node in [first, second] {
        wait_until(&format!("the app answers on {}", node.hostname), Duration::from_secs(60), || {
            answers(node, "/todos") == Some(200)
        });
    }

    // A row written through one node is read through the other.
    let title = xtask_test_support::unique_name("written-on-");
    let body = format!(r#"{{"title":"{title}"}}"#);
    let created =
        xtask_test_support::http::request(&first.url(PORT, "/todos"), "POST", &[], Some(&body)).expect("POST");
    assert!(created.status < 300, "POST /todos on {}: {} {}", first.hostname, created.status, created.body);
    let listed = xtask_test_support::http::http(&second.url(PORT, "/todos"), "GET", &[]).expect("GET");
    assert!(listed.body.contains(&title), "{} does not serve the row written on {}", second.hostname, first.hostname);

    // The db node lost: the edge of a node with an app replica says 503
    // (every task's readiness fails), and the app's tasks stay (alive, not
    // restarted); back when the node returns, with the row.
    let probe = [first, second].into_iter().find(|node| node.index != data_node.index).expect("an app off the db node");
    let app_tasks = || {
        manager.docker_ok(&["service", "ps", "--quiet", "--filter", "desired-state=running", &format!("{stack}_app")])
    };
    let tasks_before = app_tasks();
    swarm.cut_link(data_node.index);
    let unready = wait_until("the edge answers 503 without the db node", Duration::from_secs(60), || {
        answers(probe, "/todos") == Some(503)
    });
    swarm.restore_link(data_node.index);
    let ready = wait_until("the edge answers 200 once the db node is back", Duration::from_secs(120), || {
        answers(probe, "/todos") == Some(200)
    });
    let kept = tasks_before.lines().filter(|task| app_tasks().contains(task)).count();
    assert!(kept > 0, "every app task was replaced while the database was away:\n{tasks_before}\n{}", app_tasks());
    eprintln!(
        "db node lost: {} answered 503 on /todos after {:.1} s, 200 again {:.1} s after the link came back",
        probe.hostname,
        unready.as_secs_f64(),
        ready.as_secs_f64()
    );
    let listed = xtask_test_support::http::http(&probe.url(PORT, "/todos"), "GET", &[]).expect("GET");
    assert!(listed.body.contains(&title), "the row is gone after the db node came back");

    drop(swarm);
    assert_gone(trace);
}

// ---------------------------------------------------------------- zero downtime through the edge

use support::load::{Figures, Load, Options, assert_stored_once};

/// Issue 28: the PostgreSQL stack on three nodes, the edge on every node,
/// three app tasks spread over the nodes, the database on node 1. A
/// load of GETs and POSTs goes to the nodes' edge addresses through a
/// rolling update, a rollback, a node whose link is cut, a drained node, a
/// change of the edge's configuration and a restart of the database: no
/// request fails (503 with Retry-After is the answer while the database is
/// away), and every acknowledged POST is stored once.
#[test]
fn no_request_fails_through_the_edge_on_three_nodes() {
    let swarm = MultiNode::start(3);
    let trace = swarm.trace();
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    // A copy of stack.yml and edge/, so that the edge's configuration can change.
    let stack_yml = std::fs::read_to_string(xtask_test_support::project_root().join("stack.yml")).expect("stack.yml");
    let stack_file = support::swarm::stack_file_in(dir.path(), &stack_yml);
    let secret = xtask_test_support::unique_name("dbpw");
    let db_tls = support::postgres::DbTls::new();
    let base = sandbox(&swarm, &moto, &stack_file)
        .with_env("APP_REPLICAS", "3")
        .with_env("DB_PASSWORD_SECRET", &secret)
        .with_envs(db_tls.env());
    let db_image = push_postgres(&swarm, &base);
    let sandbox = base.with_env("DB_IMAGE", &db_image);
    let suffix = xtask_test_support::unique_name("v");
    let (a, b) = (format!("a{suffix}"), format!("b{suffix}"));
    publish_versions(&swarm, &sandbox, &a, &[(&b, &format!("LABEL version={b}"))]);
    create_secret(&sandbox, &secret, &xtask_test_support::unique_name("pw"));
    db_tls.create(&sandbox);
    // The database on the manager: either worker may then be cut or drained.
    let data_node = swarm.node(1);
    swarm.manager().docker_ok(&["node", "update", "--label-add", "todobackend.data=true", &data_node.node_id()]);
    let edge = ThroughTheEdge { swarm: &swarm, sandbox, dir: dir.path().to_owned(), data_node };
    edge.at(&a).xtask(&["deploy", "--timeout", "4m"]).assert_success();
    for node in &swarm.nodes {
        wait_until(&format!("the app answers through {}'s edge", node.hostname), Duration::from_secs(60), || {
            answers(node, "/todos") == Some(200)
        });
    }
    assert_eq!(running_on(&swarm, &edge.service("edge")), sorted(&["node1", "node2", "node3"]));

    edge.a_rolling_update_and_a_rollback_fail_no_request(&a, &b);
    edge.a_cut_link_to_an_app_node_fails_no_request();
    edge.a_drained_app_node_fails_no_request();
    edge.a_change_of_the_edges_configuration_fails_no_request_behind_a_balancer(&a);
    edge.a_database_restart_answers_503_and_never_refuses(&a);

    drop(swarm);
    assert_gone(trace);
}

struct ThroughTheEdge<'a> {
    swarm: &'a MultiNode,
    sandbox: Sandbox,
    /// Where the test's copy of the stack file and edge/ are.
    dir: PathBuf,
    /// The node that keeps the database (the manager).
    data_node: &'a Node,
}

impl<'a> ThroughTheEdge<'a> {
    fn at(&self, version: &str) -> Sandbox {
        self.sandbox.clone_with(&[("APP_VERSION", version)])
    }

    fn service(&self, name: &str) -> String {
        format!("{}_{name}", self.sandbox.stack_name())
    }

    /// The edge addresses of `nodes`.
    fn edges(&self, nodes: &[&Node]) -> Vec<String> {
        nodes.iter().map(|node| node.url(PORT, "").trim_end_matches('/').to_owned()).collect()
    }

    fn all_nodes(&self) -> Vec<&Node> {
        self.swarm.nodes.iter().collect()
    }

    /// A worker (not the database's node) that runs an app task now.
    fn worker_with_an_app_task(&self) -> &'a Node {
        let on = running_on(self.swarm, &self.service("app"));
        let swarm: &'a MultiNode = self.swarm;
        swarm
            .nodes
            .iter()
            .find(|node| node.index != self.data_node.index && on.contains(&node.hostname))
            .unwrap_or_else(|| panic!("no worker runs an app task: {on:?}"))
    }

    fn others(&self, node: &Node) -> Vec<&'a Node> {
        let swarm: &'a MultiNode = self.swarm;
        swarm.nodes.iter().filter(|other| other.index != node.index).collect()
    }

    /// `change` under load at `nodes`' edges: the figures, printed, with
    /// every acknowledged POST stored once.
    /// Every POST carries an Idempotency-Key, as a client that wants no
    /// failure when a node is lost sends it: the edge replays only those.
    fn under_load(&self, scenario: &str, nodes: &[&Node], options: Options, change: impl FnOnce()) -> Figures {
        let options = Options { idempotency_keys: true, ..options };
        let bases = self.edges(nodes);
        let tag = xtask_test_support::unique_name("load");
        let load = Load::start(&bases, &tag, options);
        load.warm_up(20);
        change();
        let figures = load.stop();
        println!("{}", figures.line(scenario));
        assert!(figures.requests > 0, "{scenario}: the load sent nothing");
        assert_stored_once(&bases[0], &tag, &figures);
        figures
    }

    fn a_rolling_update_and_a_rollback_fail_no_request(&self, a: &str, b: &str) {
        let nodes = self.all_nodes();
        let update = self.under_load("rolling update A to B, load at every node", &nodes, Options::default(), || {
            self.at(b).xtask(&["deploy", "--timeout", "4m"]).assert_success();
        });
        assert_eq!(update.failed, 0, "{}", update.line("rolling update"));
        let rollback = self.under_load("rollback B to A, load at every node", &nodes, Options::default(), || {
            self.at(b).xtask(&["rollback", "--timeout", "4m"]).assert_success();
        });
        assert_eq!(rollback.failed, 0, "{}", rollback.line("rollback"));
        assert!(spec_image(self.swarm.manager(), &self.sandbox.stack_name(), "app").ends_with(&format!(":{a}")));
    }

    /// A worker with an app task loses its link; the load goes to the other
    /// two nodes' edges.
    fn a_cut_link_to_an_app_node_fails_no_request(&self) {
        let (swarm, manager) = (self.swarm, self.swarm.manager());
        let cut = self.worker_with_an_app_task();
        let edge_before = self.edge_task_on(cut);
        let scenario = format!("{}'s link cut (an app task), load at the other two nodes", cut.hostname);
        let figures = self.under_load(&scenario, &self.others(cut), Options::default(), || {
            swarm.cut_link(cut.index);
            let cut_id = cut.node_id();
            wait_until("the swarm marks the node down", Duration::from_secs(120), || {
                manager.docker_ok(&["node", "inspect", "--format", "{{.Status.State}}", &cut_id]) == "down"
            });
            wait_until("three app tasks run on the other nodes", Duration::from_secs(120), || {
                let on = running_on(swarm, &self.service("app"));
                on.len() == 3 && !on.contains(&cut.hostname)
            });
        });
        swarm.restore_link(cut.index);
        wait_until("the node is back", Duration::from_secs(120), || {
            manager.docker_ok(&["node", "inspect", "--format", "{{.Status.State}}", &cut.node_id()]) == "ready"
        });
        assert_eq!(figures.failed, 0, "{}", figures.line("cut link"));
        // The swarm gives a node that was down a new edge task once it is
        // back (the old one is shut down): its edge restarts once, which a
        // load balancer's health check covers. Wait for that before the
        // next scenario sends load to it; should it keep the old task, go on.
        let replaced = xtask_test_support::poll_until(Duration::from_secs(60), || {
            self.edge_task_on(cut).is_some_and(|task| Some(&task) != edge_before.as_ref())
        });
        eprintln!("{}'s edge task after its return: {}", cut.hostname, if replaced { "replaced" } else { "kept" });
        wait_until("the edge on the node answers", Duration::from_secs(60), || answers(cut, "/todos") == Some(200));
    }

    /// The ID of the edge's running task on `node`, when there is one and
    /// no other of its tasks there is on its way.
    fn edge_task_on(&self, node: &Node) -> Option<String> {
        let listed = self.swarm.manager().docker_ok(&[
            "service",
            "ps",
            "--filter",
            &format!("node={}", node.hostname),
            "--filter",
            "desired-state=running",
            "--format",
            "{{.ID}} {{.CurrentState}}",
            &self.service("edge"),
        ]);
        let tasks: Vec<&str> = listed.lines().collect();
        match tasks.as_slice() {
            [only] if only.contains(" Running") => only.split_whitespace().next().map(str::to_owned),
            _ => None,
        }
    }

    /// A worker with an app task drained: its tasks move, its edge goes
    /// with them (a load balancer takes it out first); the load goes to the
    /// other two nodes.
    fn a_drained_app_node_fails_no_request(&self) {
        let (swarm, manager) = (self.swarm, self.swarm.manager());
        let drained = self.worker_with_an_app_task();
        let scenario = format!("{} drained (an app task), load at the other two nodes", drained.hostname);
        let figures = self.under_load(&scenario, &self.others(drained), Options::default(), || {
            manager.docker_ok(&["node", "update", "--availability", "drain", &drained.node_id()]);
            wait_until("the drained node's app task runs elsewhere", Duration::from_secs(120), || {
                let on = running_on(swarm, &self.service("app"));
                on.len() == 3 && !on.contains(&drained.hostname)
            });
        });
        manager.docker_ok(&["node", "update", "--availability", "active", &drained.node_id()]);
        assert_eq!(figures.failed, 0, "{}", figures.line("drain"));
        wait_until("the drained node's edge again", Duration::from_secs(120), || {
            answers(drained, "/todos") == Some(200)
        });
    }

    /// The edge's configuration changed: each node's edge is replaced in
    /// turn (stop-first: a host-mode port binds once per node), so each node
    /// refuses connections for a moment. A load balancer in front of the
    /// nodes sends what a node refused to another one (nothing reached the
    /// refusing node, so even a POST is safe): the load does the same, and
    /// the refusals per node are the gap this leaves.
    fn a_change_of_the_edges_configuration_fails_no_request_behind_a_balancer(&self, a: &str) {
        let cfg = self.dir.join("edge/haproxy.cfg");
        let text = std::fs::read_to_string(&cfg).expect("the test's edge/haproxy.cfg");
        std::fs::write(&cfg, format!("{text}\n# changed by the test\n")).expect("change the edge's configuration");
        let before = self.swarm.manager().docker_ok(&[
            "service",
            "inspect",
            "--format",
            "{{.Version.Index}}",
            &self.service("edge"),
        ]);
        let options = Options { front_retries: true, ..Options::default() };
        let figures =
            self.under_load("the edge's configuration changed, load at every node", &self.all_nodes(), options, || {
                self.at(a).xtask(&["deploy", "--timeout", "4m"]).assert_success();
            });
        let after = self.swarm.manager().docker_ok(&[
            "service",
            "inspect",
            "--format",
            "{{.Version.Index}}",
            &self.service("edge"),
        ]);
        assert_ne!(before, after, "the edge was not updated");
        assert_eq!(figures.failed, 0, "{}", figures.line("edge change"));
    }

    /// The database task killed: while it restarts, the answer is 503 with
    /// Retry-After (from the app, or from the edge once no task is ready),
    /// never a refused or dropped connection.
    fn a_database_restart_answers_503_and_never_refuses(&self, a: &str) {
        let (swarm, data_node) = (self.swarm, self.data_node);
        let filter = format!("label=com.docker.swarm.service.name={}", self.service("db"));
        let db = data_node.docker_ok(&["ps", "--quiet", "--filter", &filter]);
        assert!(!db.is_empty(), "no db container on the data node");
        let options = Options { allow_unavailable: true, ..Options::default() };
        let figures = self.under_load("the database restarted, load at every node", &self.all_nodes(), options, || {
            data_node.docker_ok(&["kill", &db]);
            wait_until("a new db task", Duration::from_secs(120), || {
                let now = data_node.docker_ok(&["ps", "--quiet", "--filter", &filter]);
                !now.is_empty() && now != db
            });
            wait_until("the app answers again", Duration::from_secs(120), || {
                answers(swarm.node(1), "/todos") == Some(200)
            });
        });
        assert_eq!(figures.failed, 0, "{}", figures.line("db restart"));
        self.at(a).xtask(&["status"]).assert_success();
    }
}
