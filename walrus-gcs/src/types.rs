//! Identities and small value types shared by the core, the wire and the events.
//!
//! Every identity is a newtype, never a bare `String` or `u64`, so a node name cannot be
//! passed where a group name is expected.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// The configured name of a GCS node (one per host). It is what the node's TLS
/// certificate names, so the transport can check that a frame's sender is its peer.
/// Shared (`Arc<str>`): ordered entries, views and events carry it per message, and a
/// clone is a reference count, not an allocation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub Arc<str>);

impl NodeId {
    /// Makes a node id from its configured name.
    pub fn new(name: impl Into<String>) -> Self {
        NodeId(Arc::from(name.into()))
    }

    /// The configured name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which life of a node this is. The driver passes it in at start; a restarted node must
/// use a larger one (for example the start time in milliseconds), and is then a new member
/// that knows nothing of what its previous incarnation did.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Incarnation(pub u64);

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// One incarnation of one node: what a view lists as a member.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeRef {
    /// The node's configured name.
    pub id: NodeId,
    /// Which life of the node.
    pub incarnation: Incarnation,
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.id, self.incarnation)
    }
}

/// The id of a view (a membership of nodes). Ids are totally ordered: first by
/// `counter`, then by the coordinator that proposed the view, then by its incarnation.
/// A node only ever installs views with growing ids; two nodes that install the same id
/// install the same member list.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ViewId {
    /// Grows with every proposal: one more than the largest counter the proposer has seen.
    pub counter: u64,
    /// The node that proposed (and coordinated the flush of) this view.
    pub coordinator: NodeId,
    /// The coordinator's incarnation, so a restarted coordinator never reuses an id.
    pub incarnation: Incarnation,
}

impl fmt::Display for ViewId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}{}",
            self.counter, self.coordinator, self.incarnation
        )
    }
}

/// A named process group that sessions join and leave (open group: non-members may send).
/// Shared like [`NodeId`]: every message and delivered event names its groups.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupName(pub Arc<str>);

impl GroupName {
    /// Makes a group name.
    pub fn new(name: impl Into<String>) -> Self {
        GroupName(Arc::from(name.into()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A local session of a node (the Controller, the Reporter and the Replicator each hold
/// one). Numbered by the node; unique within one incarnation of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// The delivery guarantee a multicast asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Service {
    /// No loss (while the sender stays in the receiver's view), no duplication, FIFO per
    /// sender.
    Reliable,
    /// Reliable, and one total order over all Agreed messages of all groups, identical at
    /// every receiver (also across partitions).
    Agreed,
}

/// A position in the total order: the view a message or membership change was ordered
/// in, and its sequence number there. Network changes (installing a view) sit at
/// sequence number 0 of the new view.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// The view the change was ordered in.
    pub view: ViewId,
    /// Its sequence number in that view (0 for the view change itself).
    pub seq: u64,
}

/// A member of a process group: one session of one node incarnation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Member {
    /// The node hosting the session.
    pub node: NodeId,
    /// Which life of that node.
    pub incarnation: Incarnation,
    /// The session.
    pub session: SessionId,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}/{}", self.node, self.incarnation, self.session)
    }
}

/// The id of one multicast of a client (a process attached to a member, not in views;
/// see `PROTOCOL.md`, "Clients"): the client's name, its incarnation and a counter of
/// its multicasts (1, 2, 3, … across all its sessions). A client that re-attaches to
/// another member sends again, under the same id, what it was not told was delivered;
/// every member hands a client's message with a given id to its sessions at most once.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientMsgId {
    /// The client's configured name (its certificate's).
    pub client: NodeId,
    /// Which life of the client.
    pub incarnation: Incarnation,
    /// Numbers the client's multicasts of this incarnation: 1, 2, 3, …
    pub counter: u64,
}

impl fmt::Display for ClientMsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}:{}", self.client, self.incarnation, self.counter)
    }
}
