//! Isolated start (issue 16): a node that starts while cut off from the others, and whose
//! sessions join a group alone there, never goes first in that group after the heal — the
//! running first member (the master Controller, for Walrus) stays first.
//!
//! The simulator runs this after the liveness phase: every node but one joins a group
//! `controllers` in the common view, the one left out is crashed and restarted inside a
//! cut (it joins `controllers` alone, in a young view of its own, whose join stamp sorts
//! before the others' by view counter), and the cut heals after more than the
//! Controller's join grace. Checked: every list of that group delivered anywhere that
//! contains the running first member has it first; and (by the duplicate checker's
//! one-view check) one view of every node within the merge time after the heal.

use super::{Invariant, Sent};
use crate::event::Event;
use crate::types::{GroupName, Member, NodeRef, SessionId};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Default)]
pub(crate) struct IsolatedStart {
    /// The running first member of `group`, and the node restarted inside the cut.
    active: Option<(Member, NodeRef, GroupName)>,
}

impl IsolatedStart {
    /// The scenario starts: `first` is the first member of `group` everywhere.
    pub(crate) fn started(&mut self, first: Member, restarted: NodeRef, group: GroupName) {
        self.active = Some((first, restarted, group));
    }
}

impl Invariant for IsolatedStart {
    fn on_deliver(
        &mut self,
        at: Duration,
        who: &NodeRef,
        _session: SessionId,
        e: &Event,
        _sent: &BTreeMap<u64, Sent>,
        v: &mut Vec<String>,
    ) {
        let Some((first, restarted, group)) = &self.active else {
            return;
        };
        let Event::Membership {
            group: g, members, ..
        } = e
        else {
            return;
        };
        if g != group || !members.contains(first) || members.first() == Some(first) {
            return;
        }
        v.push(format!(
            "isolated start: {who} sees {:?} first in {group} at {at:?}, not the running first member {first} (after {restarted} started inside a cut)",
            members.first().map(ToString::to_string)
        ));
    }
}
