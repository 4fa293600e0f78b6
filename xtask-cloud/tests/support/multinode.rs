//! A swarm of several Docker engines on this one machine, for the tests that
//! must see tasks run on nodes the xtask is not connected to (issue 19).
//!
//! Each node is a `dockerd` of its own:
//! - in a network namespace of its own, attached by a veth pair to a bridge
//!   with a private /24 (10.231.X.0/24), its default route via the bridge;
//! - in a UTS namespace of its own, so that `docker node ls` tells the nodes
//!   apart (`node1`, `node2`, ...);
//! - with its own `--data-root`, `--exec-root`, `--pidfile`, unix socket and
//!   containerd, all under one temporary directory, and an empty
//!   `--config-file` (the machine's daemon.json is not read);
//! - with a cgroup2 filesystem mounted in its mount namespace (`ip netns exec`
//!   remounts /sys, and dockerd refuses to start without cgroups), itself in
//!   the cgroup `<tag>/nodeN-engine` and its containers under
//!   `--cgroup-parent <tag>/nodeN-tasks`: one `cgroup.kill` stops every
//!   process the harness started, containers and shims included;
//! - trusting the bridge's /24 as an insecure registry, where a
//!   `docker-registry` with htpasswd listens on the bridge address.
//!
//! Traffic between the namespaces crosses the bridge, which the host engine's
//! FORWARD policy (DROP) would stop: one `DOCKER-USER` rule accepts what goes
//! from the bridge to the bridge. Node 1 inits the swarm, the others join as
//! workers. The host's engine and its swarm are never touched.
//!
//! Everything is named after the harness's tag `tbmn<X>` (X is the third byte
//! of its subnet), and the subnet is claimed by creating the bridge of that
//! name: two harnesses, in one test process or two, never share one. All of
//! it is removed on drop, also when a panic unwinds through the set-up;
//! [`Trace::leftovers`] lists whatever would remain.
//!
//! Tests reach the nodes' published ports at their addresses on the bridge;
//! `xtask_test_support::http::assert_loopback` accepts those while the harness lives.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use xtask_cloud::ecr::ECR_USER;
use xtask_test_support::http::{admit_private_network, withdraw_private_network};
use xtask_test_support::{poll_until, wait_until};

use crate::support::moto::ECR_PASSWORD;
use crate::support::registry::Registry;

/// The /16 whose /24s the harnesses use: private, and routed nowhere here.
const NET_PREFIX: [u8; 2] = [10, 231];

/// Every subnet this process claimed: never claimed twice, so that what a
/// harness left behind is never mistaken for the next one's (or hidden by it).
static CLAIMED: Mutex<Vec<u8>> = Mutex::new(Vec::new());

thread_local! {
    /// The names of the harness this thread made last, for a test of a
    /// set-up that panicked (and so returned no harness).
    static LAST_TRACE: std::cell::RefCell<Option<Trace>> = const { std::cell::RefCell::new(None) };
}

/// One multi-node swarm at a time in a test process: three engines and their
/// containerds are a lot for a small machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const ENGINE_START: Duration = Duration::from_secs(60);
const SWARM_JOIN: Duration = Duration::from_secs(60);

/// The harness's private network, `10.231.<subnet>.0/24`, for the HTTP
/// client's network rule.
fn network(subnet: u8) -> [u8; 3] {
    [NET_PREFIX[0], NET_PREFIX[1], subnet]
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A step of the set-up, after which [`MultiNode::start_failing_after`]
/// panics (to test the clean-up of a set-up that fails part way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Bridge,
    Namespaces,
    Engines,
    Registry,
    Swarm,
}

/// One node: its engine and its place on the bridge.
pub struct Node {
    /// 1-based; node 1 is the manager.
    pub index: usize,
    pub hostname: String,
    pub netns: String,
    /// The host side of its veth pair (on the bridge).
    pub veth: String,
    pub ip: Ipv4Addr,
    /// The engine's API socket.
    pub socket: PathBuf,
    dir: PathBuf,
    netns_made: bool,
    veth_made: bool,
    engine: Option<Child>,
}

