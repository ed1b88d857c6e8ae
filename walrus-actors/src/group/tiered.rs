//! [`TierLayer`]: a node's group layer whichever its tier, for code that runs members and
//! clients side by side behind one type (walrus-node's in-process demo runs its web hosts
//! as clients beside its member hosts in one `Cluster`).
//!
//! ```text
//!  TierLayer::Member(Gcs)          ─open_session─▶ TierSession::Member(GcsSession)
//!  TierLayer::Client(ClientLayer)  ─open_session─▶ TierSession::Client(ClientGroupSession)
//! ```
//!
//! Each call goes to the layer inside; nothing is added. A process that runs one node
//! (the `walrus-node run` binary) uses [`Gcs`] or [`ClientLayer`] directly.

use super::client::{ClientGroupSession, ClientLayer};
use super::{GcsSession, GroupLayer, GroupSession, PeerStreams};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use walrus_gcs::{DriverError, Event, Gcs, GroupName, Member, NodeId, Service, ViewChange};

/// A member's walrus-gcs node or a client's link (see the module doc).
pub enum TierLayer {
    /// A group member.
    Member(Gcs),
    /// A client attached to a member.
    Client(ClientLayer),
}

impl TierLayer {
    /// The walrus-gcs node, on a member.
    pub fn member(&self) -> Option<&Gcs> {
        match self {
            TierLayer::Member(g) => Some(g),
            TierLayer::Client(_) => None,
        }
    }

    /// The client link, on a client.
    pub fn client(&self) -> Option<&ClientLayer> {
        match self {
            TierLayer::Member(_) => None,
            TierLayer::Client(c) => Some(c),
        }
    }
}

/// A session of a [`TierLayer`].
pub enum TierSession {
    /// On a member.
    Member(GcsSession),
    /// On a client.
    Client(ClientGroupSession),
}

impl GroupSession for TierSession {
    fn member(&self) -> &Member {
        match self {
            TierSession::Member(s) => s.member(),
            TierSession::Client(s) => s.member(),
        }
    }

    async fn join(&self, group: GroupName) -> Result<(), DriverError> {
        match self {
            TierSession::Member(s) => s.join(group).await,
            TierSession::Client(s) => s.join(group).await,
        }
    }

    async fn leave(&self, group: GroupName) -> Result<(), DriverError> {
        match self {
            TierSession::Member(s) => s.leave(group).await,
            TierSession::Client(s) => s.leave(group).await,
        }
    }

    async fn multicast(
        &self,
        service: Service,
        groups: &[GroupName],
        payload: Vec<u8>,
    ) -> Result<(), DriverError> {
        match self {
            TierSession::Member(s) => s.multicast(service, groups, payload).await,
            TierSession::Client(s) => s.multicast(service, groups, payload).await,
        }
    }

    async fn recv(&mut self) -> Option<Event> {
        match self {
            TierSession::Member(s) => s.recv().await,
            TierSession::Client(s) => s.recv().await,
        }
    }

    async fn close(self) {
        match self {
            TierSession::Member(s) => s.close().await,
            TierSession::Client(s) => s.close().await,
        }
    }
}

impl GroupLayer for TierLayer {
    type Session = TierSession;

    async fn open_session(&self) -> Result<TierSession, DriverError> {
        match self {
            TierLayer::Member(g) => GroupLayer::open_session(g).await.map(TierSession::Member),
            TierLayer::Client(c) => c.open_session().await.map(TierSession::Client),
        }
    }

    async fn shutdown(&self) {
        match self {
            TierLayer::Member(g) => GroupLayer::shutdown(g).await,
            TierLayer::Client(c) => c.shutdown().await,
        }
    }

    async fn settled(&self, grace: Duration, expected: &[NodeId]) -> Vec<NodeId> {
        match self {
            TierLayer::Member(g) => g.settled(grace, expected).await,
            TierLayer::Client(c) => c.settled(grace, expected).await,
        }
    }

    fn watch_view(&self) -> watch::Receiver<Option<ViewChange>> {
        match self {
            TierLayer::Member(g) => GroupLayer::watch_view(g),
            TierLayer::Client(c) => c.watch_view(),
        }
    }

    fn peer_streams(&self) -> Option<Arc<dyn PeerStreams>> {
        match self {
            TierLayer::Member(g) => g.peer_streams(),
            TierLayer::Client(c) => c.peer_streams(),
        }
    }

    async fn set_peers(&self, peers: &[(NodeId, std::net::SocketAddr)]) -> Result<(), DriverError> {
        match self {
            TierLayer::Member(g) => GroupLayer::set_peers(g, peers).await,
            TierLayer::Client(c) => c.set_peers(peers).await,
        }
    }
}
