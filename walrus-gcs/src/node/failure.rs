//! The failure detector: who is alive (heartbeats, link reports, incarnations), the
//! connectivity matrix of peers' rows, and the view this node wants from them
//! (PROTOCOL.md, "Failure detection").

use super::*;

/// Why a node is not alive to this one ([`Node::dead_because`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dead {
    NotAPeer,
    LinkDown,
    NeverHeard,
    /// Another incarnation of the name is the one known (it restarted).
    OtherIncarnation,
    /// Not heard for this long (at least `failure_timeout`).
    Silent(std::time::Duration),
}

impl std::fmt::Display for Dead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dead::NotAPeer => f.write_str("not a configured peer"),
            Dead::LinkDown => f.write_str("its link is down"),
            Dead::NeverHeard => f.write_str("never heard"),
            Dead::OtherIncarnation => f.write_str("it restarted (another incarnation is known)"),
            Dead::Silent(d) => write!(f, "not heard for {} ms", d.as_millis()),
        }
    }
}

/// What a peer looks like from here.
#[derive(Debug, Default)]
pub(super) struct Peer {
    /// Latest incarnation heard from it.
    pub(super) incarnation: Option<Incarnation>,
    /// When it was last heard from (any message).
    pub(super) last_heard: Option<Instant>,
    /// The transport reported its link down (cleared by link-up or by hearing from it).
    pub(super) link_down: bool,
    /// Its last reported list of live nodes (its row of the connectivity matrix).
    pub(super) row: Vec<NodeRef>,
    /// The view it last said it was in, and when we heard that.
    pub(super) view: Option<(ViewId, Instant)>,
    /// A view this node installed with it as a member, while it had not said it was in
    /// that view (or a later one) yet: its row lists every member of that view (it
    /// accepted it: they were all alive to it), and a heartbeat it sent before that view
    /// only adds to the row (see [`Node::note_view_rows`]).
    pub(super) row_view: Option<ViewId>,
}

impl Node {
    /// Hears from peer `from` in incarnation `inc`: it is alive now. Returns who sent the
    /// message, or `None` if it must be dropped (an unknown node, or an older incarnation
    /// than the one known **while that one is alive**).
    ///
    /// Why not "older incarnations forever": two processes with one name (a duplicate,
    /// refused by the transport's admission rule, or a restart racing the old link) may
    /// both get frames through for a moment. If the newer one then goes away, the older
    /// one is the node; refusing it forever would leave it alone, its own master, for good
    /// (issue 16). Once the newer incarnation is dead to this node (link down, or not heard
    /// for `failure_timeout`), the older one is taken as a new incarnation: everything
    /// known of the newer one is void, and the older one merges like a healed partition.
    pub(super) fn hear(
        &mut self,
        now: Instant,
        from: &NodeId,
        inc: Incarnation,
    ) -> Option<NodeRef> {
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
        let peer = self.peers.get_mut(from)?;
        match peer.incarnation {
            Some(known)
                if inc < known && (newer_alive || planted!(self, refuse_older_incarnations)) =>
            {
                return None
            }
            Some(known) if inc == known => {}
            _ => {
                // A new incarnation: what we knew of the old one is void.
                peer.incarnation = Some(inc);
                peer.row.clear();
                peer.row_view = None;
                peer.view = None;
            }
        }
        peer.last_heard = Some(now);
        peer.link_down = false;
        Some(NodeRef {
            id: from.clone(),
            incarnation: inc,
        })
    }

