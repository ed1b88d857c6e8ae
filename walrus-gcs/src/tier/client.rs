//! [`ClientCore`]: the client's side, a sans-IO state machine.
//!
//! It keeps what the client must bring to any member it attaches to: its open sessions
//! and their groups, and every multicast it was not yet told was delivered
//! (`unconfirmed`, at most `ClientConfig::window`). On attaching it opens its sessions
//! again, joins their groups again and sends the unconfirmed messages again, under
//! their counters, in order; the members drop the copies of those already delivered.
//! It also drops, per session, a client message it got already (a member in another
//! component may deliver it again after the client re-attached there). It keeps each
//! session's member list of each group, so that the member can send membership changes
//! as deltas (`super::delta`) and the application still gets whole lists.

use super::delta::{self, MemberChange};
use super::{ClientNotice, ClientRequest};
use crate::event::Event;
use crate::node::ClientsSeen;
use crate::types::{GroupName, Incarnation, Member, NodeId, Service, SessionId, Stamp};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

/// A member list a client session holds, with the stamp of its change.
type HeldList = (Stamp, Arc<[Member]>);

/// What a client is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Its configured name (its client certificate's).
    pub name: NodeId,
    /// Which life of it (larger on every start, e.g. the start time in ms).
    pub incarnation: Incarnation,
    /// The members it may attach to, in order of preference (its area's first).
    pub members: Vec<NodeId>,
    /// Multicasts not yet confirmed at most (then [`ClientError::Full`]).
    pub window: usize,
}

/// Why the client refused a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// `ClientConfig::window` multicasts are not confirmed yet; try again later.
    #[error("{0} multicasts not yet confirmed")]
    Full(usize),
    /// No open session has this id.
    #[error("no open session {0}")]
    UnknownSession(SessionId),
    /// A multicast named no group.
    #[error("a multicast needs at least one group")]
    NoGroups,
}

/// What the client core asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOutput {
    /// Connect to this member (the current link, if any, is over); report
    /// [`ClientCore::link_up`] or [`ClientCore::link_down`].
    Connect(NodeId),
    /// Send this request on the link to `to`.
    Send {
        /// The member.
        to: NodeId,
        /// The request.
        req: ClientRequest,
    },
    /// Hand `event` to the client's session.
    Deliver {
        /// The session.
        session: SessionId,
        /// The event.
        event: Event,
    },
}

/// A multicast not yet confirmed.
#[derive(Clone, Debug)]
struct Unconfirmed {
    session: SessionId,
    service: Service,
    groups: Vec<GroupName>,
    payload: Vec<u8>,
}

/// The client's side (see the module doc).
#[derive(Debug)]
pub struct ClientCore {
    config: ClientConfig,
    /// Index in `config.members` of the member tried or attached.
    current: usize,
    /// The member attached to, once its link is up.
    link: Option<NodeId>,
    /// Open sessions and their groups.
    sessions: BTreeMap<SessionId, BTreeSet<GroupName>>,
    /// Per open session, the highest client message counters delivered to it.
    seen: BTreeMap<SessionId, ClientsSeen>,
    /// Per open session and group, the member list last delivered and its change's
    /// stamp (the base of the member's next delta).
    lists: BTreeMap<(SessionId, GroupName), HeldList>,
    /// Membership deltas that did not fit the list held (each ended the link).
    broken_deltas: u64,
    /// Closed sessions that still have unconfirmed messages (opened again to send them
    /// again after a re-attachment, then closed).
    closing: BTreeSet<SessionId>,
    next_session: u64,
    next_counter: u64,
    unconfirmed: BTreeMap<u64, Unconfirmed>,
    out: VecDeque<ClientOutput>,
}

impl ClientCore {
    /// A client that is about to connect to its first member.
    pub fn new(config: ClientConfig) -> Self {
        let mut c = ClientCore {
            current: 0,
            link: None,
            sessions: BTreeMap::new(),
            seen: BTreeMap::new(),
            lists: BTreeMap::new(),
            broken_deltas: 0,
            closing: BTreeSet::new(),
            next_session: 1,
            next_counter: 1,
            unconfirmed: BTreeMap::new(),
            out: VecDeque::new(),
            config,
        };
        if let Some(m) = c.config.members.first() {
            c.out.push_back(ClientOutput::Connect(m.clone()));
        }
        c
    }

