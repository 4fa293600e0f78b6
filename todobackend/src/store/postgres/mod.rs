//! The PostgreSQL backend: selected by `TODOBACKEND_DATABASE_URL`
//! (`config`), reached by address after resolving the host without NSS
//! (`crate::dns`), over TLS when asked (`tls`), through deadpool's pool of
//! tokio-postgres connections driven by a runtime of its own (`client`).
//! `migrate`, `backups` and `moving` are the operational commands'
//! PostgreSQL sides.

pub mod backups;
pub mod client;
pub mod config;
pub mod migrate;
pub mod moving;
pub mod schema;
pub mod tls;
pub mod todos;
