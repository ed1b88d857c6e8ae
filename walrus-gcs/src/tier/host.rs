//! [`ClientHost`]: the member's side of its clients, a sans-IO state machine beside
//! the member's [`Node`].
//!
//! It maps each attached client's sessions to local sessions of the node, turns the
//! client's requests into the node's operations (in the client's order, held in a
//! bounded backlog while the node's send window is full), forwards the node's
//! deliveries to hosted sessions and its [`Output::Confirmed`] to the client, and closes
//! a client's sessions when its link ends. Everything a client sends is bounded: the
//! number of clients, sessions per client and requests waiting per client; a request
//! that breaks a rule (an unknown session, a too large message) refuses the client.

use super::delta::GroupLists;
use super::{ClientNotice, ClientRequest};
use crate::error::GcsError;
use crate::event::{Event, MembershipReason, Output};
use crate::node::Node;
use crate::types::{ClientMsgId, Incarnation, Member, NodeId, SessionId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

/// Bounds on what clients may hold at one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostLimits {
    /// Clients attached at once.
    pub max_clients: usize,
    /// Open sessions per client.
    pub sessions_per_client: usize,
    /// Requests of one client waiting for the node's send window.
    pub backlog_per_client: usize,
}

impl Default for HostLimits {
    fn default() -> Self {
        HostLimits {
            max_clients: 4096,
            sessions_per_client: 16,
            backlog_per_client: 1024,
        }
    }
}

/// Why a member refuses (and detaches) a client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostRefusal {
    /// `HostLimits::max_clients` clients are attached.
    #[error("too many clients attached (limit {0})")]
    TooManyClients(usize),
    /// A newer incarnation of this client is attached.
    #[error("a newer incarnation of this client is attached")]
    Stale,
    /// The client is not attached.
    #[error("client not attached")]
    NotAttached,
    /// More than `HostLimits::sessions_per_client` sessions.
    #[error("too many sessions (limit {0})")]
    TooManySessions(usize),
    /// More than `HostLimits::backlog_per_client` requests waiting.
    #[error("too many requests waiting (limit {0})")]
    Backlog(usize),
    /// A request named a session the client did not open, or opened one twice, or
    /// numbered its messages out of order.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The node refused a request outright (too large, no groups).
    #[error("refused: {0}")]
    Refused(GcsError),
}

/// One attached client.
#[derive(Debug)]
struct Hosted {
    incarnation: Incarnation,
    /// The client's sessions (as of the requests received) …
    declared: BTreeSet<SessionId>,
    /// … and those the node disconnected (they fell behind): the client learns it from
    /// the `Disconnected` it is sent, and what it sent on them meanwhile goes nowhere,
    /// as a local application's would; it is no breach of the rules. At most
    /// `HostLimits::sessions_per_client` (the oldest are forgotten).
    gone: BTreeSet<SessionId>,
    /// … and the node's sessions standing for them (as of the requests applied).
    sessions: BTreeMap<SessionId, SessionId>,
    /// Requests not yet taken by the node (its send window was full), in order.
    backlog: VecDeque<ClientRequest>,
    /// The highest message counter received.
    last_counter: u64,
}

/// The member's side of its clients (see the module doc).
#[derive(Debug, Default)]
pub struct ClientHost {
    limits: HostLimits,
    clients: BTreeMap<NodeId, Hosted>,
    /// The node's sessions that stand for a client's: (client, its session).
    by_session: BTreeMap<SessionId, (NodeId, SessionId)>,
    /// The member lists forwarded, so membership changes go out as deltas.
    lists: GroupLists,
    notices: VecDeque<(NodeId, ClientNotice)>,
}

impl ClientHost {
    /// A host with these bounds.
    pub fn new(limits: HostLimits) -> Self {
        ClientHost {
            limits,
            ..ClientHost::default()
        }
    }

    /// Client `client` (its certificate's name; the transport checked it is a client
    /// certificate) attached in `incarnation`. An older incarnation still attached is
    /// detached first (its sessions are gone); a newer one makes this one stale.
    pub fn attach(
        &mut self,
        node: &mut Node,
        now: Instant,
        client: &NodeId,
        incarnation: Incarnation,
    ) -> Result<(), HostRefusal> {
        if let Some(h) = self.clients.get(client) {
            if h.incarnation > incarnation {
                return Err(HostRefusal::Stale);
            }
            self.detach(node, now, client);
        }
        if self.clients.len() >= self.limits.max_clients {
            return Err(HostRefusal::TooManyClients(self.limits.max_clients));
        }
        self.clients.insert(
            client.clone(),
            Hosted {
                incarnation,
                declared: BTreeSet::new(),
                gone: BTreeSet::new(),
                sessions: BTreeMap::new(),
                backlog: VecDeque::new(),
                last_counter: 0,
            },
        );
        self.notices
            .push_back((client.clone(), ClientNotice::Attached));
        Ok(())
    }

