//! Calm start: a group whose nodes start together (within a second of each other, in any
//! order) forms one view of all of them, and once any node has installed that whole view,
//! no node installs a smaller one until the first fault (a partition or a crash). A
//! smaller view there is a split with nothing to cause it: in Walrus, two master
//! Controllers and missed reports for up to a second (issue 24: a stale heartbeat row of
//! the coordinator split three benchmark nodes right after they formed).
//!
//! The simulator starts the nodes at staggered times, plans no fault before the end of
//! the calm phase, and asks [`CalmStart::check_formed`] then whether every node is in one
//! whole view.

use crate::event::ViewChange;
use crate::types::{NodeId, NodeRef, ViewId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[derive(Default)]
pub(crate) struct CalmStart {
    /// The configured nodes (set when the run starts; empty: nothing is checked).
    names: BTreeSet<NodeId>,
    /// When the first fault came (no check after it).
    fault_at: Option<Duration>,
    /// When and where the first whole view was installed.
    whole: Option<(Duration, NodeRef, ViewId)>,
    /// Each node's latest view and its members' names.
    latest: BTreeMap<NodeId, (ViewId, BTreeSet<NodeId>)>,
}

impl CalmStart {
    /// The run starts with these configured nodes.
    pub(crate) fn configure(&mut self, names: &[NodeId]) {
        self.names = names.iter().cloned().collect();
    }

    /// A fault came: the calm phase is over.
    pub(crate) fn fault(&mut self, at: Duration) {
        self.fault_at.get_or_insert(at);
    }

    fn calm(&self) -> bool {
        self.fault_at.is_none() && !self.names.is_empty()
    }

    /// A node installed a view.
    pub(crate) fn on_view(
        &mut self,
        at: Duration,
        who: &NodeRef,
        c: &ViewChange,
        v: &mut Vec<String>,
    ) {
        if !self.calm() {
            return;
        }
        let members: BTreeSet<NodeId> = c.members.iter().map(|m| m.id.clone()).collect();
        let missing: Vec<&NodeId> = self.names.difference(&members).collect();
        if missing.is_empty() {
            self.whole
                .get_or_insert_with(|| (at, who.clone(), c.view.clone()));
        } else if let Some((t, first, view)) = &self.whole {
            v.push(format!(
                "calm start: {who} installed {} without {missing:?} at {at:?}, after {first} \
                 installed the whole group's view {view} at {t:?}, with no fault yet (a split \
                 right after the group formed)",
                c.view
            ));
        }
        self.latest
            .insert(who.id.clone(), (c.view.clone(), members));
    }

    /// The calm phase ends at `at` with no fault so far: every configured node must be in
    /// one view of all of them.
    pub(crate) fn check_formed(&mut self, at: Duration, v: &mut Vec<String>) {
        if !self.calm() {
            return;
        }
        let views: BTreeSet<&ViewId> = self.latest.values().map(|(view, _)| view).collect();
        let whole = self
            .names
            .iter()
            .all(|n| self.latest.get(n).is_some_and(|(_, m)| *m == self.names));
        if views.len() != 1 || !whole {
            let seen: Vec<String> = self
                .latest
                .iter()
                .map(|(n, (view, m))| format!("{n}: {view} {m:?}"))
                .collect();
            v.push(format!(
                "calm start: {} nodes started together are not in one view of all of them at \
                 {at:?} (no fault yet): {seen:?}",
                self.names.len()
            ));
        }
    }

    /// When the first whole view was installed (for the report).
    pub(crate) fn formed_at(&self) -> Option<Duration> {
        self.whole.as_ref().map(|(t, _, _)| *t)
    }
}
