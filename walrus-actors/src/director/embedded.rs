//! The embedded authoritative server: the Director serves its area zone and the site zone
//! itself (the default for demos and small sites; no BIND to run).
//!
//! Why our own small server on hickory-proto rather than hickory-server: the whole zone is
//! a handful of records computed from the current answer, so the answer logic is a pure
//! function ([`super::answer::respond`]) that unit tests drive byte for byte, including the
//! TC bit; hickory-server would bring its catalog, authority traits and file loaders for
//! zones we do not have, and its truncation and NXDOMAIN behaviour would not be ours to
//! test. This module is only sockets and the state file.
//!
//! The current answer is written to a state file atomically (write a temporary file in the
//! same directory, fsync it, rename it over the old one, fsync the directory) *before* it is
//! served, and read back at start: after a restart the server answers with the last answer
//! before any Controller is heard from. The replaced file is kept as `<file>.prev`; a
//! damaged state file (empty, cut short, garbage) is set aside and the previous copy, or
//! else the initial answer, is served: a bad file never keeps the area's DNS down.

use super::answer::{measurable, respond_with, truncated, EcsReply, QueryContext, QueryTransport};
use super::answer_cache::AnswerCache;
use super::ecs::client_subnet;
use super::learned::{
    question_key, Explained, Learned, LearnedConfig, SampleBatch, SteeringCounters,
};
use super::proximity::EntryView;
use super::steering::{By, LearnedAreas, Pick, Steering};
use super::zone::{ZoneLayout, ZoneState};
use super::{Fence, Held, NameServer, NameServerError, MAX_EPOCH_AHEAD_MS};
use crate::director::zone::WwwRecords;
use crate::model::AreaName;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;

/// The state file is tiny; anything larger is not ours.
const MAX_STATE_FILE: u64 = 1 << 20;
/// Concurrent TCP connections served; more wait in the accept queue.
const MAX_TCP_CONNECTIONS: usize = 128;
/// Bytes read at once from a TCP connection (several pipelined requests).
const TCP_READ_BUFFER: usize = 16 * 1024;
/// Replies held back for one write at most this many bytes.
const TCP_WRITE_BATCH: usize = 32 * 1024;
/// A TCP connection idle this long is closed (RFC 7766 §6.2.3 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Most UDP worker threads (one per core up to this).
const UDP_THREADS_MAX: usize = 8;
/// How often a UDP worker blocked in `recv_from` looks whether it should stop.
const UDP_STOP_CHECK: Duration = Duration::from_millis(100);

