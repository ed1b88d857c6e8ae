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
//! DNS from a resolver (a source in `10.200.0.0/16`) is relayed differently: the upstream
//! socket is bound to the resolver's own address, so an area's server sees the resolver
//! (each region's resolvers in a /24 of their own), and the relay adds no delay. The whole
//! RTT is added on the way back by the region's *delay line* ([`delay_line`], wired in
//! [`super::netns`]): everything an area sends to a resolver's address crosses it, so a
//! server that times its own exchanges with a resolver (a TCP handshake, a probe) measures
//! the emulated RTT too, not the backbone's.
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
    let line_addr = SocketAddr::new(region.backbone().into(), super::netns::DELAY_LINE_PORT);
    let line = UdpSocket::bind(line_addr)
        .await
        .map_err(|e| bind_err(line_addr, e))?;
    tasks.spawn(delay_line(line, spec.clone(), region));
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

/// Whether `ip` is one of the lab's resolvers (`10.200.0.0/16`).
fn is_resolver(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets()[..2] == [10, 200])
}

/// Frames waiting on a delay line: when each is due.
type Line = mpsc::UnboundedSender<(tokio::time::Instant, Vec<u8>)>;

/// The delay line of a region: VXLAN datagrams from the areas' devices (see
/// [`super::netns`]), each held for its area's full RTT to this region, then handed, in
/// order, to the region's own VXLAN devices. Datagrams from unknown sources are dropped.
async fn delay_line(sock: UdpSocket, spec: LabSpec, region: Region) {
    let sock = Arc::new(sock);
    let vxlan = SocketAddr::new(region.backbone().into(), super::netns::VXLAN_PORT);
    let mut lines: HashMap<IpAddr, (Duration, Line)> = HashMap::new();
    for a in spec.all_areas() {
        let (tx, mut rx) = mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
        let out = sock.clone();
        tokio::spawn(async move {
            // One constant delay per area: first in, first due.
            while let Some((due, frame)) = rx.recv().await {
                tokio::time::sleep_until(due).await;
                let _ = out.send_to(&frame, vxlan).await;
            }
        });
        let rtt = Duration::from_millis(u64::from(spec.rtt(region, a)));
        lines.insert(a.backbone().into(), (rtt, tx));
    }
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        if let Some((rtt, tx)) = lines.get(&from.ip()) {
            let mut frame = buf[..n].to_vec();
            fix_inner_checksum(&mut frame);
            let _ = tx.send((tokio::time::Instant::now() + *rtt, frame));
        }
    }
}