    /// The link to `peer` went down. Besides making `peer` dead until heard again, this
    /// says frames were lost: those in flight on the link, and those the transport held
    /// from it (it drops a link's data once it reports the link down). The protocol finds
    /// a lost frame by the gap before the next one; a lost *last* frame (an `Ack`, the
    /// last `Ordered` or `Submit`) has no next one. If the link comes back
    /// before anyone proposes (a connection that timed out under load and was dialed
    /// again at once), every node still wants the view it has, and the view waits for
    /// the lost frame for ever: the entry never commits and nothing after it is
    /// delivered (issue 24, the freeze with 1,000 reporters). So a view that has `peer`
    /// is broken (it changes after `settle`, and its flush recovers what was lost), and
    /// so is the view this node accepted, if it has `peer`: `peer` may have installed it
    /// first and sent frames of it on the lost link.
    pub(super) fn link_lost(&mut self, peer: &NodeId) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.link_down = true;
            p.row.clear();
        }
        let has_peer = |members: &[NodeRef]| members.iter().any(|m| m.id == *peer);
        if has_peer(&self.members) {
            self.broken = true;
        }
        if let Some(a) = self.accepted.as_mut() {
            if has_peer(&a.members) {
                a.link_lost = true;
            }
        }
    }

    /// A heartbeat: the sender's row of the connectivity matrix and the view it is in.
    pub(super) fn on_heartbeat(&mut self, now: Instant, from: &NodeId, m: Heartbeat) {
        self.max_counter = self.max_counter.max(m.max_counter);
        if let Some(peer) = self.peers.get_mut(from) {
            match &peer.row_view {
                Some(v) if m.view < *v => {
                    // Sent before it installed our view: maybe before it heard everyone.
                    add_to_row(&mut peer.row, m.alive);
                }
                _ => {
                    peer.row = m.alive;
                    peer.row_view = None;
                }
            }
            peer.view = Some((m.view, now));
        }
        // Not evaluated here: the heartbeat tick does it (keeps large clusters cheap).
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
    pub(super) fn catch_up(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
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

    pub(super) fn alive(&self, now: Instant, who: &NodeRef) -> bool {
        self.dead_because(now, who).is_none()
    }

    /// Why `who` is not alive to this node (`None`: it is). The one liveness rule: the
    /// heartbeat rows, the wanted view and the log line of a dropped member all use it.
    pub(super) fn dead_because(&self, now: Instant, who: &NodeRef) -> Option<Dead> {
        if *who == self.me {
            return None;
        }
        let Some(p) = self.peers.get(&who.id) else {
            return Some(Dead::NotAPeer);
        };
        if p.link_down {
            return Some(Dead::LinkDown);
        }
        match p.incarnation {
            None => return Some(Dead::NeverHeard),
            Some(i) if i != who.incarnation => return Some(Dead::OtherIncarnation),
            Some(_) => {}
        }
        let Some(heard) = p.last_heard else {
            return Some(Dead::NeverHeard);
        };
        let silent = now.saturating_duration_since(heard);
        (silent >= self.config.failure_timeout).then_some(Dead::Silent(silent))
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

    pub(super) fn send_heartbeats(&mut self, now: Instant) {
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
    pub(super) fn peer_report(&self, now: Instant) -> String {
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

    /// Why `who` is not in the view this node wants, for the log line of a proposal that
    /// drops a member (an operator's first question when a member leaves).
    pub(super) fn why_left_out(&self, now: Instant, who: &NodeRef, chosen: &[NodeRef]) -> String {
        if let Some(dead) = self.dead_because(now, who) {
            return dead.to_string();
        }
        if self.suspects.get(who).is_some_and(|until| now < *until) {
            return "it did not answer a view proposal in time".into();
        }
        let unseen: Vec<&str> = chosen
            .iter()
            .filter(|c| !(self.sees(now, c, who) && self.sees(now, who, c)))
            .map(|c| c.id.as_str())
            .collect();
        let row: Vec<&str> = self
            .peers
            .get(&who.id)
            .map(|p| p.row.iter().map(|r| r.id.as_str()).collect())
            .unwrap_or_default();
        if unseen.is_empty() {
            return format!("connected now (its last row lists [{}])", row.join(", "));
        }
        format!(
            "not mutually connected with {} (its last row lists [{}])",
            unseen.join(", "),
            row.join(", ")
        )
    }

    /// A proposal is its coordinator's freshest word on whom it sees: it proposes only
    /// nodes alive to it (`candidate`). Its last heartbeat's row may be older: it
    /// judges itself by whom it hears *now*, the others by the row it sent up to a
    /// heartbeat interval ago. Without this, a member that heard the coordinator's
    /// heartbeat before the coordinator heard it (nodes starting together) saw a row
    /// without itself, wanted a view without the coordinator, and proposed it one
    /// `settle` after installing the coordinator's view: the group split and merged again
    /// within a second (issue 24: a few of hundreds of benchmark runs lost messages so). The
    /// coordinator's next heartbeat replaces the row as usual (it comes after the proposal
    /// on the same link).
    pub(super) fn note_coordinator_row(&mut self, from: &NodeRef, members: &[NodeRef]) {
        if planted!(self, stale_member_rows) {
            return;
        }
        if let Some(p) = self.peers.get_mut(&from.id) {
            add_to_row(&mut p.row, others(from, members));
        }
    }

    /// An installed view is the same word from every member: each accepted it, so every
    /// member was alive to each. Rows of the matrix older than that (a member's heartbeat
    /// sent before it heard a node that started or healed just then) would make this
    /// node want a view without that node, and propose it one `settle` later: the same
    /// split as above, with the stale row a member's instead of the coordinator's (the
    /// simulator found it once links came up at each end at its own time, as a
    /// transport's do). So every member's row lists the view's members, and until a
    /// member says it is in this view (or a later one), its heartbeats only add to its
    /// row: one sent before it accepted may be older than the view. Liveness
    /// information only; a member that really lost another says so in its first
    /// heartbeat of the view.
    pub(super) fn note_view_rows(&mut self, view: &ViewId, members: &[NodeRef]) {
        for x in members {
            if *x == self.me || planted!(self, stale_member_rows) {
                continue;
            }
            let Some(p) = self.peers.get_mut(&x.id) else {
                continue;
            };
            if p.incarnation != Some(x.incarnation) {
                continue;
            }
            if p.view.as_ref().is_some_and(|(v, _)| v >= view) {
                continue;
            }
            add_to_row(&mut p.row, others(x, members));
            p.row_view = Some(view.clone());
        }
        // Every member answered this view's proposal: none is a suspect any more. A
        // member that missed an earlier proposal's deadline (its answer was on a link not
        // up yet) and then proposed the whole view itself would otherwise be left out
        // of this node's wanted view until its suspicion ran out, and this node, first
        // of the others, would propose a view without it one `settle` after installing.
        self.suspects.retain(|s, _| !members.contains(s));
    }

    /// Does `x` see `y` (per the connectivity matrix as this node knows it)?
    pub(super) fn sees(&self, now: Instant, x: &NodeRef, y: &NodeRef) -> bool {
        if *x == self.me {
            return self.alive(now, y);
        }
        self.peers.get(&x.id).is_some_and(|p| p.row.contains(y))
    }

    /// The view this node wants: itself plus, in name order, every live node that is
    /// mutually connected with all those already chosen (a clique of the matrix).
    pub(super) fn candidate(&self, now: Instant) -> Vec<NodeRef> {
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
    pub(super) fn member_elsewhere(&self) -> bool {
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
}

/// Adds the nodes in `more` that `row` lacks, keeping it sorted.
fn add_to_row(row: &mut Vec<NodeRef>, more: impl IntoIterator<Item = NodeRef>) {
    for x in more {
        if !row.contains(&x) {
            row.push(x);
        }
    }
    row.sort();
}

/// `members` but `whose` (a row does not list its own node).
fn others<'m>(whose: &NodeRef, members: &'m [NodeRef]) -> impl Iterator<Item = NodeRef> + 'm {
    let whose = whose.clone();
    members.iter().filter(move |x| **x != whose).cloned()
}
