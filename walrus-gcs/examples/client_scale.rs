//! Real clients over QUIC (issue 24, "Scale"): `m` members, each its own OS process (this
//! binary re-run with `--member`), and `c` real clients (`tier::Client`, each with its
//! own QUIC endpoint, mutual TLS, its own certificate) sharing this driver process. All
//! on loopback.
//!
//! ```text
//! cargo run --release -p walrus-gcs --example client_scale -- --members 3 --clients 10
//! ```
//! One JSON line per run (`"real_clients": true`):
//! * the **join wave**: every client attaches (client `k` to member `k mod m` first, then
//!   the others in order), opens a session and joins `web`; done when every client's
//!   session has a list of `c` members (if it is not done within `--timeout`, the line
//!   says `"completed": false` with the list lengths reached, and the run stops there);
//! * **idle control traffic** over `--idle-secs`: with `--nft` (inside a network namespace
//!   of its own, root: see `docs/scale/real_clients.sh`), each member's packets and bytes
//!   on its member port and on its client listener, counted by nftables on loopback's
//!   input hook (every packet once: IP length), and loopback in all;
//! * a **client crash**: one client stops (its task and endpoint dropped); the time until
//!   every other client's session sees the list without it, the traffic in that window
//!   (less the idle rate), and whether any member installed a view meanwhile (it must not);
//! * **fail-over**: the last member is killed with SIGKILL; its clients find out by QUIC's
//!   idle timeout and attach to their next member; per client, kill → attached again, and
//!   kill → every client's list whole again; the members' kill → view time.
//!
//! `/proc/loadavg` is recorded with each figure (the machine is shared). Member processes
//! are killed and reaped on every exit path, and stop when their standard input (a pipe
//! from the driver) ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use walrus_gcs::tier::{Client, ClientLinkConfig};
use walrus_gcs::transport::{certs, Limits, Listen, NodeIdentity, TransportConfig};
use walrus_gcs::{Event, Gcs, GcsConfig, GroupName, NodeId};
use walrus_testkit::ChildGuard;

#[derive(Parser, Debug)]
struct Args {
    /// Run as one member (internal).
    #[arg(long)]
    member: bool,
    /// Member: its name.
    #[arg(long, default_value = "")]
    name: String,
    /// Member: its port for members.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Member: its port for clients.
    #[arg(long, default_value_t = 0)]
    client_port: u16,
    /// Member: a peer NAME=PORT (repeat).
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// Member: the directory of certificates.
    #[arg(long)]
    certs: Option<PathBuf>,
    /// Members (processes).
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Clients (in this process).
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// Seconds of idle traffic measured.
    #[arg(long, default_value_t = 10.0)]
    idle_secs: f64,
    /// Count each member's traffic with nftables (root, in a network namespace of its own).
    #[arg(long)]
    nft: bool,
    /// First port (members use BASE.., their client listeners BASE+100..).
    #[arg(long, default_value_t = 17100)]
    base_port: u16,
    /// Give up on any phase after this many seconds.
    #[arg(long, default_value_t = 180.0)]
    timeout: f64,
}

mod node;

use node::{emit, unix_us};

/// A progress line on stderr.
fn phase(what: &str) {
    eprintln!("client_scale: {what} (load {:?})", loadavg());
}

fn loadavg() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect()
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if args.member {
        rt.block_on(member(args));
    } else {
        let line = rt.block_on(driver(args));
        emit(line);
    }
}

// ------------------------------------------------------------------ a member process

/// Logs on stderr (`RUST_LOG=walrus_gcs::tier=info`: clients attached, refused, detached
/// as too slow, links ended; a membership delta that did not fit is a warning).
fn logs() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

