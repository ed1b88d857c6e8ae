//! View agreement: two installations of one view id list the same members; each node
//! incarnation installs ever larger ids; each installer is a member of its view.

use super::Invariant;
use crate::event::ViewChange;
use crate::types::{NodeRef, ViewId};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Default)]
pub(super) struct ViewAgreement {
    members: BTreeMap<ViewId, Vec<NodeRef>>,
    last: BTreeMap<NodeRef, ViewId>,
}

impl Invariant for ViewAgreement {
    fn on_view(&mut self, at: Duration, who: &NodeRef, c: &ViewChange, v: &mut Vec<String>) {
        if !c.members.contains(who) {
            v.push(format!(
                "view agreement: {who} installed {} without being a member at {at:?}",
                c.view
            ));
        }
        match self.members.get(&c.view) {
            Some(m) if *m != c.members => v.push(format!(
                "view agreement: {who} installed {} with members {:?}, another node with {:?}",
                c.view, c.members, m
            )),
            Some(_) => {}
            None => {
                self.members.insert(c.view.clone(), c.members.clone());
            }
        }
        if let Some(prev) = self.last.get(who) {
            if *prev >= c.view {
                v.push(format!(
                    "view agreement: {who} installed {} after {prev} (ids must grow)",
                    c.view
                ));
            }
        }
        self.last.insert(who.clone(), c.view.clone());
    }
}
