//! The link tasks: accepting and admitting connections, one task per peer that dials (or
//! awaits) and reconnects with backoff, and per connection the two lanes' writers and
//! readers that frame, check and decode messages. The API in `mod.rs` only queues
//! frames for them and takes their events.

use super::*;
use bytes::Bytes;

/// Accepts connections, checks who they are, and hands them to the peer's task.
pub(super) async fn accept_loop<M: Message>(shared: Arc<Shared<M>>) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let incoming = tokio::select! {
            i = shared.endpoint.accept() => match i { Some(i) => i, None => return },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        if shared.pending_handshakes.load(Ordering::Relaxed) >= shared.limits.max_incoming {
            warn!(from = %incoming.remote_address(), "too many handshakes in progress: refused");
            incoming.refuse();
            continue;
        }
        shared.pending_handshakes.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        tokio::spawn(async move {
            let from = incoming.remote_address();
            let result = tokio::time::timeout(shared.limits.handshake_timeout, incoming).await;
            shared.pending_handshakes.fetch_sub(1, Ordering::Relaxed);
            let error = match result {
                Ok(Ok(conn)) => return admit(&shared, conn),
                Ok(Err(e)) => refusals::explain(&e.to_string()),
                Err(_) => "handshake timed out".to_owned(),
            };
            if let Some(count) = shared.refusals.record(std::time::Instant::now()) {
                warn!(%from, %error, count, total = shared.refusals.total(),
                    "handshake refused ({count} since the last such line; at most one line per {:?})",
                    refusals::LOG_INTERVAL);
            }
        });
    }
}

/// Decides whether an authenticated connection may become a link.
fn admit<M: Message>(shared: &Shared<M>, conn: quinn::Connection) {
    let from = conn.remote_address();
    let chain = tls::peer_chain(&conn);
    let names = shared.peers.keys();
    let found = tls::peer_name(&chain, names.iter().map(NodeId::as_str));
    let found = found.and_then(|f| names.iter().find(|k| k.as_str() == f));
    let Some((name, peer)) = found.and_then(|n| Some((n, shared.peers.get(n)?))) else {
        warn!(%from, "certificate names no configured peer: closed");
        conn.close(
            close_code::REFUSED.into(),
            b"certificate names no configured peer",
        );
        return;
    };
    if *name > shared.me {
        warn!(%from, peer = %name, "peer dialed but should be dialed: closed");
        conn.close(
            close_code::REFUSED.into(),
            b"the node whose name sorts first dials",
        );
        return;
    }
    if shared.blocked.is_cut(name) {
        debug!(peer = %name, "cut by the partition switch: closed");
        conn.close(close_code::CUT.into(), b"cut by the partition switch");
        return;
    }
    if let Err(e) = peer.accepted.try_send(conn) {
        let conn = match e {
            mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c) => c,
        };
        warn!(
            peer = %name,
            "connections arrive faster than links start: closed"
        );
        conn.close(close_code::REFUSED.into(), b"busy");
    }
}

