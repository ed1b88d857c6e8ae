//! The GCS over real QUIC sockets on loopback, all nodes in one process: a view forms,
//! Agreed multicasts from every node arrive in one identical order everywhere, and a
//! 2|3 partition made with the fault switch yields two views that merge when healed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use walrus_gcs::transport::{partition, Limits, Transport};
use walrus_gcs::{CoreConfig, Event, Gcs, GcsConfig, GroupName, PeerMessage, Service, Session};

const VIEW_DEADLINE: Duration = Duration::from_secs(30);

async fn start_cluster(names: &[&str]) -> Vec<Gcs> {
    let ca = Ca::new();
    let bound = bind(names);
    let addrs: Vec<(String, std::net::SocketAddr)> =
        bound.iter().map(|(n, _, a)| (n.clone(), *a)).collect();
    let mut out = Vec::new();
    for (name, socket, _) in bound {
        let limits = Limits {
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(300),
            ..Limits::default()
        };
        let gcs = Gcs::start(GcsConfig {
            transport: config(&ca, &name, socket, &addrs, limits),
            core: CoreConfig::lan(),
            incarnation: None,
        })
        .await
        .unwrap();
        out.push(gcs);
    }
    out
}

fn members(g: &Gcs) -> BTreeSet<String> {
    g.view()
        .map(|v| v.members.iter().map(|m| m.id.to_string()).collect())
        .unwrap_or_default()
}

