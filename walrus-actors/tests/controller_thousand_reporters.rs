//! A Controller round with 1,000 reporters completes within its period (issue 24, Must
//! show 2): the real Controller actor over a real walrus-gcs group on loopback (QUIC,
//! mutual TLS), 1,000 reporter sessions shared by two reporting nodes.
//!
//! Three `Gcs` nodes in this process: `ctl` runs the Controller (default round settings:
//! period 1 s, reports gathered for at most 400 ms, as `config/walrus.toml`'s `[timing]`);
//! `web-a` and `web-b` hold 500 sessions each, every one a simulated Reporter of one
//! server of a 10-area × 100-server topology: it joins `Reporters` and answers each
//! `RoundRequest` with a `Report` (Agreed, on `Controllers`), as the real Reporter does.
//! The Controller closes a round as soon as every server has answered, or at the report
//! timeout with the missing servers dead. The test checks, on consecutive rounds, that
//! each closed with all 1,000 reports and before the next round was due (its period):
//! the functional requirement. The durations (request → decision) are printed as one JSON
//! line.
//!
//! Rounds count from the first round that every server answered (`settle_ms`): before
//! it, the group is still digesting the joins. Each join of `Reporters` is delivered to
//! every reporter session already in it with the whole member list, so 1,000 joins put
//! about 1000²/2 lists (10⁸ member records) through the two reporting nodes; meanwhile
//! their runtimes fall behind, QUIC connections time out, views change and rounds close
//! with no report (`rounds_before_settled`). A finding for the client tier (issue 24):
//! membership events as deltas, or a client that gets a group's list only on request.
//!
//! The test is ignored in the default run: joining 1,000 sessions to one group delivers
//! each session every later join with the whole member list (O(c³) member records in one
//! process, about a minute of CPU in a debug build on two cores); run it with
//! `cargo test --release -p walrus-actors --test controller_thousand_reporters -- --ignored --nocapture`.
//! `round_completes_with_100_reporters` runs the same harness in the default suite (with
//! reports gathered for up to 900 ms of the 1 s period: see its doc).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use walrus_actors::controller::actor::{self, ControllerSettings};
use walrus_actors::controller::notify::NotifyConfig;
use walrus_actors::controller::round::RoundConfig;
use walrus_actors::messages::{group, WalrusMessage, CONTROLLERS, REPORTERS};
use walrus_actors::model::{Report, ReportBody, ServerName};
use walrus_actors::supervision::{ActorHome, RestartLimit, Supervision};
use walrus_gcs::transport::certs;
use walrus_gcs::{Event, Gcs, NodeId, Service, Session};
use walrus_testkit::actors::fixtures::{stats, topology};
use walrus_testkit::actors::group::start_members;

/// How long setting up may take (joins of every session, first view).
const SETUP: Duration = Duration::from_secs(600);
/// How long the rounds may take to come, once the Controller has started.
const OBSERVE: Duration = Duration::from_secs(120);
/// Rounds observed after every reporter has joined.
const ROUNDS: usize = 8;

/// Three nodes on loopback, all knowing each other.
async fn start_nodes(names: &[&str]) -> Vec<Gcs> {
    start_members(&certs::create_ca().unwrap(), names).await
}

