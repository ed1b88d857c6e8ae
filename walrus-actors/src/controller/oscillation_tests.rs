//! Oscillation tests (paper §6.2): a simulated feedback loop in which a cluster's load
//! rises with the traffic of the areas assigned to it. Starting from a skewed state the
//! assignment must settle in a bounded number of rounds, with a bounded number of moves
//! (DNS changes: at most two per area), and then stop changing. The checker [`settles`]
//! is shown to catch each planted fault:
//! - without the one-area-per-cluster rule of phase 4 the herd of areas moves together:
//!   the ping-pong damping stops it eventually, but only after far more moves than the
//!   budget; with neither guard it never settles;
//! - without the return-home hysteresis an area loops between home and away;
//! - without ping-pong damping a heavy area (one bringing more load than the margin)
//!   bounces between clusters forever.

use crate::controller::assign::{assign_with, History, Input, Observation, Params, Rules};
use crate::model::{AreaAnswer, AreaName, AreaSpec, ClusterName, ClusterSpec, Round, Topology};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// A site whose cluster loads follow the areas assigned to them.
struct Sim {
    topology: Topology,
    /// Load of each cluster from traffic that is not ours to move.
    base: BTreeMap<ClusterName, f64>,
    /// Each area's traffic, as load it adds to the cluster it is assigned to.
    weight: BTreeMap<AreaName, f64>,
    /// Clusters whose servers do not answer.
    dead: Vec<ClusterName>,
}

/// Cluster `cN` has 2 servers; area `aN` has home `cN`.
fn sim(base: &[f64], weight: &[f64]) -> Sim {
    let mut topology = Topology {
        areas: BTreeMap::new(),
        clusters: BTreeMap::new(),
    };
    let mut b = BTreeMap::new();
    let mut w = BTreeMap::new();
    for (i, load) in base.iter().enumerate() {
        let c = ClusterName(format!("c{}", i + 1));
        let servers = (1..=2u8)
            .map(|s| {
                (
                    format!("c{}-s{s}", i + 1).as_str().into(),
                    vec![IpAddr::V4(Ipv4Addr::new(10, i as u8, 0, s))],
                )
            })
            .collect();
        topology.clusters.insert(c.clone(), ClusterSpec { servers });
        b.insert(c, *load);
    }
    for (i, load) in weight.iter().enumerate() {
        let a = AreaName(format!("a{}", i + 1));
        topology.areas.insert(
            a.clone(),
            AreaSpec {
                home_cluster: ClusterName(format!("c{}", (i % base.len()) + 1)),
            },
        );
        w.insert(a, *load);
    }
    Sim {
        topology,
        base: b,
        weight: w,
        dead: Vec::new(),
    }
}

/// The round trace: per round, how many areas changed cluster.
type Trace = Vec<usize>;

/// Runs `rounds` rounds from `start` (area → cluster) and returns how many areas moved
/// in each round.
fn run(
    s: &Sim,
    start: &BTreeMap<AreaName, ClusterName>,
    params: &Params,
    rules: Rules,
    rounds: u64,
) -> Trace {
    let mut state = State::new(s, start);
    state.run(s, params, rules, rounds)
}

/// A running simulation: the answers in force and the assignment's history.
struct State {
    current: BTreeMap<AreaName, AreaAnswer>,
    history: History,
    round: u64,
    t0: Instant,
}

impl State {
    fn new(s: &Sim, start: &BTreeMap<AreaName, ClusterName>) -> Self {
        let current = start
            .iter()
            .map(|(a, c)| {
                let records = s.topology.clusters[c]
                    .servers
                    .values()
                    .flatten()
                    .copied()
                    .collect();
                (
                    a.clone(),
                    AreaAnswer {
                        cluster: c.clone(),
                        records,
                    },
                )
            })
            .collect();
        Self {
            current,
            history: History::default(),
            round: 0,
            t0: Instant::now(),
        }
    }