    /// The client's link ended (closed, lost, or the client was refused): its sessions
    /// are closed, so their groups see them gone, in the total order.
    pub fn detach(&mut self, node: &mut Node, now: Instant, client: &NodeId) {
        let Some(h) = self.clients.remove(client) else {
            return;
        };
        // What was queued for that link goes nowhere: a membership delta from a list
        // the next attachment does not hold would break it (the client resends what
        // was not confirmed, and a copy is confirmed again).
        self.notices.retain(|(c, _)| c != client);
        for local in h.sessions.values() {
            self.by_session.remove(local);
            self.lists.forget_session(*local);
            let _ = node.close_session(now, *local);
        }
    }

    /// Whether the node's session `session` stands for a client's.
    pub fn hosts(&self, session: SessionId) -> bool {
        self.by_session.contains_key(&session)
    }

    /// Whether `client` is attached (in some incarnation).
    pub fn is_attached(&self, client: &NodeId) -> bool {
        self.clients.contains_key(client)
    }

    /// How many clients are attached.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// A request from attached client `client`. On an error the driver closes the
    /// client's link and calls [`ClientHost::detach`].
    pub fn request(
        &mut self,
        node: &mut Node,
        now: Instant,
        client: &NodeId,
        req: ClientRequest,
    ) -> Result<(), HostRefusal> {
        let limits = self.limits;
        let h = self
            .clients
            .get_mut(client)
            .ok_or(HostRefusal::NotAttached)?;
        let not_open =
            |session: &SessionId| HostRefusal::Protocol(format!("{session} is not open"));
        match &req {
            ClientRequest::Open { session } => {
                if h.declared.len() >= limits.sessions_per_client {
                    return Err(HostRefusal::TooManySessions(limits.sessions_per_client));
                }
                if h.gone.contains(session) || !h.declared.insert(*session) {
                    return Err(HostRefusal::Protocol(format!("{session} opened twice")));
                }
            }
            ClientRequest::Close { session } => {
                if h.gone.remove(session) {
                    return Ok(());
                }
                if !h.declared.remove(session) {
                    return Err(not_open(session));
                }
            }
            ClientRequest::Join { session, .. } | ClientRequest::Leave { session, .. } => {
                if h.gone.contains(session) {
                    return Ok(());
                }
                if !h.declared.contains(session) {
                    return Err(not_open(session));
                }
            }
            ClientRequest::Multicast {
                session, counter, ..
            } => {
                if !h.declared.contains(session) && !h.gone.contains(session) {
                    return Err(not_open(session));
                }
                if *counter <= h.last_counter {
                    return Err(HostRefusal::Protocol(format!(
                        "message {counter} after {}",
                        h.last_counter
                    )));
                }
                h.last_counter = *counter;
                if h.gone.contains(session) {
                    return Ok(());
                }
            }
        }
        if h.backlog.len() >= limits.backlog_per_client {
            return Err(HostRefusal::Backlog(limits.backlog_per_client));
        }
        h.backlog.push_back(req);
        self.pump_client(node, now, client)
    }

    /// Hands waiting requests to the node while its send window has room; call after
    /// the node delivered (its window may have opened), e.g. once per driver turn.
    pub fn pump(&mut self, node: &mut Node, now: Instant) -> Vec<(NodeId, HostRefusal)> {
        let waiting: Vec<NodeId> = self
            .clients
            .iter()
            .filter(|(_, h)| !h.backlog.is_empty())
            .map(|(c, _)| c.clone())
            .collect();
        let mut refused = Vec::new();
        for c in waiting {
            if let Err(e) = self.pump_client(node, now, &c) {
                refused.push((c, e));
            }
        }
        refused
    }

