//! The WAN lab's short form (issue 18; the long form is `walrus-lab wan`, see
//! `lab/src/wan.rs` and docs/wan): three areas' real `walrus-node` processes (a Controller,
//! a Director + Reporter + Replicator, a Reporter + Replicator in each) across emulated
//! wide-area links — one-way 20, 80 and 150 ms, ±10 ms jitter, 1 % loss each way —
//! with `gcs_profile = "wan"` and its default timing, 90 s measured, with a 10 MB content
//! deploy from area 1 to the five replicas in the middle. Asserts only what cannot be
//! noise:
//! - no live web server counted dead by the master and no live node missing from a
//!   Controller's view (the old 400 ms report timeout failed this: 2.5 % of rounds ran to
//!   the timeout at 1 % loss; docs/wan);
//! - rounds keep running (at least half the configured rate);
//! - no area moved off its healthy home cluster because its replicas were still pulling
//!   the deploy (with `generation_grace = "0s"`, the rule before issue 18, this fails).
//!
//! The checkers are shown to catch planted records in `lab::wan::tests`. Needs root,
//! iproute2, nftables and nginx, and the `walrus-node` binary (built if missing).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use walrus_lab::runtime::ensure_walrus_node;
use walrus_lab::{netns, wan};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_one_percent_loss_no_live_server_or_node_is_declared_dead_and_rounds_run() {
    for (program, package) in [("ip", "iproute2"), ("nft", "nftables"), ("nginx", "nginx")] {
        netns::require(program, package).unwrap();
    }
    let exe = Path::new(env!("CARGO_BIN_EXE_walrus-lab"));
    ensure_walrus_node(exe).unwrap();
    let work = std::env::temp_dir().join(format!("walrus-wan-ci-{}", std::process::id()));
    let mut spec = wan::WanSpec::new(&work, "ci", 0.01, 90);
    spec.deploy_mb = 10;
    spec.deploy_files = 200;
    spec.deploy_at_s = 20;
    spec.event_every = 0;
    if let Ok(g) = std::env::var("WALRUS_WAN_GRACE") {
        // For showing the check catches the old rule: WALRUS_WAN_GRACE=0s.
        spec.generation_grace = Some(g);
    }
    let result = wan::run_wan(&spec, exe, "ci")
        .await
        .expect("the WAN lab runs (as root, with iproute2, nftables, nginx installed)");
    eprintln!("{}", serde_json::to_string(&result).unwrap());
    wan::check_short(&result)
        .map_err(|e| format!("{e}; records in {}", spec.lab.dir.display()))
        .unwrap();
    let _ = std::fs::remove_dir_all(&work);
}
