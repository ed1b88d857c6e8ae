//! Deterministic simulator: many [`Node`]s on a virtual clock, with a seeded RNG.
//!
//! Links are reliable while they live (what a QUIC connection gives), FIFO per lane (a link
//! has a control and a data stream, see [`crate::wire::PeerMessage::is_control`]), with random
//! latency; the fault plan breaks them: partitions into components (the transport may or
//! may not report the break), non-transitive cuts, silent one-way cuts, heals, crashes
//! and restarts with a new incarnation. Random client activity opens and closes
//! sessions, joins and leaves groups, multicasts Reliable and Agreed messages to one or
//! two groups, and sometimes stops reading (the core must disconnect the session). The
//! [`invariants::Checker`] sees everything and reports violations; a run ends with a
//! quiet phase that checks liveness. It begins with a **calm phase**: the nodes start
//! within 0, 100, 300 or 1,000 ms of each other, each pair's link comes up at its own
//! time (each end a little apart), and no fault comes before 3 s; by then they must be
//! in one view of all of them, and none may install a smaller view before the first
//! fault ([`invariants::calm_start`]).
//!
//! Then, by [`Scenario`], a second process proving one node's name joins the settled
//! cluster: a **duplicate incarnation** (the node's certificate and name, a newer
//! incarnation, another address) or an **impostor** (the node's certificate under
//! another name: its frames never pass the sender check). Either on a connected cluster
//! (it must be refused without any view change) or while the original is cut off (it
//! takes the name meanwhile; once it is gone and the cut heals, one view again within
//! the merge time). Links to a name go through the transport's own admission rule
//! ([`crate::transport::admission`]): the simulator keeps, per node and peer name, which
//! process the link currently reaches.
//!
//! Every run also has 2–6 **clients** (`sim/tier.rs`, `PROTOCOL.md` "Clients"), each
//! attached to one member over a link of its own: they open sessions, join, leave and
//! multicast, crash and restart, have their link cut, and fail over to the next member
//! of their list when their member crashes; their own RNG drives them. The client checks
//! are in [`invariants::clients`].
//!
//! Same seed, same run: the only randomness is the seeded ChaCha RNG, and the only real
//! `Instant` is the base that virtual time is added to.

pub mod invariants;
mod tier;

use crate::config::CoreConfig;
use crate::event::{Event, Output};
use crate::node::{Node, PlantedBugs};
use crate::tier::ClientHost;
use crate::transport::admission::{Admission, AdmissionConfig, Verdict};
use crate::types::{GroupName, Incarnation, NodeId, NodeRef, Service, SessionId};
use crate::wire::PeerMessage;
use invariants::duplicate_incarnation::{Newcomer, RECOVERY_BOUND, REFUSAL_BOUND};
use invariants::{Checker, EndState, LivenessProbe, Request, Sent};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tier::{Tier, TierEv};

/// One simulated run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// RNG seed: same seed, same run.
    pub seed: u64,
    /// Number of nodes.
    pub nodes: usize,
    /// Length of the fault phase (virtual time).
    pub duration: Duration,
    /// Partition/heal cycles in the fault phase.
    pub partitions: usize,
    /// Crash/restart pairs in the fault phase.
    pub crashes: usize,
    /// Mean time between two client actions (virtual).
    pub client_interval: Duration,
    /// The nodes' configuration.
    pub core: CoreConfig,
    /// Planted bugs (to show the checkers catch them).
    pub bugs: PlantedBugs,
    /// Planted transport bug: every new connection replaces the link to its name at once
    /// (the rule before issue 16), instead of the admission rule.
    pub replace_always: bool,
    /// How long after the last fault every node must be in one view.
    pub view_bound: Duration,
    /// How long probe messages sent then have to reach everyone.
    pub delivery_bound: Duration,
    /// What runs after the liveness phase.
    pub scenario: Scenario,
    /// Clients attached to the members (`PROTOCOL.md`, "Clients"; see `sim/tier.rs`).
    pub clients: usize,
    /// The nodes start at random times within this much of the first (zero: together).
    pub start_spread: Duration,
    /// No partition or crash before this time: the nodes started together must form one
    /// view of all of them by then and not split before the first fault
    /// ([`invariants::calm_start`]).
    pub calm: Duration,
}

/// A scenario run after the liveness phase, on the settled cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Nothing: the run ends after the liveness phase.
    None,
    /// A second process with one node's certificate and name (issue 16).
    Duplicate,
    /// A process presenting one node's certificate under another name (issue 16).
    Impostor,
    /// A node restarted inside a cut, its sessions joining alone, healed past the
    /// Controller's join grace: the group's first member must not change (issue 16).
    IsolatedStart,
}

impl Scenario {
    /// The scenario a standard run of `seed` adds (a quarter of the seeds each).
    pub fn for_seed(seed: u64) -> Self {
        match seed % 4 {
            0 => Scenario::None,
            1 => Scenario::Duplicate,
            2 => Scenario::Impostor,
            _ => Scenario::IsolatedStart,
        }
    }
}

impl SimConfig {
    /// The standard run for `seed`: 3–7 nodes, 60 s of faults with 5+ partition cycles and
    /// 2+ crashes, then the liveness phase. Half the seeds run with 512-byte frames
    /// (`max_message_size`), so a view change's entries and group records take many
    /// chunks and the ordering messages carry a few operations each.
    pub fn standard(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        let mut config = SimConfig {
            seed,
            nodes: rng.random_range(3..=7),
            duration: Duration::from_secs(60),
            partitions: rng.random_range(5..=8),
            crashes: rng.random_range(2..=3),
            client_interval: Duration::from_millis(20),
            core: CoreConfig {
                session_queue_limit: 200,
                ..CoreConfig::default()
            },
            bugs: PlantedBugs::default(),
            replace_always: false,
            view_bound: Duration::from_secs(5),
            delivery_bound: Duration::from_secs(1),
            scenario: Scenario::for_seed(seed),
            clients: rng.random_range(2..=6),
            start_spread: Duration::ZERO,
            calm: CALM,
        };
        if rng.random_bool(0.5) {
            config.core.max_message_size = SMALL_FRAMES;
        }
        // Within one heartbeat, a few heartbeats, or a second (issue 24: the split came
        // from nodes started within a heartbeat of each other).
        config.start_spread = Duration::from_millis([0, 100, 300, 1000][rng.random_range(0..4)]);
        config
    }
}

/// The calm phase of a standard run: the latest start (one second at most) and then two
/// seconds to form the whole view, where a merge takes about half a second.
pub const CALM: Duration = Duration::from_secs(3);

