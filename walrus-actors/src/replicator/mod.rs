//! Replicator: primary-push content replication with atomic generations (paper §3).
//!
//! The primary scans its content root into a [`manifest::Manifest`] per consistent change
//! set (a **generation**); a replica fetches the manifest, computes the [`diff`] against
//! the generation it serves, pulls only missing or changed files (chunk deltas for large
//! files) and builds the new generation beside the old one in its [`store`] (recycling the
//! tree it would prune next, so the work follows the change, not the tree), then switches
//! one `current` symlink atomically.
//!
//! ```text
//!  primary                                            replica
//!  content root ─▶ watcher ─▶ Scanner ─▶ Manifest(g)
//!                                  │ PrimarySource ◀─ protocol ─▶ pull ─▶ ReplicaStore
//!                                  │   (serve)        (frames)        diff, build, switch
//!                                  ▼                                   current -> gens/g
//!                         announce g (Replicators group)
//! ```
//!
//! The work that does the following is [`actor`] (over walrus-gcs's point-to-point QUIC
//! streams, [`crate::group::PeerStreams`]), run by the supervised actix shell [`shell`]
//! (a restart rebuilds it from the store on disk and rejoins `Replicators`); the driver in [`transfer`] runs over any
//! `AsyncRead`/`AsyncWrite` pair (TCP loopback and tokio duplex in the tests).
//! What the actor does:
//! - **Primary**: run [`watcher::run_primary`] with a [`transfer::PrimarySource`]; for each
//!   generation seen on [`transfer::PrimarySource::subscribe`], multicast
//!   `{ generation, primary }` on the `Replicators` group; for every bi-directional QUIC
//!   stream a cluster member opens (gcs point-to-point API, mutual TLS), run
//!   [`transfer::serve`] on its halves on its own task.
//! - **Replica**: one [`store::ReplicaStore`] (one pull at a time, it is `&mut`); on an
//!   announcement newer than `current_generation()` (and on start / group join, to catch up),
//!   open a stream to the primary and run [`transfer::pull`]; on error retry with backoff
//!   (an interrupted build resumes by itself). Put `current_generation()` in the Reporter's
//!   report so the Controller can compute the lag behind the primary's newest generation.
//! - **rsync method**: the primary runs [`rsync::RsyncMethod::push`] to each replica's
//!   daemon with `--link-dest` its current generation, then tells it (group message) to call
//!   [`store::ReplicaStore::commit_external`] with the new generation number.
//!
//! File-system work runs inside these async functions; give each pull/serve its own task on
//! a multi-thread runtime (not the actix arbiter thread).

pub mod actor;
pub mod diff;
pub mod manifest;
pub mod path;
pub mod protocol;
pub mod rsync;
pub mod shell;
pub mod stall;
pub mod store;
pub mod transfer;
pub mod watcher;

pub use shell::start;

/// How the Replicator moves content (`[replicator] method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationMethod {
    /// Walrus's own transfer over the cluster's QUIC connections (the default).
    #[default]
    Walrus,
    /// `rsync -a --delete` from the primary to each replica.
    Rsync,
}

/// What Walrus's own transfer (method `walrus`) runs on (`[replicator] transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
pub enum TransferTransport {
    /// Point-to-point streams on the cluster's QUIC connections (the default: one UDP
    /// port per node).
    #[default]
    #[serde(rename = "quic")]
    Quic,
    /// TLS 1.3 over TCP with the same certificates, on each node's address and port
    /// number (TCP), for paths that drop or throttle UDP; needs that TCP port open. Moves
    /// bulk data about as fast as a QUIC stream (walrus-gcs
    /// `examples/transport_bench.rs --streams`: ~1 GB/s each on loopback).
    #[serde(rename = "tls-tcp")]
    TlsTcp,
}
