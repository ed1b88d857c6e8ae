//! Errors of the local API of the core.

use crate::types::SessionId;

/// Why a local request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GcsError {
    /// The payload is larger than `CoreConfig::max_message_size`.
    #[error("message of {size} bytes is over the limit of {limit}")]
    MessageTooLarge {
        /// Payload size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// No open session has this id (never opened, closed, or disconnected).
    #[error("no open session {0}")]
    UnknownSession(SessionId),
    /// A multicast named no group.
    #[error("a multicast needs at least one group")]
    NoGroups,
    /// Too many operations of this node wait to be ordered; try again later.
    #[error("{pending} operations wait to be ordered (limit {limit})")]
    Backpressure {
        /// Operations waiting.
        pending: usize,
        /// The configured limit.
        limit: usize,
    },
}
