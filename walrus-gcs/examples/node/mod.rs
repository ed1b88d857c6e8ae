//! One GCS node as its own OS process (shared by the `gcs-node` and `bench` examples).
//! It prints one JSON line per event on stdout.
//!
//! ```text
//! gcs-node --name n0 --listen 127.0.0.1:7000 --peer n1=127.0.0.1:7001 --peer n2=... \
//!          --certs DIR [--group G] [--send N] [--bench-secs S --size B [--rate R]]
//! ```
//! Lines: `{"event":"view",...}` for every installed view, `{"event":"membership",...}`,
//! `{"event":"msg",...}` for each delivered message (not in bench mode), and with
//! `--bench-secs` one `{"event":"bench",...}` line with delivery counts and latencies.
//!
//! In bench mode every payload carries its send time and the sender's message counter
//! (0, 1, 2, …), so the report can say, per sender, how many of its messages arrived
//! (`received`) and how many times its counter did not go up by exactly one (`gaps`: a
//! lost, duplicated or reordered message). The benchmark compares those with each
//! sender's `sent` to tell a valid run from one that lost messages.
#![allow(missing_docs, dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde_json::json;
use walrus_gcs::transport::{Limits, Listen, NodeIdentity, TransportConfig};
use walrus_gcs::{Event, Gcs, GcsConfig, GcsThread, GroupName, NodeId, Service};

/// Command line of a node.
#[derive(Parser, Debug)]
pub struct Args {
    /// This node's name (its certificate's SAN).
    #[arg(long)]
    name: String,
    /// UDP address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// A peer as NAME=ADDR (repeat).
    #[arg(long = "peer", value_parser = parse_peer)]
    peers: Vec<(String, SocketAddr)>,
    /// Directory with ca.pem, NAME.pem, NAME.key.
    #[arg(long)]
    certs: PathBuf,
    /// Group to join.
    #[arg(long, default_value = "walrus")]
    group: String,
    /// Once every configured node is in the group, multicast this many Agreed messages.
    #[arg(long, default_value_t = 0)]
    send: usize,
    /// Benchmark mode: send Agreed messages for this many seconds (after the group is
    /// complete), then report.
    #[arg(long)]
    bench_secs: Option<f64>,
    /// Payload size in bytes (benchmark mode; at least 16).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Messages per second to send (benchmark mode); 0 = as fast as the core accepts.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Override `CoreConfig::max_pending` (local operations waiting to be ordered).
    #[arg(long)]
    max_pending: Option<usize>,
    /// Override `CoreConfig::max_pending_bytes` (payload bytes of those operations).
    #[arg(long)]
    max_pending_bytes: Option<usize>,
    /// Override `CoreConfig::group_window` (what all members may have on their way).
    #[arg(long)]
    group_window: Option<usize>,
    /// Override `CoreConfig::group_window_bytes`.
    #[arg(long)]
    group_window_bytes: Option<usize>,
    /// Override `CoreConfig::session_queue_limit` (events a session may leave unread).
    #[arg(long)]
    session_queue_limit: Option<usize>,
    /// Use the WAN profile (timeouts ten times longer).
    #[arg(long)]
    wan: bool,
    /// Where the node's protocol runs: `own` (its own thread, the default) or `caller`
    /// (the process's runtime, with the benchmark's sender and reader).
    #[arg(long, default_value = "own", value_parser = parse_thread)]
    gcs_thread: GcsThread,
    /// Stop when standard input reaches its end (the benchmark gives each worker a pipe:
    /// if the benchmark dies, however it dies, its workers stop too).
    #[arg(long)]
    exit_on_stdin_eof: bool,
    /// Planted fault (bench mode): act as if the 1000th delivered message was lost, to
    /// show that the benchmark's loss check catches a loss.
    #[arg(long, hide = true)]
    plant_loss: bool,
}

pub fn parse_thread(s: &str) -> Result<GcsThread, String> {
    match s {
        "own" => Ok(GcsThread::Own),
        "caller" => Ok(GcsThread::Caller),
        _ => Err(format!("{s:?}: `own` or `caller`")),
    }
}

fn parse_peer(s: &str) -> Result<(String, SocketAddr), String> {
    let (n, a) = s.split_once('=').ok_or("expected NAME=ADDR")?;
    Ok((n.to_owned(), a.parse().map_err(|e| format!("{a}: {e}"))?))
}

pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

