//! What the Controller's rules tell a human about ([`Incident`]): plain vocabulary, emitted
//! by the assignment ([`super::assign`]) and the rounds ([`super::round`]) and carried by
//! the notification channels ([`super::notify`], the I/O). It imports only the model.
//!
//! Not to be confused with `walrus_gcs::Event`, what a group session receives. In the
//! notification's JSON an incident's kind is the `"event"` field (`"panic_raised"`, ...),
//! which operators' receivers and templates already read; only the Rust name changed.

use crate::model::{ClusterName, Round, ServerName};
use serde::{Deserialize, Serialize};

/// Something a human should hear about, once per incident (the assignment deduplicates:
/// PANIC once when it starts and once when it ends, and so on). Its JSON form is tagged
/// `"event"` (`{"event":"panic_raised",...}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Incident {
    /// A server answered PANIC (first round of the incident).
    PanicRaised {
        /// The round that saw it.
        round: Round,
        /// The server.
        server: ServerName,
        /// Its cluster.
        cluster: ClusterName,
        /// The Reporter's reason.
        reason: String,
    },
    /// A server that had PANICked works again.
    PanicCleared {
        /// The round that saw it.
        round: Round,
        /// The server.
        server: ServerName,
        /// Its cluster.
        cluster: ClusterName,
    },
    /// A server has not answered for `dead_after` (beyond the paper).
    ServerDead {
        /// The round that saw it.
        round: Round,
        /// The server.
        server: ServerName,
        /// Its cluster.
        cluster: ClusterName,
        /// How long it has been silent, seconds.
        silent_secs: u64,
    },
    /// A server reported dead answers again.
    ServerBack {
        /// The round that saw it.
        round: Round,
        /// The server.
        server: ServerName,
        /// Its cluster.
        cluster: ClusterName,
        /// How long it was silent, seconds.
        silent_secs: u64,
    },
    /// No server anywhere works: every area keeps its last answer (fail static).
    NoWorkingServer {
        /// The round that saw it.
        round: Round,
        /// How many areas are affected.
        areas: usize,
    },
    /// After [`Incident::NoWorkingServer`], some server works again.
    WorkingServerRestored {
        /// The round that saw it.
        round: Round,
    },
}
