//! walrus-node: the one Walrus binary on every machine.
//!
//! The shared configuration ([`config`]) describes the whole deployment and names each
//! host's roles; `walrus-node run --node NAME` starts the actors that host runs
//! (Controller, Reporter, Director) over one walrus-gcs node ([`runtime`]). The
//! in-process launcher ([`cluster`]) starts a whole deployment in one process on loopback,
//! for the demo and for tests.
//!
//! ```text
//!  walrus.toml ─▶ config::Config ─▶ runtime::NodeRuntime (roles of --node)
//!                                      │ one walrus-gcs node (QUIC, mutual TLS)
//!                                      ├─ Controller  (joins Controllers; first is master)
//!                                      ├─ Reporter    (joins Reporters; answers rounds)
//!                                      └─ Director    (joins Directors; its area's DNS)
//!  cluster::Cluster: every node of a Config in one process, each stoppable or killable
//! ```
//!
//! Each node serves `/status`, `/metrics` and a live dashboard on its `status_addr`
//! ([`status`]); `walrus-node demo` runs a whole deployment on loopback with built-in web
//! servers and a script of failures ([`demo`]).
#![warn(missing_docs)]

pub mod cluster;
pub mod config;
pub mod demo;
pub mod history;
pub mod http_access;
pub mod runtime;
pub mod status;