pub fn emit(v: serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// Prints a `{"event":"view",...}` line for every view `gcs` installs (on a task).
pub fn emit_views(gcs: &Gcs, me: String) {
    let mut views = gcs.watch_view();
    tokio::spawn(async move {
        while views.changed().await.is_ok() {
            let v = views.borrow_and_update().clone();
            if let Some(v) = v {
                let members: Vec<String> = v.members.iter().map(|m| m.id.to_string()).collect();
                emit(json!({"event":"view","node":me,"view":v.view.to_string(),
                            "members":members,"t_us":unix_us()}));
            }
        }
    });
}

/// Forwards the JSON lines a worker prints on `out` to `tx`, tagged with its index `i`
/// (on a thread of its own, until `out` ends).
pub fn forward_json_lines(
    out: std::process::ChildStdout,
    i: usize,
    tx: std::sync::mpsc::Sender<(usize, serde_json::Value)>,
) {
    use std::io::BufRead;
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                let _ = tx.send((i, v));
            }
        }
    });
}

/// Runs a node with `args` until SIGTERM or Ctrl-C. Logs warnings, and why a view change
/// drops a member (`RUST_LOG` overrides): a benchmark run that comes out invalid because
/// a member left says on its standard error why.
pub async fn run(args: Args) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,walrus_gcs::node::view_change=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let identity = NodeIdentity::load(&args.certs, &args.name).expect("certificates");
    let nodes = args.peers.len() + 1;
    let transport = TransportConfig {
        me: NodeId::new(args.name.clone()),
        listen: Listen::Addr(args.listen),
        peers: args
            .peers
            .iter()
            .map(|(n, a)| (NodeId::new(n.clone()), *a))
            .collect(),
        identity,
        limits: Limits::default(),
    };
    let mut config = if args.wan {
        GcsConfig::wan(transport)
    } else {
        GcsConfig::lan(transport)
    };
    config.thread = args.gcs_thread;
    if let Some(n) = args.max_pending {
        config.core.max_pending = n;
    }
    if let Some(n) = args.max_pending_bytes {
        config.core.max_pending_bytes = n;
    }
    if let Some(n) = args.session_queue_limit {
        config.core.session_queue_limit = n;
    }
    if let Some(n) = args.group_window {
        config.core.group_window = n;
    }
    if let Some(n) = args.group_window_bytes {
        config.core.group_window_bytes = n;
    }
    let gcs = Gcs::start(config).await.expect("start");

    emit_views(&gcs, args.name.clone());

    let group = GroupName::new(args.group.clone());
    let mut session = gcs.open_session().await.expect("session");
    session.join(group.clone()).await.expect("join");
    let sender = session.sender();
    let mut started = false;
    let mut latencies = Latencies::default();
    let mut delivered: u64 = 0;
    let mut bench_window: Option<(u64, u64)> = None; // (start_us, end_us)
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<u64>(1);
    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    let (eof_tx, mut eof_rx) = tokio::sync::oneshot::channel::<()>();
    if args.exit_on_stdin_eof {
        // A plain thread: tokio's stdin is a blocking thread anyway.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            let _ = eof_tx.send(());
        });
    } else {
        std::mem::forget(eof_tx);
    }
    let mut tally = Tally {
        plant_loss: args.plant_loss,
        ..Tally::default()
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    loop {
        tokio::select! {
            e = session.recv() => {
                let Some(e) = e else { break };
                match e {
                    Event::Membership { members, reason, view, .. } => {
                        let names: Vec<String> = members.iter().map(|m| m.node.to_string()).collect();
                        emit(json!({"event":"membership","node":args.name,"view":view.to_string(),
                                    "members":names,"reason":format!("{reason:?}"),"t_us":unix_us()}));
                        if !started && members.len() >= nodes {
                            started = true;
                            let tx = sender.clone();
                            let g = group.clone();
                            let name = args.name.clone();
                            let (n, secs, size, rate) = (args.send, args.bench_secs, args.size.max(16), args.rate);
                            let done = done_tx.clone();
                            if let Some(secs) = secs {
                                let start = unix_us();
                                bench_window = Some((start, start + (secs * 1e6) as u64));
                            }
                            tokio::spawn(async move {
                                if let Some(secs) = secs {
                                    let end = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
                                    let mut k: u64 = 0;
                                    let t0 = tokio::time::Instant::now();
                                    while tokio::time::Instant::now() < end {
                                        if rate > 0.0 {
                                            let due = t0 + Duration::from_secs_f64(k as f64 / rate);
                                            tokio::time::sleep_until(due).await;
                                        }
                                        let mut p = vec![0u8; size];
                                        p[..8].copy_from_slice(&unix_us().to_le_bytes());
                                        p[8..16].copy_from_slice(&k.to_le_bytes());
                                        if tx.multicast(Service::Agreed, std::slice::from_ref(&g), p).await.is_err() {
                                            break;
                                        }
                                        k += 1;
                                    }
                                    let _ = done.send(k).await;
                                } else {
                                    for k in 0..n {
                                        let p = format!("{name}:{k}").into_bytes();
                                        tx.multicast(Service::Agreed, std::slice::from_ref(&g), p).await.expect("multicast");
                                    }
                                }
                            });
                        }
                    }
                    Event::Message { sender: (from, _), payload, .. } => {
                        if args.bench_secs.is_some() {
                            // Others may start sending before this node does: count
                            // everything, time only what was sent in our window.
                            if payload.len() >= 16 {
                                tally.count(&from, &payload);
                            }
                            if let (Some((start, end)), true) = (bench_window, payload.len() >= 16) {
                                let now = unix_us();
                                let sent = u64::from_le_bytes(payload[..8].try_into().unwrap_or([0; 8]));
                                if sent >= start && sent <= end {
                                    delivered += 1;
                                    latencies.record(&from, now.saturating_sub(sent));
                                }
                            }
                        } else {
                            emit(json!({"event":"msg","node":args.name,"from":from.to_string(),
                                        "payload":String::from_utf8_lossy(&payload),"t_us":unix_us()}));
                        }
                    }
                    Event::Disconnected { reason } => {
                        emit(json!({"event":"disconnected","node":args.name,"reason":format!("{reason:?}")}));
                        break;
                    }
                }
            }
            sent = done_rx.recv() => {
                // Let the last messages arrive (until none came for a second, at most
                // 30 s), then report.
                let sent = sent.unwrap_or(0);
                let cap = tokio::time::Instant::now() + Duration::from_secs(30);
                loop {
                    let quiet = (tokio::time::Instant::now() + Duration::from_secs(1)).min(cap);
                    let Ok(Some(e)) = tokio::time::timeout_at(quiet, session.recv()).await else {
                        break;
                    };
                    if let Event::Disconnected { reason } = &e {
                        emit(json!({"event":"disconnected","node":args.name,"reason":format!("{reason:?}")}));
                        break;
                    }
                    if let (Event::Message { payload, sender: (from, _), .. }, Some((start, end))) = (e, bench_window) {
                        if payload.len() >= 16 {
                            tally.count(&from, &payload);
                            let now = unix_us();
                            let ts = u64::from_le_bytes(payload[..8].try_into().unwrap_or([0; 8]));
                            if ts >= start && ts <= end {
                                delivered += 1;
                                latencies.record(&from, now.saturating_sub(ts));
                            }
                        }
                    }
                }
                let secs = bench_window.map(|(s, e)| (e - s) as f64 / 1e6).unwrap_or(1.0);
                let p50_by_sender: serde_json::Map<String, serde_json::Value> = latencies
                    .by_sender
                    .iter_mut()
                    .map(|(from, l)| (from.clone(), json!(percentile(l, 0.5))))
                    .collect();
                emit(json!({"event":"bench","node":args.name,"sent":sent,"delivered":delivered,
                            "secs":secs,"p50_us":percentile(&mut latencies.all, 0.5),
                            "p99_us":percentile(&mut latencies.all, 0.99),
                            "p50_us_by_sender":p50_by_sender,
                            "received":tally.received,"gaps":tally.gaps}));
            }
            _ = &mut eof_rx => break,
            _ = &mut shutdown => break,
            _ = term.recv() => break,
        }
    }
    gcs.shutdown().await;
}