    fn pump_client(
        &mut self,
        node: &mut Node,
        now: Instant,
        client: &NodeId,
    ) -> Result<(), HostRefusal> {
        let Some(h) = self.clients.get_mut(client) else {
            return Ok(());
        };
        while let Some(req) = h.backlog.front() {
            let result = match req {
                ClientRequest::Open { session } => {
                    let local = node.open_session(now);
                    h.sessions.insert(*session, local);
                    self.by_session.insert(local, (client.clone(), *session));
                    Ok(())
                }
                ClientRequest::Close { session } => {
                    if let Some(local) = h.sessions.remove(session) {
                        self.by_session.remove(&local);
                        self.lists.forget_session(local);
                        let _ = node.close_session(now, local);
                    }
                    Ok(())
                }
                ClientRequest::Join { session, group } => match h.sessions.get(session) {
                    Some(local) => node.join(now, *local, group.clone()),
                    None => Ok(()),
                },
                ClientRequest::Leave { session, group } => match h.sessions.get(session) {
                    Some(local) => node.leave(now, *local, group.clone()),
                    None => Ok(()),
                },
                ClientRequest::Multicast {
                    session,
                    counter,
                    service,
                    groups,
                    payload,
                } => match h.sessions.get(session) {
                    Some(local) => {
                        let id = ClientMsgId {
                            client: client.clone(),
                            incarnation: h.incarnation,
                            counter: *counter,
                        };
                        node.multicast_for_client(
                            now,
                            *local,
                            id,
                            *service,
                            groups,
                            payload.clone(),
                        )
                    }
                    None => Ok(()),
                },
            };
            match result {
                Ok(()) => {}
                Err(GcsError::Backpressure { .. }) => return Ok(()),
                // The node disconnected that session (it fell behind): its requests
                // go nowhere, as a local application's would.
                Err(GcsError::UnknownSession(_)) => {}
                Err(e) => return Err(HostRefusal::Refused(e)),
            }
            h.backlog.pop_front();
        }
        Ok(())
    }

    /// Takes one output of the node: deliveries to hosted sessions and confirmations
    /// become notices to their client (see [`ClientHost::poll_notice`]) and `None` is
    /// returned; any other output is returned for the driver. A membership event
    /// becomes a delta from the list the client's session holds (`super::delta`).
    pub fn on_output(&mut self, node: &mut Node, out: Output) -> Option<Output> {
        match out {
            Output::Deliver { session, event } => {
                let Some((client, theirs)) = self.by_session.get(&session).cloned() else {
                    return Some(Output::Deliver { session, event });
                };
                // Read once forwarded: the client link's send queue bounds the rest.
                node.mark_read(session, 1);
                if let Event::Disconnected { .. } = event {
                    self.by_session.remove(&session);
                    self.lists.forget_session(session);
                    if let Some(h) = self.clients.get_mut(&client) {
                        h.sessions.remove(&theirs);
                        if h.declared.remove(&theirs) {
                            h.gone.insert(theirs);
                            if h.gone.len() > self.limits.sessions_per_client {
                                h.gone.pop_first();
                            }
                        }
                    }
                }
                if let Event::Membership {
                    group,
                    view,
                    members,
                    reason,
                    at,
                } = event
                {
                    let holder = Member {
                        node: node.id().clone(),
                        incarnation: node.incarnation(),
                        session,
                    };
                    let leave = reason == MembershipReason::Leave;
                    #[allow(unused_mut)] // mutated only by a planted bug (tests, simulator)
                    let mut change = self.lists.change(&group, &holder, members, &at, leave);
                    #[cfg(any(test, feature = "testing"))]
                    if node.planted_bugs().client_delta_skip {
                        if let super::MemberChange::Delta { joined, .. } = &mut change {
                            joined.clear();
                        }
                    }
                    self.notices.push_back((
                        client,
                        ClientNotice::Membership {
                            session: theirs,
                            group,
                            view,
                            reason,
                            at,
                            change,
                        },
                    ));
                    return None;
                }
                self.notices.push_back((
                    client,
                    ClientNotice::Event {
                        session: theirs,
                        event,
                    },
                ));
                None
            }
            Output::Confirmed { session, id, .. } => {
                let attached = self
                    .clients
                    .get(&id.client)
                    .is_some_and(|h| h.incarnation == id.incarnation);
                // Whichever session sent it (the client may have closed it since):
                // the message is what is confirmed.
                let _ = session;
                if attached {
                    self.notices.push_back((
                        id.client,
                        ClientNotice::Confirmed {
                            counter: id.counter,
                        },
                    ));
                }
                None
            }
            other => Some(other),
        }
    }

    /// The next notice to send to a client.
    pub fn poll_notice(&mut self) -> Option<(NodeId, ClientNotice)> {
        self.notices.pop_front()
    }
}
