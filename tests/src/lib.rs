//! walrus-tests: cross-crate end-to-end tests that start real processes and real servers
//! (BIND 9, nginx, Apache) on loopback and stop every one of them, even on failure; and the
//! steering lab ([`lab`]), which does the same inside network namespaces it creates.

#[path = "../lab/mod.rs"]
pub mod lab;