/// Errors of the embedded server's start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// The state file exists but cannot be read or parsed.
    #[error("cannot read state file {path}: {detail}")]
    StateFile {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A socket could not be bound.
    #[error("cannot listen on {addr} ({proto}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// "udp" or "tcp".
        proto: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// One area's embedded name server: zone layout, current answer, state file. Cheap to
/// clone (shared); one clone serves sockets while another is the Director's [`NameServer`].
#[derive(Clone)]
pub struct EmbeddedServer {
    inner: Arc<Inner>,
}

struct Inner {
    area: AreaName,
    /// The zones served; the other areas may change on a reload ([`EmbeddedServer::set_layout`]).
    layout: RwLock<ZoneLayout>,
    state_file: PathBuf,
    /// What is served; replaced whole after the state file is written.
    state: RwLock<ZoneState>,
    /// Serialises writers so the serial and the file stay in step.
    writer: Mutex<()>,
    /// Source steering of the site's `www` (empty: the paper's §7.2 answer).
    steering: RwLock<Steering>,
    /// Learned steering (`None`: off): the measurement, the learned table, the counters.
    learned: std::sync::Mutex<Option<Learned>>,
    /// Counts answers: the rotation of address rrsets, so the first address cycles over
    /// the cluster's servers from one reply to the next.
    rotation: AtomicUsize,
    /// Serialised replies until the zones or the steering change (see [`AnswerCache`]).
    cache: AnswerCache,
}

impl EmbeddedServer {
    /// Opens the server's state: the last answer from `state_file` when it exists, else
    /// an empty answer (www has no address until the first decision).
    pub fn open(
        area: AreaName,
        layout: ZoneLayout,
        state_file: PathBuf,
    ) -> Result<Self, EmbeddedError> {
        Self::open_or(area, layout, state_file, WwwRecords::default())
    }

    /// Like [`EmbeddedServer::open`], but with no state file yet (first start) serves
    /// `initial` — e.g. the home cluster's servers from the configuration — so the site
    /// resolves even before the first decision. `initial` is not written to disk; the
    /// first applied decision is.
    pub fn open_or(
        area: AreaName,
        layout: ZoneLayout,
        state_file: PathBuf,
        initial: WwwRecords,
    ) -> Result<Self, EmbeddedError> {
        let state = recover_state(&area, &state_file).unwrap_or(ZoneState {
            www: initial,
            ..ZoneState::default()
        });
        Ok(Self {
            inner: Arc::new(Inner {
                area,
                layout: RwLock::new(layout),
                state_file,
                state: RwLock::new(state),
                writer: Mutex::new(()),
                steering: RwLock::new(Steering::none()),
                learned: std::sync::Mutex::new(None),
                rotation: AtomicUsize::new(0),
                cache: AnswerCache::default(),
            }),
        })
    }

    /// What is served now.
    pub fn state(&self) -> ZoneState {
        match self.inner.state.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The zone layout served.
    pub fn layout(&self) -> ZoneLayout {
        match self.inner.layout.read() {
            Ok(l) => l.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replaces the zone layout (a reloaded configuration added or removed an area, so
    /// the site zone's delegations change); takes effect at the next query. The site and
    /// this area's own zone cannot change: such a layout is refused and the old one kept.
    pub fn set_layout(&self, layout: ZoneLayout) -> Result<(), String> {
        let mut l = match self.inner.layout.write() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        if l.site != layout.site || l.area_zone != layout.area_zone {
            return Err(format!(
                "the site ({}) and the area's zone ({}) cannot change while serving",
                l.site, l.area_zone
            ));
        }
        *l = layout;
        drop(l);
        self.inner.cache.invalidate();
        Ok(())
    }

    /// Binds UDP and TCP on `listen` (port 0: one free port for both).
    pub async fn bind(&self, listen: SocketAddr) -> Result<Listening, EmbeddedError> {
        // With port 0, the UDP port the OS picks may be taken for TCP: try a few.
        let tries = if listen.port() == 0 { 20 } else { 1 };
        let mut last = None;
        for _ in 0..tries {
            let udp = std::net::UdpSocket::bind(listen).map_err(|source| EmbeddedError::Bind {
                addr: listen,
                proto: "udp",
                source,
            })?;
            let addr = udp.local_addr().map_err(|source| EmbeddedError::Bind {
                addr: listen,
                proto: "udp",
                source,
            })?;
            match TcpListener::bind(addr).await {
                Ok(tcp) => {
                    return Ok(Listening {
                        server: self.clone(),
                        udp,
                        tcp,
                        addr,
                    })
                }
                Err(source) => {
                    last = Some(EmbeddedError::Bind {
                        addr,
                        proto: "tcp",
                        source,
                    })
                }
            }
        }
        Err(last.unwrap_or(EmbeddedError::Bind {
            addr: listen,
            proto: "tcp",
            source: std::io::Error::other("no attempt"),
        }))
    }

    /// Replaces the source steering map (see [`super::steering`]); takes effect at the
    /// next query.
    pub fn set_steering(&self, steering: Steering) {
        match self.inner.steering.write() {
            Ok(mut s) => *s = steering,
            Err(p) => *p.into_inner() = steering,
        }
        self.inner.cache.invalidate();
    }

    /// Turns learned steering on ([`super::learned`]): `zones` maps every area to its
    /// zone, what a learned answer points at.
    pub fn enable_learning(
        &self,
        cfg: LearnedConfig,
        zones: impl IntoIterator<Item = (AreaName, hickory_proto::rr::Name)>,
    ) {
        let site_www = self.layout().site_www();
        let mut l = Learned::new(self.inner.area.clone(), &site_www, cfg);
        l.set_zones(zones);
        *self.learned() = Some(l);
        self.inner.cache.invalidate();
    }

    /// Replaces the areas' zones of learned steering (a reload changed the areas).
    pub fn set_learned_zones(
        &self,
        zones: impl IntoIterator<Item = (AreaName, hickory_proto::rr::Name)>,
    ) {
        if let Some(l) = self.learned().as_mut() {
            l.set_zones(zones);
        }
    }

    fn learned(&self) -> std::sync::MutexGuard<'_, Option<Learned>> {
        match self.inner.learned.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        }
    }

    /// This area's samples to share with the `Steering` group, if learning is on and any
    /// were taken.
    pub fn take_samples(&self, now: Instant) -> Option<SampleBatch> {
        self.learned().as_mut()?.take_batch(now)
    }

    /// A member joined the `Steering` group (or a view merged): this area's fresh samples
    /// go out again, so a late joiner learns what it missed ([`Learned::reshare`]).
    pub fn reshare_samples(&self, now: Instant) {
        if let Some(l) = self.learned().as_mut() {
            l.reshare(now);
        }
    }

    /// The areas whose Director is in the `Steering` group's view (`None`: not known);
    /// steered answers name only these ([`Learned::set_alive`]).
    pub fn set_alive_areas(&self, alive: Option<std::collections::HashSet<AreaName>>) {
        if let Some(l) = self.learned().as_mut() {
            l.set_alive(alive);
        }
    }

    /// Another area's samples, heard over the `Steering` group.
    pub fn heard_samples(&self, now: Instant, batch: &SampleBatch) {
        if let Some(l) = self.learned().as_mut() {
            l.heard(now, batch);
        }
    }

    /// Learned steering's counters (`None`: learning is off).
    pub fn steering_counters(&self) -> Option<SteeringCounters> {
        self.learned().as_ref().map(Learned::counters)
    }

    /// What the learned table holds for `resolver`'s prefix.
    pub fn learned_entry(&self, now: Instant, resolver: std::net::IpAddr) -> Option<EntryView> {
        self.learned().as_ref()?.entry(now, resolver)
    }

    /// How a query from `resolver` (without a client subnet) is answered now and why:
    /// who decides, the zone pointed at, and the learned entry of its prefix.
    pub fn explain(&self, resolver: std::net::IpAddr) -> Explained {
        let now = Instant::now();
        let steering = match self.inner.steering.read() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let learned = self.learned();
        let view = learned.as_ref().map(|l| l.at(now));
        let pick = steering.answer_for(resolver, view.as_ref().map(|v| v as &dyn LearnedAreas));
        Explained {
            area: self.inner.area.clone(),
            by: pick.by,
            target: pick.target.map(|n| n.to_ascii()),
            entry: learned.as_ref().and_then(|l| l.entry(now, resolver)),
            learning: learned.is_some(),
        }
    }

    fn answer(
        &self,
        request: &[u8],
        transport: QueryTransport,
        source: std::net::IpAddr,
    ) -> Option<Vec<u8>> {
        // Before the zones are read: a reply computed from zones older than a change must
        // not enter the cache after the change emptied it.
        let generation = self.inner.cache.generation();
        let state = match self.inner.state.read() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let steering = match self.inner.steering.read() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let rotation = self.inner.rotation.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut learned = self.learned();
        // With steering the reply depends on the source address, which is not in the key.
        // Without it the reply is a function of the request bytes (an ECS option in them
        // included: echoed with scope 0).
        let cached = steering.is_empty() && learned.is_none();
        if cached {
            drop(learned);
            if let Some(reply) = self.inner.cache.get(request, transport, rotation) {
                return Some(reply);
            }
            learned = self.learned();
        }
        let question = learned.as_ref().and_then(|_| question_key(request));
        if let (Some(l), Some(q), QueryTransport::Tcp) = (learned.as_mut(), &question, transport) {
            l.on_tcp_query(now, source, q);
        }
        let (site_target, by, ecs) = {
            let view = learned.as_ref().map(|l| l.at(now));
            let view = view.as_ref().map(|v| v as &dyn LearnedAreas);
            let (pick, ecs) = match client_subnet(request) {
                Ok(None) => (steering.answer_for(source, view), EcsReply::Absent),
                Ok(Some(c)) => {
                    let pick = steering.pick_with(c.prefix, source, view);
                    let ecs = EcsReply::Echo {
                        client: c.prefix,
                        scope: pick.scope,
                    };
                    (pick, ecs)
                }
                Err(e) => {
                    tracing::debug!(error = %e, %source, "malformed client subnet: FORMERR");
                    let paper = Pick {
                        target: None,
                        scope: 0,
                        by: By::Paper,
                        avoided: false,
                    };
                    (paper, EcsReply::Malformed)
                }
            };
            (pick.target.cloned(), (pick.by, pick.avoided), ecs)
        };
        drop(learned);
        let ctx = QueryContext {
            transport,
            site_target: site_target.as_ref(),
            rotation,
            ecs,
        };
        let layout = match self.inner.layout.read() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        let reply = respond_with(&layout, &state, request, &ctx)?;
        drop(layout);
        // A share of UDP answers from our zones is sent truncated, to time the TCP retry;
        // the others are counted by who decided them.
        if let Some(q) = &question {
            if let Some(l) = self.learned().as_mut() {
                if transport == QueryTransport::Udp
                    && measurable(&reply)
                    && l.on_udp_query(now, source, q)
                {
                    if let Some(cut) = truncated(&reply) {
                        return Some(cut);
                    }
                }
                l.count(q, by.0, by.1);
            }
        }
        if cached {
            self.inner
                .cache
                .put(generation, request, transport, ctx.rotation, &reply);
        }
        Some(reply)
    }
}

/// Bound sockets, ready to serve.
pub struct Listening {
    server: EmbeddedServer,
    udp: std::net::UdpSocket,
    tcp: TcpListener,
    addr: SocketAddr,
}

impl Listening {
    /// The address served (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let udp = match UdpWorkers::start(&self.server, &self.udp) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(error = %e, addr = %self.addr, "cannot start the UDP workers: serving TCP only");
                None
            }
        };
        let mut tasks = JoinSet::new();
        tasks.spawn(serve_tcp(self.server.clone(), self.tcp));
        tracing::info!(addr = %self.addr, area = %self.server.inner.area, "embedded name server serving");
        shutdown.await;
        tasks.shutdown().await;
        if let Some(w) = udp {
            w.stop().await;
        }
    }
}