/// Recomputes the TCP or UDP checksum of the IPv4 packet inside a VXLAN datagram (8 bytes
/// of VXLAN header, 14 of Ethernet). The sending kernel leaves it to "hardware" (the
/// veth pretends to offload it), and a frame that reaches a user-space socket on the way
/// has no hardware to finish it: passed on as it is, the receiver drops it as corrupt.
/// Fragments and anything else are left alone.
pub fn fix_inner_checksum(frame: &mut [u8]) {
    const IP: usize = 8 + 14;
    if frame.len() < IP + 20 || frame[IP - 2..IP] != [0x08, 0x00] || frame[IP] >> 4 != 4 {
        return;
    }
    let ihl = usize::from(frame[IP] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([frame[IP + 2], frame[IP + 3]]));
    let fragment = u16::from_be_bytes([frame[IP + 6], frame[IP + 7]]) & 0x3fff != 0;
    let proto = frame[IP + 9];
    let at = match proto {
        6 => 16,
        17 => 6,
        _ => return,
    };
    if fragment || ihl < 20 || total < ihl + at + 2 || frame.len() < IP + total {
        return;
    }
    let l4_len = total - ihl;
    let (head, l4) = frame[IP..IP + total].split_at_mut(ihl);
    l4[at] = 0;
    l4[at + 1] = 0;
    let mut sum: u32 = u32::from(proto) + l4_len as u32;
    for pair in head[12..20].chunks(2).chain(l4.chunks(2)) {
        let hi = u32::from(pair[0]) << 8;
        sum += hi | pair.get(1).copied().map_or(0, u32::from);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let mut c = !(sum as u16);
    if c == 0 && proto == 17 {
        c = 0xffff;
    }
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
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
        if is_resolver(client.ip()) {
            // The delay line adds the RTT on the way back.
            let _ = sock.send(&data).await;
            continue;
        }
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
    // A resolver's queries leave from its own address; the delay line is the way back.
    let (from, one_way) = if is_resolver(client.ip()) {
        (SocketAddr::new(client.ip(), 0), Duration::ZERO)
    } else {
        (SocketAddr::from(([0, 0, 0, 0], 0)), one_way)
    };
    let sock = UdpSocket::bind(from).await.ok()?;
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
        let Ok((client, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        tokio::spawn(async move {
            // A resolver's connection leaves from its own address, undelayed: the delay
            // line holds the server's side (its SYN-ACK too) for the RTT.
            let (server, one_way) = if is_resolver(peer.ip()) {
                (connect_from(peer.ip(), backend).await, Duration::ZERO)
            } else {
                tokio::time::sleep(one_way).await;
                (TcpStream::connect(backend).await, one_way)
            };
            let Ok(server) = server else {
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

/// A TCP connection to `backend` from address `ip`.
async fn connect_from(ip: IpAddr, backend: SocketAddr) -> std::io::Result<TcpStream> {
    let s = match ip {
        IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    s.bind(SocketAddr::new(ip, 0))?;
    s.connect(backend).await
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

#[cfg(test)]
mod tests {
    use super::fix_inner_checksum;

    /// A VXLAN frame around an IPv4 UDP packet 10.255.0.11:53 → 10.200.1.3:40000 with
    /// a 5-byte payload, its checksum field as the kernel leaves it for offload (garbage).
    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x08, 0, 0, 0, 0, 0, 0x11, 0];
        f.extend_from_slice(&[2, 0x1a, 0, 0, 1, 1, 2, 0, 0, 0, 0, 9, 0x08, 0x00]);
        let total = 20 + 8 + payload.len() as u16;
        f.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 1, 0x40, 0]);
        f.extend_from_slice(&[64, 17, 0, 0, 10, 255, 0, 11, 10, 200, 1, 3]);
        let udp_len = 8 + payload.len() as u16;
        f.extend_from_slice(&[0, 53, 0x9c, 0x40, (udp_len >> 8) as u8, udp_len as u8]);
        f.extend_from_slice(&[0xde, 0xad]);
        f.extend_from_slice(payload);
        f
    }

    /// The one's-complement sum over pseudo-header and segment: 0xffff when right.
    fn verify(f: &[u8]) -> u16 {
        let ip = &f[22..];
        let l4 = &ip[20..];
        let mut sum: u32 = 17 + l4.len() as u32;
        for p in ip[12..20].chunks(2).chain(l4.chunks(2)) {
            sum += (u32::from(p[0]) << 8) | p.get(1).copied().map_or(0, u32::from);
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn inner_udp_checksum_is_recomputed_and_fragments_are_left_alone() {
        let mut f = frame(b"hello");
        assert_ne!(verify(&f), 0xffff, "the planted bad checksum");
        fix_inner_checksum(&mut f);
        assert_eq!(verify(&f), 0xffff);
        // A fragment (more fragments set) is not touched.
        let mut g = frame(b"hello");
        g[22 + 6] |= 0x20;
        let before = g.clone();
        fix_inner_checksum(&mut g);
        assert_eq!(g, before);
        // Short or foreign frames are not touched either.
        let mut short = f[..30].to_vec();
        fix_inner_checksum(&mut short);
        assert_eq!(short, f[..30].to_vec());
    }
}