/// One simulated Reporter: answers every round request with fresh statistics.
async fn reporter(mut s: Session, server: ServerName) {
    while let Some(ev) = s.recv().await {
        let Event::Message { payload, .. } = ev else {
            continue;
        };
        let Ok(WalrusMessage::RoundRequest { round }) = WalrusMessage::decode(&payload) else {
            continue;
        };
        let report = WalrusMessage::Report(Report {
            server: server.clone(),
            round,
            body: ReportBody::Stats(stats(10, 100, 1)),
            generation: None,
        });
        let Ok(bytes) = report.encode() else { continue };
        if s.multicast(Service::Agreed, &[group(CONTROLLERS)], bytes)
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Runs the harness with `areas` × `per_cluster` reporters and the round settings
/// `round`; returns the JSON line.
fn run(areas: u8, per_cluster: u8, round: RoundConfig) -> serde_json::Value {
    if std::env::var("SCALE_DEBUG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::stderr)
            .try_init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let nodes = start_nodes(&["ctl", "web-a", "web-b"]).await;
        let topology = topology(areas, per_cluster);
        let servers: Vec<ServerName> = topology
            .clusters
            .values()
            .flat_map(|c| c.servers.keys().cloned())
            .collect();
        let total = servers.len();

        // Every reporter session joins `Reporters` before the Controller starts, so each
        // round asks all of them.
        let setup = Instant::now();
        let mut joined = Vec::new();
        for (k, server) in servers.iter().enumerate() {
            let node = &nodes[1 + k % 2];
            let s = node.open_session().await.unwrap();
            let sender = s.sender();
            joined.push(tokio::spawn(async move {
                sender.join(group(REPORTERS)).await.unwrap();
            }));
            tokio::spawn(reporter(s, server.clone()));
        }
        for j in joined {
            tokio::time::timeout(SETUP, j).await.unwrap().unwrap();
        }
        let setup_ms = setup.elapsed().as_millis();

        let period = round.round_period;
        let report_timeout = round.report_timeout;
        let settings = ControllerSettings {
            round,
            topology,
            notify: NotifyConfig::default(),
            replication_primary: None,
        };
        let name = NodeId::new("ctl");
        let home = ActorHome::start(&name).unwrap();
        let sup = Supervision::new(
            &name,
            RestartLimit::default(),
            tokio::runtime::Handle::current(),
        );
        let layer = Arc::new(nodes.into_iter().next().unwrap());
        let handle = actor::start(
            &home,
            &sup,
            layer.clone(),
            settings,
            BTreeMap::new(),
            Duration::from_secs(10),
        )
        .unwrap();

        // Watch rounds close. The group first has to digest the joins (each of the
        // reporter sessions got every later join with the whole member list): while it
        // does, its nodes may miss heartbeats, views change and rounds close empty. So
        // rounds count from the first one that every server answered (`settle_ms` says
        // when that was), then ROUNDS consecutive rounds must all be complete.
        let started = Instant::now();
        let mut status = handle.watch();
        let mut rounds: Vec<(u64, usize, f64)> = Vec::new();
        let mut unsettled: Vec<(u64, usize, f64)> = Vec::new();
        let mut settle_ms = None;
        let mut last = None;
        let deadline = started + OBSERVE;
        while rounds.len() < ROUNDS && Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_secs(5), status.changed()).await;
            let st = status.borrow_and_update().clone();
            let Some(r) = st.last_round else {
                continue;
            };
            if last == Some(r.round) {
                continue;
            }
            last = Some(r.round);
            let row = (r.round.0, r.reports, r.duration.as_secs_f64() * 1000.0);
            if std::env::var("SCALE_DEBUG").is_ok() {
                eprintln!("round {row:?}");
            }
            if settle_ms.is_none() && r.reports == total {
                settle_ms = Some(started.elapsed().as_millis());
            }
            if settle_ms.is_some() {
                rounds.push(row);
            } else {
                unsettled.push(row);
            }
        }
        handle.shutdown().await;
        layer.shutdown().await;
        let measured = &rounds[..];
        let period_ms = period.as_secs_f64() * 1000.0;
        let complete = measured
            .iter()
            .filter(|(_, n, d)| *n == total && *d < period_ms)
            .count();
        let mut durations: Vec<f64> = measured.iter().map(|(_, _, d)| *d).collect();
        durations.sort_by(f64::total_cmp);
        serde_json::json!({
            "reporters": total,
            "reporting_nodes": 2,
            "round_period_ms": period.as_millis(),
            "report_timeout_ms": report_timeout.as_millis(),
            "setup_ms": setup_ms,
            "settle_ms": settle_ms,
            "rounds_before_settled": unsettled,
            "rounds": measured.len(),
            "complete_rounds": complete,
            "reports_per_round": measured.iter().map(|(_, n, _)| n).collect::<Vec<_>>(),
            "round_ms_median": durations.get(durations.len() / 2),
            "round_ms_max": durations.last(),
            "round_ms": measured.iter().map(|(_, _, d)| (d * 10.0).round() / 10.0).collect::<Vec<_>>(),
            "release_build": !cfg!(debug_assertions),
        })
    })
}

fn check(line: &serde_json::Value) {
    println!("{line}");
    let total = line["reporters"].as_u64().unwrap();
    assert_eq!(
        line["rounds"], ROUNDS as u64,
        "too few rounds closed: {line}"
    );
    // Every round closed with every server's report, within its period (rounds start
    // every period: a round that is not done by then is not done).
    assert_eq!(
        line["complete_rounds"], ROUNDS as u64,
        "a round closed without all {total} reports or past its period: {line}"
    );
}

/// The harness in the default suite: a debug build on a CI machine that may be loaded.
/// Its rounds took 150–350 ms here with six busy-looping processes beside it, close to the
/// default 400 ms report timeout (a report later than that makes the round incomplete).
/// So this run gathers for up to 900 ms of the same 1 s period: every round must still
/// close with all 100 reports and before the next is due, without betting on the
/// machine's speed. The 1,000-reporter run keeps the defaults.
#[test]
fn round_completes_with_100_reporters() {
    let round = RoundConfig {
        report_timeout: Duration::from_millis(900),
        ..RoundConfig::default()
    };
    check(&run(10, 10, round));
}

#[test]
#[ignore = "1,000 sessions in one process: run in release, see the module doc"]
fn round_completes_with_1000_reporters() {
    let per_cluster = std::env::var("SCALE_PER_CLUSTER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    check(&run(10, per_cluster, RoundConfig::default()));
}
