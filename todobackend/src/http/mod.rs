//! The HTTP side: the server (`server`: connections, limits, drain, the
//! access log), the API's routes and validation (`api`), the static files,
//! the metrics and the readiness check. It reaches the data only through
//! `store::Store`.

pub mod api;
pub mod metrics;
pub mod readiness;
pub mod server;
pub mod static_files;
