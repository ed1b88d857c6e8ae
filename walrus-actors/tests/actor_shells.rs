//! The actor shells over the in-process group bus: each moves the right message to the
//! right group, and ignores what it must ignore (malformed payloads, others' messages).
//! The rules themselves are tested on the pure types; the real group layer in
//! walrus-node's cluster tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use walrus_actors::controller::actor::{self, ControllerSettings};
use walrus_actors::controller::notify::NotifyConfig;
use walrus_actors::controller::round::RoundConfig;
use walrus_actors::group::local::{LocalBus, LocalSession};
use walrus_actors::group::{GroupLayer, GroupSession};
use walrus_actors::messages::{group, WalrusMessage, CONTROLLERS, DIRECTORS, REPORTERS};
use walrus_actors::model::{Decision, Report, ReportBody, Round, ServerName};
use walrus_actors::reporter::{self, ReporterConfig, WebSource};
use walrus_actors::supervision::{ActorHome, RestartLimit, Supervision};
use walrus_gcs::{Event, NodeId, Service};
use walrus_testkit::actors::fixtures::{stats, topology_of};

fn settings() -> ControllerSettings {
    ControllerSettings {
        round: RoundConfig::with_period(Duration::from_millis(200)),
        topology: topology_of(&[("a1", "c1", "s1", "192.0.2.1")]),
        notify: NotifyConfig::default(),
        replication_primary: None,
    }
}

/// The next message on `s` that decodes, skipping membership events.
async fn next_message(s: &mut LocalSession) -> (Vec<walrus_gcs::GroupName>, WalrusMessage) {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), s.recv())
            .await
            .expect("no event in 10 s")
            .expect("session ended");
        if let Event::Message {
            groups, payload, ..
        } = ev
        {
            if let Ok(m) = WalrusMessage::decode(&payload) {
                return (groups, m);
            }
        }
    }
}

