//! Group membership: receivers of one membership change that move on together get the
//! same member list (so one first member per group at each point of each view), every
//! list contains its receiver (but for its own leave), and a join never changes who is
//! first.
//!
//! "Move on together": during a flush a component may deliver an operation of the old
//! view with a hole where an operation of a node outside the component is unknown to it
//! (extended virtual synchrony's transitional delivery), so two components can show
//! different lists at the same point, differing only in members that are leaving them.
//! Lists are therefore compared among receivers that install the same next view (and
//! among those that never leave the view).

use super::{EndState, Invariant, Sent, SessionKey};
use crate::event::{Event, MembershipReason, ViewChange};
use crate::types::{GroupName, Member, NodeRef, SessionId, Stamp, ViewId};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
pub(super) struct GroupMembership {
    /// Every list received: (receiver node, group, stamp) → list.
    seen: Vec<(NodeRef, GroupName, Stamp, Arc<[Member]>)>,
    /// For each node incarnation, the view it installed after each view it left.
    next: BTreeMap<(NodeRef, ViewId), ViewId>,
    last: BTreeMap<(SessionKey, GroupName), Arc<[Member]>>,
}

impl Invariant for GroupMembership {
    fn on_view(&mut self, _at: Duration, who: &NodeRef, c: &ViewChange, _v: &mut Vec<String>) {
        if let Some(prev) = &c.previous {
            self.next
                .insert((who.clone(), prev.clone()), c.view.clone());
        }
    }

    fn on_deliver(
        &mut self,
        at: Duration,
        who: &NodeRef,
        session: SessionId,
        e: &Event,
        _sent: &BTreeMap<u64, Sent>,
        v: &mut Vec<String>,
    ) {
        let Event::Membership {
            group,
            members,
            reason,
            at: stamp,
            ..
        } = e
        else {
            return;
        };
        let me = Member {
            node: who.id.clone(),
            incarnation: who.incarnation,
            session,
        };
        self.seen.push((
            who.clone(),
            group.clone(),
            stamp.clone(),
            Arc::clone(members),
        ));
        let key = ((who.clone(), session), group.clone());
        if !members.contains(&me) {
            if *reason == MembershipReason::Leave {
                self.last.remove(&key); // its own leave
            } else {
                v.push(format!(
                    "membership: {me} got a list of {group} without itself at {at:?}"
                ));
            }
            return;
        }
        if let Some(prev) = self.last.get(&key) {
            if *reason == MembershipReason::Join
                && prev.contains(&me)
                && prev.first() != members.first()
            {
                v.push(format!(
                    "membership: a join changed the first member of {group} from {:?} to {:?} (at {me})",
                    prev.first(),
                    members.first()
                ));
            }
        }
        self.last.insert(key, Arc::clone(members));
    }

    fn at_end(
        &mut self,
        _end: &EndState,
        _sent: &BTreeMap<u64, Sent>,
        _r: &super::Requests,
        v: &mut Vec<String>,
    ) {
        type Point = (GroupName, Stamp, Option<ViewId>);
        let mut lists: BTreeMap<Point, (&Arc<[Member]>, &NodeRef)> = BTreeMap::new();
        for (who, group, stamp, members) in &self.seen {
            let next = self.next.get(&(who.clone(), stamp.view.clone())).cloned();
            let key = (group.clone(), stamp.clone(), next);
            match lists.get(&key) {
                Some((l, other)) if *l != members => {
                    v.push(format!(
                        "membership: change {group}@{}:{} shows {who} the list {members:?} but \
                         {other} the list {l:?}",
                        stamp.view, stamp.seq
                    ));
                    return;
                }
                Some(_) => {}
                None => {
                    lists.insert(key, (members, who));
                }
            }
        }
    }
}
