//! The delivery workflow of todobackend (`cargo xtask`), as a library shared
//! by the two binaries: `xtask`, light, for the tasks that need neither AWS
//! nor the Docker engine API, and `xtask-cloud` for those that do.

pub mod build;
pub mod cli;
pub mod compose;
pub mod release;
pub mod runner;
pub mod settings;
pub mod test;
pub mod version;
