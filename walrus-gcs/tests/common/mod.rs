//! Helpers for the transport tests: an in-memory CA, pre-bound loopback sockets, and
//! waiting with generous deadlines (the machine is shared and slow).
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use walrus_gcs::transport::certs::{self, CertifiedKey, NodeIdentity};
use walrus_gcs::transport::{Limits, Listen, NodeId, Transport, TransportConfig, TransportEvent};

/// How long any "eventually" in these tests may take.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub struct Ca {
    pub ca: CertifiedKey,
}

impl Ca {
    pub fn new() -> Self {
        Self {
            ca: certs::create_ca().unwrap(),
        }
    }

    pub fn identity(&self, name: &str) -> NodeIdentity {
        NodeIdentity::issued_by(&self.ca, name).unwrap()
    }
}

/// Binds one UDP socket per name on 127.0.0.1 with a free port.
pub fn bind(names: &[&str]) -> Vec<(String, UdpSocket, SocketAddr)> {
    names
        .iter()
        .map(|n| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            let a = s.local_addr().unwrap();
            (n.to_string(), s, a)
        })
        .collect()
}

pub fn config(
    ca: &Ca,
    me: &str,
    socket: UdpSocket,
    addrs: &[(String, SocketAddr)],
    limits: Limits,
) -> TransportConfig {
    TransportConfig {
        me: NodeId::new(me),
        listen: Listen::Socket(socket),
        peers: addrs
            .iter()
            .filter(|(n, _)| n != me)
            .map(|(n, a)| (NodeId::new(n.clone()), *a))
            .collect(),
        identity: ca.identity(me),
        limits,
    }
}

pub type Events<M> = walrus_gcs::transport::TransportEvents<M>;

/// Starts a transport per name, all knowing each other (plus `extra` peers that are
/// configured but not started). Returns them with their addresses.
pub async fn cluster<M: walrus_gcs::transport::Message>(
    ca: &Ca,
    names: &[&str],
    extra: &[(String, SocketAddr)],
    limits: Limits,
) -> (Vec<(Transport<M>, Events<M>)>, Vec<(String, SocketAddr)>) {
    let bound = bind(names);
    let mut addrs: Vec<(String, SocketAddr)> =
        bound.iter().map(|(n, _, a)| (n.clone(), *a)).collect();
    addrs.extend_from_slice(extra);
    let mut out = Vec::new();
    for (name, socket, _) in bound {
        let cfg = config(ca, &name, socket, &addrs, limits.clone());
        out.push(Transport::start(cfg).await.unwrap());
    }
    (out, addrs)
}

/// Waits for the next event matching `pred`, discarding others; panics at the deadline.
pub async fn wait_for<M: std::fmt::Debug>(
    events: &mut Events<M>,
    what: &str,
    mut pred: impl FnMut(&TransportEvent<M>) -> bool,
) -> TransportEvent<M> {
    let fut = async {
        loop {
            let e = events.recv().await.expect("event channel closed");
            if pred(&e) {
                return e;
            }
        }
    };
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(e) => e,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

pub async fn wait_up<M: std::fmt::Debug>(events: &mut Events<M>, peer: &str) {
    wait_for(
        events,
        &format!("link up to {peer}"),
        |e| matches!(e, TransportEvent::LinkUp { peer: p } if p.as_str() == peer),
    )
    .await;
}

pub async fn wait_down<M: std::fmt::Debug>(events: &mut Events<M>, peer: &str) -> String {
    match wait_for(
        events,
        &format!("link down to {peer}"),
        |e| matches!(e, TransportEvent::LinkDown { peer: p, .. } if p.as_str() == peer),
    )
    .await
    {
        TransportEvent::LinkDown { reason, .. } => reason,
        _ => unreachable!(),
    }
}

/// Waits until links to all of `peers` are up (in any order).
pub async fn wait_all_up<M: std::fmt::Debug>(events: &mut Events<M>, peers: &[&str]) {
    let mut missing: std::collections::BTreeSet<String> =
        peers.iter().map(|p| p.to_string()).collect();
    while !missing.is_empty() {
        let what = format!("links up to {missing:?}");
        if let TransportEvent::LinkUp { peer } = wait_for(events, &what, |e| {
            matches!(e, TransportEvent::LinkUp { .. })
        })
        .await
        {
            missing.remove(peer.as_str());
        }
    }
}

/// Binds `addr` again once the previous owner has let it go.
pub async fn rebind(addr: SocketAddr) -> UdpSocket {
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        match UdpSocket::bind(addr) {
            Ok(s) => return s,
            Err(e) if tokio::time::Instant::now() > end => panic!("rebinding {addr}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Collects every event that arrives within `window`.
pub async fn drain_for<M>(events: &mut Events<M>, window: Duration) -> Vec<TransportEvent<M>> {
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + window;
    while let Ok(Some(e)) = tokio::time::timeout_at(end, events.recv()).await {
        out.push(e);
    }
    out
}

/// Shorthand for a node id.
pub fn id(name: &str) -> NodeId {
    NodeId::new(name)
}

/// Starts GCS node `name` on `socket` with `addrs` as its peers, reconnecting fast (the
/// cluster tests' setting).
pub async fn start_gcs(
    ca: &Ca,
    name: &str,
    socket: UdpSocket,
    addrs: &[(String, SocketAddr)],
) -> walrus_gcs::Gcs {
    let limits = Limits {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(300),
        ..Limits::default()
    };
    walrus_gcs::Gcs::start(walrus_gcs::GcsConfig {
        transport: config(ca, name, socket, addrs, limits),
        core: walrus_gcs::CoreConfig::lan(),
        incarnation: None,
        thread: walrus_gcs::GcsThread::Own,
    })
    .await
    .unwrap()
}
