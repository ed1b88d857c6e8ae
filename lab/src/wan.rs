//! The WAN lab (issue 18): real `walrus-node` processes in three area namespaces joined by
//! emulated wide-area links, and what Walrus does there.
//!
//! Everything else in the lab runs the group communication with no delay. Here every
//! datagram between two areas crosses a user-space relay that holds it for the pair's
//! one-way delay ± jitter and drops a configured share (this kernel has no `tc netem`):
//!
//! ```text
//!  area a1 namespace                                          area a2 namespace
//!  ┌────────────────────────────────────────┐               ┌──────────────────────┐
//!  │ walrus-node a1-c :7400 ──► nft DNAT     │               │ walrus-node a2-d     │
//!  │   (to 10.255.0.12:7401)   (output hook) │               │   10.255.0.12:7401   │
//!  │                             │           │   backbone    │          ▲           │
//!  │                             ▼           │    bridge     │          │           │
//!  │ relay a1 10.255.0.11:17201 ─ delay d(a1,a2) ± jitter, ─┼──────────┘           │
//!  │   (one per peer node)        drop p, both directions   │                      │
//!  └────────────────────────────────────────┘               └──────────────────────┘
//! ```
//!
//! Each area's relay process owns one socket per node of every other area; an nftables
//! `dnat` rule in the area's namespace sends a local node's group traffic (source port in
//! the group range, destination a remote node) to that socket, and conntrack turns the
//! replies back so the node sees its peer's address. The relay forwards from a socket of
//! its own (an ephemeral port: no rule matches it), so the peer sees the relay as the
//! dialer's address — a NAT, which QUIC is built for; nodes identify each other by
//! certificate. Both directions of a flow are delayed by the relay of the area that
//! dialed, so a round trip between a1 and a2 costs 2·d(a1,a2) whoever dialed. Replica
//! transfers use the same QUIC connections, so a deploy crosses the same links.
//!
//! **Jitter without reordering.** Each datagram is due at `now + d + u`, `u` uniform in
//! ±jitter, but never before the previous datagram of its direction: jitter on a real path
//! comes from queues, which keep order. Independent per-packet jitter of ±10 ms at
//! thousands of packets a second reorders almost every burst, and QUIC's packet-threshold
//! loss detection would read that as loss (spurious retransmissions and a collapsing
//! congestion window) — a property of the emulator, not of wide-area links.
//!
//! A run: wire the namespaces, start nginx (two servers per area), the relays and the
//! nodes (a Controller in every area, `gcs_profile = "wan"` unless told otherwise), wait
//! until one master rules and every area answers with its home cluster, then measure for
//! `seconds`: a content deploy from the primary (area 1) to the five replicas, and events
//! every `event_every` seconds — a web cluster killed (SIGKILL, all its nginx; restarted
//! after) and the master killed (SIGKILL; restarted after). A watcher in the region
//! namespace samples every Controller's `/status` and every area's name server; the
//! figures ([`WanResult`]) come from those records ([`analyze`]): rounds per minute against
//! the configured rate, servers and nodes declared dead while alive (outside the windows
//! around events), view changes, failover and master-kill times, the deploy's duration
//! and whether any area left a healthy home cluster during it.
//!
//! Run (as root; `cargo build --release -p walrus-lab -p walrus-node` first):
//!
//! ```text
//! target/release/walrus-lab wan --loss 1 --seconds 600 --out docs/wan      # one setting
//! target/release/walrus-lab wan-report --out docs/wan                      # report, plots
//! cargo test -p walrus-lab --test wan_short                                # CI form
//! ```

use super::netns::{clean_stale, run, ChildGuard, Namespaces};
use super::relay::now_ms;
use super::report::base_spec;
use super::runtime::{self, nodes, LabNode, RuntimeOptions, GCS_PORT};
use super::servers;
use super::spec::{Area, LabSpec, Mode, Region};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// First port of a relay's sockets: node `k` of area `b` is reached through
/// `RELAY_PORT + 100·b + k` on the dialing area's backbone address.
pub const RELAY_PORT: u16 = 17000;
/// The nftables table of the WAN rules in each area namespace.
const NFT_TABLE: &str = "walruswan";
/// Seconds between the parts of a deploy ([`WanSpec::deploy_steps`]).
pub const DEPLOY_STEP_GAP_S: u64 = 10;
/// Largest datagram relayed.
const MAX_DATAGRAM: usize = 65535;
/// After an event, the seconds during which deaths and view changes are the event's own
/// (excluded from the false-death count), counted from the victim's restart.
pub const SETTLE_AFTER_EVENT_S: u64 = 30;

/// One WAN run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WanSpec {
    /// The layout (3 areas, 2 servers per cluster, 1 region for the watcher).
    pub lab: LabSpec,
    /// One-way delay between areas, milliseconds, `one_way_ms[a-1][b-1]` (symmetric).
    pub one_way_ms: Vec<Vec<u32>>,
    /// Jitter: each datagram's delay is moved by up to this many ms either way.
    pub jitter_ms: u32,
    /// Share of datagrams dropped, each direction (0.01 = 1 %).
    pub loss: f64,
    /// Seconds measured after the runtime settled.
    pub seconds: u32,
    /// The `[timing]` table of the run's `walrus.toml`.
    pub timing: String,
    /// `[controller] generation_grace`, if set (e.g. "0s" for the rule before issue 18).
    pub generation_grace: Option<String>,
    /// `[controller] max_generation_lag`, if set.
    pub max_generation_lag: Option<u64>,
    /// Size of the content deploy, MB (0: no deploy).
    pub deploy_mb: u32,
    /// Files of the deploy.
    pub deploy_files: u32,
    /// Seconds after the start of measurement the deploy starts.
    pub deploy_at_s: u32,
    /// The deploy is written in this many parts, [`DEPLOY_STEP_GAP_S`] apart (0 or 1: at
    /// once). Two parts are a deploy and its follow-up (or one write that outlasts the
    /// primary's debounce): the primary publishes two generations while the replicas still
    /// pull the first, so they lag by two — the case the content-lag rule met on a WAN.
    #[serde(default)]
    pub deploy_steps: u32,
    /// Seconds between two events (cluster killed, master killed, alternating); 0: none.
    pub event_every: u32,
    /// Seed of the relays' delay and loss draws and of the deploy's bytes.
    pub seed: u64,
}

/// The `[timing]` table of a WAN run: the `wan` profile with walrus-node's defaults for it
/// (round period and report timeout left out; see docs/wan for why these defaults).
pub const WAN_TIMING: &str = "report_interval = \"500ms\"\ngcs_profile = \"wan\"\n";

impl WanSpec {
    /// Three areas 20, 80 and 150 ms apart (one way), ±10 ms jitter, `loss`, the `wan`
    /// profile, a 200 MB deploy of 2,000 files, an event every 60 s.
    pub fn new(work: &Path, tag: &str, loss: f64, seconds: u32) -> Self {
        let mut lab = base_spec(work, tag, 3, 1, Mode::Runtime);
        lab.resolvers = Vec::new();
        lab.rtt_ms = vec![vec![0, 0, 0]];
        Self {
            lab,
            one_way_ms: vec![vec![0, 20, 80], vec![20, 0, 150], vec![80, 150, 0]],
            jitter_ms: 10,
            loss,
            seconds,
            timing: WAN_TIMING.into(),
            generation_grace: None,
            max_generation_lag: None,
            deploy_mb: 200,
            deploy_files: 2000,
            deploy_at_s: 5,
            deploy_steps: 2,
            event_every: 60,
            seed: 18,
        }
    }

