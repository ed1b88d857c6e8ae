//! What one Reporter costs: CPU time and memory per hour at a 1 s interval.
//!
//! Starts a real nginx on a loopback port (or probes it, `--target probe`), runs the
//! gatherer for `--seconds N` (default 20) at `--interval-ms M` (default 1000), measures
//! this process's CPU time (sum of every thread's on-CPU nanoseconds from
//! `/proc/self/task/*/schedstat`, plus user+system ticks from `/proc/self/stat` as a
//! cross-check) and memory (`VmRSS`, `VmHWM`), scales to one hour and prints one JSON line.
//! It also shows what answering the readings cost the web server (`web_server_cpu_ms`:
//! nginx's whole process group over the run, status requests included).
//! The anchor, measured in the same run for the same time: the same runtime with a 1 s
//! ticker that gathers nothing. Target: under 1% of one core.
//!
//! ```sh
//! cargo run --release -p walrus-actors --example reporter_cost -- --seconds 20
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};
use walrus_actors::model::{ReportBody, Round, ServerName};
use walrus_actors::reporter::{Gatherer, ReporterConfig, WebSource};
use walrus_testkit::actors::reporter::{Kind, TempDir, WebServer};

/// Nanoseconds this process has run on a CPU, all threads (live ones: our threads never
/// exit during the measurement).
fn cpu_ns() -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path().join("schedstat");
        if let Ok(text) = std::fs::read_to_string(path) {
            total += text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

/// On-CPU nanoseconds of every process in process group `pgrp` (the web server's master
/// and workers), so the cost of answering the status requests is shown too.
fn group_cpu_ns(pgrp: u32) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let path = entry.path();
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        // After the command name: state, ppid, pgrp.
        let group = stat[close + 2..].split_whitespace().nth(2);
        if group.and_then(|g| g.parse::<u32>().ok()) != Some(pgrp) {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(path.join("task")) else {
            continue;
        };
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
                total += text
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    total
}

/// utime + stime in clock ticks (USER_HZ, 100 on Linux).
fn cpu_ticks() -> u64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The command name is in parentheses and may hold spaces: count after the last ')'.
    let after = &text[text.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn status_kib(key: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn target() -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--target")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| "nginx".to_owned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let seconds = arg("--seconds", 20);
    let interval = Duration::from_millis(arg("--interval-ms", 1000));
    let target = target();
    let dir = TempDir::new("reporter-cost");
    let server = WebServer::start(Kind::Nginx, dir.path());
    let web = match target.as_str() {
        "probe" => WebSource::Probe {
            url: server.page_url(),
            expect_status: Some(200),
            body_contains: Some("walrus-ok".into()),
            max_workers: 128,
        },
        _ => WebSource::Nginx {
            url: server.status_url(),
            max_workers: 128,
        },
    };
    let mut config = ReporterConfig::new(ServerName::from("w1"), web);
    config.interval = interval;
    config.bypass_file = dir.path().join("bypass");
    let run = Duration::from_secs(seconds);

    // Anchor: the same runtime ticking at the same interval, gathering nothing.
    let (a_ns, a_ticks) = (cpu_ns(), cpu_ticks());
    let started = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    while started.elapsed() < run {
        ticker.tick().await;
    }
    let anchor_ns = cpu_ns() - a_ns;
    let anchor_ticks = cpu_ticks() - a_ticks;
    let anchor_wall = started.elapsed();

    // The Reporter's gatherer.
    let (gatherer, handle) =
        Gatherer::with_reader(config.clone(), config.web_reader().unwrap()).unwrap();
    let rss_before = status_kib("VmRSS:");
    let pgrp = server.process_group().unwrap();
    let server_before = group_cpu_ns(pgrp);
    let (g_ns, g_ticks) = (cpu_ns(), cpu_ticks());
    let started = Instant::now();
    let task = gatherer.spawn(tokio::time::sleep(run));
    task.await.unwrap();
    let wall = started.elapsed();
    let used_ns = cpu_ns() - g_ns;
    let used_ticks = cpu_ticks() - g_ticks;
    let server_ns = group_cpu_ns(pgrp) - server_before;
    let gatherings = handle.snapshot().gatherings;
    let last = handle.report(Round(1));
    assert!(
        matches!(last.body, ReportBody::Stats(_)),
        "the gatherer did not produce statistics: {last:?}"
    );

    let per_hour = |ns: u64, over: Duration| ns as f64 / over.as_secs_f64() * 3600.0 / 1e6;
    let cpu_ms_per_hour = per_hour(used_ns, wall);
    let anchor_ms_per_hour = per_hour(anchor_ns, anchor_wall);
    println!(
        "{{\"bench\":\"reporter_cost\",\"target\":\"{target}\",\"interval_ms\":{},\"run_s\":{:.1},\"gatherings\":{gatherings},\"cpu_ms\":{:.3},\"cpu_ticks\":{used_ticks},\"cpu_ms_per_hour\":{:.1},\"core_fraction\":{:.6},\"anchor_cpu_ms\":{:.3},\"anchor_cpu_ticks\":{anchor_ticks},\"anchor_cpu_ms_per_hour\":{:.1},\"web_server_cpu_ms\":{:.3},\"rss_kib\":{},\"rss_growth_kib\":{},\"hwm_kib\":{},\"target_core_fraction\":0.01}}",
        interval.as_millis(),
        wall.as_secs_f64(),
        used_ns as f64 / 1e6,
        cpu_ms_per_hour,
        cpu_ms_per_hour / 3_600_000.0,
        anchor_ns as f64 / 1e6,
        anchor_ms_per_hour,
        server_ns as f64 / 1e6,
        status_kib("VmRSS:"),
        status_kib("VmRSS:").saturating_sub(rss_before),
        status_kib("VmHWM:"),
    );
}
