//! [`Node`]: the sans-IO protocol core of one GCS node.
//!
//! It owns the node's view (membership of nodes), the replicated table of process-group
//! memberships, the ordering of operations by the view's sequencer, the flush at a view
//! change, and a heartbeat failure detector. It never touches a socket, a clock or a
//! random source: time comes in as `now`, messages go out as [`Output::Send`].
//!
//! ```text
//!  multicast/join/leave ─▶ pending ─Submit─▶ sequencer ─Ordered─▶ every member ─Ack─▶
//!  every member: deliver entries ≤ commit (their submitter holds them), in seq order
//!  ─▶ sessions
//!
//!  view change: Propose ─▶ members freeze and Accept (with what they hold, entries and
//!  group records in chunks before it) ─▶ coordinator computes each old view's cut
//!  ─InstallData + InstallGroups chunks, then Install─▶ members deliver the cut, install
//!  the view, and submit again what was not ordered.
//! ```
//!
//! See `PROTOCOL.md` for why this is safe.
//!
//! # Where each rule lives
//!
//! One state machine, one struct: the concerns below share the view's state (its
//! members, the entries held and delivered), so [`Node`] keeps every field and each
//! file adds the `impl Node` methods of one concern, the way quinn-proto splits its
//! `Connection` (`connection/{streams,spaces,paths,timer}`) and openraft its engine by
//! handler. A concern with state of its own has its own type beside its rules.
//!
//! | file | rules | own state |
//! |------|-------|-----------|
//! | `mod.rs` | the public API: inputs, local requests, outputs, accessors; dispatch of peer messages | [`Node`] |
//! | `batch.rs` | batching: an ordering message merged into the last one queued to the same peer | — |
//! | `ordering.rs` | send window, submission, the sequencer, commit and stable points, delivery in order | `Sequencer` |
//! | `clients.rs` | a multicast sent for a client, and dropping a copy a client sent again | `ClientsSeen` |
//! | `groups.rs` | the group table: applying a delivered entry, membership events, session queues, the merge of tables at a view change | — |
//! | `failure.rs` | incarnations, heartbeats, liveness, the connectivity matrix, the view this node wants | `Peer` |
//! | `view_change.rs` | when to change, freeze, propose/accept, the cut of each old view, install | `Frozen`, `Accepted`, `Proposal` |
//! | `peer_set.rs` | changing the configured peers of a running node (a reloaded configuration) | — |
//! | `planted.rs` | planted protocol bugs for the simulator's checkers (feature `testing` only) | `PlantedBugs` |

