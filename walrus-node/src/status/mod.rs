//! Observability of a node (or of the demo's whole deployment): the `/status` JSON
//! document, `/metrics` in Prometheus text format, and `/` a live dashboard page, served
//! with actix-web on the node's `status_addr`.
//!
//! ```text
//!  ControllerHandle ─┐                        ┌─▶ GET /status   (StatusDoc as JSON)
//!  ReporterHandle   ─┼─ Sources ─▶ Observer ──┼─▶ GET /metrics  (counters + gauges)
//!  Director watches ─┤   (poll,    (counters,  └─▶ GET /        (dashboard.html: polls
//!  gcs view watch   ─┘   100 ms)    event log)                   /status, no assets)
//! ```
//!
//! The [`Observer`] is pure: it is fed [`Sample`]s (what the handles say now) and keeps
//! what a snapshot cannot: counters (rounds, reports, moves, DNS updates, view changes)
//! and the log of the last decisions with their reasons ("round 812: area eu → c2,
//! phase 3, c1 has no working server"). A sampling task polls the handles every 100 ms,
//! far shorter than a round, and feeds it; decisions it could miss between two samples
//! still show in the answers, and rounds are counted from round numbers.
//!
//! One job a file: `schema` (the document's types), `observer` (the pure [`Observer`]),
//! `metrics` (the Prometheus text), `sources` (a node's handles and the sampling task),
//! `server` (the HTTP side) and `client` (`walrus-node status`: fetch and table).

use crate::config::Config;
use crate::history::{History, HistoryDoc};
use crate::http_access::HttpAccess;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use walrus_actors::controller::actor::{wall_clock_ms, ControllerHandle, ControllerStatus};
use walrus_actors::controller::assign::{DeadCause, LoadBasis, ServerState};
use walrus_actors::controller::overrides::Target;
use walrus_actors::digests::Digests;
use walrus_actors::director::core::DirectorStatus;
use walrus_actors::director::embedded::EmbeddedServer;
use walrus_actors::director::learned::{Explained, SteeringCounters};
use walrus_actors::director::steering::By;
use walrus_actors::model::{AreaName, Decision};
use walrus_actors::replicator::actor::ReplicatorStatus;
use walrus_actors::reporter::state::{Condition, Snapshot};
use walrus_actors::reporter::ReporterHandle;
use walrus_actors::supervision::{RoleMetrics, Supervision};
use walrus_gcs::{Gcs, GcsStats, ViewChange};

/// How many decisions the event log keeps.
pub const EVENT_LOG: usize = 50;

/// Why the status server could not start, or `walrus-node status` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// The address could not be bound.
    #[error("status server on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
    /// The status page could not be fetched.
    #[error("GET {url}: {detail}")]
    Fetch {
        /// The page.
        url: String,
        /// What failed.
        detail: String,
    },
    /// The status page is not a status document.
    #[error("{url}: not a status document: {source}")]
    Parse {
        /// The page.
        url: String,
        /// What is wrong.
        source: serde_json::Error,
    },
}

mod client;
mod metrics;
mod observer;
mod schema;
mod server;
mod sources;
#[cfg(test)]
mod tests;

pub use client::*;
pub use metrics::*;
pub use observer::*;
pub use schema::*;
pub use server::*;
pub use sources::*;
