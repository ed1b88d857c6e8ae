//! Virtual synchrony: nodes that move together from view V to view W delivered the same
//! operations in V, in the same order (same count and digest of the delivered sequence).

use super::Invariant;
use crate::event::ViewChange;
use crate::types::{NodeRef, ViewId};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Default)]
pub(super) struct VirtualSynchrony {
    moves: BTreeMap<(ViewId, ViewId), (u64, u64, NodeRef)>,
}

impl Invariant for VirtualSynchrony {
    fn on_view(&mut self, _at: Duration, who: &NodeRef, c: &ViewChange, v: &mut Vec<String>) {
        let Some(prev) = &c.previous else { return };
        let key = (prev.clone(), c.view.clone());
        match self.moves.get(&key) {
            Some((n, d, other)) if (*n, *d) != (c.delivered, c.digest) => v.push(format!(
                "virtual synchrony: {who} and {other} moved from {prev} to {} but delivered \
                 {} and {n} operations (digests {:x} / {d:x})",
                c.view, c.delivered, c.digest
            )),
            Some(_) => {}
            None => {
                self.moves.insert(key, (c.delivered, c.digest, who.clone()));
            }
        }
    }
}
