//! The user-space delay relay: the "distance" between a region and an area.
//!
//! This kernel has no `tc netem`, so latency is added in user space. One relay process
//! runs in every region namespace and owns all public addresses there (see
//! [`super::spec`]): each area's name server address (UDP and TCP port 53) and each web
//! server address (TCP port 80). Every datagram and every chunk of a stream is held for
//! half the region×area round-trip time on the way in and half on the way out, then
//! forwarded to the real server on the backbone. The real server sees the region's backbone
//! address as the source (as an authority sees a resolver's site).
//!
//! TCP: the client's connect completes at once (the relay is local) and the connection to
//! the server is opened after one one-way delay, so one HTTP request costs one RTT plus
//! the server's time, where real TCP would add a second RTT for the handshake.
//!
//! Every DNS query forwarded over UDP is logged (`relay-<region>.jsonl`): time, source
//! (which resolver), area, name and type — the ground truth of which area's name server
//! each resolver asks.

use super::spec::{Area, LabSpec, Region};
use hickory_proto::op::Message;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

/// A UDP flow with no reply for this long is forgotten.
const FLOW_IDLE: Duration = Duration::from_secs(20);
/// Largest datagram relayed.
const MAX_DATAGRAM: usize = 65535;

/// One DNS query seen by a relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryRecord {
    /// Unix time, milliseconds.
    pub t: u64,
    /// The region of the relay.
    pub region: u8,
    /// The query's source address (a resolver's address).
    pub src: IpAddr,
    /// The area whose name server it went to.
    pub area: u8,
    /// Query name, lower case, with the final dot.
    pub qname: String,
    /// Query type (`A`, `NS`, ...).
    pub qtype: String,
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs every relay of `region` until the process is killed.
pub async fn run(spec: LabSpec, region: Region) -> Result<(), super::netns::LabError> {
    let log_path = spec.dir.join(format!("relay-{region}.jsonl"));
    let file = std::fs::File::create(&log_path).map_err(|source| super::netns::LabError::Io {
        path: log_path.display().to_string(),
        source,
    })?;
    let (tx, rx) = mpsc::unbounded_channel::<QueryRecord>();
    tokio::spawn(write_log(file, rx));
    let mut tasks = tokio::task::JoinSet::new();
    for a in spec.all_areas() {
        let one_way = Duration::from_micros(u64::from(spec.rtt(region, a)) * 500);
        let public = SocketAddr::new(a.ns_public().into(), 53);
        let Some(backend) = spec.backend_of(public) else {
            continue;
        };
        let udp = UdpSocket::bind(public)
            .await
            .map_err(|e| bind_err(public, e))?;
        tasks.spawn(udp_relay(
            Arc::new(udp),
            backend,
            one_way,
            Some((tx.clone(), region, a)),
        ));
        let tcp = TcpListener::bind(public)
            .await
            .map_err(|e| bind_err(public, e))?;
        tasks.spawn(tcp_relay(tcp, backend, one_way));
        for web in spec.cluster(a) {
            let public = SocketAddr::new(web.into(), 80);
            let Some(backend) = spec.backend_of(public) else {
                continue;
            };
            let tcp = TcpListener::bind(public)
                .await
                .map_err(|e| bind_err(public, e))?;
            tasks.spawn(tcp_relay(tcp, backend, one_way));
        }
    }
    println!("relay {region} ready");
    while tasks.join_next().await.is_some() {}
    Ok(())
}

fn bind_err(addr: SocketAddr, e: std::io::Error) -> super::netns::LabError {
    super::netns::LabError::Command {
        cmd: format!("bind {addr}"),
        detail: e.to_string(),
    }
}

async fn write_log(mut file: std::fs::File, mut rx: mpsc::UnboundedReceiver<QueryRecord>) {
    while let Some(first) = rx.recv().await {
        let mut buf = Vec::new();
        let mut next = Some(first);
        while let Some(rec) = next {
            if let Ok(line) = serde_json::to_vec(&rec) {
                buf.extend_from_slice(&line);
                buf.push(b'\n');
            }
            next = rx.try_recv().ok();
        }
        if file.write_all(&buf).is_err() {
            return;
        }
    }
}