    /// Runs `rounds` more rounds, one second apart.
    fn run(&mut self, s: &Sim, params: &Params, rules: Rules, rounds: u64) -> Trace {
        let mut trace = Vec::new();
        for _ in 0..rounds {
            self.round += 1;
            let r = self.round;
            // Feedback: each cluster's servers carry its base plus its areas' traffic.
            let mut load = s.base.clone();
            for (a, ans) in &self.current {
                if let Some(l) = load.get_mut(&ans.cluster) {
                    *l += s.weight[a];
                }
            }
            let observations = s
                .topology
                .clusters
                .iter()
                .flat_map(|(c, spec)| spec.servers.keys().map(move |srv| (srv.clone(), c)))
                .map(|(srv, c)| {
                    if s.dead.contains(c) {
                        (srv, Observation::NoAnswer)
                    } else {
                        (srv, Observation::Load(load[c]))
                    }
                })
                .collect();
            let out = assign_with(
                &Input {
                    topology: &s.topology,
                    observations: &observations,
                    history: &self.history,
                    current: &self.current,
                    params,
                    round: Round(r),
                    now: self.t0 + Duration::from_secs(r),
                    pins: &crate::controller::assign::NO_PINS,
                },
                rules,
            );
            trace.push(out.changes.iter().filter(|c| c.phase != 0).count());
            self.history = out.history;
            self.current = out.answers;
        }
        trace
    }

    fn cluster_of(&self, area: &str) -> &str {
        &self.current[&AreaName::from(area)].cluster.0
    }
}

/// Ok(round of the last move) when nothing moves after `bound` rounds (checked over the
/// rest of the trace) and at most `budget` moves happened in all; Err(why) otherwise.
fn settles(trace: &Trace, bound: usize, budget: usize) -> Result<usize, String> {
    if trace[bound..].iter().any(|&n| n > 0) {
        return Err(format!("still moving after {bound} rounds: {trace:?}"));
    }
    let moves: usize = trace.iter().sum();
    if moves > budget {
        return Err(format!("{moves} moves, budget {budget}: {trace:?}"));
    }
    Ok(trace.iter().rposition(|&n| n > 0).map_or(0, |i| i + 1))
}

/// At most three moves per area (on average) to settle.
fn budget(s: &Sim) -> usize {
    3 * s.topology.areas.len()
}

fn start_all_at(s: &Sim, c: &str) -> BTreeMap<AreaName, ClusterName> {
    s.topology
        .areas
        .keys()
        .map(|a| (a.clone(), c.into()))
        .collect()
}

fn start_home(s: &Sim) -> BTreeMap<AreaName, ClusterName> {
    s.topology
        .areas
        .iter()
        .map(|(a, spec)| (a.clone(), spec.home_cluster.clone()))
        .collect()
}

const NO_LIMIT: Rules = Rules {
    one_per_cluster: false,
    ..Rules::ALL
};
const NO_DAMPING: Rules = Rules {
    ping_pong_damping: false,
    ..Rules::ALL
};
const NEITHER: Rules = Rules {
    one_per_cluster: false,
    ping_pong_damping: false,
    ..Rules::ALL
};

/// Skewed start: three overloaded clusters, one idle newcomer (c4) that every area would
/// like at once.
fn herd() -> Sim {
    // c1..c3 carry 0.6 of foreign load and their own area's 0.15 each plus a second area
    // each; c4 is idle with a light home area.
    sim(
        &[0.6, 0.6, 0.6, 0.0],
        &[0.15, 0.15, 0.15, 0.05, 0.1, 0.1, 0.1],
    )
}

#[test]
fn herd_settles_with_one_move_per_cluster() {
    let s = herd();
    let trace = run(&s, &start_home(&s), &Params::default(), Rules::ALL, 60);
    let last = settles(&trace, 30, budget(&s)).unwrap();
    assert!(last > 0, "the test must start skewed: {trace:?}");
}

#[test]
fn herd_oscillates_without_the_one_per_cluster_rule() {
    let s = herd();
    let trace = run(&s, &start_home(&s), &Params::default(), NO_LIMIT, 60);
    let e = settles(&trace, 30, budget(&s)).unwrap_err();
    assert!(e.contains("budget"), "{e}");
    let trace = run(&s, &start_home(&s), &Params::default(), NEITHER, 60);
    let e = settles(&trace, 30, budget(&s)).unwrap_err();
    assert!(e.contains("still moving"), "{e}");
}

