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
    /// The send window is full: too many of this node's operations (or bytes of them)
    /// are on their way; try again once some are delivered (the async
    /// `Session::multicast` waits for that itself).
    #[error("send window full: {pending} operations counting {pending_bytes} bytes on their way (limits {limit} and {limit_bytes} bytes; a message counts its payload plus 1 KiB)")]
    Backpressure {
        /// Operations on their way.
        pending: usize,
        /// What they count against the window's bytes (payload plus 1 KiB a message).
        pending_bytes: usize,
        /// The configured limit in operations.
        limit: usize,
        /// The configured limit in bytes.
        limit_bytes: usize,
    },
}
