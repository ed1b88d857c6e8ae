//! A measuring network of protocol cores: `n` real [`Node`]s on a virtual clock, every
//! message they send counted (by kind, sender and receiver, as encoded frame bytes) and
//! delivered after a fixed one-way latency. No faults but the ones the caller asks for
//! (crash, restart), no random client activity: this is the simulator's shape (sans-IO
//! cores, virtual time) made for counting, not for checking (the checking simulator is
//! `walrus_gcs::sim`).
//!
//! A crash is silent by default (a killed host: its links are not reported down, its
//! peers find out by the failure detector), or reported (`link_down`: the transport saw
//! the connection close, as for a process that exits on loopback).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::{Duration, Instant};

use walrus_gcs::{codec, CoreConfig, Incarnation, Node, NodeId, Output, PeerMessage, SessionId};

/// Counted traffic: messages and encoded frame bytes, by message kind.
#[derive(Clone, Debug, Default)]
pub struct Traffic {
    /// Per kind (`PeerMessage::kind`): (messages, bytes).
    pub by_kind: BTreeMap<&'static str, (u64, u64)>,
    /// Per sending node index: (messages, bytes).
    pub by_sender: BTreeMap<usize, (u64, u64)>,
    /// Per receiving node index: (messages, bytes).
    pub by_receiver: BTreeMap<usize, (u64, u64)>,
}

impl Traffic {
    fn add(&mut self, kind: &'static str, from: usize, to: usize, bytes: u64) {
        for slot in [
            self.by_kind.entry(kind).or_default(),
            self.by_sender.entry(from).or_default(),
            self.by_receiver.entry(to).or_default(),
        ] {
            slot.0 += 1;
            slot.1 += bytes;
        }
    }

    /// All messages and bytes.
    pub fn total(&self) -> (u64, u64) {
        self.by_kind
            .values()
            .fold((0, 0), |(m, b), (m2, b2)| (m + m2, b + b2))
    }

    /// Messages and bytes of the kinds in `kinds`.
    pub fn of(&self, kinds: &[&str]) -> (u64, u64) {
        self.by_kind
            .iter()
            .filter(|(k, _)| kinds.contains(k))
            .fold((0, 0), |(m, b), (_, (m2, b2))| (m + m2, b + b2))
    }

    /// The busiest node: the largest (sent + received) bytes, with its messages.
    pub fn busiest(&self, n: usize) -> (u64, u64) {
        (0..n)
            .map(|i| {
                let s = self.by_sender.get(&i).copied().unwrap_or_default();
                let r = self.by_receiver.get(&i).copied().unwrap_or_default();
                (s.0 + r.0, s.1 + r.1)
            })
            .max_by_key(|(_, b)| *b)
            .unwrap_or_default()
    }
}

/// Incarnations start here (a wall-clock time in milliseconds, like `Gcs::start`'s).
pub const INCARNATION_BASE: u64 = 1_765_000_000_000;

/// The membership-changing kinds (a view change's flush).
pub const VIEW_CHANGE_KINDS: &[&str] = &[
    "propose",
    "accept",
    "accept-data",
    "accept-groups",
    "reject",
    "install",
    "install-data",
    "install-groups",
];

#[derive(Debug)]
enum Ev {
    Msg {
        from: usize,
        to: usize,
        /// The sender's life when it sent (a message of a crashed life is lost).
        life: u64,
        msg: PeerMessage,
    },
    Timer {
        at: usize,
    },
}

/// A view installation seen by the network.
#[derive(Clone, Debug)]
pub struct Installed {
    /// Virtual time of the installation.
    pub at: Duration,
    /// The installing node.
    pub node: usize,
    /// Members of the installed view.
    pub members: usize,
}

/// `n` cores on a virtual clock.
pub struct Net {
    pub config: CoreConfig,
    pub names: Vec<NodeId>,
    nodes: Vec<Option<Node>>,
    /// Per node: incremented at each crash (messages of an older life are lost).
    life: Vec<u64>,
    incarnation: Vec<u64>,
    latency: Duration,
    base: Instant,
    pub now: Duration,
    events: BinaryHeap<Reverse<(Duration, u64, usize)>>,
    payloads: BTreeMap<u64, Ev>,
    next: u64,
    /// Per node: the timer already queued (so each deadline is queued once).
    timer_at: Vec<Option<Duration>>,
    pub traffic: Traffic,
    pub installs: Vec<Installed>,
    /// First `Propose` seen since the last [`Net::mark`], and when.
    pub first_propose: Option<Duration>,
    /// Membership events delivered to local sessions, and the encoded bytes of their
    /// member lists (what a client tier forwarding them would carry).
    pub membership_events: (u64, u64),
}

