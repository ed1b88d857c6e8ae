//! The actors' group layer on a client node ([`walrus_actors::group::client::ClientLayer`])
//! over a real walrus-gcs client link (QUIC, mutual TLS, loopback): two members serving
//! clients and one client attached to the first, then failing over to the second.
//!
//! What the actors rely on: `settled` completes once attached; a session joins a group and
//! its multicasts reach a member's session with the client's id and the hosting member as
//! sender; the session's `member()` is the client's own (`client.…`) identity, and the
//! membership lists name the hosting member instead; after the hosting member stops, the
//! same session's multicasts go on through the next member.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;
use walrus_actors::group::client::ClientLayer;
use walrus_actors::group::{GroupLayer, GroupSession};
use walrus_gcs::tier::ClientLinkConfig;
use walrus_gcs::transport::certs::{self, CertifiedKey, NodeIdentity};
use walrus_gcs::transport::Limits;
use walrus_gcs::{Event, Gcs, GroupName, NodeId, Service, Session};
use walrus_testkit::actors::group::start_members;

const WAIT: Duration = Duration::from_secs(30);

/// Members `names` on loopback, each serving clients; with their client listeners.
async fn members(ca: &CertifiedKey, names: &[&str]) -> (Vec<Gcs>, Vec<(NodeId, SocketAddr)>) {
    let nodes = start_members(ca, names).await;
    let listeners = nodes
        .iter()
        .map(|gcs| {
            let at = gcs
                .serve_clients(
                    &identity(ca, gcs.id().as_str()),
                    "127.0.0.1:0".parse().unwrap(),
                )
                .unwrap();
            (gcs.id().clone(), at)
        })
        .collect();
    (nodes, listeners)
}

fn identity(ca: &CertifiedKey, name: &str) -> NodeIdentity {
    NodeIdentity::issued_by(ca, name).unwrap()
}

/// The next message on `s` (skipping membership events), with its sender and client id.
async fn next_message(s: &mut Session) -> (NodeId, Option<String>, Vec<u8>) {
    loop {
        match tokio::time::timeout(WAIT, s.recv()).await.unwrap().unwrap() {
            Event::Message {
                sender,
                payload,
                client,
                ..
            } => {
                return (
                    sender.0,
                    client.map(|c| c.client.as_str().to_owned()),
                    payload.to_vec(),
                )
            }
            _ => continue,
        }
    }
}

/// Multicasts `payload` from the client's `session` to `group` and checks that `watcher`
/// gets it with the client's id, through member `via`.
async fn send_and_see<S: GroupSession>(
    session: &S,
    group: &GroupName,
    watcher: &mut Session,
    payload: &[u8],
    via: &str,
) {
    session
        .multicast(
            Service::Agreed,
            std::slice::from_ref(group),
            payload.to_vec(),
        )
        .await
        .unwrap();
    let (sender, client, got) = next_message(watcher).await;
    assert_eq!(
        (sender.as_str(), client.as_deref(), &got[..]),
        (via, Some("client.w1"), payload)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_nodes_sessions_join_multicast_and_fail_over() {
    let ca = certs::create_ca().unwrap();
    let (nodes, listeners) = members(&ca, &["m1", "m2"]).await;
    let group = GroupName::new("G");
    // A member session in G (on m2, which stays up).
    let mut watcher = nodes[1].open_session().await.unwrap();
    watcher.join(group.clone()).await.unwrap();

    let layer = ClientLayer::attach(ClientLinkConfig {
        identity: identity(&ca, "client.w1"),
        name: NodeId::new("client.w1"),
        incarnation: None,
        members: listeners.clone(),
        local: None,
        window: 64,
        retry: Duration::from_millis(50),
        limits: Limits::lan(),
        thread: walrus_gcs::GcsThread::Own,
    })
    .await
    .unwrap();
    let missing = tokio::time::timeout(WAIT, layer.settled(WAIT, &[]))
        .await
        .unwrap();
    assert!(missing.is_empty(), "{missing:?}");
    assert_eq!(*layer.watch_member().borrow(), Some(NodeId::new("m1")));

    let mut session = layer.open_session().await.unwrap();
    assert_eq!(session.member().node, NodeId::new("client.w1"));
    session.join(group.clone()).await.unwrap();
    // The client sees its own join; the list names its member (m1), not the client.
    let members = loop {
        match tokio::time::timeout(WAIT, session.recv())
            .await
            .unwrap()
            .unwrap()
        {
            Event::Membership { members, .. } if members.len() == 2 => break members,
            _ => continue,
        }
    };
    let nodes_listed: Vec<&str> = members.iter().map(|m| m.node.as_str()).collect();
    assert!(nodes_listed.contains(&"m1"), "{nodes_listed:?}");
    assert!(!nodes_listed.contains(&"client.w1"), "{nodes_listed:?}");

    send_and_see(&session, &group, &mut watcher, b"one", "m1").await;

    // m1 stops: the client attaches to m2 and the same session goes on.
    nodes[0].shutdown().await;
    let mut member = layer.watch_member();
    tokio::time::timeout(
        WAIT,
        member.wait_for(|m| m.as_ref().is_some_and(|m| m.as_str() == "m2")),
    )
    .await
    .unwrap()
    .unwrap();
    send_and_see(&session, &group, &mut watcher, b"two", "m2").await;
    session.close().await;
    layer.shutdown().await;
    nodes[1].shutdown().await;
}