/// The frame budget of the seeds that run with small frames (the simulator's payloads are
/// at most 72 bytes).
pub const SMALL_FRAMES: usize = 512;

/// The outcome of one run.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Nodes simulated.
    pub nodes: usize,
    /// Virtual seconds simulated.
    pub virtual_seconds: f64,
    /// Partition cycles applied.
    pub partitions: u64,
    /// Crashes applied.
    pub crashes: u64,
    /// Multicasts accepted by the cores.
    pub messages: u64,
    /// Deliveries checked.
    pub deliveries: u64,
    /// Views installed (all nodes).
    pub views: u64,
    /// Duplicate-incarnation scenarios run.
    pub duplicates: u64,
    /// Impostor scenarios run.
    pub impostors: u64,
    /// Isolated-start scenarios run.
    pub isolated_starts: u64,
    /// Newcomers refused by a peer's admission rule (their process stopped).
    pub refused: u64,
    /// Clients simulated.
    pub clients: usize,
    /// Times a client's link ended and it attached again (to the next member).
    pub client_failovers: u64,
    /// Client crashes.
    pub client_crashes: u64,
    /// Deliveries of client messages checked (members' and clients' sessions).
    pub client_deliveries: u64,
    /// Virtual time from a client's multicast to its first confirmation: count of
    /// messages by delay in 100 µs steps.
    pub client_confirm_delays: BTreeMap<u64, u64>,
    /// `Ack`s the cores sent (after merging within a turn; one per member they go to).
    pub acks: u64,
    /// `AcceptGroups` and `InstallGroups` chunks the cores sent (a view change's group
    /// records; many per view change on the seeds with small frames).
    pub group_chunks: u64,
    /// Bytes their `delivered` fields take on the wire (varints; `PROTOCOL.md`,
    /// "Clients": the cost of confirming once every member delivered).
    pub delivered_field_bytes: u64,
    /// When the nodes started together first formed one view of all of them (virtual
    /// time; `None` if a fault came first).
    pub formed_at: Option<Duration>,
    /// What the checkers found.
    pub violations: Vec<String>,
    /// The last lines of the run's trace (faults, views), for a failure report.
    pub trace: Vec<String>,
}

/// Bytes of `v` as a bincode varint (the codec's integer encoding).
fn varint_len(v: u64) -> u64 {
    match v {
        0..=250 => 1,
        251..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

impl SimReport {
    /// A failure report: seed, how to replay, violations and the trace tail.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "seed {} ({} nodes) failed; replay with WALRUS_SIM_SEED={}\n",
            self.seed, self.nodes, self.seed
        );
        for v in self.violations.iter().take(10) {
            s.push_str(&format!("  violation: {v}\n"));
        }
        s.push_str("  trace (last lines):\n");
        for t in &self.trace {
            s.push_str(&format!("    {t}\n"));
        }
        s
    }
}

#[derive(Debug)]
enum Ev {
    Msg {
        from: usize,
        to: usize,
        epoch: u64,
        msg: PeerMessage,
    },
    LinkDown {
        at: usize,
        peer: usize,
    },
    LinkUp {
        at: usize,
        peer: usize,
    },
    Client,
    Fault(Fault),
    /// The calm phase ends: the nodes started together must be in one whole view.
    CalmEnd,
    SampleViews,
    SendProbes,
    /// A held newcomer's admission is decided again.
    AdmitCheck {
        at: usize,
        name: usize,
        slot: usize,
    },
    /// A link to `peer`'s name ended because that process exited (delivered only if no
    /// other process holds the name's link by then).
    ExitDown {
        at: usize,
        peer: usize,
    },
    Scenario(Step),
    /// A client's event (`sim/tier.rs`).
    Tier(TierEv),
    /// The end of a node's turn: its outputs go out (see [`Sim::end_turn_later`]).
    Drain {
        at: usize,
    },
    End,
}

/// Steps of a duplicate or impostor scenario.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Cut the original off from every other node.
    Cut,
    /// Start the newcomer.
    Start,
    /// Its operator stops the newcomer (if no peer refused it first).
    Stop,
    /// Heal the cut.
    Heal,
    /// Connected: the newcomer must have been refused.
    CheckRefused,
    /// After a cut: one view of every configured node.
    CheckOneView,
    /// Isolated start: crash a node that is not the probe group's first member.
    IsoCrash,
    /// Isolated start: restart it (inside the cut).
    IsoRestart,
}

#[derive(Debug, Clone)]
enum Fault {
    Partition,
    HealAll,
    Crash(usize),
    Restart(usize),
}

#[derive(Clone, Copy, Debug, Default)]
struct Link {
    cut: bool,
    epoch: u64,
    /// Latest arrival so far on each lane (data, control): FIFO within a lane, like the
    /// transport's two streams; a control message may overtake data and the reverse.
    last_arrival: [Duration; 2],
    /// When the sending side's link came up (after a start): what it sends before is
    /// lost, as a transport that is still dialing (or accepting) has no link to send on.
    up_at: Duration,
}

struct SimSession {
    id: SessionId,
    stalled: bool,
    probe: bool,
    groups: BTreeSet<GroupName>,
    sent: u64,
}

struct SimNode {
    node: Option<Node>,
    incarnation: u64,
    sessions: Vec<SimSession>,
    /// Index of the name (and certificate) this process proves.
    name: usize,
    /// Its address: a configured node's own, or elsewhere for a newcomer.
    addr: SocketAddr,
    /// Presents the certificate of `name` but calls itself another node.
    impostor: bool,
    /// Its turn is open: messages it received are not drained yet (an [`Ev::Drain`] is
    /// scheduled).
    in_turn: bool,
    /// Its clients' sessions (reset at a restart: a new incarnation hosts nobody).
    host: ClientHost,
}