/// The UDP side: one OS thread per core, each blocking in `recv_from` on a handle of the
/// one UDP socket and answering in place. Measured against tokio tasks sharing the socket
/// (bench/dns-vs-bind.sh): a datagram costs one recv and one send system call here, with no
/// readiness polling, waker or task hand-off around them, and the kernel wakes one waiting
/// thread per datagram.
struct UdpWorkers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl UdpWorkers {
    fn start(server: &EmbeddedServer, sock: &std::net::UdpSocket) -> std::io::Result<Self> {
        let n = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
            .clamp(1, UDP_THREADS_MAX);
        // The timeout only bounds how long a worker takes to see `stop`.
        sock.set_read_timeout(Some(UDP_STOP_CHECK))?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let sock = sock.try_clone()?;
            let server = server.clone();
            let stop = stop.clone();
            let t = std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || serve_udp(&server, &sock, &stop))?;
            threads.push(t);
        }
        Ok(Self { stop, threads })
    }

    /// Stops the workers and waits for them, so the socket is closed when this returns.
    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

fn serve_udp(server: &EmbeddedServer, sock: &std::net::UdpSocket, stop: &AtomicBool) {
    let mut buf = vec![0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let (n, peer) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => {
                // ICMP errors from earlier sends show up here on some systems: not fatal.
                // A short pause keeps a persistently failing socket from spinning a core.
                tracing::debug!(error = %e, "udp recv");
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        if let Some(reply) = server.answer(&buf[..n], QueryTransport::Udp, peer.ip()) {
            if let Err(e) = sock.send_to(&reply, peer) {
                tracing::debug!(error = %e, %peer, "udp send");
            }
        }
    }
}

async fn serve_tcp(server: EmbeddedServer, listener: TcpListener) {
    let permits = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    let mut conns = JoinSet::new();
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "tcp accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let server = server.clone();
        conns.spawn(async move {
            let _permit = permit;
            let _ = serve_tcp_conn(&server, stream, peer.ip()).await;
        });
        // Reap finished connections so the set does not grow.
        while conns.try_join_next().is_some() {}
    }
}

