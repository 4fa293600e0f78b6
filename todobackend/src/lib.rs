//! todobackend: the Todo-Backend API (todobackend.com) over SQLite or
//! PostgreSQL (`backend`), with the operational subcommands a `FROM scratch`
//! container needs (migrate, collectstatic, healthcheck, acceptance, and the
//! move from SQLite to PostgreSQL). `main.rs` only dispatches to
//! `cli`; everything is reachable from tests through this library.

/// Writes one line to stderr, ignoring write errors: unlike `eprintln!`, a
/// closed or broken stderr must not panic a server worker.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stderr(), $($arg)*);
    }};
}

pub mod acceptance;
pub mod api;
pub mod backend;
pub mod backups;
pub mod cli;
pub mod client;
pub mod db;
pub mod dns;
pub mod logging;
pub mod metrics;
pub mod migrations;
pub mod net;
pub mod pg;
pub mod readiness;
pub mod server;
pub mod signals;
pub mod sqlite_pool;
pub mod static_files;
pub mod store;