async fn member(args: Args) {
    logs();
    let dir = args.certs.clone().expect("--certs");
    let identity = NodeIdentity::load(&dir, &args.name).expect("certificates");
    let peers = args
        .peers
        .iter()
        .map(|p| {
            let (n, port) = p.split_once('=').expect("NAME=PORT");
            (
                NodeId::new(n),
                SocketAddr::from(([127, 0, 0, 1], port.parse::<u16>().expect("port"))),
            )
        })
        .collect();
    let transport = TransportConfig {
        me: NodeId::new(args.name.clone()),
        listen: Listen::Addr(SocketAddr::from(([127, 0, 0, 1], args.port))),
        peers,
        identity: identity.clone(),
        limits: Limits::default(),
    };
    let gcs = Gcs::start(GcsConfig::lan(transport)).await.expect("start");
    let at = gcs
        .serve_clients(
            &identity,
            SocketAddr::from(([127, 0, 0, 1], args.client_port)),
        )
        .expect("client listener");
    emit(json!({"event":"ready","node":args.name,"clients_at":at.to_string()}));
    node::emit_views(&gcs, args.name.clone());
    // Until the driver's pipe ends.
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    })
    .await;
    gcs.shutdown().await;
}

// ------------------------------------------------------------------ traffic counters

fn nft(args: &[&str]) {
    let ok = Command::new("nft")
        .args(args)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "nft {args:?} failed");
}

