//! [`Node`]: the sans-IO protocol core of one GCS node.
//!
//! It owns the node's view (membership of nodes), the replicated table of process-group
//! memberships, the ordering of operations by the view's sequencer, the flush at a view
//! change, and a heartbeat failure detector. It never touches a socket, a clock or a
//! random source: time comes in as `now`, messages go out as [`Output::Send`].
//!
//! ```text
//!  multicast/join/leave ─▶ pending ─Submit─▶ sequencer ─Ordered─▶ every member ─Ack─▶
//!  sequencer ─Commit─▶ every member: deliver entries ≤ commit, in seq order ─▶ sessions
//!
//!  view change: Propose ─▶ members freeze and Accept (with what they hold) ─▶
//!  coordinator computes each old view's cut ─InstallData + Install─▶ members deliver
//!  the cut, install the view, and submit again what was not ordered.
//! ```
//!
//! See `PROTOCOL.md` for why this is safe.

use crate::config::CoreConfig;
use crate::error::GcsError;
use crate::event::{DisconnectReason, Event, MembershipReason, Output, ViewChange};
use crate::types::{
    GroupName, Incarnation, Member, NodeId, NodeRef, Service, SessionId, Stamp, ViewId,
};
use crate::wire::{
    Accept, AcceptData, Ack, Commit, Cut, Entry, FlushReport, GroupRecord, Heartbeat, Install,
    InstallData, Op, OpKind, Ordered, PeerMessage, Propose, Reject, Submit,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

/// Test-only switches that plant protocol bugs, to show the simulator's checkers catch them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// Install new views without delivering the old view's cut (skips the flush).
    pub skip_flush: bool,
    /// Refuse an older incarnation forever once a newer one was heard (the rule before
    /// issue 16: the real node stays alone after its duplicate went away).
    pub refuse_older_incarnations: bool,
    /// Merge group lists by join stamp only (the rule before issue 16: a node that
    /// joined alone in a young view goes first after the heal).
    pub merge_by_stamp_only: bool,
}

/// What a peer looks like from here.
#[derive(Debug, Default)]
struct Peer {
    /// Latest incarnation heard from it.
    incarnation: Option<Incarnation>,
    /// When it was last heard from (any message).
    last_heard: Option<Instant>,
    /// The transport reported its link down (cleared by link-up or by hearing from it).
    link_down: bool,
    /// Its last reported list of live nodes (its row of the connectivity matrix).
    row: Vec<NodeRef>,
    /// The view it last said it was in, and when we heard that.
    view: Option<(ViewId, Instant)>,
}

/// An open local session.
#[derive(Debug, Default)]
struct Session {
    /// Events delivered but not yet marked read.
    unread: usize,
}

/// Sequencer state: present on the first member of the view while it is not frozen.
#[derive(Debug, Default)]
struct Sequencer {
    /// Next sequence number to give.
    next_seq: u64,
    /// Highest contiguous entry each member holds.
    acks: BTreeMap<NodeRef, u64>,
    /// Next op counter expected from each member (FIFO and gap check).
    expected: BTreeMap<NodeRef, u64>,
    /// Ops waiting for room in the window of unstable entries.
    backlog: VecDeque<(NodeRef, Op)>,
    /// Payload bytes of each ordered entry not yet stable, by sequence number.
    unstable: VecDeque<(u64, usize)>,
    /// Their sum (the window of unstable entries in bytes).
    unstable_bytes: usize,
    /// Last commit/stable sent to the members.
    sent: (u64, u64),
}

impl Sequencer {
    /// Drops the byte accounting of entries that became stable.
    fn forget_stable(&mut self, stable: u64) {
        while let Some((seq, bytes)) = self.unstable.front().copied() {
            if seq > stable {
                break;
            }
            self.unstable.pop_front();
            self.unstable_bytes = self.unstable_bytes.saturating_sub(bytes);
        }
    }

    /// The window of unstable entries has room for one more: fewer than `window`
    /// entries, and fewer than `window_bytes` bytes (or none at all, so one large message
    /// always goes).
    fn has_room(&self, stable: u64, window: u64, window_bytes: usize) -> bool {
        self.next_seq.saturating_sub(stable) <= window
            && (self.unstable.is_empty() || self.unstable_bytes < window_bytes)
    }
}

/// What this node froze of its view when it first accepted a proposal.
#[derive(Debug, Clone)]
struct Frozen {
    report: FlushReport,
    entries: Vec<Entry>,
}

/// A proposal of someone else that this node accepted and whose install it awaits.
#[derive(Debug)]
struct Accepted {
    id: ViewId,
    /// The proposed members: the install must name exactly these.
    members: Vec<NodeRef>,
    deadline: Instant,
    /// InstallData entries of this node's old view, by sequence number.
    data: BTreeMap<u64, Entry>,
}

/// A view change this node coordinates.
#[derive(Debug)]
struct Proposal {
    id: ViewId,
    members: Vec<NodeRef>,
    deadline: Instant,
    /// Entries received in AcceptData chunks, per member.
    data: BTreeMap<NodeRef, Vec<Entry>>,
    /// Complete answers, per member.
    reports: BTreeMap<NodeRef, (FlushReport, Vec<Entry>)>,
}

/// One member's flush answer, as the coordinator groups them by old view.
type Answer<'a> = (&'a NodeRef, &'a FlushReport, &'a Vec<Entry>);

/// The protocol core of one node. Feed it inputs (`handle_*` and the local requests),
/// then drain [`Node::poll_output`] and call [`Node::handle_timeout`] at
/// [`Node::poll_timeout`].
#[derive(Debug)]
pub struct Node {
    config: CoreConfig,
    me: NodeRef,
    peers: BTreeMap<NodeId, Peer>,
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