/// Owns the lifecycle of the link to one peer: dial (or wait for the peer to dial), run
/// the link, report down, retry with backoff. Link events of one peer are thus ordered.
pub(super) async fn peer_task<M: Message>(
    shared: Arc<Shared<M>>,
    name: NodeId,
    mut accepted: mpsc::Receiver<quinn::Connection>,
) {
    let dialer = shared.me < name;
    let mut shutdown = shared.shutdown.clone();
    let mut backoff = shared.limits.backoff_min;
    let mut attempt: u64 = 0;
    let mut next: Option<quinn::Connection> = None;
    let configured = shared.peers.get(&name).map(|p| p.addr);
    let mut admission = admission::Admission::new(
        admission::AdmissionConfig {
            probe: shared.limits.duplicate_probe,
            backoff_min: shared.limits.backoff_min,
            backoff_max: shared.limits.backoff_max,
        },
        configured.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
    );
    // Told once per peer: this process is a duplicate of its own name.
    let mut told_duplicate = false;
    loop {
        // Closed: the peer left the configuration (`Transport::set_peers`).
        if *shutdown.borrow() || accepted.is_closed() {
            return;
        }
        let conn = if let Some(c) = next.take() {
            c
        } else if dialer {
            if shared.blocked.is_cut(&name) {
                let changed = shared.blocked.changed.notified();
                tokio::select! {
                    _ = changed => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                continue;
            }
            match dial(&shared, &name).await {
                Ok(c) => c,
                Err(reason) => {
                    attempt += 1;
                    debug!(peer = %name, %reason, ?backoff, "dial failed");
                    let delay =
                        backoff + jitter(shared.me.as_str(), name.as_str(), attempt, backoff / 2);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                    backoff = (backoff * 2).min(shared.limits.backoff_max);
                    continue;
                }
            }
        } else {
            tokio::select! {
                c = accepted.recv() => match c { Some(c) => c, None => return },
                _ = shutdown.wait_for(|s| *s) => return,
            }
        };
        let end = run_link(&shared, &name, conn, &mut accepted, &mut admission).await;
        let (reason, was_up, replacement, link) =
            (end.reason, end.was_up, end.replacement, end.link);
        if let Some(refusal) = end.refused_as_duplicate {
            if !told_duplicate {
                told_duplicate = true;
                let _ = shared
                    .control
                    .send((
                        TransportEvent::Duplicate {
                            peer: name.clone(),
                            reason: refusal,
                        },
                        None,
                        link,
                    ))
                    .await;
            }
            // Keep away from the peer that refused us: the driver stops the node.
            backoff = shared.limits.backoff_max;
        }
        if was_up {
            info!(peer = %name, %reason, "link down");
            backoff = shared.limits.backoff_min;
            let _ = shared
                .control
                .send((
                    TransportEvent::LinkDown {
                        peer: name.clone(),
                        reason,
                    },
                    None,
                    link,
                ))
                .await;
        } else {
            debug!(peer = %name, %reason, "link failed before it was up");
            if dialer {
                attempt += 1;
                let delay =
                    backoff + jitter(shared.me.as_str(), name.as_str(), attempt, backoff / 2);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                backoff = (backoff * 2).min(shared.limits.backoff_max);
            }
        }
        next = replacement;
    }
}

/// A deterministic spread of re-dial times (no global RNG): a hash of the pair and attempt.
fn jitter(me: &str, peer: &str, attempt: u64, span: Duration) -> Duration {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (me, peer, attempt).hash(&mut h);
    let span = span.as_micros().max(1) as u64;
    Duration::from_micros(h.finish() % span)
}

async fn dial<M: Message>(shared: &Shared<M>, name: &NodeId) -> Result<quinn::Connection, String> {
    let addr = shared
        .peers
        .get(name)
        .map(|p| p.addr)
        .ok_or("unknown peer")?;
    let connecting = shared
        .endpoint
        .connect(addr, name.as_str())
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(shared.limits.handshake_timeout, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(refusals::explain(&e.to_string())),
        Err(_) => Err("handshake timed out".into()),
    }
}

/// How one link ended.
struct LinkEnd {
    /// Why (also logged).
    reason: String,
    /// Whether it was reported up.
    was_up: bool,
    /// A newer connection from the same peer that replaced it (or was waiting).
    replacement: Option<quinn::Connection>,
    /// The peer closed it because another process holds this node's name.
    refused_as_duplicate: Option<String>,
    /// The connection's `stable_id` (tags its events, see [`TransportEvents`]).
    link: usize,
}

/// Runs one connection as the link to `name` until it ends. Newer connections from the
/// same peer meanwhile go through `admission` (replace, hold, or refuse as a duplicate).
async fn run_link<M: Message>(
    shared: &Shared<M>,
    name: &NodeId,
    conn: quinn::Connection,
    accepted: &mut mpsc::Receiver<quinn::Connection>,
    admission: &mut admission::Admission,
) -> LinkEnd {
    let Some(peer) = shared.peers.get(name) else {
        return LinkEnd {
            reason: "unknown peer".into(),
            was_up: false,
            replacement: None,
            refused_as_duplicate: None,
            link: conn.stable_id(),
        };
    };
    let (tx, rx) = mpsc::channel(shared.limits.peer_queue.max(1));
    let (control, control_rx) = mpsc::channel(shared.limits.peer_queue.max(1));
    let queued = Arc::new(AtomicUsize::new(0));
    *peer.link() = Some(Link {
        tx,
        queued: queued.clone(),
        control,
        conn: conn.clone(),
    });
    let up = AtomicBool::new(false);
    // Microseconds since `shared.epoch` of the last frame read (0: none yet).
    let heard = AtomicU64::new(0);
    let started = std::time::Instant::now();
    admission.link_started(started, conn.remote_address());
    let mut shutdown = shared.shutdown.clone();
    let mut replacement = None;
    // A newcomer held by the admission rule, and when to decide about it.
    let mut held: Option<(quinn::Connection, std::time::Instant)> = None;
    let write = write_loop(shared, &conn, control_rx, rx, &queued);
    let read = read_loop(shared, name, &conn, &up, &heard);
    let streams = accept_streams(shared, name, &conn);
    tokio::pin!(write, read, streams);
    let (code, reason): (u32, String) = loop {
        let deadline = held.as_ref().map(|h| h.1);
        let hold_timer = async move {
            match deadline {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        let verdict = tokio::select! {
            r = &mut write => break r,
            r = &mut read => break r,
            r = &mut streams => break r,
            c = accepted.recv() => {
                let Some(c) = c else { break (close_code::SHUTDOWN, "transport stopped".into()) };
                if let Some((old, _)) = held.take() {
                    old.close(close_code::REFUSED.into(), b"superseded by a newer connection");
                }
                let now = std::time::Instant::now();
                note_heard(shared, &heard, admission);
                let v = admission.offer(now, c.remote_address());
                held = Some((c, now));
                v
            }
            _ = hold_timer => {
                note_heard(shared, &heard, admission);
                match admission.check(std::time::Instant::now()) {
                    Some(v) => v,
                    None => { held = None; continue; }
                }
            }
            _ = shutdown.wait_for(|s| *s) => break (close_code::SHUTDOWN, "shutdown".into()),
        };
        let Some((newcomer, _)) = held.take() else {
            continue;
        };
        match verdict {
            admission::Verdict::Hold { until } => held = Some((newcomer, until)),
            admission::Verdict::Refuse(d) => {
                let reason = duplicate_reason(name, &d);
                log_duplicate(shared, name, &d, &reason);
                newcomer.close(close_code::DUPLICATE.into(), reason.as_bytes());
            }
            admission::Verdict::Admit { duplicate } => {
                replacement = Some(newcomer);
                match duplicate {
                    Some(d) => {
                        let reason = duplicate_reason(name, &d);
                        log_duplicate(shared, name, &d, &reason);
                        break (close_code::DUPLICATE, reason);
                    }
                    None => {
                        break (
                            close_code::REPLACED,
                            "replaced by a newer connection from the peer".into(),
                        )
                    }
                }
            }
        }
    };
    // Read before our own close, which would mask the peer's reason.
    let refused_as_duplicate = match conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(c))
            if c.error_code == close_code::DUPLICATE.into() && code != close_code::DUPLICATE =>
        {
            Some(String::from_utf8_lossy(&c.reason).into_owned())
        }
        _ => None,
    };
    conn.close(code.into(), reason.as_bytes());
    admission.link_ended();
    if replacement.is_none() {
        // The link ended while a newcomer waited: nothing to protect any more.
        replacement = held.take().map(|h| h.0);
    }
    {
        let mut guard = peer.link();
        if guard
            .as_ref()
            .is_some_and(|l| l.conn.stable_id() == conn.stable_id())
        {
            *guard = None;
        }
    }
    if code == close_code::PROTOCOL {
        warn!(peer = %name, %reason, "peer broke the wire format: connection closed");
    }
    LinkEnd {
        reason,
        was_up: up.load(Ordering::Relaxed),
        replacement,
        refused_as_duplicate,
        link: conn.stable_id(),
    }
}

/// Feeds the link's last frame time to the admission rule.
fn note_heard<M>(shared: &Shared<M>, heard: &AtomicU64, admission: &mut admission::Admission) {
    let us = heard.load(Ordering::Relaxed);
    if us > 0 {
        admission.heard(shared.epoch + Duration::from_micros(us));
    }
}

fn duplicate_reason(name: &NodeId, d: &admission::Duplicate) -> String {
    format!(
        "two live incarnations of node {name}: the one at {} keeps the name; the one at {} \
         is a duplicate and must not join",
        d.kept, d.refused
    )
}

/// Logs a duplicate as an error the first time it is seen (per name and address).
fn log_duplicate<M>(shared: &Shared<M>, name: &NodeId, d: &admission::Duplicate, reason: &str) {
    let first = shared
        .duplicates
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert((name.clone(), d.refused));
    if first {
        tracing::error!(peer = %name, kept = %d.kept, refused = %d.refused, "{reason}");
    } else {
        debug!(peer = %name, kept = %d.kept, refused = %d.refused, "duplicate refused again");
    }
}

/// Why a connection ended, as text.
fn closed_reason(e: &quinn::ConnectionError) -> (u32, String) {
    (close_code::SHUTDOWN, describe(e))
}

/// A stream operation failed: say why, from the connection's close reason if it has one.
fn lost(conn: &quinn::Connection, what: &str, err: impl std::fmt::Display) -> (u32, String) {
    match conn.close_reason() {
        Some(e) => (close_code::SHUTDOWN, format!("{what}: {}", describe(&e))),
        None => (close_code::SHUTDOWN, format!("{what}: {err}")),
    }
}

fn describe(e: &quinn::ConnectionError) -> String {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => format!(
            "closed by the peer (code {}): {}",
            c.error_code,
            String::from_utf8_lossy(&c.reason)
        ),
        other => format!("connection lost: {other}"),
    }
}

