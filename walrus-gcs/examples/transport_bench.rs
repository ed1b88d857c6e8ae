//! Raw throughput of the QUIC transport alone (no protocol core): two nodes in one
//! process, one sends `--size`-byte messages to the other as fast as its queue takes them
//! for `--seconds`. Prints one JSON line; the anchor for what the core costs on top.
//!
//! With `--streams MIB`, it moves MIB mebibytes instead over one point-to-point QUIC
//! stream (`Transport::open_stream`), over the TLS-over-TCP bulk streams
//! (`transport::bulk`), and over a plain TCP socket, and prints one JSON line per
//! transport: the ceiling of what the Replicator's transfers can reach on each.
//!
//! With `--ping N`, it measures what one hop costs when nothing else runs: the two nodes
//! each on a thread of its own with a current-thread runtime (as a GCS node's protocol
//! runs by default), `a` sends one `--size`-byte message to `b`, `b` sends it back, N
//! times; then the same over plain UDP sockets between two threads, the machine's floor
//! (a blocking receive, one thread wake-up per hop). One JSON line each, with the round
//! trip's p50/p99 and half of it, the one-way hop. The protocol's light-load latency is
//! a number of such hops (PROTOCOL.md, "Hops").
//!
//! ```text
//! cargo run --release -p walrus-gcs --example transport_bench -- --size 1024 --seconds 5
//! cargo run --release -p walrus-gcs --example transport_bench -- --streams 1024
//! cargo run --release -p walrus-gcs --example transport_bench -- --ping 5000 --size 1024
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use clap::Parser;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use walrus_gcs::transport::bulk::TcpStreams;
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
    /// Move this many MiB over one stream of each transport instead of messages.
    #[arg(long)]
    streams: Option<usize>,
    /// Measure this many round trips of one message, one at a time, instead.
    #[arg(long)]
    ping: Option<usize>,
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

fn main() {
    let args = Args::parse();
    if let Some(n) = args.ping {
        ping(n, args.size);
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(messages_and_streams(args));
}

async fn messages_and_streams(args: Args) {
    let ca = certs::create_ca().unwrap();
    let id = |n: &str| NodeIdentity::issued_by(&ca, n).unwrap();
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
    let (b, mut eb) = Transport::<Msg>::start(TransportConfig {
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
    if let Some(mib) = args.streams {
        tokio::spawn(async move { while ea.recv().await.is_some() {} });
        tokio::spawn(async move { while eb.recv().await.is_some() {} });
        let total = mib << 20;
        let quic = quic_stream(&a, &b, total).await;
        let tls = tls_tcp_stream(&id("a"), &id("b"), total).await;
        let tcp = tcp_stream(total).await;
        for (name, secs) in [("quic", quic), ("tls-tcp", tls), ("tcp", tcp)] {
            println!(
                "{{\"transport\":\"{name}\",\"mib\":{mib},\"seconds\":{secs:.3},\"mb_per_sec\":{:.0}}}",
                total as f64 / secs / 1e6
            );
        }
        return;
    }
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
        args.mtu.unwrap_or(Limits::default().mtu_upper_bound),
        mps,
        mps * args.size as f64 / 1e6
    );
}

/// Seconds to write `total` bytes into `w` and read them all from `r`.
async fn pump<W, R>(mut w: W, mut r: R, total: usize) -> f64
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin + Send + 'static,
{
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0usize;
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 {
                break;
            }
            got += n;
        }
        got
    });
    let chunk = vec![7u8; 256 * 1024];
    let t = Instant::now();
    let mut sent = 0;
    while sent < total {
        w.write_all(&chunk).await.unwrap();
        sent += chunk.len();
    }
    w.shutdown().await.unwrap();
    assert!(reader.await.unwrap() >= total, "bytes lost");
    t.elapsed().as_secs_f64()
}

/// One point-to-point QUIC stream from `a` to `b`.
async fn quic_stream(a: &Transport<Msg>, b: &Transport<Msg>, total: usize) -> f64 {
    let (mut w, _r) = a.open_stream(&NodeId::new("b")).await.unwrap();
    // The peer sees the stream once the first bytes arrive.
    w.write_all(&[0]).await.unwrap();
    let mut inc = b.accept_stream().await.unwrap();
    let mut one = [0u8; 1];
    inc.recv.read_exact(&mut one).await.unwrap();
    pump(w, inc.recv, total).await
}