    next_heartbeat: Instant,
    /// Up to when this node's own lateness has been accounted for (see
    /// [`Node::catch_up`]).
    caught_up: Instant,
    /// After a stall, no view change is started before this (see [`Node::catch_up`]).
    hold_until: Instant,
    outputs: VecDeque<Output>,
    /// Ordering messages of the view this node accepted but has not installed yet (the
    /// sequencer may install it before the coordinator's `Install` reaches us over another
    /// link); replayed after the install. Bounded by `max_unstable`.
    early: Vec<(NodeRef, PeerMessage)>,
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

/// Application bytes of an op (what the byte windows count).
fn payload_len(op: &Op) -> usize {
    match &op.kind {
        OpKind::Message { payload, .. } => payload.len(),
        _ => 0,
    }
}

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
            bugs: PlantedBugs::default(),
            view: view.clone(),
            members: vec![me.clone()],
            installed_at: now,
            held: BTreeMap::new(),
            held_max: 0,
            delivered: 0,
            commit: 0,
            stable: 0,
            broken: false,
            seqr: Some(Sequencer {
                next_seq: 1,
                ..Sequencer::default()
            }),
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
            next_heartbeat: now,
            caught_up: now,
            hold_until: now,
            outputs: VecDeque::new(),
            early: Vec::new(),
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

    /// Plants protocol bugs (only for showing that the simulator's checkers catch them;
    /// exists only with the `testing` feature).
    #[cfg(any(test, feature = "testing"))]
    pub fn plant_bugs(&mut self, bugs: PlantedBugs) {
        self.bugs = bugs;
    }

    // ------------------------------------------------------------------ inputs

    /// A message from peer `from` (the transport has checked the name against the peer's
    /// certificate). Messages from unknown nodes or other views are dropped, and so are
    /// those of an older incarnation than the one known **while that one is alive**.
    ///
    /// Why not "older incarnations forever": two processes with one name (a duplicate,
    /// refused by the transport's admission rule, or a restart racing the old link) may
    /// both get frames through for a moment. If the newer one then goes away, the older
    /// one is the node; refusing it forever would leave it alone, its own master, for good
    /// (issue 16). Once the newer incarnation is dead to this node (link down, or not heard
    /// for `failure_timeout`), the older one is taken as a new incarnation: everything
    /// known of the newer one is void, and the older one merges like a healed partition.
    pub fn handle_message(&mut self, now: Instant, from: &NodeId, msg: PeerMessage) {
        self.catch_up(now);
        let inc = msg.incarnation();
        let newer_alive = match self.peers.get(from).and_then(|p| p.incarnation) {
            Some(known) if inc < known => self.alive(
                now,
                &NodeRef {
                    id: from.clone(),
                    incarnation: known,
                },
            ),
            _ => false,
        };
        let Some(peer) = self.peers.get_mut(from) else {
            return;
        };
        match peer.incarnation {
            Some(known) if inc < known && (newer_alive || self.bugs.refuse_older_incarnations) => {
                return
            }
            Some(known) if inc == known => {}
            _ => {
                // A new incarnation: what we knew of the old one is void.
                peer.incarnation = Some(inc);
                peer.row.clear();
                peer.view = None;
            }
        }
        peer.last_heard = Some(now);
        peer.link_down = false;
        let sender = NodeRef {
            id: from.clone(),
            incarnation: inc,
        };
        let ordering = matches!(
            msg,
            PeerMessage::Submit(_)
                | PeerMessage::Ordered(_)
                | PeerMessage::Ack(_)
                | PeerMessage::Commit(_)
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
            PeerMessage::Heartbeat(m) => {
                self.max_counter = self.max_counter.max(m.max_counter);
                if let Some(peer) = self.peers.get_mut(from) {
                    peer.row = m.alive;
                    peer.view = Some((m.view, now));
                }
                // Not evaluated here: the heartbeat tick does it (keeps large clusters cheap).
            }
            PeerMessage::Submit(m) => self.on_submit(sender, m),
            PeerMessage::Ordered(m) => self.on_ordered(&sender, m),
            PeerMessage::Ack(m) => self.on_ack(sender, m),
            PeerMessage::Commit(m) => self.on_commit(&sender, m),
            PeerMessage::Propose(m) => {
                self.on_propose(now, sender, m);
                self.evaluate(now);
            }
            PeerMessage::AcceptData(m) => self.on_accept_data(sender, m),
            PeerMessage::Accept(m) => {
                self.on_accept(now, sender, m);
                self.evaluate(now);
            }
            PeerMessage::Reject(m) => {
                self.on_reject(now, m);
                self.evaluate(now);
            }
            PeerMessage::InstallData(m) => self.on_install_data(&sender, m),
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
    /// from again.
    pub fn handle_link_down(&mut self, now: Instant, peer: &NodeId) {
        self.catch_up(now);
        if let Some(p) = self.peers.get_mut(peer) {
            p.link_down = true;
            p.row.clear();
        }
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
        self.check_request(session)?;
        self.push_op(session, OpKind::Join(group));
        self.pump();
        Ok(())
    }

    /// Session `session` leaves `group`; the remaining members get a `Leave` event.
    pub fn leave(
        &mut self,
        _now: Instant,
        session: SessionId,
        group: GroupName,
    ) -> Result<(), GcsError> {
        self.check_request(session)?;
        self.push_op(session, OpKind::Leave(group));
        self.pump();
        Ok(())
    }

    /// Multicasts `payload` to every session that is a member of at least one of
    /// `groups` when the message takes its place in the order (the sender too, if it is
    /// one). Refuses payloads over `CoreConfig::max_message_size`.
    pub fn multicast(
        &mut self,
        _now: Instant,
        session: SessionId,
        service: Service,
        groups: &[GroupName],
        payload: Vec<u8>,
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
        let mut groups = groups.to_vec();
        groups.sort();
        groups.dedup();
        self.push_op(
            session,
            OpKind::Message {
                service,
                groups,
                payload,
            },
        );
        self.pump();
        Ok(())
    }

    /// The application of `session` has taken `count` delivered events off its queue.
    pub fn mark_read(&mut self, session: SessionId, count: usize) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.unread = s.unread.saturating_sub(count);
        }
    }

