//! Ordering: the send window and submission of this node's operations, the sequencer
//! (numbering, the window of unstable entries, commit and stable points), and delivery
//! of committed entries in sequence order (PROTOCOL.md, "Ordering").

use super::*;

/// Sequencer state: present on the first member of the view while it is not frozen.
#[derive(Debug, Default)]
pub(super) struct Sequencer {
    /// Next sequence number to give.
    pub(super) next_seq: u64,
    /// Highest contiguous entry each member holds.
    pub(super) acks: BTreeMap<NodeRef, u64>,
    /// Next op counter expected from each member (FIFO and gap check).
    pub(super) expected: BTreeMap<NodeRef, u64>,
    /// Ops waiting for room in the window of unstable entries.
    pub(super) backlog: VecDeque<(NodeRef, Op)>,
    /// Payload bytes of each ordered entry not yet stable, by sequence number.
    pub(super) unstable: VecDeque<(u64, usize)>,
    /// Their sum (the window of unstable entries in bytes).
    pub(super) unstable_bytes: usize,
    /// Highest entry each member has delivered (from its `Ack`s; this node's own).
    pub(super) delivered: BTreeMap<NodeRef, u64>,
    /// Last commit, stable and delivered-by-all points sent to the members.
    pub(super) sent: (u64, u64, u64),
}

/// Flow control to the slowest reader (issue 24). While a local session has at least
/// the reader window (a quarter of `CoreConfig::session_queue_limit`) of delivered events
/// unread, this node reports no more held entries than it had reported (its `Ack`, or
/// the sequencer's own entry in `Sequencer::acks`): the view's stable point stops, the
/// sequencer's window of unstable entries (`max_unstable`) fills and every sender of the
/// group waits, so the reader catches up instead of being disconnected. The hold lasts
/// at most `flush_timeout` from the moment the session started lagging; after that this
/// node acknowledges normally until no session lags, so a session that does not read
/// at all still reaches its limit and is disconnected instead of stopping the group.
///
/// Reporting fewer held entries than held is always safe: the acknowledgement only
/// feeds the commit point (the origin holds the entry) and the stable point (every
/// member holds it), and both then advance later, never wrongly; a view change takes
/// what each member holds from its `Accept`, not from its acknowledgements.
#[derive(Debug, Default)]
pub(super) struct AckHold {
    /// Since when a local session has lagged (cleared when none does).
    since: Option<Instant>,
    /// Entries were received (or ordered, on the sequencer) and not acknowledged.
    pub(super) owed: bool,
}

impl AckHold {
    /// When an owed acknowledgement must go out even if the session still lags.
    pub(super) fn deadline(&self, bound: std::time::Duration) -> Option<Instant> {
        self.since.filter(|_| self.owed).map(|t| t + bound)
    }
}

/// The lowest point any of `members` reported in `points` (0 for one that reported none).
fn lowest(members: &[NodeRef], points: &BTreeMap<NodeRef, u64>) -> u64 {
    members
        .iter()
        .map(|m| points.get(m).copied().unwrap_or(0))
        .min()
        .unwrap_or(0)
}

impl Sequencer {
    /// The sequencer of a view that has just been installed: nothing ordered yet.
    pub(super) fn new() -> Self {
        Sequencer {
            next_seq: 1,
            ..Sequencer::default()
        }
    }

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

impl Node {
    // ------------------------------------------------------------------ local ops

