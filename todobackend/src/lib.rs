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
pub mod cli;
pub mod client;
pub mod dns;
pub mod http;
pub mod logging;
pub mod net;
pub mod signals;
pub mod store;
