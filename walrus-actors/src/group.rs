//! The actors' view of walrus-gcs: one [`GroupSession`] per actor, opened from a
//! [`GroupLayer`] (one per node).
//!
//! The real implementation is walrus-gcs itself ([`walrus_gcs::Gcs`] and [`GcsSession`])
//! on a member, and [`client::ClientLayer`] (over walrus-gcs' client tier) on a client
//! node; [`tiered::TierLayer`] is either of them, for code that runs both tiers behind
//! one type.
//! The actors are generic over these two small traits so that their shells can also be
//! unit-tested against [`local::LocalBus`] (feature `testing`), an in-process group bus
//! with a trivially total order: one lock, every delivery in one sequence. Integration
//! tests of the node use the real walrus-gcs over QUIC.
//!
//! ```text
//!  GroupLayer (Gcs, one per node) ──open_session──▶ GroupSession (one per actor)
//!                                                    join / leave / multicast / recv
//!            └──peer_streams──▶ PeerStreams: point-to-point byte streams to a named peer
//!                               (QUIC bi-directional streams on the same mutual-TLS links)
//! ```
//!
//! [`PeerStreams`] has one consumer per node: the Replicator (its transfers), which owns
//! `accept` on the node.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use walrus_gcs::transport::bulk::TcpStreams;
use walrus_gcs::{
    DriverError, Event, Gcs, GroupName, Member, NodeId, Service, Session, ViewChange,
};

/// One group-communication session, as an actor holds it.
pub trait GroupSession: Send + Sync + 'static {
    /// This session as it appears in membership lists (node, incarnation, session id).
    fn member(&self) -> &Member;

    /// Joins `group`; the members get a membership event once it is ordered.
    fn join(&self, group: GroupName) -> impl Future<Output = Result<(), DriverError>> + Send;

    /// Leaves `group`.
    fn leave(&self, group: GroupName) -> impl Future<Output = Result<(), DriverError>> + Send;

    /// Multicasts `payload` to every session in at least one of `groups`.
    fn multicast(
        &self,
        service: Service,
        groups: &[GroupName],
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;

    /// The next event; `None` once the session is gone.
    fn recv(&mut self) -> impl Future<Output = Option<Event>> + Send;

    /// Closes the session (it leaves every group).
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// One node's group-communication layer: opens sessions, shuts down.
pub trait GroupLayer: Send + Sync + 'static {
    /// The sessions it opens.
    type Session: GroupSession;

    /// Opens a session.
    fn open_session(&self) -> impl Future<Output = Result<Self::Session, DriverError>> + Send;

    /// Stops the node cleanly (peers are told).
    fn shutdown(&self) -> impl Future<Output = ()> + Send;

    /// Completes once this node's view holds every node of `expected` (its configured
    /// member peers), or once its view has not changed for `grace` ([`settle_on`]); returns
    /// which of them were still missing (empty: merged). A Controller waits for it before joining `Controllers` (see
    /// [`settle_state`] for why "every configured peer", not "anyone").
    fn settled(
        &self,
        grace: Duration,
        expected: &[NodeId],
    ) -> impl Future<Output = Vec<NodeId>> + Send;

    /// The view this node is in, watched: `None` until it installs its first view in this
    /// incarnation, then the latest (its members, sorted, this node among them).
    ///
    /// What each layer says: walrus-gcs, the views its membership protocol installs (a
    /// node cut off from the others installs a view of itself alone). A client
    /// ([`client::ClientLayer`]) is in no view: always `None` (it knows the member it is
    /// attached to, not that member's view; see `ClientLayer::watch_member`). The
    /// in-process bus ([`local::LocalBus`]) has one view: every node with a session open
    /// that has not crashed or shut down.
    fn watch_view(&self) -> watch::Receiver<Option<ViewChange>>;

    /// Point-to-point byte streams to named peers, where the layer has them (walrus-gcs
    /// does; the in-process bus has in-memory pipes). `None`: no streams.
    fn peer_streams(&self) -> Option<Arc<dyn PeerStreams>> {
        None
    }

    /// Makes `peers` the layer's configured peers (a reloaded configuration): new ones
    /// are dialed, removed ones dropped; this node keeps its place in the group. The
    /// in-process bus has no peer list: it accepts and does nothing.
    fn set_peers(
        &self,
        peers: &[(NodeId, std::net::SocketAddr)],
    ) -> impl Future<Output = Result<(), DriverError>> + Send {
        let _ = peers;
        async { Ok(()) }
    }
}

/// The sending half of a point-to-point stream.
pub type StreamSend = Box<dyn AsyncWrite + Send + Unpin>;
/// The receiving half of a point-to-point stream.
pub type StreamRecv = Box<dyn AsyncRead + Send + Unpin>;
/// A boxed future (the [`PeerStreams`] trait is object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a point-to-point stream could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// No link to the peer, or the link failed.
    #[error("stream to {peer}: {detail}")]
    Open {
        /// The peer.
        peer: NodeId,
        /// What failed.
        detail: String,
    },
}

