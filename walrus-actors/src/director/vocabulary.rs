//! The Director's vocabulary: its errors, what a name server holds ([`Held`]), the write
//! fence ([`Fence`]), the [`NameServer`] a Director writes, which answer is its area's
//! ([`AreaDirector`]) and what one application did ([`ApplyReport`]). Plain types: the
//! pure parts ([`super::core`], [`super::zone`], [`super::steering`]) import these and
//! nothing that does I/O; [`super::apply`] (waits with tokio) and the servers live beside.

use super::zone::{RecordTtl, WwwRecords};
use crate::model::{AreaAnswer, AreaName, ClusterName, Decision};
use std::future::Future;
use std::time::Duration;

/// Errors of the Director: configuration and decisions it cannot apply.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectorError {
    /// A TTL below one second, with a fraction, or too large.
    #[error("bad TTL {ttl:?}: must be whole seconds, at least 1 s")]
    BadTtl {
        /// The TTL given.
        ttl: Duration,
    },
    /// A DNS name that does not parse or does not fit the layout.
    #[error("bad DNS name {name:?}: {reason}")]
    BadName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The decision gives the area no address at all; the last answer stays.
    #[error("the answer for cluster {cluster} has no address; keeping the last answer")]
    EmptyAnswer {
        /// The cluster the area was assigned to.
        cluster: ClusterName,
    },
    /// A TSIG key that cannot be used.
    #[error("bad TSIG key {key}: {reason}")]
    BadKey {
        /// The key name, or where it came from.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Why a name server could not be read or brought to an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameServerError {
    /// No answer in time, or a socket error: the server may be down or unreachable. Retried.
    #[error("area {area}: name server {server} unreachable: {detail}")]
    Unreachable {
        /// The area the server belongs to.
        area: AreaName,
        /// The server (address, or "embedded at ADDR").
        server: String,
        /// What failed.
        detail: String,
    },
    /// The server answered, but not usefully (SERVFAIL, a malformed or unauthenticated
    /// reply, or the records seen after an update differ from those sent). Retried.
    #[error("area {area}: name server {server}: {detail}")]
    Failed {
        /// The area the server belongs to.
        area: AreaName,
        /// The server.
        server: String,
        /// What went wrong.
        detail: String,
    },
    /// The server refused the update (TSIG BADKEY/BADSIG/BADTIME, REFUSED by policy,
    /// NOTAUTH, NOTZONE, ...). Not retried: a human must fix the key or the policy.
    #[error(
        "area {area}: name server {server} refused the update signed with key {key}: {reason}"
    )]
    Refused {
        /// The area the server belongs to.
        area: AreaName,
        /// The server.
        server: String,
        /// The TSIG key name used.
        key: String,
        /// The rcode and TSIG error as the server gave them.
        reason: String,
    },
    /// The embedded server could not persist the answer (disk full, permissions). Retried.
    #[error("area {area}: cannot store the answer in {path}: {detail}")]
    Storage {
        /// The area the server belongs to.
        area: AreaName,
        /// The state file.
        path: String,
        /// The I/O error.
        detail: String,
    },
    /// The server holds an answer of a newer decision than the one being written: this
    /// writer is behind (deposed, or its decision arrived late). Never retried.
    #[error("area {area}: name server {server} holds the answer of a newer decision (epoch {held}); ours (epoch {ours}) is refused")]
    Stale {
        /// The area.
        area: AreaName,
        /// The server, as its updater describes it.
        server: String,
        /// The epoch the server holds.
        held: u64,
        /// The epoch of the decision we tried to write.
        ours: u64,
    },
}

impl NameServerError {
    /// Whether another attempt may succeed without a human.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            NameServerError::Refused { .. } | NameServerError::Stale { .. }
        )
    }
}

/// What a name server holds for `www.<area-zone>`, with the area zone's SOA serial (for
/// logs and for the test that an unchanged answer sends no update).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The A/AAAA records found.
    pub www: WwwRecords,
    /// The SOA serial of the area zone, when the server gave one.
    pub serial: Option<u32>,
    /// The epoch of the decision whose answer it holds ([`Decision::epoch`]), when it
    /// keeps one; `None` for a server never written with a fence.
    pub epoch: Option<u64>,
}

