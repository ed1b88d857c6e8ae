//! [`Node`]: the sans-IO protocol core of one GCS node (skeleton; protocol lands next).

use crate::config::CoreConfig;
use crate::error::GcsError;
use crate::event::Output;
use crate::types::{GroupName, Incarnation, NodeId, Service, SessionId};
use crate::wire::PeerMessage;
use std::collections::VecDeque;
use std::time::Instant;

/// The protocol core of one node. Feed it inputs (`handle_*`, local requests), then drain
/// [`Node::poll_output`] and arm a timer at [`Node::poll_timeout`].
#[derive(Debug)]
pub struct Node {
    config: CoreConfig,
    me: NodeId,
    incarnation: Incarnation,
    peers: Vec<NodeId>,
    outputs: VecDeque<Output>,
    next_session: u64,
}

impl Node {
    /// A node named `me` in its `incarnation`, with the configured `peers` (itself may be
    /// listed; it is ignored). It starts alone in a view of its own.
    pub fn new(
        config: CoreConfig,
        me: NodeId,
        incarnation: Incarnation,
        peers: Vec<NodeId>,
        now: Instant,
    ) -> Self {
        let _ = now;
        Node {
            config,
            me,
            incarnation,
            peers,
            outputs: VecDeque::new(),
            next_session: 1,
        }
    }

    /// A message from peer `from` (the transport checked the name against the certificate).
    pub fn handle_message(&mut self, now: Instant, from: &NodeId, msg: PeerMessage) {
        let _ = (now, from, msg);
    }

    /// The transport connected to `peer`.
    pub fn handle_link_up(&mut self, now: Instant, peer: &NodeId) {
        let _ = (now, peer);
    }

    /// The transport lost its connection to `peer`.
    pub fn handle_link_down(&mut self, now: Instant, peer: &NodeId) {
        let _ = (now, peer);
    }

    /// Time passed; call at (or after) [`Node::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
    }

    /// Opens a local session.
    pub fn open_session(&mut self, now: Instant) -> SessionId {
        let _ = now;
        let s = SessionId(self.next_session);
        self.next_session += 1;
        s
    }

    /// Closes a local session: it leaves every group (members see `Disconnect`).
    pub fn close_session(&mut self, now: Instant, session: SessionId) -> Result<(), GcsError> {
        let _ = (now, session);
        Ok(())
    }

    /// Session `session` joins `group`.
    pub fn join(
        &mut self,
        now: Instant,
        session: SessionId,
        group: GroupName,
    ) -> Result<(), GcsError> {
        let _ = (now, session, group);
        Ok(())
    }

    /// Session `session` leaves `group`.
    pub fn leave(
        &mut self,
        now: Instant,
        session: SessionId,
        group: GroupName,
    ) -> Result<(), GcsError> {
        let _ = (now, session, group);
        Ok(())
    }

    /// Multicasts `payload` to every session in at least one of `groups`.
    pub fn multicast(
        &mut self,
        now: Instant,
        session: SessionId,
        service: Service,
        groups: &[GroupName],
        payload: Vec<u8>,
    ) -> Result<(), GcsError> {
        let _ = (now, session, service, groups);
        if payload.len() > self.config.max_message_size {
            return Err(GcsError::MessageTooLarge {
                size: payload.len(),
                limit: self.config.max_message_size,
            });
        }
        Ok(())
    }

    /// The application of `session` has taken `count` delivered events.
    pub fn mark_read(&mut self, session: SessionId, count: usize) {
        let _ = (session, count);
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Node::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// This node's name.
    pub fn id(&self) -> &NodeId {
        &self.me
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// The configured peers.
    pub fn peers(&self) -> &[NodeId] {
        &self.peers
    }
}
