//! [`LocalBus`]: an in-process group bus for unit tests of the actor shells (feature
//! `testing`). Not a model of walrus-gcs's failure behaviour: it has one view, a total
//! order given by one lock, membership lists in join order, and a [`LocalBus::crash`]
//! that removes a node's sessions with reason `Network` (what a view change does).
//! Integration tests use the real walrus-gcs. Its view ([`GroupLayer::watch_view`]) is
//! every node with a session open.

use super::{
    BoxFuture, GroupLayer, GroupSession, PeerStreams, StreamError, StreamRecv, StreamSend,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, watch};
use walrus_gcs::{
    DriverError, Event, GroupName, Incarnation, Member, MembershipReason, NodeId, NodeRef, Service,
    SessionId, Stamp, ViewChange, ViewId,
};

/// The shared bus; clone it to hand to every node.
#[derive(Clone, Default)]
pub struct LocalBus {
    inner: Arc<Mutex<BusState>>,
    /// The bus's one view ([`GroupLayer::watch_view`]): the nodes with a session open.
    view: Arc<watch::Sender<Option<ViewChange>>>,
}

#[derive(Default)]
struct BusState {
    next_session: u64,
    seq: u64,
    sessions: BTreeMap<SessionId, Slot>,
    groups: BTreeMap<GroupName, Vec<Member>>,
    dead: BTreeSet<(NodeId, Incarnation)>,
    /// Each node's queue of incoming point-to-point streams (made on first use).
    streams: BTreeMap<NodeId, StreamQueue>,
}

type Incoming = (NodeId, StreamSend, StreamRecv);

#[derive(Clone)]
struct StreamQueue {
    tx: mpsc::UnboundedSender<Incoming>,
    rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Incoming>>>,
}

impl BusState {
    fn stream_queue(&mut self, node: &NodeId) -> StreamQueue {
        self.streams
            .entry(node.clone())
            .or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                StreamQueue {
                    tx,
                    rx: Arc::new(tokio::sync::Mutex::new(rx)),
                }
            })
            .clone()
    }
}

/// In-memory point-to-point streams between the nodes of a [`LocalBus`] (tokio duplex
/// pipes).
struct LocalStreams {
    bus: LocalBus,
    node: NodeId,
}

impl PeerStreams for LocalStreams {
    fn open(&self, peer: &NodeId) -> BoxFuture<'_, Result<(StreamSend, StreamRecv), StreamError>> {
        // Like a missing QUIC link: a node that never accepted streams cannot be reached.
        let queue = self.bus.lock().streams.get(peer).cloned();
        let peer = peer.clone();
        Box::pin(async move {
            let queue = queue.ok_or_else(|| StreamError::Open {
                peer: peer.clone(),
                detail: "the peer accepts no streams".into(),
            })?;
            let (mine, theirs) = tokio::io::duplex(256 * 1024);
            let (my_r, my_w) = tokio::io::split(mine);
            let (their_r, their_w) = tokio::io::split(theirs);
            queue
                .tx
                .send((self.node.clone(), Box::new(their_w), Box::new(their_r)))
                .map_err(|_| StreamError::Open {
                    peer,
                    detail: "the peer is gone".into(),
                })?;
            Ok((Box::new(my_w) as StreamSend, Box::new(my_r) as StreamRecv))
        })
    }

    fn accept(&self) -> BoxFuture<'_, Option<Incoming>> {
        let queue = self.bus.lock().stream_queue(&self.node);
        Box::pin(async move { queue.rx.lock().await.recv().await })
    }
}

struct Slot {
    member: Member,
    tx: mpsc::UnboundedSender<Event>,
}

impl LocalBus {
    /// A new, empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// A node on this bus, in its `incarnation`.
    pub fn node(&self, name: &str, incarnation: u64) -> LocalNode {
        LocalNode {
            bus: self.clone(),
            node: NodeId::new(name),
            incarnation: Incarnation(incarnation),
        }
    }

    /// The node crashes: its sessions vanish from every group (reason `Network`) and see
    /// their event streams end; it can open no more sessions in this incarnation.
    pub fn crash(&self, node: &str, incarnation: u64) {
        let mut st = self.lock();
        let key = (NodeId::new(node), Incarnation(incarnation));
        st.dead.insert(key.clone());
        let gone: Vec<SessionId> = st
            .sessions
            .iter()
            .filter(|(_, s)| s.member.node == key.0 && s.member.incarnation == key.1)
            .map(|(id, _)| *id)
            .collect();
        st.remove_sessions(&gone, MembershipReason::Network);
        drop(st);
        self.publish_view();
    }

