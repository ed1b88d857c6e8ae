//! Ordering: the send window and submission of this node's operations, the sequencer
//! (numbering, the window of unstable entries, commit and stable points), and delivery
//! of committed entries in sequence order (PROTOCOL.md, "Ordering").

use super::*;

/// Sequencer state: present on the first member of the view while it is not frozen.
#[derive(Debug, Default)]
pub(super) struct Sequencer {
    /// Next sequence number to give.
    pub(super) next_seq: u64,
    /// Next op counter expected from each member (FIFO and gap check).
    pub(super) expected: BTreeMap<NodeRef, u64>,
    /// Ops waiting for room in the window of unstable entries.
    pub(super) backlog: VecDeque<(NodeRef, Op)>,
    /// Payload bytes of each ordered entry not yet stable, by sequence number.
    pub(super) unstable: VecDeque<(u64, usize)>,
    /// Their sum (the window of unstable entries in bytes).
    pub(super) unstable_bytes: usize,
}

/// What each member of the current view has acknowledged (this node's own points
/// included): every member sends its `Ack` to every member, so each works out the
/// commit, stable and delivered-by-all points itself (PROTOCOL.md, "Normal operation").
#[derive(Debug, Default)]
pub(super) struct Acks {
    /// Highest contiguous entry each member holds.
    pub(super) held: BTreeMap<NodeRef, u64>,
    /// Highest entry each member has delivered.
    pub(super) delivered: BTreeMap<NodeRef, u64>,
}

impl Acks {
    fn record(&mut self, who: &NodeRef, held: u64, delivered: u64) {
        for (map, point) in [(&mut self.held, held), (&mut self.delivered, delivered)] {
            match map.get_mut(who) {
                Some(p) => *p = (*p).max(point),
                None => {
                    map.insert(who.clone(), point);
                }
            }
        }
    }
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

/// The `Ack` this node owes the other members (issue 24). Members need an `Ack` to
/// deliver only when it acknowledges an entry this node submitted (an entry is committed
/// once its submitter holds it) or reports this node's delivered point for a client's
/// message (its confirmation waits for every member): such an `Ack` is **urgent** and
/// goes at the end of the turn. One that acknowledges only other members' entries
/// serves the stable point alone (forgetting entries, the sequencer's window): it waits
/// up to [`CoreConfig::ack_delay`], or until `max_unstable / 64` entries or
/// `max_unstable_bytes / 64` bytes more are held, and meanwhile goes with the next urgent
/// one. At light load a member then sends an `Ack` for each message it submitted rather
/// than for each it received: with three members a third fewer datagrams, and the sends
/// that wake the other processes are the ones someone waits for.
#[derive(Debug, Default)]
pub(super) struct OwedAck {
    /// Since when an `Ack` has been owed (`None`: none is).
    since: Option<Instant>,
    /// A member waits for it to deliver.
    urgent: bool,
    /// Entries and payload bytes held since the last `Ack` sent.
    entries: u64,
    bytes: usize,
}

impl OwedAck {
    /// This node now holds `entry`: an `Ack` of it is urgent if `me` submitted it.
    fn held(&mut self, entry: &Entry, me: &NodeRef) {
        self.urgent |= entry.origin == *me;
        self.entries += 1;
        self.bytes += payload_len(&entry.op);
    }

    /// When the owed `Ack` must go even if nothing urgent comes.
    pub(super) fn deadline(&self, delay: std::time::Duration) -> Option<Instant> {
        self.since.map(|t| t + delay)
    }

