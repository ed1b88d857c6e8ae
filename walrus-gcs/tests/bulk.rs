//! The TLS-over-TCP bulk streams over real sockets on loopback: bytes flow both ways and
//! the accepting side learns the peer's name; a certificate from another CA, a
//! certificate naming no configured peer, and a server that is not the peer dialed are
//! all refused. Links negotiate AES-128-GCM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::Ca;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use walrus_gcs::transport::bulk::TcpStreams;
use walrus_gcs::transport::{Limits, NodeIdentity};
use walrus_gcs::NodeId;

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A node that only accepts, letting in the peers `names` (their addresses unused).
async fn acceptor(id: &NodeIdentity, names: &[&str]) -> Arc<TcpStreams> {
    let peers = names
        .iter()
        .map(|n| (NodeId::new(*n), "127.0.0.1:9".parse().unwrap()))
        .collect();
    Arc::new(
        TcpStreams::bind(any(), peers, id, &Limits::default())
            .await
            .unwrap(),
    )
}

/// A node that dials `peer` at `addr`.
async fn dialer(id: &NodeIdentity, peer: &str, addr: SocketAddr) -> TcpStreams {
    TcpStreams::bind(
        any(),
        vec![(NodeId::new(peer), addr)],
        id,
        &Limits::default(),
    )
    .await
    .unwrap()
}

/// Whether `b` accepts a stream within half a second.
async fn accepts(b: &TcpStreams) -> Option<NodeId> {
    tokio::time::timeout(Duration::from_millis(500), b.accept())
        .await
        .ok()
        .flatten()
        .map(|(peer, _)| peer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_flow_both_ways_and_the_acceptor_learns_the_peer() {
    let ca = Ca::new();
    let b = acceptor(&ca.identity("b"), &["a"]).await;
    let a = dialer(&ca.identity("a"), "b", b.local_addr()).await;
    let mut out = a.open(&NodeId::new("b")).await.unwrap();
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        out.write_all(&sent).await.unwrap();
        out.flush().await.unwrap();
        let mut reply = [0u8; 2];
        out.read_exact(&mut reply).await.unwrap();
        reply
    });
    let (peer, mut inc) = b.accept().await.unwrap();
    assert_eq!(peer, NodeId::new("a"));
    // Both ends prefer AES-128-GCM (the faster suite with AES instructions).
    let suite = inc.get_ref().1.negotiated_cipher_suite().map(|s| s.suite());
    assert_eq!(suite, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
    let mut got = vec![0u8; payload.len()];
    inc.read_exact(&mut got).await.unwrap();
    assert!(got == payload, "the bytes changed on the way");
    inc.write_all(b"ok").await.unwrap();
    inc.flush().await.unwrap();
    assert_eq!(&writer.await.unwrap(), b"ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() {
    let (ca, other) = (Ca::new(), Ca::new());
    let b = acceptor(&ca.identity("b"), &["a"]).await;
    // Same name, foreign CA: b's verifier refuses it during the handshake.
    let mut stranger = other.identity("a");
    stranger.ca = ca.ca.cert.clone();
    let a = dialer(&stranger, "b", b.local_addr()).await;
    if let Ok(mut s) = a.open(&NodeId::new("b")).await {
        // TLS 1.3: the client may finish first; the server's alert then ends the stream.
        let _ = s.write_all(b"hello").await;
        let mut buf = [0u8; 1];
        assert!(!matches!(s.read(&mut buf).await, Ok(n) if n > 0));
    }
    assert_eq!(accepts(&b).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_naming_no_configured_peer_is_refused() {
    let ca = Ca::new();
    let b = acceptor(&ca.identity("b"), &["a"]).await;
    let mallory = dialer(&ca.identity("mallory"), "b", b.local_addr()).await;
    if let Ok(mut s) = mallory.open(&NodeId::new("b")).await {
        let _ = s.write_all(b"hello").await;
    }
    assert_eq!(accepts(&b).await, None);
    // The check is on the name, not on the connection: a configured peer still gets in.
    let a = dialer(&ca.identity("a"), "b", b.local_addr()).await;
    let _s = a.open(&NodeId::new("b")).await.unwrap();
    assert_eq!(accepts(&b).await, Some(NodeId::new("a")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_must_be_the_peer_dialed() {
    let ca = Ca::new();
    // c answers where a believes b is.
    let c = acceptor(&ca.identity("c"), &["a"]).await;
    let a = dialer(&ca.identity("a"), "b", c.local_addr()).await;
    let e = a.open(&NodeId::new("b")).await.unwrap_err();
    assert!(e.to_string().contains("connect to b"), "{e}");
    assert!(a.open(&NodeId::new("zed")).await.is_err(), "unknown peer");
}