/// An event queued for virtual time `at.0` (`at.1` numbers events, so ties keep the
/// order they were queued in); ordered by `at` alone. The event is boxed: the heap moves
/// its items as it sorts them.
#[derive(Debug)]
struct Queued {
    at: (Duration, u64),
    ev: Box<Ev>,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

struct Sim {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    base: Instant,
    now: Duration,
    /// Events by (time, number): a min-heap, so the same order as a sorted map at a
    /// fraction of its cost (the numbers are unique).
    events: BinaryHeap<Reverse<Queued>>,
    next_ev: u64,
    names: Vec<NodeId>,
    nodes: Vec<SimNode>,
    links: Vec<Vec<Link>>,
    latency_max_ms: u64,
    checker: Checker,
    next_msg: u64,
    closed: Vec<(NodeRef, SessionId)>,
    trace: VecDeque<String>,
    report: SimReport,
    probe: Option<LivenessProbe>,
    probe_group: GroupName,
    groups: Vec<GroupName>,
    trace_len: usize,
    /// Also trace every delivery (`WALRUS_SIM_TRACE=all`).
    trace_all: bool,
    /// Per process and peer name: which process the link to that name reaches.
    owner: Vec<Vec<Option<usize>>>,
    /// Per process and peer name: the transport's admission rule.
    admission: Vec<Vec<Admission>>,
    /// Per process and peer name: a newcomer held by the admission rule.
    held: Vec<Vec<Option<usize>>>,
    /// The scenario's original node and newcomer process.
    scenario: Option<(usize, usize)>,
    /// The clients.
    tier: Tier,
}

/// Runs one simulation and checks it.
pub fn run(cfg: &SimConfig) -> SimReport {
    let mut sim = Sim::new(cfg.clone());
    sim.run();
    sim.report
}

impl Sim {
    fn new(cfg: SimConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let names: Vec<NodeId> = (0..cfg.nodes)
            .map(|i| NodeId::new(format!("n{i:02}")))
            .collect();
        let latency_max_ms = rng.random_range(2..=30);
        let n = cfg.nodes;
        // One more process slot for the scenario's newcomer.
        let slots = match cfg.scenario {
            Scenario::Duplicate | Scenario::Impostor => n + 1,
            Scenario::None | Scenario::IsolatedStart => n,
        };
        let addr =
            |i: usize| SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 7000));
        let base = Instant::now();
        let admission = (0..slots)
            .map(|_| {
                (0..n)
                    .map(|y| {
                        let mut a = Admission::new(AdmissionConfig::default(), addr(y));
                        a.link_started(base, addr(y));
                        a
                    })
                    .collect()
            })
            .collect();
        Sim {
            owner: vec![(0..n).map(Some).collect(); slots],
            admission,
            held: vec![vec![None; n]; slots],
            scenario: None,
            tier: Tier::new(cfg.seed, cfg.clients, slots),
            rng,
            base,
            now: Duration::ZERO,
            events: BinaryHeap::new(),
            next_ev: 0,
            nodes: (0..slots)
                .map(|i| SimNode {
                    node: None,
                    incarnation: 0,
                    sessions: Vec::new(),
                    // The newcomer's name is chosen when the scenario starts.
                    name: if i < n { i } else { 0 },
                    addr: if i < n {
                        addr(i)
                    } else {
                        SocketAddr::from(([10, 9, 9, 9], 7000))
                    },
                    impostor: false,
                    in_turn: false,
                    host: ClientHost::default(),
                })
                .collect(),
            links: vec![vec![Link::default(); slots]; slots],
            latency_max_ms,
            checker: Checker::default(),
            next_msg: 1,
            closed: Vec::new(),
            trace: VecDeque::new(),
            report: SimReport {
                seed: cfg.seed,
                nodes: n,
                ..SimReport::default()
            },
            probe: None,
            probe_group: GroupName::new("probe"),
            groups: (0..4).map(|i| GroupName::new(format!("g{i}"))).collect(),
            names,
            cfg,
            trace_len: std::env::var("WALRUS_SIM_TRACE_LINES")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(40),
            trace_all: std::env::var("WALRUS_SIM_TRACE").is_ok_and(|v| v == "all"),
        }
    }

    fn log(&mut self, line: String) {
        if self.trace.len() >= self.trace_len {
            self.trace.pop_front();
        }
        self.trace
            .push_back(format!("{:>9.3}s {line}", self.now.as_secs_f64()));
    }

    fn at(&mut self, t: Duration, ev: Ev) {
        self.next_ev += 1;
        self.events.push(Reverse(Queued {
            at: (t, self.next_ev),
            ev: Box::new(ev),
        }));
    }

    fn instant(&self) -> Instant {
        self.base + self.now
    }

    fn plan(&mut self) {
        let d = self.cfg.duration;
        let cycles = self.cfg.partitions.max(1) as u32;
        let slot = d / cycles;
        let calm = self.cfg.calm;
        for c in 0..cycles {
            let start = (slot * c
                + Duration::from_millis(self.rng.random_range(0..=slot.as_millis() as u64 / 3)))
            .max(calm);
            let len = Duration::from_millis(self.rng.random_range(500..=4000)).min(slot / 2);
            self.at(start, Ev::Fault(Fault::Partition));
            self.at(start + len, Ev::Fault(Fault::HealAll));
        }
        for _ in 0..self.cfg.crashes {
            let t = Duration::from_millis(self.rng.random_range(1000..d.as_millis() as u64 - 1000))
                .max(calm);
            let who = self.rng.random_range(0..self.cfg.nodes);
            let back = Duration::from_millis(self.rng.random_range(300..=3000));
            self.at(t, Ev::Fault(Fault::Crash(who)));
            self.at((t + back).min(d), Ev::Fault(Fault::Restart(who)));
        }
        // The last fault: heal everything and restart whoever is down.
        self.at(d, Ev::Fault(Fault::HealAll));
        for i in 0..self.cfg.nodes {
            self.at(d, Ev::Fault(Fault::Restart(i)));
        }
        self.at(calm, Ev::CalmEnd);
        self.at(d + self.cfg.view_bound, Ev::SampleViews);
        self.at(d + self.cfg.view_bound, Ev::SendProbes);
        let t0 = d + self.cfg.view_bound + self.cfg.delivery_bound;
        let end = self.plan_scenario(t0);
        self.at(end, Ev::End);
        self.at(Duration::ZERO, Ev::Client);
        self.plan_tier();
    }

    /// Plans the scenario from `t0` (everything settled); returns when the run ends.
    /// Its choices come from their own RNG, so the standard part of a seed is unchanged.
    fn plan_scenario(&mut self, t0: Duration) -> Duration {
        let mut rng = ChaCha8Rng::seed_from_u64(self.cfg.seed ^ 0xd0b1_e000);
        let n = self.cfg.nodes;
        let ms = Duration::from_millis;
        let kind = match self.cfg.scenario {
            Scenario::None => return t0,
            Scenario::Duplicate => Newcomer::Duplicate,
            Scenario::Impostor => Newcomer::Impostor,
            Scenario::IsolatedStart => {
                // The node is chosen at the crash (it must not be the first member).
                self.at(t0, Ev::Scenario(Step::IsoCrash));
                self.at(t0 + ms(300), Ev::Scenario(Step::Cut));
                self.at(t0 + ms(500), Ev::Scenario(Step::IsoRestart));
                // Past the join grace (five failure timeouts: 2 s with LAN defaults).
                let heal = t0
                    + ms(500)
                    + self.cfg.core.failure_timeout * 5
                    + ms(rng.random_range(200..=1500));
                self.at(heal, Ev::Scenario(Step::Heal));
                self.at(heal + RECOVERY_BOUND, Ev::Scenario(Step::CheckOneView));
                return heal + RECOVERY_BOUND + ms(1);
            }
        };
        let original = rng.random_range(0..n);
        let slot = n;
        self.nodes[slot].name = original;
        self.nodes[slot].impostor = kind == Newcomer::Impostor;
        self.scenario = Some((original, slot));
        if rng.random_bool(0.5) {
            // Connected: the newcomer must be refused, and nothing may change.
            self.at(t0, Ev::Scenario(Step::Start));
            self.at(t0 + REFUSAL_BOUND, Ev::Scenario(Step::CheckRefused));
            // Its operator gives up after 15 s (the process test's duration).
            self.at(t0 + Duration::from_secs(15), Ev::Scenario(Step::Stop));
            t0 + REFUSAL_BOUND + ms(500)
        } else {
            // The original is cut off; the newcomer takes the name meanwhile; it is
            // stopped by its operator before the heal, or evicted by the heal.
            self.at(t0, Ev::Scenario(Step::Cut));
            self.at(t0 + ms(500), Ev::Scenario(Step::Start));
            let heal = t0 + ms(rng.random_range(2500..=4000));
            if rng.random_bool(0.5) {
                self.at(
                    heal - ms(rng.random_range(0..=800)),
                    Ev::Scenario(Step::Stop),
                );
            }
            self.at(heal, Ev::Scenario(Step::Heal));
            self.at(heal + RECOVERY_BOUND, Ev::Scenario(Step::CheckOneView));
            heal + RECOVERY_BOUND + ms(1)
        }
    }

    fn run(&mut self) {
        self.checker.calm.configure(&self.names);
        // The start times come from their own RNG (the rest of a seed's plan is drawn as
        // before). A node that starts late is met as a restarted one is: its links come
        // up on both sides (until then, what is sent to it is lost).
        let mut rng = ChaCha8Rng::seed_from_u64(self.cfg.seed ^ 0xca1_5747);
        let spread = self.cfg.start_spread.as_millis() as u64;
        for i in 0..self.cfg.nodes {
            let t = Duration::from_millis(rng.random_range(0..=spread));
            if t.is_zero() {
                self.start(i);
            } else {
                self.at(t, Ev::Fault(Fault::Restart(i)));
            }
        }
        self.plan();
        self.run_until(Duration::MAX);
        self.finish();
    }

    /// Processes events and timers up to virtual time `until` (or the `End` event, or
    /// the first violation). Returns false if the run is over.
    fn run_until(&mut self, until: Duration) -> bool {
        loop {
            let next_ev = self.events.peek().map(|q| q.0.at.0);
            let next_timer = self
                .nodes
                .iter()
                .filter_map(|n| n.node.as_ref()?.poll_timeout())
                .min()
                .map(|t| t.saturating_duration_since(self.base));
            let (t, timer) = match (next_ev, next_timer) {
                (Some(e), Some(tm)) if tm < e => (tm, true),
                (Some(e), _) => (e, false),
                (None, Some(tm)) => (tm, true),
                (None, None) => return false,
            };
            if t > until {
                self.now = until;
                return true;
            }
            self.now = self.now.max(t);
            if timer {
                let now = self.instant();
                for i in 0..self.nodes.len() {
                    let due = self.nodes[i]
                        .node
                        .as_ref()
                        .and_then(|n| n.poll_timeout())
                        .is_some_and(|d| d <= now);
                    if due {
                        if let Some(n) = self.nodes[i].node.as_mut() {
                            n.handle_timeout(now);
                        }
                        self.drain(i);
                        let stuck = self.nodes[i]
                            .node
                            .as_ref()
                            .and_then(|n| n.poll_timeout())
                            .is_some_and(|d| d <= now);
                        if stuck {
                            let who = self.who(i);
                            self.checker.violations.push(format!(
                                "timer: {who} asks to be woken at a time already handled ({:?})",
                                self.now
                            ));
                            return false;
                        }
                    }
                }
                continue;
            }
            let Some(Reverse(Queued { ev, .. })) = self.events.pop() else {
                return false;
            };
            if matches!(*ev, Ev::End) {
                return false;
            }
            self.handle(*ev);
            self.checker.take_client_violations();
            if !self.checker.violations.is_empty() {
                // Stop at the first violation, so the trace ends where it happened.
                self.log("stopped at the first violation".into());
                return false;
            }
        }
    }

    fn handle(&mut self, ev: Ev) {
        let now = self.instant();
        match ev {
            Ev::Msg {
                from,
                to,
                epoch,
                msg,
            } => {
                if self.links[from][to].epoch != epoch || self.links[from][to].cut {
                    return;
                }
                let x = self.nodes[from].name;
                if self.owner[to][x] != Some(from) {
                    // Another process holds (or held) the link to this name: a new
                    // connection, decided by the admission rule; nothing is read meanwhile.
                    self.attempt(to, x, from);
                    return;
                }
                self.admission[to][x].heard(now);
                let name = self.names[x].clone();
                if let Some(n) = self.nodes[to].node.as_mut() {
                    n.handle_message(now, &name, msg);
                    self.end_turn_later(to);
                }
            }
            Ev::Drain { at } => {
                self.nodes[at].in_turn = false;
                self.drain(at);
            }
            Ev::LinkDown { at, peer } => {
                let name = self.names[self.nodes[peer].name].clone();
                if let Some(n) = self.nodes[at].node.as_mut() {
                    n.handle_link_down(now, &name);
                    self.drain(at);
                }
            }
            Ev::LinkUp { at, peer } => {
                let name = self.names[self.nodes[peer].name].clone();
                if let Some(n) = self.nodes[at].node.as_mut() {
                    n.handle_link_up(now, &name);
                    self.drain(at);
                }
            }
            Ev::Client => {
                if self.now >= self.cfg.duration + self.cfg.view_bound {
                    return; // quiet: only the probes travel now
                }
                self.client();
                let gap = self
                    .rng
                    .random_range(0..=self.cfg.client_interval.as_micros() as u64 * 2);
                let t = self.now + Duration::from_micros(gap);
                self.at(t, Ev::Client);
            }
            Ev::Fault(f) => self.fault(f),
            Ev::CalmEnd => {
                let now = self.now;
                self.checker
                    .calm
                    .check_formed(now, &mut self.checker.violations);
            }
            Ev::SampleViews => {
                let views = self
                    .nodes
                    .iter()
                    .filter_map(|n| n.node.as_ref())
                    .map(|n| {
                        (
                            NodeRef {
                                id: n.id().clone(),
                                incarnation: n.incarnation(),
                            },
                            n.view().clone(),
                            n.members().to_vec(),
                        )
                    })
                    .collect();
                let alive = (0..self.nodes.len())
                    .filter(|i| self.nodes[*i].node.is_some())
                    .map(|i| self.who(i))
                    .collect();
                self.probe = Some(LivenessProbe {
                    view_bound: self.cfg.view_bound,
                    views,
                    alive,
                    delivery_bound: self.cfg.delivery_bound,
                    ..LivenessProbe::default()
                });
            }
            Ev::SendProbes => {
                for i in 0..self.nodes.len() {
                    let Some(s) = self.nodes[i].sessions.iter().position(|s| s.probe) else {
                        continue;
                    };
                    let group = self.probe_group.clone();
                    // Listed before sending: a sequencer delivers its own at once.
                    let id = self.next_msg;
                    if let Some(p) = self.probe.as_mut() {
                        p.probes.push(id);
                    }
                    if self.multicast(i, s, Service::Agreed, vec![group]).is_none() {
                        if let Some(p) = self.probe.as_mut() {
                            p.probes.retain(|x| *x != id);
                        }
                    }
                }
                let receivers = self
                    .nodes
                    .iter()
                    .filter_map(|n| {
                        let node = n.node.as_ref()?;
                        let s = n.sessions.iter().find(|s| s.probe)?;
                        Some((
                            NodeRef {
                                id: node.id().clone(),
                                incarnation: node.incarnation(),
                            },
                            s.id,
                        ))
                    })
                    .collect();
                if let Some(p) = self.probe.as_mut() {
                    p.receivers = receivers;
                }
            }
            Ev::AdmitCheck { at, name, slot } => {
                if self.held[at][name] != Some(slot) || self.nodes[slot].node.is_none() {
                    return;
                }
                if let Some(v) = self.admission[at][name].check(now) {
                    self.verdict(at, name, slot, v);
                }
            }
            Ev::ExitDown { at, peer } => {
                let x = self.nodes[peer].name;
                if self.owner[at][x].is_some() {
                    return;
                }
                let name = self.names[x].clone();
                if let Some(n) = self.nodes[at].node.as_mut() {
                    n.handle_link_down(now, &name);
                    self.drain(at);
                }
            }
            Ev::Scenario(step) => self.scenario_step(step),
            Ev::Tier(e) => self.tier_event(e),
            Ev::End => {}
        }
    }

    /// A message from process `slot` (proving name `x`) reached `at`, whose link to `x`
    /// is another process's: the transport's admission rule decides.
    fn attempt(&mut self, at: usize, x: usize, slot: usize) {
        if self.nodes[slot].node.is_none() || self.held[at][x] == Some(slot) {
            return;
        }
        let now = self.instant();
        let v = if self.cfg.replace_always {
            Verdict::Admit { duplicate: None }
        } else {
            self.admission[at][x].offer(now, self.nodes[slot].addr)
        };
        self.held[at][x] = Some(slot);
        self.verdict(at, x, slot, v);
    }

    fn verdict(&mut self, at: usize, x: usize, slot: usize, v: Verdict) {
        let now = self.instant();
        let who = self.who(slot);
        let here = self.who(at);
        match v {
            Verdict::Hold { until } => {
                self.held[at][x] = Some(slot);
                let t = until.saturating_duration_since(self.base).max(self.now);
                self.at(t, Ev::AdmitCheck { at, name: x, slot });
            }
            Verdict::Refuse(_) => {
                self.held[at][x] = None;
                self.log(format!("{here} refuses {who} as a duplicate"));
                self.report.refused += 1;
                self.exit(slot, true);
            }
            Verdict::Admit { duplicate } => {
                self.held[at][x] = None;
                let old = self.owner[at][x].filter(|o| *o != slot);
                self.owner[at][x] = Some(slot);
                let name = self.names[x].clone();
                if old.is_some() {
                    if let Some(n) = self.nodes[at].node.as_mut() {
                        n.handle_link_down(now, &name);
                    }
                }
                if self.nodes[slot].impostor {
                    // Its first frame names another sender: closed before it is read.
                    self.log(format!(
                        "{here} admits {who} (impostor): closed at its first frame"
                    ));
                    self.owner[at][x] = None;
                    self.admission[at][x].link_ended();
                    self.drain(at);
                    return;
                }
                self.log(format!("{here} admits {who} as {name}"));
                if let Some(n) = self.nodes[at].node.as_mut() {
                    n.handle_link_up(now, &name);
                }
                self.drain(at);
                if let Some(o) = old {
                    if duplicate.is_some() && self.nodes[o].node.is_some() {
                        self.log(format!("{here} evicts {} as a duplicate", self.who(o)));
                        self.report.refused += 1;
                        self.exit(o, true);
                    } else if self.nodes[o].node.is_some() {
                        // Its connection was replaced: it loses its link to `at`.
                        let peer = self.names[self.nodes[at].name].clone();
                        if let Some(n) = self.nodes[o].node.as_mut() {
                            n.handle_link_down(now, &peer);
                        }
                        self.drain(o);
                    }
                }
            }
        }
    }

    /// The newcomer's process stops (`refused`: a peer refused it as a duplicate; else its
    /// operator stopped it). Its links end; peers see them down.
    fn exit(&mut self, slot: usize, refused: bool) {
        if self.nodes[slot].node.is_none() {
            return;
        }
        let who = self.who(slot);
        self.log(format!("{who} exits (refused {refused})"));
        self.checker.duplicate.stopped(self.now, refused);
        self.nodes[slot].node = None;
        self.nodes[slot].sessions.clear();
        let x = self.nodes[slot].name;
        for j in 0..self.nodes.len() {
            self.links[slot][j].epoch += 1;
            self.links[j][slot].epoch += 1;
            if self.held[j][x] == Some(slot) {
                self.held[j][x] = None;
            }
            if self.owner[j][x] == Some(slot) {
                self.owner[j][x] = None;
                self.admission[j][x].link_ended();
                let d = Duration::from_millis(self.rng.random_range(1..=50));
                self.at(self.now + d, Ev::ExitDown { at: j, peer: slot });
            }
        }
    }

    fn scenario_step(&mut self, step: Step) {
        let n = self.cfg.nodes;
        let controllers = GroupName::new("controllers");
        if let Step::IsoCrash = step {
            // Every node but one joins "controllers" in the common view (like Walrus's
            // Controllers); that one is crashed, and restarts inside a cut.
            let x = (self.cfg.seed as usize / 4) % n;
            self.scenario = Some((x, x));
            self.report.isolated_starts += 1;
            self.fault(Fault::Crash(x));
            let now = self.instant();
            for i in (0..n).filter(|i| *i != x) {
                self.join_with_probe(i, now, &controllers);
            }
            return;
        }
        let Some((original, slot)) = self.scenario else {
            return;
        };
        match step {
            Step::IsoCrash => {}
            Step::IsoRestart => {
                // The running first member of "controllers", as the others see it.
                let first = (0..n)
                    .filter(|i| *i != original)
                    .filter_map(|i| {
                        self.nodes[i]
                            .node
                            .as_ref()?
                            .group_members(&controllers)
                            .first()
                            .cloned()
                    })
                    .next();
                self.start(original);
                if let Some(first) = first {
                    let restarted = self.who(original);
                    self.log(format!(
                        "isolated start: {first} is first; {restarted} starts inside a cut"
                    ));
                    self.checker
                        .isolated
                        .started(first, restarted, controllers.clone());
                }
                // It joins alone, past nothing: the worst case of a join grace.
                let now = self.instant();
                self.join_with_probe(original, now, &controllers);
            }
            Step::Cut => {
                self.log(format!(
                    "cut {} off from every other node",
                    self.who(original)
                ));
                for j in 0..n {
                    if j != original {
                        for (a, b) in [(original, j), (j, original)] {
                            self.links[a][b].cut = true;
                            self.links[a][b].epoch += 1;
                            let d = Duration::from_millis(self.rng.random_range(1..=200));
                            self.at(self.now + d, Ev::LinkDown { at: a, peer: b });
                        }
                    }
                }
            }
            Step::Heal => self.fault(Fault::HealAll),
            Step::Start => {
                let kind = if self.nodes[slot].impostor {
                    Newcomer::Impostor
                } else {
                    Newcomer::Duplicate
                };
                self.nodes[slot].incarnation = self.nodes[original].incarnation + 1000;
                if kind == Newcomer::Duplicate {
                    self.report.duplicates += 1;
                } else {
                    self.report.impostors += 1;
                }
                self.start(slot);
                let connected = !self.links[original].iter().any(|l| l.cut);
                let who = self.who(slot);
                self.log(format!("{kind:?} {who} starts (connected {connected})"));
                self.checker.duplicate.started(who, kind, connected);
            }
            Step::Stop => self.exit(slot, false),
            Step::CheckRefused => {
                self.checker
                    .duplicate
                    .check_refused(self.now, &mut self.checker.violations);
            }
            Step::CheckOneView => {
                let views: Vec<(NodeRef, crate::types::ViewId, Vec<NodeRef>)> = (0..n)
                    .filter_map(|i| {
                        let node = self.nodes[i].node.as_ref()?;
                        Some((self.who(i), node.view().clone(), node.members().to_vec()))
                    })
                    .collect();
                let mut all: Vec<NodeRef> = (0..n)
                    .filter(|i| self.nodes[*i].node.is_some())
                    .map(|i| self.who(i))
                    .collect();
                all.sort();
                self.checker.duplicate.check_one_view(
                    self.now,
                    &views,
                    &all,
                    &mut self.checker.violations,
                );
            }
        }
    }

    /// A node took a message: like a driver busy with a run of inputs, it often drains
    /// its outputs only at the end of its turn (up to 3 ms later, seeded), so messages
    /// received meanwhile are handled before anything goes out and the core batches
    /// their ordering messages (issue 24). Other inputs drain at once.
    fn end_turn_later(&mut self, i: usize) {
        if self.nodes[i].in_turn {
            return;
        }
        if self.rng.random_range(0..4) == 0 {
            self.drain(i);
            return;
        }
        self.nodes[i].in_turn = true;
        let d = Duration::from_micros(self.rng.random_range(0..=3000));
        self.at(self.now + d, Ev::Drain { at: i });
    }

    /// Takes a node's outputs: sends go on the links, deliveries to the checker.
    fn drain(&mut self, i: usize) {
        let now = self.instant();
        let sn = &mut self.nodes[i];
        if let Some(node) = sn.node.as_mut() {
            for (client, e) in sn.host.pump(node, now) {
                self.checker
                    .clients
                    .violation(format!("client {client}: refused by its member: {e}"));
            }
        }
        loop {
            let Some(out) = self.nodes[i].node.as_mut().and_then(|n| n.poll_output()) else {
                self.tier_notices(i);
                return;
            };
            let who = self.who(i);
            match out {
                Output::Send { to, msg } => {
                    match &msg {
                        PeerMessage::Ack(m) => {
                            self.report.acks += 1;
                            self.report.delivered_field_bytes += varint_len(m.delivered);
                        }
                        PeerMessage::AcceptGroups(_) | PeerMessage::InstallGroups(_) => {
                            self.report.group_chunks += 1;
                        }
                        _ => {}
                    }
                    let Some(y) = self.names.iter().position(|n| *n == to) else {
                        continue;
                    };
                    // The link to a name reaches whichever process holds it.
                    let Some(j) = self.owner[i][y] else {
                        continue;
                    };
                    let link = self.links[i][j];
                    if link.cut || self.now < link.up_at {
                        continue;
                    }
                    let lat = Duration::from_micros(
                        self.rng.random_range(200..=self.latency_max_ms * 1000),
                    );
                    let lane = usize::from(msg.is_control());
                    let arrival = (self.now + lat).max(link.last_arrival[lane]);
                    self.links[i][j].last_arrival[lane] = arrival;
                    self.at(
                        arrival,
                        Ev::Msg {
                            from: i,
                            to: j,
                            epoch: link.epoch,
                            msg,
                        },
                    );
                }
                Output::Deliver { session, event } => {
                    let now = self.now;
                    if self.trace_all {
                        let line = match &event {
                            Event::Message {
                                payload, service, ..
                            } => {
                                format!(
                                    "{who}/{session} gets {service:?} {:?}",
                                    invariants::payload_id(payload)
                                )
                            }
                            Event::Membership {
                                group,
                                members,
                                reason,
                                at,
                                ..
                            } => {
                                let m: Vec<String> =
                                    members.iter().map(|m| m.to_string()).collect();
                                format!(
                                    "{who}/{session} gets {group} {reason:?} @{}:{} {m:?}",
                                    at.view, at.seq
                                )
                            }
                            Event::Disconnected { .. } => format!("{who}/{session} disconnected"),
                        };
                        self.log(line);
                    }
                    self.checker.deliver(now, &who, session, &event);
                    if let Event::Message {
                        client: Some(_), ..
                    } = &event
                    {
                        // Named only for client messages (the others are not its concern).
                        self.checker
                            .clients
                            .deliver(now, format!("{who}/{session}"), &event);
                    }
                    if let (Event::Message { payload, .. }, Some(p)) = (&event, self.probe.as_mut())
                    {
                        if let Some(id) = invariants::payload_id(payload) {
                            if p.probes.contains(&id) {
                                p.received.insert(((who.clone(), session), id));
                            }
                        }
                    }
                    if self.nodes[i].host.hosts(session) {
                        // A client's session: forwarded to its client.
                        let sn = &mut self.nodes[i];
                        if let Some(node) = sn.node.as_mut() {
                            sn.host.on_output(node, Output::Deliver { session, event });
                        }
                    } else if let Event::Disconnected { .. } = event {
                        self.log(format!("{who}/{session} disconnected (queue overflow)"));
                        self.closed.push((who.clone(), session));
                        self.nodes[i].sessions.retain(|s| s.id != session);
                    } else if self.nodes[i]
                        .sessions
                        .iter()
                        .any(|s| s.id == session && !s.stalled)
                    {
                        if let Some(n) = self.nodes[i].node.as_mut() {
                            n.mark_read(session, 1);
                        }
                    }
                }
                Output::ViewInstalled(change) => {
                    let now = self.now;
                    self.report.views += 1;
                    self.checker.view(now, &who, &change);
                    if let (Some(old), Some(node)) = (&change.previous, self.nodes[i].node.as_mut())
                    {
                        let got = node.take_client_deliveries(old);
                        self.checker.clients.moved_on(now, &who, old, &got);
                    }
                    let members: Vec<String> =
                        change.members.iter().map(|m| m.to_string()).collect();
                    self.log(format!("{who} installs {} {:?}", change.view, members));
                }
                Output::Confirmed { session, id, view } => {
                    let now = self.now;
                    self.checker.clients.applied(&who, &id);
                    let sn = &mut self.nodes[i];
                    if let Some(node) = sn.node.as_mut() {
                        if *node.view() == view {
                            self.checker
                                .clients
                                .confirmed_in_view(now, &who, &view, &id);
                        }
                        sn.host
                            .on_output(node, Output::Confirmed { session, id, view });
                    }
                }
            }
        }
    }

    fn who(&self, i: usize) -> NodeRef {
        NodeRef {
            id: self.names[self.nodes[i].name].clone(),
            incarnation: Incarnation(self.nodes[i].incarnation),
        }
    }

    fn start(&mut self, i: usize) {
        self.nodes[i].incarnation += 1;
        // What was on its way to the address before the process listened is lost (a new
        // process has new connections).
        for j in 0..self.nodes.len() {
            self.links[j][i].epoch += 1;
        }
        self.nodes[i].host = ClientHost::default();
        let now = self.instant();
        let mut node = Node::new(
            self.cfg.core.clone(),
            self.names[self.nodes[i].name].clone(),
            Incarnation(self.nodes[i].incarnation),
            self.names.clone(),
            now,
        );
        node.plant_bugs(self.cfg.bugs);
        let probe = node.open_session(now);
        let _ = node.join(now, probe, self.probe_group.clone());
        self.nodes[i].node = Some(node);
        let who = self.who(i);
        self.checker.request(
            self.now,
            (who.clone(), probe),
            self.probe_group.clone(),
            Request::Join,
        );
        self.nodes[i].sessions = vec![SimSession {
            id: probe,
            stalled: false,
            probe: true,
            groups: [self.probe_group.clone()].into(),
            sent: 0,
        }];
        self.log(format!("{who} starts"));
        self.drain(i);
    }

    fn fault(&mut self, f: Fault) {
        let n = self.cfg.nodes;
        match f {
            Fault::Partition => {
                self.checker.calm.fault(self.now);
                self.report.partitions += 1;
                let kind = self.rng.random_range(0..4);
                let notify = self.rng.random_bool(0.5);
                let mut cuts = Vec::new();
                match kind {
                    0 | 1 => {
                        let k = self.rng.random_range(2..=3.min(n));
                        let comp: Vec<usize> =
                            (0..n).map(|_| self.rng.random_range(0..k)).collect();
                        for a in 0..n {
                            for b in 0..n {
                                if a != b && comp[a] != comp[b] {
                                    cuts.push((a, b));
                                }
                            }
                        }
                        self.log(format!(
                            "partition into components {comp:?} (notify {notify})"
                        ));
                    }
                    2 => {
                        for a in 0..n {
                            for b in a + 1..n {
                                if self.rng.random_bool(0.3) {
                                    cuts.push((a, b));
                                    cuts.push((b, a));
                                }
                            }
                        }
                        self.log(format!("non-transitive cuts {cuts:?} (notify {notify})"));
                    }
                    _ => {
                        for a in 0..n {
                            for b in 0..n {
                                if a != b && self.rng.random_bool(0.15) {
                                    cuts.push((a, b));
                                }
                            }
                        }
                        self.log(format!("silent one-way cuts {cuts:?}"));
                    }
                }
                let one_way = kind == 3;
                for (a, b) in cuts {
                    self.links[a][b].cut = true;
                    self.links[a][b].epoch += 1;
                    if notify && !one_way {
                        let d = Duration::from_millis(self.rng.random_range(1..=200));
                        self.at(self.now + d, Ev::LinkDown { at: a, peer: b });
                    }
                }
            }
            Fault::HealAll => {
                self.log("heal all links".into());
                for a in 0..n {
                    for b in 0..n {
                        if self.links[a][b].cut {
                            self.links[a][b].cut = false;
                            let d = Duration::from_millis(self.rng.random_range(1..=50));
                            self.at(self.now + d, Ev::LinkUp { at: a, peer: b });
                        }
                    }
                }
            }
            Fault::Crash(i) => {
                // If that node is already down, crash the next live one instead.
                let Some(i) = (0..n)
                    .map(|k| (i + k) % n)
                    .find(|k| self.nodes[*k].node.is_some())
                else {
                    return;
                };
                self.checker.calm.fault(self.now);
                self.report.crashes += 1;
                let who = self.who(i);
                self.log(format!("{who} crashes"));
                self.nodes[i].node = None;
                self.nodes[i].sessions.clear();
                self.tier_member_crashed(i);
                for j in 0..self.nodes.len() {
                    self.links[i][j].epoch += 1;
                    self.links[j][i].epoch += 1;
                    if j != i && j < n && self.rng.random_bool(0.5) {
                        let d = Duration::from_millis(self.rng.random_range(1..=300));
                        self.at(self.now + d, Ev::LinkDown { at: j, peer: i });
                    }
                }
            }
            Fault::Restart(i) => {
                if self.nodes[i].node.is_some() {
                    return;
                }
                self.start(i);
                // A pair's connection comes up after a handshake, or after a backoff when
                // the first dial found no listener yet; each side learns it at its own
                // time (the dialer's handshake ends an RTT before the acceptor's) and
                // sends nothing on it before.
                for j in 0..n {
                    if j != i {
                        let pair = if self.rng.random_bool(0.2) {
                            self.rng.random_range(50..=500)
                        } else {
                            self.rng.random_range(1..=50)
                        };
                        for (a, b) in [(i, j), (j, i)] {
                            let d = Duration::from_micros(
                                pair * 1000 + self.rng.random_range(0..=self.latency_max_ms * 1000),
                            );
                            self.links[a][b].up_at = self.now + d;
                            self.at(self.now + d, Ev::LinkUp { at: a, peer: b });
                        }
                    }
                }
            }
        }
    }

    /// Node `i`'s probe session joins `group` (and stays in it).
    fn join_with_probe(&mut self, i: usize, now: Instant, group: &GroupName) {
        let Some(k) = self.nodes[i].sessions.iter().position(|s| s.probe) else {
            return;
        };
        let sid = self.nodes[i].sessions[k].id;
        let who = self.who(i);
        let Some(node) = self.nodes[i].node.as_mut() else {
            return;
        };
        if node.join(now, sid, group.clone()).is_ok() {
            self.nodes[i].sessions[k].groups.insert(group.clone());
            self.checker
                .request(self.now, (who, sid), group.clone(), Request::Join);
        }
        self.drain(i);
    }

    /// One random client action on a random live node.
    fn client(&mut self) {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].node.is_some())
            .collect();
        if live.is_empty() {
            return;
        }
        let i = live[self.rng.random_range(0..live.len())];
        let now = self.instant();
        let who = self.who(i);
        let apps: Vec<usize> = (0..self.nodes[i].sessions.len())
            .filter(|k| !self.nodes[i].sessions[*k].probe)
            .collect();
        let roll = self.rng.random_range(0..100);
        if apps.is_empty() || (apps.len() < 3 && roll < 5) {
            let Some(node) = self.nodes[i].node.as_mut() else {
                return;
            };
            let id = node.open_session(now);
            self.nodes[i].sessions.push(SimSession {
                id,
                stalled: false,
                probe: false,
                groups: BTreeSet::new(),
                sent: 0,
            });
            return;
        }
        let k = apps[self.rng.random_range(0..apps.len())];
        let sid = self.nodes[i].sessions[k].id;
        let group = self.groups[self.rng.random_range(0..self.groups.len())].clone();
        match roll {
            0..=14 => {
                let Some(node) = self.nodes[i].node.as_mut() else {
                    return;
                };
                if node.join(now, sid, group.clone()).is_ok() {
                    self.nodes[i].sessions[k].groups.insert(group.clone());
                    self.checker
                        .request(self.now, (who, sid), group, Request::Join);
                }
            }
            15..=19 => {
                let Some(node) = self.nodes[i].node.as_mut() else {
                    return;
                };
                if node.leave(now, sid, group.clone()).is_ok() {
                    self.nodes[i].sessions[k].groups.remove(&group);
                    self.checker
                        .request(self.now, (who, sid), group, Request::Leave);
                }
            }
            20..=21 => {
                let Some(node) = self.nodes[i].node.as_mut() else {
                    return;
                };
                if node.close_session(now, sid).is_ok() {
                    self.closed.push((who, sid));
                    self.nodes[i].sessions.remove(k);
                }
            }
            22 => {
                if self.rng.random_bool(0.3) {
                    self.log(format!("{who}/{sid} stops reading"));
                    self.nodes[i].sessions[k].stalled = true;
                }
            }
            _ => {
                let service = if self.rng.random_bool(0.7) {
                    Service::Agreed
                } else {
                    Service::Reliable
                };
                let mut groups = vec![group];
                if self.rng.random_bool(0.3) {
                    groups.push(self.groups[self.rng.random_range(0..self.groups.len())].clone());
                }
                self.multicast(i, k, service, groups);
            }
        }
        self.drain(i);
    }

    fn multicast(
        &mut self,
        i: usize,
        k: usize,
        service: Service,
        mut groups: Vec<GroupName>,
    ) -> Option<u64> {
        let now = self.instant();
        let who = self.who(i);
        let id = self.next_msg;
        let mut payload = id.to_le_bytes().to_vec();
        let extra = self.rng.random_range(0..64);
        payload.extend((0..extra).map(|x| x as u8));
        let sid = self.nodes[i].sessions[k].id;
        let node = self.nodes[i].node.as_mut()?;
        node.multicast(now, sid, service, &groups, payload).ok()?;
        self.next_msg += 1;
        groups.sort();
        groups.dedup();
        let index = self.nodes[i].sessions[k].sent;
        self.nodes[i].sessions[k].sent += 1;
        self.checker.sent(Sent {
            id,
            node: who,
            session: sid,
            index,
            service,
            groups,
            at: self.now,
        });
        self.drain(i);
        Some(id)
    }

    fn finish(&mut self) {
        for i in 0..self.nodes.len() {
            if let Some(line) = self.nodes[i].node.as_ref().map(|n| n.summary()) {
                self.log(format!("end: {line}"));
                if let Some(n) = self.nodes[i].node.as_ref() {
                    let m: Vec<String> = n
                        .group_members(&self.probe_group)
                        .iter()
                        .map(|m| m.to_string())
                        .collect();
                    let sessions: Vec<String> = n.sessions().map(|s| s.to_string()).collect();
                    self.log(format!("end: probe group {m:?} open sessions {sessions:?}"));
                }
            }
        }
        let alive: Vec<NodeRef> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].node.is_some())
            .map(|i| self.who(i))
            .collect();
        let end = EndState {
            alive,
            closed: self.closed.clone(),
            probe: self.probe.clone(),
        };
        if self.checker.violations.is_empty() {
            // (A run stopped at its first violation skips the end-of-run checks.)
            self.checker.finish(&end);
        }
        self.report.virtual_seconds = self.now.as_secs_f64();
        self.report.formed_at = self.checker.calm.formed_at();
        self.report.messages = self.checker.messages();
        self.report.deliveries = self.checker.deliveries;
        self.checker.take_client_violations();
        self.report.clients = self.tier.clients.len();
        self.report.client_failovers = self.tier.failovers;
        self.report.client_crashes = self.tier.crashes;
        self.report.client_deliveries = self.checker.clients.deliveries;
        self.report.client_confirm_delays =
            std::mem::take(&mut self.checker.clients.confirm_delays);
        self.report.violations = self.checker.violations.clone();
        self.report.trace = self.trace.iter().cloned().collect();
    }
}

#[cfg(test)]
mod tests;
