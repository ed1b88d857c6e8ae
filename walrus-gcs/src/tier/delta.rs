//! Membership deltas on the client link: a group's member list crosses the link once
//! (a snapshot), then each change carries only who left and who joined.
//!
//! A member's core hands every hosted session of a group the group's whole member list
//! on every change (`Event::Membership`; one list per change, shared by all of its
//! events). Forwarded as is, a wave of c joins to a group
//! of c clients would cost O(c²) records per client link. The member's [`ClientHost`]
//! keeps, per group, the last list it forwarded ([`GroupLists`]) and sends a
//! [`MemberChange::Delta`] from it to each client session that holds that list (the
//! same stamp); the client's [`ClientCore`] keeps each session's list ([`apply`]) and
//! rebuilds the whole `Event::Membership` its application receives. A client session
//! without that list (it just joined, or attached again) gets one
//! [`MemberChange::Snapshot`].
//!
//! [`ClientHost`]: super::ClientHost
//! [`ClientCore`]: super::ClientCore

use crate::types::{GroupName, Member, SessionId, Stamp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// How a `ClientNotice::Membership` gives the group's new member list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberChange {
    /// The whole list.
    Snapshot(Vec<Member>),
    /// The list of the change stamped `base` (which the client session holds), with the
    /// members at positions `left` (ascending, in the base list) taken out, then each of
    /// `joined` inserted at its position (ascending, in the new list).
    Delta {
        /// The change whose list this one starts from.
        base: Stamp,
        /// Positions in the base list of the members that are gone.
        left: Vec<u32>,
        /// Positions in the new list of the members that are new, and who they are.
        joined: Vec<(u32, Member)>,
    },
}

/// A delta: positions of who left (in the old list), and who joined where (in the new).
pub type Delta = (Vec<u32>, Vec<(u32, Member)>);

/// What changed from `old` to `new`: `None` when the members in both do not keep their
/// relative order (a merge may restamp records), so only a snapshot says it.
pub fn diff(old: &[Member], new: &[Member]) -> Option<Delta> {
    let in_new: BTreeSet<&Member> = new.iter().collect();
    let in_old: BTreeSet<&Member> = old.iter().collect();
    let mut left = Vec::new();
    for (i, m) in old.iter().enumerate() {
        if !in_new.contains(m) {
            left.push(u32::try_from(i).ok()?);
        }
    }
    let mut joined = Vec::new();
    for (i, m) in new.iter().enumerate() {
        if !in_old.contains(m) {
            joined.push((u32::try_from(i).ok()?, m.clone()));
        }
    }
    let kept_old = old.iter().filter(|m| in_new.contains(m));
    let kept_new = new.iter().filter(|m| in_old.contains(m));
    if !kept_old.eq(kept_new) {
        return None;
    }
    Some((left, joined))
}

/// Applies a delta to `base`; `None` if it does not fit (positions out of order or out
/// of range), which a well-behaved member never sends.
pub fn apply(base: &[Member], left: &[u32], joined: &[(u32, Member)]) -> Option<Vec<Member>> {
    let gone = left.iter().map(|&i| i as usize);
    if !ascending(gone.clone()) || left.last().is_some_and(|&i| i as usize >= base.len()) {
        return None;
    }
    if !ascending(joined.iter().map(|(i, _)| *i as usize)) {
        return None;
    }
    let mut gone = gone.peekable();
    let mut out = Vec::with_capacity(base.len() - left.len() + joined.len());
    for (i, m) in base.iter().enumerate() {
        if gone.next_if_eq(&i).is_none() {
            out.push(m.clone());
        }
    }
    for (i, m) in joined {
        let i = *i as usize;
        if i > out.len() {
            return None;
        }
        out.insert(i, m.clone());
    }
    Some(out)
}

fn ascending(mut it: impl Iterator<Item = usize>) -> bool {
    let Some(mut prev) = it.next() else {
        return true;
    };
    for x in it {
        if x <= prev {
            return false;
        }
        prev = x;
    }
    true
}

/// One group's list as last forwarded, and the delta that led to it.
#[derive(Debug)]
struct Forwarded {
    at: Stamp,
    /// The list the core handed out for `at` (shared with its events, not copied).
    members: Arc<[Member]>,
    /// From which change's list, and what changed (`None`: not expressible as a delta).
    from: Option<(Stamp, Arc<Delta>)>,
    /// Who that change took out (with `from` only): tells a leave's leaver from the
    /// sessions that stay without searching the list for each of them.
    left: Vec<Member>,
}

