//! The simulator's own runs: seed sweeps and the planted-bug test.

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
        let r = run(&make(seed));
        assert!(
            r.partitions >= 5 && r.crashes >= 1,
            "seed {seed}: too few faults: {r:?}"
        );
        if !r.violations.is_empty() {
            failures.push(r.describe());
            if failures.len() >= 3 {
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn seeds_000_to_100() {
    sweep(0..100, SimConfig::standard);
}