impl Node {
    /// `unix:///...`, as DOCKER_HOST names the node's engine.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The docker CLI against this node's engine.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", self.docker_host())
            .stdin(Stdio::null())
            .output()
            .expect("docker runs")
    }

    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} on {}: {}",
            self.hostname,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The swarm's id of this node.
    pub fn node_id(&self) -> String {
        self.docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"])
    }

    /// `http://IP:PORT/PATH` of this node.
    pub fn url(&self, port: u16, path: &str) -> String {
        format!("http://{}:{port}{path}", self.ip)
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// A swarm of `n` engines in namespaces, a registry on the bridge, the rule
/// that lets them talk. Removed, all of it, when dropped.
pub struct MultiNode {
    pub tag: String,
    subnet: u8,
    pub nodes: Vec<Node>,
    /// `docker-registry` on the bridge address, its user the one moto's ECR
    /// token names (login → push → deploy is real end to end).
    pub registry: Option<Registry>,
    dir: Option<tempfile::TempDir>,
    cgroup: Option<PathBuf>,
    bridge_made: bool,
    firewall_rule: bool,
    _turn: MutexGuard<'static, ()>,
}

/// What a harness made, by name, to check after it is gone.
#[derive(Clone, Debug)]
pub struct Trace {
    tag: String,
    dir: PathBuf,
    cgroup: PathBuf,
}

impl MultiNode {
    /// A swarm of `n` nodes, node 1 its manager, the others workers.
    pub fn start(n: usize) -> MultiNode {
        MultiNode::build(n, None)
    }

    /// As [`MultiNode::start`], but panics after `step`: what was made so far
    /// must then be removed by the unwinding.
    pub fn start_failing_after(n: usize, step: Step) -> MultiNode {
        MultiNode::build(n, Some(step))
    }

    fn build(n: usize, fail_after: Option<Step>) -> MultiNode {
        assert!(n >= 1, "a swarm needs a node");
        xtask_test_support::require_docker();
        require_root_tools();
        let turn = lock(&ONE_AT_A_TIME);
        let started = Instant::now();
        let mut harness = MultiNode {
            tag: String::new(),
            subnet: 0,
            nodes: Vec::new(),
            registry: None,
            dir: None,
            cgroup: None,
            bridge_made: false,
            firewall_rule: false,
            _turn: turn,
        };
        let fail = |step: Step| {
            if fail_after == Some(step) {
                panic!("the harness was told to fail after {step:?}");
            }
        };

        // The subnet, claimed by the bridge's name; then its address.
        let subnet = claim_subnet();
        harness.subnet = subnet;
        harness.tag = format!("tbmn{subnet}");
        harness.bridge_made = true;
        admit_private_network(network(subnet));
        LAST_TRACE.with(|last| *last.borrow_mut() = Some(harness.trace()));
        let bridge = harness.tag.clone();
        let gateway = harness.bridge_ip();
        ip(&["addr", "add", &format!("{gateway}/24"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        must("iptables", &["-I", "DOCKER-USER", "-i", &bridge, "-o", &bridge, "-j", "ACCEPT"]);
        harness.firewall_rule = true;
        fail(Step::Bridge);

        // State and cgroups, then each node's namespace and link.
        let dir = tempfile::Builder::new().prefix("tbmn").tempdir().expect("temp dir");
        let dir_path = dir.path().to_owned();
        harness.dir = Some(dir);
        LAST_TRACE.with(|last| *last.borrow_mut() = Some(harness.trace()));
        std::fs::write(dir_path.join("daemon.json"), "{}").expect("write daemon.json");
        let cgroup = cgroup2_root().join(&harness.tag);
        std::fs::create_dir(&cgroup)
            .unwrap_or_else(|err| panic!("cannot create the cgroup {}: {err}", cgroup.display()));
        harness.cgroup = Some(cgroup.clone());
        for index in 1..=n {
            let node_dir = dir_path.join(format!("n{index}"));
            std::fs::create_dir(&node_dir).expect("node dir");
            for part in ["engine", "tasks"] {
                std::fs::create_dir(cgroup.join(format!("node{index}-{part}"))).expect("node cgroup");
            }
            harness.nodes.push(Node {
                index,
                hostname: format!("node{index}"),
                netns: format!("{}-n{index}", harness.tag),
                veth: format!("{}v{index}", harness.tag),
                ip: Ipv4Addr::new(NET_PREFIX[0], NET_PREFIX[1], subnet, 10 + index as u8),
                socket: node_dir.join("docker.sock"),
                dir: node_dir,
                netns_made: false,
                veth_made: false,
                engine: None,
            });
            let node = harness.nodes.last_mut().expect("just pushed");
            ip(&["netns", "add", &node.netns]);
            node.netns_made = true;
            ip(&["link", "add", &node.veth, "type", "veth", "peer", "name", "eth0", "netns", &node.netns]);
            node.veth_made = true;
            ip(&["link", "set", &node.veth, "master", &bridge, "up"]);
            let ns = node.netns.clone();
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", node.ip), "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&["-n", &ns, "route", "add", "default", "via", &gateway.to_string()]);
        }
        fail(Step::Namespaces);

        // The engines, all at once, then each awaited.
        let insecure = format!("{}.{}.{subnet}.0/24", NET_PREFIX[0], NET_PREFIX[1]);
        for node in &mut harness.nodes {
            let log = std::fs::File::create(node.dir.join("dockerd.log")).expect("dockerd log");
            let log_err = log.try_clone().expect("dockerd log");
            let data_root = node.dir.join("data");
            let exec_root = node.dir.join("exec");
            let pidfile = node.dir.join("dockerd.pid");
            let engine_cgroup = format!("{}/node{}-engine", harness.tag, node.index);
            let tasks_cgroup = format!("/{}/node{}-tasks", harness.tag, node.index);
            // The shell joins the cgroup before it becomes dockerd: nothing
            // the engine starts escapes `cgroup.kill`.
            let script = r#"hostname "$1" && mount -t cgroup2 none /sys/fs/cgroup &&
                echo $$ > "/sys/fs/cgroup/$2/cgroup.procs" && shift 2 && exec dockerd "$@""#;
            let child = Command::new("ip")
                .args(["netns", "exec", &node.netns, "unshare", "--uts", "sh", "-c", script, "sh"])
                .args([&node.hostname, &engine_cgroup])
                .arg("--config-file")
                .arg(dir_path.join("daemon.json"))
                .arg("--data-root")
                .arg(&data_root)
                .arg("--exec-root")
                .arg(&exec_root)
                .arg("--pidfile")
                .arg(&pidfile)
                .arg("-H")
                .arg(node.docker_host())
                .args(["--insecure-registry", &insecure, "--cgroup-parent", &tasks_cgroup])
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .expect("ip netns exec ... dockerd");
            node.engine = Some(child);
        }
        for node in &mut harness.nodes {
            let answered = poll_until(ENGINE_START, || {
                // An engine that exited will never answer: say why at once.
                let exited = node.engine.as_mut().and_then(|child| child.try_wait().ok().flatten());
                if let Some(status) = exited {
                    panic!("the engine of {} exited ({status}):\n{}", node.hostname, node.log_tail());
                }
                node.docker(&["info", "--format", "{{.ID}}"]).status.success()
            });
            assert!(
                answered,
                "the engine of {} did not answer within {ENGINE_START:?}:\n{}",
                node.hostname,
                node.log_tail()
            );
        }
        fail(Step::Engines);

        harness.registry = Some(Registry::start_on(&gateway.to_string(), ECR_USER, ECR_PASSWORD));
        fail(Step::Registry);

        // The swarm: node 1 inits it at its bridge address, the others join.
        let manager = &harness.nodes[0];
        manager.docker_ok(&["swarm", "init", "--advertise-addr", &manager.ip.to_string()]);
        let token = manager.docker_ok(&["swarm", "join-token", "--quiet", "worker"]);
        let join_at = format!("{}:2377", manager.ip);
        for node in &harness.nodes[1..] {
            node.docker_ok(&["swarm", "join", "--token", &token, "--advertise-addr", &node.ip.to_string(), &join_at]);
        }
        let all_ready = || {
            let ready = harness.manager().docker_ok(&["node", "ls", "--format", "{{.Status}}"]);
            ready.lines().filter(|status| *status == "Ready").count() == n
        };
        wait_until("all the swarm's nodes ready", SWARM_JOIN, all_ready);
        fail(Step::Swarm);
        eprintln!("multinode: {n} nodes on {insecure} ({}) up in {:.1?}", harness.tag, started.elapsed());
        harness
    }

    /// Node 1, the manager the xtask talks to.
    pub fn manager(&self) -> &Node {
        &self.nodes[0]
    }

    /// Node `index` (1-based).
    pub fn node(&self, index: usize) -> &Node {
        &self.nodes[index - 1]
    }

    pub fn registry(&self) -> &Registry {
        self.registry.as_ref().expect("the harness's registry")
    }

    /// The bridge's address: the registry's, and the nodes' gateway.
    pub fn bridge_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(NET_PREFIX[0], NET_PREFIX[1], self.subnet, 1)
    }

    /// The node whose swarm id is `id`.
    pub fn node_by_id(&self, id: &str) -> &Node {
        self.nodes.iter().find(|node| node.node_id() == id).unwrap_or_else(|| panic!("no node has id {id}"))
    }

    /// Cut node `index`'s link (its veth on the bridge down): for the others
    /// it is lost, while its engine and containers keep running.
    pub fn cut_link(&self, index: usize) {
        ip(&["link", "set", &self.node(index).veth, "down"]);
    }

    pub fn restore_link(&self, index: usize) {
        ip(&["link", "set", &self.node(index).veth, "up"]);
    }

    /// The names of the harness this thread made last (also one whose
    /// set-up panicked).
    pub fn last_trace() -> Option<Trace> {
        LAST_TRACE.with(|last| last.borrow().clone())
    }

    /// The names to look for once the harness is gone.
    pub fn trace(&self) -> Trace {
        Trace {
            tag: self.tag.clone(),
            dir: self.dir.as_ref().map(|dir| dir.path().to_owned()).unwrap_or_default(),
            cgroup: cgroup2_root().join(&self.tag),
        }
    }

    /// Remove everything, in the order that lets each part go: the
    /// processes (one `cgroup.kill`), their cgroups, the firewall rule, the
    /// links and namespaces, the bridge, the state. Never panics (it runs
    /// while a panic unwinds): what it cannot remove, it says.
    fn teardown(&mut self) {
        let mut problems = Vec::new();
        self.registry.take();
        if let Some(Err(problem)) = self.cgroup.as_deref().map(kill_cgroup) {
            problems.push(problem);
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.engine.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some(Err(problem)) = self.cgroup.take().as_deref().map(remove_cgroup_tree) {
            problems.push(problem);
        }
        if self.firewall_rule {
            let rule = ["DOCKER-USER", "-i", &self.tag, "-o", &self.tag, "-j", "ACCEPT"];
            while run("iptables", &[&["-C"][..], &rule[..]].concat()).is_ok() {
                if let Err(err) = run("iptables", &[&["-D"][..], &rule[..]].concat()) {
                    problems.push(format!("iptables -D {}: {err}", rule.join(" ")));
                    break;
                }
            }
            self.firewall_rule = false;
        }
        for node in &mut self.nodes {
            if node.veth_made {
                if let Err(err) = run("ip", &["link", "del", &node.veth]) {
                    problems.push(format!("ip link del {}: {err}", node.veth));
                }
                node.veth_made = false;
            }
            if node.netns_made {
                if let Err(err) = run("ip", &["netns", "del", &node.netns]) {
                    problems.push(format!("ip netns del {}: {err}", node.netns));
                }
                node.netns_made = false;
            }
        }
        if self.bridge_made {
            if let Err(err) = run("ip", &["link", "del", &self.tag]) {
                problems.push(format!("ip link del {}: {err}", self.tag));
            }
            self.bridge_made = false;
            withdraw_private_network(network(self.subnet));
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_owned();
            if let Err(err) = dir.close() {
                problems.push(format!("cannot remove {}: {err}", path.display()));
            }
        }
        if !problems.is_empty() {
            eprintln!("multinode {}: the clean-up left things behind:\n  {}", self.tag, problems.join("\n  "));
        }
    }
}

impl Drop for MultiNode {
    fn drop(&mut self) {
        self.teardown();
    }
}

impl Trace {
    /// What remains of the harness: namespaces, links, the firewall rule,
    /// processes, mounts, its cgroup or its directory. Empty when it is gone.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let listed = |program: &str, args: &[&str]| run(program, args).unwrap_or_else(|err| err);
        for (what, text) in [
            ("ip netns", listed("ip", &["netns", "list"])),
            ("ip link", listed("ip", &["-o", "link"])),
            ("iptables -S DOCKER-USER", listed("iptables", &["-S", "DOCKER-USER"])),
        ] {
            for line in text.lines().filter(|line| contains_tag(line, &self.tag)) {
                left.push(format!("{what}: {line}"));
            }
        }
        let dir = self.dir.display().to_string();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if !dir.is_empty() && cmdline.contains(&dir) {
                left.push(format!("process {}: {cmdline}", entry.file_name().to_string_lossy()));
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mounts.lines().filter(|line| !dir.is_empty() && line.contains(&dir)) {
            left.push(format!("mount: {line}"));
        }
        if self.cgroup.exists() {
            left.push(format!("cgroup {}", self.cgroup.display()));
        }
        if !dir.is_empty() && self.dir.exists() {
            left.push(format!("directory {dir}"));
        }
        left
    }
}

/// The tag as a whole name or name prefix (`tbmn12` must not match `tbmn120`).
fn contains_tag(line: &str, tag: &str) -> bool {
    line.match_indices(tag).any(|(at, _)| {
        let next = line[at + tag.len()..].chars().next();
        !next.is_some_and(|c| c.is_ascii_digit())
    })
}

/// The bridge `tbmn<X>` for the first free X from one derived from this
/// process: the name is the claim (creating an existing link fails), and a
/// /24 any route or address already uses, or this process used before, is
/// skipped.
fn claim_subnet() -> u8 {
    let used = format!(
        "{}\n{}",
        run("ip", &["-4", "route", "show"]).unwrap_or_default(),
        run("ip", &["-4", "-o", "addr", "show"]).unwrap_or_default()
    );
    let first = std::process::id() as usize % 250;
    for offset in 0..250 {
        let subnet = ((first + offset) % 250 + 2) as u8;
        let prefix = format!("{}.{}.{subnet}.", NET_PREFIX[0], NET_PREFIX[1]);
        if used.contains(&prefix) || lock(&CLAIMED).contains(&subnet) {
            continue;
        }
        if run("ip", &["link", "add", &format!("tbmn{subnet}"), "type", "bridge"]).is_ok() {
            lock(&CLAIMED).push(subnet);
            return subnet;
        }
    }
    panic!("no free subnet in {}.{}.0.0/16 for a multi-node harness", NET_PREFIX[0], NET_PREFIX[1]);
}

/// Where the cgroup2 hierarchy is mounted (/sys/fs/cgroup, or
/// /sys/fs/cgroup/unified on a hybrid machine).
fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").expect("read /proc/mounts");
    mounts
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields.get(2) == Some(&"cgroup2"))
        .map(|fields| PathBuf::from(fields[1]))
        .expect("no cgroup2 filesystem is mounted: the multi-node harness needs one (Linux 5.14 or later)")
}

/// Kill every process in the cgroup tree and wait until it is empty.
fn kill_cgroup(cgroup: &Path) -> Result<(), String> {
    if !cgroup.exists() {
        return Ok(());
    }
    std::fs::write(cgroup.join("cgroup.kill"), "1")
        .map_err(|err| format!("cannot kill the processes of {}: {err}", cgroup.display()))?;
    let emptied = poll_until(Duration::from_secs(30), || {
        let events = std::fs::read_to_string(cgroup.join("cgroup.events")).unwrap_or_default();
        events.lines().any(|line| line == "populated 0")
    });
    if emptied { Ok(()) } else { Err(format!("processes stay in {} after cgroup.kill", cgroup.display())) }
}

/// rmdir the cgroup and its children, deepest first (the engines made a
/// cgroup per container).
fn remove_cgroup_tree(cgroup: &Path) -> Result<(), String> {
    if !cgroup.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(cgroup).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            remove_cgroup_tree(&entry.path())?;
        }
    }
    std::fs::remove_dir(cgroup).map_err(|err| format!("cannot remove the cgroup {}: {err}", cgroup.display()))
}

fn require_root_tools() {
    for (tool, package) in [("ip", "iproute2"), ("iptables", "iptables"), ("unshare", "util-linux")] {
        let found = Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
        assert!(found.is_ok(), "{tool} is missing: install Debian's {package} (`bash .ci/run` does)");
    }
    let uid = run("id", &["-u"]).unwrap_or_default();
    assert_eq!(uid.trim(), "0", "the multi-node harness makes namespaces, links and firewall rules: run it as root");
}

/// Run a command; its stdout, or its stderr as the error.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out =
        Command::new(program).args(args).stdin(Stdio::null()).output().map_err(|err| format!("{program}: {err}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

fn must(program: &str, args: &[&str]) -> String {
    run(program, args).unwrap_or_else(|err| panic!("{program} {}: {err}", args.join(" ")))
}

fn ip(args: &[&str]) -> String {
    must("ip", args)
}
