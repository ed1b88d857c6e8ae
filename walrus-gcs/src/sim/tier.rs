//! Clients in the simulator (`PROTOCOL.md`, "Clients"): processes attached to one member
//! each ([`ClientCore`] on the client, the member's [`crate::tier::ClientHost`]), over a
//! simulated link of their own (FIFO per direction, random latency).
//!
//! Clients open sessions, join and leave groups and multicast like the members' local
//! applications; they crash and restart (a new incarnation), and their link is cut
//! (both ends learn it after a while, as QUIC's idle timeout tells them); a member's
//! crash ends its clients' links. A client whose link ends attaches to the next member
//! of its list. The checks are in [`super::invariants::clients`]; once the cluster is
//! quiet every live client must be attached with nothing unconfirmed, every probe
//! (the members' and the clients') must reach every client's probe session, and each
//! client session's member lists (rebuilt from the member's deltas) must be its
//! member's.

use super::{Ev, Sim};
use crate::event::Event;
use crate::tier::{ClientConfig, ClientCore, ClientNotice, ClientOutput, ClientRequest};
use crate::types::{ClientMsgId, GroupName, Incarnation, NodeId, Service, SessionId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A client's events.
#[derive(Debug)]
pub(super) enum TierEv {
    /// One random action of a random live client.
    Act,
    /// A connection attempt reached the member (or not).
    Connected { c: usize, member: usize, epoch: u64 },
    /// A request arrives at the member.
    ToMember {
        c: usize,
        member: usize,
        epoch: u64,
        req: ClientRequest,
    },
    /// A notice arrives at the client.
    ToClient {
        c: usize,
        member: usize,
        epoch: u64,
        notice: ClientNotice,
    },
    /// The client learns its link (or connection attempt) ended.
    ClientDown { c: usize, member: usize, epoch: u64 },
    /// The member learns the client's link of attachment `epoch` ended.
    HostDown { c: usize, member: usize, epoch: u64 },
    /// The client crashes.
    Crash(usize),
    /// The client starts again (a new incarnation).
    Restart(usize),
    /// The client's link is cut (both ends learn it later).
    Cut(usize),
    /// Quiet: every live client sends a probe.
    Probe,
    /// Quiet for a while: every live client is attached with nothing unconfirmed and
    /// got every probe.
    Settled,
}

/// One simulated client process.
pub(super) struct SimClient {
    name: NodeId,
    incarnation: u64,
    core: Option<ClientCore>,
    /// The member slot of the current link or attempt.
    member: Option<usize>,
    /// Whether the link is up.
    up: bool,
    /// Numbers links (and attempts): events of an older one are dropped.
    epoch: u64,
    /// Latest arrival on the link, to the member and to the client (FIFO).
    arrivals: [Duration; 2],
    probe: Option<SessionId>,
    apps: Vec<SessionId>,
    /// The probes its probe session got.
    probes_got: BTreeSet<u64>,
}

/// The clients of one run.
pub(super) struct Tier {
    rng: ChaCha8Rng,
    pub(super) clients: Vec<SimClient>,
    /// Per member slot, per client: the epoch of the attachment the member hosts.
    attached: Vec<BTreeMap<usize, u64>>,
    probes: Vec<u64>,
    pub(super) failovers: u64,
    pub(super) crashes: u64,
}

impl Tier {
    pub(super) fn new(seed: u64, clients: usize, slots: usize) -> Self {
        Tier {
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0xc11e_0000),
            clients: (0..clients)
                .map(|k| SimClient {
                    name: NodeId::new(format!("client.c{k:02}")),
                    incarnation: 0,
                    core: None,
                    member: None,
                    up: false,
                    epoch: 0,
                    arrivals: [Duration::ZERO; 2],
                    probe: None,
                    apps: Vec::new(),
                    probes_got: BTreeSet::new(),
                })
                .collect(),
            attached: vec![BTreeMap::new(); slots],
            probes: Vec::new(),
            failovers: 0,
            crashes: 0,
        }
    }
}