/// Opens the link's two streams (control first, at a higher QUIC priority) and writes
/// each one's queue to it.
async fn write_loop<M: Message>(
    shared: &Shared<M>,
    conn: &quinn::Connection,
    control: mpsc::Receiver<Vec<u8>>,
    data: mpsc::Receiver<Vec<u8>>,
    queued: &AtomicUsize,
) -> (u32, String) {
    let control_stream = match open_lane(conn, Lane::Control).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    let data_stream = match open_lane(conn, Lane::Data).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    tokio::select! {
        r = write_frames(shared, conn, control_stream, control, None) => r,
        r = write_frames(shared, conn, data_stream, data, Some(queued)) => r,
    }
}

/// Opens a stream of `lane` and writes its preamble.
async fn open_lane(
    conn: &quinn::Connection,
    lane: Lane,
) -> Result<quinn::SendStream, (u32, String)> {
    let mut stream = conn.open_uni().await.map_err(|e| closed_reason(&e))?;
    if lane == Lane::Control {
        // Of the bytes waiting on this connection, QUIC sends the control stream's first.
        let _ = stream.set_priority(1);
    }
    stream
        .write_all(&lane.preamble())
        .await
        .map_err(|e| lost(conn, "write", e))?;
    Ok(stream)
}

async fn write_frames<M: Message>(
    shared: &Shared<M>,
    conn: &quinn::Connection,
    mut stream: quinn::SendStream,
    mut rx: mpsc::Receiver<Vec<u8>>,
    queued: Option<&AtomicUsize>,
) -> (u32, String) {
    let mut chunks: Vec<Bytes> = Vec::new();
    loop {
        let Some(first) = rx.recv().await else {
            // The queue's sender was dropped: the link was closed by `send` (overflow)
            // or by the partition switch; the connection close says which.
            conn.closed().await;
            return (close_code::SHUTDOWN, "link closed locally".into());
        };
        let mut next = Some(first);
        let mut len = 0;
        // What is queued goes in one write (fewer stream operations and packets). The
        // buffers are handed to quinn as they are: it copies them only into packets.
        while let Some(frames) = next.take() {
            if let Some(q) = queued {
                q.fetch_sub(frames.len(), Ordering::Relaxed);
            }
            len += frames.len();
            chunks.push(Bytes::from(frames));
            if len < shared.limits.write_batch {
                next = rx.try_recv().ok();
            }
        }
        if let Err(e) = stream.write_all_chunks(&mut chunks).await {
            return lost(conn, "write", e);
        }
        chunks.clear();
    }
}

