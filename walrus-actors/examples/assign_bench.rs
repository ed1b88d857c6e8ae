//! Time of one round of the assignment (`controller::assign::assign`) for 10, 100 and
//! 1,000 areas and clusters with 20 servers each.
//!
//! `cargo run --release -p walrus-actors --example assign_bench`
//!
//! Prints one JSON line per size:
//! `{"areas":..,"clusters":..,"servers":..,"rounds":..,"micros_p50":..,"micros_p99":..,
//!   "anchor_micros_p50":..}`. Each round feeds the previous round's answers and history
//! back, with loads that drift (seeded), so phases 2–4 and record-set changes all occur.
//! The anchor is the time to clone the round's observations map in the same run: a
//! machine-speed yardstick to compare runs on different machines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};
use walrus_actors::controller::assign::{assign, History, Input, Observation, Params};
use walrus_actors::model::{
    AreaAnswer, AreaName, AreaSpec, ClusterName, ClusterSpec, Round, ServerName, Topology,
};

const SERVERS_PER_CLUSTER: usize = 20;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn topology(n: usize) -> Topology {
    let mut t = Topology {
        areas: BTreeMap::new(),
        clusters: BTreeMap::new(),
    };
    for c in 0..n {
        let cluster = ClusterName(format!("c{c:04}"));
        let servers = (0..SERVERS_PER_CLUSTER)
            .map(|s| {
                let addr = IpAddr::V4(Ipv4Addr::new(10, (c >> 8) as u8, c as u8, s as u8 + 1));
                (ServerName(format!("c{c:04}-s{s:02}")), vec![addr])
            })
            .collect();
        t.clusters.insert(cluster.clone(), ClusterSpec { servers });
        t.areas.insert(
            AreaName(format!("a{c:04}")),
            AreaSpec {
                home_cluster: cluster,
            },
        );
    }
    t
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn main() {
    let params = Params::default();
    for (n, rounds) in [(10usize, 2000u64), (100, 500), (1000, 60)] {
        let t = topology(n);
        let servers: Vec<ServerName> = t
            .clusters
            .values()
            .flat_map(|c| c.servers.keys().cloned())
            .collect();
        let mut rng = Rng(0x5EED ^ n as u64);
        // Each server's load drifts around a per-cluster level; some clusters run hot.
        let mut level: Vec<f64> = (0..servers.len()).map(|_| rng.unit() * 1.1).collect();
        let mut history = History::default();
        let mut current: BTreeMap<AreaName, AreaAnswer> = BTreeMap::new();
        let mut times = Vec::with_capacity(rounds as usize);
        let mut anchors = Vec::with_capacity(rounds as usize);
        let t0 = Instant::now();
        for r in 1..=rounds {
            let mut observations = BTreeMap::new();
            for (i, s) in servers.iter().enumerate() {
                level[i] = (level[i] + (rng.unit() - 0.5) * 0.1).clamp(0.0, 1.5);
                let o = match rng.next() % 200 {
                    0 => Observation::NoAnswer,
                    1 => Observation::TempFail,
                    2 => Observation::Bypass { reason: "b".into() },
                    _ => Observation::Load(level[i]),
                };
                observations.insert(s.clone(), o);
            }
            let a = Instant::now();
            let copy = std::hint::black_box(observations.clone());
            anchors.push(a.elapsed());
            drop(copy);
            let start = Instant::now();
            let out = assign(&Input {
                topology: &t,
                observations: &observations,
                history: &history,
                current: &current,
                params: &params,
                round: Round(r),
                now: t0 + Duration::from_secs(r),
                pins: &walrus_actors::controller::assign::NO_PINS,
            });
            times.push(start.elapsed());
            history = out.history;
            current = out.answers;
        }
        times.sort();
        anchors.sort();
        println!(
            "{{\"areas\":{n},\"clusters\":{n},\"servers\":{},\"rounds\":{rounds},\
             \"micros_p50\":{:.1},\"micros_p99\":{:.1},\"anchor_micros_p50\":{:.1}}}",
            servers.len(),
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            percentile(&anchors, 0.5),
        );
    }
}