impl Sim {
    /// Starts the clients and plans their faults, within the fault phase `d`.
    pub(super) fn plan_tier(&mut self) {
        let d = self.cfg.duration;
        for c in 0..self.tier.clients.len() {
            self.client_start(c);
        }
        let n = self.tier.clients.len();
        if n == 0 {
            return;
        }
        let ms = |x: u64| Duration::from_millis(x);
        for _ in 0..2 {
            let c = self.tier.rng.random_range(0..n);
            let t = ms(self
                .tier
                .rng
                .random_range(1000..d.as_millis() as u64 - 4000));
            let back = ms(self.tier.rng.random_range(300..=3000));
            self.at(t, Ev::Tier(TierEv::Crash(c)));
            self.at(t + back, Ev::Tier(TierEv::Restart(c)));
        }
        for _ in 0..4 {
            let c = self.tier.rng.random_range(0..n);
            let t = ms(self
                .tier
                .rng
                .random_range(1000..d.as_millis() as u64 - 1000));
            self.at(t, Ev::Tier(TierEv::Cut(c)));
        }
        self.at(Duration::ZERO, Ev::Tier(TierEv::Act));
        self.at(d + self.cfg.view_bound, Ev::Tier(TierEv::Probe));
        self.at(
            d + self.cfg.view_bound + self.cfg.delivery_bound * 2,
            Ev::Tier(TierEv::Settled),
        );
    }

    fn client_start(&mut self, c: usize) {
        let n = self.cfg.nodes;
        let first = self.tier.rng.random_range(0..n);
        let members: Vec<NodeId> = (0..n)
            .map(|k| self.names[(first + k) % n].clone())
            .collect();
        let cl = &mut self.tier.clients[c];
        cl.incarnation += 1;
        cl.probe = None;
        cl.apps.clear();
        cl.probes_got.clear();
        cl.member = None;
        cl.up = false;
        cl.epoch += 1;
        cl.core = Some(ClientCore::new(ClientConfig {
            name: cl.name.clone(),
            incarnation: Incarnation(cl.incarnation),
            members,
            window: 64,
        }));
        let line = format!("{}#{} starts", cl.name, cl.incarnation);
        self.log(line);
        self.client_outputs(c);
    }

    /// Who client `c` is (its name and incarnation), as a receiver name.
    fn client_who(&self, c: usize) -> String {
        let cl = &self.tier.clients[c];
        format!("{}#{}", cl.name, cl.incarnation)
    }

    fn latency(&mut self) -> Duration {
        Duration::from_micros(self.rng.random_range(200..=self.latency_max_ms * 1000))
    }

    /// Takes client `c`'s outputs: connections, requests, deliveries.
    fn client_outputs(&mut self, c: usize) {
        loop {
            let Some(out) = self.tier.clients[c]
                .core
                .as_mut()
                .and_then(|k| k.poll_output())
            else {
                return;
            };
            match out {
                ClientOutput::Connect(name) => {
                    let Some(j) = self.names.iter().position(|x| *x == name) else {
                        continue;
                    };
                    let cl = &mut self.tier.clients[c];
                    cl.epoch += 1;
                    cl.member = Some(j);
                    cl.up = false;
                    cl.arrivals = [self.now; 2];
                    let epoch = cl.epoch;
                    // A short back-off, then a handshake's round trip.
                    let wait = Duration::from_millis(self.tier.rng.random_range(10..=100));
                    let t = self.now + wait + self.latency() * 2;
                    self.at(
                        t,
                        Ev::Tier(TierEv::Connected {
                            c,
                            member: j,
                            epoch,
                        }),
                    );
                }
                ClientOutput::Send { req, .. } => {
                    let cl = &self.tier.clients[c];
                    let (Some(j), true) = (cl.member, cl.up) else {
                        continue;
                    };
                    let epoch = cl.epoch;
                    let t = (self.now + self.latency()).max(self.tier.clients[c].arrivals[0]);
                    self.tier.clients[c].arrivals[0] = t;
                    self.at(
                        t,
                        Ev::Tier(TierEv::ToMember {
                            c,
                            member: j,
                            epoch,
                            req,
                        }),
                    );
                }
                ClientOutput::Deliver { session, event } => {
                    let who = format!("{}/{session}", self.client_who(c));
                    self.checker.clients.deliver(self.now, who, &event);
                    let cl = &mut self.tier.clients[c];
                    if cl.probe == Some(session) {
                        if let Event::Message { payload, .. } = &event {
                            if let Some(id) = super::invariants::payload_id(payload) {
                                cl.probes_got.insert(id);
                            }
                        }
                    }
                }
            }
        }
    }