/// One TCP connection: length-prefixed requests in, replies out (RFC 1035 §4.2.2). Reads
/// go through a buffer, so pipelined requests (RFC 7766 §6.2.1.1) cost one read system call
/// between them, and the replies to requests that arrived together leave in one write.
async fn serve_tcp_conn(
    server: &EmbeddedServer,
    mut s: TcpStream,
    peer: std::net::IpAddr,
) -> std::io::Result<()> {
    let (r, mut w) = s.split();
    let mut r = BufReader::with_capacity(TCP_READ_BUFFER, r);
    let mut request = Vec::new();
    let mut out = Vec::new();
    loop {
        // Send what is answered before waiting for more: the client may wait for it.
        if !out.is_empty() && (!holds_a_request(r.buffer()) || out.len() >= TCP_WRITE_BATCH) {
            w.write_all(&out).await?;
            out.clear();
        }
        let len = match tokio::time::timeout(TCP_IDLE, r.read_u16()).await {
            Ok(Ok(n)) => n as usize,
            _ => return Ok(()),
        };
        request.resize(len, 0);
        match tokio::time::timeout(TCP_IDLE, r.read_exact(&mut request)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let Some(reply) = server.answer(&request, QueryTransport::Tcp, peer) else {
            return w.write_all(&out).await;
        };
        let Ok(rlen) = u16::try_from(reply.len()) else {
            return w.write_all(&out).await;
        };
        out.extend_from_slice(&rlen.to_be_bytes());
        out.extend_from_slice(&reply);
    }
}

/// Whether `buffered` starts with a whole length-prefixed request.
fn holds_a_request(buffered: &[u8]) -> bool {
    match buffered {
        [hi, lo, rest @ ..] => rest.len() >= usize::from(u16::from_be_bytes([*hi, *lo])),
        _ => false,
    }
}

/// The previous good copy of the state file: `<file>.prev`, one generation back.
fn prev_file(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".prev");
    path.with_file_name(name)
}