fn frame_len(msg: &PeerMessage) -> u64 {
    let mut buf = Vec::new();
    match codec::encode_frame(msg, &mut buf) {
        Ok(()) => buf.len() as u64,
        Err(_) => 0,
    }
}

impl Net {
    /// `n` nodes named `web-0000`, `web-0001`, … (names as long as a host name's short
    /// form), all configured with each other, links up.
    pub fn new(n: usize, config: CoreConfig, latency: Duration) -> Self {
        let names: Vec<NodeId> = (0..n).map(|i| NodeId::new(format!("web-{i:04}"))).collect();
        let base = Instant::now();
        let mut net = Net {
            config,
            nodes: (0..n).map(|_| None).collect(),
            life: vec![0; n],
            incarnation: vec![0; n],
            latency,
            base,
            now: Duration::ZERO,
            events: BinaryHeap::new(),
            payloads: BTreeMap::new(),
            next: 0,
            timer_at: vec![None; n],
            traffic: Traffic::default(),
            installs: Vec::new(),
            first_propose: None,
            membership_events: (0, 0),
            names,
        };
        for i in 0..n {
            net.start(i);
        }
        net
    }

    fn instant(&self) -> Instant {
        self.base + self.now
    }

    /// Starts (or restarts, with a larger incarnation) node `i`; its peers' links to it
    /// come up.
    pub fn start(&mut self, i: usize) {
        self.incarnation[i] += 1;
        self.life[i] += 1;
        let now = self.instant();
        let node = Node::new(
            self.config.clone(),
            self.names[i].clone(),
            // A real node's incarnation is its start time in milliseconds (its size on
            // the wire is that of a wall-clock number).
            Incarnation(INCARNATION_BASE + self.incarnation[i]),
            self.names.clone(),
            now,
        );
        self.nodes[i] = Some(node);
        for j in 0..self.names.len() {
            if j == i {
                continue;
            }
            let (a, b) = (self.names[i].clone(), self.names[j].clone());
            if let Some(node) = self.nodes[i].as_mut() {
                node.handle_link_up(now, &b);
            }
            if let Some(peer) = self.nodes[j].as_mut() {
                peer.handle_link_up(now, &a);
            }
            self.drain(j);
        }
        self.drain(i);
    }

    /// Crashes node `i`: it stops, messages to and from it are lost. With `link_down`
    /// its peers' transports report the link down at once.
    pub fn crash(&mut self, i: usize, link_down: bool) {
        self.nodes[i] = None;
        self.life[i] += 1;
        self.timer_at[i] = None;
        if link_down {
            let now = self.instant();
            let name = self.names[i].clone();
            for j in 0..self.names.len() {
                if let Some(peer) = self.nodes[j].as_mut() {
                    peer.handle_link_down(now, &name);
                }
                self.drain(j);
            }
        }
    }

    /// Node `i`'s core, if it runs.
    pub fn node(&mut self, i: usize) -> Option<&mut Node> {
        self.nodes[i].as_mut()
    }

    /// Node `i`'s core, if it runs (read only).
    pub fn node_ref(&self, i: usize) -> Option<&Node> {
        self.nodes[i].as_ref()
    }

    /// Opens a session on node `i`.
    pub fn open_session(&mut self, i: usize) -> Option<SessionId> {
        let now = self.instant();
        let s = self.nodes[i].as_mut().map(|n| n.open_session(now));
        self.drain(i);
        s
    }

    /// Closes session `s` of node `i` (a `Gone` op in the total order).
    pub fn close_session(&mut self, i: usize, s: SessionId) {
        let now = self.instant();
        if let Some(n) = self.nodes[i].as_mut() {
            let _ = n.close_session(now, s);
        }
        self.drain(i);
    }

    /// Joins session `s` of node `i` to `group`.
    pub fn join(&mut self, i: usize, s: SessionId, group: &str) {
        let now = self.instant();
        if let Some(n) = self.nodes[i].as_mut() {
            let _ = n.join(now, s, walrus_gcs::GroupName::new(group));
        }
        self.drain(i);
    }

    /// Resets the counters (traffic, installs, first proposal) for a new measurement.
    pub fn mark(&mut self) {
        self.traffic = Traffic::default();
        self.installs.clear();
        self.first_propose = None;
        self.membership_events = (0, 0);
    }

