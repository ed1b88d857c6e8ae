//! The clients of one region: HTTP clients that resolve `www` through their region's
//! resolver like a stub (one query, keep the answer for its TTL, first address first) and
//! fetch the page; and the convergence probes (unique names, one cache miss each, so every
//! probe makes the resolver pick a site-zone server again).
//!
//! Every request is recorded (`clients-<region>.jsonl`): the address used, which area's
//! zone gave it (the CNAME target), the area whose cluster served it, DNS and HTTP time,
//! and the error if any.

use super::relay::now_ms;
use super::servers::{probe_name, site_www};
use super::spec::{Area, LabSpec, Mode, Region, ResolverKind};
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Largest HTTP response read.
const MAX_PAGE: usize = 64 * 1024;

/// One HTTP request of one client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientRecord {
    /// Unix time at the start, milliseconds.
    pub t: u64,
    /// The client's region.
    pub region: u8,
    /// The resolver it uses (none for the oracle).
    pub resolver: Option<ResolverKind>,
    /// Client number within the region.
    pub client: u32,
    /// The address it connected to.
    pub addr: Option<Ipv4Addr>,
    /// The area whose zone gave the address (from the CNAME target).
    pub answer_area: Option<u8>,
    /// The area whose cluster holds the address.
    pub served_area: Option<u8>,
    /// Whether the address came from the stub's cache.
    pub cached: bool,
    /// DNS time, milliseconds (0 when cached).
    pub dns_ms: f64,
    /// Total time of the request including DNS, milliseconds.
    pub total_ms: f64,
    /// What failed, if anything.
    pub error: Option<String>,
}

/// One stub answer.
#[derive(Debug, Clone, PartialEq)]
pub struct StubAnswer {
    /// A records in the order the resolver gave them.
    pub addrs: Vec<Ipv4Addr>,
    /// The area named by the last CNAME of the chain.
    pub area: Option<Area>,
    /// Smallest TTL of the chain, seconds.
    pub ttl: u32,
    /// The rcode.
    pub rcode: ResponseCode,
}

/// Asks `resolver` for `name`/`qtype` once (UDP, up to three tries of `timeout`).
pub async fn stub_query(
    resolver: SocketAddr,
    name: &str,
    qtype: RecordType,
    timeout: Duration,
) -> Result<StubAnswer, String> {
    stub_query_from(
        SocketAddr::from(([0, 0, 0, 0], 0)),
        resolver,
        name,
        qtype,
        timeout,
    )
    .await
}

/// [`stub_query`] from the local address `from`.
pub async fn stub_query_from(
    from: SocketAddr,
    resolver: SocketAddr,
    name: &str,
    qtype: RecordType,
    timeout: Duration,
) -> Result<StubAnswer, String> {
    let qname = Name::from_ascii(name).map_err(|e| e.to_string())?;
    let sock = UdpSocket::bind(from).await.map_err(|e| e.to_string())?;
    sock.connect(resolver).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    for _ in 0..3 {
        let id: u16 = rand::rng().random();
        let mut m = Message::new();
        m.set_id(id).set_recursion_desired(true);
        m.add_query(Query::query(qname.clone(), qtype));
        let bytes = m.to_vec().map_err(|e| e.to_string())?;
        sock.send(&bytes).await.map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let Ok(r) = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await else {
                break;
            };
            let n = r.map_err(|e| e.to_string())?;
            let Ok(resp) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if resp.id() != id || resp.message_type() != MessageType::Response {
                continue;
            }
            if resp.truncated() {
                // As resolvers do (RFC 7766): the same question again over TCP, from the
                // same address.
                return tcp_query(from.ip(), resolver, &bytes, timeout).await;
            }
            return Ok(parse_answer(&resp));
        }
    }
    Err("dns timeout".into())
}

