//! No duplication and no creation: a session receives a message at most once, only a
//! message some session sent, with the sender, service, groups and payload it was sent
//! with, and only if it is addressed to a group the session is in.

use super::{entry_of, payload_id, Invariant, Sent};
use crate::event::Event;
use crate::types::{NodeRef, SessionId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[derive(Default)]
pub(super) struct NoDuplication {
    /// The messages each session got, by node incarnation and session.
    seen: BTreeMap<NodeRef, BTreeSet<(SessionId, u64)>>,
}

impl Invariant for NoDuplication {
    fn on_deliver(
        &mut self,
        at: Duration,
        who: &NodeRef,
        session: SessionId,
        e: &Event,
        sent: &BTreeMap<u64, Sent>,
        v: &mut Vec<String>,
    ) {
        let Event::Message {
            sender,
            service,
            groups,
            payload,
            client: None,
        } = e
        else {
            // Client messages: `clients.rs` (a copy sent again has the same payload).
            return;
        };
        let Some(id) = payload_id(payload) else {
            v.push(format!(
                "no creation: {who}/{session} got a payload no one sent at {at:?}"
            ));
            return;
        };
        match sent.get(&id) {
            None => v.push(format!(
                "no creation: {who}/{session} got message {id} that was never sent"
            )),
            Some(s) => {
                if s.node.id != sender.0
                    || s.session != sender.1
                    || s.service != *service
                    || s.groups != *groups
                {
                    v.push(format!(
                        "no creation: message {id} arrived at {who}/{session} altered"
                    ));
                }
            }
        }
        if !entry_of(&mut self.seen, who).insert((session, id)) {
            v.push(format!(
                "no duplication: {who}/{session} got message {id} twice (at {at:?})"
            ));
        }
    }
}