    // ------------------------------------------------------------------ outputs

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
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
        let seqr = self.seqr.as_ref().map(|q| {
            format!(
                " seqr(next {} acks {:?} backlog {})",
                q.next_seq,
                q.acks.values().collect::<Vec<_>>(),
                q.backlog.len()
            )
        });
        format!(
            "{} view {} held {} delivered {} commit {} stable {} pending {} sent_upto {} frozen {} broken {}{}",
            self.me,
            self.view,
            self.held_max,
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

    // ------------------------------------------------------------------ local ops

    /// A join or leave of `session` may go: the session is open, and fewer than twice
    /// the send window of ops are on their way (joins and leaves are rare and small;
    /// they are held back only so a runaway caller cannot grow `pending` without bound).
    fn check_request(&self, session: SessionId) -> Result<(), GcsError> {
        if !self.sessions.contains_key(&session) {
            return Err(GcsError::UnknownSession(session));
        }
        if self.pending.len() >= self.config.max_pending.saturating_mul(2) {
            return Err(self.window_full());
        }
        Ok(())
    }

    /// A multicast of `size` payload bytes fits in the send window (see
    /// `CoreConfig::max_pending` and `max_pending_bytes`; one message always fits).
    fn check_window(&self, size: usize) -> Result<(), GcsError> {
        let (limit, limit_bytes) = self.window();
        let over_count = self.pending.len() >= limit;
        let over_bytes =
            !self.pending.is_empty() && self.pending_bytes.saturating_add(size) > limit_bytes;
        if over_count || over_bytes {
            return Err(self.window_full());
        }
        Ok(())
    }

    /// This node's send window in messages and bytes: its share of the group's window
    /// in the current view, at most its own limits.
    fn window(&self) -> (usize, usize) {
        let n = self.members.len().max(1);
        let c = &self.config;
        (
            c.max_pending.min(c.group_window / n).max(1),
            c.max_pending_bytes.min(c.group_window_bytes / n).max(1),
        )
    }

    fn window_full(&self) -> GcsError {
        let (limit, limit_bytes) = self.window();
        GcsError::Backpressure {
            pending: self.pending.len(),
            pending_bytes: self.pending_bytes,
            limit,
            limit_bytes,
        }
    }

    /// Whether a multicast of `size` payload bytes would be taken now (the driver asks
    /// before handing over a payload it would otherwise have to copy).
    pub fn window_has_room(&self, size: usize) -> bool {
        self.check_window(size).is_ok()
    }

    fn push_op(&mut self, session: SessionId, kind: OpKind) {
        let op = Op {
            counter: self.next_op,
            session,
            kind,
        };
        self.next_op += 1;
        self.pending_bytes += payload_len(&op);
        self.pending.push_back(op);
    }

    /// Submits every pending op not yet submitted in this view, until nothing new comes
    /// up (a delivery may disconnect a session, which makes a new op).
    fn pump(&mut self) {
        loop {
            if self.frozen.is_some() || self.broken {
                return;
            }
            // `pending` is in counter order: skip what was already submitted in this view.
            let from = self
                .pending
                .partition_point(|op| op.counter <= self.sent_upto);
            let ops: Vec<Op> = self.pending.range(from..).cloned().collect();
            let Some(last) = ops.last() else {
                return;
            };
            self.sent_upto = last.counter;
            let base = *self.submit_base.get_or_insert(ops[0].counter);
            if self.seqr.is_some() {
                let me = self.me.clone();
                self.seq_accept(me, base, ops);
            } else {
                let to = self.members[0].id.clone();
                for chunk in chunks(ops, self.config.max_message_size, op_size) {
                    self.send(
                        to.clone(),
                        PeerMessage::Submit(Submit {
                            incarnation: self.me.incarnation,
                            view: self.view.clone(),
                            base,
                            ops: chunk,
                        }),
                    );
                }
            }
        }
    }

    fn send(&mut self, to: NodeId, msg: PeerMessage) {
        self.outputs.push_back(Output::Send { to, msg });
    }

    fn send_to_members(&mut self, msg: PeerMessage) {
        let others: Vec<NodeId> = self
            .members
            .iter()
            .filter(|m| **m != self.me)
            .map(|m| m.id.clone())
            .collect();
        for to in others {
            self.send(to, msg.clone());
        }
    }

    // ------------------------------------------------------------------ ordering

    fn is_member(&self, who: &NodeRef) -> bool {
        self.members.contains(who)
    }

    /// Sequencer: takes ops of `origin` (FIFO, gap-checked) and orders what fits.
    fn seq_accept(&mut self, origin: NodeRef, base: u64, ops: Vec<Op>) {
        let cap = self
            .config
            .max_pending
            .saturating_mul(2)
            .saturating_mul(self.members.len());
        let Some(seqr) = self.seqr.as_mut() else {
            return;
        };
        if seqr.backlog.len() + ops.len() > cap {
            // More than every member may have pending: refuse, and change the view (the
            // submitters will submit again there).
            self.broken = true;
            return;
        }
        let expected = seqr.expected.entry(origin.clone()).or_insert(base);
        for op in ops {
            if op.counter < *expected {
                continue;
            }
            if op.counter > *expected {
                // A submission was lost: this origin's FIFO order cannot be kept here.
                self.broken = true;
                return;
            }
            *expected += 1;
            seqr.backlog.push_back((origin.clone(), op));
        }
        self.seq_order();
    }

    /// Sequencer: gives sequence numbers to backlog ops while the window has room.
    fn seq_order(&mut self) {
        let window = self.config.max_unstable;
        let window_bytes = self.config.max_unstable_bytes;
        let stable = self.stable;
        let Some(seqr) = self.seqr.as_mut() else {
            return;
        };
        seqr.forget_stable(stable);
        let mut batch = Vec::new();
        while seqr.has_room(stable, window, window_bytes) {
            let Some((origin, op)) = seqr.backlog.pop_front() else {
                break;
            };
            let bytes = payload_len(&op);
            seqr.unstable.push_back((seqr.next_seq, bytes));
            seqr.unstable_bytes += bytes;
            batch.push(Entry {
                seq: seqr.next_seq,
                origin,
                op,
            });
            seqr.next_seq += 1;
        }
        if batch.is_empty() {
            return;
        }
        for chunk in chunks(batch.clone(), self.config.max_message_size, |e| {
            op_size(&e.op)
        }) {
            self.send_to_members(PeerMessage::Ordered(Ordered {
                incarnation: self.me.incarnation,
                view: self.view.clone(),
                entries: chunk,
            }));
        }
        for e in batch {
            self.held_max = e.seq;
            self.held.insert(e.seq, e);
        }
        let me = self.me.clone();
        let held = self.held_max;
        if let Some(seqr) = self.seqr.as_mut() {
            seqr.acks.insert(me, held);
        }
        self.seq_advance();
    }

    /// Sequencer: advances commit and stable points and tells the members.
    fn seq_advance(&mut self) {
        let Some(seqr) = self.seqr.as_ref() else {
            return;
        };
        let mut commit = self.commit;
        while let Some(e) = self.held.get(&(commit + 1)) {
            if seqr.acks.get(&e.origin).copied().unwrap_or(0) >= e.seq {
                commit += 1;
            } else {
                break;
            }
        }
        let stable = self
            .members
            .iter()
            .map(|m| seqr.acks.get(m).copied().unwrap_or(0))
            .min()
            .unwrap_or(0);
        let sent = seqr.sent;
        self.commit = commit;
        self.stable = self.stable.max(stable);
        if (commit, self.stable) != sent {
            if let Some(seqr) = self.seqr.as_mut() {
                seqr.sent = (commit, self.stable);
            }
            self.send_to_members(PeerMessage::Commit(Commit {
                incarnation: self.me.incarnation,
                view: self.view.clone(),
                commit,
                stable: self.stable,
            }));
        }
        self.deliver_committed();
        // Room may have opened in the window.
        let stable = self.stable;
        let (window, window_bytes) = (self.config.max_unstable, self.config.max_unstable_bytes);
        if let Some(s) = self.seqr.as_mut() {
            s.forget_stable(stable);
        }
        if self
            .seqr
            .as_ref()
            .is_some_and(|s| !s.backlog.is_empty() && s.has_room(stable, window, window_bytes))
        {
            self.seq_order();
        }
    }

    fn on_submit(&mut self, from: NodeRef, m: Submit) {
        if m.view != self.view || self.seqr.is_none() || !self.is_member(&from) {
            return;
        }
        self.seq_accept(from, m.base, m.ops);
    }

    fn on_ordered(&mut self, from: &NodeRef, m: Ordered) {
        if m.view != self.view || self.frozen.is_some() || self.members[0] != *from {
            return;
        }
        for e in m.entries {
            if e.seq <= self.held_max {
                continue;
            }
            if e.seq != self.held_max + 1 {
                self.broken = true;
                break;
            }
            self.held_max = e.seq;
            self.held.insert(e.seq, e);
        }
        self.send(
            from.id.clone(),
            PeerMessage::Ack(Ack {
                incarnation: self.me.incarnation,
                view: self.view.clone(),
                held: self.held_max,
            }),
        );
        self.deliver_committed();
    }

    fn on_ack(&mut self, from: NodeRef, m: Ack) {
        if m.view != self.view || !self.is_member(&from) {
            return;
        }
        let Some(seqr) = self.seqr.as_mut() else {
            return;
        };
        let a = seqr.acks.entry(from).or_insert(0);
        *a = (*a).max(m.held);
        self.seq_advance();
    }

    fn on_commit(&mut self, from: &NodeRef, m: Commit) {
        if m.view != self.view || self.frozen.is_some() || self.members[0] != *from {
            return;
        }
        self.commit = self.commit.max(m.commit);
        self.stable = self.stable.max(m.stable);
        self.deliver_committed();
    }

    /// Delivers held entries up to the commit point, then forgets stable delivered ones.
    fn deliver_committed(&mut self) {
        if self.frozen.is_some() {
            return;
        }
        let upto = self.commit.min(self.held_max);
        while self.delivered < upto {
            let Some(e) = self.held.get(&(self.delivered + 1)).cloned() else {
                self.broken = true;
                return;
            };
            self.delivered = e.seq;
            let view = self.view.clone();
            self.apply(&view, &e);
        }
        let forget = self.stable.min(self.delivered);
        if self
            .held
            .first_key_value()
            .is_some_and(|(k, _)| *k <= forget)
        {
            self.held = self.held.split_off(&(forget + 1));
        }
    }

    /// Delivers one ordered entry of view `view`: updates the group table and hands
    /// events to local sessions.
    fn apply(&mut self, view: &ViewId, e: &Entry) {
        let mut h = fnv(self.digest, e.origin.id.0.as_bytes());
        h = fnv(h, &e.origin.incarnation.0.to_le_bytes());
        h = fnv(h, &e.op.counter.to_le_bytes());
        self.digest = fnv(h, &e.seq.to_le_bytes());
        self.delivered_count += 1;
        if e.origin == self.me {
            if self
                .pending
                .front()
                .is_some_and(|p| p.counter == e.op.counter)
            {
                self.pending.pop_front();
                self.pending_bytes = self.pending_bytes.saturating_sub(payload_len(&e.op));
            } else if let Some(i) = self.pending.iter().position(|p| p.counter == e.op.counter) {
                self.pending.remove(i);
                self.pending_bytes = self.pending_bytes.saturating_sub(payload_len(&e.op));
            }
        }
        let member = Member {
            node: e.origin.id.clone(),
            incarnation: e.origin.incarnation,
            session: e.op.session,
        };
        let at = Stamp {
            view: view.clone(),
            seq: e.seq,
        };
        match &e.op.kind {
            OpKind::Message {
                service,
                groups,
                payload,
            } => {
                let mut targets = BTreeSet::new();
                for g in groups {
                    if let Some(list) = self.groups.get(g) {
                        for r in list {
                            if r.member.node == self.me.id
                                && r.member.incarnation == self.me.incarnation
                            {
                                targets.insert(r.member.session);
                            }
                        }
                    }
                }
                for s in targets {
                    self.deliver(
                        s,
                        Event::Message {
                            sender: (e.origin.id.clone(), e.op.session),
                            service: *service,
                            groups: groups.clone(),
                            payload: payload.clone(),
                        },
                    );
                }
            }
            OpKind::Join(g) => {
                let list = self.groups.entry(g.clone()).or_default();
                if list.iter().any(|r| r.member == member) {
                    return;
                }
                list.push(GroupRecord {
                    group: g.clone(),
                    stamp: at.clone(),
                    member,
                    alone: self.members.len() == 1,
                });
                list.sort_by(|a, b| a.stamp.cmp(&b.stamp).then(a.member.cmp(&b.member)));
                self.announce(g, MembershipReason::Join, at);
            }
            OpKind::Leave(g) => {
                let Some(list) = self.groups.get_mut(g) else {
                    return;
                };
                let before = list.len();
                list.retain(|r| r.member != member);
                if list.len() == before {
                    return;
                }
                if list.is_empty() {
                    self.groups.remove(g);
                }
                self.announce(g, MembershipReason::Leave, at.clone());
                // The leaver learns it is out too (the list without it), like Spread's
                // self-leave notification.
                if member.node == self.me.id && member.incarnation == self.me.incarnation {
                    let members = self.group_members(g);
                    self.deliver(
                        member.session,
                        Event::Membership {
                            group: g.clone(),
                            view: at.view.clone(),
                            members,
                            reason: MembershipReason::Leave,
                            at,
                        },
                    );
                }
            }
            OpKind::Gone => {
                let mut changed = Vec::new();
                for (g, list) in self.groups.iter_mut() {
                    let before = list.len();
                    list.retain(|r| r.member != member);
                    if list.len() != before {
                        changed.push(g.clone());
                    }
                }
                self.groups.retain(|_, l| !l.is_empty());
                for g in changed {
                    self.announce(&g, MembershipReason::Disconnect, at.clone());
                }
            }
        }
    }

    /// Tells every local member of `group` its new member list.
    fn announce(&mut self, group: &GroupName, reason: MembershipReason, at: Stamp) {
        let list = self.groups.get(group).cloned().unwrap_or_default();
        let members: Vec<Member> = list.iter().map(|r| r.member.clone()).collect();
        let locals: Vec<SessionId> = members
            .iter()
            .filter(|m| m.node == self.me.id && m.incarnation == self.me.incarnation)
            .map(|m| m.session)
            .collect();
        for s in locals {
            self.deliver(
                s,
                Event::Membership {
                    group: group.clone(),
                    view: at.view.clone(),
                    members: members.clone(),
                    reason,
                    at: at.clone(),
                },
            );
        }
    }

    /// Hands `event` to an open local session, disconnecting it past its queue limit.
    fn deliver(&mut self, session: SessionId, event: Event) {
        let limit = self.config.session_queue_limit;
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        s.unread += 1;
        self.outputs.push_back(Output::Deliver { session, event });
        if s.unread > limit {
            self.sessions.remove(&session);
            self.outputs.push_back(Output::Deliver {
                session,
                event: Event::Disconnected {
                    reason: DisconnectReason::QueueOverflow { limit },
                },
            });
            self.push_op(session, OpKind::Gone);
        }
    }

    // ------------------------------------------------------------------ failure detector

    /// Time this node itself did not run does not count against its peers.
    ///
    /// The node asks to run again at its next heartbeat at the latest
    /// ([`Node::poll_timeout`]). If an input comes more than a heartbeat interval after
    /// that, the node was not running (its process was starved or stopped): it could not
    /// hear anyone, and their frames of that time are probably still queued behind this
    /// input. Judging liveness by the wall clock would make it report every peer dead in
    /// its next heartbeat (an empty row of the connectivity matrix, which makes every
    /// other node want a view without it) and want a view of itself alone. So the
    /// lateness is added to every peer's `last_heard`: the failure timeout counts the
    /// node's own running time. A peer that is really gone is still dropped, one
    /// failure timeout of running time later (every heartbeat tick counts at least one
    /// heartbeat interval), or at once by a link-down report.
    ///
    /// Its peers may meanwhile have stopped listing it (it was silent): their rows say so
    /// until they hear it again and send their next heartbeat. So after a stall the node
    /// starts no view change for two heartbeat intervals; without that it would propose
    /// a view of itself alone, and then merge again.
    fn catch_up(&mut self, now: Instant) {
        let due = self.next_heartbeat.max(self.caught_up);
        let late = now.saturating_duration_since(due);
        if late <= self.config.heartbeat_interval {
            return;
        }
        for p in self.peers.values_mut() {
            if let Some(t) = p.last_heard.as_mut() {
                *t = (*t + late).min(now);
            }
        }
        self.caught_up = now;
        self.hold_until = now + self.config.heartbeat_interval * 2;
    }

    fn alive(&self, now: Instant, who: &NodeRef) -> bool {
        if *who == self.me {
            return true;
        }
        let Some(p) = self.peers.get(&who.id) else {
            return false;
        };
        !p.link_down
            && p.incarnation == Some(who.incarnation)
            && p.last_heard
                .is_some_and(|t| now.saturating_duration_since(t) < self.config.failure_timeout)
    }

    fn alive_peers(&self, now: Instant) -> Vec<NodeRef> {
        self.peers
            .iter()
            .filter_map(|(id, p)| {
                let r = NodeRef {
                    id: id.clone(),
                    incarnation: p.incarnation?,
                };
                self.alive(now, &r).then_some(r)
            })
            .collect()
    }

    fn send_heartbeats(&mut self, now: Instant) {
        let now_alive = self.alive_peers(now);
        let hb = PeerMessage::Heartbeat(Heartbeat {
            incarnation: self.me.incarnation,
            view: self.view.clone(),
            alive: now_alive,
            max_counter: self.max_counter,
        });
        let to: Vec<NodeId> = self.peers.keys().cloned().collect();
        for p in to {
            self.send(p, hb.clone());
        }
    }

    /// One line per peer for a log: alive, link down, ms since heard, row size, suspected.
    fn peer_report(&self, now: Instant) -> String {
        let mut out = String::new();
        for (id, p) in &self.peers {
            let heard = p
                .last_heard
                .map(|t| now.saturating_duration_since(t).as_millis());
            let alive = p.incarnation.is_some_and(|i| {
                self.alive(
                    now,
                    &NodeRef {
                        id: id.clone(),
                        incarnation: i,
                    },
                )
            });
            let suspect = self.suspects.keys().any(|s| s.id == *id);
            out.push_str(&format!(
                "{id}(alive {alive} down {} heard {heard:?}ms row {} suspect {suspect}) ",
                p.link_down,
                p.row.len()
            ));
        }
        out
    }

    /// Does `x` see `y` (per the connectivity matrix as this node knows it)?
    fn sees(&self, now: Instant, x: &NodeRef, y: &NodeRef) -> bool {
        if *x == self.me {
            return self.alive(now, y);
        }
        self.peers.get(&x.id).is_some_and(|p| p.row.contains(y))
    }

    /// The view this node wants: itself plus, in name order, every live node that is
    /// mutually connected with all those already chosen (a clique of the matrix).
    fn candidate(&self, now: Instant) -> Vec<NodeRef> {
        let mut chosen = vec![self.me.clone()];
        for q in self.alive_peers(now) {
            if self.suspects.get(&q).is_some_and(|until| now < *until) {
                continue;
            }
            if chosen
                .iter()
                .all(|c| self.sees(now, c, &q) && self.sees(now, &q, c))
            {
                chosen.push(q);
            }
        }
        chosen.sort();
        chosen
    }

    /// A member of our view that keeps saying it is in another view never installed ours.
    fn member_elsewhere(&self) -> bool {
        self.members.iter().any(|m| {
            *m != self.me
                && self.peers.get(&m.id).is_some_and(|p| {
                    p.incarnation == Some(m.incarnation)
                        && p.view.as_ref().is_some_and(|(v, at)| {
                            *v != self.view
                                && *at >= self.installed_at + self.config.failure_timeout
                        })
                })
        })
    }

    // ------------------------------------------------------------------ view change

    /// Decides whether to (re)start a view change.
    fn evaluate(&mut self, now: Instant) {
        self.suspects.retain(|_, until| now < *until);
        if let Some(p) = &self.proposal {
            if now < p.deadline {
                return;
            }
            // Members that did not answer in time are left out of the next try.
            let silent: Vec<NodeRef> = p
                .members
                .iter()
                .filter(|m| !p.reports.contains_key(*m))
                .cloned()
                .collect();
            for m in silent {
                self.suspects
                    .insert(m, now + self.config.view_change_timeout);
            }
            self.proposal = None;
            let members = self.candidate(now);
            self.propose(now, members);
            return;
        }
        if let Some(a) = &self.accepted {
            if now < a.deadline {
                return;
            }
            self.accepted = None;
            self.early.clear();
        }
        if now < self.hold_until {
            self.change_deadline = Some(self.hold_until);
            return;
        }
        let desired = self.candidate(now);
        let need = self.frozen.is_some()
            || self.broken
            || desired != self.members
            || self.member_elsewhere();
        if !need {
            self.change_since = None;
            self.change_deadline = None;
            self.change_deadline = None;
            return;
        }
        let since = *self.change_since.get_or_insert(now);
        let designated = desired.first() == Some(&self.me);
        let wait = if designated || self.frozen.is_some() || self.broken {
            self.config.settle
        } else {
            self.config.view_change_timeout
        };
        if now >= since + wait {
            self.change_deadline = None;
            self.propose(now, desired);
        } else {
            self.change_deadline = Some(since + wait);
        }
    }

    /// Freezes this node's part of the current view: from now on it neither delivers nor
    /// acknowledges nor orders anything of it; the flush decides.
    fn freeze(&mut self) {
        if self.frozen.is_some() {
            return;
        }
        self.seqr = None;
        // Own memberships as they stand once our own held entries are delivered (all of
        // them are in any cut, see PROTOCOL.md).
        let mut own: Vec<GroupRecord> = self
            .groups
            .values()
            .flatten()
            .filter(|r| r.member.node == self.me.id && r.member.incarnation == self.me.incarnation)
            .cloned()
            .collect();
        for e in self.held.range(self.delivered + 1..).map(|(_, e)| e) {
            if e.origin != self.me {
                continue;
            }
            let member = Member {
                node: self.me.id.clone(),
                incarnation: self.me.incarnation,
                session: e.op.session,
            };
            match &e.op.kind {
                OpKind::Join(g) => {
                    if !own.iter().any(|r| r.group == *g && r.member == member) {
                        own.push(GroupRecord {
                            group: g.clone(),
                            stamp: Stamp {
                                view: self.view.clone(),
                                seq: e.seq,
                            },
                            member,
                            alone: self.members.len() == 1,
                        });
                    }
                }
                OpKind::Leave(g) => own.retain(|r| !(r.group == *g && r.member == member)),
                OpKind::Gone => own.retain(|r| r.member != member),
                OpKind::Message { .. } => {}
            }
        }
        let entries: Vec<Entry> = self.held.values().cloned().collect();
        self.frozen = Some(Frozen {
            report: FlushReport {
                old_view: self.view.clone(),
                delivered: self.delivered,
                commit: self.commit,
                groups: own,
                held_count: entries.len() as u64,
                max_counter: self.max_counter,
            },
            entries,
        });
    }

    fn propose(&mut self, now: Instant, members: Vec<NodeRef>) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!(
                node = %self.me,
                view = %self.view,
                proposed = members.len(),
                broken = self.broken,
                frozen = self.frozen.is_some(),
                peers = %self.peer_report(now),
                "proposing a view"
            );
        }
        let counter = self.max_counter.max(self.highest.counter) + 1;
        self.max_counter = counter;
        let id = ViewId {
            counter,
            coordinator: self.me.id.clone(),
            incarnation: self.me.incarnation,
        };
        self.freeze();
        self.highest = id.clone();
        self.accepted = None;
        self.change_since = None;
        self.change_deadline = None;
        let Some(frozen) = self.frozen.clone() else {
            return;
        };
        let mut reports = BTreeMap::new();
        reports.insert(self.me.clone(), (frozen.report, frozen.entries));
        self.proposal = Some(Proposal {
            id: id.clone(),
            members: members.clone(),
            deadline: now + self.config.flush_timeout,
            data: BTreeMap::new(),
            reports,
        });
        for m in &members {
            if *m != self.me {
                self.send(
                    m.id.clone(),
                    PeerMessage::Propose(Propose {
                        incarnation: self.me.incarnation,
                        proposal: id.clone(),
                        members: members.clone(),
                    }),
                );
            }
        }
        self.try_complete(now);
    }

    fn on_propose(&mut self, now: Instant, from: NodeRef, m: Propose) {
        self.max_counter = self.max_counter.max(m.proposal.counter);
        let acceptable = m.proposal > self.highest
            && m.proposal.coordinator == from.id
            && m.proposal.incarnation == from.incarnation
            && m.members.windows(2).all(|w| w[0] < w[1])
            && m.members.contains(&self.me)
            && m.members.contains(&from)
            && m.members.iter().all(|x| self.alive(now, x));
        if !acceptable {
            self.send(
                from.id.clone(),
                PeerMessage::Reject(Reject {
                    incarnation: self.me.incarnation,
                    proposal: m.proposal,
                    highest: self.highest.clone(),
                }),
            );
            return;
        }
        self.freeze();
        self.proposal = None;
        self.early.clear();
        self.highest = m.proposal.clone();
        self.accepted = Some(Accepted {
            id: m.proposal.clone(),
            members: m.members.clone(),
            deadline: now + self.config.flush_timeout * 2,
            data: BTreeMap::new(),
        });
        let Some(frozen) = self.frozen.clone() else {
            return;
        };
        for chunk in chunks(frozen.entries, self.config.max_message_size, |e| {
            op_size(&e.op)
        }) {
            self.send(
                from.id.clone(),
                PeerMessage::AcceptData(AcceptData {
                    incarnation: self.me.incarnation,
                    proposal: m.proposal.clone(),
                    entries: chunk,
                }),
            );
        }
        let mut report = frozen.report;
        report.max_counter = self.max_counter;
        self.send(
            from.id,
            PeerMessage::Accept(Accept {
                incarnation: self.me.incarnation,
                proposal: m.proposal,
                report,
            }),
        );
    }

    fn on_accept_data(&mut self, from: NodeRef, m: AcceptData) {
        if let Some(p) = self.proposal.as_mut() {
            if p.id == m.proposal && p.members.contains(&from) {
                let held = p.data.entry(from).or_default();
                // A member holds at most the unstable window (plus one chunk of slack).
                if (held.len() + m.entries.len()) as u64 <= self.config.max_unstable * 2 {
                    held.extend(m.entries);
                }
            }
        }
    }

    fn on_accept(&mut self, now: Instant, from: NodeRef, m: Accept) {
        self.max_counter = self.max_counter.max(m.report.max_counter);
        let Some(p) = self.proposal.as_mut() else {
            return;
        };
        if p.id != m.proposal || !p.members.contains(&from) {
            return;
        }
        let entries = p.data.remove(&from).unwrap_or_default();
        if entries.len() as u64 != m.report.held_count {
            return; // a chunk was lost; the proposal will time out
        }
        p.reports.insert(from, (m.report, entries));
        self.try_complete(now);
    }

    fn on_reject(&mut self, now: Instant, m: Reject) {
        self.max_counter = self.max_counter.max(m.highest.counter);
        if self.proposal.as_ref().is_some_and(|p| p.id == m.proposal) {
            self.proposal = None;
            self.change_since = Some(now);
        }
    }

    /// Coordinator: once every member answered, computes the cuts and installs.
    fn try_complete(&mut self, now: Instant) {
        let Some(p) = &self.proposal else {
            return;
        };
        if p.reports.len() != p.members.len() {
            return;
        }
        let Some(p) = self.proposal.take() else {
            return;
        };
        // Group the answers by the old view each member leaves.
        let mut by_old: BTreeMap<ViewId, Vec<Answer<'_>>> = BTreeMap::new();
        for (who, (r, es)) in &p.reports {
            by_old
                .entry(r.old_view.clone())
                .or_default()
                .push((who, r, es));
        }
        let mut cuts = Vec::new();
        let mut data: Vec<(ViewId, Vec<Entry>)> = Vec::new();
        for (old, survivors) in &by_old {
            let commit = survivors.iter().map(|s| s.1.commit).max().unwrap_or(0);
            let above = survivors.iter().map(|s| s.1.delivered).min().unwrap_or(0);
            let mut union: BTreeMap<u64, &Entry> = BTreeMap::new();
            for (who, _, es) in survivors {
                for e in es.iter() {
                    union.entry(e.seq).or_insert(e);
                    // An entry whose origin survives and holds it is in the cut.
                    let _ = who;
                }
            }
            let holds_own = |e: &Entry| {
                survivors
                    .iter()
                    .any(|(who, _, es)| **who == e.origin && es.iter().any(|x| x.seq == e.seq))
            };
            let chosen: Vec<Entry> = union
                .range(above + 1..)
                .filter(|(seq, e)| **seq <= commit || holds_own(e))
                .map(|(_, e)| (*e).clone())
                .collect();
            cuts.push(Cut {
                old_view: old.clone(),
                above,
                seqs: chosen.iter().map(|e| e.seq).collect(),
            });
            data.push((old.clone(), chosen));
        }
        // Merge rule: a record joined in a view of one node (a node that started or ran
        // cut off) is stamped anew at the start of this view once it has several members,
        // so it comes after every record the others bring: a node that joined alone never
        // deposes a running master (issue 16). See `PROTOCOL.md`.
        let several = p.members.len() > 1;
        let rejoin = Stamp {
            view: p.id.clone(),
            seq: 0,
        };
        let mut groups: Vec<GroupRecord> = p
            .reports
            .values()
            .flat_map(|(r, _)| r.groups.iter().cloned())
            .map(|mut g| {
                if g.alone && several && !self.bugs.merge_by_stamp_only {
                    g.stamp = rejoin.clone();
                    g.alone = false;
                }
                g
            })
            .collect();
        groups.sort();
        groups.dedup();
        let install = Install {
            incarnation: self.me.incarnation,
            view: p.id.clone(),
            members: p.members.clone(),
            cuts,
            groups,
        };
        for m in &p.members {
            if *m == self.me {
                continue;
            }
            let Some((r, _)) = p.reports.get(m) else {
                continue;
            };
            if let Some((old, es)) = data.iter().find(|(o, _)| *o == r.old_view) {
                let mine: Vec<Entry> = es.iter().filter(|e| e.seq > r.delivered).cloned().collect();
                for chunk in chunks(mine, self.config.max_message_size, |e| op_size(&e.op)) {
                    self.send(
                        m.id.clone(),
                        PeerMessage::InstallData(InstallData {
                            incarnation: self.me.incarnation,
                            view: p.id.clone(),
                            old_view: old.clone(),
                            entries: chunk,
                        }),
                    );
                }
            }
            self.send(m.id.clone(), PeerMessage::Install(install.clone()));
        }
        let my_old = self.view.clone();
        let mine = data
            .into_iter()
            .find(|(o, _)| *o == my_old)
            .map(|(_, es)| es)
            .unwrap_or_default();
        self.install(now, install, mine);
    }

    fn on_install_data(&mut self, from: &NodeRef, m: InstallData) {
        if m.view.coordinator != from.id || m.old_view != self.view {
            return;
        }
        if let Some(a) = self.accepted.as_mut() {
            if a.id == m.view
                && (a.data.len() + m.entries.len()) as u64 <= self.config.max_unstable * 2
            {
                for e in m.entries {
                    a.data.insert(e.seq, e);
                }
            }
        }
    }

    fn on_install(&mut self, now: Instant, from: &NodeRef, m: Install) {
        if m.view.coordinator != from.id || m.view.incarnation != from.incarnation {
            return;
        }
        let Some(a) = self.accepted.take() else {
            return;
        };
        if a.id != m.view || a.members != m.members || self.frozen.is_none() {
            self.accepted = Some(a);
            return;
        }
        let Some(cut) = m.cuts.iter().find(|c| c.old_view == self.view) else {
            self.accepted = Some(a);
            return;
        };
        let mut entries = Vec::new();
        for seq in cut.seqs.iter().filter(|s| **s > self.delivered) {
            match a.data.get(seq).or_else(|| self.held.get(seq)) {
                Some(e) => entries.push(e.clone()),
                None => {
                    // A chunk was lost: we cannot deliver this cut; wait for another view.
                    self.accepted = Some(a);
                    return;
                }
            }
        }
        self.install(now, m, entries);
    }

    /// Delivers the old view's cut, then installs the new view.
    fn install(&mut self, now: Instant, m: Install, cut: Vec<Entry>) {
        let old = self.view.clone();
        if !self.bugs.skip_flush {
            for e in cut {
                if e.seq > self.delivered {
                    self.delivered = e.seq;
                    self.apply(&old, &e);
                }
            }
        }
        let change = ViewChange {
            view: m.view.clone(),
            members: m.members.clone(),
            previous: Some(old),
            delivered: self.delivered_count,
            digest: self.digest,
        };
        self.view = m.view.clone();
        self.members = m.members;
        self.installed_at = now;
        self.highest = self.highest.clone().max(m.view.clone());
        self.max_counter = self.max_counter.max(m.view.counter);
        self.held.clear();
        self.held_max = 0;
        self.delivered = 0;
        self.commit = 0;
        self.stable = 0;
        self.broken = false;
        self.digest = FNV_START;
        self.delivered_count = 0;
        self.frozen = None;
        self.accepted = None;
        self.proposal = None;
        self.change_since = None;
        self.change_deadline = None;
        self.seqr = (self.members.first() == Some(&self.me)).then(|| Sequencer {
            next_seq: 1,
            ..Sequencer::default()
        });
        self.sent_upto = 0;
        self.submit_base = None;
        // The new group table: every member's own memberships, in stamp order.
        let mut table: BTreeMap<GroupName, Vec<GroupRecord>> = BTreeMap::new();
        for r in m.groups {
            table.entry(r.group.clone()).or_default().push(r);
        }
        for list in table.values_mut() {
            list.sort_by(|a, b| a.stamp.cmp(&b.stamp).then(a.member.cmp(&b.member)));
        }
        let old_table = std::mem::replace(&mut self.groups, table);
        self.outputs.push_back(Output::ViewInstalled(change));
        let early = std::mem::take(&mut self.early);
        let names: BTreeSet<GroupName> = old_table
            .keys()
            .chain(self.groups.keys())
            .cloned()
            .collect();
        let at = Stamp {
            view: self.view.clone(),
            seq: 0,
        };
        for g in names {
            let before: Vec<&Member> = old_table
                .get(&g)
                .into_iter()
                .flatten()
                .map(|r| &r.member)
                .collect();
            let after: Vec<&Member> = self
                .groups
                .get(&g)
                .into_iter()
                .flatten()
                .map(|r| &r.member)
                .collect();
            if before != after {
                self.announce(&g, MembershipReason::Network, at.clone());
            }
        }
        // Our own resubmissions go first (FIFO per node), then what arrived early.
        self.pump();
        for (sender, msg) in early {
            if msg.view() == Some(&self.view) {
                self.dispatch(now, sender, msg);
            }
        }
    }
}

mod peer_set;
#[cfg(test)]
mod tests;
