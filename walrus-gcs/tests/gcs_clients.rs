//! Clients over real QUIC on loopback (`PROTOCOL.md`, "Clients"): three members and two
//! clients in one process. The clients attach to the first member of their lists; a
//! local session on another member sees their joins; the first member is shut down
//! while a client is sending: both clients attach to the next member, the groups see
//! the membership change, and every message of the sending client arrives exactly
//! once, in order, at the local session (nothing it was told was delivered is lost,
//! nothing sent again is delivered twice). A member's certificate cannot attach as a
//! client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use walrus_gcs::tier::{Client, ClientLinkConfig, ClientSession};
use walrus_gcs::transport::Limits;
use walrus_gcs::{Event, Gcs, GroupName, MembershipReason, NodeId, Service, Session};

const LONG: Duration = Duration::from_secs(30);

/// Members `names`, each also listening for clients; returns them and their client
/// listeners' addresses.
async fn members(ca: &Ca, names: &[&str]) -> (Vec<Gcs>, Vec<(NodeId, std::net::SocketAddr)>) {
    members_on(ca, names, "127.0.0.1").await
}

/// [`members`] with every address on loopback address `ip`.
async fn members_on(
    ca: &Ca,
    names: &[&str],
    ip: &str,
) -> (Vec<Gcs>, Vec<(NodeId, std::net::SocketAddr)>) {
    let any: std::net::SocketAddr = std::net::SocketAddr::new(ip.parse().unwrap(), 0);
    let bound: Vec<(String, std::net::UdpSocket, std::net::SocketAddr)> = names
        .iter()
        .map(|n| {
            let s = std::net::UdpSocket::bind(any).unwrap();
            let a = s.local_addr().unwrap();
            (n.to_string(), s, a)
        })
        .collect();
    let addrs: Vec<(String, std::net::SocketAddr)> =
        bound.iter().map(|(n, _, a)| (n.clone(), *a)).collect();
    let mut nodes = Vec::new();
    let mut listeners = Vec::new();
    for (name, socket, _) in bound {
        let gcs = start_gcs(ca, &name, socket, &addrs).await;
        let at = gcs.serve_clients(&ca.identity(&name), any).unwrap();
        listeners.push((NodeId::new(name), at));
        nodes.push(gcs);
    }
    (nodes, listeners)
}

fn client_config(
    ca: &Ca,
    name: &str,
    order: &[usize],
    listeners: &[(NodeId, std::net::SocketAddr)],
) -> ClientLinkConfig {
    ClientLinkConfig {
        identity: ca.identity(name),
        name: NodeId::new(name),
        incarnation: None,
        members: order.iter().map(|i| listeners[*i].clone()).collect(),
        local: None,
        window: 64,
        retry: Duration::from_millis(50),
        limits: Limits::lan(),
        thread: walrus_gcs::GcsThread::Own,
    }
}

/// Waits for a membership event of `g` listing `n` members at local session `s`.
async fn wait_members(s: &mut Session, n: usize) -> Vec<Event> {
    let mut seen = Vec::new();
    let fut = async {
        loop {
            let e = s.recv().await.expect("session ended");
            seen.push(e.clone());
            if matches!(&e, Event::Membership { members, .. } if members.len() == n) {
                return;
            }
        }
    };
    tokio::time::timeout(LONG, fut)
        .await
        .unwrap_or_else(|_| panic!("no list of {n} members: {seen:?}"));
    seen
}

async fn wait_member(c: &Client, want: &str) {
    let mut w = c.watch_member();
    tokio::time::timeout(
        LONG,
        w.wait_for(|m| m.as_ref().is_some_and(|m| m.as_str() == want)),
    )
    .await
    .unwrap_or_else(|_| panic!("client never attached to {want}"))
    .unwrap();
}

/// Waits until member `m` lists exactly `clients` as attached ([`Gcs::watch_clients`]).
async fn wait_clients(m: &Gcs, clients: &[&str]) {
    let mut w = m.watch_clients();
    let want: Vec<NodeId> = clients.iter().map(|c| NodeId::new(*c)).collect();
    let got = tokio::time::timeout(LONG, w.wait_for(|l| *l == want))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(got, "{} lists {:?}, not {want:?}", m.id(), *w.borrow());
}

/// Client session `s` multicasts messages `a<i>` for `i` in `range`.
async fn send_range(s: &ClientSession, g: &GroupName, range: std::ops::Range<u32>) {
    for i in range {
        s.multicast(
            Service::Agreed,
            std::slice::from_ref(g),
            format!("a{i:03}").into_bytes(),
        )
        .await
        .unwrap();
    }
}