type Flows = Arc<Mutex<HashMap<SocketAddr, (Arc<UdpSocket>, Instant)>>>;

async fn udp_relay(
    listen: Arc<UdpSocket>,
    backend: SocketAddr,
    one_way: Duration,
    log: Option<(mpsc::UnboundedSender<QueryRecord>, Region, Area)>,
) {
    let flows: Flows = Arc::new(Mutex::new(HashMap::new()));
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok((n, client)) = listen.recv_from(&mut buf).await else {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        let data = buf[..n].to_vec();
        if let Some((tx, region, area)) = &log {
            if let Ok(m) = Message::from_vec(&data) {
                if let Some(q) = m.queries().first() {
                    let _ = tx.send(QueryRecord {
                        t: now_ms(),
                        region: region.0,
                        src: client.ip(),
                        area: area.0,
                        qname: q.name().to_lowercase().to_ascii(),
                        qtype: q.query_type().to_string(),
                    });
                }
            }
        }
        let sock = match flow_socket(&flows, client, backend, &listen, one_way).await {
            Some(s) => s,
            None => continue,
        };
        tokio::spawn(async move {
            tokio::time::sleep(one_way).await;
            let _ = sock.send(&data).await;
        });
    }
}

/// The upstream socket of `client`'s flow, created (with its reply pump) on first use.
async fn flow_socket(
    flows: &Flows,
    client: SocketAddr,
    backend: SocketAddr,
    listen: &Arc<UdpSocket>,
    one_way: Duration,
) -> Option<Arc<UdpSocket>> {
    if let Ok(mut f) = flows.lock() {
        if let Some((s, last)) = f.get_mut(&client) {
            *last = Instant::now();
            return Some(s.clone());
        }
    }
    let sock = UdpSocket::bind("0.0.0.0:0").await.ok()?;
    sock.connect(backend).await.ok()?;
    let sock = Arc::new(sock);
    if let Ok(mut f) = flows.lock() {
        f.insert(client, (sock.clone(), Instant::now()));
    }
    let (up, listen, flows) = (sock.clone(), listen.clone(), flows.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            match tokio::time::timeout(FLOW_IDLE, up.recv(&mut buf)).await {
                Ok(Ok(n)) => {
                    let data = buf[..n].to_vec();
                    let listen = listen.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(one_way).await;
                        let _ = listen.send_to(&data, client).await;
                    });
                }
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(1)).await,
                Err(_) => {
                    let Ok(mut f) = flows.lock() else { return };
                    let idle = f
                        .get(&client)
                        .is_none_or(|(_, last)| last.elapsed() >= FLOW_IDLE);
                    if idle {
                        f.remove(&client);
                        return;
                    }
                }
            }
        }
    });
    Some(sock)
}

async fn tcp_relay(listener: TcpListener, backend: SocketAddr, one_way: Duration) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        tokio::spawn(async move {
            tokio::time::sleep(one_way).await;
            let Ok(server) = TcpStream::connect(backend).await else {
                return; // dropping `client` resets it, as a dead server would
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let up = tokio::spawn(pump(cr, sw, one_way));
            pump(sr, cw, one_way).await;
            up.abort();
        });
    }
}

/// Copies `from` to `to`, each chunk held for `delay`; closes `to`'s write side at EOF.
async fn pump(
    mut from: impl AsyncReadExt + Unpin + Send + 'static,
    mut to: impl AsyncWriteExt + Unpin + Send + 'static,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(tokio::time::Instant, Option<Vec<u8>>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            match chunk {
                Some(c) => {
                    if to.write_all(&c).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = to.shutdown().await;
                    return;
                }
            }
        }
    });
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => 0,
            Ok(n) => n,
        };
        let due = tokio::time::Instant::now() + delay;
        let chunk = (n > 0).then(|| buf[..n].to_vec());
        let end = chunk.is_none();
        if tx.send((due, chunk)).is_err() || end {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}