/// How a write is fenced, so a name server never goes back to an older decision,
/// whoever writes it: the server refuses a write whose `epoch` is older than the one it
/// holds, and applies it only if it still holds `expect` (compare-and-swap against the
/// epoch read just before: another writer in between makes this one re-read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// The decision's epoch; 0: unfenced (tests and tools that write by hand).
    pub epoch: u64,
    /// The epoch the writer read before writing; `None`: do not compare.
    pub expect: Option<u64>,
    /// Write the epoch even when the server already holds the records: the first write
    /// of a writer that just took over, so a deposed writer's late update of an older
    /// decision is refused afterwards.
    pub stamp: bool,
}

impl Fence {
    /// No fence: the write always applies and leaves the held epoch as it is.
    pub const NONE: Fence = Fence {
        epoch: 0,
        expect: None,
        stamp: false,
    };

    /// A fence for a decision of `epoch`.
    pub fn of(epoch: u64) -> Fence {
        Fence {
            epoch,
            ..Fence::NONE
        }
    }
}

/// An epoch more than this far ahead of our own clock is not trusted to fence: a writer
/// with a clock gone wrong must not lock every other writer out for that long.
pub const MAX_EPOCH_AHEAD_MS: u64 = 10 * 60 * 1000;

/// "The area's name server": read what it holds, replace the www records. Implemented by
/// [`rfc2136::Rfc2136Updater`] (any RFC 2136 server, reached over the network) and
/// [`embedded::EmbeddedServer`] (our own); unit tests use an in-memory one.
pub trait NameServer: Send + Sync {
    /// The area whose answer this server carries.
    fn area(&self) -> &AreaName;

    /// For logs and status: kind, address, key name.
    fn describe(&self) -> String;

    /// What the server holds now.
    fn held(&self) -> impl Future<Output = Result<Held, NameServerError>> + Send;

    /// Replaces the A and AAAA rrsets of `www.<area-zone>` by `want`, atomically, under
    /// `fence` (see [`Fence`]): refused as [`NameServerError::Stale`] when the server holds
    /// a newer epoch, failed (retryable) when it no longer holds `fence.expect`.
    fn replace(
        &self,
        want: &WwwRecords,
        fence: &Fence,
    ) -> impl Future<Output = Result<(), NameServerError>> + Send;
}

/// The pure part of one area's Director: which records a decision asks of its server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AreaDirector {
    /// The one area whose answer this Director applies; others are ignored.
    pub area: AreaName,
    /// TTL of the records it writes.
    pub ttl: RecordTtl,
}

impl AreaDirector {
    /// The records this area's server should hold after `decision`: `Ok(None)` when the
    /// decision says nothing about this area (keep what is there), an error when it gives
    /// the area an empty answer (also: keep what is there).
    pub fn wanted(&self, decision: &Decision) -> Result<Option<WwwRecords>, DirectorError> {
        match decision.answers.get(&self.area) {
            None => Ok(None),
            Some(answer) => self.wanted_for(answer).map(Some),
        }
    }

    /// The records for one answer.
    pub fn wanted_for(&self, answer: &AreaAnswer) -> Result<WwwRecords, DirectorError> {
        WwwRecords::from_answer(answer, self.ttl)
    }
}

/// How an application of an answer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The server already held the answer: no update was sent.
    Unchanged {
        /// The area zone's serial seen.
        serial: Option<u32>,
    },
    /// An update was sent and a query afterwards saw it.
    Updated {
        /// Serial before the update.
        before: Option<u32>,
        /// Serial seen by the verifying query.
        after: Option<u32>,
    },
}

/// One attempt, for logs and the status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// 1-based attempt number.
    pub number: u32,
    /// The wait before it.
    pub waited: Duration,
    /// Its outcome.
    pub outcome: Result<Applied, NameServerError>,
}

/// Every attempt of one [`apply`] and the final outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// The server, as [`NameServer::describe`] gives it.
    pub server: String,
    /// Each attempt in order.
    pub attempts: Vec<Attempt>,
}

impl ApplyReport {
    /// The last attempt's outcome. [`apply`] always makes at least one attempt; a report
    /// built by hand without any reads as a `Failed` error with empty fields.
    pub fn outcome(&self) -> Result<&Applied, &NameServerError> {
        match self.attempts.last() {
            Some(a) => a.outcome.as_ref(),
            None => Err(&NO_ATTEMPT),
        }
    }
}

static NO_ATTEMPT: NameServerError = NameServerError::Failed {
    area: AreaName(String::new()),
    server: String::new(),
    detail: String::new(),
};