/// Accepts the peer's streams and reads their frames. The link is up once the first
/// stream's preamble is read; a second stream must be of the other [`Lane`].
async fn read_loop<M: Message>(
    shared: &Shared<M>,
    name: &NodeId,
    conn: &quinn::Connection,
    up: &AtomicBool,
    heard: &AtomicU64,
) -> (u32, String) {
    let link = conn.stable_id();
    let (first, first_lane) = match accept_lane(conn).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    up.store(true, Ordering::Relaxed);
    info!(peer = %name, "link up");
    if shared
        .control
        .send((TransportEvent::LinkUp { peer: name.clone() }, None, link))
        .await
        .is_err()
    {
        return (close_code::SHUTDOWN, "driver gone".into());
    }
    let second = async {
        let (stream, lane) = match accept_lane(conn).await {
            Ok(s) => s,
            Err(e) => return e,
        };
        if lane == first_lane {
            return (close_code::PROTOCOL, format!("a second {lane:?} stream"));
        }
        read_frames(shared, name, stream, lane, heard, link, conn).await
    };
    tokio::select! {
        r = read_frames(shared, name, first, first_lane, heard, link, conn) => r,
        r = second => r,
    }
}

/// Accepts one of the peer's streams and reads its preamble, which names its lane.
async fn accept_lane(conn: &quinn::Connection) -> Result<(quinn::RecvStream, Lane), (u32, String)> {
    let mut stream = conn.accept_uni().await.map_err(|e| closed_reason(&e))?;
    let mut preamble = [0u8; PREAMBLE.len()];
    if let Err(e) = stream.read_exact(&mut preamble).await {
        return Err((close_code::PROTOCOL, format!("reading preamble: {e}")));
    }
    let lane = if preamble == PREAMBLE {
        Lane::Data
    } else if preamble == CONTROL_PREAMBLE {
        Lane::Control
    } else {
        return Err((
            close_code::PROTOCOL,
            format!("bad preamble {preamble:02x?}"),
        ));
    };
    Ok((stream, lane))
}