/// One TLS-over-TCP bulk stream from a to b, the same certificates.
async fn tls_tcp_stream(ida: &NodeIdentity, idb: &NodeIdentity, total: usize) -> f64 {
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    // b only accepts: a's address is never dialed.
    let unused: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let limits = Limits::default();
    let b = TcpStreams::bind(any, vec![(NodeId::new("a"), unused)], idb, &limits)
        .await
        .unwrap();
    let a = TcpStreams::bind(any, vec![(NodeId::new("b"), b.local_addr())], ida, &limits)
        .await
        .unwrap();
    let to_b = NodeId::new("b");
    let (out, accepted) = tokio::join!(a.open(&to_b), b.accept());
    let (_, inc) = accepted.unwrap();
    let (_out_r, out_w) = tokio::io::split(out.unwrap());
    let (inc_r, _inc_w) = tokio::io::split(inc);
    pump(out_w, inc_r, total).await
}

/// A plain TCP socket on loopback.
async fn tcp_stream(total: usize) -> f64 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (c, s) = tokio::join!(tokio::net::TcpStream::connect(addr), l.accept());
    pump(c.unwrap(), s.unwrap().0, total).await
}

/// `--ping`: round trips of one message over the transport, then over plain UDP.
fn ping(n: usize, size: usize) {
    let ca = certs::create_ca().unwrap();
    let sa = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sb = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (aa, ab) = (sa.local_addr().unwrap(), sb.local_addr().unwrap());
    let config = |me: &str, peer: &str, listen, addr| TransportConfig {
        me: NodeId::new(me),
        listen: Listen::Socket(listen),
        peers: vec![(NodeId::new(peer), addr)],
        identity: NodeIdentity::issued_by(&ca, me).unwrap(),
        limits: Limits::default(),
    };
    let (ca_cfg, cb_cfg) = (config("a", "b", sa, ab), config("b", "a", sb, aa));
    let current = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    // b: sends back every message it gets, until a's link goes down.
    let echo = std::thread::spawn(move || {
        current().block_on(async move {
            let (b, mut eb) = Transport::<Msg>::start(cb_cfg).await.unwrap();
            while let Some(ev) = eb.recv().await {
                match ev {
                    TransportEvent::Message { from, msg } => {
                        let _ = b.send(&from, msg);
                    }
                    TransportEvent::LinkDown { .. } => break,
                    _ => {}
                }
            }
        })
    });
    let rtts = current().block_on(async move {
        let (a, mut ea) = Transport::<Msg>::start(ca_cfg).await.unwrap();
        while !matches!(ea.recv().await, Some(TransportEvent::LinkUp { .. })) {}
        let to = NodeId::new("b");
        let mut rtts = Vec::with_capacity(n);
        // The first hundred warm up the connection (and are not counted).
        for k in 0..n + 100 {
            let t = Instant::now();
            a.send(&to, Msg(vec![7u8; size])).unwrap();
            loop {
                match ea.recv().await {
                    Some(TransportEvent::Message { .. }) => break,
                    Some(_) => {}
                    None => panic!("transport a stopped"),
                }
            }
            if k >= 100 {
                rtts.push(t.elapsed());
            }
        }
        a.shutdown().await;
        rtts
    });
    echo.join().unwrap();
    print_rtts("quic", size, rtts);
    print_rtts("udp", size, udp_ping(n, size));
}

/// Round trips over two plain UDP sockets, each served by a thread in a blocking receive.
fn udp_ping(n: usize, size: usize) -> Vec<Duration> {
    let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let ab = b.local_addr().unwrap();
    let total = n + 100;
    let echo = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        for _ in 0..total {
            let (len, from) = b.recv_from(&mut buf).unwrap();
            b.send_to(&buf[..len], from).unwrap();
        }
    });
    a.connect(ab).unwrap();
    let payload = vec![7u8; size];
    let mut buf = vec![0u8; 65536];
    let mut rtts = Vec::with_capacity(n);
    for k in 0..total {
        let t = Instant::now();
        a.send(&payload).unwrap();
        a.recv(&mut buf).unwrap();
        if k >= 100 {
            rtts.push(t.elapsed());
        }
    }
    echo.join().unwrap();
    rtts
}

fn print_rtts(transport: &str, size: usize, mut rtts: Vec<Duration>) {
    rtts.sort_unstable();
    let at = |q: f64| rtts[((rtts.len() - 1) as f64 * q) as usize].as_micros();
    let (p50, p99) = (at(0.5), at(0.99));
    println!(
        "{{\"transport\":\"{transport}\",\"mode\":\"ping\",\"size\":{size},\"round_trips\":{},\"rtt_p50_us\":{p50},\"rtt_p99_us\":{p99},\"hop_p50_us\":{},\"hop_p99_us\":{}}}",
        rtts.len(),
        p50 / 2,
        p99 / 2
    );
}