    /// One-way delay between two areas, milliseconds.
    pub fn delay(&self, a: Area, b: Area) -> u32 {
        self.one_way_ms
            .get(usize::from(a.0).wrapping_sub(1))
            .and_then(|r| r.get(usize::from(b.0).wrapping_sub(1)))
            .copied()
            .unwrap_or(0)
    }

    /// What the run's configuration changes from the lab's LAN run.
    pub fn runtime_options(&self) -> RuntimeOptions {
        let mut controller = String::new();
        if let Some(g) = &self.generation_grace {
            controller.push_str(&format!("generation_grace = \"{g}\"\n"));
        }
        if let Some(l) = self.max_generation_lag {
            controller.push_str(&format!("max_generation_lag = {l}\n"));
        }
        RuntimeOptions {
            timing: Some(self.timing.clone()),
            controller,
            replicator: Some(self.lab.dir.join("content")),
        }
    }

    /// A `[timing]` value as a duration.
    fn timing_value(&self, key: &str) -> Option<Duration> {
        let prefix = format!("{key} = ");
        self.timing
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| humantime::parse_duration(v.trim_matches('"')).ok())
    }

    /// Whether the timing asks for the `wan` profile.
    fn wan(&self) -> bool {
        self.timing.contains("gcs_profile = \"wan\"")
    }

    /// The round period of the timing (walrus-node's defaults: 3 s on a WAN, else 1 s).
    pub fn round_period(&self) -> Duration {
        self.timing_value("round_period")
            .unwrap_or(Duration::from_secs(if self.wan() { 3 } else { 1 }))
    }

    /// The report timeout of the timing (defaults: 75 % of the period on a WAN, else 40 %).
    pub fn report_timeout(&self) -> Duration {
        let (n, d) = if self.wan() { (3, 4) } else { (2, 5) };
        self.timing_value("report_timeout")
            .unwrap_or(self.round_period() * n / d)
    }

    /// Rounds per minute the timing asks for (from `round_period`).
    pub fn configured_rounds_per_min(&self) -> f64 {
        60.0 / self.round_period().as_secs_f64().max(0.001)
    }
}

// ----------------------------------------------------------------------------------------
// The relay role (one process per area namespace).

/// The relay port, on the dialing area's backbone address, that leads to `node`.
pub fn relay_port(node: &LabNode) -> u16 {
    RELAY_PORT + 100 * u16::from(node.area.0) + u16::from(node.index)
}

/// The nftables script of `area`'s namespace: every local node's group datagram to a
/// node of another area goes to that node's relay socket here.
pub fn nft_script(spec: &WanSpec, area: Area) -> String {
    let me = area.backbone();
    let ports = format!("{GCS_PORT}-{}", GCS_PORT + 99);
    let mut rules = String::new();
    for n in nodes(&spec.lab).iter().filter(|n| n.area != area) {
        let to = n.gcs();
        rules.push_str(&format!(
            "ip saddr {me} udp sport {ports} ip daddr {} udp dport {} dnat to {me}:{}\n",
            to.ip(),
            to.port(),
            relay_port(n)
        ));
    }
    format!(
        "table ip {NFT_TABLE} {{\nchain out {{ type nat hook output priority -100; policy accept;\n{rules}}}\n}}\n"
    )
}

/// A small deterministic generator (SplitMix64) for the relays' draws: seeded per flow,
/// so a run's delays and drops are reproducible as far as the arrival order is.
#[derive(Debug, Clone)]
pub struct Draws(u64);

impl Draws {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One direction of a link: decides each datagram's fate (dropped, or due when).
#[derive(Debug, Clone)]
pub struct LinkDirection {
    delay: Duration,
    jitter: Duration,
    loss: f64,
    draws: Draws,
    last_due: Option<Instant>,
}

impl LinkDirection {
    /// A direction with this delay, jitter (±) and loss share.
    pub fn new(delay: Duration, jitter: Duration, loss: f64, seed: u64) -> Self {
        Self {
            delay,
            jitter,
            loss,
            draws: Draws::new(seed),
            last_due: None,
        }
    }

    /// When a datagram arriving at `now` leaves: `None` if dropped; never before the one
    /// before it (jitter without reordering, see the module doc).
    pub fn due(&mut self, now: Instant) -> Option<Instant> {
        if self.loss > 0.0 && self.draws.unit() < self.loss {
            return None;
        }
        let j = self.jitter.as_secs_f64() * (2.0 * self.draws.unit() - 1.0);
        let d = (self.delay.as_secs_f64() + j).max(0.0);
        let mut due = now + Duration::from_secs_f64(d);
        if let Some(last) = self.last_due {
            due = due.max(last);
        }
        self.last_due = Some(due);
        Some(due)
    }
}

/// Sends each queued datagram when due, in order.
fn spawn_sender(
    send: impl Fn(Vec<u8>) -> tokio::task::JoinHandle<()> + Send + 'static,
) -> mpsc::UnboundedSender<(Instant, Vec<u8>)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    tokio::spawn(async move {
        while let Some((due, data)) = rx.recv().await {
            tokio::time::sleep_until(due.into()).await;
            let _ = send(data).await;
        }
    });
    tx
}

type Flows = Arc<
    Mutex<
        HashMap<
            SocketAddr,
            (
                mpsc::UnboundedSender<(Instant, Vec<u8>)>,
                Arc<Mutex<LinkDirection>>,
            ),
        >,
    >,
>;