    /// Whether the owed `Ack` goes now (see [`OwedAck`]).
    fn due(&self, now: Instant, config: &CoreConfig) -> bool {
        self.urgent
            || self.entries >= (config.max_unstable / 64).max(1)
            || self.bytes >= config.max_unstable_bytes / 64
            || self.deadline(config.ack_delay).is_some_and(|d| d <= now)
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
    /// `CoreConfig::max_pending` and `max_pending_bytes`; a message counts its payload
    /// plus [`MESSAGE_CHARGE`] bytes; one message always fits).
    pub(super) fn check_window(&self, size: usize) -> Result<(), GcsError> {
        let (limit, limit_bytes) = self.window();
        let over_count = self.pending.len() >= limit;
        let over_bytes = !self.pending.is_empty()
            && self.pending_bytes.saturating_add(window_charge(size)) > limit_bytes;
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
        // Held back while a session lagged: no longer.
        self.owed_ack.urgent = true;
        self.acknowledge();
        self.advance();
    }

    /// This node holds more entries: acknowledges them unless a local session lags (see
    /// [`AckHold`]), then delivers what became committed.
    fn held_more(&mut self) {
        if self.hold_ack() {
            self.ack_hold.owed = true;
        } else {
            self.ack_hold.owed = false;
            self.acknowledge();
        }
        self.advance();
    }

    /// Records every entry held (up to `held_max`) and delivered as this node's own
    /// points, and owes the members an `Ack` of them: it goes at the end of the turn
    /// if a member waits for it, later if not (see [`OwedAck`] and
    /// [`Node::send_owed_ack`]), so the turn's `Ordered` and `Submit` frames to a peer
    /// still merge and one `Ack` carries the turn's last points (its delivered point
    /// included).
    fn acknowledge(&mut self) {
        let (held, delivered) = (self.held_max, self.delivered);
        self.delivered_told = delivered;
        let me = self.me.clone();
        self.acks.record(&me, held, delivered);
        self.owed_ack.since.get_or_insert(self.clock);
    }

    /// Sends the `Ack` owed since [`Node::acknowledge`] to every other member if it is
    /// due (see [`OwedAck`]), with the points this node has now (none while frozen: the
    /// flush takes what it holds from its `Accept`).
    pub(super) fn send_owed_ack(&mut self) {
        if self.owed_ack.since.is_none() || !self.owed_ack.due(self.clock, &self.config) {
            return;
        }
        self.owed_ack = OwedAck::default();
        if self.frozen.is_some() {
            return;
        }
        self.delivered_told = self.delivered;
        self.send_to_members(PeerMessage::Ack(Ack {
            incarnation: self.me.incarnation,
            view: self.view.clone(),
            held: self.held_max,
            delivered: self.delivered,
        }));
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
        self.pending_bytes += op_window_charge(&op);
        self.pending.push_back(op);
    }

    /// Submits every pending op not yet submitted in this view, until nothing new comes
    /// up (a delivery may disconnect a session, which makes a new op).
    pub(super) fn pump(&mut self) {
        self.pump_due = false;
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
            self.owed_ack.held(&e, &self.me);
            self.held.insert(e.seq, e);
        }
        self.held_more();
    }

    /// Works out the commit, stable and delivered-by-all points from the members'
    /// acknowledgements, delivers what is committed, forgets what is stable and
    /// delivered, and (on the sequencer) orders what the window now has room for.
    fn advance(&mut self) {
        let mut commit = self.commit;
        while let Some(e) = self.held.get(&(commit + 1)) {
            if self.acks.held.get(&e.origin).copied().unwrap_or(0) >= e.seq {
                commit += 1;
            } else {
                break;
            }
        }
        self.commit = commit;
        self.stable = self.stable.max(lowest(&self.members, &self.acks.held));
        self.deliver_committed();
        let (me, delivered) = (self.me.clone(), self.delivered);
        self.acks.record(&me, 0, delivered);
        let all = lowest(&self.members, &self.acks.delivered);
        self.delivered_all = self.delivered_all.max(all);
        self.report_delivered();
        let forget = self.stable.min(self.delivered);
        if self
            .held
            .first_key_value()
            .is_some_and(|(k, _)| *k <= forget)
        {
            self.held = self.held.split_off(&(forget + 1));
        }
        // Room may have opened in the sequencer's window.
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

    /// A member that delivered a client message since its last `Ack` reports its
    /// delivered point (held back like any acknowledgement while a local session lags):
    /// a group without clients sends no more `Ack`s than the entries it holds need.
    fn report_delivered(&mut self) {
        if planted!(self, confirm_when_stable)
            || self.delivered <= self.delivered_told
            || self.last_client_seq <= self.delivered_told
        {
            return;
        }
        if self.hold_ack() {
            self.ack_hold.owed = true;
        } else {
            self.ack_hold.owed = false;
            // A client's confirmation waits for it.
            self.owed_ack.urgent = true;
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
            self.owed_ack.held(&e, &self.me);
            self.held.insert(e.seq, e);
        }
        self.held_more();
    }

    pub(super) fn on_ack(&mut self, from: NodeRef, m: Ack) {
        if m.view != self.view || self.frozen.is_some() || !self.is_member(&from) {
            return;
        }
        self.acks.record(&from, m.held, m.delivered);
        self.advance();
    }

    /// Delivers held entries up to the commit point, in order.
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
    }
}
