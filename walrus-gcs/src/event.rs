//! What the core hands to its driver: [`Output`]s, and the [`Event`]s sessions receive.

use crate::types::{
    ClientMsgId, GroupName, Member, NodeId, NodeRef, Service, SessionId, Stamp, ViewId,
};
use crate::wire::PeerMessage;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One output of the core, taken with [`crate::Node::poll_output`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `msg` to peer `to` (over the link to it; per-link FIFO is assumed, loss on a
    /// broken link is tolerated).
    Send {
        /// The peer.
        to: NodeId,
        /// The message.
        msg: PeerMessage,
    },
    /// Hand `event` to local session `session`. Call [`crate::Node::mark_read`] when the
    /// application has taken it.
    Deliver {
        /// The session.
        session: SessionId,
        /// The event.
        event: Event,
    },
    /// This node installed a new view (for logs, metrics and the simulator's checker).
    ViewInstalled(ViewChange),
    /// A multicast this node sent for a client (`Node::multicast_for_client`) was
    /// delivered here (or dropped here as a copy the client sent again) and by every
    /// member of its view, or its view's flush is over: the client may forget it (see
    /// `PROTOCOL.md`, "Clients"). A driver without clients ignores it.
    Confirmed {
        /// The local session that sent it (hosting the client's session).
        session: SessionId,
        /// The client's id of the message.
        id: ClientMsgId,
        /// The view it was delivered in.
        view: ViewId,
    },
}

/// A view installation, as reported by [`Output::ViewInstalled`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewChange {
    /// The new view.
    pub view: ViewId,
    /// Its members, sorted; the first is the sequencer.
    pub members: Vec<NodeRef>,
    /// The view this node left (`None` for the first view of an incarnation).
    pub previous: Option<ViewId>,
    /// How many ordered operations this node delivered in `previous`.
    pub delivered: u64,
    /// A digest of the ordered operations delivered in `previous`, in order: nodes that
    /// move together from one view to the next report the same digest (virtual synchrony).
    pub digest: u64,
}

/// Why a group's membership changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MembershipReason {
    /// A session joined.
    Join,
    /// A session left.
    Leave,
    /// A session closed or was disconnected.
    Disconnect,
    /// A view change (partition, merge, crash, restart) added or removed members.
    Network,
}

/// Why a session was dropped by the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DisconnectReason {
    /// It left more than `CoreConfig::session_queue_limit` events unread.
    QueueOverflow {
        /// The limit it broke.
        limit: usize,
    },
}

/// What a session receives, in one order that is the same at every receiver (a member
/// forwards it to a client as is, so it has a wire form).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A multicast addressed to at least one group the session is a member of.
    Message {
        /// The sending node and session.
        sender: (NodeId, SessionId),
        /// The service it was sent with.
        service: Service,
        /// The groups it was addressed to.
        groups: Vec<GroupName>,
        /// Application bytes.
        #[serde(with = "crate::codec::bytes")]
        payload: bytes::Bytes,
        /// Set when a client sent it (through the member `sender` names): its id, the
        /// same whichever member the client sent it through.
        client: Option<ClientMsgId>,
    },
    /// The membership of a group the session belongs to changed.
    Membership {
        /// The group.
        group: GroupName,
        /// The view in which the change happened.
        view: ViewId,
        /// The new member list: identical at every member, in join-stamp order (a join
        /// never changes who is first). Built once per change and shared by every local
        /// session's event (a clone is a reference count), so a change costs a member
        /// O(group), not O(sessions × group); on the wire it is a plain list.
        members: Arc<[Member]>,
        /// Why it changed.
        reason: MembershipReason,
        /// Where the change sits in the total order (unique per change).
        at: Stamp,
    },
    /// The session was dropped; it receives nothing more.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
    },
}