/// The member's side: per group, the list last forwarded to its hosted sessions, and
/// per hosted session and group the change whose list that session holds.
///
/// Every hosted session of a group is told of each change: the delta is computed once
/// per change (when the first of them is told), and each session then costs O(log) plus
/// the size of the delta, so a change costs the member O(group + sessions), not
/// O(sessions × group).
#[derive(Debug, Default)]
pub struct GroupLists {
    groups: BTreeMap<GroupName, Forwarded>,
    /// (group, the node's session) → the stamp of the list the client holds.
    holds: BTreeMap<(GroupName, SessionId), Stamp>,
    /// The node's session → the groups in `holds` for it, so a session's end costs
    /// O(its groups), not a scan of every group's sessions.
    by_session: BTreeMap<SessionId, BTreeSet<GroupName>>,
}

impl GroupLists {
    /// How to tell the node's hosted session `holder` the list `members` of `group` at
    /// `at` (the change stamped `at`; every session gets the same list for it). `leave`:
    /// the change is a leave, which may be the holder's own (then it holds nothing
    /// more).
    pub fn change(
        &mut self,
        group: &GroupName,
        holder: &Member,
        members: Arc<[Member]>,
        at: &Stamp,
        leave: bool,
    ) -> MemberChange {
        let session = holder.session;
        let f = match self.groups.get_mut(group) {
            Some(f) if f.at == *at => f,
            Some(f) => {
                let d = diff(&f.members, &members).map(Arc::new);
                f.left = d
                    .iter()
                    .flat_map(|d| d.0.iter())
                    .filter_map(|&i| f.members.get(i as usize).cloned())
                    .collect();
                let prev = std::mem::replace(&mut f.at, at.clone());
                f.from = d.map(|d| (prev, d));
                f.members = members;
                f
            }
            None => self.groups.entry(group.clone()).or_insert(Forwarded {
                at: at.clone(),
                members,
                from: None,
                left: Vec::new(),
            }),
        };
        let key = (group.clone(), session);
        let held = self.holds.insert(key, at.clone());
        if held.is_none() {
            self.by_session
                .entry(session)
                .or_default()
                .insert(group.clone());
        }
        let in_list = !leave
            || match f.from {
                // The list before held every session told of this change but a joiner.
                Some(_) => !f.left.contains(holder),
                None => f.members.contains(holder),
            };
        let change = match (&f.from, held) {
            (Some((base, d)), Some(h)) if *base == h => MemberChange::Delta {
                base: base.clone(),
                left: d.0.clone(),
                joined: d.1.clone(),
            },
            _ => MemberChange::Snapshot(f.members.to_vec()),
        };
        if !in_list {
            // The session left the group (this is its own leave): it holds nothing more.
            self.forget(group, session);
        }
        change
    }

    /// The node's hosted `session` is gone: it holds no list.
    pub fn forget_session(&mut self, session: SessionId) {
        for g in self.by_session.remove(&session).unwrap_or_default() {
            self.forget(&g, session);
        }
    }

    fn forget(&mut self, group: &GroupName, session: SessionId) {
        self.holds.remove(&(group.clone(), session));
        if let Some(groups) = self.by_session.get_mut(&session) {
            groups.remove(group);
            if groups.is_empty() {
                self.by_session.remove(&session);
            }
        }
        let still = self
            .holds
            .range((group.clone(), SessionId(0))..)
            .next()
            .is_some_and(|((g, _), _)| g == group);
        if !still {
            self.groups.remove(group);
        }
    }

    /// How many groups have a list kept (for tests).
    pub fn groups(&self) -> usize {
        self.groups.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Incarnation, NodeId, ViewId};

    fn m(node: &str, s: u64) -> Member {
        Member {
            node: NodeId::new(node),
            incarnation: Incarnation(1),
            session: SessionId(s),
        }
    }

    fn stamp(seq: u64) -> Stamp {
        Stamp {
            view: ViewId {
                counter: 1,
                coordinator: NodeId::new("m1"),
                incarnation: Incarnation(1),
            },
            seq,
        }
    }