/// One DNS query over TCP from address `ip` (two-byte length prefix each way).
async fn tcp_query(
    ip: std::net::IpAddr,
    server: SocketAddr,
    query: &[u8],
    timeout: Duration,
) -> Result<StubAnswer, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let s = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        s.bind(SocketAddr::new(ip, 0)).map_err(|e| e.to_string())?;
        let mut c = s.connect(server).await.map_err(|e| e.to_string())?;
        let len = u16::try_from(query.len()).map_err(|e| e.to_string())?;
        let mut out = len.to_be_bytes().to_vec();
        out.extend_from_slice(query);
        c.write_all(&out).await.map_err(|e| e.to_string())?;
        let mut l = [0u8; 2];
        c.read_exact(&mut l).await.map_err(|e| e.to_string())?;
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(l))];
        c.read_exact(&mut body).await.map_err(|e| e.to_string())?;
        Message::from_vec(&body).map_err(|e| e.to_string())
    };
    match tokio::time::timeout(timeout * 2, ask).await {
        Ok(Ok(resp)) => Ok(parse_answer(&resp)),
        Ok(Err(e)) => Err(format!("dns over tcp: {e}")),
        Err(_) => Err("dns over tcp timeout".into()),
    }
}

fn parse_answer(resp: &Message) -> StubAnswer {
    let mut addrs = Vec::new();
    let mut area = None;
    let mut ttl = u32::MAX;
    for r in resp.answers() {
        ttl = ttl.min(r.ttl());
        match r.data() {
            RData::A(a) => addrs.push(a.0),
            RData::CNAME(c) => area = Area::of_cname(&c.0.to_ascii()).or(area),
            _ => {}
        }
    }
    StubAnswer {
        addrs,
        area,
        ttl: if ttl == u32::MAX { 0 } else { ttl },
        rcode: resp.response_code(),
    }
}

/// One GET of `/` at `addr:80`; the page must be a lab page.
pub async fn http_get(addr: Ipv4Addr) -> Result<(), String> {
    let work = async {
        let mut s = TcpStream::connect((addr, 80))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: www.walrus.test\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut body = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&buf[..n]);
            if body.len() > MAX_PAGE {
                return Err("page too large".into());
            }
        }
        let text = String::from_utf8_lossy(&body);
        if text.starts_with("HTTP/1.1 200") && text.contains("walrus lab: area") {
            Ok(())
        } else {
            Err(format!(
                "bad response: {:?}",
                text.lines().next().unwrap_or("")
            ))
        }
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .unwrap_or_else(|_| Err("http timeout".into()))
}

