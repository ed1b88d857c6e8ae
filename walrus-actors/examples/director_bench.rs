//! Director benchmark: one JSON line per measurement.
//!
//! 1. Update-sent → query-sees-it latency at the name server, p50/p99 over N updates
//!    (default 200), for a real BIND 9 (RFC 2136 + TSIG) and for the embedded server
//!    (state file written and fsynced before it serves).
//! 2. Queries per second answered on loopback by the embedded server and by BIND serving
//!    the same zones, measured with `dnsperf` (Debian package `dnsperf`) when installed,
//!    else with a small UDP client of ours; runs alternate between the two servers.
//!
//! `cargo run --release -p walrus-actors --example director_bench [-- UPDATES QPS_SECS RUNS]`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use walrus_actors::director::transport;
use walrus_actors::director::zone::{RecordTtl, WwwRecords};
use walrus_actors::director::NameServer;
use walrus_testkit::actors::director::checks::updater;
use walrus_testkit::actors::director::{need, Authoritative, Embedded, TempDir};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn want(i: u32) -> WwwRecords {
    let a = Ipv4Addr::new(10, 1, (i / 250) as u8, (i % 250 + 1) as u8);
    WwwRecords::from_addrs([a.into()], RecordTtl::DEFAULT)
}

/// Sends N updates one after another; for each, the time from sending the update until a
/// query to the server returns the new address.
async fn update_latency<N: NameServer>(
    ns: &N,
    server: SocketAddr,
    www: &Name,
    n: u32,
) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let w = want(i);
        let expect = *w.v4.first().unwrap();
        let t0 = Instant::now();
        ns.replace(&w, &walrus_actors::director::Fence::NONE)
            .await
            .unwrap();
        loop {
            let m = transport::query(server, www.clone(), RecordType::A, Duration::from_secs(2))
                .await
                .unwrap();
            let seen = m.answers().iter().any(|r| match r.data() {
                hickory_proto::rr::RData::A(a) => a.0 == expect,
                _ => false,
            });
            if seen {
                break;
            }
        }
        out.push(t0.elapsed());
    }
    out.sort();
    out
}

fn latency_line(server: &str, v: &[Duration]) {
    println!(
        "{{\"bench\":\"director_update_to_visible\",\"server\":\"{server}\",\"updates\":{},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3}}}",
        v.len(),
        percentile(v, 0.5),
        percentile(v, 0.99),
        v.last().unwrap().as_secs_f64() * 1e3
    );
}

const QUERIES: &[(&str, &str)] = &[
    ("www.area-1.example.com", "A"),
    ("www.area-1.example.com", "AAAA"),
    ("www.example.com", "CNAME"),
    ("area-1.example.com", "SOA"),
];

fn dnsperf_qps(addr: SocketAddr, dir: &Path, secs: u32) -> f64 {
    let file = dir.join("queries.txt");
    let text: String = QUERIES.iter().map(|(n, t)| format!("{n} {t}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let out = Command::new(need("dnsperf", "dnsperf"))
        .args(["-s", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .arg("-d")
        .arg(&file)
        .args(["-c", "10", "-q", "100", "-l", &secs.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Queries per second:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("dnsperf output not understood:\n{text}"))
}

/// Fallback load: 8 tasks, each one UDP socket, one outstanding query at a time.
async fn our_qps(addr: SocketAddr, secs: u32) -> f64 {
    let end = Instant::now() + Duration::from_secs(secs as u64);
    let mut tasks = vec![];
    for t in 0..8u16 {
        tasks.push(tokio::spawn(async move {
            let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            sock.connect(addr).await.unwrap();
            let mut buf = [0u8; 1500];
            let mut n = 0u64;
            let mut id = t.wrapping_mul(4099);
            while Instant::now() < end {
                let (name, ty) = QUERIES[n as usize % QUERIES.len()];
                let mut m = Message::new();
                id = id.wrapping_add(1);
                m.set_id(id);
                let ty = if ty == "A" {
                    RecordType::A
                } else {
                    RecordType::SOA
                };
                m.add_query(Query::query(Name::from_ascii(name).unwrap(), ty));
                sock.send(&m.to_vec().unwrap()).await.unwrap();
                if tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf))
                    .await
                    .is_ok()
                {
                    n += 1;
                }
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / secs as f64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let updates = args.first().copied().unwrap_or(200);
    let qps_secs = args.get(1).copied().unwrap_or(5);
    let runs = args.get(2).copied().unwrap_or(2);

    // BIND, set up by our own bind_config output.
    let bind = tokio::task::block_in_place(|| Authoritative::bind(1, "walrus-area1"));
    let rfc = updater(&bind, "a1", bind.key.clone());
    let www = bind.layout.area_www();

    // Embedded, same layout, state on disk.
    let dir = TempDir::new("bench-emb");
    let emb = Embedded::start(
        1,
        &dir.path().join("state.json"),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await;
    let emb_addr = emb.addr;

    let v = update_latency(&rfc, bind.addr, &www, updates).await;
    latency_line("bind", &v);
    let v = update_latency(&emb.server, emb_addr, &www, updates).await;
    latency_line("embedded", &v);

    let have_dnsperf = Path::new("/usr/bin/dnsperf").exists();
    let tool = if have_dnsperf {
        "dnsperf -c 10 -q 100"
    } else {
        "walrus-udp-client x8"
    };
    for run in 1..=runs {
        for (name, addr) in [("bind", bind.addr), ("embedded", emb_addr)] {
            let qps = if have_dnsperf {
                let d = dir.path().to_owned();
                tokio::task::block_in_place(|| dnsperf_qps(addr, &d, qps_secs))
            } else {
                our_qps(addr, qps_secs).await
            };
            println!(
                "{{\"bench\":\"director_qps\",\"server\":\"{name}\",\"run\":{run},\"secs\":{qps_secs},\"tool\":\"{tool}\",\"qps\":{qps:.0}}}"
            );
        }
    }
    drop(emb);
}
