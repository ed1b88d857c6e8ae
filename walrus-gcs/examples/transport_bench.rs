//! Raw throughput of the QUIC transport alone (no protocol core): two nodes in one
//! process, one sends `--size`-byte messages to the other as fast as its queue takes them
//! for `--seconds`. Prints one JSON line; the anchor for what the core costs on top.
//!
//! ```text
//! cargo run --release -p walrus-gcs --example transport_bench -- --size 1024 --seconds 5
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use clap::Parser;
use serde::{Deserialize, Serialize};
use walrus_gcs::transport::{
    certs, Limits, Listen, NodeIdentity, Transport, TransportConfig, TransportEvent,
};
use walrus_gcs::NodeId;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1024)]
    size: usize,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Largest UDP payload MTU discovery may try (quinn's default is 1452).
    #[arg(long)]
    mtu: Option<u16>,
}

#[derive(Serialize, Deserialize)]
struct Msg(#[serde(with = "serde_bytes_compat")] Vec<u8>);

mod serde_bytes_compat {
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        serde::Deserialize::deserialize(d)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let ca = certs::create_ca().unwrap();
    let id = |n: &str| {
        let c = certs::issue_node_cert(&ca.key, n).unwrap();
        NodeIdentity {
            ca: ca.cert.clone(),
            cert: c.cert,
            key: c.key,
        }
    };
    let sa = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sb = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (aa, ab) = (sa.local_addr().unwrap(), sb.local_addr().unwrap());
    let limits = Limits {
        mtu_upper_bound: args.mtu.unwrap_or(Limits::default().mtu_upper_bound),
        ..Limits::default()
    };
    let (a, mut ea) = Transport::<Msg>::start(TransportConfig {
        me: NodeId::new("a"),
        listen: Listen::Socket(sa),
        peers: vec![(NodeId::new("b"), ab)],
        identity: id("a"),
        limits: limits.clone(),
    })
    .await
    .unwrap();
    let (_b, mut eb) = Transport::<Msg>::start(TransportConfig {
        me: NodeId::new("b"),
        listen: Listen::Socket(sb),
        peers: vec![(NodeId::new("a"), aa)],
        identity: id("b"),
        limits,
    })
    .await
    .unwrap();
    while !matches!(ea.recv().await, Some(TransportEvent::LinkUp { .. })) {}
    while !matches!(eb.recv().await, Some(TransportEvent::LinkUp { .. })) {}
    let to = NodeId::new("b");
    let payload = vec![7u8; args.size];
    let dur = Duration::from_secs_f64(args.seconds);
    let sender = tokio::spawn(async move {
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < dur {
            if a.queue_fill() > 0.5 {
                tokio::time::sleep(Duration::from_micros(200)).await;
                continue;
            }
            for _ in 0..64 {
                a.send(&to, Msg(payload.clone())).unwrap();
                sent += 1;
            }
            tokio::task::yield_now().await;
        }
        (sent, a)
    });
    let start = Instant::now();
    let mut got = 0u64;
    while start.elapsed() < dur {
        match tokio::time::timeout(Duration::from_millis(100), eb.recv()).await {
            Ok(Some(TransportEvent::Message { .. })) => got += 1,
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => break,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let (sent, _a) = sender.await.unwrap();
    let mps = got as f64 / secs;
    println!(
        "{{\"size\":{},\"mtu\":{},\"sent\":{sent},\"msgs_per_sec\":{:.0},\"mb_per_sec\":{:.2}}}",
        args.size,
        args.mtu.unwrap_or(1452),
        mps,
        mps * args.size as f64 / 1e6
    );
}
