//! The replicated group table: applying one delivered entry (join, leave, gone,
//! message), the membership events it causes, and handing events to local sessions with
//! their queue limit (PROTOCOL.md, "Groups").

use super::*;

impl Node {
    /// Delivers one ordered entry of view `view`: updates the group table and hands
    /// events to local sessions.
    pub(super) fn apply(&mut self, view: &ViewId, e: &Entry) {
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
                self.pending_bytes = self.pending_bytes.saturating_sub(op_window_charge(&e.op));
            } else if let Some(i) = self.pending.iter().position(|p| p.counter == e.op.counter) {
                self.pending.remove(i);
                self.pending_bytes = self.pending_bytes.saturating_sub(op_window_charge(&e.op));
            }
        }
        // Joins, leaves and gones name their member and stamp; a message needs neither
        // (built per entry, they cost two string copies on every delivered message).
        let member_at = || {
            let member = Member {
                node: e.origin.id.clone(),
                incarnation: e.origin.incarnation,
                session: e.op.session,
            };
            let at = Stamp {
                view: view.clone(),
                seq: e.seq,
            };
            (member, at)
        };
        match &e.op.kind {
            OpKind::Message {
                service,
                groups,
                payload,
                client,
            } => {
                if let Some(id) = client {
                    self.client_delivered(view, e.seq, id);
                    let fresh = self.client_message_fresh(id);
                    if e.origin == self.me {
                        self.hold_confirmation(view, e.seq, e.op.session, id);
                    }
                    if !fresh {
                        return;
                    }
                }
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
                            client: client.clone(),
                        },
                    );
                }
            }
            OpKind::Join(g) => {
                let (member, at) = member_at();
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
                let (member, at) = member_at();
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
                let members = self.announce(g, MembershipReason::Leave, at.clone());
                // The leaver learns it is out too (the same list, without it), like
                // Spread's self-leave notification.
                if member.node == self.me.id && member.incarnation == self.me.incarnation {
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
                let (member, at) = member_at();
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

    /// Tells every local member of `group` its new member list; returns that list. The
    /// list is built once and shared by every local session's event, so a change costs
    /// O(group) however many sessions (hosted clients included) are told of it.
    fn announce(
        &mut self,
        group: &GroupName,
        reason: MembershipReason,
        at: Stamp,
    ) -> Arc<[Member]> {
        let list = self
            .groups
            .get(group)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let members: Arc<[Member]> = list.iter().map(|r| r.member.clone()).collect();
        let locals: Vec<SessionId> = list
            .iter()
            .filter(|r| r.member.node == self.me.id && r.member.incarnation == self.me.incarnation)
            .map(|r| r.member.session)
            .collect();
        for s in locals {
            self.deliver(
                s,
                Event::Membership {
                    group: group.clone(),
                    view: at.view.clone(),
                    members: Arc::clone(&members),
                    reason,
                    at: at.clone(),
                },
            );
        }
        members
    }

    /// Hands `event` to an open local session, disconnecting it past its queue limit.
    pub(super) fn deliver(&mut self, session: SessionId, event: Event) {
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

    // ------------------------------------------------------------------ at a view change

    /// This node's own memberships as they stand once its own held entries are delivered
    /// (all of them are in any cut, see PROTOCOL.md): what it brings to the next view.
    pub(super) fn own_memberships(&self) -> Vec<GroupRecord> {
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
        own
    }

    /// Coordinator: the group table of new view `view` (of `members` nodes) from the
    /// members' flush reports, sorted and without duplicates.
    ///
    /// Merge rule: a record joined in a view of one node (a node that started or ran cut
    /// off) is stamped anew at the start of this view once it has several members, so it
    /// comes after every record the others bring: a node that joined alone never deposes
    /// a running master (issue 16). See `PROTOCOL.md`.
    pub(super) fn merged_groups<'a>(
        &self,
        view: &ViewId,
        members: usize,
        reports: impl Iterator<Item = &'a [GroupRecord]>,
    ) -> Vec<GroupRecord> {
        let several = members > 1;
        let rejoin = Stamp {
            view: view.clone(),
            seq: 0,
        };
        let mut groups: Vec<GroupRecord> = reports
            .flat_map(|r| r.iter().cloned())
            .map(|mut g| {
                if g.alone && several && !planted!(self, merge_by_stamp_only) {
                    g.stamp = rejoin.clone();
                    g.alone = false;
                }
                g
            })
            .collect();
        groups.sort();
        groups.dedup();
        groups
    }

    /// Installs the group table an `Install` carries (every member's own memberships) in
    /// stamp order; returns the old table.
    pub(super) fn replace_group_table(
        &mut self,
        records: Vec<GroupRecord>,
    ) -> BTreeMap<GroupName, Vec<GroupRecord>> {
        let mut table: BTreeMap<GroupName, Vec<GroupRecord>> = BTreeMap::new();
        for r in records {
            table.entry(r.group.clone()).or_default().push(r);
        }
        for list in table.values_mut() {
            list.sort_by(|a, b| a.stamp.cmp(&b.stamp).then(a.member.cmp(&b.member)));
        }
        std::mem::replace(&mut self.groups, table)
    }

    /// After an install: tells local members of every group whose member list differs
    /// from `old_table` the new list (reason `Network`, stamped at the view's start).
    pub(super) fn announce_network_changes(
        &mut self,
        old_table: &BTreeMap<GroupName, Vec<GroupRecord>>,
    ) {
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
    }
}
