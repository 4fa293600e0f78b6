//! The world of most swarm tests, "a pushed app on a sandbox stack": the
//! local swarm held for this test, its node labelled for the data, a
//! registry and the ECR emulator, a sandbox logged in to the registry that
//! deploys a stack of its own (removed at the end), and version A of the app
//! built and pushed. Tests start from [`PushedApp::start`] and then read as
//! the behaviour: derive B, deploy it, look at what serves.

use std::sync::MutexGuard;

use xtask_test_support::sandbox::{Run, Sandbox};
use xtask_test_support::{free_port, unique_name};

use crate::support::images::Images;
use crate::support::moto::Moto;
use crate::support::registry::Registry;
use crate::support::swarm::{self, Stack};
use crate::support::variants::{Added, variant_image};

/// Which image version A is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum AppImage {
    /// The real release image, built by `cargo xtask build`.
    Release,
    /// A tiny `FROM scratch` image: for tests where nothing runs on the swarm.
    Scratch,
}

/// See the module. Fields drop in order: images, then the stack, then the
/// registry and the emulator, the swarm last.
pub struct PushedApp {
    pub images: Images,
    stack_guard: Stack,
    /// Deploys the stack (no APP_VERSION: [`PushedApp::at`] gives one).
    pub sandbox: Sandbox,
    /// The stack's name.
    pub stack: String,
    /// The edge's port on this node (host mode), through which the app answers.
    pub port: u16,
    /// Version A, pushed, and its image reference.
    pub version: String,
    pub image: String,
    pub moto: Moto,
    pub registry: Registry,
    /// Unique to this test: versions are `<name><suffix>` ([`PushedApp::version_named`]).
    suffix: String,
    _swarm: MutexGuard<'static, ()>,
}

impl PushedApp {
    /// The world with version A the real release image.
    pub fn start() -> PushedApp {
        PushedApp::start_with(AppImage::Release)
    }

    pub fn start_with(image: AppImage) -> PushedApp {
        let swarm = swarm::swarm_lock();
        swarm::label_the_node();
        let registry = Registry::start_for_ecr();
        let moto = Moto::start();
        let port = free_port();
        let sandbox = swarm::stack_sandbox(&moto, &registry, port);
        let stack = sandbox.stack_name();
        let stack_guard = Stack(stack.clone());
        let suffix = unique_name("v");
        let version = format!("a{suffix}");
        swarm::docker_login(&sandbox, &registry);
        let (image, images) = match image {
            AppImage::Release => {
                let mut images = Images::new();
                (swarm::app_image(&sandbox, &registry, &version, &mut images), images)
            }
            AppImage::Scratch => {
                let tag = format!("{}/todobackend:{version}", registry.host());
                let images = Images::build_scratch(&tag, &version);
                (tag, images)
            }
        };
        swarm::push(&sandbox, &image);
        let mut images = images;
        swarm::push_edge_image(&sandbox, &mut images);
        PushedApp { images, stack_guard, sandbox, stack, port, version, image, moto, registry, suffix, _swarm: swarm }
    }

    /// The sandbox with one more variable for every later run (a stack file
    /// of the test's own, say).
    pub fn with_env(mut self, key: &str, value: &str) -> PushedApp {
        // The same sandbox, its directory (where a test keeps such files) kept.
        self.sandbox = self.sandbox.with_env(key, value);
        self
    }

    /// A version name unique to this test: `<name><suffix>`.
    pub fn version_named(&self, name: &str) -> String {
        format!("{name}{}", self.suffix)
    }

    /// The image reference of `version` in the test's registry.
    pub fn tag(&self, version: &str) -> String {
        format!("{}/todobackend:{version}", self.registry.host())
    }

    /// Version `version`: A with more Dockerfile `lines`, built and pushed;
    /// returns its image reference.
    pub fn derive(&mut self, version: &str, lines: &str) -> String {
        let base = self.image.clone();
        self.derive_from(&base, version, lines)
    }

    /// [`PushedApp::derive`] from another pushed version's image `base`.
    pub fn derive_from(&mut self, base: &str, version: &str, lines: &str) -> String {
        let tag = self.tag(version);
        self.images.derive(base, &tag, lines);
        swarm::push(&self.sandbox, &tag);
        tag
    }

    /// Version `version`: a real build of the service with `migrations`
    /// added to the checkout's, pushed; returns its image reference.
    pub fn variant(&mut self, version: &str, migrations: &[&Added]) -> String {
        let tag = variant_image(&self.sandbox, &self.registry, version, migrations, &mut self.images);
        swarm::push(&self.sandbox, &tag);
        tag
    }

    /// The sandbox that deploys `version` (APP_VERSION).
    pub fn at(&self, version: &str) -> Sandbox {
        self.sandbox.clone_with(&[("APP_VERSION", version)])
    }

    /// The same deploy as [`PushedApp::deploy`], started and not waited
    /// for (its output piped), for a test that signals or races it.
    pub fn spawn_deploy(&self, version: &str) -> std::process::Child {
        self.at(version)
            .command(&["deploy", "--no-login", "--timeout", "3m"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn a deploy")
    }

    /// `cargo xtask deploy --no-login --timeout 3m` of `version`.
    pub fn deploy(&self, version: &str) -> Run {
        self.at(version).xtask(&["deploy", "--no-login", "--timeout", "3m"])
    }

    /// The app answers GET / on its port.
    pub fn answers(&self) -> bool {
        swarm::answers(self.port)
    }

    /// The image `service` of the stack runs, by its spec (no digest).
    pub fn spec_image(&self, service: &str) -> String {
        swarm::spec_image(&self.stack, service)
    }

    pub fn stack_exists(&self) -> bool {
        swarm::stack_exists(&self.stack)
    }

    /// `history --json`, parsed; newest first.
    pub fn history(&self) -> serde_json::Value {
        let listed = self.sandbox.xtask(&["history", "--json"]);
        listed.assert_success();
        serde_json::from_str(&listed.stdout).unwrap_or_else(|err| panic!("history --json: {err}: {}", listed.stdout))
    }
}