    pub(super) fn tier_event(&mut self, ev: TierEv) {
        let now = self.instant();
        match ev {
            TierEv::Act => {
                if self.now >= self.cfg.duration + self.cfg.view_bound {
                    return;
                }
                self.client_act();
                let gap = self
                    .tier
                    .rng
                    .random_range(0..=self.cfg.client_interval.as_micros() as u64 * 4);
                self.at(self.now + Duration::from_micros(gap), Ev::Tier(TierEv::Act));
            }
            TierEv::Connected { c, member, epoch } => {
                let cl = &self.tier.clients[c];
                if cl.epoch != epoch || cl.core.is_none() {
                    return;
                }
                let name = self.tier.clients[c].name.clone();
                let inc = Incarnation(self.tier.clients[c].incarnation);
                let sn = &mut self.nodes[member];
                let ok = match sn.node.as_mut() {
                    Some(node) => sn.host.attach(node, now, &name, inc).is_ok(),
                    None => false,
                };
                if !ok {
                    // Refused or nobody there: the attempt fails after a timeout.
                    let t = self.now + Duration::from_millis(self.tier.rng.random_range(100..=500));
                    self.at(t, Ev::Tier(TierEv::ClientDown { c, member, epoch }));
                    return;
                }
                self.tier.attached[member].insert(c, epoch);
                let who = self.who(member);
                self.log(format!("{name}{inc} attaches to {who}"));
                self.tier.clients[c].up = true;
                let mname = self.names[member].clone();
                if let Some(core) = self.tier.clients[c].core.as_mut() {
                    core.link_up(&mname);
                }
                self.client_outputs(c);
                self.drain(member);
            }
            TierEv::ToMember {
                c,
                member,
                epoch,
                req,
            } => {
                if self.tier.clients[c].epoch != epoch
                    || self.tier.attached[member].get(&c) != Some(&epoch)
                {
                    return;
                }
                let name = self.tier.clients[c].name.clone();
                let sn = &mut self.nodes[member];
                let Some(node) = sn.node.as_mut() else {
                    return;
                };
                if let Err(e) = sn.host.request(node, now, &name, req) {
                    self.checker
                        .clients
                        .violation(format!("client {name}: refused by its member: {e}"));
                }
                self.drain(member);
            }
            TierEv::ToClient {
                c,
                member,
                epoch,
                notice,
            } => {
                if self.tier.clients[c].epoch != epoch {
                    return;
                }
                if let ClientNotice::Confirmed { counter } = &notice {
                    let id = ClientMsgId {
                        client: self.tier.clients[c].name.clone(),
                        incarnation: Incarnation(self.tier.clients[c].incarnation),
                        counter: *counter,
                    };
                    let by = self.who(member);
                    self.checker.clients.confirmed(self.now, &by, &id);
                }
                let mname = self.names[member].clone();
                if let Some(core) = self.tier.clients[c].core.as_mut() {
                    core.handle(&mname, notice);
                }
                self.client_outputs(c);
            }
            TierEv::ClientDown { c, member, epoch } => {
                let cl = &mut self.tier.clients[c];
                if cl.epoch != epoch {
                    return;
                }
                cl.epoch += 1;
                cl.up = false;
                self.tier.failovers += 1;
                let mname = self.names[member].clone();
                if let Some(core) = self.tier.clients[c].core.as_mut() {
                    core.link_down(&mname);
                }
                self.client_outputs(c);
            }
            TierEv::HostDown { c, member, epoch } => {
                if self.tier.attached[member].get(&c) != Some(&epoch) {
                    return;
                }
                self.tier.attached[member].remove(&c);
                let name = self.tier.clients[c].name.clone();
                let sn = &mut self.nodes[member];
                if let Some(node) = sn.node.as_mut() {
                    sn.host.detach(node, now, &name);
                }
                self.drain(member);
            }
            TierEv::Crash(c) => {
                if self.tier.clients[c].core.is_none() {
                    return;
                }
                self.tier.crashes += 1;
                let who = self.client_who(c);
                self.log(format!("{who} crashes"));
                self.end_link(c, false);
                self.tier.clients[c].core = None;
            }
            TierEv::Restart(c) => {
                if self.tier.clients[c].core.is_none() {
                    self.client_start(c);
                }
            }
            TierEv::Cut(c) => {
                if self.tier.clients[c].core.is_none() {
                    return;
                }
                let who = self.client_who(c);
                self.log(format!("{who}'s link is cut"));
                self.end_link(c, true);
            }
            TierEv::Probe => self.client_probes(),
            TierEv::Settled => self.clients_settled(),
        }
    }