    /// The members of `group`, in join order.
    pub fn members(&self, group: &str) -> Vec<Member> {
        self.lock()
            .groups
            .get(&GroupName::new(group))
            .cloned()
            .unwrap_or_default()
    }

    fn lock(&self) -> MutexGuard<'_, BusState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the view if its nodes changed: every node (incarnation) with a session
    /// open, sorted; the view counter grows with each change.
    fn publish_view(&self) {
        let nodes: BTreeSet<NodeRef> = self
            .lock()
            .sessions
            .values()
            .map(|s| NodeRef {
                id: s.member.node.clone(),
                incarnation: s.member.incarnation,
            })
            .collect();
        let members: Vec<NodeRef> = nodes.into_iter().collect();
        self.view.send_if_modified(|v| {
            if v.as_ref().map(|v| &v.members) == Some(&members) {
                return false;
            }
            let counter = v.as_ref().map_or(1, |v| v.view.counter + 1);
            *v = Some(ViewChange {
                view: ViewId {
                    counter,
                    coordinator: NodeId::new("local-bus"),
                    incarnation: Incarnation(0),
                },
                members,
                previous: None,
                delivered: 0,
                digest: 0,
            });
            true
        });
    }
}

impl BusState {
    fn stamp(&mut self) -> (ViewId, Stamp) {
        self.seq += 1;
        let view = ViewId {
            counter: 1,
            coordinator: NodeId::new("local-bus"),
            incarnation: Incarnation(0),
        };
        (
            view.clone(),
            Stamp {
                view,
                seq: self.seq,
            },
        )
    }

    fn announce(&mut self, group: &GroupName, reason: MembershipReason) {
        let (view, at) = self.stamp();
        // One list per change, shared by every member's event (as walrus-gcs does).
        let members: Arc<[Member]> = self
            .groups
            .get(group)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_else(|| Arc::from([]));
        for m in members.iter() {
            if let Some(slot) = self.sessions.get(&m.session) {
                let _ = slot.tx.send(Event::Membership {
                    group: group.clone(),
                    view: view.clone(),
                    members: Arc::clone(&members),
                    reason,
                    at: at.clone(),
                });
            }
        }
    }

    fn remove_sessions(&mut self, ids: &[SessionId], reason: MembershipReason) {
        let mut touched = BTreeSet::new();
        for id in ids {
            if let Some(slot) = self.sessions.remove(id) {
                for (g, members) in self.groups.iter_mut() {
                    let before = members.len();
                    members.retain(|m| m != &slot.member);
                    if members.len() != before {
                        touched.insert(g.clone());
                    }
                }
            }
        }
        for g in touched {
            self.announce(&g, reason);
        }
    }
}

/// One node's handle on a [`LocalBus`].
#[derive(Clone)]
pub struct LocalNode {
    bus: LocalBus,
    node: NodeId,
    incarnation: Incarnation,
}

impl GroupLayer for LocalNode {
    type Session = LocalSession;

    async fn open_session(&self) -> Result<LocalSession, DriverError> {
        let mut st = self.bus.lock();
        if st.dead.contains(&(self.node.clone(), self.incarnation)) {
            return Err(DriverError::Stopped);
        }
        st.next_session += 1;
        let session = SessionId(st.next_session);
        let member = Member {
            node: self.node.clone(),
            incarnation: self.incarnation,
            session,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        st.sessions.insert(
            session,
            Slot {
                member: member.clone(),
                tx,
            },
        );
        drop(st);
        self.bus.publish_view();
        Ok(LocalSession {
            bus: self.bus.clone(),
            member,
            rx,
        })
    }

    async fn shutdown(&self) {
        let mut st = self.bus.lock();
        st.dead.insert((self.node.clone(), self.incarnation));
        let gone: Vec<SessionId> = st
            .sessions
            .iter()
            .filter(|(_, s)| s.member.node == self.node && s.member.incarnation == self.incarnation)
            .map(|(id, _)| *id)
            .collect();
        st.remove_sessions(&gone, MembershipReason::Disconnect);
        drop(st);
        self.bus.publish_view();
    }

    fn watch_view(&self) -> watch::Receiver<Option<ViewChange>> {
        self.bus.view.subscribe()
    }

    /// The bus has one view: settled at once.
    async fn settled(&self, _grace: std::time::Duration, _expected: &[NodeId]) -> Vec<NodeId> {
        Vec::new()
    }

    fn peer_streams(&self) -> Option<Arc<dyn PeerStreams>> {
        Some(Arc::new(LocalStreams {
            bus: self.bus.clone(),
            node: self.node.clone(),
        }))
    }
}

/// A session on a [`LocalBus`].
pub struct LocalSession {
    bus: LocalBus,
    member: Member,
    rx: mpsc::UnboundedReceiver<Event>,
}

impl LocalSession {
    fn alive(&self, st: &BusState) -> Result<(), DriverError> {
        if st.sessions.contains_key(&self.member.session) {
            Ok(())
        } else {
            Err(DriverError::Stopped)
        }
    }
}

impl GroupSession for LocalSession {
    fn member(&self) -> &Member {
        &self.member
    }

