//! FIFO per sender: a session receives the messages of one sending session in the order
//! they were sent (both services).

use super::{payload_id, Invariant, Sent, SessionKey};
use crate::event::Event;
use crate::types::{NodeRef, SessionId};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Default)]
pub(super) struct ReliableFifo {
    last: BTreeMap<(SessionKey, SessionKey), u64>,
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
        let key = ((s.node.clone(), s.session), (who.clone(), session));
        if let Some(prev) = self.last.get(&key) {
            if *prev >= s.index {
                v.push(format!(
                    "FIFO: {who}/{session} got message #{} of {}/{} after #{prev}",
                    s.index, s.node, s.session
                ));
            }
        }
        self.last.insert(key, s.index);
    }
}