/// The stored answer at start, never an error: the state file; if it is missing or
/// damaged (empty, cut short, not ours), the previous good copy; if that fails too,
/// nothing (the caller serves its initial answer). A damaged file is kept aside as
/// `<file>.bad-<unix seconds>` for a human to look at, and every step is logged: the
/// area's DNS and the node's other roles must not wait for someone to delete a file.
fn recover_state(area: &AreaName, path: &Path) -> Option<ZoneState> {
    match load_state(path) {
        Ok(Some(state)) => return Some(state),
        Ok(None) => {}
        Err(e) => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            let mut name = path.file_name().unwrap_or_default().to_owned();
            name.push(format!(".bad-{secs}"));
            let aside = path.with_file_name(name);
            match std::fs::rename(path, &aside) {
                Ok(()) => {
                    tracing::error!(%area, error = %e, kept = %aside.display(), "damaged state file set aside; trying the previous copy")
                }
                Err(re) => {
                    tracing::error!(%area, error = %e, rename_error = %re, "damaged state file (could not set it aside); trying the previous copy")
                }
            }
        }
    }
    let prev = prev_file(path);
    match load_state(&prev) {
        Ok(Some(state)) => {
            tracing::warn!(%area, file = %prev.display(), serial = state.serial, "serving the previous stored answer");
            Some(state)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::error!(%area, error = %e, "the previous state file is damaged too; serving the initial answer");
            None
        }
    }
}

fn load_state(path: &Path) -> Result<Option<ZoneState>, EmbeddedError> {
    let err = |detail: String| EmbeddedError::StateFile {
        path: path.to_owned(),
        detail,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e.to_string())),
    };
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(file, MAX_STATE_FILE + 1),
        &mut text,
    )
    .map_err(|e| err(e.to_string()))?;
    if text.len() as u64 > MAX_STATE_FILE {
        return Err(err(format!("larger than {MAX_STATE_FILE} bytes")));
    }
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| err(format!("line {}, column {}: {e}", e.line(), e.column())))
}

