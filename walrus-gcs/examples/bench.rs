//! Throughput and latency of Agreed multicast over QUIC on loopback, one OS process per
//! node (this binary re-runs itself as each node), every node sending at full speed.
//!
//! ```text
//! cargo run --release -p walrus-gcs --example bench -- --nodes 3 --size 1024 --seconds 10 \
//!     [--kill-after S] [--rate MSGS_PER_SEC_PER_NODE]
//! ```
//! Prints one JSON line:
//! `{"nodes":3,"size":1024,"valid":true,"msgs_per_sec":..,"mb_per_sec":..,"p50_us":..,"p99_us":..}`
//! (plus `"view_change_ms"` with `--kill-after`). `msgs_per_sec` is the number of distinct
//! messages delivered per second at a node, averaged over the nodes that ran to the end;
//! `p50_us` is the median of the nodes' medians and `p99_us` the largest of their 99th
//! percentiles, from the send time to delivery at each receiver (sender included).
//! `steal_ms` is the processor time the hypervisor took from this machine during the run
//! (a noisy neighbour shows there). `p50_us_by_route` has the median of each sender ->
//! receiver pair: the sequencer's messages take one network hop to the others, everyone
//! else's three (PROTOCOL.md, "Hops"), which is where light-load latency goes.
//!
//! **A run is valid only if the group stayed whole and lost nothing**: no session was
//! disconnected, no node installed a view without another (but the one `--kill-after`
//! kills), every node reported, and every surviving node received every message of every
//! surviving sender, each sender's in order (and the same number of the killed node's).
//! Otherwise the line says `"valid":false` with `"reason"`, and the benchmark exits with
//! status 1: its figures describe a broken group, not a speed.
//!
//! Worker processes are stopped and reaped on every exit path (a guard kills each; each
//! worker also stops when its standard input, a pipe from this process, ends, so a killed
//! benchmark leaves none behind), and the directory of certificates is removed as soon
//! as every worker has loaded them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node;

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use walrus_gcs::transport::certs;
use walrus_testkit::ChildGuard;

#[derive(Parser, Debug)]
struct Args {
    /// Number of nodes (processes).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Payload size in bytes (at least 16: a timestamp and a counter).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Kill (SIGKILL) the last node this many seconds after sending starts and report
    /// how long the others take to install a view without it.
    #[arg(long)]
    kill_after: Option<f64>,
    /// Messages per second per node (0 = full speed).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Override the core's `max_pending` on every node (default: the LAN profile's).
    #[arg(long)]
    max_pending: Option<usize>,
    /// Override the core's `max_pending_bytes` on every node.
    #[arg(long)]
    max_pending_bytes: Option<usize>,
    /// Where each node's protocol runs: `own` (a thread of its own, the default) or
    /// `caller` (the node process's runtime, `WALRUS_BENCH_THREADS` workers).
    #[arg(long, default_value = "own", value_parser = ["own", "caller"])]
    gcs_thread: String,
    /// Override the core's `group_window` (messages) on every node.
    #[arg(long)]
    group_window: Option<usize>,
    /// Override the core's `group_window_bytes` on every node.
    #[arg(long)]
    group_window_bytes: Option<usize>,
    /// Override the core's `session_queue_limit` on every node (a small one plants a
    /// slow reader: the run must come out invalid).
    #[arg(long)]
    session_queue_limit: Option<usize>,
    /// Planted fault: the first node acts as if one message was lost (the run must come
    /// out invalid).
    #[arg(long, hide = true)]
    plant_loss: bool,
    /// Seconds the benchmark waits for its reports after the sending time.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Run as one node (internal: the benchmark starts itself this way).
    #[arg(long, hide = true)]
    worker: bool,
    /// The node's own arguments (with --worker).
    #[arg(last = true, hide = true)]
    rest: Vec<String>,
}

/// Worker threads per node process (`WALRUS_BENCH_THREADS`, default 2).
fn threads() -> usize {
    std::env::var("WALRUS_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

fn main() {
    let args = Args::parse();
    if args.worker {
        let mut argv = vec!["gcs-node".to_string()];
        argv.extend(args.rest);
        let node_args = node::Args::parse_from(argv);
        // Worker threads per node process: `WALRUS_BENCH_THREADS` (1 = current-thread
        // runtime), default 2 like tokio's default on these 2-core machines.
        let rt = if threads() <= 1 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads())
                .enable_all()
                .build()
        }
        .expect("tokio runtime");
        rt.block_on(node::run(node_args));
        return;
    }
    let dir = std::env::temp_dir().join(format!("walrus-bench-{}", std::process::id()));
    let out = run(&args, &dir);
    // The workers are gone (their guards dropped inside `run`): remove what they read.
    let _ = std::fs::remove_dir_all(&dir);
    println!("{out}");
    if out["valid"] != json!(true) {
        std::process::exit(1);
    }
}

/// Why the run does not count, if it does not (see the module docs).
struct Verdict {
    problems: Vec<String>,
}

impl Verdict {
    fn fail(&mut self, why: String) {
        if !self.problems.contains(&why) {
            self.problems.push(why);
        }
    }
}