    /// Its name.
    pub fn name(&self) -> &NodeId {
        &self.config.name
    }

    /// Its incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.config.incarnation
    }

    /// The member it is attached to.
    pub fn member(&self) -> Option<&NodeId> {
        self.link.as_ref()
    }

    /// How many multicasts are not yet confirmed.
    pub fn unconfirmed(&self) -> usize {
        self.unconfirmed.len()
    }

    /// The counters of the multicasts not yet confirmed.
    pub fn unconfirmed_counters(&self) -> impl Iterator<Item = u64> + '_ {
        self.unconfirmed.keys().copied()
    }

    /// Each open session's member list of each group it is in, as last delivered.
    pub fn member_lists(&self) -> impl Iterator<Item = (SessionId, &GroupName, &[Member])> {
        self.lists
            .iter()
            .filter(|((s, g), _)| self.sessions.get(s).is_some_and(|gs| gs.contains(g)))
            .map(|((s, g), (_, list))| (*s, g, &list[..]))
    }

    /// How many membership deltas did not fit the list held (a member that broke the
    /// protocol; each ended the link).
    pub fn broken_deltas(&self) -> u64 {
        self.broken_deltas
    }

    /// The link to `member` is up (the member admitted this client): sessions, groups
    /// and unconfirmed messages are brought to it.
    pub fn link_up(&mut self, member: &NodeId) {
        if self.config.members.get(self.current) != Some(member) {
            return;
        }
        self.link = Some(member.clone());
        // This member holds no list for us: its first change of each group is whole.
        self.lists.clear();
        let reopen: BTreeSet<SessionId> = self
            .sessions
            .keys()
            .chain(self.closing.iter())
            .copied()
            .collect();
        for s in &reopen {
            self.send(ClientRequest::Open { session: *s });
            let groups: Vec<GroupName> = self
                .sessions
                .get(s)
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            for group in groups {
                self.send(ClientRequest::Join { session: *s, group });
            }
        }
        let again: Vec<(u64, Unconfirmed)> = self
            .unconfirmed
            .iter()
            .map(|(k, u)| (*k, u.clone()))
            .collect();
        for (counter, u) in again {
            self.send(ClientRequest::Multicast {
                session: u.session,
                counter,
                service: u.service,
                groups: u.groups,
                payload: u.payload,
            });
        }
        let closing: Vec<SessionId> = self.closing.iter().copied().collect();
        for s in closing {
            self.send(ClientRequest::Close { session: s });
        }
    }

    /// The link to `member` ended, or connecting to it failed: the next member of the
    /// list is tried (the driver may wait before connecting).
    pub fn link_down(&mut self, member: &NodeId) {
        if self.config.members.get(self.current) != Some(member) {
            return;
        }
        self.link = None;
        if self.config.members.is_empty() {
            return;
        }
        self.current = (self.current + 1) % self.config.members.len();
        let next = self.config.members[self.current].clone();
        self.out.push_back(ClientOutput::Connect(next));
    }

    /// Opens a session.
    pub fn open_session(&mut self) -> SessionId {
        let s = SessionId(self.next_session);
        self.next_session += 1;
        self.sessions.insert(s, BTreeSet::new());
        self.seen.insert(s, ClientsSeen::default());
        self.send(ClientRequest::Open { session: s });
        s
    }

    /// Closes a session (it leaves every group).
    pub fn close_session(&mut self, session: SessionId) -> Result<(), ClientError> {
        self.sessions
            .remove(&session)
            .ok_or(ClientError::UnknownSession(session))?;
        self.seen.remove(&session);
        self.lists.retain(|(s, _), _| *s != session);
        if self.unconfirmed.values().any(|u| u.session == session) {
            self.closing.insert(session);
        }
        self.send(ClientRequest::Close { session });
        Ok(())
    }

    /// `session` joins `group`.
    pub fn join(&mut self, session: SessionId, group: GroupName) -> Result<(), ClientError> {
        let groups = self
            .sessions
            .get_mut(&session)
            .ok_or(ClientError::UnknownSession(session))?;
        groups.insert(group.clone());
        self.send(ClientRequest::Join { session, group });
        Ok(())
    }

    /// `session` leaves `group`.
    pub fn leave(&mut self, session: SessionId, group: GroupName) -> Result<(), ClientError> {
        let groups = self
            .sessions
            .get_mut(&session)
            .ok_or(ClientError::UnknownSession(session))?;
        groups.remove(&group);
        self.send(ClientRequest::Leave { session, group });
        Ok(())
    }

    /// Multicasts from `session`; returns the message's counter.
    pub fn multicast(
        &mut self,
        session: SessionId,
        service: Service,
        groups: &[GroupName],
        payload: Vec<u8>,
    ) -> Result<u64, ClientError> {
        if !self.sessions.contains_key(&session) {
            return Err(ClientError::UnknownSession(session));
        }
        if groups.is_empty() {
            return Err(ClientError::NoGroups);
        }
        if self.unconfirmed.len() >= self.config.window {
            return Err(ClientError::Full(self.unconfirmed.len()));
        }
        let mut groups = groups.to_vec();
        groups.sort();
        groups.dedup();
        let counter = self.next_counter;
        self.next_counter += 1;
        let u = Unconfirmed {
            session,
            service,
            groups,
            payload,
        };
        self.send(ClientRequest::Multicast {
            session,
            counter,
            service,
            groups: u.groups.clone(),
            payload: u.payload.clone(),
        });
        self.unconfirmed.insert(counter, u);
        Ok(counter)
    }

    /// A notice from the member `from`.
    pub fn handle(&mut self, from: &NodeId, notice: ClientNotice) {
        if self.link.as_ref() != Some(from) {
            return;
        }
        match notice {
            ClientNotice::Attached => {}
            ClientNotice::Confirmed { counter } => {
                if let Some(u) = self.unconfirmed.remove(&counter) {
                    if self.closing.contains(&u.session)
                        && !self.unconfirmed.values().any(|x| x.session == u.session)
                    {
                        self.closing.remove(&u.session);
                    }
                }
            }
            ClientNotice::Event { session, event } => {
                if !self.sessions.contains_key(&session) {
                    return;
                }
                if let Event::Message {
                    client: Some(id), ..
                } = &event
                {
                    let fresh = self.seen.get_mut(&session).is_none_or(|s| s.fresh(id));
                    if !fresh {
                        return;
                    }
                }
                if let Event::Disconnected { .. } = event {
                    self.sessions.remove(&session);
                    self.seen.remove(&session);
                    self.lists.retain(|(s, _), _| *s != session);
                }
                self.out.push_back(ClientOutput::Deliver { session, event });
            }
            ClientNotice::Membership {
                session,
                group,
                view,
                reason,
                at,
                change,
            } => {
                if !self.sessions.contains_key(&session) {
                    return;
                }
                let key = (session, group);
                let members = match change {
                    MemberChange::Snapshot(list) => Some(Arc::from(list)),
                    MemberChange::Delta { base, left, joined } => match self.lists.get(&key) {
                        Some((held, list)) if *held == base => {
                            delta::apply(list, &left, &joined).map(Arc::from)
                        }
                        _ => None,
                    },
                };
                let Some(members) = members else {
                    // Not a delta of what this session holds: the member broke the
                    // protocol. Attach again (to the next member), which starts whole.
                    self.broken_deltas += 1;
                    self.link_down(from);
                    return;
                };
                // Kept until the session closes, even after it left the group (only
                // the member knows which event is its own leave); a later join starts
                // with a snapshot.
                self.lists
                    .insert(key.clone(), (at.clone(), Arc::clone(&members)));
                let event = Event::Membership {
                    group: key.1,
                    view,
                    members,
                    reason,
                    at,
                };
                self.out.push_back(ClientOutput::Deliver { session, event });
            }
        }
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        self.out.pop_front()
    }

    fn send(&mut self, req: ClientRequest) {
        if let Some(to) = self.link.clone() {
            self.out.push_back(ClientOutput::Send { to, req });
        }
    }
}
