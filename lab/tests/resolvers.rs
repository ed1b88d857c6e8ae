//! The resolver matrix's CI form (issue 15, item 2): `www.example.com` A resolved from a
//! cold cache through Unbound, BIND 9, Knot Resolver and PowerDNS Recursor, for the nested
//! layout (area zones inside the site zone, as `config/walrus.toml` ships) and the flat
//! one, with the embedded name server (`walrus-node dns serve`) and with BIND loaded from
//! `walrus-node dns bind-config`, QNAME minimisation on and off: 32 cells of 50 tries,
//! every try must give the site's addresses. Prints one JSON line per cell (see them with
//! `-- --nocapture`). The code is `walrus_lab::resolve`, shared with the long form
//! `walrus-lab resolve-matrix --tries 500`; its checker is shown to fail NXDOMAIN, an
//! address outside the site and an empty answer in its unit tests.
//!
//! Needs root (it creates a network namespace; skipped with a message otherwise) and the
//! Debian packages iproute2, bind9, unbound, knot-resolver, pdns-recursor (a missing one
//! fails the test, naming the package).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Instant;
use walrus_lab::resolve::{require_all, run_matrix, MatrixOptions};
use walrus_lab::runtime::ensure_walrus_node;

const TRIES: u32 = 50;

/// The real `walrus-node` binary: $WALRUS_NODE, else the one next to `walrus-lab`.
fn walrus_node_path() -> std::path::PathBuf {
    let lab = Path::new(env!("CARGO_BIN_EXE_walrus-lab"));
    ensure_walrus_node(lab).unwrap();
    std::env::var_os("WALRUS_NODE").map_or_else(|| lab.with_file_name("walrus-node"), Into::into)
}

/// Whether this process runs as root (effective uid 0, from /proc/self/status).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|u| u.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_resolver_gets_the_site_from_a_cold_cache_in_every_layout_and_backend() {
    if !is_root() {
        eprintln!(
            "SKIPPED resolvers: the resolver matrix needs root (it creates a network \
             namespace); run `cargo test -p walrus-lab --test resolvers` as root"
        );
        return;
    }
    let work = std::env::temp_dir().join(format!("walrus-resolvers-ci-{}", std::process::id()));
    let opts = MatrixOptions::full(
        TRIES,
        work.clone(),
        Path::new(env!("CARGO_BIN_EXE_walrus-lab")).to_path_buf(),
        walrus_node_path(),
    );
    require_all(&opts).unwrap();
    let start = Instant::now();
    let cells = run_matrix(&opts, &mut |c| {
        println!("{}", serde_json::to_string(c).unwrap());
    })
    .await
    .unwrap_or_else(|e| panic!("the matrix did not run: {e} (work: {})", work.display()));
    eprintln!(
        "resolver matrix: {} cells in {:.1?}",
        cells.len(),
        start.elapsed()
    );
    assert_eq!(
        cells.len(),
        4 * 2 * 2 * 2,
        "one cell per resolver, layout, backend, qmin"
    );
    assert!(cells.iter().all(|c| c.tries == TRIES));
    let failed: Vec<String> = cells
        .iter()
        .filter(|c| c.failures > 0)
        .map(|c| serde_json::to_string(c).unwrap())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} cells had failures (configurations and logs in {}):\n{}",
        failed.len(),
        cells.len(),
        work.display(),
        failed.join("\n")
    );
    let _ = std::fs::remove_dir_all(&work);
}
