//! walrus-actors: the Walrus roles that run inside one `walrus-node` process per host.
//!
//! ```text
//!                 walrus-gcs (views, Agreed multicast, point-to-point streams)
//!      ┌──────────────┬───────────────┬──────────────┬───────────────┬──────────┐
//!   Reporters     Controllers      Directors     Replicators       Nodes
//!      │  report ──▶  │ decision ──▶  │               │                │
//!  reporter::      controller::     director::     replicator::     digests
//!  ReporterState   RoundMachine     DirectorCore   plans, store,    (config
//!  (OS + web load, (rounds, assign:  (answer → DNS:  transfers)      digests)
//!   TEMPFAIL /      four phases,     RFC 2136+TSIG    │ generation ──▶ Reporter's
//!   BYPASS/PANIC)   overrides)       or embedded)     ▼               report
//!                                    name servers   content on disk
//! ```
//!
//! - **Reporter**: gathers OS and web-server load and answers a Controller's round request.
//! - **Controller**: the first member of the `Controllers` group is master; it runs rounds
//!   and the four-phase assignment of areas to clusters (paper §6).
//! - **Director**: puts each area's answer into DNS (RFC 2136 with TSIG, or embedded).
//! - **Replicator**: primary-push content replication.
//!
//! Each role is an actix actor, a thin shell over a pure logic type that is unit-tested on
//! its own, under `actix::Supervisor` ([`supervision`]: restart with state rebuilt, counted
//! and rate-limited; bounded queues). The Replicator's long transfers stay async tasks on
//! the node's tokio runtime, started by its shell ([`replicator::shell`]) and reporting
//! back to it; its plans are the pure part.
//!
//! What this crate does not do: read the configuration file or start a node (that is
//! `walrus-node`: it turns the file into each role's settings and starts the roles), talk
//! to peers directly (every message goes through walrus-gcs), or serve HTTP (the status
//! side is `walrus-node`'s).
#![warn(missing_docs)]

pub mod controller;
pub mod digests;
pub mod director;
#[cfg(any(test, feature = "testing"))]
pub mod fixtures;
pub mod group;
pub mod knob;
pub mod model;
pub mod replicator;
pub mod reporter;
pub mod supervision;
pub mod wire;