    async fn join(&self, group: GroupName) -> Result<(), DriverError> {
        let mut st = self.bus.lock();
        self.alive(&st)?;
        let members = st.groups.entry(group.clone()).or_default();
        if !members.contains(&self.member) {
            members.push(self.member.clone());
            st.announce(&group, MembershipReason::Join);
        }
        Ok(())
    }

    async fn leave(&self, group: GroupName) -> Result<(), DriverError> {
        let mut st = self.bus.lock();
        self.alive(&st)?;
        if let Some(members) = st.groups.get_mut(&group) {
            let before = members.len();
            members.retain(|m| m != &self.member);
            if members.len() != before {
                st.announce(&group, MembershipReason::Leave);
            }
        }
        Ok(())
    }

    async fn multicast(
        &self,
        service: Service,
        groups: &[GroupName],
        payload: Vec<u8>,
    ) -> Result<(), DriverError> {
        let mut st = self.bus.lock();
        self.alive(&st)?;
        st.seq += 1;
        let payload = walrus_gcs::Bytes::from(payload);
        let mut to: BTreeSet<SessionId> = BTreeSet::new();
        for g in groups {
            if let Some(members) = st.groups.get(g) {
                to.extend(members.iter().map(|m| m.session));
            }
        }
        for id in to {
            if let Some(slot) = st.sessions.get(&id) {
                let _ = slot.tx.send(Event::Message {
                    sender: (self.member.node.clone(), self.member.session),
                    service,
                    groups: groups.to_vec(),
                    payload: payload.clone(),
                    client: None,
                });
            }
        }
        Ok(())
    }

    async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    async fn close(self) {
        let mut st = self.bus.lock();
        st.remove_sessions(&[self.member.session], MembershipReason::Disconnect);
        // `Drop` publishes the view.
    }
}

impl Drop for LocalSession {
    fn drop(&mut self) {
        let mut st = self.bus.lock();
        if st.sessions.contains_key(&self.member.session) {
            st.remove_sessions(&[self.member.session], MembershipReason::Disconnect);
        }
        drop(st);
        self.bus.publish_view();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_view_is_every_node_with_a_session_open() {
        let bus = LocalBus::new();
        let a = bus.node("a", 1);
        let view = a.watch_view();
        assert!(view.borrow().is_none());
        let nodes = |v: &watch::Receiver<Option<ViewChange>>| -> Vec<String> {
            v.borrow()
                .iter()
                .flat_map(|v| v.members.iter().map(|m| m.id.to_string()))
                .collect()
        };
        let _sa = a.open_session().await.unwrap();
        let _sb = bus.node("b", 1).open_session().await.unwrap();
        assert_eq!(nodes(&view), ["a", "b"]);
        assert_eq!(view.borrow().as_ref().map(|v| v.view.counter), Some(2));
        bus.crash("b", 1);
        assert_eq!(nodes(&view), ["a"]);
    }

    #[tokio::test]
    async fn membership_in_join_order_and_crash_removes_a_node() {
        let bus = LocalBus::new();
        let a = bus.node("a", 1).open_session().await.unwrap();
        let mut b = bus.node("b", 1).open_session().await.unwrap();
        let g = GroupName::new("G");
        a.join(g.clone()).await.unwrap();
        b.join(g.clone()).await.unwrap();
        let Some(Event::Membership { members, .. }) = b.recv().await else {
            panic!("membership expected")
        };
        assert_eq!(members[..], [a.member().clone(), b.member().clone()]);
        a.multicast(Service::Agreed, std::slice::from_ref(&g), b"x".to_vec())
            .await
            .unwrap();
        assert!(
            matches!(b.recv().await, Some(Event::Message { payload, .. }) if *payload == b"x"[..])
        );
        bus.crash("a", 1);
        let Some(Event::Membership {
            members, reason, ..
        }) = b.recv().await
        else {
            panic!("membership expected")
        };
        assert_eq!(members[..], [b.member().clone()]);
        assert_eq!(reason, MembershipReason::Network);
        assert!(a.join(g).await.is_err());
    }
}
