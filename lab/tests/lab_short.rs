//! The steering lab's short form (issue 9): two areas, two regions, BIND as resolver, the
//! real Walrus runtime (`walrus-node run` processes: Controllers, Reporters reading nginx,
//! Directors with the embedded name server), 25 s of clients and probes, in network
//! namespaces with the delay relay. Asserts only what cannot be noise:
//! - once converged (after the 10 s warm-up) the nearest area's name server gets most
//!   (> 50%) of each region's probe queries — BIND measured 97–100% here, so even a badly
//!   loaded machine stays far above the bar, while a resolver that ignored RTT would sit at
//!   50% (checker shown to catch that planted fault in `lab::analysis` unit tests);
//! - every address a client used is one of the site's servers;
//! - area 2's nginx processes are killed (SIGKILL) at 12 s and nothing else is told: the
//!   real Reporters and master Controller must move area 2's answer within the run (the
//!   watcher sees it), and after that move plus two TTLs (resolver and stub cache) and
//!   1.5 s, no client uses a dead server's address (the checker is shown to catch a planted
//!   late dead address in `lab::analysis::tests::runtime_cluster_dies_*`).
//!
//! Needs root and: iproute2, bind9, nginx (Debian packages), and the `walrus-node` binary
//! (built here with `cargo build -p walrus-node` when it is not next to `walrus-lab`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use walrus_lab::analysis::{check_addresses, check_converged, check_no_dead_address, read_jsonl};
use walrus_lab::clients::ClientRecord;
use walrus_lab::report::base_spec;
use walrus_lab::runtime::ensure_walrus_node;
use walrus_lab::spec::{Area, Mode, ResolverKind, ScenarioEvent};
use walrus_lab::{netns, orchestrate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_runtime_moves_a_dead_cluster_and_clients_follow_within_the_ttl() {
    for (program, package) in [("ip", "iproute2"), ("named", "bind9"), ("nginx", "nginx")] {
        netns::require(program, package).unwrap();
    }
    let exe = Path::new(env!("CARGO_BIN_EXE_walrus-lab"));
    ensure_walrus_node(exe).unwrap();
    let work = std::env::temp_dir().join(format!("walrus-lab-ci-{}", std::process::id()));
    let mut spec = base_spec(&work, "ci", 2, 2, Mode::Runtime);
    spec.resolvers = vec![ResolverKind::Bind];
    spec.seconds = 25;
    spec.clients_per_resolver = 2;
    spec.probe_rate = 10;
    // Area 2's cluster dies at 12 s; the runtime has to notice by itself.
    spec.event = Some(ScenarioEvent::ClusterDies {
        area: Area(2),
        at_secs: 12,
    });
    let result = orchestrate::run_once(&spec, exe, "ci")
        .await
        .expect("the lab runs (as root, with iproute2, bind9, nginx installed)");
    eprintln!("{}", serde_json::to_string(&result).unwrap());
    check_converged(&result.convergence, 0.5, 50).unwrap();
    let mut recs: Vec<ClientRecord> = Vec::new();
    for r in spec.all_regions() {
        recs.extend(read_jsonl(&spec.dir.join(format!("clients-{r}.jsonl"))));
    }
    assert!(
        recs.iter().any(|r| r.error.is_none()),
        "no client request succeeded"
    );
    check_addresses(&spec, &recs).unwrap();
    let failure = result.failure.expect("the failure happened");
    assert!(
        failure.times.updated.is_some(),
        "the runtime never moved area 2's answer off its dead cluster (see {}/watch.jsonl)",
        spec.dir.display()
    );
    // Resolver and stub may each hold the old answer for one TTL; 1.5 s more for
    // requests in flight and a loaded machine.
    let grace = 2 * u64::from(spec.ttl_secs) * 1000 + 1500;
    check_no_dead_address(&spec, failure.times, &recs, grace).unwrap();
    let _ = std::fs::remove_dir_all(&work);
}
