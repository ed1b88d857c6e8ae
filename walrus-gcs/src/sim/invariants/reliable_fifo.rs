//! FIFO per sender: a session receives the messages of one sending session in the order
//! they were sent (both services).

use super::{entry_of, payload_id, Invariant, Sent};
use crate::event::Event;
use crate::types::{NodeRef, SessionId};
use std::collections::BTreeMap;
use std::time::Duration;

/// The index of the last message of each sending session (node incarnation, then
/// session) a receiving session got.
type BySender = BTreeMap<NodeRef, BTreeMap<SessionId, Option<u64>>>;

#[derive(Default)]
pub(super) struct ReliableFifo {
    /// The index of the last message of each sending session (node incarnation, then
    /// session) each receiving session (node incarnation, then session) got.
    last: BTreeMap<NodeRef, BTreeMap<SessionId, BySender>>,
}

impl Invariant for ReliableFifo {
    fn on_deliver(
        &mut self,
        _at: Duration,
        who: &NodeRef,
        session: SessionId,
        e: &Event,
        sent: &BTreeMap<u64, Sent>,
        v: &mut Vec<String>,
    ) {
        let Event::Message { payload, .. } = e else {
            return;
        };
        let Some(s) = payload_id(payload).and_then(|id| sent.get(&id)) else {
            return;
        };
        let by_sender = entry_of(&mut self.last, who).entry(session).or_default();
        let last = entry_of(by_sender, &s.node).entry(s.session).or_default();
        if let Some(prev) = last.filter(|prev| *prev >= s.index) {
            v.push(format!(
                "FIFO: {who}/{session} got message #{} of {}/{} after #{prev}",
                s.index, s.node, s.session
            ));
        }
        *last = Some(s.index);
    }
}
