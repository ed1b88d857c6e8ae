//! The QUIC transport over real sockets on loopback: links form, messages arrive in
//! order, strangers are refused, garbage closes only the offender's link, limits hold,
//! the fault switch cuts and heals, and point-to-point streams work.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde::{Deserialize, Serialize};
use walrus_gcs::codec;
use walrus_gcs::transport::{
    close_code, partition, tls, Lane, Limits, Staged, Transport, TransportError, TransportEvent,
    MTU_UPPER_BOUND_MAX, PREAMBLE,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Msg {
    Hello(u64),
    Blob(Vec<u8>),
}

async fn all_up(nodes: &mut [(Transport<Msg>, Events<Msg>)]) {
    let names: Vec<String> = nodes.iter().map(|(t, _)| t.me().to_string()).collect();
    for (t, events) in nodes.iter_mut() {
        let others: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| *n != t.me().as_str())
            .collect();
        wait_all_up(events, &others).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_link_up_and_deliver_in_fifo_order() {
    let ca = Ca::new();
    let (mut nodes, _) = cluster::<Msg>(&ca, &["a", "b", "c"], &[], Limits::default()).await;
    all_up(&mut nodes).await;
    for k in 0..2000u64 {
        nodes[2].0.send(&id("a"), Msg::Hello(k)).unwrap();
        nodes[0].0.send(&id("c"), Msg::Hello(k)).unwrap();
    }
    for (idx, from) in [(0usize, "c"), (2, "a")] {
        let mut got = Vec::new();
        while got.len() < 2000 {
            match wait_for(&mut nodes[idx].1, "a message", |e| {
                matches!(e, TransportEvent::Message { .. })
            })
            .await
            {
                TransportEvent::Message { from: f, msg } => {
                    assert_eq!(f.as_str(), from);
                    got.push(msg);
                }
                _ => unreachable!(),
            }
        }
        let want: Vec<Msg> = (0..2000).map(Msg::Hello).collect();
        assert_eq!(got, want, "FIFO per link");
    }
    assert!(matches!(
        nodes[0].0.send(&id("zz"), Msg::Hello(0)),
        Err(TransportError::UnknownPeer { .. })
    ));
    for (t, _) in &nodes {
        t.shutdown().await;
    }
}

/// Frames staged during a turn and flushed at its end (the GCS driver's way) arrive in
/// order, also when a turn's frames pass `write_batch` and go out before the flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_frames_arrive_in_order_across_turns_and_write_batches() {
    let ca = Ca::new();
    let (mut nodes, _) = cluster::<Msg>(&ca, &["a", "b"], &[], Limits::default()).await;
    all_up(&mut nodes).await;
    let mut staged = Staged::default();
    let mut want = Vec::new();
    for turn in 0..50u64 {
        for k in 0..40u64 {
            let msg = if k % 10 == 9 {
                Msg::Blob(vec![turn as u8; 9000])
            } else {
                Msg::Hello(turn * 100 + k)
            };
            nodes[1]
                .0
                .stage(&mut staged, Lane::Data, &id("a"), &msg)
                .unwrap();
            want.push(msg);
        }
        assert!(nodes[1].0.flush_staged(&mut staged).is_empty());
        assert!(staged.is_empty());
    }
    assert!(matches!(
        nodes[1]
            .0
            .stage(&mut staged, Lane::Data, &id("zz"), &Msg::Hello(0)),
        Err(TransportError::UnknownPeer { .. })
    ));
    let mut got = Vec::new();
    while got.len() < want.len() {
        if let TransportEvent::Message { msg, .. } = wait_for(&mut nodes[0].1, "a message", |e| {
            matches!(e, TransportEvent::Message { .. })
        })
        .await
        {
            got.push(msg);
        }
    }
    assert_eq!(got, want, "FIFO per link across turns");
    for (t, _) in &nodes {
        t.shutdown().await;
    }
}

/// A control message sent after megabytes of data reaches the receiver's driver before
/// that data (its own stream, sent first, and its own receive queue taken first); data
/// keeps its FIFO order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_message_overtakes_queued_data() {
    let ca = Ca::new();
    let (mut nodes, _) = cluster::<Msg>(&ca, &["a", "b"], &[], Limits::default()).await;
    all_up(&mut nodes).await;
    const BLOBS: u64 = 1000;
    for k in 0..BLOBS {
        let mut blob = vec![0u8; 16 * 1024];
        blob[..8].copy_from_slice(&k.to_le_bytes());
        nodes[0].0.send(&id("b"), Msg::Blob(blob)).unwrap();
    }
    nodes[0]
        .0
        .send_on(Lane::Control, &id("b"), Msg::Hello(7))
        .unwrap();
    // Let the data pile up in b's receive queue (b's driver is not reading).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut data_before = 0u64;
    let mut seen_control = false;
    let mut next = 0u64;
    while next < BLOBS {
        match wait_for(&mut nodes[1].1, "a message", |e| {
            matches!(e, TransportEvent::Message { .. })
        })
        .await
        {
            TransportEvent::Message {
                msg: Msg::Hello(7), ..
            } => seen_control = true,
            TransportEvent::Message {
                msg: Msg::Blob(b), ..
            } => {
                assert_eq!(u64::from_le_bytes(b[..8].try_into().unwrap()), next);
                next += 1;
                if !seen_control {
                    data_before += 1;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(seen_control, "the control message never came");
    assert!(
        data_before < BLOBS / 2,
        "the control message waited behind {data_before} of {BLOBS} data messages"
    );
    for (t, _) in &nodes {
        t.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_another_ca_or_for_unknown_names_are_refused() {
    let ca = Ca::new();
    let other_ca = Ca::new();
    // "b" is real; "a" (sorts first, so it dials b) is the intruder slot.
    let bound = bind(&["a", "b"]);
    let addrs: Vec<_> = bound.iter().map(|(n, _, a)| (n.clone(), *a)).collect();
    let mut it = bound.into_iter();
    let (_, sock_a, _) = it.next().unwrap();
    let (_, sock_b, _) = it.next().unwrap();
    let (b, mut b_events) =
        Transport::<Msg>::start(config(&ca, "b", sock_b, &addrs, Limits::default()))
            .await
            .unwrap();

    // 1. Named "a" but issued by another CA (it trusts our CA, so it could talk to b).
    let forged = other_ca.identity("a");
    let forged = walrus_gcs::transport::NodeIdentity {
        ca: ca.ca.cert.clone(),
        ..forged
    };
    let cfg = walrus_gcs::transport::TransportConfig {
        me: id("a"),
        listen: walrus_gcs::transport::Listen::Socket(sock_a),
        peers: vec![(id("b"), addrs[1].1)],
        identity: forged,
        limits: Limits::default(),
    };
    let (intruder, mut intruder_events) = Transport::<Msg>::start(cfg).await.unwrap();
    // 2. From the right CA but naming a node that is not configured ("a-stranger" < "b").
    let stranger_id = ca.identity("a-stranger");
    let stranger_ep = raw_client(&stranger_id);
    let conn = stranger_ep
        .connect(addrs[1].1, "b")
        .unwrap()
        .await
        .expect("TLS itself succeeds: the CA signed it");
    let err = tokio::time::timeout(DEADLINE, conn.closed()).await.unwrap();
    assert!(
        matches!(&err, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == close_code::REFUSED.into()),
        "{err:?}"
    );

    let seen = drain_for(&mut b_events, Duration::from_secs(3)).await;
    assert!(seen.is_empty(), "b must not see the intruders: {seen:?}");
    // The forged certificate's handshake was refused and counted (for /metrics); the
    // stranger's passed TLS and was closed by name, which is not a handshake refusal.
    assert!(b.handshakes_refused() >= 1, "{}", b.handshakes_refused());
    let seen = drain_for(&mut intruder_events, Duration::from_millis(100)).await;
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, TransportEvent::LinkUp { .. })),
        "{seen:?}"
    );
    intruder.shutdown().await;
    drop(intruder);

    // Control: the genuine "a" on the same address gets in, so the refusal above was
    // about the certificate, not a broken setup.
    let sock_a = rebind(addrs[0].1).await;
    let (a, mut a_events) =
        Transport::<Msg>::start(config(&ca, "a", sock_a, &addrs, Limits::default()))
            .await
            .unwrap();
    wait_up(&mut b_events, "a").await;
    wait_up(&mut a_events, "b").await;
    a.shutdown().await;
    b.shutdown().await;
}

fn raw_client(identity: &walrus_gcs::transport::NodeIdentity) -> quinn::Endpoint {
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(tls::client_config(identity, &Limits::default()).unwrap());
    ep
}

/// Connects to `b` as "a" (a configured name with a genuine certificate), sends `bytes`
/// on the message stream and returns how the connection ended.
async fn send_raw(ca: &Ca, b_addr: std::net::SocketAddr, bytes: Vec<u8>) -> quinn::ConnectionError {
    let ep = raw_client(&ca.identity("a"));
    let conn = ep.connect(b_addr, "b").unwrap().await.unwrap();
    let mut s = conn.open_uni().await.unwrap();
    let _ = s.write_all(&bytes).await;
    let err = tokio::time::timeout(DEADLINE, conn.closed())
        .await
        .expect("b closes the connection");
    ep.close(0u32.into(), b"");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_garbage_is_dropped_while_the_rest_carry_on() {
    let ca = Ca::new();
    let a_addr = std::net::SocketAddr::from(([127, 0, 0, 1], walrus_testkit::free_udp_port()));
    let limits = Limits {
        max_frame: 4096,
        ..Limits::default()
    };
    let (mut nodes, addrs) =
        cluster::<Msg>(&ca, &["b", "c"], &[("a".to_string(), a_addr)], limits).await;
    let b_addr = addrs[0].1;
    wait_up(&mut nodes[0].1, "c").await;
    wait_up(&mut nodes[1].1, "b").await;

    let frame_from = |from: &str, msg: Msg| {
        let mut out = PREAMBLE.to_vec();
        codec::encode_frame(&(from.to_string(), msg), &mut out).unwrap();
        out
    };
    let mut oversize = PREAMBLE.to_vec();
    oversize.extend_from_slice(&[codec::FRAME_VERSION, 0xFF, 0xFF, 0xFF, 0xFF]);
    let mut over_limit = PREAMBLE.to_vec();
    over_limit.extend_from_slice(&[codec::FRAME_VERSION, 0, 0, 0x10, 0x01]); // 4097 > 4096
    let mut bad_body = PREAMBLE.to_vec();
    bad_body.extend_from_slice(&[codec::FRAME_VERSION, 0, 0, 0, 3, 0xFF, 0xFF, 0xFF]);
    let mut bad_version = PREAMBLE.to_vec();
    bad_version.extend_from_slice(&[9, 0, 0, 0, 1, 0]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("oversize length", oversize),
        ("over the configured limit", over_limit),
        ("undecodable body", bad_body),
        ("wrong frame version", bad_version),
        (
            "name in frame differs from certificate",
            frame_from("c", Msg::Hello(1)),
        ),
    ];
    for (k, (what, bytes)) in cases.into_iter().enumerate() {
        let err = send_raw(&ca, b_addr, bytes).await;
        assert!(
            matches!(&err, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == close_code::PROTOCOL.into()),
            "{what}: {err:?}"
        );
        // The honest link carries on.
        nodes[1].0.send(&id("b"), Msg::Hello(k as u64)).unwrap();
        let e = wait_for(&mut nodes[0].1, "c's message", |e| {
            matches!(e, TransportEvent::Message { .. })
        })
        .await;
        match e {
            TransportEvent::Message { from, msg } => {
                assert_eq!(
                    from.as_str(),
                    "c",
                    "{what}: nothing may be delivered from the garbage peer"
                );
                assert_eq!(msg, Msg::Hello(k as u64));
            }
            _ => unreachable!(),
        }
    }
    // Control: a well-formed frame from the same raw client is delivered, so the
    // closures above were caused by the garbage.
    let ep = raw_client(&ca.identity("a"));
    let conn = ep.connect(b_addr, "b").unwrap().await.unwrap();
    let mut s = conn.open_uni().await.unwrap();
    s.write_all(&frame_from("a", Msg::Blob(vec![7; 100])))
        .await
        .unwrap();
    let e = wait_for(&mut nodes[0].1, "a's good frame", |e| {
        matches!(e, TransportEvent::Message { .. })
    })
    .await;
    assert!(
        matches!(e, TransportEvent::Message { from, msg: Msg::Blob(_) } if from.as_str() == "a")
    );
    conn.close(0u32.into(), b"");
    for (t, _) in &nodes {
        t.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_receivers_limit_closes_the_link_and_it_reconnects() {
    let ca = Ca::new();
    let limits = Limits {
        max_frame: 1024,
        backoff_min: Duration::from_millis(20),
        ..Limits::default()
    };
    let (mut nodes, _) = cluster::<Msg>(&ca, &["a", "b"], &[], limits).await;
    wait_up(&mut nodes[0].1, "b").await;
    wait_up(&mut nodes[1].1, "a").await;
    nodes[0].0.send(&id("b"), Msg::Blob(vec![1; 2048])).unwrap();
    let reason = wait_down(&mut nodes[0].1, "b").await;
    assert!(reason.contains("over the limit"), "{reason}");
    // a dials again; the link comes back and small messages flow.
    wait_up(&mut nodes[0].1, "b").await;
    nodes[0].0.send(&id("b"), Msg::Hello(5)).unwrap();
    let e = wait_for(&mut nodes[1].1, "the small message", |e| {
        matches!(e, TransportEvent::Message { .. })
    })
    .await;
    assert!(matches!(
        e,
        TransportEvent::Message {
            msg: Msg::Hello(5),
            ..
        }
    ));
    for (t, _) in &nodes {
        t.shutdown().await;
    }
}

/// b never reads its events: its event queue fills, QUIC flow control stops a's writer,
/// a's queue fills, and a closes the link rather than buffer more.
async fn overflow_with(limits: Limits) -> (u64, TransportError) {
    let ca = Ca::new();
    let (mut nodes, _) = cluster::<Msg>(&ca, &["a", "b"], &[], limits).await;
    wait_up(&mut nodes[0].1, "b").await;
    wait_up(&mut nodes[1].1, "a").await;
    let mut full = None;
    for k in 0..200_000u64 {
        match nodes[0].0.send(&id("b"), Msg::Blob(vec![0; 1000])) {
            Ok(()) => {}
            Err(e) => {
                full = Some((k, e));
                break;
            }
        }
        if k % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let full = full.expect("the queue must overflow");
    wait_down(&mut nodes[0].1, "b").await;
    for (t, _) in &nodes {
        t.shutdown().await;
    }
    full
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_send_queue_closes_the_link_instead_of_growing() {
    // Bounded in messages (the receiver's event queue in messages too).
    let (k, e) = overflow_with(Limits {
        peer_queue: 8,
        event_queue: 4,
        stream_receive_window: 8 * 1024,
        receive_window: 16 * 1024,
        ..Limits::default()
    })
    .await;
    assert!(
        matches!(e, TransportError::QueueFull { limit: 8, .. }),
        "{e:?}"
    );
    assert!(k < 1000, "{k} messages of 1000 bytes accepted");
    // Bounded in bytes (the receiver's event queue in bytes too).
    let (k, e) = overflow_with(Limits {
        peer_queue_bytes: 32 * 1024,
        event_queue_bytes: 8 * 1024,
        stream_receive_window: 8 * 1024,
        receive_window: 16 * 1024,
        ..Limits::default()
    })
    .await;
    assert!(
        matches!(
            e,
            TransportError::QueueFull {
                limit_bytes: 32768,
                ..
            }
        ),
        "{e:?}"
    );
    // 16 384 messages would fit the count limit: the byte limit is what stopped it.
    assert!(k < 1000, "{k} messages of 1000 bytes accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_switch_partitions_and_heals_real_links() {
    let ca = Ca::new();
    let limits = Limits {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..Limits::default()
    };
    let names = ["a", "b", "c"];
    let (mut nodes, _) = cluster::<Msg>(&ca, &names, &[], limits).await;
    all_up(&mut nodes).await;
    let ts: Vec<&Transport<Msg>> = nodes.iter().map(|(t, _)| t).collect();
    partition(&ts, &[&["a", "b"], &["c"]]);
    let mut lost = std::collections::BTreeSet::new();
    while lost.len() < 2 {
        if let TransportEvent::LinkDown { peer, .. } =
            wait_for(&mut nodes[2].1, "c loses a and b", |e| {
                matches!(e, TransportEvent::LinkDown { .. })
            })
            .await
        {
            lost.insert(peer.to_string());
        }
    }
    wait_down(&mut nodes[0].1, "c").await;
    // Cut links stay down: a's dialer does not reconnect while cut.
    let seen = drain_for(&mut nodes[2].1, Duration::from_millis(800)).await;
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, TransportEvent::LinkUp { .. })),
        "{seen:?}"
    );
    assert!(matches!(
        nodes[2].0.send(&id("a"), Msg::Hello(0)),
        Err(TransportError::NoLink { .. })
    ));
    // a-b is untouched.
    nodes[0].0.send(&id("b"), Msg::Hello(42)).unwrap();
    let e = wait_for(&mut nodes[1].1, "a→b", |e| {
        matches!(e, TransportEvent::Message { .. })
    })
    .await;
    assert!(matches!(
        e,
        TransportEvent::Message {
            msg: Msg::Hello(42),
            ..
        }
    ));
    let ts: Vec<&Transport<Msg>> = nodes.iter().map(|(t, _)| t).collect();
    partition(&ts, &[&["a", "b", "c"]]);
    wait_all_up(&mut nodes[2].1, &["a", "b"]).await;
    nodes[0].0.send(&id("c"), Msg::Hello(7)).unwrap();
    let e = wait_for(&mut nodes[2].1, "a→c", |e| {
        matches!(e, TransportEvent::Message { .. })
    })
    .await;
    assert!(matches!(
        e,
        TransportEvent::Message {
            msg: Msg::Hello(7),
            ..
        }
    ));
    for (t, _) in &nodes {
        t.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_reconnects_and_point_to_point_streams_work() {
    let ca = Ca::new();
    let limits = Limits {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..Limits::default()
    };
    let (mut nodes, addrs) = cluster::<Msg>(&ca, &["a", "b"], &[], limits.clone()).await;
    wait_up(&mut nodes[0].1, "b").await;
    wait_up(&mut nodes[1].1, "a").await;

    // A point-to-point stream a → b.
    let a = nodes[0].0.clone();
    let writer = tokio::spawn(async move {
        let (mut send, mut recv) = a.open_stream(&id("b")).await.unwrap();
        send.write_all(b"file chunk").await.unwrap();
        send.finish().unwrap();
        recv.read_to_end(1024).await.unwrap()
    });
    let mut incoming = tokio::time::timeout(DEADLINE, nodes[1].0.accept_stream())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(incoming.peer, id("a"));
    assert_eq!(
        incoming.recv.read_to_end(1024).await.unwrap(),
        b"file chunk"
    );
    incoming.send.write_all(b"ack").await.unwrap();
    incoming.send.finish().unwrap();
    assert_eq!(writer.await.unwrap(), b"ack");
    drop(incoming); // its streams keep b's connection (and socket) alive

    // b (the acceptor) stops and restarts on the same port: a's link goes down and comes
    // back.
    let (b, _old_events) = nodes.pop().unwrap();
    b.shutdown().await;
    drop(b);
    wait_down(&mut nodes[0].1, "b").await;
    let sock = rebind(addrs[1].1).await;
    let (b2, mut b2_events) = Transport::<Msg>::start(config(&ca, "b", sock, &addrs, limits))
        .await
        .unwrap();
    wait_up(&mut nodes[0].1, "b").await;
    wait_up(&mut b2_events, "a").await;
    nodes[0].0.send(&id("b"), Msg::Hello(9)).unwrap();
    let e = wait_for(&mut b2_events, "a→b2", |e| {
        matches!(e, TransportEvent::Message { .. })
    })
    .await;
    assert!(matches!(
        e,
        TransportEvent::Message {
            msg: Msg::Hello(9),
            ..
        }
    ));
    b2.shutdown().await;
    nodes[0].0.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_udp_socket_gets_the_buffer_the_limits_ask_for() {
    let ca = Ca::new();
    let bound = bind(&["a"]);
    let (_, socket, _) = bound.into_iter().next().unwrap();
    let probe = socket.try_clone().unwrap();
    let before = socket2::SockRef::from(&probe).recv_buffer_size().unwrap();
    let limits = Limits::default();
    let want = limits.udp_buffer_bytes;
    let _t = Transport::<Msg>::start(config(&ca, "a", socket, &[], limits))
        .await
        .unwrap();
    let got = socket2::SockRef::from(&probe).recv_buffer_size().unwrap();
    // Linux grants at most net.core.rmem_max (and reports twice what it grants).
    let cap: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(usize::MAX);
    assert!(
        got >= want.min(cap),
        "receive buffer {got} (was {before}), asked {want}, rmem_max {cap}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_stream_on_loopback_uses_large_packets_in_offloaded_batches() {
    // Loopback's MTU is 65 536: discovery should climb to the configured bound, and the
    // sender should hand the kernel several datagrams per send (segmentation offload). A
    // bound whose 10-datagram batches pass 64 KiB loses every batch and collapses to 1 200
    // bytes instead (see MTU_UPPER_BOUND_MAX); `start` refuses such a bound.
    let ca = Ca::new();
    let too_big = Limits {
        mtu_upper_bound: MTU_UPPER_BOUND_MAX + 1,
        ..Limits::default()
    };
    let (_, socket, _) = bind(&["x"]).into_iter().next().unwrap();
    let refused = Transport::<Msg>::start(config(&ca, "x", socket, &[], too_big)).await;
    assert!(
        matches!(&refused, Err(TransportError::Config(m)) if m.contains("mtu_upper_bound")),
        "{:?}",
        refused.err()
    );

    let (mut nodes, _) = cluster::<Msg>(&ca, &["a", "b"], &[], Limits::default()).await;
    all_up(&mut nodes).await;
    let a = nodes[0].0.clone();
    let writer = tokio::spawn(async move {
        let (mut send, _recv) = a.open_stream(&id("b")).await.unwrap();
        let chunk = vec![0x5au8; 1 << 20];
        for _ in 0..64 {
            send.write_all(&chunk).await.unwrap();
        }
        send.finish().unwrap();
        send.stopped().await.unwrap();
    });
    let mut incoming = tokio::time::timeout(DEADLINE, nodes[1].0.accept_stream())
        .await
        .unwrap()
        .unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    while let Some(n) = incoming.recv.read(&mut buf).await.unwrap() {
        got += n;
    }
    assert_eq!(got, 64 << 20);
    writer.await.unwrap();
    let s = nodes[0].0.link_stats(&id("b")).unwrap();
    assert_eq!(s.black_holes, 0, "{s:?}");
    assert!(s.mtu > 1452 && s.mtu <= MTU_UPPER_BOUND_MAX, "{s:?}");
    assert!(s.udp_datagrams_sent > 2 * s.udp_sends, "{s:?}");
    for (t, _) in &nodes {
        t.shutdown().await;
    }
}
