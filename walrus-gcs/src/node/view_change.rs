//! View change: deciding to change, freezing the old view, proposing and accepting, the
//! coordinator's cut of each old view, and installing the new view (PROTOCOL.md,
//! "View change and flush").

use super::*;

/// The most group records (one per session per group it joined) a node gathers from one
/// member's flush answer or from an install's chunks: a bound on what a faulty peer's
/// chunks can make it hold, far above the scale measured (a thousand clients in a few
/// groups each is a few thousand records). A view change past it does not complete; the
/// node says so in its log.
const MAX_GROUP_RECORDS: usize = 1 << 20;

/// What this node froze of its view when it first accepted a proposal.
#[derive(Debug, Clone)]
pub(super) struct Frozen {
    pub(super) report: FlushReport,
    pub(super) held: Held,
}

/// What a member sends besides its flush report, in chunks before it: the entries of its
/// old view it holds, and its own sessions' group records.
#[derive(Debug, Clone, Default)]
pub(super) struct Held {
    pub(super) entries: Vec<Entry>,
    pub(super) groups: Vec<GroupRecord>,
}

/// A proposal of someone else that this node accepted and whose install it awaits.
#[derive(Debug)]
pub(super) struct Accepted {
    pub(super) id: ViewId,
    /// The proposed members: the install must name exactly these.
    pub(super) members: Vec<NodeRef>,
    pub(super) deadline: Instant,
    /// InstallData entries of this node's old view, by sequence number.
    pub(super) data: BTreeMap<u64, Entry>,
    /// InstallGroups records of the new view's group table, in order.
    pub(super) groups: Vec<GroupRecord>,
    /// The link to one of the members went down meanwhile: the view is broken once
    /// installed (see [`Node::link_lost`]).
    pub(super) link_lost: bool,
}

/// A view change this node coordinates.
#[derive(Debug)]
pub(super) struct Proposal {
    pub(super) id: ViewId,
    pub(super) members: Vec<NodeRef>,
    pub(super) deadline: Instant,
    /// Entries and group records received in AcceptData and AcceptGroups chunks, per
    /// member.
    pub(super) data: BTreeMap<NodeRef, Held>,
    /// Complete answers, per member.
    pub(super) reports: BTreeMap<NodeRef, (FlushReport, Held)>,
}

/// One member's flush answer, as the coordinator groups them by old view.
type Answer<'a> = (&'a NodeRef, &'a FlushReport, &'a Vec<Entry>);

impl Node {
    // ------------------------------------------------------------------ view change

    /// Decides whether to (re)start a view change.
    pub(super) fn evaluate(&mut self, now: Instant) {
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
        // A node that has not yet heard a node its peers report alive (it just started,
        // or that node did) waits for it, so as not to pull its peers out of their view
        // into one without it — at most `view_change_timeout`, for a node it can never
        // reach.
        let wait = if self.unheard_but_reported_alive(&desired) {
            wait.max(self.config.view_change_timeout)
        } else {
            wait
        };
        if now >= since + wait {
            self.change_deadline = None;
            self.propose(now, desired);
        } else {
            self.change_deadline = Some(since + wait);
        }
    }

    /// Whether a member of `desired` reports alive a node that is not in it and that
    /// this node has never heard from in that incarnation. Why: a restarted node hears its
    /// peers one link at a time (QUIC handshakes on a loaded host took 0.5–1 s in the
    /// demo); proposing the few it heard first, it pulled them out of the running view,
    /// which split the group for up to a second on every restart (two masters, missed
    /// reports). A peer it *has* heard and lost is not waited for: a crash must still
    /// make a view at once.
    fn unheard_but_reported_alive(&self, desired: &[NodeRef]) -> bool {
        desired
            .iter()
            .filter(|d| **d != self.me)
            .filter_map(|d| self.peers.get(&d.id))
            .flat_map(|p| p.row.iter())
            .any(|x| {
                *x != self.me
                    && !desired.contains(x)
                    && self.peers.get(&x.id).is_some_and(|p| {
                        p.last_heard.is_none() || p.incarnation.is_none_or(|i| i < x.incarnation)
                    })
            })
    }

    /// Freezes this node's part of the current view: from now on it neither delivers nor
    /// acknowledges nor orders anything of it; the flush decides.
    pub(super) fn freeze(&mut self) {
        if self.frozen.is_some() {
            return;
        }
        self.seqr = None;
        let groups = self.own_memberships();
        let entries: Vec<Entry> = self.held.values().cloned().collect();
        self.frozen = Some(Frozen {
            report: FlushReport {
                old_view: self.view.clone(),
                delivered: self.delivered,
                commit: self.commit,
                group_count: groups.len() as u64,
                held_count: entries.len() as u64,
                max_counter: self.max_counter,
            },
            held: Held { entries, groups },
        });
    }