    #[test]
    fn a_gone_session_holds_no_list_and_an_unheld_group_is_dropped() {
        let mut lists = GroupLists::default();
        let (g1, g2) = (GroupName::new("g1"), GroupName::new("g2"));
        let (s1, s2) = (m("h", 1), m("h", 2));
        let both: Arc<[Member]> = vec![s1.clone(), s2.clone()].into();
        for (i, g) in [&g1, &g2].into_iter().enumerate() {
            for s in [&s1, &s2] {
                lists.change(g, s, both.clone(), &stamp(i as u64 + 1), false);
            }
        }
        assert_eq!(lists.by_session.len(), 2);
        lists.forget_session(s1.session);
        assert_eq!(lists.groups(), 2, "s2 still holds both lists");
        assert!(!lists.holds.keys().any(|(_, s)| *s == s1.session));
        // s2 leaves g1 on its own (a leave that takes it out of the list)...
        let only_s1: Arc<[Member]> = vec![s1.clone()].into();
        lists.change(&g1, &s2, only_s1, &stamp(3), true);
        assert_eq!(lists.groups(), 1);
        // ...then is gone: nothing is held, and forgetting it twice is harmless.
        lists.forget_session(s2.session);
        lists.forget_session(s2.session);
        assert_eq!(lists.groups(), 0);
        assert!(lists.holds.is_empty() && lists.by_session.is_empty());
    }

    #[test]
    fn a_delta_rebuilds_the_new_list() {
        let old = vec![m("a", 1), m("b", 1), m("c", 1), m("d", 1)];
        let new = vec![m("a", 1), m("c", 1), m("e", 1), m("d", 1), m("f", 1)];
        let (left, joined) = diff(&old, &new).unwrap();
        assert_eq!(left, vec![1]);
        assert_eq!(joined.len(), 2);
        assert_eq!(apply(&old, &left, &joined).unwrap(), new);
        // Members swapped: no delta.
        assert!(diff(&old, &[m("b", 1), m("a", 1)]).is_none());
        // Bad positions are refused, not a panic.
        assert!(apply(&old, &[9], &[]).is_none());
        assert!(apply(&old, &[2, 1], &[]).is_none());
        assert!(apply(&old, &[], &[(7, m("x", 1))]).is_none());
        assert!(apply(&old, &[], &[(1, m("x", 1)), (1, m("y", 1))]).is_none());
    }

    /// Random lists: diff then apply gives the new list whenever diff says it can.
    #[test]
    fn diff_and_apply_agree_on_random_lists() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut list: Vec<Member> = Vec::new();
        let mut id = 0;
        for _ in 0..2000 {
            let old = list.clone();
            for _ in 0..next() % 4 {
                if !list.is_empty() && next() % 2 == 0 {
                    let i = (next() % list.len() as u64) as usize;
                    list.remove(i);
                } else {
                    id += 1;
                    let i = (next() % (list.len() as u64 + 1)) as usize;
                    list.insert(i, m("n", id));
                }
            }
            let (left, joined) = diff(&old, &list).unwrap();
            assert_eq!(apply(&old, &left, &joined).as_ref(), Some(&list));
        }
    }

    #[test]
    fn a_session_gets_a_delta_only_from_the_list_it_holds() {
        let g = GroupName::new("g");
        let mut lists = GroupLists::default();
        let (s1, s2) = (m("m1", 1), m("m1", 2));
        let l1 = vec![m("m1", 1)];
        assert_eq!(
            lists.change(&g, &s1, l1.clone().into(), &stamp(1), false),
            MemberChange::Snapshot(l1.clone())
        );
        let l2 = vec![m("m1", 1), m("m1", 2)];
        // s1 holds stamp 1: a delta; s2 (just joined) holds nothing: a snapshot.
        assert!(matches!(
            lists.change(&g, &s1, l2.clone().into(), &stamp(2), false),
            MemberChange::Delta { ref joined, .. } if joined.len() == 1
        ));
        assert_eq!(
            lists.change(&g, &s2, l2.clone().into(), &stamp(2), false),
            MemberChange::Snapshot(l2.clone())
        );
        // s1 leaves: its own leave event (the list without it) ends what it holds.
        let l3 = vec![m("m1", 2)];
        assert!(matches!(
            lists.change(&g, &s2, l3.clone().into(), &stamp(3), true),
            MemberChange::Delta { ref left, .. } if left == &vec![0]
        ));
        assert!(matches!(
            lists.change(&g, &s1, l3.clone().into(), &stamp(3), true),
            MemberChange::Delta { .. }
        ));
        lists.forget_session(s2.session);
        assert_eq!(lists.groups(), 0, "no session holds a list of g");
    }
}