/// One counter per member and kind (`p` its member port, `c` its client listener).
fn nft_setup(members: usize, base: u16) {
    nft(&["add", "table", "inet", "scale"]);
    nft(&[
        "add",
        "chain",
        "inet",
        "scale",
        "in",
        "{ type filter hook input priority 0; }",
    ]);
    for i in 0..members {
        for (kind, port) in [("p", base + i as u16), ("c", base + 100 + i as u16)] {
            let name = format!("{kind}{i}");
            nft(&["add", "counter", "inet", "scale", &name]);
            for dir in ["sport", "dport"] {
                nft(&[
                    "add",
                    "rule",
                    "inet",
                    "scale",
                    "in",
                    "udp",
                    dir,
                    &port.to_string(),
                    "counter",
                    "name",
                    &name,
                ]);
            }
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Sample {
    at: Option<Instant>,
    /// Counter name → (packets, bytes).
    counters: BTreeMap<String, (u64, u64)>,
    lo: (u64, u64),
}

fn sample(nft_on: bool) -> Sample {
    let mut s = Sample {
        at: Some(Instant::now()),
        ..Sample::default()
    };
    if nft_on {
        let out = Command::new("nft")
            .args(["-j", "list", "counters", "table", "inet", "scale"])
            .output()
            .expect("nft");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        for item in v["nftables"].as_array().into_iter().flatten() {
            let c = &item["counter"];
            if let (Some(n), Some(p), Some(b)) = (
                c["name"].as_str(),
                c["packets"].as_u64(),
                c["bytes"].as_u64(),
            ) {
                s.counters.insert(n.to_string(), (p, b));
            }
        }
    }
    let dev = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
    for line in dev.lines() {
        if let Some(rest) = line.trim_start().strip_prefix("lo:") {
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if f.len() > 1 {
                s.lo = (f[1], f[0]);
            }
        }
    }
    s
}

/// Per second between two samples: per member (member port, client listener) and in all.
fn rates(a: &Sample, b: &Sample, members: usize) -> Value {
    let secs =
        b.at.zip(a.at)
            .map_or(1.0, |(b, a)| (b - a).as_secs_f64())
            .max(1e-3);
    let d = |k: &str| {
        let (p0, b0) = a.counters.get(k).copied().unwrap_or_default();
        let (p1, b1) = b.counters.get(k).copied().unwrap_or_default();
        ((p1 - p0) as f64 / secs, (b1 - b0) as f64 / secs)
    };
    let per: Vec<Value> = (0..members)
        .map(|i| {
            let (pp, pb) = d(&format!("p{i}"));
            let (cp, cb) = d(&format!("c{i}"));
            json!({"member": format!("m{i}"), "peer_packets_per_s": pp.round(),
                   "peer_bytes_per_s": pb.round(), "client_packets_per_s": cp.round(),
                   "client_bytes_per_s": cb.round()})
        })
        .collect();
    let client_total: (f64, f64) = (0..members)
        .map(|i| d(&format!("c{i}")))
        .fold((0.0, 0.0), |x, y| (x.0 + y.0, x.1 + y.1));
    json!({
        "secs": secs,
        "per_member": per,
        "client_links_packets_per_s": client_total.0.round(),
        "client_links_bytes_per_s": client_total.1.round(),
        "lo_packets_per_s": ((b.lo.0 - a.lo.0) as f64 / secs).round(),
        "lo_bytes_per_s": ((b.lo.1 - a.lo.1) as f64 / secs).round(),
    })
}

// ------------------------------------------------------------------ the driver

/// What one client's session has seen.
#[derive(Clone, Debug, Default)]
struct Seen {
    /// Length of the last member list.
    members: usize,
}

struct Members {
    guards: Vec<ChildGuard>,
    /// Pipes to their stdin (dropped: they stop).
    _stdin: Vec<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<(usize, Value)>,
    views: Vec<(usize, Value)>,
}

impl Members {
    /// Takes the lines printed so far.
    fn poll(&mut self) {
        while let Ok((i, v)) = self.lines.try_recv() {
            if v["event"] == "view" {
                self.views.push((i, v));
            }
        }
    }
}

/// How many clients hold a list of each length.
fn lengths(seen: &Mutex<Vec<Seen>>) -> BTreeMap<usize, usize> {
    let mut out = BTreeMap::new();
    for s in seen.lock().unwrap().iter() {
        *out.entry(s.members).or_default() += 1;
    }
    out
}

fn percentile(v: &mut [f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    Some((v[i] * 10.0).round() / 10.0)
}

async fn driver(args: Args) -> Value {
    logs();
    let m = args.members;
    let c = args.clients;
    let timeout = Duration::from_secs_f64(args.timeout);
    let dir = walrus_testkit::TempDir::new("client-scale");
    let ca = certs::write_new_ca(dir.path()).expect("CA");
    let names: Vec<String> = (0..m).map(|i| format!("m{i}")).collect();
    for n in &names {
        certs::write_node_cert(dir.path(), n).expect("member certificate");
    }
    if args.nft {
        nft_setup(m, args.base_port);
    }
    // Members, one process each.
    let exe = std::env::current_exe().expect("own path");
    let (tx, lines) = std::sync::mpsc::channel();
    let mut guards = Vec::new();
    let mut stdin = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut cmd = Command::new(&exe);
        cmd.args(["--member", "--name", name])
            .arg("--port")
            .arg((args.base_port + i as u16).to_string())
            .arg("--client-port")
            .arg((args.base_port + 100 + i as u16).to_string())
            .arg("--certs")
            .arg(dir.path());
        for (j, peer) in names.iter().enumerate() {
            if j != i {
                cmd.arg("--peer")
                    .arg(format!("{peer}={}", args.base_port + j as u16));
            }
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn member");
        stdin.push(child.stdin.take().expect("stdin"));
        let out = child.stdout.take().expect("stdout");
        node::forward_json_lines(out, i, tx.clone());
        guards.push(ChildGuard::new(format!("member {name}"), child));
    }
    drop(tx);
    let mut mem = Members {
        guards,
        _stdin: stdin,
        lines,
        views: Vec::new(),
    };
    let whole = |mem: &Members, n: usize, without: Option<usize>| {
        (0..m).filter(|i| Some(*i) != without).all(|i| {
            mem.views
                .iter()
                .rev()
                .find(|(j, _)| *j == i)
                .is_some_and(|(_, v)| v["members"].as_array().is_some_and(|a| a.len() == n))
        })
    };
    let t = Instant::now();
    while !whole(&mem, m, None) {
        assert!(t.elapsed() < timeout, "members never formed one view");
        mem.poll();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let listeners: Vec<(NodeId, SocketAddr)> = (0..m)
        .map(|i| {
            (
                NodeId::new(names[i].clone()),
                SocketAddr::from(([127, 0, 0, 1], args.base_port + 100 + i as u16)),
            )
        })
        .collect();

    // The join wave.
    phase("members in one view; clients attaching");
    let group = GroupName::new("web");
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::new(Mutex::new(vec![Seen::default(); c]));
    let s0 = sample(args.nft);
    let load_join = loadavg();
    let t_join = Instant::now();
    let join_start_us = unix_us();
    let mut clients = Vec::new();
    let mut readers = Vec::new();
    for k in 0..c {
        let name = format!("client.c{k:04}");
        let identity = NodeIdentity::issued_by(&ca, &name).expect("client certificate");
        let order: Vec<(NodeId, SocketAddr)> =
            (0..m).map(|j| listeners[(k + j) % m].clone()).collect();
        let client = Client::attach(ClientLinkConfig {
            identity,
            name: NodeId::new(name),
            incarnation: None,
            members: order,
            local: None,
            window: 64,
            retry: Duration::from_millis(100),
            limits: Limits::lan(),
            // A thousand clients in one process: on its runtime, not a thread each.
            thread: walrus_gcs::GcsThread::Caller,
        })
        .await
        .expect("attach");
        let mut session = client.open_session().await.expect("session");
        session.join(group.clone()).await.expect("join");
        let seen = seen.clone();
        readers.push(tokio::spawn(async move {
            while let Some(e) = session.recv().await {
                if let Event::Membership { members, .. } = e {
                    let mut s = seen.lock().unwrap();
                    s[k].members = members.len();
                }
            }
        }));
        clients.push(client);
    }
    let all_see = |n: usize, skip: &[usize]| {
        let s = seen.lock().unwrap();
        s.iter()
            .enumerate()
            .all(|(k, x)| skip.contains(&k) || x.members == n)
    };
    let mut reported = Instant::now();
    let mut complete = true;
    while !all_see(c, &[]) {
        if t_join.elapsed() > timeout {
            complete = false;
            break;
        }
        if reported.elapsed() > Duration::from_secs(30) {
            reported = Instant::now();
            mem.poll();
            phase(&format!(
                "join wave: list lengths {:?}, {} view lines",
                lengths(&seen),
                mem.views.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let join_ms = t_join.elapsed().as_secs_f64() * 1e3;
    let s1 = sample(args.nft);
    mem.poll();
    // View lines (one per member per view) printed during the wave: a stable group
    // prints none.
    let join_views = mem
        .views
        .iter()
        .filter(|(_, v)| v["t_us"].as_u64().is_some_and(|t| t > join_start_us))
        .count();
    let join_traffic = json!({
        "lo_packets": s1.lo.0 - s0.lo.0, "lo_bytes": s1.lo.1 - s0.lo.1,
        "client_links_bytes": (0..m).map(|i| {
            let k = format!("c{i}");
            s1.counters.get(&k).map_or(0, |x| x.1) - s0.counters.get(&k).map_or(0, |x| x.1)
        }).sum::<u64>(),
        "members_peer_bytes": (0..m).map(|i| {
            let k = format!("p{i}");
            s1.counters.get(&k).map_or(0, |x| x.1) - s0.counters.get(&k).map_or(0, |x| x.1)
        }).sum::<u64>() / 2,
        "view_lines": join_views,
    });
    if !complete {
        // The group did not settle: report what is known and stop.
        for cl in &clients {
            cl.shutdown().await;
        }
        for g in &mut mem.guards {
            g.kill();
        }
        if args.nft {
            nft(&["delete", "table", "inet", "scale"]);
        }
        return json!({
            "bench": "client_scale", "real_clients": true, "real_processes": true,
            "members": m, "clients": c, "nft": args.nft,
            "join": {"completed": false, "ms": join_ms, "traffic": join_traffic,
                     "list_lengths": lengths(&seen), "load": loadavg()},
        });
    }

    // Idle traffic.
    phase(&format!("join wave done in {join_ms:.0} ms; idle"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let a = sample(args.nft);
    tokio::time::sleep(Duration::from_secs_f64(args.idle_secs)).await;
    let b = sample(args.nft);
    let idle = rates(&a, &b, m);
    let load_idle = loadavg();

    // A client crash.
    phase("client crash");
    mem.poll();
    let views_before = mem.views.len();
    let victim_client = 0;
    let before = sample(args.nft);
    let t_crash = Instant::now();
    clients[victim_client].shutdown().await;
    readers[victim_client].abort();
    while !all_see(c - 1, &[victim_client]) {
        assert!(
            t_crash.elapsed() < timeout,
            "the crash was never seen by every client: {:?}",
            lengths(&seen)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let crash_seen_ms = t_crash.elapsed().as_secs_f64() * 1e3;
    // The window: until every client saw it, and 300 ms more (the members' own
    // acknowledgements); the idle rate over the same time is taken off.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = sample(args.nft);
    mem.poll();
    let crash_views = mem.views.len() - views_before;
    let crash_rates = rates(&before, &after, m);
    let secs = crash_rates["secs"].as_f64().unwrap_or(1.0);
    let extra =
        |k: &str| (crash_rates[k].as_f64().unwrap_or(0.0) - idle[k].as_f64().unwrap_or(0.0)) * secs;
    let crash = json!({
        "seen_by_all_ms": crash_seen_ms,
        "views_installed": crash_views,
        "window_s": secs,
        "extra_lo_packets": extra("lo_packets_per_s").round(),
        "extra_lo_bytes": extra("lo_bytes_per_s").round(),
        "extra_client_links_bytes": extra("client_links_bytes_per_s").round(),
        "extra_client_links_packets": extra("client_links_packets_per_s").round(),
        "load": loadavg(),
    });

    // Fail-over: SIGKILL the last member; its clients attach to their next member.
    phase("fail-over: killing the last member");
    let victim = m - 1;
    let movers: Vec<usize> = (0..c)
        .filter(|k| *k != victim_client && k % m == victim)
        .collect();
    let watches: Vec<_> = movers.iter().map(|k| clients[*k].watch_member()).collect();
    let t_kill = Instant::now();
    let kill_us = unix_us();
    mem.guards[victim].kill();
    let mut back: Vec<Option<f64>> = vec![None; movers.len()];
    let mut reported = Instant::now();
    loop {
        for (i, w) in watches.iter().enumerate() {
            if back[i].is_none()
                && w.borrow()
                    .as_ref()
                    .is_some_and(|x| x.as_str() != names[victim])
            {
                back[i] = Some(t_kill.elapsed().as_secs_f64() * 1e3);
            }
        }
        if back.iter().all(Option::is_some) && all_see(c - 1, &[victim_client]) {
            break;
        }
        if t_kill.elapsed() > timeout {
            break;
        }
        if reported.elapsed() > Duration::from_secs(10) {
            reported = Instant::now();
            let n = back.iter().flatten().count();
            phase(&format!(
                "fail-over: {n} of {} back; list lengths {:?}",
                back.len(),
                lengths(&seen)
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let whole_again_ms =
        all_see(c - 1, &[victim_client]).then(|| t_kill.elapsed().as_secs_f64() * 1e3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    mem.poll();
    let view_ms = mem
        .views
        .iter()
        .filter(|(i, v)| {
            *i != victim
                && v["members"].as_array().is_some_and(|a| a.len() == m - 1)
                && v["t_us"].as_u64().is_some_and(|t| t > kill_us)
        })
        .filter_map(|(_, v)| v["t_us"].as_u64())
        .max()
        .map(|t| (t - kill_us) as f64 / 1e3);
    let mut moved: Vec<f64> = back.iter().flatten().copied().collect();
    let final_lengths = lengths(&seen);
    let failover = json!({
        "killed": names[victim],
        "clients_moved": movers.len(),
        "clients_back": moved.len(),
        "attach_again_ms_p50": percentile(&mut moved, 0.5),
        "attach_again_ms_max": percentile(&mut moved, 1.0),
        "lists_whole_again_ms": whole_again_ms,
        "members_view_ms": view_ms,
        "list_lengths_at_end": final_lengths,
        "load": loadavg(),
    });
    for cl in &clients {
        cl.shutdown().await;
    }
    for r in readers {
        r.abort();
    }
    for g in &mut mem.guards {
        g.kill();
    }
    if args.nft {
        nft(&["delete", "table", "inet", "scale"]);
    }
    json!({
        "bench": "client_scale",
        "real_clients": true,
        "real_processes": true,
        "members": m,
        "clients": c,
        "nft": args.nft,
        "join": {"ms": join_ms, "traffic": join_traffic, "load": load_join},
        "idle": idle,
        "idle_load": load_idle,
        "client_crash": crash,
        "failover": failover,
    })
}