    pub(super) fn propose(&mut self, now: Instant, members: Vec<NodeRef>) {
        let dropped: Vec<String> = self
            .members
            .iter()
            .filter(|m| **m != self.me && !members.contains(m))
            .map(|m| format!("{} ({})", m.id, self.why_left_out(now, m, &members)))
            .collect();
        if !dropped.is_empty() {
            tracing::info!(
                node = %self.me,
                view = %self.view,
                dropped = %dropped.join("; "),
                broken = self.broken,
                peers = %self.peer_report(now),
                "proposing a view without members of the current one"
            );
        } else if tracing::enabled!(tracing::Level::DEBUG) {
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
        reports.insert(self.me.clone(), (frozen.report, frozen.held));
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

    pub(super) fn on_propose(&mut self, now: Instant, from: NodeRef, m: Propose) {
        self.max_counter = self.max_counter.max(m.proposal.counter);
        let acceptable = m.proposal > self.highest
            && m.proposal.coordinator == from.id
            && m.proposal.incarnation == from.incarnation
            && m.members.windows(2).all(|w| w[0] < w[1])
            && m.members.contains(&self.me)
            && m.members.contains(&from)
            && m.members.iter().all(|x| self.alive(now, x))
            && !self.would_split_view(now, &from, &m.members);
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
        self.note_coordinator_row(&from, &m.members);
        self.proposal = None;
        self.early.clear();
        self.highest = m.proposal.clone();
        self.accepted = Some(Accepted {
            id: m.proposal.clone(),
            members: m.members.clone(),
            deadline: now + self.config.flush_timeout * 2,
            data: BTreeMap::new(),
            groups: Vec::new(),
            link_lost: false,
        });
        let Some(frozen) = self.frozen.clone() else {
            return;
        };
        let budget = self.config.max_message_size;
        for chunk in chunks(frozen.held.entries, budget, |e| op_size(&e.op)) {
            self.send(
                from.id.clone(),
                PeerMessage::AcceptData(AcceptData {
                    incarnation: self.me.incarnation,
                    proposal: m.proposal.clone(),
                    entries: chunk,
                }),
            );
        }
        for chunk in chunks(frozen.held.groups, budget, record_size) {
            self.send(
                from.id.clone(),
                PeerMessage::AcceptGroups(AcceptGroups {
                    incarnation: self.me.incarnation,
                    proposal: m.proposal.clone(),
                    groups: chunk,
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

    /// Whether accepting `members`, proposed by `from` from outside this node's view,
    /// would leave behind a member of the view that is alive to this node. Such a
    /// proposal comes from a node that cannot yet see the whole view (it just started,
    /// or a cut around it just healed); accepted, it pulled some members out of a
    /// working view for up to a second (two masters in walrus-node, reports missed). A
    /// proposal from inside the view is accepted as before: that is how a crashed or
    /// cut-off member is dropped, and its coordinator knows best. The node from outside
    /// is merged by the coordinator of a view that holds everyone, or, if it can never
    /// see the whole view, stays out of it.
    fn would_split_view(&self, now: Instant, from: &NodeRef, members: &[NodeRef]) -> bool {
        !self.members.contains(from)
            && self
                .members
                .iter()
                .any(|x| !members.contains(x) && self.alive(now, x))
    }

    pub(super) fn on_accept_data(&mut self, from: NodeRef, m: AcceptData) {
        if let Some(p) = self.proposal.as_mut() {
            if p.id == m.proposal && p.members.contains(&from) {
                let held = &mut p.data.entry(from).or_default().entries;
                // A member holds at most the unstable window (plus one chunk of slack).
                if (held.len() + m.entries.len()) as u64 <= self.config.max_unstable * 2 {
                    held.extend(m.entries);
                }
            }
        }
    }

    pub(super) fn on_accept_groups(&mut self, from: NodeRef, m: AcceptGroups) {
        if let Some(p) = self.proposal.as_mut() {
            if p.id == m.proposal && p.members.contains(&from) {
                let held = &mut p.data.entry(from.clone()).or_default().groups;
                gather_records(held, m.groups, &from, "a flush answer");
            }
        }
    }

    pub(super) fn on_accept(&mut self, now: Instant, from: NodeRef, m: Accept) {
        self.max_counter = self.max_counter.max(m.report.max_counter);
        let Some(p) = self.proposal.as_mut() else {
            return;
        };
        if p.id != m.proposal || !p.members.contains(&from) {
            return;
        }
        let held = p.data.remove(&from).unwrap_or_default();
        if held.entries.len() as u64 != m.report.held_count
            || held.groups.len() as u64 != m.report.group_count
        {
            return; // a chunk was lost; the proposal will time out
        }
        p.reports.insert(from, (m.report, held));
        self.try_complete(now);
    }

    pub(super) fn on_reject(&mut self, now: Instant, m: Reject) {
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
        for (who, (r, held)) in &p.reports {
            by_old
                .entry(r.old_view.clone())
                .or_default()
                .push((who, r, &held.entries));
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
        let groups = self.merged_groups(
            &p.id,
            p.members.len(),
            p.reports.values().map(|(_, held)| &held.groups[..]),
        );
        let install = Install {
            incarnation: self.me.incarnation,
            view: p.id.clone(),
            members: p.members.clone(),
            cuts,
            group_count: groups.len() as u64,
        };
        let budget = self.config.max_message_size;
        let group_chunks = chunks(groups.clone(), budget, record_size);
        for m in &p.members {
            if *m == self.me {
                continue;
            }
            let Some((r, _)) = p.reports.get(m) else {
                continue;
            };
            if let Some((old, es)) = data.iter().find(|(o, _)| *o == r.old_view) {
                let mine: Vec<Entry> = es.iter().filter(|e| e.seq > r.delivered).cloned().collect();
                for chunk in chunks(mine, budget, |e| op_size(&e.op)) {
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
            for chunk in &group_chunks {
                self.send(
                    m.id.clone(),
                    PeerMessage::InstallGroups(InstallGroups {
                        incarnation: self.me.incarnation,
                        view: p.id.clone(),
                        groups: chunk.clone(),
                    }),
                );
            }
            self.send(m.id.clone(), PeerMessage::Install(install.clone()));
        }
        let my_old = self.view.clone();
        let mine = data
            .into_iter()
            .find(|(o, _)| *o == my_old)
            .map(|(_, es)| es)
            .unwrap_or_default();
        self.install(now, install, mine, groups);
    }

    pub(super) fn on_install_data(&mut self, from: &NodeRef, m: InstallData) {
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

    pub(super) fn on_install_groups(&mut self, from: &NodeRef, m: InstallGroups) {
        if m.view.coordinator != from.id || m.view.incarnation != from.incarnation {
            return;
        }
        if let Some(a) = self.accepted.as_mut() {
            if a.id == m.view {
                gather_records(&mut a.groups, m.groups, from, "an install");
            }
        }
    }

    pub(super) fn on_install(&mut self, now: Instant, from: &NodeRef, m: Install) {
        if m.view.coordinator != from.id || m.view.incarnation != from.incarnation {
            return;
        }
        let Some(a) = self.accepted.take() else {
            return;
        };
        if a.id != m.view
            || a.members != m.members
            || a.groups.len() as u64 != m.group_count
            || self.frozen.is_none()
        {
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
        let link_lost = a.link_lost;
        self.install(now, m, entries, a.groups);
        if link_lost {
            self.broken = true;
        }
    }

    /// Delivers the old view's cut, then installs the new view with its group table
    /// `groups` (sorted by group then stamp).
    pub(super) fn install(
        &mut self,
        now: Instant,
        m: Install,
        cut: Vec<Entry>,
        groups: Vec<GroupRecord>,
    ) {
        let old = self.view.clone();
        if !planted!(self, skip_flush) {
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
        self.note_view_rows(&m.view, &m.members);
        self.view = m.view.clone();
        self.members = m.members;
        self.installed_at = now;
        self.highest = self.highest.clone().max(m.view.clone());
        self.max_counter = self.max_counter.max(m.view.counter);
        self.held.clear();
        self.held_max = 0;
        // Nothing of the new view is held yet, so no acknowledgement is owed in it.
        self.ack_hold.owed = false;
        self.delivered = 0;
        self.commit = 0;
        self.stable = 0;
        self.acks = Acks::default();
        self.owed_ack = OwedAck::default();
        self.delivered_all = 0;
        self.delivered_told = 0;
        self.last_client_seq = 0;
        self.broken = false;
        self.digest = FNV_START;
        self.delivered_count = 0;
        self.frozen = None;
        self.accepted = None;
        self.proposal = None;
        self.change_since = None;
        self.change_deadline = None;
        self.seqr = (self.members.first() == Some(&self.me)).then(Sequencer::new);
        self.sent_upto = 0;
        self.submit_base = None;
        let old_table = self.replace_group_table(groups);
        self.outputs.push_back(Output::ViewInstalled(change));
        let early = std::mem::take(&mut self.early);
        self.announce_network_changes(&old_table);
        // Our own resubmissions go first (FIFO per node), then what arrived early.
        self.pump();
        for (sender, msg) in early {
            if msg.view() == Some(&self.view) {
                self.dispatch(now, sender, msg);
            }
        }
    }
}

/// Appends a chunk of group records `more` from `from` to `held`, unless that takes it past
/// [`MAX_GROUP_RECORDS`] (then the chunk is dropped, the count in the answer or install
/// will not match, and the view change does not complete: logged, since only a faulty
/// peer or a table far past the measured scale gets there).
fn gather_records(held: &mut Vec<GroupRecord>, more: Vec<GroupRecord>, from: &NodeRef, what: &str) {
    if held.len().saturating_add(more.len()) > MAX_GROUP_RECORDS {
        tracing::warn!(
            peer = %from,
            records = held.len().saturating_add(more.len()),
            limit = MAX_GROUP_RECORDS,
            "dropping group records of {what}: more than a view change gathers"
        );
        return;
    }
    held.extend(more);
}
