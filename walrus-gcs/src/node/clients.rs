//! Clients (`PROTOCOL.md`, "Clients"): a multicast a member sends for a client's session
//! it hosts, and the rule that a copy a client sent again is delivered nowhere twice.
//!
//! A client is not in views: a member hosts its sessions as local sessions, so its
//! joins, leaves and multicasts are the member's operations, ordered like any other.
//! What is particular to clients is that a client which loses its member re-attaches to
//! another and sends again what it was not told was delivered. Each such message
//! carries a [`ClientMsgId`]; [`ClientsSeen`] keeps, per client incarnation, the highest
//! counter this node has delivered, and [`Node::apply`] delivers a client message only
//! above it. Every member applies the same entries of a view in the same order, so
//! members with the same history decide alike; a member that was elsewhere (another
//! component, a restart) decides from its own deliveries, which is what "delivered at
//! most once to each session" needs.

use super::*;

/// How many incarnations of one client name are remembered (a message of an older one
/// is dropped: that client restarted twice since).
const INCARNATIONS_KEPT: usize = 2;

/// The highest delivered counter of each client incarnation (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct ClientsSeen {
    by_client: BTreeMap<NodeId, BTreeMap<Incarnation, u64>>,
}

impl ClientsSeen {
    /// Whether the message `id` is new here (above its incarnation's highest delivered
    /// counter); if so it becomes the highest.
    pub(crate) fn fresh(&mut self, id: &ClientMsgId) -> bool {
        let incs = self.by_client.entry(id.client.clone()).or_default();
        if incs.len() >= INCARNATIONS_KEPT
            && incs
                .keys()
                .next()
                .is_some_and(|oldest| id.incarnation < *oldest)
        {
            return false;
        }
        let high = incs.entry(id.incarnation).or_insert(0);
        if id.counter <= *high {
            return false;
        }
        *high = id.counter;
        while incs.len() > INCARNATIONS_KEPT {
            incs.pop_first();
        }
        true
    }
}

impl Node {
    /// [`Node::multicast`] for a client's session hosted here (`session` is the local
    /// session standing for it): the message carries the client's `id`, this node
    /// reports [`Output::Confirmed`] once it is delivered here, and a copy with the same
    /// id (the client sent it again through another member) is delivered to no session
    /// that got it already.
    pub fn multicast_for_client(
        &mut self,
        _now: Instant,
        session: SessionId,
        id: ClientMsgId,
        service: Service,
        groups: &[GroupName],
        payload: Vec<u8>,
    ) -> Result<(), GcsError> {
        self.multicast_op(session, service, groups, payload, Some(id))
    }

    /// Applying a client's message: whether to hand it to the local sessions (a copy
    /// already delivered here is not).
    pub(super) fn client_message_fresh(&mut self, id: &ClientMsgId) -> bool {
        self.clients_seen.fresh(id) || planted!(self, client_no_dedup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(inc: u64, counter: u64) -> ClientMsgId {
        ClientMsgId {
            client: NodeId::new("client.a"),
            incarnation: Incarnation(inc),
            counter,
        }
    }

    #[test]
    fn a_copy_is_not_fresh_and_counters_only_grow() {
        let mut seen = ClientsSeen::default();
        assert!(seen.fresh(&id(1, 1)));
        assert!(!seen.fresh(&id(1, 1)));
        assert!(seen.fresh(&id(1, 2)));
        assert!(!seen.fresh(&id(1, 1)));
        // A restarted client counts from 1 again.
        assert!(seen.fresh(&id(2, 1)));
        assert!(seen.fresh(&id(3, 1)));
        // Two restarts later, the first incarnation is forgotten and refused.
        assert!(!seen.fresh(&id(1, 9)));
        assert!(seen.fresh(&id(2, 2)));
    }
}