/// Delivery latencies in microseconds: all of them, and per sender (whose messages take
/// different numbers of hops: the sequencer's one, the others' three).
#[derive(Default)]
struct Latencies {
    all: Vec<u32>,
    by_sender: std::collections::BTreeMap<String, Vec<u32>>,
}

impl Latencies {
    fn record(&mut self, from: &NodeId, us: u64) {
        let us = us.min(u32::MAX as u64) as u32;
        self.all.push(us);
        self.by_sender.entry(from.to_string()).or_default().push(us);
    }
}

/// The `q` quantile of `l` (sorts it), 0 when empty.
fn percentile(l: &mut [u32], q: f64) -> u32 {
    l.sort_unstable();
    l.get(((l.len() as f64 - 1.0) * q).round().max(0.0) as usize)
        .copied()
        .unwrap_or(0)
}

/// Per sender: messages received and counter gaps (see the module docs).
#[derive(Default)]
struct Tally {
    received: std::collections::BTreeMap<String, u64>,
    next: std::collections::BTreeMap<String, u64>,
    gaps: u64,
    /// See `Args::plant_loss`.
    plant_loss: bool,
    seen: u64,
}

impl Tally {
    fn count(&mut self, from: &NodeId, payload: &[u8]) {
        self.seen += 1;
        if self.plant_loss && self.seen == 1000 {
            return;
        }
        let k = payload
            .get(8..16)
            .and_then(|b| b.try_into().ok())
            .map_or(u64::MAX, u64::from_le_bytes);
        let next = self.next.entry(from.to_string()).or_insert(0);
        if k != *next {
            self.gaps += 1;
        }
        *next = k.saturating_add(1);
        *self.received.entry(from.to_string()).or_insert(0) += 1;
    }
}
