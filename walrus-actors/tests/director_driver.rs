//! The Director's driver (what the actor will run) against real servers: decisions in
//! through the channel, records visible with `dig`, status on the watch; a newer decision
//! wins over one stuck on a dead BIND; a refusal shows in status and is not hammered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use walrus_actors::director::core::{ApplyTiming, DirectorCore, DirectorStatus};
use walrus_actors::director::embedded::EmbeddedServer;
use walrus_actors::director::retry::RetryPolicy;
use walrus_actors::director::rfc2136::{Rfc2136Config, Rfc2136Updater, TsigKey};
use walrus_actors::director::zone::RecordTtl;
use walrus_actors::director::{driver, AreaDirector, NameServer};
use walrus_actors::model::{AreaAnswer, AreaName, ClusterName, Decision, Round};
use walrus_testkit::actors::director::{
    dig, dig_followed, layout, wait_until, Authoritative, TempDir,
};

struct Director {
    tx: mpsc::Sender<Decision>,
    status: watch::Receiver<DirectorStatus>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Director {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A Director past its start-up confirmation (these tests feed one decision at a time and
/// expect it applied; the confirmation rule has its own unit test in `director::core`).
fn running() -> ApplyTiming {
    ApplyTiming {
        confirm_after_start: 0,
        ..ApplyTiming::default()
    }
}

fn start<N: NameServer + Clone + 'static>(
    ns: N,
    cfg: ApplyTiming,
    policy: RetryPolicy,
) -> Director {
    start_area("a1", ns, cfg, policy)
}

fn start_area<N: NameServer + Clone + 'static>(
    area: &str,
    ns: N,
    cfg: ApplyTiming,
    policy: RetryPolicy,
) -> Director {
    let core = DirectorCore::new(
        AreaDirector {
            area: AreaName::from(area),
            ttl: RecordTtl::DEFAULT,
        },
        ns.describe(),
        cfg,
    );
    let (tx, rx) = mpsc::channel(16);
    let (status_tx, status) = watch::channel(core.status().clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(driver::run(ns, core, policy, rx, status_tx, async {
        let _ = stopped.await;
    }));
    Director {
        tx,
        status,
        stop: Some(stop),
        task,
    }
}

fn decision(round: u64, addrs: &[&str]) -> Decision {
    Decision {
        round: Round(round),
        epoch: round,
        answers: [(
            AreaName::from("a1"),
            AreaAnswer {
                cluster: ClusterName::from("c1"),
                records: addrs.iter().map(|a| a.parse::<IpAddr>().unwrap()).collect(),
            },
        )]
        .into_iter()
        .collect(),
        changes: vec![],
    }
}

fn updater(bind: &Authoritative, key: TsigKey) -> Rfc2136Updater {
    Rfc2136Updater::new(Rfc2136Config {
        area: AreaName::from("a1"),
        server: bind.addr,
        area_zone: bind.layout.area_zone.clone(),
        key,
        timeout: Duration::from_secs(1),
    })
    .unwrap()
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(500),
        max_attempts: 100,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_flow_to_bind_and_newest_wins_after_outage() {
    let mut bind = Authoritative::bind(1, "walrus-area1");
    let d = start(updater(&bind, bind.key.clone()), running(), fast_retry());
    let sees = |addr, want: &[&str]| {
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        wait_until(std::time::Duration::from_secs(30), || {
            dig(addr, "www.area-1.example.com", "A").data_of("A") == want
        })
    };

    d.tx.send(decision(1, &["10.0.1.1"])).await.unwrap();
    assert!(tokio::task::block_in_place(|| sees(
        bind.addr,
        &["10.0.1.1"]
    )));

    tokio::task::block_in_place(|| bind.kill());
    d.tx.send(decision(2, &["10.0.2.1"])).await.unwrap();
    d.tx.send(decision(3, &["10.0.3.1"])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!d.status.borrow().in_sync);
    tokio::task::block_in_place(|| bind.restart());
    assert!(tokio::task::block_in_place(|| sees(
        bind.addr,
        &["10.0.3.1"]
    )));
    let mut status = d.status.clone();
    tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| s.in_sync))
        .await
        .unwrap()
        .unwrap();
    let s = status.borrow().clone();
    assert_eq!(s.wanted_round, Some(Round(3)));
    assert!(
        s.history.back().unwrap().outcome.starts_with("updated"),
        "{s:?}"
    );
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_shows_in_status_and_is_not_hammered() {
    let bind = Authoritative::bind(1, "walrus-area1");
    let serial = bind.serial();
    let wrong = walrus_testkit::actors::director::tsig_keygen("walrus-area1");
    let d = start(updater(&bind, wrong), running(), fast_retry());
    d.tx.send(decision(1, &["10.0.1.1"])).await.unwrap();
    let mut status = d.status.clone();
    tokio::time::timeout(
        Duration::from_secs(30),
        status.wait_for(|s| !s.history.is_empty()),
    )
    .await
    .unwrap()
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = d.status.borrow().clone();
    assert_eq!(
        s.history.len(),
        1,
        "not retried within the recheck period: {s:?}"
    );
    let e = &s.history[0];
    assert!(
        e.refused && e.attempts == 1 && e.outcome.contains("BADSIG"),
        "{e:?}"
    );
    assert_eq!(bind.serial(), serial);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_flow_to_embedded_and_shutdown_stops() {
    let dir = TempDir::new("driver-emb");
    let server = EmbeddedServer::open(
        AreaName::from("a1"),
        layout(1, 30),
        dir.path().join("state.json"),
    )
    .unwrap();
    let listening = server.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listening.local_addr();
    let (stop_srv, srv_stopped) = oneshot::channel::<()>();
    tokio::spawn(listening.run(async {
        let _ = srv_stopped.await;
    }));
    let mut d = start(server, running(), fast_retry());
    d.tx.send(decision(1, &["10.0.1.1", "10.0.1.2"]))
        .await
        .unwrap();
    assert!(tokio::task::block_in_place(|| wait_until(
        std::time::Duration::from_secs(30),
        || {
            dig_followed(addr, "www.example.com", "A", &[]).data_of("A")
                == vec!["10.0.1.1", "10.0.1.2"]
        }
    )));
    let _ = d.stop.take().unwrap().send(());
    tokio::time::timeout(Duration::from_secs(10), &mut d.task)
        .await
        .expect("driver stops on shutdown")
        .unwrap();
    let _ = stop_srv.send(());
}

/// Direct mode (paper): no node beside the name servers; the master runs one driver per
/// area in its own process, each with an RFC 2136 updater pointed at that area's server,
/// and hands every decision to all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_mode_master_updates_every_area_server() {
    let b1 = Authoritative::bind(1, "walrus-area1");
    let b2 = Authoritative::bind(2, "walrus-area2");
    let mk = |bind: &Authoritative, area: &str| {
        Rfc2136Updater::new(Rfc2136Config {
            area: AreaName::from(area),
            server: bind.addr,
            area_zone: bind.layout.area_zone.clone(),
            key: bind.key.clone(),
            timeout: Duration::from_secs(1),
        })
        .unwrap()
    };
    let drivers = [
        start_area("a1", mk(&b1, "a1"), running(), fast_retry()),
        start_area("a2", mk(&b2, "a2"), running(), fast_retry()),
    ];
    let dec = Decision {
        round: Round(1),
        epoch: 1,
        answers: [
            (
                AreaName::from("a1"),
                AreaAnswer {
                    cluster: ClusterName::from("c1"),
                    records: vec!["10.0.1.1".parse().unwrap()],
                },
            ),
            (
                AreaName::from("a2"),
                AreaAnswer {
                    cluster: ClusterName::from("c2"),
                    records: vec!["10.0.2.1".parse().unwrap()],
                },
            ),
        ]
        .into_iter()
        .collect(),
        changes: vec![],
    };
    for d in &drivers {
        d.tx.send(dec.clone()).await.unwrap();
    }
    tokio::task::block_in_place(|| {
        assert!(wait_until(std::time::Duration::from_secs(30), || {
            dig(b1.addr, "www.area-1.example.com", "A").data_of("A") == vec!["10.0.1.1"]
                && dig(b2.addr, "www.area-2.example.com", "A").data_of("A") == vec!["10.0.2.1"]
        }));
    });
}
