//! Scale of the group (issue 24, "a thousand web hosts"): what every node being a full
//! member costs as the group grows, next to a two-tier group (a few members, many
//! clients), measured on the real protocol cores in virtual time.
//!
//! ```text
//! cargo run --release -p walrus-gcs --features testing --example scale -- \
//!     [--members 3,5,9,15,30,60,100] [--tier 3x10,5x100,9x1000] [--idle-secs 5] \
//!     [--latency-us 200] [--link-down] [--tier-only | --members-only]
//! ```
//! Prints one JSON line per configuration (`"design":"all-members"` or
//! `"design":"two-tier"`). Figures, per configuration:
//! - `idle`: heartbeat and control traffic of a settled group with no application
//!   messages (each node has one session in `Reporters`, as a web host's Reporter):
//!   messages/s and encoded frame bytes/s in total and per node (mean and busiest), by
//!   message kind; `wire_bytes_per_s_est` adds an *estimate* of 60 bytes of IP, UDP and
//!   QUIC per frame (one datagram per heartbeat; QUIC acknowledgements not counted).
//! - `crash` (a non-sequencer node, silent: its peers learn it by the failure detector,
//!   as for a killed host) and `crash_sequencer` (the first member: sequencer and
//!   coordinator): `detect_ms` (kill → first `Propose`), `failover_ms` (kill → every
//!   survivor installed the new view), `flush_ms` (first `Propose` → last install: the
//!   time the group is frozen), and the view change's messages and bytes
//!   (Propose/Accept/AcceptData/AcceptGroups/Install/InstallData/InstallGroups/Reject); `rejoin`: the same for the
//!   restarted node merging back.
//! - `per_hour`: from those measured costs, for each node crashing (and restarting) once
//!   a day and once a week: view changes per hour, their messages and bytes, and the
//!   seconds per hour the group is frozen in flushes.
//! - Times are virtual: link latency (`--latency-us`) and the protocol's timers, not the
//!   processing time of a real process (the real-process figures are in `docs/scale/`).
//! - `"extrapolated"` lines (`--extrapolate`, default 300 and 1000 nodes, too many for
//!   this simulator on one thread): heartbeats are n(n-1) per `heartbeat_interval`, each of
//!   the encoded size of a heartbeat listing n nodes (the simulated lines match this
//!   exactly), and a crash's view change is 3(n-1) messages (Propose, Accept, Install per
//!   survivor, as simulated).
//! - `sim_cpu_ms_per_virtual_s`: wall time the simulator spent per virtual second of the
//!   idle phase, all n cores on one thread: a proxy for the protocol's own CPU cost (the
//!   failure detector's clique is O(n³) per evaluation).
//!
//! Two-tier lines measure the members with the real cores (their view changes carry the
//! clients' group records) and **model the clients** (`"clients_model"` says how): a
//! client costs one heartbeat link to its member (a heartbeat each way per
//! `heartbeat_interval`, sized as a core heartbeat listing one node); its crash is one
//! `Gone` op in its member's total order — measured here by closing a local session of a
//! member that stands for the client — and never a view change. When the client tier
//! lands (`Gcs::attach(ClientConfig) -> Client`, `Client::open_session`), `tier::Clients`
//! is the one place to replace: see its module doc.

mod net;
mod tier;

use std::time::{Duration, Instant};

use clap::Parser;
use net::{Net, Traffic, VIEW_CHANGE_KINDS};
use serde_json::{json, Value};
use walrus_gcs::CoreConfig;

#[derive(Parser, Debug)]
struct Args {
    /// Group sizes for the all-members design.
    #[arg(long, value_delimiter = ',', default_value = "3,5,9,15,30,60,100")]
    members: Vec<usize>,
    /// Two-tier configurations as MEMBERSxCLIENTS.
    #[arg(long, value_delimiter = ',', default_value = "3x10,5x100,9x1000")]
    tier: Vec<String>,
    /// Virtual seconds of the idle measurement.
    #[arg(long, default_value_t = 5.0)]
    idle_secs: f64,
    /// One-way latency between two nodes, in microseconds (loopback/LAN: 200).
    #[arg(long, default_value_t = 200)]
    latency_us: u64,
    /// Crashes are reported by the transport (link down) instead of silent.
    #[arg(long)]
    link_down: bool,
    /// Group sizes too large to simulate here: heartbeat traffic and view-change messages
    /// from their formulas (labelled `"extrapolated"`).
    #[arg(long, value_delimiter = ',', default_value = "300,1000")]
    extrapolate: Vec<usize>,
    /// Only the two-tier lines.
    #[arg(long)]
    tier_only: bool,
    /// Only the all-members lines.
    #[arg(long)]
    members_only: bool,
}

/// Estimated IP + UDP + QUIC short header + AEAD tag + STREAM frame header per frame.
pub const WIRE_OVERHEAD: u64 = 60;