#[test]
fn everyone_on_one_cluster_spreads_out_and_settles() {
    // Four areas whose homes are all overloaded by foreign load (0.85 > threshold), all
    // starting on c1: only phase 4 acts.
    let s = sim(&[0.85, 0.85, 0.85, 0.85], &[0.12, 0.12, 0.12, 0.12]);
    let trace = run(
        &s,
        &start_all_at(&s, "c1"),
        &Params::default(),
        Rules::ALL,
        60,
    );
    settles(&trace, 30, budget(&s)).unwrap();
    assert!(trace[0] > 0, "{trace:?}");
    let trace = run(&s, &start_all_at(&s, "c1"), &Params::default(), NEITHER, 60);
    let e = settles(&trace, 30, budget(&s)).unwrap_err();
    assert!(e.contains("still moving"), "{e}");
}

#[test]
fn a_heavy_area_whose_home_is_down_does_not_ping_pong() {
    // a3's home c3 is down; c1 and c2 are idle; a3 alone brings 0.5 of a cluster's load,
    // more than the margin: in the paper's algorithm it bounces c1 <-> c2 every round.
    let mut s = sim(&[0.0, 0.0, 0.0], &[0.05, 0.05, 0.5]);
    s.dead.push("c3".into());
    let trace = run(&s, &start_home(&s), &Params::default(), Rules::ALL, 60);
    settles(&trace, 20, budget(&s)).unwrap();
    let trace = run(&s, &start_home(&s), &Params::default(), NO_DAMPING, 60);
    let e = settles(&trace, 20, budget(&s)).unwrap_err();
    assert!(e.contains("still moving"), "{e}");
}

/// An area whose own traffic pushes its home cluster over the threshold: it leaves in
/// phase 4, its home falls below threshold, phase 2 brings it back... The hysteresis
/// (return margin doubling on a flap) ends this.
fn self_overloader() -> Sim {
    sim(&[0.5, 0.1], &[0.4, 0.1])
}

#[test]
fn an_area_leaving_its_overloaded_home_does_not_loop_back() {
    let s = self_overloader();
    let trace = run(&s, &start_home(&s), &Params::default(), Rules::ALL, 60);
    let last = settles(&trace, 20, budget(&s)).unwrap();
    assert!(last >= 1, "a1 must leave home at least once: {trace:?}");
}

#[test]
fn without_hysteresis_return_home_loops() {
    let s = self_overloader();
    let params = Params {
        return_margin: 0.0,
        ..Params::default()
    };
    let trace = run(&s, &start_home(&s), &params, NO_DAMPING, 60);
    assert!(settles(&trace, 20, budget(&s)).is_err(), "{trace:?}");
    assert!(
        trace[20..].iter().all(|&n| n == 1),
        "a1 flips every round: {trace:?}"
    );
    // The ping-pong damping is a backstop: it ends the loop too, with more moves.
    let trace = run(&s, &start_home(&s), &params, Rules::ALL, 60);
    settles(&trace, 20, usize::MAX).unwrap();
}

#[test]
fn a_self_overloading_area_is_not_exiled_for_good() {
    // a1 settles away from home; later its traffic drops and the raised return margin
    // decays (half-life 10 min at one round per second): it comes home and stays.
    let mut s = self_overloader();
    let mut state = State::new(&s, &start_home(&s));
    let trace = state.run(&s, &Params::default(), Rules::ALL, 60);
    settles(&trace, 20, budget(&s)).unwrap();
    assert_eq!(state.cluster_of("a1"), "c2");
    s.weight.insert("a1".into(), 0.1);
    let trace = state.run(&s, &Params::default(), Rules::ALL, 1200);
    assert_eq!(state.cluster_of("a1"), "c1", "{trace:?}");
    let moves: usize = trace.iter().sum();
    assert_eq!(moves, 1, "one return home, no flap");
}