/// Writes `state` to `path` atomically: temp file in the same directory, fsync, the old
/// file renamed to `<file>.prev` (one good generation back, for [`recover_state`]), the
/// temp file renamed over it, fsync the directory (so the renames survive a power cut).
fn store_state(path: &Path, state: &ZoneState) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    match std::fs::rename(path, prev_file(path)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

impl NameServer for EmbeddedServer {
    fn area(&self) -> &AreaName {
        &self.inner.area
    }

    fn describe(&self) -> String {
        format!(
            "embedded server for {} (state {})",
            self.layout().area_zone,
            self.inner.state_file.display()
        )
    }

    async fn held(&self) -> Result<Held, NameServerError> {
        let s = self.state();
        Ok(Held {
            www: s.www,
            serial: Some(s.serial),
            epoch: Some(s.epoch),
        })
    }

    async fn replace(&self, want: &WwwRecords, fence: &Fence) -> Result<(), NameServerError> {
        let _writer = self.inner.writer.lock().await;
        let old = self.state();
        let trusted = old
            .epoch
            .saturating_sub(crate::controller::actor::wall_clock_ms())
            <= MAX_EPOCH_AHEAD_MS;
        if fence.epoch > 0 && old.epoch > fence.epoch && trusted {
            tracing::warn!(area = %self.inner.area, held = old.epoch, ours = fence.epoch, "refused an update of an older decision");
            return Err(NameServerError::Stale {
                area: self.inner.area.clone(),
                server: self.describe(),
                held: old.epoch,
                ours: fence.epoch,
            });
        }
        if let Some(expect) = fence.expect.filter(|e| *e != old.epoch) {
            return Err(NameServerError::Failed {
                area: self.inner.area.clone(),
                server: self.describe(),
                detail: format!(
                    "another writer changed the answer meanwhile (epoch {}, read {expect}); reading again",
                    old.epoch
                ),
            });
        }
        let mut serial = old.serial.wrapping_add(1);
        if serial == 0 {
            serial = 1;
        }
        let next = ZoneState {
            serial,
            www: want.clone(),
            epoch: if fence.epoch > 0 {
                fence.epoch
            } else {
                old.epoch
            },
        };
        let path = self.inner.state_file.clone();
        let to_store = next.clone();
        let stored = tokio::task::spawn_blocking(move || store_state(&path, &to_store))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
        if let Err(e) = stored {
            return Err(NameServerError::Storage {
                area: self.inner.area.clone(),
                path: self.inner.state_file.display().to_string(),
                detail: e.to_string(),
            });
        }
        match self.inner.state.write() {
            Ok(mut s) => *s = next,
            Err(p) => *p.into_inner() = next,
        }
        self.inner.cache.invalidate();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::director::zone::RecordTtl;

    fn tmpdir(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("walrus-embedded-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn layout() -> ZoneLayout {
        ZoneLayout::new(
            "example.com",
            "a1.example.com",
            None,
            vec![],
            RecordTtl::DEFAULT,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn state_survives_reopen_and_tmp_is_gone() {
        let d = tmpdir("reopen");
        let f = d.join("state.json");
        let s = EmbeddedServer::open(AreaName::from("a1"), layout(), f.clone()).unwrap();
        assert_eq!(s.state(), ZoneState::default());
        let want = WwwRecords::from_addrs(["10.1.1.1".parse().unwrap()], RecordTtl::DEFAULT);
        s.replace(&want, &Fence::NONE).await.unwrap();
        let s2 = EmbeddedServer::open(AreaName::from("a1"), layout(), f.clone()).unwrap();
        assert_eq!(s2.state().www, want);
        assert_eq!(s2.state().serial, 2);
        assert!(!d.join("state.json.tmp").exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn initial_answer_only_until_a_state_file_exists() {
        let d = tmpdir("initial");
        let f = d.join("state.json");
        let home = WwwRecords::from_addrs(["10.9.9.9".parse().unwrap()], RecordTtl::DEFAULT);
        let s = EmbeddedServer::open_or(AreaName::from("a1"), layout(), f.clone(), home.clone())
            .unwrap();
        assert_eq!(s.state().www, home);
        assert!(!f.exists(), "the initial answer is not persisted");
        let want = WwwRecords::from_addrs(["10.1.1.1".parse().unwrap()], RecordTtl::DEFAULT);
        s.replace(&want, &Fence::NONE).await.unwrap();
        let s2 = EmbeddedServer::open_or(AreaName::from("a1"), layout(), f, home).unwrap();
        assert_eq!(
            s2.state().www,
            want,
            "the last decision beats the initial answer"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn a_damaged_state_file_falls_back_to_the_previous_copy_then_to_the_initial_answer() {
        let initial = WwwRecords::from_addrs(["10.9.9.9".parse().unwrap()], RecordTtl::DEFAULT);
        let first = WwwRecords::from_addrs(["10.1.1.1".parse().unwrap()], RecordTtl::DEFAULT);
        let second = WwwRecords::from_addrs(["10.2.2.2".parse().unwrap()], RecordTtl::DEFAULT);
        for (what, damage) in [
            ("empty", &b""[..]),
            ("truncated", &br#"{"serial": 3, "www": {"v4": ["10.2"#[..]),
            ("garbage", &b"\x00\xffnot a state file at all\n"[..]),
        ] {
            let d = tmpdir(&format!("damaged-{what}"));
            let f = d.join("a1.state");
            let open = || {
                EmbeddedServer::open_or(AreaName::from("a1"), layout(), f.clone(), initial.clone())
                    .unwrap()
            };
            let s = open();
            s.replace(&first, &Fence::NONE).await.unwrap();
            s.replace(&second, &Fence::NONE).await.unwrap();
            assert_eq!(
                open().state().www,
                second,
                "{what}: the good file is served"
            );
            // The file is damaged: the previous generation is served, the damaged file
            // is kept aside for a human.
            std::fs::write(&f, damage).unwrap();
            let s = open();
            assert_eq!(s.state().www, first, "{what}: the previous copy is served");
            let aside: Vec<_> = std::fs::read_dir(&d)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("a1.state.bad-"))
                .collect();
            assert_eq!(aside.len(), 1, "{what}: the damaged file is kept aside");
            assert_eq!(std::fs::read(aside[0].path()).unwrap(), damage);
            // Both damaged: the initial answer; the server still opens.
            std::fs::write(prev_file(&f), damage).unwrap();
            std::fs::write(&f, damage).unwrap();
            assert_eq!(
                open().state().www,
                initial,
                "{what}: the initial answer is served"
            );
            // And the next decision is stored and served again.
            let s = open();
            s.replace(&second, &Fence::NONE).await.unwrap();
            assert_eq!(open().state().www, second, "{what}");
            let _ = std::fs::remove_dir_all(&d);
        }
    }

    #[tokio::test]
    async fn an_older_decision_is_refused_and_the_epoch_survives_a_restart() {
        let d = tmpdir("fence");
        let f = d.join("a1.state");
        let open = || EmbeddedServer::open(AreaName::from("a1"), layout(), f.clone()).unwrap();
        let s = open();
        let newer = WwwRecords::from_addrs(["10.2.2.2".parse().unwrap()], RecordTtl::DEFAULT);
        let older = WwwRecords::from_addrs(["10.1.1.1".parse().unwrap()], RecordTtl::DEFAULT);
        s.replace(&newer, &Fence::of(200)).await.unwrap();
        // Restarted: the epoch is in the state file.
        let s = open();
        assert_eq!(s.held().await.unwrap().epoch, Some(200));
        let e = s.replace(&older, &Fence::of(100)).await.unwrap_err();
        assert!(
            matches!(
                e,
                NameServerError::Stale {
                    held: 200,
                    ours: 100,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(s.state().www, newer);
        // A compare-and-swap against an epoch no longer held fails, retryably.
        let raced = Fence {
            epoch: 300,
            expect: Some(150),
            stamp: false,
        };
        let e = s.replace(&older, &raced).await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert_eq!(s.state().www, newer);
        // The right expectation goes through.
        s.replace(
            &older,
            &Fence {
                expect: Some(200),
                ..raced
            },
        )
        .await
        .unwrap();
        assert_eq!((s.state().www, s.state().epoch), (older, 300));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn unwritable_state_file_is_a_storage_error_and_nothing_changes() {
        let d = tmpdir("unwritable");
        // A directory where the temp file should go makes the write fail.
        let f = d.join("state.json");
        std::fs::create_dir_all(d.join("state.json.tmp")).unwrap();
        let s = EmbeddedServer::open(AreaName::from("a1"), layout(), f).unwrap();
        let want = WwwRecords::from_addrs(["10.1.1.1".parse().unwrap()], RecordTtl::DEFAULT);
        let e = s.replace(&want, &Fence::NONE).await.unwrap_err();
        assert!(matches!(e, NameServerError::Storage { .. }));
        assert!(e.is_retryable());
        assert_eq!(s.state(), ZoneState::default(), "not served unless stored");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_whole_request_is_seen_in_the_buffer() {
        assert!(!holds_a_request(&[]));
        assert!(!holds_a_request(&[0]));
        assert!(!holds_a_request(&[0, 3, 1, 2]));
        assert!(holds_a_request(&[0, 3, 1, 2, 3]));
        assert!(holds_a_request(&[0, 0]));
    }

    /// Requests pipelined in one TCP segment get every reply, in order (RFC 7766 §6.2.1.1),
    /// and the connection stays usable after the batch.
    #[tokio::test]
    async fn pipelined_tcp_requests_are_all_answered_in_order() {
        use hickory_proto::op::{Message, Query};
        use hickory_proto::rr::{Name, RecordType};
        let d = tmpdir("pipelined");
        let home = WwwRecords::from_addrs(["10.9.9.9".parse().unwrap()], RecordTtl::DEFAULT);
        let s = EmbeddedServer::open_or(AreaName::from("a1"), layout(), d.join("s"), home).unwrap();
        let listening = s.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listening.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(listening.run(async {
            let _ = stopped.await;
        }));
        let framed = |id: u16| {
            let mut m = Message::new();
            m.set_id(id);
            m.add_query(Query::query(
                Name::from_ascii("www.a1.example.com.").unwrap(),
                RecordType::A,
            ));
            let b = m.to_vec().unwrap();
            let mut f = (b.len() as u16).to_be_bytes().to_vec();
            f.extend_from_slice(&b);
            f
        };
        let mut c = TcpStream::connect(addr).await.unwrap();
        for batch in [&[1u16, 2, 3][..], &[4]] {
            let bytes: Vec<u8> = batch.iter().flat_map(|id| framed(*id)).collect();
            c.write_all(&bytes).await.unwrap();
            for id in batch {
                let len = c.read_u16().await.unwrap();
                let mut reply = vec![0; len as usize];
                c.read_exact(&mut reply).await.unwrap();
                let m = Message::from_vec(&reply).unwrap();
                assert_eq!(m.id(), *id);
                assert_eq!(m.answers().len(), 1, "{m:?}");
            }
        }
        let _ = stop.send(());
        served.await.unwrap();
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A query for `name` from a resolver that adds the raw ECS option `ecs` (code 8).
    fn ask_ecs(name: &str, ecs: Option<&[u8]>) -> Vec<u8> {
        use hickory_proto::op::{Edns, Message, Query};
        use hickory_proto::rr::rdata::opt::EdnsOption;
        use hickory_proto::rr::{Name, RecordType};
        let mut m = Message::new();
        m.set_id(99);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        let mut e = Edns::new();
        e.set_max_payload(1232);
        if let Some(data) = ecs {
            e.options_mut()
                .insert(EdnsOption::Unknown(8, data.to_vec()));
        }
        m.set_edns(e);
        m.to_vec().unwrap()
    }

    /// The reply's CNAME target (if any), whether it is FORMERR, and its ECS option (family, source, scope).
    fn reply_of(bytes: &[u8]) -> (Option<String>, bool, Option<(std::net::IpAddr, u8, u8)>) {
        use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
        use hickory_proto::rr::RData;
        let m = hickory_proto::op::Message::from_vec(bytes).unwrap();
        let cname = m.answers().iter().find_map(|r| match r.data() {
            RData::CNAME(c) => Some(c.0.to_ascii()),
            _ => None,
        });
        let ecs = m
            .extensions()
            .as_ref()
            .and_then(|e| match e.option(EdnsCode::Subnet) {
                Some(EdnsOption::Subnet(c)) => {
                    Some((c.addr(), c.source_prefix(), c.scope_prefix()))
                }
                _ => None,
            });
        // Other areas' zones are not in this layout: a steered CNAME ends in NXDOMAIN here,
        // so only FORMERR is told apart.
        let formerr = m.response_code() == hickory_proto::op::ResponseCode::FormErr;
        (cname, formerr, ecs)
    }

    #[test]
    fn learning_truncates_a_share_of_udp_answers_and_times_the_tcp_retry() {
        let d = tmpdir("learned");
        let s = EmbeddedServer::open(AreaName::from("a1"), layout(), d.join("state.json")).unwrap();
        let zone = |n: &str| hickory_proto::rr::Name::from_ascii(n).unwrap();
        s.enable_learning(
            LearnedConfig::default(),
            [(AreaName::from("a1"), zone("a1.example.com."))],
        );
        let ask = |name: &str, t: QueryTransport, from: &str| {
            let bytes = s
                .answer(&ask_ecs(name, None), t, from.parse().unwrap())
                .unwrap();
            hickory_proto::op::Message::from_vec(&bytes).unwrap()
        };
        // A name outside our zones (REFUSED) is never truncated, nor does it spend a probe.
        assert!(!ask("www.example.org.", QueryTransport::Udp, "192.0.2.7").truncated());
        // The first UDP answer to a new prefix is truncated: no records, EDNS kept.
        let r = ask("www.example.com.", QueryTransport::Udp, "192.0.2.7");
        assert!(r.truncated() && r.answers().is_empty() && r.extensions().is_some());
        // The next is not (one per prefix per probe_interval), and is counted.
        assert!(!ask("www.example.com.", QueryTransport::Udp, "192.0.2.8").truncated());
        // The TCP retry from the prefix is a full answer and the sample.
        let r = ask("www.example.com.", QueryTransport::Tcp, "192.0.2.7");
        assert!(!r.truncated() && !r.answers().is_empty());
        let c = s.steering_counters().unwrap();
        assert_eq!(
            (c.probes_sent, c.samples_measured, c.table_prefixes),
            (1, 1, 1)
        );
        assert_eq!((c.answers_paper, c.answers_learned), (2, 0), "{c:?}");
        let batch = s.take_samples(std::time::Instant::now()).unwrap();
        assert_eq!(batch.samples.len(), 1);
        let e = s.explain("192.0.2.99".parse().unwrap());
        assert_eq!(
            (e.by, e.learning),
            (By::Paper, true),
            "one sample is too few"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn client_subnet_steers_and_scopes_the_answer() {
        let d = tmpdir("ecs");
        let s = EmbeddedServer::open(AreaName::from("a1"), layout(), d.join("state.json")).unwrap();
        let ask = |name: &str, ecs: Option<&[u8]>, from: &str| {
            reply_of(
                &s.answer(
                    &ask_ecs(name, ecs),
                    QueryTransport::Udp,
                    from.parse().unwrap(),
                )
                .unwrap(),
            )
        };
        let ip = |a: &str| a.parse::<std::net::IpAddr>().unwrap();
        let www = "www.example.com.";
        let a = |z: &str| Some(format!("www.{z}.example.com."));
        // No steering: the paper's answer, the option echoed with scope 0 (twice: the
        // second reply comes from the answer cache).
        for _ in 0..2 {
            assert_eq!(
                ask(www, Some(&[0, 1, 24, 0, 10, 1, 2]), "127.0.0.1"),
                (a("a1"), false, Some((ip("10.1.2.0"), 24, 0)))
            );
        }
        s.set_steering(
            Steering::from_pairs([
                ("127.0.0.1", "a2.example.com"),
                ("10.1.0.0/16", "a3.example.com"),
            ])
            .unwrap(),
        );
        // The client's subnet decides, not the resolver's address; scope = the rule's /16.
        assert_eq!(
            ask(www, Some(&[0, 1, 24, 0, 10, 1, 2]), "127.0.0.1"),
            (a("a3"), false, Some((ip("10.1.2.0"), 24, 16)))
        );
        // An unmapped client subnet falls back to the resolver's rule, for a scope that
        // keeps 10.1.0.0/16 out (10.0.0.0/16 shares 15 bits with it).
        assert_eq!(
            ask(www, Some(&[0, 1, 24, 0, 10, 0, 9]), "127.0.0.1"),
            (a("a2"), false, Some((ip("10.0.9.0"), 24, 16)))
        );
        // Without ECS: the resolver's address, and no option in the reply.
        assert_eq!(ask(www, None, "127.0.0.1"), (a("a2"), false, None));
        // Another name does not depend on the client: scope 0.
        assert_eq!(
            ask("example.com.", Some(&[0, 1, 24, 0, 10, 1, 2]), "127.0.0.1"),
            (None, false, Some((ip("10.1.2.0"), 24, 0)))
        );
        // Malformed (a bit beyond the source prefix; extra octets; a bad family that
        // hickory's own parser refuses): FORMERR, no option.
        for bad in [
            &[0, 1, 23, 0, 10, 1, 3][..],
            &[0, 1, 16, 0, 10, 1, 0],
            &[0, 7, 16, 0, 10, 1],
            &[0, 1, 40, 0, 10, 1, 2, 3, 4],
        ] {
            let (cname, formerr, ecs) = ask(www, Some(bad), "127.0.0.1");
            assert_eq!((cname, formerr, ecs), (None, true, None), "{bad:?}");
        }
        let _ = std::fs::remove_dir_all(&d);
    }
}
