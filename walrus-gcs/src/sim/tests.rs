//! The simulator's own runs: seed sweeps, large clusters, replay, and the planted bug.

use super::*;

/// Runs `seeds`, or only the one in `WALRUS_SIM_SEED`, and fails with the seed and trace.
fn sweep(seeds: std::ops::Range<u64>, make: impl Fn(u64) -> SimConfig) {
    let only: Option<u64> = std::env::var("WALRUS_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let seeds: Vec<u64> = match only {
        Some(s) if seeds.contains(&s) => vec![s],
        Some(_) => return,
        None => seeds.collect(),
    };
    let mut failures = Vec::new();
    for seed in seeds {
        let cfg = make(seed);
        let r = run(&cfg);
        if !r.violations.is_empty() {
            failures.push(r.describe());
            if failures.len() >= 3 {
                break;
            }
            continue;
        }
        assert!(
            r.partitions >= 5 && r.crashes >= 2 && r.virtual_seconds >= 60.0,
            "seed {seed}: too few faults: {} partitions, {} crashes, {} s",
            r.partitions,
            r.crashes,
            r.virtual_seconds
        );
        assert!(
            r.messages > 0 && r.deliveries > 0,
            "seed {seed}: no traffic"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// 300 seeds of 3–7 nodes, split in three so the test harness uses both cores.
#[test]
fn seeds_000_to_100() {
    sweep(0..100, SimConfig::standard);
}

#[test]
fn seeds_100_to_200() {
    sweep(100..200, SimConfig::standard);
}

#[test]
fn seeds_200_to_300() {
    sweep(200..300, SimConfig::standard);
}

#[test]
fn large_clusters_of_32_and_33_nodes() {
    sweep(1_000_000..1_000_002, |seed| SimConfig {
        nodes: 32 + (seed % 2) as usize,
        ..SimConfig::standard(seed)
    });
}

#[test]
fn a_seed_replays_exactly() {
    let a = run(&SimConfig::standard(7));
    let b = run(&SimConfig::standard(7));
    assert_eq!(a.trace, b.trace);
    assert_eq!(
        (a.messages, a.deliveries, a.views),
        (b.messages, b.deliveries, b.views)
    );
}

/// Trap: installing a view without delivering the old view's cut (skipping the flush)
/// must be reported (the checkers can fail).
#[test]
fn planted_bug_skip_flush_is_caught() {
    let mut caught = Vec::new();
    for seed in 0..10 {
        let mut cfg = SimConfig::standard(seed);
        cfg.bugs.skip_flush = true;
        let r = run(&cfg);
        caught.extend(r.violations);
    }
    assert!(
        caught.iter().any(|v| v.starts_with("virtual synchrony")),
        "skipping the flush went unnoticed: {caught:?}"
    );
}
