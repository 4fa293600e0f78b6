//! The delivery workflow of todobackend (`cargo xtask`), as a library shared
//! by the two binaries: `xtask`, light, for the tasks that need neither AWS
//! nor the Docker engine API, and `xtask-cloud` for those that do.
//!
//! Imports run one way, downward: `tasks` (the command line, the graph and the
//! runner) uses the task modules, which use `ctx`, which uses `settings` and
//! `version`'s pure resolution.

pub mod build;
pub mod clean;
pub mod compose;
pub mod ctx;
pub mod docker_endpoint;
pub mod exit;
pub mod git;
pub mod output;
pub mod release;
pub mod settings;
pub mod tasks;
pub mod test;
pub mod version;
