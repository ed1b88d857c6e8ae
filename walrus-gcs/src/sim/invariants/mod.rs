//! Invariant checkers of the simulator, one per file. Each sees every send request,
//! view installation and delivery as it happens (online checks) and checks again at the
//! end of a run. A violation is a sentence naming what broke, where and when.

use crate::event::{Event, ViewChange};
use crate::types::{GroupName, NodeRef, Service, SessionId};
use std::collections::BTreeMap;
use std::time::Duration;

pub(crate) mod calm_start;
pub mod clients;
pub mod duplicate_incarnation;
mod group_membership;
pub(crate) mod isolated_start;
mod liveness;
mod no_duplication;
mod reliable_fifo;
mod self_delivery;
mod total_order;
mod view_agreement;
mod virtual_synchrony;

pub use liveness::LivenessProbe;

/// A multicast the simulated application asked for (and the core accepted).
#[derive(Clone, Debug)]
pub struct Sent {
    /// Unique id, carried in the first 8 bytes of the payload.
    pub id: u64,
    /// Sending node incarnation.
    pub node: NodeRef,
    /// Sending session.
    pub session: SessionId,
    /// How many multicasts this session had sent before this one.
    pub index: u64,
    /// Requested service.
    pub service: Service,
    /// Destination groups.
    pub groups: Vec<GroupName>,
    /// Virtual time of the request.
    pub at: Duration,
}

/// A local session of one node incarnation, as the checkers name it.
pub type SessionKey = (NodeRef, SessionId);

/// A join or leave request of a session, with its virtual time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// `join` was accepted by the core.
    Join,
    /// `leave` was accepted by the core.
    Leave,
}

/// What the simulator knows at the end of a run, for the end-of-run checks.
#[derive(Debug, Default)]
pub struct EndState {
    /// Node incarnations alive at the end.
    pub alive: Vec<NodeRef>,
    /// Sessions closed by the application (or found disconnected).
    pub closed: Vec<SessionKey>,
    /// The liveness probe, if the run had a quiet phase.
    pub probe: Option<LivenessProbe>,
}

/// One checker.
pub trait Invariant {
    /// A multicast was accepted by the core.
    fn on_sent(&mut self, _sent: &Sent) {}
    /// A node installed a view.
    fn on_view(
        &mut self,
        _at: Duration,
        _who: &NodeRef,
        _change: &ViewChange,
        _v: &mut Vec<String>,
    ) {
    }
    /// A session received an event.
    fn on_deliver(
        &mut self,
        _at: Duration,
        _who: &NodeRef,
        _session: SessionId,
        _event: &Event,
        _sent: &BTreeMap<u64, Sent>,
        _v: &mut Vec<String>,
    ) {
    }
    /// End of run.
    fn at_end(
        &mut self,
        _end: &EndState,
        _sent: &BTreeMap<u64, Sent>,
        _requests: &Requests,
        _v: &mut Vec<String>,
    ) {
    }
}

/// A join or leave request of a session, in the order it was made.
#[derive(Debug, Clone, Copy)]
pub struct Requested {
    /// Virtual time of the request.
    pub at: Duration,
    /// How many multicasts the session had made before it: the request comes after the
    /// one with [`Sent::index`] `after - 1` and before the one with `index` `after`, even
    /// at the same virtual time (a virtual instant holds several requests).
    pub after: u64,
    /// Join or leave.
    pub request: Request,
}

/// Each session's join and leave requests per group, in order.
pub type Requests = BTreeMap<(SessionKey, GroupName), Vec<Requested>>;