    fn push(&mut self, at: Duration, target: usize, ev: Ev) {
        self.next += 1;
        self.payloads.insert(self.next, ev);
        self.events.push(Reverse((at, self.next, target)));
    }

    /// Takes node `i`'s outputs: sends are counted and queued, deliveries read at once
    /// (which may release a held acknowledgement: taken in the next pass), installations
    /// recorded; then its next timer is queued.
    fn drain(&mut self, i: usize) {
        loop {
            let Some(node) = self.nodes[i].as_mut() else {
                return;
            };
            let mut outs = Vec::new();
            while let Some(o) = node.poll_output() {
                outs.push(o);
            }
            if outs.is_empty() {
                break;
            }
            for o in outs {
                self.output(i, o);
            }
        }
        let Some(timeout) = self.nodes[i].as_ref().and_then(|n| n.poll_timeout()) else {
            return;
        };
        let at = timeout.saturating_duration_since(self.base).max(self.now);
        if self.timer_at[i].is_none_or(|q| at < q || q < self.now) {
            self.timer_at[i] = Some(at);
            self.push(at, i, Ev::Timer { at: i });
        }
    }

    fn output(&mut self, i: usize, o: Output) {
        match o {
            Output::Send { to, msg } => {
                let Some(j) = self.index(&to) else { return };
                let kind = msg.kind();
                if kind == "propose" && self.first_propose.is_none() {
                    self.first_propose = Some(self.now);
                }
                self.traffic.add(kind, i, j, frame_len(&msg));
                let at = self.now + self.latency;
                let life = self.life[i];
                self.push(
                    at,
                    j,
                    Ev::Msg {
                        from: i,
                        to: j,
                        life,
                        msg,
                    },
                );
            }
            Output::Deliver { session, event } => {
                if let walrus_gcs::Event::Membership { members, .. } = &event {
                    let mut buf = Vec::new();
                    let len = codec::encode_frame(members, &mut buf)
                        .map(|()| buf.len() as u64)
                        .unwrap_or(0);
                    self.membership_events.0 += 1;
                    self.membership_events.1 += len;
                }
                if let Some(node) = self.nodes[i].as_mut() {
                    node.mark_read(session, 1);
                }
            }
            Output::ViewInstalled(v) => self.installs.push(Installed {
                at: self.now,
                node: i,
                members: v.members.len(),
            }),
            // The harness models clients (see tier.rs): no client messages to confirm.
            Output::Confirmed { .. } => {}
        }
    }

    fn index(&self, name: &NodeId) -> Option<usize> {
        // Names are `web-NNNN` in index order.
        name.as_str()
            .strip_prefix("web-")
            .and_then(|s| s.parse().ok())
            .filter(|i: &usize| *i < self.names.len())
    }

    /// Runs the network until virtual time `until` (or `stop` says so, checked after
    /// each event). Returns true if `stop` ended it.
    pub fn run_until(&mut self, until: Duration, mut stop: impl FnMut(&Net) -> bool) -> bool {
        while let Some(Reverse((at, id, _))) = self.events.peek().copied() {
            if at > until {
                break;
            }
            self.events.pop();
            self.now = self.now.max(at);
            let Some(ev) = self.payloads.remove(&id) else {
                continue;
            };
            let now = self.instant();
            match ev {
                Ev::Msg {
                    from,
                    to,
                    life,
                    msg,
                } => {
                    if life != self.life[from] {
                        continue;
                    }
                    let from_name = self.names[from].clone();
                    if let Some(node) = self.nodes[to].as_mut() {
                        node.handle_message(now, &from_name, msg);
                    }
                    self.drain(to);
                }
                Ev::Timer { at: i } => {
                    if self.timer_at[i] != Some(at) {
                        continue;
                    }
                    self.timer_at[i] = None;
                    if let Some(node) = self.nodes[i].as_mut() {
                        node.handle_timeout(now);
                    }
                    self.drain(i);
                }
            }
            if stop(self) {
                return true;
            }
        }
        self.now = self.now.max(until);
        false
    }

    /// True when every running node is in one view of exactly the running nodes.
    pub fn one_view(&self) -> bool {
        let running: Vec<&Node> = self.nodes.iter().flatten().collect();
        let Some(first) = running.first() else {
            return false;
        };
        running
            .iter()
            .all(|n| n.view() == first.view() && n.members().len() == running.len())
    }
}