/// Crash rates per node: (label, crashes per node per hour).
pub const CRASH_RATES: [(&str, f64); 2] =
    [("once_a_day", 1.0 / 24.0), ("once_a_week", 1.0 / 168.0)];

/// Longest a view change may take in virtual time before the run says it failed.
const VIEW_DEADLINE: Duration = Duration::from_secs(60);

fn main() {
    let args = Args::parse();
    let latency = Duration::from_micros(args.latency_us);
    if !args.tier_only {
        for &n in &args.members {
            println!("{}", all_members(n, &args, latency));
        }
        for &n in &args.extrapolate {
            println!("{}", extrapolated(n));
        }
    }
    if !args.members_only {
        for spec in &args.tier {
            let Some((m, c)) = spec
                .split_once('x')
                .and_then(|(m, c)| Some((m.parse().ok()?, c.parse().ok()?)))
            else {
                eprintln!("bad --tier {spec:?}: want MEMBERSxCLIENTS");
                std::process::exit(2);
            };
            println!("{}", tier::two_tier(m, c, &args, latency));
        }
    }
}

/// Traffic as JSON rates over `secs`, for `n` nodes.
pub fn rates(t: &Traffic, n: usize, secs: f64) -> Value {
    let (msgs, bytes) = t.total();
    let (bm, bb) = t.busiest(n);
    let kinds: serde_json::Map<String, Value> = t
        .by_kind
        .iter()
        .map(|(k, (m, b))| {
            (
                k.to_string(),
                json!({"msgs_per_s": round(*m as f64 / secs), "bytes_per_s": round(*b as f64 / secs)}),
            )
        })
        .collect();
    json!({
        "msgs_per_s": round(msgs as f64 / secs),
        "bytes_per_s": round(bytes as f64 / secs),
        "wire_bytes_per_s_est": round((bytes + msgs * WIRE_OVERHEAD) as f64 / secs),
        "per_node_msgs_per_s": round(msgs as f64 / secs / n as f64),
        "per_node_bytes_per_s": round(bytes as f64 / secs / n as f64),
        "busiest_node_msgs_per_s": round(bm as f64 / secs),
        "busiest_node_bytes_per_s": round(bb as f64 / secs),
        "by_kind": kinds,
    })
}

/// `x` to one decimal.
pub fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `x` to three decimals.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `d` in milliseconds, to one decimal.
pub fn ms(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1000.0)
}

/// Runs until every running node is in one view of all running nodes; the time it took.
pub fn settle(net: &mut Net) -> Option<Duration> {
    let t0 = net.now;
    let deadline = net.now + VIEW_DEADLINE;
    let mut seen = usize::MAX;
    let done = net.run_until(deadline, |net| {
        if net.installs.len() == seen {
            return false;
        }
        seen = net.installs.len();
        net.one_view()
    });
    (done || net.one_view()).then(|| net.now - t0)
}

/// Crashes node `i` (or restarts it with `restart`) and measures the view change that
/// follows, as JSON.
pub fn view_change(net: &mut Net, i: usize, restart: bool, link_down: bool) -> Value {
    // Let the group be quiet first, so the counters hold this change only.
    net.run_until(net.now + Duration::from_secs(2), |_| false);
    net.mark();
    let t0 = net.now;
    if restart {
        net.start(i);
    } else {
        net.crash(i, link_down);
    }
    let Some(took) = settle(net) else {
        return json!({"ok": false, "reason": "no common view within the deadline"});
    };
    let last_install = net.installs.iter().map(|x| x.at).max().unwrap_or(net.now);
    let (vm, vb) = net.traffic.of(VIEW_CHANGE_KINDS);
    let (om, ob) = net.traffic.of(&["submit", "ordered", "ack"]);
    json!({
        "ok": true,
        "failover_ms": ms(took),
        "detect_ms": net.first_propose.map(|p| ms(p - t0)),
        "flush_ms": net.first_propose.map(|p| ms(last_install.saturating_sub(p))),
        "vc_msgs": vm,
        "vc_bytes": vb,
        "ordering_msgs": om,
        "ordering_bytes": ob,
        "installs": net.installs.len(),
    })
}

/// Per-hour figures for `nodes` nodes crashing (and restarting) at each of
/// [`CRASH_RATES`], from the measured `crash` and `rejoin` costs.
pub fn per_hour(nodes: usize, crash: &Value, rejoin: &Value) -> Value {
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let mut out = serde_json::Map::new();
    for (label, rate) in CRASH_RATES {
        let crashes = nodes as f64 * rate;
        out.insert(
            label.to_string(),
            json!({
                "view_changes": round3(crashes * 2.0),
                "vc_msgs": round(crashes * (f(crash, "vc_msgs") + f(rejoin, "vc_msgs"))),
                "vc_bytes": round(crashes * (f(crash, "vc_bytes") + f(rejoin, "vc_bytes"))),
                "frozen_s": round3(crashes * (f(crash, "flush_ms") + f(rejoin, "flush_ms")) / 1000.0),
                "disturbed_s": round3(crashes * f(crash, "failover_ms") / 1000.0),
            }),
        );
    }
    Value::Object(out)
}