#[test]
fn a_persistent_self_overloader_costs_one_round_trip_per_half_life_at_most() {
    let s = self_overloader();
    let mut state = State::new(&s, &start_home(&s));
    state.run(&s, &Params::default(), Rules::ALL, 60);
    let trace = state.run(&s, &Params::default(), Rules::ALL, 3000);
    let moves: usize = trace.iter().sum();
    // 3000 s is five half-lives: at most one return and one departure per half-life.
    // Measured when written: moves at rounds 192/193, 792/793, ... 2592/2593.
    assert!(moves <= 10, "{moves} moves");
    // No two moves of a1 closer than a few minutes apart (no flapping burst).
    let at: Vec<usize> = trace
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, _)| i)
        .collect();
    assert!(
        at.windows(3).all(|w| w[2] - w[0] >= 120),
        "moves at rounds {at:?}"
    );
    // Planted fault: without the decay the area would stay away for good (0 moves), and
    // without hysteresis at all it flips every round (see
    // `without_hysteresis_return_home_loops`).
    let no_decay = Params {
        return_margin_half_life: Duration::ZERO,
        ..Params::default()
    };
    let mut state = State::new(&s, &start_home(&s));
    state.run(&s, &no_decay, Rules::ALL, 60);
    assert_eq!(
        state
            .run(&s, &no_decay, Rules::ALL, 3000)
            .iter()
            .sum::<usize>(),
        0
    );
}

/// A tiny deterministic generator (xorshift64*) for the seeded scenarios below.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [lo, hi).
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next() >> 11) as f64 / (1u64 << 53) as f64)
    }
}

#[test]
fn seeded_skewed_sites_settle_and_fail_without_the_guards() {
    // Random sites, all areas starting on c1. Light areas (each under the margin) must
    // settle within the move budget; heavy ones (up to 0.6 of a cluster each) within 30
    // rounds. Measured when written (40 seeds each): all settle by round 15; without the
    // one-per-cluster rule 9 light sites exceed the budget, with neither guard 16 do; 32
    // heavy sites never settle without the ping-pong damping.
    let mut light_failing = [0usize; 2];
    let mut heavy_failing = 0usize;
    let mut slowest = 0;
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let clusters = 2 + (rng.next() % 5) as usize;
        let areas = clusters + (rng.next() % 6) as usize;
        let base: Vec<f64> = (0..clusters).map(|_| rng.range(0.0, 0.9)).collect();
        let light: Vec<f64> = (0..areas).map(|_| rng.range(0.01, 0.19)).collect();
        let heavy: Vec<f64> = (0..areas).map(|_| rng.range(0.2, 0.6)).collect();

        let s = sim(&base, &light);
        let start = start_all_at(&s, "c1");
        let trace = run(&s, &start, &Params::default(), Rules::ALL, 60);
        match settles(&trace, 30, budget(&s)) {
            Ok(last) => slowest = slowest.max(last),
            Err(e) => panic!("seed {seed}: base {base:?} light {light:?}: {e}"),
        }
        for (i, rules) in [NO_LIMIT, NEITHER].into_iter().enumerate() {
            let trace = run(&s, &start, &Params::default(), rules, 60);
            if settles(&trace, 30, budget(&s)).is_err() {
                light_failing[i] += 1;
            }
        }

        let s = sim(&base, &heavy);
        let trace = run(&s, &start, &Params::default(), Rules::ALL, 60);
        match settles(&trace, 30, usize::MAX) {
            Ok(last) => slowest = slowest.max(last),
            Err(e) => panic!("seed {seed}: base {base:?} heavy {heavy:?}: {e}"),
        }
        let trace = run(&s, &start, &Params::default(), NO_DAMPING, 60);
        if settles(&trace, 30, usize::MAX).is_err() {
            heavy_failing += 1;
        }
    }
    assert!(slowest <= 30);
    assert!(light_failing.iter().all(|&n| n >= 3), "{light_failing:?}");
    assert!(heavy_failing >= 3, "{heavy_failing}");
}