/// Every checker, fed by the simulator.
pub struct Checker {
    invariants: Vec<Box<dyn Invariant>>,
    sent: BTreeMap<u64, Sent>,
    requests: Requests,
    /// Multicasts recorded per session so far (orders a request among them).
    sent_by: BTreeMap<SessionKey, u64>,
    /// Violations found so far.
    pub violations: Vec<String>,
    /// How many deliveries were checked.
    pub deliveries: u64,
    /// One incarnation per name (fed by the duplicate and impostor scenarios).
    pub(crate) duplicate: duplicate_incarnation::DuplicateIncarnation,
    /// A node started inside a cut never goes first (fed by the isolated-start scenario).
    pub(crate) isolated: isolated_start::IsolatedStart,
    /// Clients' messages (fed by the simulator's clients, `sim/tier.rs`).
    pub clients: clients::ClientChecks,
    /// A group started together forms one view and does not split before a fault (fed by
    /// the simulator's staggered start).
    pub(crate) calm: calm_start::CalmStart,
}

impl Default for Checker {
    fn default() -> Self {
        Checker {
            invariants: vec![
                Box::new(view_agreement::ViewAgreement::default()),
                Box::new(virtual_synchrony::VirtualSynchrony::default()),
                Box::new(total_order::TotalOrder::default()),
                Box::new(no_duplication::NoDuplication::default()),
                Box::new(reliable_fifo::ReliableFifo::default()),
                Box::new(self_delivery::SelfDelivery::default()),
                Box::new(group_membership::GroupMembership::default()),
                Box::new(liveness::Liveness),
            ],
            sent: BTreeMap::new(),
            requests: BTreeMap::new(),
            sent_by: BTreeMap::new(),
            violations: Vec::new(),
            deliveries: 0,
            duplicate: duplicate_incarnation::DuplicateIncarnation::default(),
            isolated: isolated_start::IsolatedStart::default(),
            clients: clients::ClientChecks::default(),
            calm: calm_start::CalmStart::default(),
        }
    }
}

impl Checker {
    /// Records a multicast the core accepted.
    pub fn sent(&mut self, sent: Sent) {
        for i in &mut self.invariants {
            i.on_sent(&sent);
        }
        *self
            .sent_by
            .entry((sent.node.clone(), sent.session))
            .or_default() += 1;
        self.sent.insert(sent.id, sent);
    }

    /// Records a join or leave request the core accepted.
    pub fn request(&mut self, at: Duration, who: SessionKey, group: GroupName, r: Request) {
        let after = self.sent_by.get(&who).copied().unwrap_or(0);
        self.requests
            .entry((who, group))
            .or_default()
            .push(Requested {
                at,
                after,
                request: r,
            });
    }

    /// Records a view installation.
    pub fn view(&mut self, at: Duration, who: &NodeRef, change: &ViewChange) {
        for i in &mut self.invariants {
            i.on_view(at, who, change, &mut self.violations);
        }
        self.duplicate
            .on_view(at, who, change, &mut self.violations);
        self.calm.on_view(at, who, change, &mut self.violations);
    }

    /// Records a delivery.
    pub fn deliver(&mut self, at: Duration, who: &NodeRef, session: SessionId, event: &Event) {
        self.deliveries += 1;
        for i in &mut self.invariants {
            i.on_deliver(at, who, session, event, &self.sent, &mut self.violations);
        }
        self.isolated
            .on_deliver(at, who, session, event, &self.sent, &mut self.violations);
    }

    /// Moves the client checks' violations to the others.
    pub fn take_client_violations(&mut self) {
        self.violations.append(&mut self.clients.violations);
    }

    /// Runs the end-of-run checks.
    pub fn finish(&mut self, end: &EndState) {
        for i in &mut self.invariants {
            i.at_end(end, &self.sent, &self.requests, &mut self.violations);
        }
    }

    /// How many multicasts were recorded.
    pub fn messages(&self) -> u64 {
        self.sent.len() as u64
    }
}

/// The entry of `key` in `map`, made if missing; `key` is copied only then (the checks
/// run for every delivery, and names are strings).
#[allow(clippy::expect_used)] // test code; the key was inserted just before
pub(super) fn entry_of<'m, V: Default>(
    map: &'m mut BTreeMap<NodeRef, V>,
    key: &NodeRef,
) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.clone(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

/// The message id a payload carries (its first 8 bytes), if any.
pub fn payload_id(payload: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = payload.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests;
