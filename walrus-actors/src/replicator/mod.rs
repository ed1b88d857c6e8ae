//! Replicator: primary-push content replication with atomic generations (paper §3).
//!
//! The primary scans its content root into a [`manifest::Manifest`] per consistent change
//! set (a **generation**); a replica fetches the manifest, computes the [`diff`] against
//! the generation it serves, pulls only missing or changed files (chunk deltas for large
//! files) and builds the new generation beside the old one in its [`store`], then switches
//! one `current` symlink atomically.
//!
//! ```text
//!  primary                                            replica
//!  content root ─▶ watcher ─▶ Scanner ─▶ Manifest(g)
//!                                  │ PrimarySource ◀─ protocol ─▶ pull ─▶ ReplicaStore
//!                                  │   (serve)        (frames)        diff, build, switch
//!                                  ▼                                   current -> gens/g
//!                         announce g (Replicators group, later)
//! ```
//!
//! Not here: the actix actor and the walrus-gcs wiring (announcing generations on the
//! `Replicators` group and opening the QUIC stream); the driver in [`transfer`] runs over
//! any `AsyncRead`/`AsyncWrite` pair.

pub mod diff;
pub mod manifest;
pub mod path;
pub mod protocol;
pub mod rsync;
pub mod store;
pub mod transfer;
pub mod watcher;