/// Waits until every node in `nodes` is in a view whose members are exactly `expect`.
async fn wait_view(nodes: &[&Gcs], expect: &[&str]) -> Duration {
    let want: BTreeSet<String> = expect.iter().map(|s| s.to_string()).collect();
    let start = Instant::now();
    loop {
        if nodes.iter().all(|g| members(g) == want) {
            let ids: BTreeSet<_> = nodes.iter().map(|g| g.view().unwrap().view).collect();
            if ids.len() == 1 {
                return start.elapsed();
            }
        }
        if start.elapsed() > VIEW_DEADLINE {
            let seen: Vec<_> = nodes
                .iter()
                .map(|g| (g.id().to_string(), members(g)))
                .collect();
            panic!("no common view {want:?} after {VIEW_DEADLINE:?}: {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn recv_until<T>(s: &mut Session, what: &str, mut f: impl FnMut(Event) -> Option<T>) -> T {
    let fut = async {
        loop {
            let e = s.recv().await.expect("session ended");
            if let Some(t) = f(e) {
                return t;
            }
        }
    };
    tokio::time::timeout(VIEW_DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_form_one_view_and_agree_on_the_order() {
    let names = ["n0", "n1", "n2", "n3", "n4"];
    let nodes = start_cluster(&names).await;
    let refs: Vec<&Gcs> = nodes.iter().collect();
    let took = wait_view(&refs, &names).await;
    eprintln!("5 nodes formed one view in {took:?}");

    let group = GroupName::new("Controllers");
    let mut sessions = Vec::new();
    for g in &nodes {
        let s = g.open_session().await.unwrap();
        s.join(group.clone()).await.unwrap();
        sessions.push(s);
    }
    // Every session sees the group reach five members.
    for s in &mut sessions {
        recv_until(s, "five members", |e| match e {
            Event::Membership { members, .. } if members.len() == 5 => Some(()),
            _ => None,
        })
        .await;
    }
    const PER_NODE: usize = 200;
    // Every node sends concurrently while every session receives.
    let mut handles = Vec::new();
    for (i, s) in sessions.iter().enumerate() {
        let tx = s.sender();
        let group = group.clone();
        handles.push(tokio::spawn(async move {
            for k in 0..PER_NODE {
                let payload = format!("{i}:{k}").into_bytes();
                tx.multicast(Service::Agreed, std::slice::from_ref(&group), payload)
                    .await
                    .unwrap();
            }
        }));
    }
    let mut orders = Vec::new();
    for rx in &mut sessions {
        let mut got = Vec::new();
        while got.len() < PER_NODE * names.len() {
            let m = recv_until(rx, "agreed messages", |e| match e {
                Event::Message {
                    sender,
                    payload,
                    service,
                    ..
                } => {
                    assert_eq!(service, Service::Agreed);
                    Some((sender.0.to_string(), String::from_utf8(payload).unwrap()))
                }
                _ => None,
            })
            .await;
            got.push(m);
        }
        orders.push(got);
    }
    for h in handles {
        h.await.unwrap();
    }
    for (i, o) in orders.iter().enumerate().skip(1) {
        assert_eq!(o, &orders[0], "node {i} delivered a different order");
    }
    // FIFO per sender inside the total order, and nothing lost or duplicated.
    for (i, name) in names.iter().enumerate() {
        let mine: Vec<&String> = orders[0]
            .iter()
            .filter(|(from, _)| from.as_str() == *name)
            .map(|(_, p)| p)
            .collect();
        let want: Vec<String> = (0..PER_NODE).map(|k| format!("{i}:{k}")).collect();
        assert_eq!(mine, want.iter().collect::<Vec<_>>());
    }
    for g in &nodes {
        g.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_three_partition_gives_two_views_and_healing_merges_them() {
    let names = ["n0", "n1", "n2", "n3", "n4"];
    let nodes = start_cluster(&names).await;
    let refs: Vec<&Gcs> = nodes.iter().collect();
    wait_view(&refs, &names).await;
    let ts: Vec<&Transport<PeerMessage>> = nodes.iter().map(|g| g.transport()).collect();
    partition(&ts, &[&["n0", "n1"], &["n2", "n3", "n4"]]);
    let split_took = tokio::join!(
        wait_view(&refs[..2], &names[..2]),
        wait_view(&refs[2..], &names[2..])
    );
    eprintln!("partition: two views after {split_took:?}");
    partition(&ts, &[&names]);
    let merge_took = wait_view(&refs, &names).await;
    eprintln!("heal: one view after {merge_took:?}");
    for g in &nodes {
        g.shutdown().await;
    }
}

/// The driver's one link-level rule: after a peer's frames showed incarnation 5, a frame
/// with incarnation 3 (a previous life) is dropped and the link closed with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_from_an_older_incarnation_closes_the_link() {
    use walrus_gcs::codec;
    use walrus_gcs::transport::{close_code, tls, PREAMBLE};
    use walrus_gcs::wire::Heartbeat;
    use walrus_gcs::{Incarnation, NodeId, ViewId};

    let ca = Ca::new();
    let bound = bind(&["a", "b"]);
    let addrs: Vec<(String, std::net::SocketAddr)> =
        bound.iter().map(|(n, _, a)| (n.clone(), *a)).collect();
    let (_, sock_b, b_addr) = bound.into_iter().nth(1).unwrap();
    let b = Gcs::start(GcsConfig {
        transport: config(&ca, "b", sock_b, &addrs, Limits::default()),
        core: CoreConfig::lan(),
        incarnation: None,
    })
    .await
    .unwrap();
    // "a" is a raw QUIC client with a genuine certificate.
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(
        tls::client_config(&ca.identity("a"), &Limits::default()).unwrap(),
    );
    let conn = ep.connect(b_addr, "b").unwrap().await.unwrap();
    let mut s = conn.open_uni().await.unwrap();
    let heartbeat = |inc: u64| {
        PeerMessage::Heartbeat(Heartbeat {
            incarnation: Incarnation(inc),
            view: ViewId {
                counter: 1,
                coordinator: NodeId::new("a"),
                incarnation: Incarnation(inc),
            },
            alive: vec![],
            max_counter: 1,
        })
    };
    let mut bytes = PREAMBLE.to_vec();
    codec::encode_frame(&("a", heartbeat(5)), &mut bytes).unwrap();
    codec::encode_frame(&("a", heartbeat(5)), &mut bytes).unwrap();
    s.write_all(&bytes).await.unwrap();
    // Control: the current incarnation does not close the link.
    let quiet = tokio::time::timeout(Duration::from_millis(500), conn.closed()).await;
    assert!(quiet.is_err(), "the link must stay up: {quiet:?}");
    let mut stale = Vec::new();
    codec::encode_frame(&("a", heartbeat(3)), &mut stale).unwrap();
    s.write_all(&stale).await.unwrap();
    let err = tokio::time::timeout(DEADLINE, conn.closed()).await.unwrap();
    match &err {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code, close_code::PROTOCOL.into());
            assert!(String::from_utf8_lossy(&c.reason).contains("older incarnation"));
        }
        other => panic!("unexpected {other:?}"),
    }
    b.shutdown().await;
}
