//! Clients (`PROTOCOL.md`, "Clients"): a client's messages, seen at every session that
//! gets them (the members' sessions, hosted or local, and the clients' own), are
//! * created only by their client, with its groups and service (no creation);
//! * delivered at most once per session, although a client that re-attached sends again
//!   under the same id what it was not told was delivered (no duplication);
//! * delivered in the client's order (FIFO per client incarnation, across members);
//! * confirmed to their client only by a member that delivered them;
//! * when confirmed by a member while it is still in the view it was delivered in (`V`),
//!   delivered in `V` by every node that moves on from `V` (whichever component it
//!   moves into): a client told "delivered" that fails over to any member loses nothing
//!   (`PROTOCOL.md`, "Clients"; a message confirmed after its view's flush was delivered
//!   by the members that moved on with its member: virtual synchrony).
//!
//! Once the cluster is quiet every live client is attached with nothing left
//! unconfirmed, and its probe reaches every probe session (checked by the simulator,
//! reported through [`ClientChecks::violation`]).

use crate::event::Event;
use crate::types::{ClientMsgId, GroupName, Incarnation, NodeId, NodeRef, Service, ViewId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A session as the client checks name it: a member's (node incarnation and session)
/// or a client's (client name and incarnation, and its session).
pub type Receiver = String;

/// What a client multicast was sent with.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ClientSent {
    service: Service,
    groups: Vec<GroupName>,
    /// When its client sent it (virtual), until its first confirmation.
    unconfirmed_since: Option<Duration>,
}

/// What one receiver got of one client incarnation.
#[derive(Debug, Default)]
struct Got {
    /// The counters it got.
    counters: BTreeSet<u64>,
    /// The last counter it got.
    last: Option<u64>,
}

/// The client checks (see the module doc).
#[derive(Debug, Default)]
pub struct ClientChecks {
    /// Each client's messages, by incarnation and counter (nested, so a delivery looks
    /// them up without copying names: the checks run for every delivery).
    sent: BTreeMap<NodeId, BTreeMap<(Incarnation, u64), ClientSent>>,
    /// What each receiver got of each client incarnation.
    got: BTreeMap<Receiver, BTreeMap<NodeId, BTreeMap<Incarnation, Got>>>,
    /// Client messages each member incarnation delivered for its client.
    applied: BTreeSet<(NodeRef, ClientMsgId)>,
    /// Client messages confirmed by a member still in the view they were delivered in,
    /// by view, with the member that confirmed each.
    confirmed_in: BTreeMap<ViewId, BTreeMap<ClientMsgId, NodeRef>>,
    /// The client messages each node that moved on from a view delivered in it.
    moved_on: BTreeMap<ViewId, Vec<(NodeRef, BTreeSet<ClientMsgId>)>>,
    /// Client messages checked.
    pub deliveries: u64,
    /// How long client messages waited for their first confirmation, from their
    /// client's multicast (virtual time, in 100 µs steps; the cost of confirming once
    /// every member delivered, `PROTOCOL.md`, "Clients").
    pub confirm_delays: BTreeMap<u64, u64>,
    /// Violations found.
    pub violations: Vec<String>,
}

impl ClientChecks {
    /// A client multicast its core accepted.
    pub fn sent(
        &mut self,
        now: Duration,
        id: &ClientMsgId,
        service: Service,
        groups: Vec<GroupName>,
    ) {
        self.sent.entry(id.client.clone()).or_default().insert(
            (id.incarnation, id.counter),
            ClientSent {
                service,
                groups,
                unconfirmed_since: Some(now),
            },
        );
    }

    /// Member `at` reported a client message of its delivered (`Output::Confirmed`).
    pub fn applied(&mut self, at: &NodeRef, id: &ClientMsgId) {
        self.applied.insert((at.clone(), id.clone()));
    }