fn stop() -> (
    oneshot::Sender<()>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

/// An actor home (its own actix system thread) and a supervision record.
fn home() -> (ActorHome, Supervision) {
    (
        ActorHome::start(&NodeId::new("test")).unwrap(),
        Supervision::new(
            &NodeId::new("test"),
            RestartLimit::default(),
            tokio::runtime::Handle::current(),
        ),
    )
}

#[tokio::test]
async fn controller_requests_reports_and_multicasts_its_decision() {
    let bus = LocalBus::new();
    let mut reporter = bus.node("web", 1).open_session().await.unwrap();
    reporter.join(group(REPORTERS)).await.unwrap();
    let mut director = bus.node("dir", 1).open_session().await.unwrap();
    director.join(group(DIRECTORS)).await.unwrap();
    let (home, sup) = home();
    let handle = actor::start(
        &home,
        &sup,
        Arc::new(bus.node("ctl", 1)),
        settings(),
        BTreeMap::new(),
        Duration::ZERO,
    )
    .unwrap();

    let (groups, msg) = next_message(&mut reporter).await;
    assert_eq!(groups, vec![group(REPORTERS)]);
    let WalrusMessage::RoundRequest { round } = msg else {
        panic!("expected a round request, got {msg:?}")
    };
    // Garbage on Controllers is ignored; the round goes on.
    reporter
        .multicast(Service::Agreed, &[group(CONTROLLERS)], vec![0xff; 7])
        .await
        .unwrap();
    let report = WalrusMessage::Report(Report {
        server: ServerName::from("s1"),
        round,
        body: ReportBody::Stats(stats(1, 10, 1)),
        generation: None,
    });
    reporter
        .multicast(
            Service::Agreed,
            &[group(CONTROLLERS)],
            report.encode().unwrap(),
        )
        .await
        .unwrap();
    let (groups, msg) = next_message(&mut director).await;
    assert_eq!(groups, vec![group(CONTROLLERS), group(DIRECTORS)]);
    let WalrusMessage::Decision(d) = msg else {
        panic!("expected a decision, got {msg:?}")
    };
    assert_eq!(d.round, round);
    assert_eq!(
        d.answers[&"a1".into()].records,
        vec!["192.0.2.1".parse::<std::net::IpAddr>().unwrap()]
    );
    let st = handle.get_status().await.unwrap();
    assert!(st.is_master);
    assert_eq!(st.terms, 1);

    handle.shutdown().await;
    home.stop();
    assert!(
        bus.members(CONTROLLERS).is_empty(),
        "a clean stop leaves the group"
    );
}

#[tokio::test]
async fn a_backup_adopts_the_masters_decision_and_ignores_its_own_kind_of_noise() {
    let bus = LocalBus::new();
    // The first member is master: a plain session standing in for it.
    let master = bus.node("m", 1).open_session().await.unwrap();
    master.join(group(CONTROLLERS)).await.unwrap();
    let (home, sup) = home();
    let handle = actor::start(
        &home,
        &sup,
        Arc::new(bus.node("b", 1)),
        settings(),
        BTreeMap::new(),
        Duration::ZERO,
    )
    .unwrap();
    let mut w = handle.watch();
    w.wait_for(|s| s.members.len() == 2).await.unwrap();
    assert!(!handle.status().is_master);
    let d = Decision {
        round: Round(41),
        epoch: 41,
        answers: [(
            "a1".into(),
            walrus_actors::model::AreaAnswer {
                cluster: "c1".into(),
                records: vec!["192.0.2.1".parse().unwrap()],
            },
        )]
        .into(),
        changes: vec![],
    };
    master
        .multicast(
            Service::Agreed,
            &[group(CONTROLLERS)],
            WalrusMessage::Decision(d.clone()).encode().unwrap(),
        )
        .await
        .unwrap();
    w.wait_for(|s| s.last_decision.as_ref() == Some(&d))
        .await
        .unwrap();
    // The master crashes: the backup is first, becomes master and numbers after 41.
    bus.crash("m", 1);
    let mut watcher = bus.node("watch", 1).open_session().await.unwrap();
    watcher.join(group(DIRECTORS)).await.unwrap();
    let (_, msg) = next_message(&mut watcher).await;
    let WalrusMessage::Decision(next) = msg else {
        panic!("expected a decision, got {msg:?}")
    };
    assert!(next.round > Round(41), "{:?}", next.round);
    assert_eq!(next.answers, d.answers, "the takeover changed an answer");
    assert!(handle.status().is_master);
    handle.shutdown().await;
    home.stop();
}

#[tokio::test]
async fn reporter_answers_a_round_request_on_controllers() {
    let bus = LocalBus::new();
    let mut ctl = bus.node("ctl", 1).open_session().await.unwrap();
    ctl.join(group(CONTROLLERS)).await.unwrap();
    let mut cfg = ReporterConfig::new(
        ServerName::from("s1"),
        WebSource::Probe {
            url: "http://127.0.0.1:1/".into(),
            expect_status: None,
            body_contains: None,
            max_workers: 10,
        },
    );
    cfg.bypass_file = std::env::temp_dir().join("walrus-actor-shells-no-bypass");
    let (gather_halt, gather_stop) = stop();
    let (handle, gatherer) = reporter::spawn(cfg, gather_stop).unwrap();
    let (home, sup) = home();
    let actor = reporter::actor::start(&home, &sup, Arc::new(bus.node("web", 1)), handle);
    while bus.members(REPORTERS).is_empty() {
        tokio::task::yield_now().await;
    }
    ctl.multicast(
        Service::Agreed,
        &[group(REPORTERS)],
        WalrusMessage::RoundRequest { round: Round(7) }
            .encode()
            .unwrap(),
    )
    .await
    .unwrap();
    // The probe of port 1 is refused: an urgent PANIC may reach Controllers first.
    let r = loop {
        let (groups, msg) = next_message(&mut ctl).await;
        assert_eq!(groups, vec![group(CONTROLLERS)]);
        match msg {
            WalrusMessage::Report(r) => break r,
            WalrusMessage::Urgent(_) => continue,
            msg => panic!("expected a report, got {msg:?}"),
        }
    };
    assert_eq!((r.server.0.as_str(), r.round), ("s1", Round(7)));
    actor.shutdown().await;
    home.stop();
    gather_halt.send(()).unwrap();
    gatherer.await.unwrap();
}

#[tokio::test]
async fn director_forwards_decisions_and_drops_garbage() {
    let bus = LocalBus::new();
    let ctl = bus.node("ctl", 1).open_session().await.unwrap();
    let (tx, mut rx) = mpsc::channel(4);
    let (home, sup) = home();
    let actor =
        walrus_actors::director::actor::start(&home, &sup, Arc::new(bus.node("dir", 1)), tx, None);
    while bus.members(DIRECTORS).is_empty() {
        tokio::task::yield_now().await;
    }
    ctl.multicast(
        Service::Agreed,
        &[group(DIRECTORS)],
        b"not a message".to_vec(),
    )
    .await
    .unwrap();
    let d = Decision {
        round: Round(3),
        epoch: 3,
        answers: BTreeMap::new(),
        changes: vec![],
    };
    ctl.multicast(
        Service::Agreed,
        &[group(CONTROLLERS), group(DIRECTORS)],
        WalrusMessage::Decision(d.clone()).encode().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(rx.recv().await.unwrap(), d);
    actor.shutdown().await;
    home.stop();
    assert!(rx.try_recv().is_err(), "garbage was forwarded");
}
