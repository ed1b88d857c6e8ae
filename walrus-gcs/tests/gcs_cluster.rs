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
        out.push(start_gcs(&ca, &name, socket, &addrs).await);
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
                    Some((
                        sender.0.to_string(),
                        String::from_utf8(payload.to_vec()).unwrap(),
                    ))
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

/// Issue 22: the peer set changes while the nodes run (`Gcs::set_peers`). n0 and n1 drop
/// n2: it is left out of their view (its connections refused from then on), while n0's
/// session keeps its group and hears n1's multicast; they take n2 back and all three
/// share a view again. Nobody restarts (same incarnations).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_removed_and_added_at_runtime_leave_and_join_the_view() {
    let names = ["n0", "n1", "n2"];
    let nodes = start_cluster(&names).await;
    let refs: Vec<&Gcs> = nodes.iter().collect();
    wait_view(&refs, &names).await;
    let group = GroupName::new("g");
    let mut s0 = nodes[0].open_session().await.unwrap();
    s0.join(group.clone()).await.unwrap();
    let addr = |i: usize| {
        let g: &Gcs = &nodes[i];
        (g.id().clone(), g.transport().local_addr().unwrap())
    };
    let before: Vec<_> = nodes.iter().map(Gcs::incarnation).collect();
    nodes[0].set_peers(&[addr(1)]).await.unwrap();
    nodes[1].set_peers(&[addr(0)]).await.unwrap();
    wait_view(&refs[..2], &names[..2]).await;
    let s1 = nodes[1].open_session().await.unwrap();
    s1.multicast(
        Service::Agreed,
        std::slice::from_ref(&group),
        b"after".to_vec(),
    )
    .await
    .unwrap();
    recv_until(&mut s0, "n1's multicast", |e| match e {
        Event::Message { payload, .. } if *payload == b"after"[..] => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(members(&nodes[2]).len(), 1, "n2 is alone");
    nodes[0].set_peers(&[addr(1), addr(2)]).await.unwrap();
    nodes[1].set_peers(&[addr(0), addr(2)]).await.unwrap();
    wait_view(&refs, &names).await;
    let after: Vec<_> = nodes.iter().map(Gcs::incarnation).collect();
    assert_eq!(before, after);
    for g in &nodes {
        g.shutdown().await;
    }
}

/// Issue 16: two processes prove node "a" with its genuine certificate. The one at a's
/// configured address keeps sending heartbeats; a second one from another address is held
/// for the probe window and then closed with `DUPLICATE` (it never replaces the live
/// link); the live link stays up. Then the other way round: a duplicate holds the link
/// first, and the process at the configured address evicts it with `DUPLICATE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_the_same_name_is_refused_as_a_duplicate() {
    use std::sync::Arc;
    use walrus_gcs::codec;
    use walrus_gcs::transport::{close_code, tls, PREAMBLE};
    use walrus_gcs::Heartbeat;
    use walrus_gcs::{Incarnation, NodeId, ViewId};

    let ca = Ca::new();
    let bound = bind(&["a", "b"]);
    let addrs: Vec<(String, std::net::SocketAddr)> =
        bound.iter().map(|(n, _, a)| (n.clone(), *a)).collect();
    let mut bound = bound.into_iter();
    let (_, sock_a, a_addr) = bound.next().unwrap();
    let (_, sock_b, b_addr) = bound.next().unwrap();
    let b = Gcs::start(GcsConfig {
        transport: config(&ca, "b", sock_b, &addrs, Limits::default()),
        core: CoreConfig::lan(),
        incarnation: None,
        // On the test's runtime: the other tests' nodes run on threads of their own.
        thread: walrus_gcs::GcsThread::Caller,
    })
    .await
    .unwrap();
    let client = tls::client_config(&ca.identity("a"), &Limits::default()).unwrap();
    // The process at a's configured address (its socket) and a duplicate elsewhere.
    let mut real = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        sock_a,
        Arc::new(quinn::TokioRuntime),
    )
    .unwrap();
    real.set_default_client_config(client.clone());
    let mut dup = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    dup.set_default_client_config(client);
    assert_ne!(dup.local_addr().unwrap(), a_addr);
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
    // Connects and sends a heartbeat every 100 ms until the connection closes.
    let live = |ep: &quinn::Endpoint, inc: u64| {
        let connecting = ep.connect(b_addr, "b").unwrap();
        async move {
            let conn = connecting.await.unwrap();
            let mut s = conn.open_uni().await.unwrap();
            s.write_all(&PREAMBLE).await.unwrap();
            let c = conn.clone();
            let silent = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let quiet = silent.clone();
            let task = tokio::spawn(async move {
                loop {
                    if quiet.load(std::sync::atomic::Ordering::Relaxed) {
                        // Silent, like a SIGKILLed process: the stream stays open.
                        std::future::pending::<()>().await;
                    }
                    let mut bytes = Vec::new();
                    codec::encode_frame(&("a", heartbeat(inc)), &mut bytes).unwrap();
                    if s.write_all(&bytes).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            (c, task, silent)
        }
    };
    let closed_code = |e: quinn::ConnectionError| match e {
        quinn::ConnectionError::ApplicationClosed(c) => (
            c.error_code,
            String::from_utf8_lossy(&c.reason).into_owned(),
        ),
        other => panic!("unexpected {other:?}"),
    };

    // 1. The real one first; the duplicate (a newer incarnation) is refused.
    let (real_conn, _real_task, real_silent) = live(&real, 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (dup_conn, _dup_task, _) = live(&dup, 9).await;
    let err = tokio::time::timeout(DEADLINE, dup_conn.closed())
        .await
        .unwrap();
    let (code, reason) = closed_code(err);
    assert_eq!(code, close_code::DUPLICATE.into(), "{reason}");
    assert!(reason.contains(&a_addr.to_string()), "{reason}");
    assert!(
        reason.contains(&dup.local_addr().unwrap().to_string()),
        "{reason}"
    );
    assert!(
        real_conn.close_reason().is_none(),
        "the live link must stay up"
    );

    // 2. The real one goes silent without a goodbye (SIGKILL): a newcomer from elsewhere
    //    replaces the silent link after the probe window.
    real_silent.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (dup_conn, dup_task, _) = live(&dup, 9).await;
    let quiet = tokio::time::timeout(Duration::from_secs(2), dup_conn.closed()).await;
    assert!(
        quiet.is_err(),
        "a silent link is replaced, not defended: {quiet:?}"
    );
    let old = tokio::time::timeout(DEADLINE, real_conn.closed())
        .await
        .unwrap();
    assert_eq!(closed_code(old).0, close_code::REPLACED.into());

    // 3. The process at the configured address comes back while the duplicate is live:
    //    the duplicate is evicted with DUPLICATE.
    let (real_conn, _real_task, _) = live(&real, 5).await;
    let err = tokio::time::timeout(DEADLINE, dup_conn.closed())
        .await
        .unwrap();
    let (code, reason) = closed_code(err);
    assert_eq!(code, close_code::DUPLICATE.into(), "{reason}");
    dup_task.abort();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(real_conn.close_reason().is_none());
    b.shutdown().await;
}

/// A group table larger than one frame (6,000 records of 200-byte group names, about
/// 1.4 MB against the codec's 1.06 MiB frame limit: what a few thousand client web hosts
/// bring) still lets the members change views: its records travel in chunks. Before, the
/// coordinator's `Install` could not be encoded and no view changed again. n0 holds the
/// records; n2 stops (the view shrinks) and starts again (it grows), and n2, new, learns
/// n0's memberships from the install.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_table_larger_than_a_frame_does_not_stop_view_changes() {
    const RECORDS: usize = 6_000;
    const SESSIONS: usize = 3;
    let names = ["n0", "n1", "n2"];
    let ca = Ca::new();
    let bound = bind(&names);
    let addrs: Vec<(String, std::net::SocketAddr)> =
        bound.iter().map(|(n, _, a)| (n.clone(), *a)).collect();
    let mut nodes = Vec::new();
    for (name, socket, _) in bound {
        nodes.push(start_gcs(&ca, &name, socket, &addrs).await);
    }
    let refs: Vec<&Gcs> = nodes.iter().collect();
    wait_view(&refs, &names).await;
    let group = |i: usize| GroupName::new(format!("{:-<190}{i:0>10}", "a-long-group-name"));
    let mut sessions = Vec::new();
    for s in 0..SESSIONS {
        let session = nodes[0].open_session().await.unwrap();
        for i in (s..RECORDS).step_by(SESSIONS) {
            session.join(group(i)).await.unwrap();
        }
        sessions.push(session);
    }
    // Every join is ordered once the last one's membership event arrives.
    let last = group(RECORDS - 1);
    recv_until(
        &mut sessions[(RECORDS - 1) % SESSIONS],
        "the last join",
        |e| matches!(e, Event::Membership { group, .. } if group == last).then_some(()),
    )
    .await;

    nodes[2].shutdown().await;
    let took = wait_view(&refs[..2], &names[..2]).await;
    eprintln!("view without n2 after {took:?}");
    drop(refs);
    drop(nodes.pop()); // lets its socket go
    nodes.push(start_gcs(&ca, "n2", rebind(addrs[2].1).await, &addrs).await);
    let refs: Vec<&Gcs> = nodes.iter().collect();
    let took = wait_view(&refs, &names).await;
    eprintln!("view with n2 again after {took:?}");

    // n2 knows n0's memberships: joining one of n0's groups lists n0's session first.
    let mut s2 = nodes[2].open_session().await.unwrap();
    let probe = group(RECORDS / 2);
    s2.join(probe.clone()).await.unwrap();
    let members = recv_until(&mut s2, "the probe group's membership", |e| match e {
        Event::Membership { group, members, .. } if group == probe => Some(members),
        _ => None,
    })
    .await;
    let nodes_listed: Vec<String> = members.iter().map(|m| m.node.to_string()).collect();
    assert_eq!(nodes_listed, ["n0", "n2"]);
    for g in &nodes {
        g.shutdown().await;
    }
}