    /// Client `c`'s link ends: the member learns it after a while, and so does the
    /// client (if it lives).
    fn end_link(&mut self, c: usize, tell_client: bool) {
        let Some(j) = self.tier.clients[c].member else {
            return;
        };
        let old = self.tier.clients[c].epoch;
        let cl = &mut self.tier.clients[c];
        cl.epoch += 1;
        cl.up = false;
        let epoch = cl.epoch;
        if self.tier.attached[j].get(&c) == Some(&old) {
            let d = Duration::from_millis(self.tier.rng.random_range(1..=300));
            self.at(
                self.now + d,
                Ev::Tier(TierEv::HostDown {
                    c,
                    member: j,
                    epoch: old,
                }),
            );
        }
        if tell_client {
            let d = Duration::from_millis(self.tier.rng.random_range(1..=300));
            self.at(
                self.now + d,
                Ev::Tier(TierEv::ClientDown {
                    c,
                    member: j,
                    epoch,
                }),
            );
        }
    }

    /// Member slot `i` crashed: its clients' links end.
    pub(super) fn tier_member_crashed(&mut self, i: usize) {
        self.tier.attached[i].clear();
        for c in 0..self.tier.clients.len() {
            if self.tier.clients[c].member == Some(i) && self.tier.clients[c].core.is_some() {
                self.end_link(c, true);
            }
        }
    }

    /// Takes the member's notices to its clients (after its outputs were drained).
    pub(super) fn tier_notices(&mut self, i: usize) {
        while let Some((name, notice)) = self.nodes[i].host.poll_notice() {
            let Some(c) = self.tier.clients.iter().position(|x| x.name == name) else {
                continue;
            };
            let Some(&epoch) = self.tier.attached[i].get(&c) else {
                continue;
            };
            let t = (self.now + self.latency()).max(self.tier.clients[c].arrivals[1]);
            self.tier.clients[c].arrivals[1] = t;
            self.at(
                t,
                Ev::Tier(TierEv::ToClient {
                    c,
                    member: i,
                    epoch,
                    notice,
                }),
            );
        }
    }

    /// One random action of a random live client.
    fn client_act(&mut self) {
        let live: Vec<usize> = (0..self.tier.clients.len())
            .filter(|c| self.tier.clients[*c].core.is_some())
            .collect();
        if live.is_empty() {
            return;
        }
        let c = live[self.tier.rng.random_range(0..live.len())];
        let probe_group = self.probe_group.clone();
        let group = self.groups[self.tier.rng.random_range(0..self.groups.len())].clone();
        let roll = self.tier.rng.random_range(0..100);
        let cl = &mut self.tier.clients[c];
        let Some(core) = cl.core.as_mut() else {
            return;
        };
        if cl.probe.is_none() {
            let s = core.open_session();
            let _ = core.join(s, probe_group);
            cl.probe = Some(s);
        } else if cl.apps.is_empty() || (cl.apps.len() < 2 && roll < 5) {
            cl.apps.push(core.open_session());
        } else {
            let k = self.tier.rng.random_range(0..cl.apps.len());
            let s = cl.apps[k];
            match roll {
                0..=14 => {
                    let _ = core.join(s, group);
                }
                15..=19 => {
                    let _ = core.leave(s, group);
                }
                20 => {
                    let _ = core.close_session(s);
                    cl.apps.remove(k);
                }
                _ => {
                    let service = if self.tier.rng.random_bool(0.7) {
                        Service::Agreed
                    } else {
                        Service::Reliable
                    };
                    let mut groups = vec![group];
                    if self.tier.rng.random_bool(0.3) {
                        groups.push(
                            self.groups[self.tier.rng.random_range(0..self.groups.len())].clone(),
                        );
                    }
                    self.client_multicast(c, s, service, groups);
                }
            }
        }
        self.client_outputs(c);
    }