/// Reads the frames of one stream into its lane's queue.
async fn read_frames<M: Message>(
    shared: &Shared<M>,
    name: &NodeId,
    mut stream: quinn::RecvStream,
    lane: Lane,
    heard: &AtomicU64,
    link: usize,
    conn: &quinn::Connection,
) -> (u32, String) {
    let (queue, budget) = match lane {
        Lane::Data => (&shared.events, &shared.event_bytes),
        Lane::Control => (&shared.control, &shared.control_bytes),
    };
    // Reads come in chunks of up to 64 KiB; frames are cut out of them without
    // waiting on the stream once per frame.
    let mut frames = frames::FrameBuffer::new(shared.limits.max_frame);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        loop {
            let range = match frames.next_frame() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => return (close_code::PROTOCOL, format!("frame refused: {e}")),
            };
            let size = range.len();
            let frame: FrameOwned<M> = match codec::decode(frames.body(range)) {
                Ok(f) => f,
                Err(e) => return (close_code::PROTOCOL, format!("malformed frame: {e}")),
            };
            if frame.from != name.as_str() {
                return (
                    close_code::PROTOCOL,
                    format!(
                        "frame says it is from {:?}, certificate says {name:?}",
                        frame.from
                    ),
                );
            }
            let since = shared.epoch.elapsed().as_micros();
            heard.store(
                u64::try_from(since).unwrap_or(u64::MAX).max(1),
                Ordering::Relaxed,
            );
            let event = TransportEvent::Message {
                from: name.clone(),
                msg: frame.msg,
            };
            // Wait for room in the byte budget first: while the driver lags, reading
            // stops and QUIC flow control holds the sender back.
            let want = u32::try_from(size.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
            let Ok(permit) = budget.clone().acquire_many_owned(want).await else {
                return (close_code::SHUTDOWN, "driver gone".into());
            };
            if queue.send((event, Some(permit), link)).await.is_err() {
                return (close_code::SHUTDOWN, "driver gone".into());
            }
        }
        frames.compact();
        match stream.read(&mut chunk).await {
            Ok(Some(n)) => frames.push(&chunk[..n]),
            Ok(None) => return (close_code::PROTOCOL, "peer ended its message stream".into()),
            Err(e) => return lost(conn, "read", e),
        }
    }
}

async fn accept_streams<M: Message>(
    shared: &Shared<M>,
    name: &NodeId,
    conn: &quinn::Connection,
) -> (u32, String) {
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => return closed_reason(&e),
        };
        let stream = IncomingStream {
            peer: name.clone(),
            send,
            recv,
        };
        if let Err(e) = shared.streams.try_send(stream) {
            let mut s = match e {
                mpsc::error::TrySendError::Full(s) | mpsc::error::TrySendError::Closed(s) => s,
            };
            warn!(peer = %name, "incoming stream queue full: stream reset");
            let _ = s.send.reset(0u32.into());
            let _ = s.recv.stop(0u32.into());
        }
    }
}
