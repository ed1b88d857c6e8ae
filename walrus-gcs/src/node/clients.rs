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

    /// A client message of this node was delivered here in `view` at `seq`: it is
    /// confirmed to its client once it cannot be lost with this node (see
    /// [`Node::confirm_clients`]).
    pub(super) fn hold_confirmation(
        &mut self,
        view: &ViewId,
        seq: u64,
        session: SessionId,
        id: &ClientMsgId,
    ) {
        self.to_confirm
            .push_back((view.clone(), seq, session, id.clone()));
    }

    /// Confirms the client messages delivered here that cannot be lost: those of this
    /// view up to the point every member has delivered (from the members.
    /// `Ack`s), and those of an earlier view (its flush is
    /// over: every member that moved on with this node delivered the same cut). A
    /// message every member of its view delivered was delivered by every member that
    /// moves on from that view, whichever component it moves into (`PROTOCOL.md`,
    /// "Clients"). Confirming at the stable point lost messages: a member that learned
    /// "committed" and "stable" from the `Ack`s it got confirmed, and a member that
    /// missed the submitter's `Ack` flushed without it once the confirming member and the
    /// sequencer were gone (planted: `PlantedBugs::confirm_when_stable`).
    pub(super) fn confirm_clients(&mut self) {
        let upto = if planted!(self, confirm_when_stable) {
            self.stable
        } else {
            self.delivered_all
        };
        while let Some((view, seq, _, _)) = self.to_confirm.front() {
            if *view == self.view && *seq > upto {
                return;
            }
            let Some((view, _, session, id)) = self.to_confirm.pop_front() else {
                return;
            };
            self.outputs
                .push_back(Output::Confirmed { session, id, view });
        }
    }

    /// A client message is delivered here in `view` at `seq` (a copy dropped as already
    /// delivered too): once every member has reported delivering up to it, its member
    /// may confirm it (see `ordering.rs`, `report_delivered` and `seq_tell`).
    pub(super) fn client_delivered(&mut self, view: &ViewId, seq: u64, id: &ClientMsgId) {
        if *view == self.view {
            self.last_client_seq = self.last_client_seq.max(seq);
        }
        #[cfg(any(test, feature = "testing"))]
        self.client_log
            .entry(view.clone())
            .or_default()
            .insert(id.clone());
        #[cfg(not(any(test, feature = "testing")))]
        let _ = id;
    }

    /// The client messages this node delivered in `view` (copies dropped as already
    /// delivered included), forgotten here once taken (feature `testing` only: the
    /// simulator checks that a node moving on from a view delivered every client
    /// message confirmed in it).
    #[cfg(any(test, feature = "testing"))]
    pub fn take_client_deliveries(&mut self, view: &ViewId) -> BTreeSet<ClientMsgId> {
        self.client_log.remove(view).unwrap_or_default()
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