    /// Client `c` multicasts from `session`; returns the payload id.
    fn client_multicast(
        &mut self,
        c: usize,
        session: SessionId,
        service: Service,
        mut groups: Vec<GroupName>,
    ) -> Option<u64> {
        let id = self.next_msg;
        let mut payload = id.to_le_bytes().to_vec();
        payload.push(0xc1);
        let cl = &mut self.tier.clients[c];
        let core = cl.core.as_mut()?;
        let counter = core.multicast(session, service, &groups, payload).ok()?;
        self.next_msg += 1;
        groups.sort();
        groups.dedup();
        let mid = ClientMsgId {
            client: cl.name.clone(),
            incarnation: Incarnation(cl.incarnation),
            counter,
        };
        self.checker.clients.sent(self.now, &mid, service, groups);
        Some(id)
    }

    /// Quiet phase: every live client with a probe session sends a probe.
    fn client_probes(&mut self) {
        let group = self.probe_group.clone();
        for c in 0..self.tier.clients.len() {
            let Some(s) = self.tier.clients[c].probe else {
                continue;
            };
            let id = self.next_msg;
            if self
                .client_multicast(c, s, Service::Agreed, vec![group.clone()])
                .is_some()
            {
                self.tier.probes.push(id);
                if let Some(p) = self.probe.as_mut() {
                    p.probes.push(id);
                }
            }
            self.client_outputs(c);
        }
    }

    /// Quiet for a while: every live client is attached with nothing unconfirmed, and
    /// its probe session got every probe of the members and the clients.
    fn clients_settled(&mut self) {
        let mut all: Vec<u64> = self.tier.probes.clone();
        if let Some(p) = &self.probe {
            all.extend(p.probes.iter().copied());
        }
        let all: BTreeSet<u64> = all.into_iter().collect();
        for c in 0..self.tier.clients.len() {
            let who = self.client_who(c);
            let cl = &self.tier.clients[c];
            let Some(core) = &cl.core else { continue };
            if !cl.up {
                self.checker
                    .clients
                    .violation(format!("client liveness: {who} is not attached once quiet"));
                continue;
            }
            if core.broken_deltas() > 0 {
                self.checker.clients.violation(format!(
                    "client membership: {who} got {} membership deltas that did not fit its lists",
                    core.broken_deltas()
                ));
            }
            if let Some(node) = cl.member.and_then(|j| self.nodes[j].node.as_ref()) {
                for (s, g, list) in core.member_lists() {
                    if node.group_members(g) != list {
                        self.checker.clients.violation(format!(
                            "client membership: {who}/{s}'s list of {g} once quiet is not its member's"
                        ));
                        break;
                    }
                }
            }
            if core.unconfirmed() > 0 {
                let left: Vec<u64> = core.unconfirmed_counters().take(5).collect();
                self.checker.clients.violation(format!(
                    "client liveness: {who} has {} messages unconfirmed once quiet, e.g. {left:?}",
                    core.unconfirmed()
                ));
                continue;
            }
            if cl.probe.is_some() {
                let missing: Vec<&u64> = all.difference(&cl.probes_got).take(5).collect();
                if !missing.is_empty() {
                    self.checker.clients.violation(format!(
                        "client liveness: {who}'s probe session missed probes {missing:?}"
                    ));
                }
            }
        }
    }
}
