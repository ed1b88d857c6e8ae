//! Total order: there is one order of all Agreed messages and membership changes that
//! every session's delivery sequence follows, also across partitions (the graph of
//! "delivered just before" edges of all sessions has no cycle).

use super::{entry_of, payload_id, Invariant, Sent};
use crate::event::Event;
use crate::types::{GroupName, NodeRef, Service, SessionId, Stamp};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Key {
    Msg(u64),
    /// A client's message, per copy (the member and session that sent it): a client
    /// that re-attached sends again, under its id, what it was not told was delivered.
    Copy(u64, crate::types::NodeId, SessionId),
    Change(GroupName, Stamp),
}

#[derive(Default)]
pub(super) struct TotalOrder {
    /// The last key each session (node incarnation, then session) got.
    last: BTreeMap<NodeRef, BTreeMap<SessionId, Key>>,
    edges: BTreeSet<(Key, Key)>,
}

impl Invariant for TotalOrder {
    fn on_deliver(
        &mut self,
        _at: Duration,
        who: &NodeRef,
        session: SessionId,
        e: &Event,
        _sent: &BTreeMap<u64, Sent>,
        _v: &mut Vec<String>,
    ) {
        let key = match e {
            Event::Message {
                service: Service::Agreed,
                payload,
                client,
                sender,
                ..
            } => match (payload_id(payload), client) {
                (Some(id), None) => Key::Msg(id),
                (Some(id), Some(_)) => Key::Copy(id, sender.0.clone(), sender.1),
                (None, _) => return,
            },
            Event::Membership { group, at, .. } => Key::Change(group.clone(), at.clone()),
            _ => return,
        };
        if let Some(prev) = entry_of(&mut self.last, who).insert(session, key.clone()) {
            if prev != key {
                self.edges.insert((prev, key));
            }
        }
    }

    fn at_end(
        &mut self,
        _end: &super::EndState,
        _sent: &BTreeMap<u64, Sent>,
        _r: &super::Requests,
        v: &mut Vec<String>,
    ) {
        // Kahn's algorithm: whatever is left has a cycle.
        let mut indeg: BTreeMap<&Key, usize> = BTreeMap::new();
        let mut out: BTreeMap<&Key, Vec<&Key>> = BTreeMap::new();
        for (a, b) in &self.edges {
            indeg.entry(a).or_insert(0);
            *indeg.entry(b).or_insert(0) += 1;
            out.entry(a).or_default().push(b);
        }
        let mut ready: VecDeque<&Key> = indeg
            .iter()
            .filter(|(_, d)| **d == 0)
            .map(|(k, _)| *k)
            .collect();
        let mut done = 0;
        while let Some(k) = ready.pop_front() {
            done += 1;
            for n in out.get(k).into_iter().flatten() {
                if let Some(d) = indeg.get_mut(n) {
                    *d -= 1;
                    if *d == 0 {
                        ready.push_back(n);
                    }
                }
            }
        }
        if done < indeg.len() {
            let stuck: Vec<String> = indeg
                .iter()
                .filter(|(_, d)| **d > 0)
                .take(6)
                .map(|(k, _)| format!("{k:?}"))
                .collect();
            v.push(format!(
                "total order: sessions delivered Agreed messages/membership changes in \
                 contradicting orders ({} items in cycles, e.g. {})",
                indeg.len() - done,
                stuck.join(", ")
            ));
        }
    }
}
