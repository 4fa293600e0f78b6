//! The delivery workflow of todobackend (`cargo xtask`), as a library shared
//! by the two binaries: `xtask`, light, for the tasks that need neither AWS
//! nor the Docker engine API, and `xtask-cloud` for those that do.
//!
//! Imports run one way, downward: `runner` (the graph, the dispatch of the
//! light tasks, `ci`'s pipeline) uses the task modules, which use `ctx`
//! (effects) and `output` (lines); at the bottom floor, `flags` (the command
//! line: every task's arguments) and `settings`; `reference` (the command
//! reference, generated from `flags`) sits beside them. No task module
//! imports another.

pub mod build;
pub mod cargo;
pub mod children;
pub mod clean;
pub mod completions;
pub mod compose;
pub mod ctx;
pub mod docker_endpoint;
pub mod docs;
pub mod exit;
pub mod flags;
pub mod git;
pub mod local_lock;
pub mod notice;
pub mod output;
pub mod reference;
pub mod release;
pub mod runner;
pub mod sbom;
pub mod settings;
pub mod test;
pub mod version;
