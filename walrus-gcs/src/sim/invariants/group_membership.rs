//! Group membership: every receiver of one membership change gets the same member list
//! (so one first member per group at each point of each view), contains itself, and a
//! join never changes who is first.

use super::{Invariant, Sent, SessionKey};
use crate::event::{Event, MembershipReason};
use crate::types::{GroupName, Member, NodeRef, SessionId, Stamp};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Default)]
pub(super) struct GroupMembership {
    lists: BTreeMap<(GroupName, Stamp), Vec<Member>>,
    last: BTreeMap<(SessionKey, GroupName), Vec<Member>>,
}

impl Invariant for GroupMembership {
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
        let key = ((who.clone(), session), group.clone());
        if !members.contains(&me) {
            if *reason == MembershipReason::Leave {
                self.last.remove(&key); // its own leave
            } else {
                v.push(format!(
                    "membership: {me} got a list of {group} without itself at {at:?}"
                ));
            }
        }
        match self.lists.get(&(group.clone(), stamp.clone())) {
            Some(l) if l != members => v.push(format!(
                "membership: change {group}@{}:{} has lists {l:?} and {members:?} (at {me})",
                stamp.view, stamp.seq
            )),
            Some(_) => {}
            None => {
                self.lists
                    .insert((group.clone(), stamp.clone()), members.clone());
            }
        }
        if !members.contains(&me) {
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
        self.last.insert(key, members.clone());
    }
}
