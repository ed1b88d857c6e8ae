//! What the Controller's rules tell a human about ([`Event`]): plain vocabulary, emitted by
//! the assignment ([`super::assign`]) and the rounds ([`super::round`]) and carried by the
//! notification channels ([`super::notify`], the I/O). It imports only the model.

use crate::model::{ClusterName, Round, ServerName};
use serde::{Deserialize, Serialize};

/// Something a human should hear about. Deduplicated per incident by the assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
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
    /// After [`Event::NoWorkingServer`], some server works again.
    WorkingServerRestored {
        /// The round that saw it.
        round: Round,
    },
}