/// Polls until `what` answers: a UDP DNS server (`dns`) or a TCP port.
pub async fn wait_ready(addr: SocketAddr, dns_name: Option<&str>, secs: u64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let ok = match dns_name {
            // Any answer at all (even REFUSED for a name not served) proves the server up.
            Some(n) => stub_query(addr, n, RecordType::SOA, Duration::from_millis(500))
                .await
                .is_ok(),
            None => TcpStream::connect(addr).await.is_ok(),
        };
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{addr} not ready after {secs} s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

type Sink = Arc<Mutex<std::fs::File>>;

fn emit(sink: &Sink, rec: &ClientRecord) {
    if let (Ok(mut f), Ok(line)) = (sink.lock(), serde_json::to_string(rec)) {
        let _ = writeln!(f, "{line}");
    }
}

/// The `clients` role: runs every client and probe of `region` for `spec.seconds`.
pub async fn run(spec: LabSpec, region: Region) -> anyhow::Result<()> {
    for k in &spec.resolvers {
        let addr = SocketAddr::new(k.addr(region).into(), 53);
        wait_ready(addr, Some("a.root.test."), 60)
            .await
            .map_err(|e| anyhow::anyhow!("resolver {}: {e}", k.name()))?;
    }
    let path = spec.dir.join(format!("clients-{region}.jsonl"));
    let sink: Sink = Arc::new(Mutex::new(std::fs::File::create(&path)?));
    let start = now_ms();
    std::fs::write(
        spec.dir.join(format!("start-{region}.txt")),
        start.to_string(),
    )?;
    let deadline = Instant::now() + Duration::from_secs(u64::from(spec.seconds));
    let mut tasks = tokio::task::JoinSet::new();
    let mut n = 0u32;
    let resolvers: Vec<Option<ResolverKind>> = if spec.mode == Mode::Oracle {
        vec![None]
    } else {
        spec.resolvers.iter().copied().map(Some).collect()
    };
    for kind in resolvers {
        for _ in 0..spec.clients_per_resolver {
            n += 1;
            let seed = spec.seed ^ (u64::from(region.0) << 32) ^ u64::from(n);
            tasks.spawn(client(
                spec.clone(),
                region,
                kind,
                n,
                seed,
                deadline,
                sink.clone(),
            ));
        }
    }
    if spec.probe_rate > 0 {
        for &kind in &spec.resolvers {
            tasks.spawn(probes(spec.clone(), region, kind, deadline));
        }
    }
    while tasks.join_next().await.is_some() {}
    println!("clients {region} done");
    Ok(())
}

async fn probes(spec: LabSpec, region: Region, kind: ResolverKind, deadline: Instant) {
    let resolver = SocketAddr::new(kind.addr(region).into(), 53);
    let every = Duration::from_secs_f64(1.0 / f64::from(spec.probe_rate.max(1)));
    let mut tick = tokio::time::interval(every);
    let mut seq = 0u64;
    let mut inflight = tokio::task::JoinSet::new();
    while Instant::now() < deadline {
        tick.tick().await;
        seq += 1;
        let name = probe_name(region, kind, seq);
        inflight.spawn(async move {
            let _ = stub_query(resolver, &name, RecordType::A, Duration::from_secs(3)).await;
        });
        while inflight.try_join_next().is_some() {}
    }
    while inflight.join_next().await.is_some() {}
}

async fn client(
    spec: LabSpec,
    region: Region,
    kind: Option<ResolverKind>,
    id: u32,
    seed: u64,
    deadline: Instant,
    sink: Sink,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut cache: Option<(StubAnswer, Instant)> = None;
    // Spread the clients' first requests over one think time.
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..=spec.think_ms))).await;
    while Instant::now() < deadline {
        let t = now_ms();
        let started = Instant::now();
        let mut rec = ClientRecord {
            t,
            region: region.0,
            resolver: kind,
            client: id,
            addr: None,
            answer_area: None,
            served_area: None,
            cached: false,
            dns_ms: 0.0,
            total_ms: 0.0,
            error: None,
        };
        let addr = match kind {
            None => {
                let near = spec.cluster(spec.nearest(region));
                rec.answer_area = Some(spec.nearest(region).0);
                near.get(rng.random_range(0..near.len().max(1))).copied()
            }
            Some(k) => {
                let fresh = cache.as_ref().filter(|(_, exp)| Instant::now() < *exp);
                let answer = match fresh {
                    Some((a, _)) => {
                        rec.cached = true;
                        Ok(a.clone())
                    }
                    None => {
                        let resolver = SocketAddr::new(k.addr(region).into(), 53);
                        let r = stub_query(
                            resolver,
                            &site_www(),
                            RecordType::A,
                            Duration::from_secs(2),
                        )
                        .await;
                        rec.dns_ms = started.elapsed().as_secs_f64() * 1000.0;
                        if let Ok(a) = &r {
                            if !a.addrs.is_empty() {
                                cache = Some((
                                    a.clone(),
                                    Instant::now() + Duration::from_secs(u64::from(a.ttl)),
                                ));
                            }
                        }
                        r
                    }
                };
                match answer {
                    Ok(a) => {
                        rec.answer_area = a.area.map(|x| x.0);
                        if a.addrs.is_empty() {
                            rec.error = Some(format!("no address ({})", a.rcode));
                        }
                        a.addrs.first().copied()
                    }
                    Err(e) => {
                        rec.error = Some(e);
                        None
                    }
                }
            }
        };
        if let Some(addr) = addr {
            rec.addr = Some(addr);
            rec.served_area = Area::of_web(IpAddr::V4(addr)).map(|(a, _)| a.0);
            if let Err(e) = http_get(addr).await {
                rec.error = Some(e);
            }
        }
        rec.total_ms = started.elapsed().as_secs_f64() * 1000.0;
        emit(&sink, &rec);
        let think = rng.random_range(spec.think_ms / 2..=spec.think_ms * 3 / 2);
        tokio::time::sleep(Duration::from_millis(think)).await;
    }
}
