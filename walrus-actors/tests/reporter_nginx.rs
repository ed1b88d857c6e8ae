//! The Reporter against a real Nginx started by the test on a loopback port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use walrus_testkit::actors::reporter::Kind;

#[tokio::test]
async fn hits_follow_traffic() {
    walrus_testkit::actors::reporter::hits_follow_traffic(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_on_stop_then_recover() {
    walrus_testkit::actors::reporter::panic_on_stop_then_recover(Kind::Nginx).await;
}

/// Issue 17: a flash crowd makes no server "dead". A real nginx with more half-sent
/// requests than its configured `max_workers` (4) reports busy > max; the master's round
/// takes it as over capacity (load above 1.0), keeps it working past the start-up rounds,
/// and keeps it in its area's answer while no better cluster exists. With the old rule
/// (a report with busy > max ignored as malformed) the server was dead from round 11 on
/// and its area moved away (phase 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flash_crowd_beyond_max_workers_is_overload_not_death() {
    use std::collections::BTreeMap;
    use std::io::Write;
    use std::net::{IpAddr, TcpStream};
    use std::time::{Duration, Instant};
    use walrus_actors::controller::assign::ServerState;
    use walrus_actors::controller::round::{Output, RoundConfig, RoundMachine, START_UP_ROUNDS};
    use walrus_actors::model::{
        AreaName, AreaSpec, ClusterName, ClusterSpec, Report, ReportBody, Round, ServerName,
        Topology, WebStats,
    };
    use walrus_actors::reporter::{Gatherer, WebSource};
    use walrus_testkit::actors::reporter::{expect_stats, TempDir, WebServer, PATIENCE};

    let dir = TempDir::new("reporter-flash");
    let server = WebServer::start(Kind::Nginx, dir.path());
    let mut config = walrus_testkit::actors::reporter::config_for(&server, dir.path());
    config.web = WebSource::Nginx {
        url: server.status_url(),
        max_workers: 4,
    };
    let reader = config.web_reader().unwrap();
    let (mut gatherer, handle) = Gatherer::with_reader(config, reader).unwrap();
    gatherer.gather_once().await;
    gatherer.gather_once().await;
    // Ten clients each sent half a request: nginx counts them as reading.
    let _held: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut c = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
            c.write_all(b"GET /index.html HTTP/1.1\r\n").unwrap();
            c
        })
        .collect();
    let deadline = Instant::now() + PATIENCE;
    let stats = loop {
        assert!(Instant::now() < deadline, "nginx never showed the crowd");
        tokio::time::sleep(Duration::from_millis(50)).await;
        gatherer.gather_once().await;
        let r = handle.report(Round(1));
        if let ReportBody::Stats(s) = &r.body {
            if s.web.busy_workers >= 10 {
                break expect_stats(&r.body).clone();
            }
        }
    };
    assert_eq!(stats.web.max_workers, 4);
    assert!(stats.web.busy_workers > stats.web.max_workers, "{stats:?}");

    // Two areas; the other cluster is further over capacity (10 busy per worker): no
    // better cluster exists.
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let mut topology = Topology {
        areas: BTreeMap::new(),
        clusters: BTreeMap::new(),
    };
    for (area, cluster, server, addr) in [
        ("a1", "c1", "w1", "10.1.0.1"),
        ("a2", "c2", "x1", "10.2.0.1"),
    ] {
        topology.areas.insert(
            AreaName::from(area),
            AreaSpec {
                home_cluster: ClusterName::from(cluster),
            },
        );
        topology.clusters.insert(
            ClusterName::from(cluster),
            ClusterSpec {
                servers: BTreeMap::from([(ServerName::from(server), vec![ip(addr)])]),
            },
        );
    }
    let mut other = stats.clone();
    other.web = WebStats {
        hits: 100,
        busy_workers: 1000,
        max_workers: 100,
    };
    let mut m = RoundMachine::new(RoundConfig::default(), topology);
    let mut now = Instant::now();
    m.handle_became_master(now);
    let mut last_status = None;
    let mut last_decision = None;
    let mut rounds = 0;
    while rounds < START_UP_ROUNDS + 5 {
        while let Some(out) = m.poll_output() {
            match out {
                Output::RequestReports { round } => {
                    rounds = round.0;
                    for (name, s) in [("w1", &stats), ("x1", &other)] {
                        let r = Report {
                            server: ServerName::from(name),
                            round,
                            body: ReportBody::Stats(s.clone()),
                            generation: None,
                        };
                        let fixed = m.handle_report(now, r).unwrap();
                        assert!(!fixed.is_empty(), "over capacity is named");
                    }
                }
                Output::Status(s) => last_status = Some(s),
                Output::Multicast(d) => last_decision = Some(d),
                _ => {}
            }
        }
        now += Duration::from_secs(1);
        m.handle_timeout(now);
    }
    let status = last_status.unwrap();
    assert!(status.round.0 > START_UP_ROUNDS, "{status:?}");
    match &status.states[&ServerName::from("w1")] {
        ServerState::Working { load, .. } => assert!(*load >= 1.0, "{load}"),
        other => panic!("the crowded server is {other:?}, not working"),
    }
    let decision = last_decision.unwrap();
    let a1 = &decision.answers[&AreaName::from("a1")];
    assert_eq!(a1.cluster, ClusterName::from("c1"), "{decision:?}");
    assert_eq!(a1.records, vec![ip("10.1.0.1")]);
}