/// Bi-directional byte streams between two nodes of the group layer.
pub trait PeerStreams: Send + Sync + 'static {
    /// Opens a stream to `peer`. The peer sees it once the first bytes are written.
    fn open(&self, peer: &NodeId) -> BoxFuture<'_, Result<(StreamSend, StreamRecv), StreamError>>;

    /// The next stream a peer opened to this node, with the peer's name (as its
    /// certificate says); `None` once the layer has shut down.
    fn accept(&self) -> BoxFuture<'_, Option<(NodeId, StreamSend, StreamRecv)>>;
}

/// Boxes a stream's two halves.
fn boxed(
    send: impl AsyncWrite + Send + Unpin + 'static,
    recv: impl AsyncRead + Send + Unpin + 'static,
) -> (StreamSend, StreamRecv) {
    (Box::new(send), Box::new(recv))
}

/// A failed open of a stream to `peer`.
fn open_error(peer: NodeId, e: impl std::fmt::Display) -> StreamError {
    StreamError::Open {
        peer,
        detail: e.to_string(),
    }
}

impl PeerStreams for walrus_gcs::transport::Transport<walrus_gcs::PeerMessage> {
    fn open(&self, peer: &NodeId) -> BoxFuture<'_, Result<(StreamSend, StreamRecv), StreamError>> {
        let peer = peer.clone();
        Box::pin(async move {
            let (send, recv) = self
                .open_stream(&peer)
                .await
                .map_err(|e| open_error(peer, e))?;
            Ok(boxed(send, recv))
        })
    }

    fn accept(&self) -> BoxFuture<'_, Option<(NodeId, StreamSend, StreamRecv)>> {
        Box::pin(async move {
            let s = self.accept_stream().await?;
            let (send, recv) = boxed(s.send, s.recv);
            Some((s.peer, send, recv))
        })
    }
}

/// TLS-over-TCP streams with the cluster's certificates (`[replicator] transport =
/// "tls-tcp"`): faster for bulk data than QUIC streams, see walrus-gcs `transport::bulk`.
impl PeerStreams for TcpStreams {
    fn open(&self, peer: &NodeId) -> BoxFuture<'_, Result<(StreamSend, StreamRecv), StreamError>> {
        let peer = peer.clone();
        Box::pin(async move {
            let stream = TcpStreams::open(self, &peer)
                .await
                .map_err(|e| open_error(peer, e))?;
            let (recv, send) = tokio::io::split(stream);
            Ok(boxed(send, recv))
        })
    }

    fn accept(&self) -> BoxFuture<'_, Option<(NodeId, StreamSend, StreamRecv)>> {
        Box::pin(async move {
            let (peer, stream) = TcpStreams::accept(self).await?;
            let (recv, send) = tokio::io::split(stream);
            let (send, recv) = boxed(send, recv);
            Some((peer, send, recv))
        })
    }
}

/// A walrus-gcs [`Session`] with the identity it has in membership lists.
pub struct GcsSession {
    session: Session,
    member: Member,
}

impl GcsSession {
    /// Opens a session on `gcs`.
    pub async fn open(gcs: &Gcs) -> Result<Self, DriverError> {
        let session = gcs.open_session().await?;
        let member = Member {
            node: gcs.id().clone(),
            incarnation: gcs.incarnation(),
            session: session.id(),
        };
        Ok(Self { session, member })
    }
}

impl GroupSession for GcsSession {
    fn member(&self) -> &Member {
        &self.member
    }

    async fn join(&self, group: GroupName) -> Result<(), DriverError> {
        self.session.join(group).await
    }

    async fn leave(&self, group: GroupName) -> Result<(), DriverError> {
        self.session.leave(group).await
    }

    async fn multicast(
        &self,
        service: Service,
        groups: &[GroupName],
        payload: Vec<u8>,
    ) -> Result<(), DriverError> {
        self.session.multicast(service, groups, payload).await
    }

    async fn recv(&mut self) -> Option<Event> {
        self.session.recv().await
    }

    async fn close(self) {
        self.session.close().await
    }
}

impl GroupLayer for Gcs {
    type Session = GcsSession;

    async fn open_session(&self) -> Result<GcsSession, DriverError> {
        GcsSession::open(self).await
    }

    async fn shutdown(&self) {
        Gcs::shutdown(self).await
    }

    async fn settled(&self, grace: Duration, expected: &[NodeId]) -> Vec<NodeId> {
        settle_on(Gcs::watch_view(self), grace, expected).await
    }

    fn watch_view(&self) -> watch::Receiver<Option<ViewChange>> {
        Gcs::watch_view(self)
    }

    fn peer_streams(&self) -> Option<Arc<dyn PeerStreams>> {
        Some(Arc::new(self.transport().clone()))
    }

    async fn set_peers(&self, peers: &[(NodeId, std::net::SocketAddr)]) -> Result<(), DriverError> {
        Gcs::set_peers(self, peers).await
    }
}

