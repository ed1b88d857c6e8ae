//! walrus-actors: the Walrus actors that run inside one `walrus-node` process per host.
//!
//! - **Reporter**: gathers OS and web-server load and answers a Controller's round request.
//! - **Controller**: the first member of the `Controllers` group is master; it runs rounds
//!   and the four-phase assignment of areas to clusters (paper §6).
//! - **Director**: puts each area's answer into DNS (RFC 2136 with TSIG, or embedded).
//! - **Replicator**: primary-push content replication.
//!
//! Each actor is a thin shell over a pure logic type that is unit-tested on its own.
//! Reporter, Controller, Director and Replicator are actix actors under
//! `actix::Supervisor` ([`supervision`]: restart with state rebuilt, counted and
//! rate-limited; bounded queues). The Replicator's long transfers stay async tasks on the
//! node's tokio runtime, started by its shell ([`replicator::shell`]) and reporting back
//! to it; its plans are the pure part.
#![warn(missing_docs)]

pub mod controller;
pub mod digests;
pub mod director;
#[cfg(any(test, feature = "testing"))]
pub mod fixtures;
pub mod group;
pub mod model;
pub mod replicator;
pub mod reporter;
pub mod supervision;
pub mod wire;