    /// Client `id.client` was told by member `by` that its message was delivered.
    pub fn confirmed(&mut self, now: Duration, by: &NodeRef, id: &ClientMsgId) {
        if !self.applied.contains(&(by.clone(), id.clone())) {
            self.violation(format!(
                "client confirmation: {by} told {} that message {id} was delivered, but did not deliver it (at {now:?})",
                id.client
            ));
        }
        if let Some(since) = self
            .sent
            .get_mut(&id.client)
            .and_then(|m| m.get_mut(&(id.incarnation, id.counter)))
            .and_then(|s| s.unconfirmed_since.take())
        {
            let steps = now.saturating_sub(since).as_micros() / 100;
            *self
                .confirm_delays
                .entry(u64::try_from(steps).unwrap_or(u64::MAX))
                .or_default() += 1;
        }
    }

    /// Member `by` confirmed `id`, delivered in `view`, while still in `view`: every
    /// node that moved on from `view` so far must have delivered it there.
    pub fn confirmed_in_view(
        &mut self,
        now: Duration,
        by: &NodeRef,
        view: &ViewId,
        id: &ClientMsgId,
    ) {
        let missed: Vec<NodeRef> = self
            .moved_on
            .get(view)
            .into_iter()
            .flatten()
            .filter(|(_, got)| !got.contains(id))
            .map(|(who, _)| who.clone())
            .collect();
        for who in missed {
            self.lost(now, &who, view, id, by);
        }
        self.confirmed_in
            .entry(view.clone())
            .or_default()
            .insert(id.clone(), by.clone());
    }

    /// Node `who` moved on from `view`, having delivered the client messages `got` in
    /// it: every one confirmed in `view` so far must be among them.
    pub fn moved_on(
        &mut self,
        now: Duration,
        who: &NodeRef,
        view: &ViewId,
        got: &BTreeSet<ClientMsgId>,
    ) {
        let missed: Vec<(ClientMsgId, NodeRef)> = self
            .confirmed_in
            .get(view)
            .into_iter()
            .flatten()
            .filter(|(id, _)| !got.contains(*id))
            .map(|(id, by)| (id.clone(), by.clone()))
            .collect();
        for (id, by) in missed {
            self.lost(now, who, view, &id, &by);
        }
        self.moved_on
            .entry(view.clone())
            .or_default()
            .push((who.clone(), got.clone()));
    }

    fn lost(
        &mut self,
        now: Duration,
        who: &NodeRef,
        view: &ViewId,
        id: &ClientMsgId,
        by: &NodeRef,
    ) {
        self.violation(format!(
            "client confirmed delivery: {who} moved on from view {view} without {id}, which {by} confirmed to {} in that view (at {now:?})",
            id.client
        ));
    }

    /// Receiver `who` got `event`.
    pub fn deliver(&mut self, now: Duration, who: Receiver, event: &Event) {
        let Event::Message {
            client: Some(id),
            service,
            groups,
            ..
        } = event
        else {
            return;
        };
        self.deliveries += 1;
        match self
            .sent
            .get(&id.client)
            .and_then(|m| m.get(&(id.incarnation, id.counter)))
        {
            None => self.violation(format!(
                "client no creation: {who} got {id}, which its client never sent (at {now:?})"
            )),
            Some(s) if s.service != *service || s.groups != *groups => self.violation(format!(
                "client no creation: {who} got {id} altered (at {now:?})"
            )),
            Some(_) => {}
        }
        let by_client = match self.got.get_mut(who.as_str()) {
            Some(m) => m,
            None => self.got.entry(who.clone()).or_default(),
        };
        let got = match by_client.get_mut(&id.client) {
            Some(m) => m,
            None => by_client.entry(id.client.clone()).or_default(),
        }
        .entry(id.incarnation)
        .or_default();
        let twice = !got.counters.insert(id.counter);
        let before = got.last.filter(|prev| *prev >= id.counter);
        got.last = Some(id.counter);
        if twice {
            self.violation(format!(
                "client no duplication: {who} got {id} twice (at {now:?})"
            ));
        }
        if let Some(prev) = before {
            self.violation(format!(
                "client FIFO: {who} got {id} after counter {prev} of the same client (at {now:?})"
            ));
        }
    }

    /// Records a violation.
    pub fn violation(&mut self, v: String) {
        if self.violations.len() < 20 {
            self.violations.push(v);
        }
    }
}
