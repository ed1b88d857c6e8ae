//! Clients: the second tier of walrus-gcs (`PROTOCOL.md`, "Clients").
//!
//! A **member** runs the protocol (views, sequencer, flush). A **client** is a process
//! with no place in views: it attaches to one member of its choice (the first of an
//! ordered list, its area's; the next on failure) and uses sessions like a member's
//! local application does. The member hosts each client session as a local session of
//! its core ([`crate::Node`]), so a client's joins, leaves and multicasts are the
//! member's operations, ordered in the member's total order, and a client that crashes
//! or loses its link is a `Gone` of its sessions (a group-membership event), never a
//! view change.
//!
//! ```text
//!  client app ─▶ ClientCore ──ClientRequest──▶ ClientHost (member) ─▶ Node (ordered)
//!      ▲                                                                  │
//!      └──── ClientCore ◀──ClientNotice (events, membership deltas, Confirmed)──┘
//! ```
//!
//! Both sides are sans-IO state machines (time and links come in as calls): the
//! member's [`ClientHost`] and the client's [`ClientCore`]. The messages between them
//! are [`ClientRequest`] (client → member) and [`ClientNotice`] (member → client); a
//! member decodes a client's bytes with [`crate::codec::decode`] (size-limited) into a
//! `ClientRequest` only, so a client cannot speak as a member (no `PeerMessage` comes
//! off a client link).

use crate::event::{Event, MembershipReason};
use crate::types::{GroupName, Service, SessionId, Stamp, ViewId};
use serde::{Deserialize, Serialize};

mod attach;
mod client;
pub mod delta;
mod host;
pub mod link;

pub use attach::{Client, ClientLinkConfig, ClientLinkError, ClientSession, ClientStats};
pub use client::{ClientConfig, ClientCore, ClientError, ClientOutput};
pub use delta::MemberChange;
pub use host::{ClientHost, HostLimits, HostRefusal};

/// Client → member: what a client asks its member to do. Sessions are numbered by the
/// client (its own [`SessionId`]s); the member maps them to local sessions of its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Open session `session` (announced once per attachment, before its other requests).
    Open {
        /// The client's session.
        session: SessionId,
    },
    /// Close it: it leaves every group (a `Disconnect` membership event).
    Close {
        /// The client's session.
        session: SessionId,
    },
    /// Join a group.
    Join {
        /// The client's session.
        session: SessionId,
        /// The group.
        group: GroupName,
    },
    /// Leave a group.
    Leave {
        /// The client's session.
        session: SessionId,
        /// The group.
        group: GroupName,
    },
    /// Multicast: `counter` is the client's number for it (1, 2, 3, … per client
    /// incarnation, across its sessions, in sending order); sent again under the same
    /// counter after a re-attachment until confirmed.
    Multicast {
        /// The client's session.
        session: SessionId,
        /// The client's number for this message.
        counter: u64,
        /// Requested service.
        service: Service,
        /// Destination groups.
        groups: Vec<GroupName>,
        /// Application bytes.
        #[serde(with = "crate::codec::bytes")]
        payload: Vec<u8>,
    },
}

/// Member → client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientNotice {
    /// The member admitted the client (the first notice of a link).
    Attached,
    /// An event for one of the client's sessions (its number, the client's); never an
    /// `Event::Membership`, which travels as [`ClientNotice::Membership`].
    Event {
        /// The client's session.
        session: SessionId,
        /// The event, as the member's core delivered it.
        event: Event,
    },
    /// A group's membership changed (an `Event::Membership` for the client's session):
    /// the new list as a delta from the last list this session got, or whole when the
    /// session holds none (see [`delta`]). The client rebuilds the event.
    Membership {
        /// The client's session.
        session: SessionId,
        /// The group.
        group: GroupName,
        /// The view in which the change happened.
        view: ViewId,
        /// Why it changed.
        reason: MembershipReason,
        /// Where the change sits in the total order.
        at: Stamp,
        /// The new member list.
        change: MemberChange,
    },
    /// The client's message `counter` was delivered at the member (or was a copy of one
    /// delivered already): the client may forget it.
    Confirmed {
        /// The client's number for the message.
        counter: u64,
    },
}

#[cfg(test)]
mod tests;
