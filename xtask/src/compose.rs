//! Shared helpers: not built yet.