    /// A join or leave of `session` may go: the session is open, and fewer than twice
    /// the send window of ops are on their way (joins and leaves are rare and small;
    /// they are held back only so a runaway caller cannot grow `pending` without bound).
    pub(super) fn check_request(&self, session: SessionId) -> Result<(), GcsError> {
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
    pub(super) fn check_window(&self, size: usize) -> Result<(), GcsError> {
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
    pub(super) fn window(&self) -> (usize, usize) {
        let n = self.members.len().max(1);
        let c = &self.config;
        (
            c.max_pending.min(c.group_window / n).max(1),
            c.max_pending_bytes.min(c.group_window_bytes / n).max(1),
        )
    }

    pub(super) fn window_full(&self) -> GcsError {
        let (limit, limit_bytes) = self.window();
        GcsError::Backpressure {
            pending: self.pending.len(),
            pending_bytes: self.pending_bytes,
            limit,
            limit_bytes,
        }
    }

    /// Whether `session` keeps up with its own events: fewer than a quarter of
    /// `CoreConfig::session_queue_limit` delivered and unread. A session that multicasts
    /// faster than it reads is held back (its multicasts are refused with
    /// [`GcsError::Backpressure`]) long before it would be disconnected: with batching
    /// the group delivers faster than a reader that does work per message can keep up
    /// with (issue 24), and slowing the sender keeps the group whole. A session that does
    /// not read at all still reaches the limit and is disconnected.
    pub fn reader_keeps_up(&self, session: SessionId) -> bool {
        self.sessions
            .get(&session)
            .is_none_or(|s| s.unread < (self.config.session_queue_limit / 4).max(1))
    }

    /// Whether some local session lags: it has the reader window of events unread.
    fn lagging(&self) -> bool {
        !self.sessions.keys().all(|s| self.reader_keeps_up(*s))
    }

    /// Whether this node holds back its acknowledgement now (see [`AckHold`]); starts
    /// the bound when a session has just begun to lag, clears it when none lags.
    fn hold_ack(&mut self) -> bool {
        if !self.lagging() {
            self.ack_hold.since = None;
            return false;
        }
        let since = *self.ack_hold.since.get_or_insert(self.clock);
        self.clock < since + self.config.flush_timeout
    }

    /// Whether an acknowledgement is held back because a local session lags (the driver
    /// looks again soon, as the application's reads come without an event).
    pub fn holding_ack(&self) -> bool {
        self.ack_hold.owed
    }

    /// Sends the owed acknowledgement if it need no longer be held back.
    pub(super) fn release_ack(&mut self) {
        if !self.ack_hold.owed || self.hold_ack() {
            return;
        }
        self.ack_hold.owed = false;
        if self.frozen.is_some() {
            // The flush takes what this node holds from its `Accept`.
            return;
        }
        self.acknowledge();
    }

    /// Reports every entry held (up to `held_max`) to the sequencer, or records it as
    /// the sequencer's own acknowledgement.
    fn acknowledge(&mut self) {
        let held = self.held_max;
        let delivered = self.delivered;
        self.delivered_told = delivered;
        let me = self.me.clone();
        if let Some(seqr) = self.seqr.as_mut() {
            seqr.acks.insert(me, held);
            self.seq_advance();
        } else if let Some(to) = self.members.first().map(|m| m.id.clone()) {
            self.send(
                to,
                PeerMessage::Ack(Ack {
                    incarnation: self.me.incarnation,
                    view: self.view.clone(),
                    held,
                    delivered,
                }),
            );
        }
    }

    /// Whether a multicast of `size` payload bytes would be taken now (the driver asks
    /// before handing over a payload it would otherwise have to copy).
    pub fn window_has_room(&self, size: usize) -> bool {
        self.check_window(size).is_ok()
    }

    pub(super) fn push_op(&mut self, session: SessionId, kind: OpKind) {
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
    pub(super) fn pump(&mut self) {
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
            // The chunk's sequence numbers are consecutive: it makes one batch.
            if let Some(ordered) =
                Ordered::from_entries(self.me.incarnation, self.view.clone(), chunk)
            {
                self.send_to_members(PeerMessage::Ordered(ordered));
            }
        }
        for e in batch {
            self.held_max = e.seq;
            self.held.insert(e.seq, e);
        }
        if self.hold_ack() {
            self.ack_hold.owed = true;
            return;
        }
        self.ack_hold.owed = false;
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
        let stable = lowest(&self.members, &seqr.acks);
        self.commit = commit;
        self.stable = self.stable.max(stable);
        self.seq_tell();
        self.deliver_committed();
        let (me, delivered) = (self.me.clone(), self.delivered);
        if let Some(seqr) = self.seqr.as_mut() {
            seqr.delivered.insert(me, delivered);
        }
        self.seq_tell();
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

    /// Sequencer: works out the point every member has delivered up to, and sends
    /// `Commit` when the commit or stable point moved, or when that point moved past a
    /// client message (its member may now confirm it; PROTOCOL.md, "Clients"). A group
    /// without clients sends no more `Commit`s than before.
    fn seq_tell(&mut self) {
        let Some(seqr) = self.seqr.as_mut() else {
            return;
        };
        let all = lowest(&self.members, &seqr.delivered);
        self.delivered_all = self.delivered_all.max(all);
        let (commit, stable, told) = seqr.sent;
        let news = (self.commit, self.stable) != (commit, stable)
            || (self.delivered_all > told
                && self.last_client_seq > told
                && !planted!(self, confirm_when_stable));
        if !news {
            return;
        }
        seqr.sent = (self.commit, self.stable, self.delivered_all);
        self.send_to_members(PeerMessage::Commit(Commit {
            incarnation: self.me.incarnation,
            view: self.view.clone(),
            commit: self.commit,
            stable: self.stable,
            delivered: self.delivered_all,
        }));
    }

    /// A member that delivered a client message since its last `Ack` reports its
    /// delivered point (held back like any acknowledgement while a local session lags).
    fn report_delivered(&mut self) {
        if self.seqr.is_some()
            || planted!(self, confirm_when_stable)
            || self.delivered <= self.delivered_told
            || self.last_client_seq <= self.delivered_told
        {
            return;
        }
        if self.hold_ack() {
            self.ack_hold.owed = true;
        } else {
            self.ack_hold.owed = false;
            self.acknowledge();
        }
    }

    pub(super) fn on_submit(&mut self, from: NodeRef, m: Submit) {
        if m.view != self.view || self.seqr.is_none() || !self.is_member(&from) {
            return;
        }
        self.seq_accept(from, m.base, m.ops);
    }

    pub(super) fn on_ordered(&mut self, from: &NodeRef, m: Ordered) {
        if m.view != self.view || self.frozen.is_some() || self.members[0] != *from {
            return;
        }
        let Some(entries) = m.into_entries() else {
            // Numbering past u64::MAX: not from a sequencer that follows the protocol.
            self.broken = true;
            return;
        };
        for e in entries {
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
        if self.hold_ack() {
            self.ack_hold.owed = true;
        } else {
            self.ack_hold.owed = false;
            self.acknowledge();
        }
        self.deliver_committed();
    }

    pub(super) fn on_ack(&mut self, from: NodeRef, m: Ack) {
        if m.view != self.view || !self.is_member(&from) {
            return;
        }
        let Some(seqr) = self.seqr.as_mut() else {
            return;
        };
        let d = seqr.delivered.entry(from.clone()).or_insert(0);
        *d = (*d).max(m.delivered);
        let a = seqr.acks.entry(from).or_insert(0);
        *a = (*a).max(m.held);
        self.seq_advance();
    }

    pub(super) fn on_commit(&mut self, from: &NodeRef, m: Commit) {
        if m.view != self.view || self.frozen.is_some() || self.members[0] != *from {
            return;
        }
        self.commit = self.commit.max(m.commit);
        self.stable = self.stable.max(m.stable);
        self.delivered_all = self.delivered_all.max(m.delivered);
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
        self.report_delivered();
        let forget = self.stable.min(self.delivered);
        if self
            .held
            .first_key_value()
            .is_some_and(|(k, _)| *k <= forget)
        {
            self.held = self.held.split_off(&(forget + 1));
        }
    }
}