use crate::config::CoreConfig;
use crate::error::GcsError;
use crate::event::{DisconnectReason, Event, MembershipReason, Output, ViewChange};
use crate::types::{
    ClientMsgId, GroupName, Incarnation, Member, NodeId, NodeRef, Service, SessionId, Stamp, ViewId,
};
use crate::wire::{
    Accept, AcceptData, AcceptGroups, Ack, Cut, Entry, FlushReport, GroupRecord, Heartbeat,
    Install, InstallData, InstallGroups, Op, OpKind, Ordered, PeerMessage, Propose, Reject, Submit,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// Whether planted bug `$bug` (a field of [`PlantedBugs`]) is on in node `$node`. Without
/// the `testing` feature there are no planted bugs: `Node` holds none and this is `false`.
#[cfg(any(test, feature = "testing"))]
macro_rules! planted {
    ($node:expr, $bug:ident) => {
        $node.bugs.$bug
    };
}
#[cfg(not(any(test, feature = "testing")))]
macro_rules! planted {
    ($node:expr, $bug:ident) => {
        false
    };
}

mod batch;
mod clients;
mod failure;
mod groups;
mod ordering;
mod peer_set;
#[cfg(any(test, feature = "testing"))]
mod planted;
mod view_change;

pub(crate) use clients::ClientsSeen;
use failure::Peer;
use ordering::{AckHold, Acks, OwedAck, Sequencer};
#[cfg(any(test, feature = "testing"))]
pub use planted::PlantedBugs;
use view_change::{Accepted, Frozen, Proposal};

/// An open local session.
#[derive(Debug, Default)]
struct Session {
    /// Events delivered but not yet marked read.
    unread: usize,
}

/// The protocol core of one node. Feed it inputs (`handle_*` and the local requests),
/// then drain [`Node::poll_output`] and call [`Node::handle_timeout`] at
/// [`Node::poll_timeout`].
#[derive(Debug)]
pub struct Node {
    config: CoreConfig,
    me: NodeRef,
    peers: BTreeMap<NodeId, Peer>,
    /// Protocol bugs planted by the simulator's tests (feature `testing` only).
    #[cfg(any(test, feature = "testing"))]
    bugs: PlantedBugs,

    // --- the current view ---
    view: ViewId,
    members: Vec<NodeRef>,
    installed_at: Instant,
    /// Entries of the current view this node holds (delivered ones until stable).
    held: BTreeMap<u64, Entry>,
    /// Every entry up to this one has been received.
    held_max: u64,
    delivered: u64,
    commit: u64,
    stable: u64,
    /// What each member of the view acknowledged (held and delivered points).
    acks: Acks,
    /// The `Ack` this node owes the members (sent when the turn's outputs are drained,
    /// or later if no member waits for it).
    owed_ack: OwedAck,
    /// Every member of the view has delivered every entry up to this one (from their
    /// `Ack`s): client messages up to here may be confirmed.
    delivered_all: u64,
    /// The delivered point this node last reported in an `Ack` (or, on the sequencer,
    /// recorded as its own).
    delivered_told: u64,
    /// Sequence number of the last client message delivered in this view: a member
    /// reports its delivered point, and the sequencer the lowest one, only when a
    /// client message waits for it (a group without clients sends nothing more).
    last_client_seq: u64,
    /// A gap in the sequencer's stream (or a submitter's) was seen: this view must change.
    broken: bool,
    seqr: Option<Sequencer>,
    /// Digest and count of the operations delivered in the current view.
    digest: u64,
    delivered_count: u64,

    // --- view change ---
    frozen: Option<Frozen>,
    accepted: Option<Accepted>,
    proposal: Option<Proposal>,
    /// Highest view or proposal id this node installed or accepted.
    highest: ViewId,
    max_counter: u64,
    /// Since when this node has wanted a different view.
    change_since: Option<Instant>,
    /// When this node will propose the view it wants, if nothing else happens first.
    change_deadline: Option<Instant>,
    /// Nodes that did not answer a proposal: left out of proposals until then.
    suspects: BTreeMap<NodeRef, Instant>,

    // --- local sessions and their operations ---
    sessions: BTreeMap<SessionId, Session>,
    next_session: u64,
    /// This node's operations not yet delivered back to it, in counter order.
    pending: VecDeque<Op>,
    /// Payload bytes of the multicasts in `pending` (the send window in bytes).
    pending_bytes: usize,
    next_op: u64,
    /// Counter of the last op submitted in the current view.
    sent_upto: u64,
    /// Counter of the first op submitted in the current view.
    submit_base: Option<u64>,
    /// Replicated group table: members of each group in join-stamp order.
    groups: BTreeMap<GroupName, Vec<GroupRecord>>,
    /// Acknowledgement held back while a local session lags (flow control to the
    /// slowest reader, see `ordering.rs`).
    ack_hold: AckHold,
    /// The latest time given as input (for the local requests that carry none).
    clock: Instant,

    next_heartbeat: Instant,
    /// Up to when this node's own lateness has been accounted for (see
    /// [`Node::catch_up`]).
    caught_up: Instant,
    /// After a stall, no view change is started before this (see [`Node::catch_up`]).
    hold_until: Instant,
    outputs: VecDeque<Output>,
    /// Outputs taken by [`Node::poll_output`] so far (positions in `outputs` are counted
    /// from here).
    popped: u64,
    /// Position of the last [`Output::Send`] queued to each peer, where the next
    /// ordering message to it may be merged (see `batch.rs`).
    last_send: BTreeMap<NodeId, u64>,
    /// Local multicasts were taken since the last [`Node::pump`]: the next
    /// [`Node::poll_output`] submits them, all at once.
    pump_due: bool,
    /// Ordering messages of the view this node accepted but has not installed yet (the
    /// sequencer may install it before the coordinator's `Install` reaches us over another
    /// link); replayed after the install. Bounded by `max_unstable`.
    early: Vec<(NodeRef, PeerMessage)>,
    /// The highest counter of each client incarnation whose message this node has
    /// delivered (see `clients.rs`): a copy a client sent again is not delivered twice.
    clients_seen: ClientsSeen,
    /// Client messages of this node delivered here and not yet confirmed to their
    /// client (see `clients.rs`): view, sequence number, session, id.
    to_confirm: VecDeque<(ViewId, u64, SessionId, ClientMsgId)>,
    /// The client messages delivered here in each view not yet taken by the simulator
    /// (feature `testing` only; see [`Node::take_client_deliveries`]).
    #[cfg(any(test, feature = "testing"))]
    client_log: BTreeMap<ViewId, BTreeSet<ClientMsgId>>,
}

/// FNV-1a, for the virtual-synchrony digest (deterministic, no std hasher state).
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Application bytes of an op (what the ordering window's bytes count).
fn payload_len(op: &Op) -> usize {
    match &op.kind {
        OpKind::Message { payload, .. } => payload.len(),
        _ => 0,
    }
}

/// What a message of `payload` bytes counts against the send windows' bytes: its payload
/// plus [`MESSAGE_CHARGE`].
fn window_charge(payload: usize) -> usize {
    payload.saturating_add(MESSAGE_CHARGE)
}

/// What an op counts against the send windows' bytes (joins, leaves and closes nothing:
/// they are held back by count only, at twice the window).
fn op_window_charge(op: &Op) -> usize {
    match &op.kind {
        OpKind::Message { payload, .. } => window_charge(payload.len()),
        _ => 0,
    }
}

/// The bytes a message counts against the send windows beyond its payload: what a
/// message costs the group apart from its bytes, in bytes. Measured on loopback (3
/// members, TLS, December 2026) a message took about 9.5 µs plus 7 ns a byte to order
/// and deliver (100 B 9 µs, 1 KiB 17 µs, 16 KiB 125 µs): the fixed part is the cost of
/// 1,350 bytes. Charging it makes a window in bytes a window in time, whatever the
/// message size: the default 192 KiB per member at three members holds 96 messages of
/// 1 KiB, 174 of 100 B, 11 of 16 KiB (PROTOCOL.md, "Flow control").
const MESSAGE_CHARGE: usize = 1024;

/// Rough wire size of an op, for chunking (payload plus a generous header allowance).
fn op_size(op: &Op) -> usize {
    match &op.kind {
        OpKind::Message {
            groups, payload, ..
        } => payload.len() + groups.iter().map(|g| g.0.len() + 8).sum::<usize>() + 64,
        OpKind::Join(g) | OpKind::Leave(g) => g.0.len() + 64,
        OpKind::Gone => 64,
    }
}

/// Rough wire size of a group record, for chunking: its three strings plus a generous
/// allowance for the numbers and length prefixes (bincode's varints take at most 10
/// bytes each; a record has eight of them).
fn record_size(r: &GroupRecord) -> usize {
    r.group.0.len() + r.stamp.view.coordinator.0.len() + r.member.node.0.len() + 96
}

/// Splits `items` into chunks whose summed size stays under `budget` (at least one each).
fn chunks<T>(items: Vec<T>, budget: usize, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut cur_size = 0;
    for item in items {
        let s = size(&item);
        if !cur.is_empty() && cur_size + s > budget {
            out.push(std::mem::take(&mut cur));
            cur_size = 0;
        }
        cur_size += s;
        cur.push(item);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

impl Node {
    /// A node named `me` in its `incarnation`, with the configured `peers` (itself may be
    /// listed; it is ignored). It starts alone in a view of its own, announced by an
    /// [`Output::ViewInstalled`].
    pub fn new(
        config: CoreConfig,
        me: NodeId,
        incarnation: Incarnation,
        peers: Vec<NodeId>,
        now: Instant,
    ) -> Self {
        let me = NodeRef {
            id: me,
            incarnation,
        };
        let peers = peers
            .into_iter()
            .filter(|p| *p != me.id)
            .map(|p| (p, Peer::default()))
            .collect();
        let view = ViewId {
            counter: 1,
            coordinator: me.id.clone(),
            incarnation,
        };
        let mut node = Node {
            config,
            me: me.clone(),
            peers,
            #[cfg(any(test, feature = "testing"))]
            bugs: PlantedBugs::default(),
            view: view.clone(),
            members: vec![me.clone()],
            installed_at: now,
            held: BTreeMap::new(),
            held_max: 0,
            delivered: 0,
            commit: 0,
            stable: 0,
            acks: Acks::default(),
            owed_ack: OwedAck::default(),
            delivered_all: 0,
            delivered_told: 0,
            last_client_seq: 0,
            broken: false,
            seqr: Some(Sequencer::new()),
            digest: FNV_START,
            delivered_count: 0,
            frozen: None,
            accepted: None,
            proposal: None,
            highest: view.clone(),
            max_counter: 1,
            change_since: None,
            change_deadline: None,
            suspects: BTreeMap::new(),
            sessions: BTreeMap::new(),
            next_session: 1,
            pending: VecDeque::new(),
            pending_bytes: 0,
            next_op: 1,
            sent_upto: 0,
            submit_base: None,
            groups: BTreeMap::new(),
            ack_hold: AckHold::default(),
            clock: now,
            next_heartbeat: now,
            caught_up: now,
            hold_until: now,
            outputs: VecDeque::new(),
            popped: 0,
            last_send: BTreeMap::new(),
            pump_due: false,
            early: Vec::new(),
            clients_seen: ClientsSeen::default(),
            to_confirm: VecDeque::new(),
            #[cfg(any(test, feature = "testing"))]
            client_log: BTreeMap::new(),
        };
        node.outputs.push_back(Output::ViewInstalled(ViewChange {
            view,
            members: vec![me],
            previous: None,
            delivered: 0,
            digest: FNV_START,
        }));
        node
    }

    // ------------------------------------------------------------------ inputs

    /// A message from peer `from` (the transport has checked the name against the peer's
    /// certificate). Messages from unknown nodes or other views are dropped, and so are
    /// those of an older incarnation than the one known while that one is alive (see
    /// `failure.rs` for why not "older incarnations forever").
    pub fn handle_message(&mut self, now: Instant, from: &NodeId, msg: PeerMessage) {
        self.catch_up(now);
        let Some(sender) = self.hear(now, from, msg.incarnation()) else {
            return;
        };
        let ordering = matches!(
            msg,
            PeerMessage::Submit(_) | PeerMessage::Ordered(_) | PeerMessage::Ack(_)
        );
        if ordering
            && self.accepted.as_ref().map(|a| &a.id) == msg.view()
            && (self.early.len() as u64) < self.config.max_unstable
        {
            self.early.push((sender, msg));
            return;
        }
        self.dispatch(now, sender, msg);
        self.pump();
    }

    fn dispatch(&mut self, now: Instant, sender: NodeRef, msg: PeerMessage) {
        let from = &sender.id.clone();
        match msg {
            PeerMessage::Heartbeat(m) => self.on_heartbeat(now, from, m),
            PeerMessage::Submit(m) => self.on_submit(sender, m),
            PeerMessage::Ordered(m) => self.on_ordered(&sender, m),
            PeerMessage::Ack(m) => self.on_ack(sender, m),
            PeerMessage::Propose(m) => {
                self.on_propose(now, sender, m);
                self.evaluate(now);
            }
            PeerMessage::AcceptData(m) => self.on_accept_data(sender, m),
            PeerMessage::AcceptGroups(m) => self.on_accept_groups(sender, m),
            PeerMessage::Accept(m) => {
                self.on_accept(now, sender, m);
                self.evaluate(now);
            }
            PeerMessage::Reject(m) => {
                self.on_reject(now, m);
                self.evaluate(now);
            }
            PeerMessage::InstallData(m) => self.on_install_data(&sender, m),
            PeerMessage::InstallGroups(m) => self.on_install_groups(&sender, m),
            PeerMessage::Install(m) => {
                self.on_install(now, &sender, m);
                self.evaluate(now);
            }
        }
    }

    /// The transport connected to `peer`.
    pub fn handle_link_up(&mut self, now: Instant, peer: &NodeId) {
        self.catch_up(now);
        if let Some(p) = self.peers.get_mut(peer) {
            p.link_down = false;
        }
        self.evaluate(now);
        self.pump();
    }

    /// The transport lost its connection to `peer`: it is dead to this node until heard
    /// from again, and what was on the link is lost, so a view with it must change (see
    /// [`Node::link_lost`]).
    pub fn handle_link_down(&mut self, now: Instant, peer: &NodeId) {
        self.catch_up(now);
        self.link_lost(peer);
        self.evaluate(now);
        self.pump();
    }

    /// Time passed; call at (or after) [`Node::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.catch_up(now);
        if now >= self.next_heartbeat {
            self.send_heartbeats(now);
            self.next_heartbeat = now + self.config.heartbeat_interval;
        }
        self.release_ack();
        self.evaluate(now);
        self.pump();
    }

    // ------------------------------------------------------------------ local requests

    /// Opens a local session.
    pub fn open_session(&mut self, _now: Instant) -> SessionId {
        let s = SessionId(self.next_session);
        self.next_session += 1;
        self.sessions.insert(s, Session::default());
        s
    }

    /// Closes a local session: it receives nothing more and leaves every group (the
    /// other members see reason `Disconnect`).
    pub fn close_session(&mut self, _now: Instant, session: SessionId) -> Result<(), GcsError> {
        if self.sessions.remove(&session).is_none() {
            return Err(GcsError::UnknownSession(session));
        }
        self.push_op(session, OpKind::Gone);
        self.pump();
        Ok(())
    }

    /// Session `session` joins `group`; every member (the joiner included) gets a
    /// `Join` membership event at the join's place in the total order.
    pub fn join(
        &mut self,
        _now: Instant,
        session: SessionId,
        group: GroupName,
    ) -> Result<(), GcsError> {
        self.request(session, OpKind::Join(group))
    }

    /// Session `session` leaves `group`; the remaining members get a `Leave` event.
    pub fn leave(
        &mut self,
        _now: Instant,
        session: SessionId,
        group: GroupName,
    ) -> Result<(), GcsError> {
        self.request(session, OpKind::Leave(group))
    }

    /// A join or leave of `session`: checked, queued and submitted.
    fn request(&mut self, session: SessionId, kind: OpKind) -> Result<(), GcsError> {
        self.check_request(session)?;
        self.push_op(session, kind);
        self.pump();
        Ok(())
    }

    /// Multicasts `payload` to every session that is a member of at least one of
    /// `groups` when the message takes its place in the order (the sender too, if it is
    /// one). Refuses payloads over `CoreConfig::max_message_size`. The message is
    /// submitted when the outputs are next drained ([`Node::poll_output`]), together with
    /// every other multicast taken meanwhile.
    pub fn multicast(
        &mut self,
        _now: Instant,
        session: SessionId,
        service: Service,
        groups: &[GroupName],
        payload: Vec<u8>,
    ) -> Result<(), GcsError> {
        self.multicast_op(session, service, groups, payload, None)
    }

    /// [`Node::multicast`], for a local session or (with `client`) a client's session
    /// hosted here.
    fn multicast_op(
        &mut self,
        session: SessionId,
        service: Service,
        groups: &[GroupName],
        payload: Vec<u8>,
        client: Option<ClientMsgId>,
    ) -> Result<(), GcsError> {
        if payload.len() > self.config.max_message_size {
            return Err(GcsError::MessageTooLarge {
                size: payload.len(),
                limit: self.config.max_message_size,
            });
        }
        if groups.is_empty() {
            return Err(GcsError::NoGroups);
        }
        self.check_request(session)?;
        self.check_window(payload.len())?;
        if !self.reader_keeps_up(session) {
            return Err(self.window_full());
        }
        let mut groups = groups.to_vec();
        groups.sort();
        groups.dedup();
        self.push_op(
            session,
            OpKind::Message {
                service,
                groups,
                payload: payload.into(),
                client,
            },
        );
        // Submitted when the outputs are drained, with the turn's other multicasts (one
        // `Submit`, or on the sequencer one `Ordered`, for all of them).
        self.pump_due = true;
        Ok(())
    }

    /// The application of `session` has taken `count` delivered events off its queue.
    /// An acknowledgement held back while it lagged goes out once no session lags (see
    /// [`Node::holding_ack`]): drain [`Node::poll_output`] after calling this.
    pub fn mark_read(&mut self, session: SessionId, count: usize) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.unread = s.unread.saturating_sub(count);
        }
        if self.ack_hold.owed {
            self.release_ack();
            self.pump();
        }
    }

    // ------------------------------------------------------------------ outputs

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        if self.pump_due {
            self.pump();
        }
        if !self.to_confirm.is_empty() {
            self.confirm_clients();
        }
        if self.outputs.is_empty() {
            // The turn's last frame to each member: what it acknowledges.
            self.send_owed_ack();
        }
        let out = self.outputs.pop_front();
        if out.is_some() {
            self.popped += 1;
        }
        if self.outputs.is_empty() {
            // The turn is over: nothing queued is left to merge into.
            self.last_send.clear();
        }
        out
    }

    /// When [`Node::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.next_heartbeat;
        if let Some(p) = &self.proposal {
            t = t.min(p.deadline);
        }
        if let Some(a) = &self.accepted {
            t = t.min(a.deadline);
        }
        if let (Some(d), None, None) = (self.change_deadline, &self.proposal, &self.accepted) {
            t = t.min(d);
        }
        if let Some(d) = self.ack_hold.deadline(self.config.flush_timeout) {
            t = t.min(d);
        }
        if let Some(d) = self.owed_ack.deadline(self.config.ack_delay) {
            t = t.min(d);
        }
        Some(t)
    }

    // ------------------------------------------------------------------ accessors

    /// This node's name.
    pub fn id(&self) -> &NodeId {
        &self.me.id
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.me.incarnation
    }

    /// The current view's id.
    pub fn view(&self) -> &ViewId {
        &self.view
    }

    /// The current view's members, sorted (the first is the sequencer).
    pub fn members(&self) -> &[NodeRef] {
        &self.members
    }

    /// Whether this node is between views (it accepted a proposal and awaits an install).
    pub fn is_changing_view(&self) -> bool {
        self.frozen.is_some()
    }

    /// Open local sessions.
    pub fn sessions(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.sessions.keys().copied()
    }

    /// The members of `group` as this node knows them (in join-stamp order).
    pub fn group_members(&self, group: &GroupName) -> Vec<Member> {
        self.groups
            .get(group)
            .map(|l| l.iter().map(|r| r.member.clone()).collect())
            .unwrap_or_default()
    }

    /// How many of this node's operations wait to be ordered.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// A one-line summary of the ordering state, for traces.
    pub fn summary(&self) -> String {
        let seqr = self
            .seqr
            .as_ref()
            .map(|q| format!(" seqr(next {} backlog {})", q.next_seq, q.backlog.len()));
        format!(
            "{} view {} held {} acks {:?} delivered {} commit {} stable {} pending {} sent_upto {} frozen {} broken {}{}",
            self.me,
            self.view,
            self.held_max,
            self.acks.held.values().collect::<Vec<_>>(),
            self.delivered,
            self.commit,
            self.stable,
            self.pending.len(),
            self.sent_upto,
            self.frozen.is_some(),
            self.broken,
            seqr.unwrap_or_default()
        )
    }

    fn send(&mut self, to: NodeId, msg: PeerMessage) {
        self.queue_send(to, msg);
    }

    fn send_to_members(&mut self, msg: PeerMessage) {
        let others: Vec<NodeId> = self
            .members
            .iter()
            .filter(|m| **m != self.me)
            .map(|m| m.id.clone())
            .collect();
        let Some((last, rest)) = others.split_last() else {
            return;
        };
        for to in rest {
            self.send(to.clone(), msg.clone());
        }
        self.send(last.clone(), msg);
    }
}

#[cfg(test)]
mod tests;