/// The configured peers of `expected` that `view` does not hold yet (empty: this node has
/// merged with all of them). No view yet: all of them.
///
/// Why every configured peer and not "at least one other node" (the rule before): a node
/// that starts (or restarts) first sits alone in a view of its own, then merges with
/// whoever it hears first. walrus-gcs may install a view with *some* of the live nodes
/// (a coordinator proposes the nodes it hears at that moment; the others follow a view
/// or two later, typically within a few hundred milliseconds). A Controller that joined
/// `Controllers` in such a partial view is master of it when no other Controller is in
/// it: it starts a round and may push answers, a second master with no partition, until
/// the next view deposes it. Waiting for every configured peer costs nothing when they
/// are all up (the full view follows at once); when some are down or cut off, the node
/// waits until its view has been quiet for the grace (`walrus-node`: five gcs failure
/// timeouts, see its `join_grace`), after which it knows it is in a component without
/// them and may rightly be its master (paper §6.3: one master per component).
pub fn settle_state(view: Option<&ViewChange>, expected: &[NodeId]) -> Vec<NodeId> {
    expected
        .iter()
        .filter(|n| !view.is_some_and(|v| v.members.iter().any(|m| &m.id == *n)))
        .cloned()
        .collect()
}

/// Waits on `view` until [`settle_state`] is empty, or until the view has stayed the same
/// for `grace` (counted again from each new view: while views keep coming, nodes are still
/// merging, and a node is alone, or cut off from the missing peers, only once its view has
/// been quiet for that long); returns the peers still missing. Logs why it waits, once,
/// and how it ended. Measured in the demo (7 members started one by one on a loaded
/// machine): the whole view took more than the grace from a Controller's start in 4 of 8
/// runs, while views kept growing; a grace counted from the start let those Controllers
/// join partial views, several masters for a moment.
pub async fn settle_on(
    mut view: watch::Receiver<Option<ViewChange>>,
    grace: Duration,
    expected: &[NodeId],
) -> Vec<NodeId> {
    let names = |v: &[NodeId]| v.iter().map(NodeId::as_str).collect::<Vec<_>>().join(", ");
    let missing = settle_state(view.borrow_and_update().as_ref(), expected);
    if missing.is_empty() {
        return missing;
    }
    tracing::info!(
        missing = %names(&missing),
        ?grace,
        "not joining Controllers yet (so not master): this node's view lacks configured peers; \
         joining once they are all in it, or once its view has not changed for the join grace"
    );
    loop {
        match tokio::time::timeout(grace, view.changed()).await {
            Ok(Ok(())) => {
                if settle_state(view.borrow_and_update().as_ref(), expected).is_empty() {
                    tracing::info!(
                        "every configured peer is in this node's view: joining Controllers"
                    );
                    return Vec::new();
                }
            }
            // The layer is gone (the node stops): nothing to wait for.
            Ok(Err(_)) => break,
            Err(_) => break,
        }
    }
    let missing = settle_state(view.borrow().as_ref(), expected);
    tracing::warn!(
        missing = %names(&missing),
        ?grace,
        "this node's view lacks configured peers and has not changed for the join grace \
         (they are down, or cut off): joining Controllers in this component; it may be its \
         master"
    );
    missing
}

pub mod client;
#[cfg(any(test, feature = "testing"))]
pub mod local;
pub mod tiered;

#[cfg(test)]
mod tests {
    use super::settle_state;
    use walrus_gcs::{Incarnation, NodeId, NodeRef, ViewChange, ViewId};

    fn view(nodes: &[&str]) -> ViewChange {
        let members: Vec<NodeRef> = nodes
            .iter()
            .map(|n| NodeRef {
                id: NodeId::new(*n),
                incarnation: Incarnation(1),
            })
            .collect();
        ViewChange {
            view: ViewId {
                counter: 2,
                coordinator: NodeId::new(nodes[0]),
                incarnation: Incarnation(1),
            },
            members,
            previous: None,
            delivered: 0,
            digest: 0,
        }
    }

    #[test]
    fn settled_means_every_configured_peer_in_the_view_not_anyone() {
        let peers: Vec<NodeId> = ["ctl-1", "ctl-2", "eu-1"].map(NodeId::new).to_vec();
        assert_eq!(settle_state(None, &peers), peers, "no view yet");
        assert_eq!(
            settle_state(Some(&view(&["ctl-3"])), &peers),
            peers,
            "alone"
        );
        // The demo's case: merged with some live nodes, not with the master's.
        assert_eq!(
            settle_state(Some(&view(&["ctl-3", "eu-1"])), &peers),
            ["ctl-1", "ctl-2"].map(NodeId::new).to_vec()
        );
        let whole = view(&["ctl-1", "ctl-2", "ctl-3", "eu-1"]);
        assert!(settle_state(Some(&whole), &peers).is_empty());
        assert!(settle_state(None, &[]).is_empty(), "no peers configured");
    }
}