/// The `wan-relay` role: runs every relay socket of `area` until killed.
pub async fn run_relay(spec: WanSpec, area: Area) -> anyhow::Result<()> {
    let me = area.backbone();
    let mut tasks = tokio::task::JoinSet::new();
    for n in nodes(&spec.lab).into_iter().filter(|n| n.area != area) {
        let listen = Arc::new(UdpSocket::bind(SocketAddr::new(me.into(), relay_port(&n))).await?);
        let delay = Duration::from_millis(spec.delay(area, n.area).into());
        let jitter = Duration::from_millis(spec.jitter_ms.into());
        let seed = spec.seed ^ (u64::from(relay_port(&n)) << 32) ^ u64::from(area.0);
        tasks.spawn(relay_socket(
            listen,
            n.gcs(),
            me,
            (delay, jitter, spec.loss),
            seed,
        ));
    }
    println!("wan relay {area} ready");
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// One relay socket: datagrams from local nodes go to `peer` through a per-flow socket
/// (delayed, maybe dropped), replies come back the same way.
async fn relay_socket(
    listen: Arc<UdpSocket>,
    peer: SocketAddr,
    me: Ipv4Addr,
    link: (Duration, Duration, f64),
    seed: u64,
) {
    let flows: Flows = Arc::new(Mutex::new(HashMap::new()));
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut flow_no: u64 = 0;
    loop {
        let Ok((n, client)) = listen.recv_from(&mut buf).await else {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        let existing = flows.lock().ok().and_then(|f| f.get(&client).cloned());
        let (tx, dir) = match existing {
            Some(x) => x,
            None => {
                flow_no += 1;
                let Ok(up) = UdpSocket::bind(SocketAddr::new(me.into(), 0)).await else {
                    continue;
                };
                if up.connect(peer).await.is_err() {
                    continue;
                }
                let up = Arc::new(up);
                let s = seed.wrapping_add(flow_no.wrapping_mul(0x1000_0001));
                let out = Arc::new(Mutex::new(LinkDirection::new(link.0, link.1, link.2, s)));
                let back = LinkDirection::new(link.0, link.1, link.2, s ^ 0xABCD);
                let u = up.clone();
                let tx = spawn_sender(move |d| {
                    let u = u.clone();
                    tokio::spawn(async move {
                        let _ = u.send(&d).await;
                    })
                });
                tokio::spawn(reply_pump(up, listen.clone(), client, back));
                if let Ok(mut f) = flows.lock() {
                    f.insert(client, (tx.clone(), out.clone()));
                }
                (tx, out)
            }
        };
        let due = dir.lock().ok().and_then(|mut d| d.due(Instant::now()));
        if let Some(due) = due {
            let _ = tx.send((due, buf[..n].to_vec()));
        }
    }
}

/// The replies of one flow, back to the local node through the same delay and loss.
async fn reply_pump(
    up: Arc<UdpSocket>,
    listen: Arc<UdpSocket>,
    client: SocketAddr,
    mut back: LinkDirection,
) {
    let l = listen.clone();
    let tx = spawn_sender(move |d| {
        let l = l.clone();
        tokio::spawn(async move {
            let _ = l.send_to(&d, client).await;
        })
    });
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match up.recv(&mut buf).await {
            Ok(n) => {
                if let Some(due) = back.due(Instant::now()) {
                    let _ = tx.send((due, buf[..n].to_vec()));
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

// ----------------------------------------------------------------------------------------
// The watcher role (region 1's namespace reaches every backbone address directly).

/// One observation of the WAN watcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "kebab-case")]
pub enum WanObs {
    /// What a Controller's `/status` said (every 250 ms; `ok = false`: no answer).
    Status(StatusSample),
    /// Area `area`'s name server answered `www` with `addrs` (logged on change).
    Answer {
        /// Unix ms.
        t: u64,
        /// The area.
        area: u8,
        /// A records, sorted.
        addrs: Vec<Ipv4Addr>,
    },
    /// Something the orchestrator did (a kill, a restart, the deploy).
    Event(EventRecord),
}

/// One Controller status sample.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusSample {
    /// Unix ms.
    pub t: u64,
    /// The Controller node.
    pub node: String,
    /// Whether the page answered.
    pub ok: bool,
    /// Whether it says it is master.
    pub is_master: bool,
    /// The last round decided.
    pub round: Option<u64>,
    /// Rounds it closed as master.
    pub rounds: u64,
    /// Views installed since it started.
    pub view_changes: u64,
    /// Members of its view.
    pub members: Vec<String>,
    /// Servers its last round (or the master's last decision) counts dead, with the state.
    pub dead: Vec<(String, String)>,
    /// Areas moved, answers changed (its counters).
    pub area_moves: u64,
    /// Answers changed within a cluster.
    pub answer_changes: u64,
    /// Each area's assigned cluster.
    pub areas: BTreeMap<String, String>,
    /// Each server's reported content generation.
    pub generations: BTreeMap<String, u64>,
    /// The newest generation the Controller knows.
    pub newest_generation: Option<u64>,
    /// Duration of the last round it closed as master (request to decision), seconds: the
    /// last report's arrival, or the report timeout when one was missing.
    #[serde(default)]
    pub last_round_s: f64,
}

/// Something the orchestrator did, with its time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Unix ms.
    pub t: u64,
    /// "measure-start", "measure-end", "cluster-killed", "cluster-restarted",
    /// "master-killed", "node-restarted", "deploy-start", "deploy-written".
    pub kind: String,
    /// The area or node concerned.
    pub subject: String,
}

/// A status document as a sample.
pub fn sample_of(t: u64, node: &str, doc: Option<&serde_json::Value>) -> StatusSample {
    let Some(d) = doc else {
        return StatusSample {
            t,
            node: node.into(),
            ..StatusSample::default()
        };
    };
    let u = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let c = &d["counters"];
    let strs = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let empty = Vec::new();
    let servers = d["servers"].as_array().unwrap_or(&empty);
    StatusSample {
        t,
        node: node.into(),
        ok: true,
        is_master: d["is_master"].as_bool().unwrap_or(false),
        round: d["round"].as_u64(),
        rounds: u(&c["rounds"]),
        view_changes: u(&c["view_changes"]),
        members: strs(&d["view"]["members"]),
        dead: servers
            .iter()
            .filter_map(|s| {
                let st = s["state"].as_str()?;
                st.starts_with("dead")
                    .then(|| (s["name"].as_str().unwrap_or("?").to_owned(), st.to_owned()))
            })
            .collect(),
        area_moves: u(&c["area_moves"]),
        answer_changes: u(&c["answer_changes"]),
        areas: d["areas"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .filter_map(|a| {
                Some((
                    a["name"].as_str()?.to_owned(),
                    a["cluster"].as_str()?.to_owned(),
                ))
            })
            .collect(),
        generations: servers
            .iter()
            .filter_map(|s| Some((s["name"].as_str()?.to_owned(), s["generation"].as_u64()?)))
            .collect(),
        newest_generation: d["newest_generation"].as_u64(),
        last_round_s: c["last_round_seconds"].as_f64().unwrap_or(0.0),
    }
}

/// The `wan-watch` role: samples every Controller's `/status` every 250 ms and every
/// area's name server every 100 ms, appending to `<dir>/wan.jsonl` until killed.
pub async fn watch(spec: WanSpec) -> anyhow::Result<()> {
    let path = spec.lab.dir.join("wan.jsonl");
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let controllers: Vec<LabNode> = nodes(&spec.lab)
        .into_iter()
        .filter(LabNode::is_controller)
        .collect();
    let mut last_answer: BTreeMap<u8, Vec<Ipv4Addr>> = BTreeMap::new();
    let mut tick: u64 = 0;
    loop {
        for (area, addrs) in runtime::poll_answers(&spec.lab, &mut last_answer).await {
            let w = WanObs::Answer {
                t: now_ms(),
                area,
                addrs,
            };
            writeln!(out, "{}", serde_json::to_string(&w)?)?;
        }
        if tick.is_multiple_of(2) {
            let docs = futures_join(controllers.iter().filter_map(LabNode::status)).await;
            for (c, doc) in controllers.iter().zip(docs) {
                let s = sample_of(now_ms(), &c.name, doc.as_ref());
                writeln!(out, "{}", serde_json::to_string(&WanObs::Status(s))?)?;
            }
        }
        out.flush()?;
        tick += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every status page at once (a silent one costs its timeout, not the others').
async fn futures_join(addrs: impl Iterator<Item = SocketAddr>) -> Vec<Option<serde_json::Value>> {
    let handles: Vec<_> = addrs
        .map(|a| tokio::spawn(runtime::status_doc(a)))
        .collect();
    let mut v = Vec::new();
    for h in handles {
        v.push(h.await.ok().flatten());
    }
    v
}

// ----------------------------------------------------------------------------------------
// The orchestrator.

/// Appends an event to the run's records.
fn record(spec: &WanSpec, kind: &str, subject: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(spec.lab.dir.join("wan.jsonl"))?;
    let e = WanObs::Event(EventRecord {
        t: now_ms(),
        kind: kind.into(),
        subject: subject.into(),
    });
    writeln!(f, "{}", serde_json::to_string(&e)?)?;
    Ok(())
}

/// Writes `mb` MB in `files` files under `root/deploy-<tag>/` (sizes log-uniform from
/// 1 KiB, a few large ones), from `seed`. Written file by file, as a deploy tool would.
pub fn write_content(
    root: &Path,
    tag: &str,
    mb: u32,
    files: u32,
    seed: u64,
) -> anyhow::Result<u64> {
    let dir = root.join(format!("deploy-{tag}"));
    let mut draws = Draws::new(seed);
    let total = u64::from(mb) * 1_000_000;
    let files = u64::from(files.max(1));
    let mut written = 0u64;
    for i in 0..files {
        let left = total.saturating_sub(written);
        let share = left / (files - i);
        // Between a quarter and twice the mean share, so sizes differ but sum to `total`.
        let size = if i + 1 == files {
            left
        } else {
            ((share as f64) * (0.25 + 1.75 * draws.unit())) as u64
        }
        .min(left);
        let sub = dir.join(format!("d{:03}", i % 100));
        std::fs::create_dir_all(&sub)?;
        let mut bytes = vec![0u8; size as usize];
        for chunk in bytes.chunks_mut(8) {
            let r = draws.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        std::fs::write(sub.join(format!("f{i:05}.bin")), &bytes)?;
        written += size;
    }
    Ok(written)
}

/// Runs one WAN setting; returns its figures (also written to `<dir>/result.json`).
pub async fn run_wan(spec: &WanSpec, exe: &Path, name: &str) -> anyhow::Result<WanResult> {
    let lab = &spec.lab;
    lab.validate().or_else(|e| {
        // The WAN run has no resolvers; everything else must hold.
        if e.starts_with("no resolver") {
            Ok(())
        } else {
            Err(anyhow::Error::msg(e))
        }
    })?;
    super::netns::require("nft", "nftables")?;
    super::netns::require("nginx", "nginx")?;
    clean_stale(false);
    let _ = std::fs::remove_dir_all(&lab.dir);
    std::fs::create_dir_all(&lab.dir)?;
    let spec_file = lab.dir.join("wan-spec.json");
    std::fs::write(&spec_file, serde_json::to_vec_pretty(spec)?)?;
    let exe_s = exe.display().to_string();
    let spec_s = spec_file.display().to_string();
    let bin = runtime::node_binary(exe)?;

    let _ns = Namespaces::create(lab)?;
    let mut guards: Vec<ChildGuard> = Vec::new();
    for a in lab.all_areas() {
        for k in 1..=lab.servers_per_cluster {
            guards.push(servers::start_web(lab, a, k)?);
        }
        let nft = lab.dir.join(format!("wan-{a}.nft"));
        std::fs::write(&nft, nft_script(spec, a))?;
        let ns = lab.ns_area(a);
        run(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                "nft",
                "-f",
                &nft.display().to_string(),
            ],
        )?;
        guards.push(super::netns::spawn_in(
            &ns,
            &format!("wan relay {a}"),
            &exe_s,
            &["wan-relay", "--spec", &spec_s, "--area", &a.0.to_string()],
            &lab.dir.join(format!("wan-relay-{a}.log")),
        )?);
    }
    // Initial content, so every replica has generation 1 before the measured deploy.
    let opts = spec.runtime_options();
    let content = lab.dir.join("content");
    let primary_root = content.join("primary");
    std::fs::create_dir_all(&primary_root)?;
    std::fs::write(primary_root.join("index.html"), "walrus wan lab\n")?;
    let config = runtime::prepare_with(lab, &bin, &opts)?;
    for n in nodes(lab) {
        guards.push(runtime::start_node(lab, &bin, &config, &n)?);
    }
    guards.push(super::netns::spawn_in(
        &lab.ns_region(Region(1)),
        "wan watcher",
        &exe_s,
        &["wan-watch", "--spec", &spec_s],
        &lab.dir.join("wan-watch.log"),
    )?);
    let settled = wait_settled(spec, 240, &mut guards).await?;
    tracing::info!(name, secs = settled, "runtime settled across the WAN");
    record(spec, "measure-start", "")?;
    let start = Instant::now();
    let end = start + Duration::from_secs(spec.seconds.into());
    let mut deploy_at =
        (spec.deploy_mb > 0).then(|| start + Duration::from_secs(spec.deploy_at_s.into()));
    let steps = spec.deploy_steps.max(1);
    let mut step: u32 = 0;
    let mut next_event =
        (spec.event_every > 0).then(|| start + Duration::from_secs(spec.event_every.into()));
    let mut event_no: u32 = 0;
    while Instant::now() < end {
        if deploy_at.is_some_and(|t| Instant::now() >= t) {
            step += 1;
            deploy_at =
                (step < steps).then(|| Instant::now() + Duration::from_secs(DEPLOY_STEP_GAP_S));
            if step == 1 {
                record(spec, "deploy-start", "")?;
            }
            let root = primary_root.clone();
            let (mb, files) = (spec.deploy_mb / steps, spec.deploy_files / steps);
            let (tag, seed) = (step.to_string(), spec.seed + u64::from(step));
            let bytes =
                tokio::task::spawn_blocking(move || write_content(&root, &tag, mb, files, seed))
                    .await??;
            record(spec, "deploy-written", &bytes.to_string())?;
        }
        if next_event.is_some_and(|t| Instant::now() >= t) {
            event_no += 1;
            let left = end.saturating_duration_since(Instant::now());
            // An event needs time to be seen and undone: none in the last 45 s.
            if left > Duration::from_secs(45) {
                play_event(spec, event_no, &bin, &config, &mut guards).await?;
            }
            next_event = Some(Instant::now() + Duration::from_secs(spec.event_every.into()));
        }
        for g in guards.iter_mut() {
            if let Some(st) = g.exited() {
                anyhow::bail!("{} exited ({st}); see {}", g.what(), lab.dir.display());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    record(spec, "measure-end", "")?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    guards.retain(|g| g.what() != "wan watcher");
    drop(guards);
    drop(_ns);
    let obs: Vec<WanObs> = super::analysis::read_jsonl(&lab.dir.join("wan.jsonl"));
    let result = analyze(spec, name, &obs);
    std::fs::write(
        lab.dir.join("result.json"),
        serde_json::to_vec_pretty(&result)?,
    )?;
    Ok(result)
}

/// Waits until one master rules for 5 s, every area answers with its home cluster and
/// every replica serves the primary's generation; returns the seconds it took.
async fn wait_settled(spec: &WanSpec, secs: u64, guards: &mut [ChildGuard]) -> anyhow::Result<u64> {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(secs);
    let lab = &spec.lab;
    let replicas = lab.all_areas().count() * usize::from(lab.servers_per_cluster);
    loop {
        let obs: Vec<WanObs> = super::analysis::read_jsonl(&lab.dir.join("wan.jsonl"));
        let mut answers: BTreeMap<u8, Vec<Ipv4Addr>> = BTreeMap::new();
        let mut last: BTreeMap<&str, &StatusSample> = BTreeMap::new();
        let mut master_since: Option<(String, u64)> = None;
        for o in &obs {
            match o {
                WanObs::Answer { area, addrs, .. } => {
                    answers.insert(*area, addrs.clone());
                }
                WanObs::Status(s) => {
                    last.insert(&s.node, s);
                    let masters: Vec<&str> = last
                        .values()
                        .filter(|x| x.is_master)
                        .map(|x| x.node.as_str())
                        .collect();
                    let now = (masters.len() == 1).then(|| masters[0].to_owned());
                    match (&master_since, now) {
                        (Some((m, _)), Some(n)) if *m == n => {}
                        (_, Some(n)) => master_since = Some((n, s.t)),
                        (_, None) => master_since = None,
                    }
                }
                WanObs::Event(_) => {}
            }
        }
        let home = lab.all_areas().all(|a| {
            let mut want = lab.cluster(a);
            want.sort();
            answers.get(&a.0) == Some(&want)
        });
        let master = master_since
            .as_ref()
            .is_some_and(|(_, t)| now_ms() >= t + 5000);
        let content = last.values().find(|s| s.is_master).is_some_and(|s| {
            s.newest_generation.is_some()
                && s.generations.len() == replicas
                && s.generations
                    .values()
                    .all(|g| Some(*g) == s.newest_generation)
        });
        if master && home && content {
            return Ok(t0.elapsed().as_secs());
        }
        for g in guards.iter_mut() {
            if let Some(st) = g.exited() {
                anyhow::bail!(
                    "{} exited early ({st}); see {}/rt/",
                    g.what(),
                    lab.dir.display()
                );
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not settled within {secs} s (single master for 5 s: {master}, home answers: \
             {home}, content everywhere: {content}); see {}/wan.jsonl",
            lab.dir.display()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Plays event number `n` (odd: a cluster dies, rotating over the areas; even: the
/// master dies), waits for the system to react (at most 60 s) and restarts the victim.
async fn play_event(
    spec: &WanSpec,
    n: u32,
    bin: &Path,
    config: &Path,
    guards: &mut Vec<ChildGuard>,
) -> anyhow::Result<()> {
    let lab = &spec.lab;
    if n % 2 == 1 {
        let area = Area((((n / 2) % u32::from(lab.areas)) + 1) as u8);
        let prefix = format!("nginx {area}/");
        guards.retain(|g| !g.what().starts_with(&prefix)); // SIGKILL on drop
        record(spec, "cluster-killed", &area.to_string())?;
        let dead = lab.cluster(area);
        let since = now_ms();
        wait_obs(spec, 60, |o| {
            matches!(o, WanObs::Answer { t, area: a, addrs } if *t >= since && *a == area.0
                && !addrs.iter().any(|x| dead.contains(x)))
        })
        .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        for k in 1..=lab.servers_per_cluster {
            guards.push(servers::start_web(lab, area, k)?);
        }
        record(spec, "cluster-restarted", &area.to_string())?;
    } else {
        let obs: Vec<WanObs> = super::analysis::read_jsonl(&lab.dir.join("wan.jsonl"));
        let mut last: BTreeMap<String, bool> = BTreeMap::new();
        for o in &obs {
            if let WanObs::Status(s) = o {
                last.insert(s.node.clone(), s.is_master);
            }
        }
        let masters: Vec<String> = last
            .into_iter()
            .filter(|(_, m)| *m)
            .map(|(n, _)| n)
            .collect();
        let [victim] = masters.as_slice() else {
            tracing::warn!(?masters, "no single master to kill: event skipped");
            return Ok(());
        };
        let what = runtime::what_of(victim);
        guards.retain(|g| g.what() != what);
        record(spec, "master-killed", victim)?;
        let since = now_ms();
        let v = victim.clone();
        wait_obs(
            spec,
            60,
            |o| matches!(o, WanObs::Status(s) if s.t >= since && s.is_master && s.node != v),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        if let Some(node) = nodes(lab).into_iter().find(|x| &x.name == victim) {
            guards.push(runtime::start_node(lab, bin, config, &node)?);
            record(spec, "node-restarted", victim)?;
        }
    }
    Ok(())
}

/// Waits until an observation after now matches (or `secs` pass).
async fn wait_obs(spec: &WanSpec, secs: u64, f: impl Fn(&WanObs) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        let obs: Vec<WanObs> = super::analysis::read_jsonl(&spec.lab.dir.join("wan.jsonl"));
        if obs.iter().any(&f) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// ----------------------------------------------------------------------------------------
// The figures.

/// One WAN run's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WanResult {
    /// The run's name.
    pub name: String,
    /// Loss share.
    pub loss: f64,
    /// One-way delays, ms (a1-a2, a1-a3, a2-a3).
    pub one_way_ms: Vec<u32>,
    /// Jitter, ms.
    pub jitter_ms: u32,
    /// The `[timing]` table.
    pub timing: String,
    /// Seconds measured.
    pub seconds: f64,
    /// Rounds per minute the timing asks for.
    pub rounds_per_min_configured: f64,
    /// Rounds decided per minute (the master's round number over the measured time).
    pub rounds_per_min: f64,
    /// Longest time without a new round, seconds (outside event windows).
    pub longest_round_gap_s: f64,
    /// Round durations (request to decision, seconds) outside event windows: median,
    /// 90th and 99th percentile, maximum; and the share of rounds that ran to the report
    /// timeout (a report missing).
    #[serde(default)]
    pub round_s: [f64; 4],
    /// Share of those rounds closed by the report timeout.
    #[serde(default)]
    pub rounds_at_timeout: f64,
    /// For the timeline plot: (seconds since the start, round duration s) per round.
    #[serde(default)]
    pub timeline: Vec<(f64, f64)>,
    /// For the timeline plot: (seconds since the start, what) per orchestrator event.
    #[serde(default)]
    pub events_s: Vec<(f64, String)>,
    /// For the timeline plot: seconds since the start of each false death.
    #[serde(default)]
    pub false_death_s: Vec<f64>,
    /// Servers counted dead while their nginx ran, outside event windows: distinct
    /// (server, round) pairs in the master's status.
    pub false_server_deaths: u64,
    /// Inside event windows: servers other than the killed cluster's counted dead
    /// (distinct server, round) — e.g. the first rounds of a new master, or the merge of a
    /// restarted Controller. Reported, not asserted: they follow a kill.
    #[serde(default)]
    pub collateral_deaths: u64,
    /// Status pages that did not answer the watcher within 500 ms outside event windows:
    /// a live Controller too slow to serve a page — on this shared machine, the sign of a
    /// CPU stall (compare `load.txt`), which also delays reports and heartbeats.
    #[serde(default)]
    pub status_timeouts: u64,
    /// Examples of those (server, state, round).
    pub false_death_examples: Vec<String>,
    /// Live nodes missing from a Controller's view outside event windows: distinct
    /// (observer, view) pairs.
    pub false_node_deaths: u64,
    /// View changes summed over the Controllers outside event windows.
    pub view_changes_steady: u64,
    /// View changes summed over the Controllers, whole measured time.
    pub view_changes_total: u64,
    /// Failovers: (area, ms from the kill to the area's new answer).
    pub failover_ms: Vec<(u8, Option<u64>)>,
    /// Master kills: (victim, ms from the kill to another Controller saying master).
    pub master_kill_ms: Vec<(String, Option<u64>)>,
    /// The deploy: bytes written.
    pub deploy_bytes: u64,
    /// Seconds from the deploy's start to the primary's last generation being served by
    /// every replica (None: not within the run).
    pub deploy_s: Option<f64>,
    /// Generations the primary published during the deploy.
    pub deploy_generations: u64,
    /// Area moves away from a healthy home cluster during the deploy (content lag).
    pub lag_moves: u64,
    /// Servers counted dead (BYPASS) during the deploy while healthy.
    pub lag_bypass: u64,
}

/// Time windows (Unix ms) in which deaths are the event's own: from a kill to
/// [`SETTLE_AFTER_EVENT_S`] after the victim's restart and, for a restarted node, after
/// the first sample in which every Controller's view holds all `nodes` again (a restarted
/// Controller rejoins, and the first member of the merged view takes over as master).
fn event_windows(obs: &[WanObs], nodes: usize, controllers: usize) -> Vec<(u64, u64, String)> {
    let mut w = Vec::new();
    let mut open: Option<(u64, String)> = None;
    for (i, o) in obs.iter().enumerate() {
        if let WanObs::Event(e) = o {
            match e.kind.as_str() {
                "cluster-killed" | "master-killed" => open = Some((e.t, e.subject.clone())),
                "cluster-restarted" | "node-restarted" => {
                    let Some((s, victim)) = open.take() else {
                        continue;
                    };
                    let mut end = e.t;
                    if e.kind == "node-restarted" {
                        let mut views: BTreeMap<&str, usize> = BTreeMap::new();
                        end = u64::MAX;
                        for x in &obs[i..] {
                            if let WanObs::Status(st) = x {
                                views.insert(&st.node, if st.ok { st.members.len() } else { 0 });
                                if views.len() >= controllers && views.values().all(|m| *m == nodes)
                                {
                                    end = st.t;
                                    break;
                                }
                            }
                        }
                    }
                    w.push((s, end.saturating_add(SETTLE_AFTER_EVENT_S * 1000), victim));
                }
                _ => {}
            }
        }
    }
    if let Some((s, victim)) = open {
        w.push((s, u64::MAX, victim));
    }
    w
}

/// Seconds from `start` to `t` (Unix ms).
fn secs_since(start: u64, t: u64) -> f64 {
    t.saturating_sub(start) as f64 / 1000.0
}

fn event_time(obs: &[WanObs], kind: &str) -> Option<u64> {
    obs.iter().find_map(|o| match o {
        WanObs::Event(e) if e.kind == kind => Some(e.t),
        _ => None,
    })
}

/// The figures of a run from its records (pure: unit-tested with planted records).
pub fn analyze(spec: &WanSpec, name: &str, obs: &[WanObs]) -> WanResult {
    let start = event_time(obs, "measure-start").unwrap_or(0);
    let end = event_time(obs, "measure-end").unwrap_or(u64::MAX);
    let windows = event_windows(obs, nodes(&spec.lab).len(), spec.lab.areas.into());
    let in_event = |t: u64| windows.iter().any(|(a, b, _)| t >= *a && t <= *b);
    // Inside an event's window, servers other than the killed cluster's counted dead.
    let collateral = |t: u64, server: &str| {
        windows.iter().any(|(a, b, victim)| {
            t >= *a
                && t <= *b
                && !(victim.starts_with('a') && server.starts_with(&format!("{victim}-")))
        })
    };
    let samples: Vec<&StatusSample> = obs
        .iter()
        .filter_map(|o| match o {
            WanObs::Status(s) if s.t >= start && s.t <= end => Some(s),
            _ => None,
        })
        .collect();
    let all_nodes: Vec<String> = nodes(&spec.lab).into_iter().map(|n| n.name).collect();
    let mut r = WanResult {
        name: name.into(),
        loss: spec.loss,
        one_way_ms: vec![
            spec.delay(Area(1), Area(2)),
            spec.delay(Area(1), Area(3)),
            spec.delay(Area(2), Area(3)),
        ],
        jitter_ms: spec.jitter_ms,
        timing: spec.timing.clone(),
        rounds_per_min_configured: spec.configured_rounds_per_min(),
        ..WanResult::default()
    };
    // Rounds: the highest round any Controller reports, first and last.
    let rounds: Vec<(u64, u64)> = samples
        .iter()
        .filter_map(|s| s.round.map(|r| (s.t, r)))
        .collect();
    if let (Some(first), Some(last)) = (rounds.first(), rounds.last()) {
        let mins = (last.0.saturating_sub(first.0)) as f64 / 60_000.0;
        let max_last = rounds.iter().map(|x| x.1).max().unwrap_or(0);
        if mins > 0.0 {
            r.seconds = mins * 60.0;
            r.rounds_per_min = max_last.saturating_sub(first.1) as f64 / mins;
        }
        // Longest gap between two increases of the highest round seen, outside events.
        let mut best = 0u64;
        let mut cur = first.1;
        let mut since = first.0;
        for &(t, rd) in &rounds {
            if rd > cur {
                if !in_event(since) && !in_event(t) {
                    best = best.max(t - since);
                }
                cur = rd;
                since = t;
            }
        }
        // A stall that lasts to the end counts too.
        if let Some(&(t, _)) = rounds.last() {
            if !in_event(since) && !in_event(t) {
                best = best.max(t - since);
            }
        }
        r.longest_round_gap_s = best as f64 / 1000.0;
    }
    // False deaths: servers the master counts dead outside event windows and the deploy's
    // lag rule (counted apart), nodes missing from a view.
    let deploy_start = event_time(obs, "deploy-start");
    let mut dead_seen: BTreeSet<(String, Option<u64>)> = BTreeSet::new();
    let mut collateral_seen: BTreeSet<(String, Option<u64>)> = BTreeSet::new();
    let mut views_seen: BTreeSet<(String, Vec<String>)> = BTreeSet::new();
    let mut vc_first: BTreeMap<&str, u64> = BTreeMap::new();
    let mut vc_last: BTreeMap<&str, u64> = BTreeMap::new();
    let mut vc_steady = 0u64;
    let mut vc_prev: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    r.status_timeouts = samples.iter().filter(|s| !s.ok && !in_event(s.t)).count() as u64;
    for s in samples.iter().filter(|s| s.ok) {
        vc_first.entry(&s.node).or_insert(s.view_changes);
        vc_last.insert(&s.node, s.view_changes);
        if let Some((pt, pv)) = vc_prev.insert(&s.node, (s.t, s.view_changes)) {
            if s.view_changes > pv && !in_event(pt) && !in_event(s.t) {
                vc_steady += s.view_changes - pv;
            }
        }
        if in_event(s.t) {
            if s.is_master {
                for (server, _) in s.dead.iter().filter(|(x, _)| collateral(s.t, x)) {
                    collateral_seen.insert((server.clone(), s.round));
                }
            }
            continue;
        }
        if s.is_master {
            for (server, state) in &s.dead {
                let lag = state.contains("BYPASS") && deploy_start.is_some_and(|d| s.t >= d);
                if lag {
                    continue;
                }
                if dead_seen.insert((server.clone(), s.round)) {
                    r.false_death_s.push(secs_since(start, s.t));
                    if r.false_death_examples.len() < 10 {
                        r.false_death_examples
                            .push(format!("{server} {state} round {:?}", s.round));
                    }
                }
            }
        }
        if !s.members.is_empty() {
            let missing: Vec<String> = all_nodes
                .iter()
                .filter(|n| !s.members.contains(n))
                .cloned()
                .collect();
            if !missing.is_empty() && views_seen.insert((s.node.clone(), missing.clone())) {
                r.false_node_deaths += 1;
                r.false_death_s.push(secs_since(start, s.t));
                if r.false_death_examples.len() < 10 {
                    r.false_death_examples.push(format!(
                        "{} view lacks {}",
                        s.node,
                        missing.join(",")
                    ));
                }
            }
        }
    }
    r.false_server_deaths = dead_seen.len() as u64;
    r.collateral_deaths = collateral_seen.len() as u64;
    // Round durations, one per round the master closed (outside events).
    let timeout = spec.report_timeout().as_secs_f64();
    let mut per_round: BTreeMap<u64, (u64, f64)> = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.ok && s.is_master && !in_event(s.t))
    {
        if let (Some(rd), true) = (s.round, s.last_round_s > 0.0) {
            per_round.entry(rd).or_insert((s.t, s.last_round_s));
        }
    }
    r.timeline = per_round
        .values()
        .map(|(t, d)| (secs_since(start, *t), *d))
        .collect();
    r.events_s = obs
        .iter()
        .filter_map(|o| match o {
            WanObs::Event(e) if e.t >= start && e.t <= end => {
                Some((secs_since(start, e.t), format!("{} {}", e.kind, e.subject)))
            }
            _ => None,
        })
        .collect();
    let mut d: Vec<f64> = per_round.into_values().map(|(_, d)| d).collect();
    d.sort_by(f64::total_cmp);
    if !d.is_empty() {
        let q = |p: f64| d[((d.len() - 1) as f64 * p).round() as usize];
        r.round_s = [q(0.5), q(0.9), q(0.99), d[d.len() - 1]];
        r.rounds_at_timeout =
            d.iter().filter(|x| **x >= timeout - 0.005).count() as f64 / d.len() as f64;
    }
    r.view_changes_steady = vc_steady;
    r.view_changes_total = vc_last
        .iter()
        .map(|(n, v)| v.saturating_sub(*vc_first.get(n).unwrap_or(v)))
        .sum();
    // Failover and master-kill times.
    for (i, o) in obs.iter().enumerate() {
        let WanObs::Event(e) = o else { continue };
        match e.kind.as_str() {
            "cluster-killed" => {
                let area: u8 = e.subject.trim_start_matches('a').parse().unwrap_or(0);
                let dead = spec.lab.cluster(Area(area));
                let t = obs[i..].iter().find_map(|x| match x {
                    WanObs::Answer { t, area: a, addrs }
                        if *a == area && *t >= e.t && !addrs.iter().any(|x| dead.contains(x)) =>
                    {
                        Some(*t - e.t)
                    }
                    _ => None,
                });
                r.failover_ms.push((area, t));
            }
            "master-killed" => {
                let t = obs[i..].iter().find_map(|x| match x {
                    WanObs::Status(s) if s.t >= e.t && s.is_master && s.node != e.subject => {
                        Some(s.t - e.t)
                    }
                    _ => None,
                });
                r.master_kill_ms.push((e.subject.clone(), t));
            }
            "deploy-written" => r.deploy_bytes += e.subject.parse().unwrap_or(0),
            _ => {}
        }
    }
    // The deploy: from its start, the newest generation and when every replica serves it.
    if let Some(d) = deploy_start {
        let replicas = spec.lab.all_areas().count() * usize::from(spec.lab.servers_per_cluster);
        let master_samples: Vec<&&StatusSample> =
            samples.iter().filter(|s| s.is_master && s.t >= d).collect();
        let before = samples
            .iter()
            .filter(|s| s.is_master && s.t < d)
            .filter_map(|s| s.newest_generation)
            .max()
            .unwrap_or(0);
        let written = obs
            .iter()
            .filter_map(|o| match o {
                WanObs::Event(e) if e.kind == "deploy-written" => Some(e.t),
                _ => None,
            })
            .max()
            .unwrap_or(d);
        let final_gen = master_samples
            .iter()
            .filter_map(|s| s.newest_generation)
            .max()
            .unwrap_or(before);
        r.deploy_generations = final_gen.saturating_sub(before);
        let done = master_samples.iter().find(|s| {
            s.t >= written
                && s.newest_generation == Some(final_gen)
                && final_gen > before
                && s.generations.len() == replicas
                && s.generations.values().all(|g| *g == final_gen)
        });
        r.deploy_s = done.map(|s| (s.t - d) as f64 / 1000.0);
        let until = done.map_or(end, |s| s.t);
        let mut bypass: BTreeSet<(String, Option<u64>)> = BTreeSet::new();
        let mut moved: BTreeSet<(String, Option<u64>)> = BTreeSet::new();
        for s in master_samples
            .iter()
            .filter(|s| s.t <= until && !in_event(s.t))
        {
            for (server, state) in &s.dead {
                if state.contains("BYPASS") {
                    bypass.insert((server.clone(), s.round));
                }
            }
            // A lag move: the area is away while its home servers are all out as BYPASS
            // (the stale-content rule), not dead for another reason.
            for (area, cluster) in &s.areas {
                let n = area.trim_start_matches('a');
                let home = format!("c{n}");
                let home_servers: Vec<String> = (1..=spec.lab.servers_per_cluster)
                    .map(|k| format!("a{n}-s{k}"))
                    .collect();
                let stale = home_servers.iter().all(|h| {
                    s.dead
                        .iter()
                        .any(|(server, state)| server == h && state.contains("BYPASS"))
                });
                if *cluster != home && stale {
                    moved.insert((area.clone(), s.round));
                }
            }
        }
        r.lag_bypass = bypass.len() as u64;
        r.lag_moves = moved.iter().map(|(a, _)| a).collect::<BTreeSet<_>>().len() as u64;
    }
    r
}

/// The checks of the CI form: what cannot be noise at 1 % loss.
pub fn check_short(r: &WanResult) -> Result<(), String> {
    if r.false_server_deaths > 0 || r.false_node_deaths > 0 {
        return Err(format!(
            "live servers or nodes declared dead: {} servers, {} views ({:?})",
            r.false_server_deaths, r.false_node_deaths, r.false_death_examples
        ));
    }
    if r.rounds_per_min < 0.5 * r.rounds_per_min_configured {
        return Err(format!(
            "rounds stalled: {:.1} per minute, {:.1} configured",
            r.rounds_per_min, r.rounds_per_min_configured
        ));
    }
    if r.lag_moves > 0 {
        return Err(format!(
            "{} areas moved off a healthy home cluster during the deploy ({} BYPASS)",
            r.lag_moves, r.lag_bypass
        ));
    }
    Ok(())
}

/// `base` (a `[timing]` body) with `key=value,...` replaced or added.
pub fn timing_with(base: &str, changes: &str) -> Result<String, String> {
    let mut lines: Vec<(String, String)> = base
        .lines()
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    for kv in changes.split(',').filter(|x| !x.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("`{kv}`: expected key=value"))?;
        let v = format!("\"{}\"", v.trim());
        match lines.iter_mut().find(|(key, _)| key == k.trim()) {
            Some(x) => x.1 = v,
            None => lines.push((k.trim().to_owned(), v)),
        }
    }
    Ok(lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect())
}

/// The figures of every run under `work` (a directory per run with `wan-spec.json` and
/// `wan.jsonl`), recomputed from the raw records.
pub fn reanalyze(work: &Path) -> anyhow::Result<Vec<WanResult>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(work)? {
        let dir = e?.path();
        let Ok(text) = std::fs::read_to_string(dir.join("wan-spec.json")) else {
            continue;
        };
        let spec: WanSpec = serde_json::from_str(&text)?;
        let obs: Vec<WanObs> = super::analysis::read_jsonl(&dir.join("wan.jsonl"));
        if obs.is_empty() {
            continue;
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        v.push(analyze(&spec, &name, &obs));
    }
    Ok(v)
}

/// Adds (or replaces, by name) a result in `out/results.json`, then rewrites the report.
pub fn add_result(out: &Path, r: WanResult) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    let path = out.join("results.json");
    let mut all: Vec<WanResult> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    match all.iter_mut().find(|x| x.name == r.name) {
        Some(x) => *x = r,
        None => all.push(r),
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&all)?)?;
    write_report(out)
}

fn ms_list<T: std::fmt::Display>(v: &[(T, Option<u64>)]) -> String {
    if v.is_empty() {
        return "–".into();
    }
    v.iter()
        .map(|(k, t)| match t {
            Some(t) => format!("{k}: {t}"),
            None => format!("{k}: none"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes `out/results.md` (the table of every run in `out/results.json`) and the plots
/// (`wan_plot.py`, matplotlib; a note instead when python3 or matplotlib is missing).
pub fn write_report(out: &Path) -> anyhow::Result<PathBuf> {
    let all: Vec<WanResult> =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json"))?)?;
    let mut t = String::from(
        "<!-- written by `walrus-lab wan --out` / `walrus-lab wan-report`; do not edit -->\n\
         | run | loss | one-way ms | measured s | rounds/min (configured) | longest round gap s | \
         round s p50 / p90 / p99 / max | rounds at report timeout | false server deaths | false node deaths | deaths beside an event | status pages timed out | view changes (steady / all) | failover ms (area) | \
         master kill ms (victim) | deploy MB | deploy s | generations | lag moves | lag BYPASS |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &all {
        t.push_str(&format!(
            "| {} | {}% | {:?} ±{} | {:.0} | {:.1} ({:.0}) | {:.1} | {:.2} / {:.2} / {:.2} / {:.2} | {:.1}% | {} | {} | {} | {} | {} / {} | {} | {} | {:.0} | {} | {} | {} | {} |\n",
            r.name,
            r.loss * 100.0,
            r.one_way_ms,
            r.jitter_ms,
            r.seconds,
            r.rounds_per_min,
            r.rounds_per_min_configured,
            r.longest_round_gap_s,
            r.round_s[0],
            r.round_s[1],
            r.round_s[2],
            r.round_s[3],
            r.rounds_at_timeout * 100.0,
            r.false_server_deaths,
            r.false_node_deaths,
            r.collateral_deaths,
            r.status_timeouts,
            r.view_changes_steady,
            r.view_changes_total,
            ms_list(&r.failover_ms),
            ms_list(&r.master_kill_ms),
            r.deploy_bytes as f64 / 1e6,
            match (r.deploy_bytes, r.deploy_s) {
                (0, _) => "–".to_owned(),
                (_, None) => "not done".to_owned(),
                (_, Some(d)) => format!("{d:.1}"),
            },
            r.deploy_generations,
            r.lag_moves,
            r.lag_bypass,
        ));
    }
    let examples: Vec<String> = all
        .iter()
        .filter(|r| !r.false_death_examples.is_empty())
        .map(|r| format!("- {}: {}", r.name, r.false_death_examples.join("; ")))
        .collect();
    if !examples.is_empty() {
        t.push_str("\nFalse deaths seen (first ten per run):\n\n");
        t.push_str(&examples.join("\n"));
        t.push('\n');
    }
    let script = out.join(".wan_plot.py");
    std::fs::write(&script, include_str!("wan_plot.py"))?;
    // The first python3 with matplotlib: PATH's, else Debian's (python3-matplotlib), which
    // a python3 from pyenv or a venv on the PATH would hide.
    let python = ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|p| {
            std::process::Command::new(p)
                .args(["-c", "import matplotlib"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .unwrap_or("python3");
    let res = std::process::Command::new(python)
        .arg(&script)
        .arg(out.join("results.json"))
        .arg(out)
        .output();
    let _ = std::fs::remove_file(&script);
    match res {
        Ok(o) if o.status.success() => {
            t.push('\n');
            for png in String::from_utf8_lossy(&o.stdout).lines() {
                t.push_str(&format!("![{png}]({png})\n"));
            }
        }
        Ok(o) => t.push_str(&format!(
            "\n(no plots: wan_plot.py failed: {})\n",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => t.push_str(&format!("\n(no plots: python3 not runnable: {e})\n")),
    }
    let path = out.join("results.md");
    std::fs::write(&path, t)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> WanSpec {
        WanSpec::new(Path::new("/tmp/x"), "t", 0.01, 60)
    }

    fn status(t: u64, node: &str, round: u64, dead: &[&str]) -> WanObs {
        WanObs::Status(StatusSample {
            t,
            node: node.into(),
            ok: true,
            is_master: node == "a1-c",
            round: Some(round),
            members: nodes(&spec().lab).into_iter().map(|n| n.name).collect(),
            dead: dead
                .iter()
                .map(|s| (s.to_string(), "dead (no answer)".to_string()))
                .collect(),
            ..StatusSample::default()
        })
    }

    fn event(t: u64, kind: &str, subject: &str) -> WanObs {
        WanObs::Event(EventRecord {
            t,
            kind: kind.into(),
            subject: subject.into(),
        })
    }

    #[test]
    fn a_link_direction_drops_its_share_and_never_reorders() {
        let mut d = LinkDirection::new(
            Duration::from_millis(50),
            Duration::from_millis(10),
            0.03,
            7,
        );
        let t0 = Instant::now();
        let mut dropped = 0;
        let mut last = t0;
        for i in 0..100_000u64 {
            let now = t0 + Duration::from_micros(i * 10);
            match d.due(now) {
                None => dropped += 1,
                Some(due) => {
                    assert!(due >= last, "reordered at {i}");
                    assert!(due >= now + Duration::from_millis(40));
                    last = due;
                }
            }
        }
        assert!((2500..3500).contains(&dropped), "{dropped}");
    }

    #[test]
    fn the_nft_script_sends_every_remote_node_through_its_relay_port() {
        let s = spec();
        let t = nft_script(&s, Area(1));
        assert!(t.contains(
            "ip saddr 10.255.0.11 udp sport 7400-7499 ip daddr 10.255.0.12 udp dport 7401 dnat to 10.255.0.11:17201"
        ), "{t}");
        assert!(!t.contains("daddr 10.255.0.11 "), "{t}");
        assert_eq!(t.matches("dnat").count(), 6);
    }

    #[test]
    fn a_live_server_dead_outside_events_is_a_false_death_and_inside_is_not() {
        let s = spec();
        let mut obs = vec![event(0, "measure-start", "")];
        for i in 0..120u64 {
            obs.push(status(i * 500, "a1-c", i / 2 + 1, &[]));
        }
        obs.push(event(60_000, "measure-end", ""));
        let clean = analyze(&s, "t", &obs);
        assert_eq!(clean.false_server_deaths, 0);
        assert!(
            (clean.rounds_per_min - 60.0).abs() < 2.0,
            "{}",
            clean.rounds_per_min
        );
        assert!(check_short(&clean).is_ok());
        // Planted: a3-s2 dead for one round in steady state.
        let mut planted = obs.clone();
        planted.insert(50, status(24_600, "a1-c", 13, &["a3-s2"]));
        let r = analyze(&s, "t", &planted);
        assert_eq!(r.false_server_deaths, 1, "{r:?}");
        assert!(check_short(&r).is_err());
        // The same inside an event's window is the event's own.
        let mut ev = planted.clone();
        ev.insert(40, event(20_000, "cluster-killed", "a3"));
        ev.insert(60, event(25_000, "cluster-restarted", "a3"));
        let r = analyze(&s, "t", &ev);
        assert_eq!(r.false_server_deaths, 0, "{r:?}");
        assert_eq!(r.failover_ms.len(), 1);
    }

    #[test]
    fn a_live_node_missing_from_a_view_and_stalled_rounds_are_caught() {
        let s = spec();
        let mut obs = vec![event(0, "measure-start", "")];
        for i in 0..120u64 {
            obs.push(status(i * 500, "a1-c", 1 + (i / 2).min(10), &[]));
        }
        if let Some(WanObs::Status(x)) = obs.get_mut(30) {
            x.members.retain(|m| m != "a2-c");
        }
        obs.push(event(60_000, "measure-end", ""));
        let r = analyze(&s, "t", &obs);
        assert_eq!(r.false_node_deaths, 1);
        assert!(r.rounds_per_min < 30.0);
        assert!(r.longest_round_gap_s > 40.0);
        assert!(check_short(&r).is_err());
    }

    #[test]
    fn an_area_moved_during_the_deploy_is_a_lag_move() {
        let s = spec();
        let mut obs = vec![
            event(0, "measure-start", ""),
            event(1000, "deploy-start", ""),
        ];
        for i in 0..20u64 {
            let WanObs::Status(mut x) = status(500 + i * 500, "a1-c", i + 1, &[]) else {
                unreachable!()
            };
            x.newest_generation = Some(if i < 2 { 1 } else { 2 });
            x.generations = ["a1-d", "a1-s2", "a2-d", "a2-s2", "a3-d", "a3-s2"]
                .iter()
                .map(|n| (n.to_string(), if i < 15 { 1 } else { 2 }))
                .collect();
            x.areas = [
                ("a1", "c1"),
                ("a2", "c2"),
                ("a3", if i == 5 { "c1" } else { "c3" }),
            ]
            .iter()
            .map(|(a, c)| (a.to_string(), c.to_string()))
            .collect();
            if i == 5 {
                x.dead = ["a3-s1", "a3-s2"]
                    .iter()
                    .map(|s| (s.to_string(), "dead (BYPASS)".to_string()))
                    .collect();
            }
            obs.push(WanObs::Status(x));
        }
        obs.push(event(20_000, "measure-end", ""));
        let r = analyze(&s, "t", &obs);
        assert_eq!(r.lag_moves, 1, "{r:?}");
        assert_eq!(r.deploy_generations, 1);
        assert_eq!(r.deploy_s, Some(7.0));
        assert!(check_short(&r).is_err());
    }
}