/// Idle traffic of a settled `net` over `secs` virtual seconds, with the simulator's
/// wall time per virtual second.
pub fn idle(net: &mut Net, n: usize, secs: f64) -> (Value, f64) {
    net.run_until(net.now + Duration::from_secs(1), |_| false);
    net.mark();
    let wall = Instant::now();
    net.run_until(net.now + Duration::from_secs_f64(secs), |_| false);
    let cpu = wall.elapsed().as_secs_f64() * 1000.0 / secs;
    (rates(&net.traffic, n, secs), round(cpu))
}

/// Encoded frame size of a heartbeat of a node that sees `n` nodes alive.
pub fn heartbeat_bytes(n: usize) -> u64 {
    use walrus_gcs::{Heartbeat, Incarnation, NodeId, NodeRef, PeerMessage, ViewId};
    let inc = Incarnation(net::INCARNATION_BASE + 1);
    let hb = PeerMessage::Heartbeat(Heartbeat {
        incarnation: inc,
        view: ViewId {
            counter: 100,
            coordinator: NodeId::new("web-0000"),
            incarnation: inc,
        },
        alive: (0..n)
            .map(|i| NodeRef {
                id: NodeId::new(format!("web-{i:04}")),
                incarnation: inc,
            })
            .collect(),
        max_counter: 100,
    });
    let mut buf = Vec::new();
    walrus_gcs::codec::encode_frame(&hb, &mut buf)
        .map(|()| buf.len() as u64)
        .unwrap_or(0)
}

/// The all-members figures of `n` nodes from their formulas.
fn extrapolated(n: usize) -> Value {
    let config = CoreConfig::lan();
    let per_s = 1.0 / config.heartbeat_interval.as_secs_f64();
    let msgs = (n * (n - 1)) as f64 * per_s;
    let bytes = msgs * heartbeat_bytes(n - 1) as f64;
    let vc = 3.0 * (n - 1) as f64;
    let mut hour = serde_json::Map::new();
    for (label, rate) in CRASH_RATES {
        hour.insert(
            label.to_string(),
            json!({"view_changes": round3(n as f64 * rate * 2.0)}),
        );
    }
    json!({
        "design": "all-members",
        "extrapolated": "formula, not simulated: n(n-1) heartbeats per heartbeat_interval of the encoded size of a heartbeat listing n nodes; 3(n-1) messages per crash view change",
        "members": n,
        "clients": 0,
        "heartbeat_interval_ms": ms(config.heartbeat_interval),
        "idle": {
            "msgs_per_s": round(msgs),
            "bytes_per_s": round(bytes),
            "wire_bytes_per_s_est": round(bytes + msgs * WIRE_OVERHEAD as f64),
            "per_node_msgs_per_s": round(msgs / n as f64),
            "per_node_bytes_per_s": round(bytes / n as f64),
        },
        "crash": {"vc_msgs": vc},
        "per_hour": Value::Object(hour),
    })
}

fn all_members(n: usize, args: &Args, latency: Duration) -> Value {
    let config = CoreConfig::lan();
    let mut net = Net::new(n, config.clone(), latency);
    let Some(formed) = settle(&mut net) else {
        return json!({"design": "all-members", "n": n, "ok": false, "reason": "no first view"});
    };
    // Each web host's Reporter: one session in `Reporters`.
    for i in 0..n {
        if let Some(s) = net.open_session(i) {
            net.join(i, s, "Reporters");
        }
    }
    let (idle, cpu) = idle(&mut net, n, args.idle_secs);
    let crash = view_change(&mut net, n - 1, false, args.link_down);
    let rejoin = view_change(&mut net, n - 1, true, args.link_down);
    let crash_seq = view_change(&mut net, 0, false, args.link_down);
    let rejoin_seq = view_change(&mut net, 0, true, args.link_down);
    let hour = per_hour(n, &crash, &rejoin);
    json!({
        "design": "all-members",
        "members": n,
        "clients": 0,
        "heartbeat_interval_ms": ms(config.heartbeat_interval),
        "failure_timeout_ms": ms(config.failure_timeout),
        "latency_us": args.latency_us,
        "crash_reported": args.link_down,
        "form_ms": ms(formed),
        "idle": idle,
        "crash": crash,
        "rejoin": rejoin,
        "crash_sequencer": crash_seq,
        "rejoin_sequencer": rejoin_seq,
        "per_hour": hour,
        "sim_cpu_ms_per_virtual_s": cpu,
    })
}
