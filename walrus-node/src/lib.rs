//! walrus-node: the one Walrus binary on every machine.
//!
//! The shared configuration ([`config`]) describes the whole deployment and names each
//! host's roles; `walrus-node run --node NAME` starts the actors that host runs
//! (Controller, Reporter, Director, Replicator) over one walrus-gcs node.
//!
//! ```text
//!  walrus.toml ─▶ config::Config ─▶ roles of --node ─▶ actors ─▶ walrus-gcs (QUIC)
//! ```
#![warn(missing_docs)]

pub mod cluster;
pub mod config;
pub mod runtime;