/// Starts the workers, collects their lines, judges the run and returns its JSON line.
/// Every worker is killed and reaped when this returns, whichever way.
fn run(args: &Args, dir: &std::path::Path) -> Value {
    let _ = std::fs::remove_dir_all(dir);
    certs::write_new_ca(dir).expect("CA");
    let names: Vec<String> = (0..args.nodes).map(|i| format!("n{i}")).collect();
    let ports: Vec<u16> = names
        .iter()
        .map(|_| {
            std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let exe = std::env::current_exe().expect("own path");
    let (tx, rx) = mpsc::channel::<(usize, Value)>();
    let mut children = Vec::new();
    for name in &names {
        certs::write_node_cert(dir, name).expect("node certificate");
    }
    for (i, name) in names.iter().enumerate() {
        let mut cmd = Command::new(&exe);
        cmd.arg("--worker").arg("--");
        cmd.args(["--name", name])
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", ports[i]))
            .arg("--certs")
            .arg(dir)
            .arg("--bench-secs")
            .arg(args.seconds.to_string())
            .arg("--size")
            .arg(args.size.to_string())
            .arg("--rate")
            .arg(args.rate.to_string())
            .arg("--exit-on-stdin-eof")
            .arg("--gcs-thread")
            .arg(&args.gcs_thread);
        if args.plant_loss && i == 0 {
            cmd.arg("--plant-loss");
        }
        if let Some(n) = args.max_pending {
            cmd.arg("--max-pending").arg(n.to_string());
        }
        if let Some(n) = args.max_pending_bytes {
            cmd.arg("--max-pending-bytes").arg(n.to_string());
        }
        for (flag, value) in [
            ("--session-queue-limit", args.session_queue_limit),
            ("--group-window", args.group_window),
            ("--group-window-bytes", args.group_window_bytes),
        ] {
            if let Some(n) = value {
                cmd.arg(flag).arg(n.to_string());
            }
        }
        for (j, peer) in names.iter().enumerate() {
            if j != i {
                cmd.arg("--peer")
                    .arg(format!("{peer}=127.0.0.1:{}", ports[j]));
            }
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn node");
        let out = child.stdout.take().expect("stdout");
        node::forward_json_lines(out, i, tx.clone());
        children.push(Some(ChildGuard::new(format!("node {i}"), child)));
    }
    drop(tx);

    let mut verdict = Verdict {
        problems: Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds + args.timeout);
    let victim = args.nodes - 1;
    let mut started_at: Option<Instant> = None;
    let mut steal_at_start: Option<u64> = None;
    let mut killed_us: Option<u64> = None;
    let mut view_change_us: std::collections::BTreeMap<usize, u64> = Default::default();
    let mut reports: std::collections::BTreeMap<usize, Value> = Default::default();
    let mut heard = vec![false; args.nodes];
    let expected_reports = if args.kill_after.is_some() {
        args.nodes - 1
    } else {
        args.nodes
    };
    while reports.len() < expected_reports {
        if let (Some(k), Some(s), None) = (args.kill_after, started_at, killed_us) {
            if s.elapsed().as_secs_f64() >= k {
                if let Some(mut c) = children[victim].take() {
                    killed_us = Some(node::unix_us());
                    c.kill();
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            verdict.fail(format!(
                "timed out with {} of {expected_reports} reports",
                reports.len()
            ));
            break;
        }
        let (i, v) = match rx.recv_timeout(left.min(Duration::from_millis(20))) {
            Ok(x) => x,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                verdict.fail(format!(
                    "every worker stopped with {} of {expected_reports} reports",
                    reports.len()
                ));
                break;
            }
        };
        if std::env::var_os("WALRUS_BENCH_DEBUG").is_some() {
            eprintln!("n{i}: {v}");
        }
        if !heard[i] {
            heard[i] = true;
            // Every worker has read its certificates once it says anything.
            if heard.iter().all(|h| *h) {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        let is_victim = args.kill_after.is_some() && i == victim;
        match v["event"].as_str() {
            Some("membership") if started_at.is_none() => {
                let n = v["members"].as_array().map_or(0, |a| a.len());
                if n >= args.nodes {
                    started_at = Some(Instant::now());
                    steal_at_start = stolen_ms();
                }
            }
            Some("view") if started_at.is_some() && !is_victim => {
                let members = v["members"].as_array().cloned().unwrap_or_default();
                let has = |n: &str| members.iter().any(|m| m == n);
                for (j, name) in names.iter().enumerate() {
                    let may_go = killed_us.is_some() && j == victim;
                    if !has(name) && !may_go {
                        verdict.fail(format!(
                            "{} installed view {} without {name}",
                            names[i],
                            v["view"].as_str().unwrap_or("?")
                        ));
                    }
                }
                if let Some(k) = killed_us {
                    if !has(names[victim].as_str()) {
                        let t = v["t_us"].as_u64().unwrap_or(k);
                        view_change_us.entry(i).or_insert(t.saturating_sub(k));
                    }
                }
            }
            Some("disconnected") if !is_victim => verdict.fail(format!(
                "{}'s session was disconnected ({})",
                names[i],
                v["reason"].as_str().unwrap_or("?")
            )),
            Some("bench") if !is_victim => {
                reports.insert(i, v);
            }
            _ => {}
        }
    }
    let steal = steal_at_start
        .zip(stolen_ms())
        .map(|(a, b)| b.saturating_sub(a));
    judge_deliveries(args, &names, &reports, &mut verdict);
    drop(children);
    let reports: Vec<Value> = reports.into_values().collect();
    let rates: Vec<f64> = reports
        .iter()
        .map(|r| r["delivered"].as_f64().unwrap_or(0.0) / r["secs"].as_f64().unwrap_or(1.0))
        .collect();
    let msgs_per_sec = rates.iter().fold(0.0, |a, r| a + r) / rates.len().max(1) as f64;
    let mut p50s: Vec<u64> = reports
        .iter()
        .map(|r| r["p50_us"].as_u64().unwrap_or(0))
        .collect();
    p50s.sort_unstable();
    let p50 = p50s.get(p50s.len() / 2).copied().unwrap_or(0);
    let p99 = reports
        .iter()
        .map(|r| r["p99_us"].as_u64().unwrap_or(0))
        .max()
        .unwrap_or(0);
    let mut out = json!({
        "nodes": args.nodes,
        "size": args.size,
        "valid": verdict.problems.is_empty(),
        "msgs_per_sec": msgs_per_sec.round(),
        "mb_per_sec": (msgs_per_sec * args.size as f64 / 1e6 * 100.0).round() / 100.0,
        "p50_us": p50,
        "p99_us": p99,
    });
    if !verdict.problems.is_empty() {
        out["reason"] = json!(verdict.problems.join("; "));
    }
    if args.rate > 0.0 {
        out["rate_per_node"] = json!(args.rate);
    }
    // Each route's median (sender -> receiver): a sequencer's messages take one hop to
    // the others, the others' three (PROTOCOL.md, "Hops").
    let mut routes = serde_json::Map::new();
    for r in &reports {
        let to = r["node"].as_str().unwrap_or("?");
        if let Some(by) = r["p50_us_by_sender"].as_object() {
            for (from, p50) in by {
                routes.insert(format!("{from}->{to}"), p50.clone());
            }
        }
    }
    out["p50_us_by_route"] = Value::Object(routes);
    out["gcs_thread"] = json!(args.gcs_thread);
    if let Some(ms) = steal {
        out["steal_ms"] = json!(ms);
    }
    if let Some(n) = args.max_pending {
        out["max_pending"] = json!(n);
    }
    for (key, value) in [
        ("session_queue_limit", args.session_queue_limit),
        ("group_window", args.group_window),
        ("group_window_bytes", args.group_window_bytes),
    ] {
        if let Some(n) = value {
            out[key] = json!(n);
        }
    }
    if args.kill_after.is_some() {
        // The view change is done when the last survivor has installed it.
        out["view_change_ms"] = if view_change_us.len() >= args.nodes - 1 {
            json!(view_change_us.values().max().copied().unwrap_or(0) / 1000)
        } else {
            Value::Null
        };
    }
    out
}

/// CPU time this (virtual) machine's processors were ready to run but the hypervisor ran
/// something else (the `steal` column of `/proc/stat`, all processors together), in
/// milliseconds; `None` where it cannot be read. A run that lost much of it measured the
/// host's other tenants as much as us.
fn stolen_ms() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: u64 = stat
        .lines()
        .next()?
        .split_whitespace()
        .nth(8)?
        .parse()
        .ok()?;
    // `/proc/stat` counts in USER_HZ, 100 a second on Linux.
    Some(ticks * 10)
}

/// Every surviving node must have received every message of every surviving sender, in
/// order, and the same number of the killed node's messages as every other survivor.
fn judge_deliveries(
    args: &Args,
    names: &[String],
    reports: &std::collections::BTreeMap<usize, Value>,
    verdict: &mut Verdict,
) {
    let victim = args.kill_after.map(|_| args.nodes - 1);
    let mut victim_counts = std::collections::BTreeSet::new();
    for (i, r) in reports {
        let gaps = r["gaps"].as_u64().unwrap_or(u64::MAX);
        if gaps != 0 {
            verdict.fail(format!(
                "{} saw {gaps} gaps in senders' counters (lost or reordered messages)",
                names[*i]
            ));
        }
        for (j, s) in reports {
            let sent = s["sent"].as_u64().unwrap_or(0);
            let got = r["received"][names[*j].as_str()].as_u64().unwrap_or(0);
            if got != sent {
                verdict.fail(format!(
                    "{} received {got} of the {sent} messages {} sent",
                    names[*i], names[*j]
                ));
            }
        }
        if let Some(v) = victim {
            victim_counts.insert(r["received"][names[v].as_str()].as_u64().unwrap_or(0));
        }
    }
    if victim_counts.len() > 1 {
        verdict.fail(format!(
            "survivors received different numbers of the killed node's messages: {victim_counts:?}"
        ));
    }
}
