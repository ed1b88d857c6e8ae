//! Self-delivery: a session that is a member of a destination group when it sends, and
//! stays one, receives its own message, unless its node crashes or the session closes.

use super::{EndState, Invariant, Request, Requests, Sent, SessionKey};
use crate::event::Event;
use crate::types::{NodeRef, SessionId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[derive(Default)]
pub(super) struct SelfDelivery {
    /// Messages their sending session got back (the only deliveries this checks).
    got: BTreeSet<(SessionKey, u64)>,
}

impl Invariant for SelfDelivery {
    fn on_deliver(
        &mut self,
        _at: Duration,
        who: &NodeRef,
        session: SessionId,
        e: &Event,
        sent: &BTreeMap<u64, Sent>,
        _v: &mut Vec<String>,
    ) {
        if let Event::Message { payload, .. } = e {
            if let Some(id) = super::payload_id(payload) {
                // `at_end` looks up each message at its sender only.
                if sent
                    .get(&id)
                    .is_some_and(|s| s.node == *who && s.session == session)
                {
                    self.got.insert(((who.clone(), session), id));
                }
            }
        }
    }

    fn at_end(
        &mut self,
        end: &EndState,
        sent: &BTreeMap<u64, Sent>,
        requests: &Requests,
        v: &mut Vec<String>,
    ) {
        let closed: BTreeSet<&SessionKey> = end.closed.iter().collect();
        let mut missing = Vec::new();
        for s in sent.values() {
            let key = (s.node.clone(), s.session);
            if !end.alive.contains(&s.node) || closed.contains(&key) {
                continue;
            }
            let member_throughout = s.groups.iter().any(|g| {
                let Some(hist) = requests.get(&(key.clone(), g.clone())) else {
                    return false;
                };
                // In the session's own order, not by time: a join made in the same
                // virtual instant as the multicast but after it does not count (seed
                // 8832: `Join(g1)` right after a multicast to g1 and g2, at 51.339051 s).
                let joined_before = hist
                    .iter()
                    .rev()
                    .find(|r| r.after <= s.index)
                    .is_some_and(|r| r.request == Request::Join);
                let left_after = hist
                    .iter()
                    .any(|r| r.after > s.index && r.request == Request::Leave);
                joined_before && !left_after
            });
            if member_throughout && !self.got.contains(&(key.clone(), s.id)) {
                let history: Vec<_> = s
                    .groups
                    .iter()
                    .map(|g| (g, requests.get(&(key.clone(), g.clone()))))
                    .collect();
                missing.push(format!(
                    "{} by {}/{} (its multicast #{}) at {:?} to {:?}; its requests {:?}",
                    s.id, s.node, s.session, s.index, s.at, s.groups, history
                ));
            }
        }
        if !missing.is_empty() {
            v.push(format!(
                "self-delivery: {} messages never reached their live sender, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            ));
        }
    }
}