async fn drain_client(s: &mut ClientSession, until: Duration) -> Vec<Event> {
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + until;
    while let Ok(Some(e)) = tokio::time::timeout_at(end, s.recv()).await {
        out.push(e);
    }
    out
}

fn payloads(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { payload, .. } => Some(String::from_utf8(payload.to_vec()).unwrap()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_fail_over_and_lose_nothing_they_were_told_was_delivered() {
    let ca = Ca::new();
    let (nodes, listeners) = members(&ca, &["m1", "m2", "m3"]).await;
    let g = GroupName::new("g");
    // Wait for one view of the three members.
    let start = Instant::now();
    while nodes
        .iter()
        .any(|n| n.view().is_none_or(|v| v.members.len() != 3))
    {
        assert!(start.elapsed() < LONG, "no view of three members");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut observer = nodes[2].open_session().await.unwrap();
    observer.join(g.clone()).await.unwrap();
    wait_members(&mut observer, 1).await;

    let a = Client::attach(client_config(&ca, "client.a", &[0, 1, 2], &listeners))
        .await
        .unwrap();
    let b = Client::attach(client_config(&ca, "client.b", &[0, 2, 1], &listeners))
        .await
        .unwrap();
    wait_member(&a, "m1").await;
    wait_member(&b, "m1").await;
    // The member lists the clients attached to it.
    wait_clients(&nodes[0], &["client.a", "client.b"]).await;
    let sa = a.open_session().await.unwrap();
    let mut sb = b.open_session().await.unwrap();
    sa.join(g.clone()).await.unwrap();
    wait_members(&mut observer, 2).await;
    sb.join(g.clone()).await.unwrap();
    wait_members(&mut observer, 3).await;

    // Twenty messages, all confirmed ("told delivered").
    send_range(&sa, &g, 0..20).await;
    let t = Instant::now();
    while a.unconfirmed().await.unwrap() > 0 {
        assert!(t.elapsed() < LONG, "never confirmed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Twenty more, and the member goes away while they are on their way.
    send_range(&sa, &g, 20..40).await;
    let in_flight = a.unconfirmed().await.unwrap();
    nodes[0].shutdown().await;
    eprintln!("m1 shut down with {in_flight} messages of client.a not yet confirmed");
    wait_member(&a, "m2").await;
    wait_member(&b, "m3").await;
    wait_clients(&nodes[1], &["client.a"]).await;
    wait_clients(&nodes[2], &["client.b"]).await;
    // And twenty after the fail-over.
    send_range(&sa, &g, 40..60).await;
    let t = Instant::now();
    while a.unconfirmed().await.unwrap() > 0 {
        assert!(t.elapsed() < LONG, "never confirmed after the fail-over");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // The local session on m3 got every message of client.a once, in order, and saw
    // the clients' sessions leave with m1 and come back through m2 and m3.
    let mut got = Vec::new();
    let mut events = Vec::new();
    let fut = async {
        while got.len() < 60 {
            let e = observer.recv().await.expect("observer ended");
            if let Event::Message { payload, .. } = &e {
                got.push(String::from_utf8(payload.to_vec()).unwrap());
            }
            events.push(e);
        }
    };
    tokio::time::timeout(LONG, fut)
        .await
        .unwrap_or_else(|_| panic!("observer got only {got:?}; events {events:?}"));
    let want: Vec<String> = (0..60).map(|i| format!("a{i:03}")).collect();
    assert_eq!(got, want, "lost, duplicated or reordered");
    let reasons: BTreeSet<MembershipReason> = events
        .iter()
        .filter_map(|e| match e {
            Event::Membership { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert!(
        reasons.contains(&MembershipReason::Network) && reasons.contains(&MembershipReason::Join),
        "no membership change seen: {events:?}"
    );
    // Both clients are members again (through m2 and m3), with the observer.
    let network = events
        .iter()
        .position(|e| {
            matches!(
                e,
                Event::Membership {
                    reason: MembershipReason::Network,
                    ..
                }
            )
        })
        .unwrap();
    let back = events[network..]
        .iter()
        .any(|e| matches!(e, Event::Membership { members, .. } if members.len() == 3));
    if !back {
        wait_members(&mut observer, 3).await;
    }
    // client.b's session got no message twice.
    let seen = payloads(&drain_client(&mut sb, Duration::from_millis(500)).await);
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "client.b got a message twice: {seen:?}"
    );
    assert!(
        seen.iter().any(|p| p == "a059"),
        "client.b missed the last: {seen:?}"
    );

    // The links' counters: attached twice (m1, then m2 or m3), one link lost, client.a's
    // sixty multicasts all confirmed, client.b's session given each of them.
    let (sa_stats, sb_stats) = (a.stats(), b.stats());
    assert_eq!(
        (
            sa_stats.attachments,
            sa_stats.links_lost,
            sa_stats.multicasts
        ),
        (2, 1, 60),
        "{sa_stats:?}"
    );
    assert_eq!(sa_stats.unconfirmed, 0, "{sa_stats:?}");
    assert_eq!(
        (sb_stats.attachments, sb_stats.links_lost),
        (2, 1),
        "{sb_stats:?}"
    );
    // client.b's sessions close with its link to m1 and open again through m3 (a Gone,
    // then a Join): what a client sends between the two is not delivered to them, so
    // the counter matches what the session got, not all sixty.
    assert_eq!(sb_stats.delivered, seen.len() as u64, "{sb_stats:?}");

    a.shutdown().await;
    b.shutdown().await;
    for n in &nodes[1..] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_certificate_cannot_attach_as_a_client() {
    let ca = Ca::new();
    let (nodes, listeners) = members(&ca, &["m1"]).await;
    // m2's certificate, calling itself a client: refused.
    let mut cfg = client_config(&ca, "m2", &[0], &listeners);
    cfg.name = NodeId::new("client.m2");
    let c = Client::attach(cfg).await.unwrap();
    let mut w = c.watch_member();
    let attached = tokio::time::timeout(Duration::from_secs(2), w.wait_for(|m| m.is_some())).await;
    assert!(
        attached.is_err(),
        "a member's certificate attached as a client"
    );
    c.shutdown().await;
    nodes[0].shutdown().await;
}

/// Members whose links and client listeners are on the IPv6 loopback (`[::1]`): a client
/// attaches to one and its messages reach a member's local session. (Until December 2026
/// a client's endpoint was bound to `0.0.0.0` and could not reach an IPv6 member.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_attaches_to_members_on_the_ipv6_loopback() {
    if let Err(e) = std::net::UdpSocket::bind("[::1]:0") {
        // A machine with IPv6 switched off (some containers): nothing to test here.
        eprintln!("SKIPPED: this machine has no IPv6 loopback ([::1]: {e})");
        return;
    }
    let ca = Ca::new();
    let (nodes, listeners) = members_on(&ca, &["m1", "m2"], "::1").await;
    let g = GroupName::new("g");
    let mut observer = nodes[1].open_session().await.unwrap();
    observer.join(g.clone()).await.unwrap();
    wait_members(&mut observer, 1).await;

    let c = Client::attach(client_config(&ca, "client.v6", &[0, 1], &listeners))
        .await
        .unwrap();
    wait_member(&c, "m1").await;
    let s = c.open_session().await.unwrap();
    s.join(g.clone()).await.unwrap();
    wait_members(&mut observer, 2).await;
    send_range(&s, &g, 0..5).await;
    let got = tokio::time::timeout(LONG, async {
        let mut got = Vec::new();
        while got.len() < 5 {
            if let Event::Message { payload, .. } = observer.recv().await.expect("session ended") {
                got.push(String::from_utf8(payload.to_vec()).unwrap());
            }
        }
        got
    })
    .await
    .expect("the client's messages never arrived");
    assert_eq!(got, ["a000", "a001", "a002", "a003", "a004"]);
    c.shutdown().await;
    for n in nodes {
        n.shutdown().await;
    }
}

/// A client given a local address sends from it (the host's declared address, so the
/// members' firewalls and logs see that host): its endpoint's socket is bound there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sends_from_the_local_address_it_is_given() {
    let ca = Ca::new();
    let (nodes, listeners) = members(&ca, &["m1"]).await;
    let mut cfg = client_config(&ca, "client.local", &[0], &listeners);
    let local: std::net::IpAddr = "127.0.0.29".parse().unwrap();
    cfg.local = Some(local);
    let c = Client::attach(cfg).await.unwrap();
    wait_member(&c, "m1").await;
    // /proc/net/udp lists local addresses as little-endian hex: 127.0.0.29 is 1D00007F.
    let table = std::fs::read_to_string("/proc/net/udp").unwrap();
    assert!(
        table.lines().any(|l| l
            .split_whitespace()
            .nth(1)
            .is_some_and(|a| a.starts_with("1D00007F:"))),
        "no UDP socket bound to {local}:\n{table}"
    );
    c.shutdown().await;
    nodes[0].shutdown().await;
}
