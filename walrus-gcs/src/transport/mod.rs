//! The QUIC transport: authenticated, bounded, reconnecting links between configured nodes.
//!
//! What it owns: one quinn endpoint per node that both dials and accepts, one connection
//! per pair of configured peers, reconnection with backoff, framing of messages on
//! streams, mutual TLS with the cluster CA ([`tls`], [`certs`]), every quinn limit set
//! explicitly ([`Limits`]), bounded per-peer send queues, link up/down events, and
//! point-to-point streams to a named peer (the Replicator pulls files over them).
//! What it does not own: any protocol rule. It moves opaque messages of type `M`
//! (the GCS core's `PeerMessage`) and reports which links live; the driver feeds those
//! events to the sans-IO core.
//!
//! ```text
//!  send_on(lane, to, msg) ─▶ per-peer queues (control, data) ─▶ writer ─▶ 2 uni streams ─┐
//!                                                                                        │ QUIC
//!  events ◀─ control first ◀─ Message{from,msg} ◀─ readers (check, decode, name check) ◀─┘ (mTLS)
//!         ◀─ LinkUp / LinkDown (per peer, in order, with control)
//! ```
//!
//! Rules:
//! - **Who dials.** Of a pair, the node whose name sorts first dials; the other only
//!   accepts. One connection per pair, no simultaneous-dial race. A connection from a
//!   peer that should not dial is closed. A new connection from a peer that already has
//!   a link replaces it only by the rule of [`admission`]: at once from the same address
//!   (a restart), from the configured address (a duplicate elsewhere is closed), or after
//!   the old link stayed silent for a probe window; a newcomer from elsewhere while the
//!   link is live is a **duplicate** of the node and is closed with
//!   [`close_code::DUPLICATE`]. Replacements are rate-limited with backoff. A dialer whose
//!   connection is closed with that code reports [`TransportEvent::Duplicate`].
//! - **Who is let in.** The peer's certificate must chain to the cluster CA (checked by
//!   rustls during the handshake) and name a configured peer in its SAN (checked before
//!   any stream is read); the sender name inside every frame must equal that name.
//! - **Two lanes.** Each direction of a link has two unidirectional streams: control
//!   (starts with [`CONTROL_PREAMBLE`], higher QUIC priority, own send and receive queues,
//!   taken first by [`TransportEvents`]) and data ([`PREAMBLE`]); see [`Lane`]. FIFO holds
//!   within a lane. A peer that opens only one stream (either lane) is served.
//! - **Frames.** Each stream starts with its preamble and then carries frames: version byte, `u32` body length
//!   checked against [`Limits::max_frame`] before allocating, bincode body
//!   `(sender name, message)` decoded through [`crate::codec`] with a size limit.
//!   Anything malformed closes the connection with a logged reason; never a panic.
//! - **Link up** is reported once both directions are open (each side has read the
//!   other's preamble), **link down** when the connection ends for any reason; the two
//!   alternate strictly per peer.
//! - **Bounded memory.** Sends go into a per-peer queue of [`Limits::peer_queue`]
//!   messages; when it is full the peer is too slow and the link is closed ("send queue
//!   full"), which the core sees as a link down. Received messages wait in one event
//!   queue of [`Limits::event_queue`]; when it is full, reading stops and QUIC flow
//!   control pushes back on the senders.

pub mod admission;
pub mod bulk;
pub mod certs;
mod fault;
mod frames;
pub mod refusals;
pub mod tls;

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use crate::codec;
pub use certs::NodeIdentity;
pub use fault::partition;

pub use crate::NodeId;

/// Bytes a data stream starts with: magic and the frame version.
pub const PREAMBLE: [u8; 4] = [b'W', b'G', b'C', codec::FRAME_VERSION];

/// Bytes the control stream starts with (see [`Lane`]).
pub const CONTROL_PREAMBLE: [u8; 4] = [b'W', b'G', b'K', codec::FRAME_VERSION];

/// Which of a link's two streams a message travels on. Control messages (the GCS core's
/// heartbeats and view-change messages) never wait behind data: they have their own
/// stream, which QUIC sends first (stream priority), their own send queue, and their own
/// receive queue that [`TransportEvents`] always empties first. Order holds within a
/// lane, not across the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Application data and its ordering (the bulk of the bytes).
    Data,
    /// Failure detection and membership: small, rare, urgent.
    Control,
}

impl Lane {
    fn preamble(self) -> [u8; 4] {
        match self {
            Lane::Data => PREAMBLE,
            Lane::Control => CONTROL_PREAMBLE,
        }
    }
}

/// QUIC application close codes the transport uses (the reason text says more).
pub mod close_code {
    /// Normal shutdown of the node.
    pub const SHUTDOWN: u32 = 0;
    /// The peer broke the wire format (bad preamble, version, length, body, name).
    pub const PROTOCOL: u32 = 1;
    /// The peer's certificate names no configured node, or it should not have dialed.
    pub const REFUSED: u32 = 2;
    /// The connection was replaced by a newer one from the same peer.
    pub const REPLACED: u32 = 3;
    /// The send queue to the peer overflowed.
    pub const OVERLOAD: u32 = 4;
    /// Cut by the partition switch ([`super::Transport::cut`]).
    pub const CUT: u32 = 5;
    /// Another process proves the same node name and keeps it: this one is a duplicate
    /// and must not join (see [`super::admission`]).
    pub const DUPLICATE: u32 = 6;
}

/// Limits of the transport. Every quinn limit is set from here because several of
/// quinn's defaults are unbounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Messages waiting to be written to one peer. Default 65 536 (more than the core's
    /// window of unstable messages, so only a stuck peer overflows it). Overflow closes
    /// the link.
    pub peer_queue: usize,
    /// Encoded bytes waiting to be written to one peer. Default 64 MiB. Overflow closes
    /// the link.
    pub peer_queue_bytes: usize,
    /// Received messages and link events waiting for the driver. Default 4096. When
    /// full, reading pauses and QUIC flow control pushes back.
    pub event_queue: usize,
    /// Bytes of received messages waiting for the driver, over all peers. Default 8 MiB;
    /// like `event_queue`, reaching it pauses reading.
    pub event_queue_bytes: usize,
    /// Incoming point-to-point streams waiting for [`Transport::accept_stream`]. Default
    /// 64; more are reset.
    pub stream_queue: usize,
    /// Largest frame body accepted, in bytes. Default [`codec::MAX_FRAME`] (1 MiB + 64 KiB).
    pub max_frame: usize,
    /// Bytes a writer coalesces into one write. Default 64 KiB.
    pub write_batch: usize,
    /// QUIC idle timeout: a connection with no packets for this long is dead. Default 3 s.
    pub idle_timeout: Duration,
    /// QUIC keep-alive interval (keeps an idle link from timing out). Default 500 ms.
    pub keep_alive: Duration,
    /// Time allowed for a TLS handshake. Default 5 s.
    pub handshake_timeout: Duration,
    /// First delay before re-dialing a peer; doubles per failure. Default 50 ms.
    pub backoff_min: Duration,
    /// Largest delay between dials. Default 2 s.
    pub backoff_max: Duration,
    /// How long a second connection proving a linked peer's name from another address is
    /// held while the link shows it is live (then the newcomer is refused as a duplicate,
    /// or replaces a silent link). Must exceed twice the core's heartbeat interval.
    /// Default 1 s (LAN), 4 s (WAN). See [`admission`].
    pub duplicate_probe: Duration,
    /// Per-stream receive window, bytes. Default 2 MiB (LAN), 8 MiB (WAN). Larger
    /// windows only queue more data in front of a heartbeat.
    pub stream_receive_window: u32,
    /// Per-connection receive window, bytes. Default 4 MiB (LAN), 16 MiB (WAN).
    pub receive_window: u32,
    /// Per-connection send window, bytes. Default 4 MiB (LAN), 16 MiB (WAN).
    pub send_window: u64,
    /// RTT assumed before the first measurement; it sets how soon a lost handshake
    /// packet is resent. Default 50 ms (LAN), 333 ms (WAN, quinn's default).
    pub initial_rtt: Duration,
    /// The driver holds back local multicasts while a peer's send queue holds more than
    /// this many bytes, so queues stay short and heartbeats are not stuck behind data.
    /// Default 1 MiB (LAN), 4 MiB (WAN).
    pub backpressure_bytes: usize,
    /// Concurrent bidirectional (point-to-point) streams a peer may open. Default 32.
    pub max_bidi_streams: u32,
    /// Concurrent unidirectional streams a peer may open. Default 2 (the data and the
    /// control stream, see [`Lane`]).
    pub max_uni_streams: u32,
    /// Connection attempts being handshaken at once. Default 64; more are refused.
    pub max_incoming: usize,
    /// Largest UDP payload path-MTU discovery may try, bytes. Default and maximum
    /// [`MTU_UPPER_BOUND_MAX`] (6 500). Discovery still finds the real path MTU (1 452 on
    /// Ethernet: larger probes are simply lost); where the path allows more (loopback,
    /// jumbo frames) each packet carries more, and a bulk stream costs far less CPU.
    pub mtu_upper_bound: u16,
    /// The congestion window a new connection starts with, bytes. Default 32 KiB
    /// (quinn's is 14 720). Path-MTU discovery sends probes of up to
    /// [`MTU_UPPER_BOUND_MAX`] bytes right after the handshake; two of them fill 14 720
    /// bytes, and quinn-proto 0.11.19 then holds back even a CONNECTION_CLOSE (quinn
    /// issue #2785, fixed upstream by #2787 but not released): the peer learns of the
    /// close only from a stateless reset or its idle timeout, without the reason.
    pub initial_window_bytes: u64,
    /// UDP socket receive and send buffer asked of the kernel, bytes (capped by
    /// `net.core.rmem_max` / `wmem_max`). Default 4 MiB.
    pub udp_buffer_bytes: usize,
}

/// The largest `mtu_upper_bound` that keeps segmentation offload working. quinn hands
/// the kernel up to 10 datagrams in one GSO send; Linux refuses a send over 64 KiB
/// (EMSGSIZE, which quinn-udp takes for a lost MTU probe), so with larger datagrams every
/// batch is dropped until black-hole detection falls back to 1 200 bytes. Measured on
/// loopback (`transport_bench --streams 1024 --mtu N`): 1 452 → 569 MB/s, 6 400 → 952 MB/s,
/// 9 000 → 415 MB/s.
pub const MTU_UPPER_BOUND_MAX: u16 = 6_500;

/// What a live link has measured ([`Transport::link_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStats {
    /// The path MTU in use (UDP payload bytes).
    pub mtu: u16,
    /// The smoothed round-trip time.
    pub rtt: Duration,
    /// QUIC packets sent.
    pub sent_packets: u64,
    /// QUIC packets declared lost.
    pub lost_packets: u64,
    /// Times the path MTU collapsed because large packets vanished.
    pub black_holes: u64,
    /// UDP datagrams sent.
    pub udp_datagrams_sent: u64,
    /// Send system calls that carried them (fewer than datagrams: segmentation offload).
    pub udp_sends: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            peer_queue: 65_536,
            peer_queue_bytes: 64 * 1024 * 1024,
            event_queue: 4096,
            event_queue_bytes: 8 * 1024 * 1024,
            stream_queue: 64,
            max_frame: codec::MAX_FRAME,
            write_batch: 64 * 1024,
            idle_timeout: Duration::from_secs(3),
            keep_alive: Duration::from_millis(500),
            handshake_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            duplicate_probe: Duration::from_secs(1),
            stream_receive_window: 2 * 1024 * 1024,
            receive_window: 4 * 1024 * 1024,
            send_window: 4 * 1024 * 1024,
            initial_rtt: Duration::from_millis(50),
            backpressure_bytes: 1024 * 1024,
            max_bidi_streams: 32,
            max_uni_streams: 2,
            max_incoming: 64,
            mtu_upper_bound: MTU_UPPER_BOUND_MAX,
            initial_window_bytes: 32 * 1024,
            udp_buffer_bytes: 4 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// The LAN profile (same as [`Default`]).
    pub fn lan() -> Self {
        Self::default()
    }

    /// The WAN profile: connection timeouts and dial backoff ten times the LAN ones, so
    /// a slow or lossy path is not taken for a dead link (pair with `CoreConfig::wan`).
    pub fn wan() -> Self {
        let lan = Self::lan();
        Self {
            idle_timeout: lan.idle_timeout * 10,
            keep_alive: lan.keep_alive * 4,
            handshake_timeout: lan.handshake_timeout * 4,
            backoff_min: lan.backoff_min * 10,
            backoff_max: lan.backoff_max * 10,
            duplicate_probe: lan.duplicate_probe * 4,
            stream_receive_window: lan.stream_receive_window * 4,
            receive_window: lan.receive_window * 4,
            send_window: lan.send_window * 4,
            initial_rtt: Duration::from_millis(333),
            backpressure_bytes: lan.backpressure_bytes * 4,
            ..lan
        }
    }
}

/// Asks for `bytes` of UDP receive and send buffer; says so once if the kernel gives less
/// (Linux caps it at `net.core.rmem_max` / `wmem_max`; it reports twice what it grants).
fn size_udp_buffers(socket: &UdpSocket, bytes: usize) {
    let sock = socket2::SockRef::from(socket);
    let _ = sock.set_recv_buffer_size(bytes);
    let _ = sock.set_send_buffer_size(bytes);
    let got = sock.recv_buffer_size().unwrap_or(0);
    if got < bytes {
        info!(
            asked = bytes,
            got,
            "UDP receive buffer smaller than asked: bursts may drop datagrams and slow QUIC \
             down; raise it with `sysctl -w net.core.rmem_max={bytes} net.core.wmem_max={bytes}`"
        );
    }
}

/// Where the endpoint listens.
#[derive(Debug)]
pub enum Listen {
    /// Bind this address.
    Addr(SocketAddr),
    /// Use this already bound socket (tests bind first to learn free ports).
    Socket(UdpSocket),
}

/// Configuration of one node's transport.
#[derive(Debug)]
pub struct TransportConfig {
    /// This node's name (its certificate's SAN).
    pub me: NodeId,
    /// Where to listen.
    pub listen: Listen,
    /// Every other configured node and its address.
    pub peers: Vec<(NodeId, SocketAddr)>,
    /// CA, certificate and key.
    pub identity: NodeIdentity,
    /// Limits.
    pub limits: Limits,
}

/// What the transport reports to its driver, in order per peer.
#[derive(Debug)]
pub enum TransportEvent<M> {
    /// A link to `peer` is up: messages flow both ways.
    LinkUp {
        /// The peer.
        peer: NodeId,
    },
    /// The link to `peer` ended; messages queued to it are lost.
    LinkDown {
        /// The peer.
        peer: NodeId,
        /// Why (also logged).
        reason: String,
    },
    /// A peer closed this node's connection because another process proves this node's
    /// name and keeps it: this process is a duplicate and must stop (the GCS driver
    /// does). Reported once per peer that says so.
    Duplicate {
        /// The peer that refused us.
        peer: NodeId,
        /// Its reason (names both addresses).
        reason: String,
    },
    /// A message from `from` (the name its certificate proves).
    Message {
        /// The sender.
        from: NodeId,
        /// The message.
        msg: M,
    },
}

/// One queued event: the event, its share of a byte budget, and the link it came from
/// (a connection's `stable_id`).
type Queued<M> = (TransportEvent<M>, Option<OwnedSemaphorePermit>, usize);

/// The receiving end of a transport's events. Taking an event frees its share of the
/// byte budget ([`Limits::event_queue_bytes`]).
///
/// Two queues feed it: control (link up/down, duplicates, and [`Lane::Control`]
/// messages) and data. Control is always taken first, so a heartbeat or a view change is
/// never stuck behind megabytes of data. Link events travel with control; a data message
/// from a link already reported down is dropped here (a broken link may lose messages;
/// delivering them after its link-down would make a dead peer look alive again).
#[derive(Debug)]
pub struct TransportEvents<M> {
    control: mpsc::Receiver<Queued<M>>,
    data: mpsc::Receiver<Queued<M>>,
    /// The live link of each peer, as reported by the control queue so far.
    live: HashMap<NodeId, usize>,
}

impl<M> TransportEvents<M> {
    /// The next event; `None` once the transport has stopped.
    pub async fn recv(&mut self) -> Option<TransportEvent<M>> {
        loop {
            let q = tokio::select! {
                biased;
                q = self.control.recv() => q,
                q = self.data.recv() => q,
            }?;
            if let Some(e) = self.admit(q) {
                return Some(e);
            }
        }
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<TransportEvent<M>> {
        loop {
            let q = match self.control.try_recv() {
                Ok(q) => q,
                Err(_) => self.data.try_recv().ok()?,
            };
            if let Some(e) = self.admit(q) {
                return Some(e);
            }
        }
    }

    /// Tracks link events; drops data messages of links that are no longer live.
    fn admit(&mut self, (event, _permit, link): Queued<M>) -> Option<TransportEvent<M>> {
        match &event {
            TransportEvent::LinkUp { peer } => {
                self.live.insert(peer.clone(), link);
            }
            TransportEvent::LinkDown { peer, .. } => {
                if self.live.get(peer) == Some(&link) {
                    self.live.remove(peer);
                }
            }
            TransportEvent::Message { from, .. } => {
                if self.live.get(from) != Some(&link) {
                    return None;
                }
            }
            TransportEvent::Duplicate { .. } => {}
        }
        Some(event)
    }
}

/// A point-to-point stream a peer opened to this node.
#[derive(Debug)]
pub struct IncomingStream {
    /// The peer, as its certificate names it.
    pub peer: NodeId,
    /// Our sending half.
    pub send: quinn::SendStream,
    /// Our receiving half.
    pub recv: quinn::RecvStream,
}

/// Why a transport call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The TLS configuration could not be built.
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// The UDP socket could not be bound or used.
    #[error("socket {}: {source}", .addr.map_or_else(|| "(unbound)".to_owned(), |a| a.to_string()))]
    Io {
        /// The address, if known.
        addr: Option<SocketAddr>,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The configuration is inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// `peer` is not in the configured peer list.
    #[error("{peer} is not a configured peer")]
    UnknownPeer {
        /// The name.
        peer: NodeId,
    },
    /// No live link to `peer` right now.
    #[error("no link to {peer}")]
    NoLink {
        /// The peer.
        peer: NodeId,
    },
    /// The send queue to `peer` was full; the link was closed.
    #[error("send queue to {peer} full ({limit} messages or {limit_bytes} bytes); link closed")]
    QueueFull {
        /// The peer.
        peer: NodeId,
        /// The queue's limit in messages.
        limit: usize,
        /// The queue's limit in bytes.
        limit_bytes: usize,
    },
    /// The message could not be encoded (e.g. over the frame limit); nothing was sent.
    #[error("cannot encode a message for {peer}: {source}")]
    Encode {
        /// The peer.
        peer: NodeId,
        /// The codec's error.
        source: codec::CodecError,
    },
    /// A QUIC connection error.
    #[error("connection to {peer}: {source}")]
    Connection {
        /// The peer.
        peer: NodeId,
        /// quinn's error.
        source: quinn::ConnectionError,
    },
}

/// The frame body as sent: the sender's name and the message (borrowed).
#[derive(Serialize)]
struct FrameRef<'a, M> {
    from: &'a str,
    msg: &'a M,
}

/// The frame body as received.
#[derive(Deserialize)]
struct FrameOwned<M> {
    from: String,
    msg: M,
}

/// Bound on the message type the transport carries.
pub trait Message: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> Message for T {}

struct Link {
    /// Encoded data frames for the writer.
    tx: mpsc::Sender<Vec<u8>>,
    /// Bytes in `tx`'s queue.
    queued: Arc<AtomicUsize>,
    /// Encoded control frames for the writer (sent first, see [`Lane`]).
    control: mpsc::Sender<Vec<u8>>,
    conn: quinn::Connection,
}

struct Peer {
    addr: SocketAddr,
    link: Mutex<Option<Link>>,
    /// Accepted connections handed to the peer's task (acceptor side only).
    accepted: mpsc::Sender<quinn::Connection>,
}

impl Peer {
    fn link(&self) -> MutexGuard<'_, Option<Link>> {
        // A poisoned lock only means another task panicked while holding it; the
        // Option inside is always in a consistent state.
        self.link.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Peers cut by the partition switch ([`Transport::cut`]).
#[derive(Default)]
struct Blocklist {
    cut: Mutex<HashSet<NodeId>>,
    changed: Notify,
}

impl Blocklist {
    fn is_cut(&self, peer: &NodeId) -> bool {
        self.cut
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(peer)
    }
    fn set(&self, peer: &NodeId, cut: bool) {
        {
            let mut set = self.cut.lock().unwrap_or_else(|p| p.into_inner());
            if cut {
                set.insert(peer.clone());
            } else {
                set.remove(peer);
            }
        }
        self.changed.notify_waiters();
    }
}

struct Shared<M> {
    me: NodeId,
    limits: Limits,
    endpoint: quinn::Endpoint,
    peers: HashMap<NodeId, Peer>,
    /// Received data messages.
    events: mpsc::Sender<Queued<M>>,
    /// Byte budget of received data messages not yet taken by the driver.
    event_bytes: Arc<Semaphore>,
    /// Received control messages and link events (taken first, see [`Lane`]).
    control: mpsc::Sender<Queued<M>>,
    /// Byte budget of received control messages not yet taken by the driver.
    control_bytes: Arc<Semaphore>,
    streams: mpsc::Sender<IncomingStream>,
    shutdown: watch::Receiver<bool>,
    pending_handshakes: AtomicUsize,
    blocked: Blocklist,
    /// Refused handshakes: counted, logged without flooding.
    refusals: refusals::RefusalLog,
    /// Duplicates already logged as an error: (name, refused address). Logged once each.
    duplicates: Mutex<HashSet<(NodeId, SocketAddr)>>,
    /// The base of the per-link "last frame" clocks (microseconds since it).
    epoch: std::time::Instant,
}

/// One node's transport. Cheap to clone; all clones drive the same endpoint.
pub struct Transport<M> {
    shared: Arc<Shared<M>>,
    shutdown_tx: Arc<watch::Sender<bool>>,
    incoming: Arc<tokio::sync::Mutex<mpsc::Receiver<IncomingStream>>>,
}

impl<M> Clone for Transport<M> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            shutdown_tx: self.shutdown_tx.clone(),
            incoming: self.incoming.clone(),
        }
    }
}

impl<M: Message> Transport<M> {
    /// Binds the endpoint and starts dialing and accepting. Must run inside a tokio
    /// runtime. Returns the transport and the receiver of its events.
    pub async fn start(
        config: TransportConfig,
    ) -> Result<(Self, TransportEvents<M>), TransportError> {
        let TransportConfig {
            me,
            listen,
            peers,
            identity,
            limits,
        } = config;
        certs::check_node_name(me.as_str()).map_err(|e| TransportError::Config(e.to_string()))?;
        let server = tls::server_config(&identity, &limits)?;
        let client = tls::client_config(&identity, &limits)?;
        let socket = match listen {
            Listen::Socket(s) => s,
            Listen::Addr(addr) => UdpSocket::bind(addr).map_err(|source| TransportError::Io {
                addr: Some(addr),
                source,
            })?,
        };
        // A socket buffer that holds a window's worth of datagrams: with the kernel's
        // default (208 KiB) a bulk stream overflows it, and each drop is a loss that
        // shrinks QUIC's congestion window.
        size_udp_buffers(&socket, limits.udp_buffer_bytes);
        if limits.mtu_upper_bound > MTU_UPPER_BOUND_MAX {
            return Err(TransportError::Config(format!(
                "mtu_upper_bound {} is above {MTU_UPPER_BOUND_MAX}: quinn's 10-datagram \
                 segmentation-offload batches would pass the kernel's 64 KiB limit and be dropped",
                limits.mtu_upper_bound
            )));
        }
        let mut endpoint_config = quinn::EndpointConfig::default();
        endpoint_config
            .max_udp_payload_size(limits.mtu_upper_bound.max(1200))
            .map_err(|e| TransportError::Config(format!("mtu_upper_bound: {e}")))?;
        let mut endpoint = quinn::Endpoint::new(
            endpoint_config,
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| TransportError::Io { addr: None, source })?;
        endpoint.set_default_client_config(client);

        let (events_tx, events_rx) = mpsc::channel(limits.event_queue.max(1));
        let (control_tx, control_rx) = mpsc::channel(limits.event_queue.max(1));
        let limits_event_bytes = limits.event_queue_bytes;
        let (streams_tx, streams_rx) = mpsc::channel(limits.stream_queue.max(1));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut peer_map = HashMap::new();
        let mut accepted_rxs = Vec::new();
        for (name, addr) in peers {
            if name == me {
                return Err(TransportError::Config(format!(
                    "{me} lists itself as a peer"
                )));
            }
            certs::check_node_name(name.as_str())
                .map_err(|e| TransportError::Config(e.to_string()))?;
            let (acc_tx, acc_rx) = mpsc::channel(2);
            let peer = Peer {
                addr,
                link: Mutex::new(None),
                accepted: acc_tx,
            };
            if peer_map.insert(name.clone(), peer).is_some() {
                return Err(TransportError::Config(format!("peer {name} listed twice")));
            }
            accepted_rxs.push((name, acc_rx));
        }
        let shared = Arc::new(Shared {
            me,
            limits,
            endpoint,
            peers: peer_map,
            events: events_tx,
            event_bytes: Arc::new(Semaphore::new(
                limits_event_bytes.clamp(1, Semaphore::MAX_PERMITS),
            )),
            control: control_tx,
            control_bytes: Arc::new(Semaphore::new(
                limits_event_bytes.clamp(1, Semaphore::MAX_PERMITS),
            )),
            streams: streams_tx,
            shutdown: shutdown_rx,
            pending_handshakes: AtomicUsize::new(0),
            refusals: refusals::RefusalLog::default(),
            blocked: Blocklist::default(),
            duplicates: Mutex::new(HashSet::new()),
            epoch: std::time::Instant::now(),
        });
        for (name, acc_rx) in accepted_rxs {
            tokio::spawn(peer_task(shared.clone(), name, acc_rx));
        }
        tokio::spawn(accept_loop(shared.clone()));
        Ok((
            Self {
                shared,
                shutdown_tx: Arc::new(shutdown_tx),
                incoming: Arc::new(tokio::sync::Mutex::new(streams_rx)),
            },
            TransportEvents {
                control: control_rx,
                data: events_rx,
                live: HashMap::new(),
            },
        ))
    }

    /// This node's name.
    pub fn me(&self) -> &NodeId {
        &self.shared.me
    }

    /// The address the endpoint is bound to.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.shared
            .endpoint
            .local_addr()
            .map_err(|source| TransportError::Io { addr: None, source })
    }

    /// Queues `msg` for `to` on the data lane without waiting. Fails if there is no
    /// link; if the queue is full the link is closed (the peer is too slow) and the
    /// error says so.
    pub fn send(&self, to: &NodeId, msg: M) -> Result<(), TransportError> {
        self.send_on(Lane::Data, to, msg)
    }

    /// Like [`Transport::send`], on the lane given (see [`Lane`]).
    pub fn send_on(&self, lane: Lane, to: &NodeId, msg: M) -> Result<(), TransportError> {
        let peer = self.peer(to)?;
        // Encoded here, on the caller's task, so the queue's size is known in bytes.
        let mut frame = Vec::new();
        let body = FrameRef {
            from: self.shared.me.as_str(),
            msg: &msg,
        };
        codec::encode_frame(&body, &mut frame).map_err(|source| TransportError::Encode {
            peer: to.clone(),
            source,
        })?;
        let len = frame.len();
        let mut guard = peer.link();
        let Some(link) = guard.as_ref() else {
            return Err(TransportError::NoLink { peer: to.clone() });
        };
        let limits = &self.shared.limits;
        let result = match lane {
            Lane::Control => link.control.try_send(frame),
            Lane::Data if link.queued.load(Ordering::Relaxed) + len > limits.peer_queue_bytes => {
                Err(mpsc::error::TrySendError::Full(frame))
            }
            Lane::Data => link.tx.try_send(frame),
        };
        match result {
            Ok(()) => {
                if lane == Lane::Data {
                    link.queued.fetch_add(len, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(peer = %to, limit = limits.peer_queue, limit_bytes = limits.peer_queue_bytes,
                      "send queue full: closing the link");
                link.conn
                    .close(close_code::OVERLOAD.into(), b"send queue full");
                *guard = None;
                Err(TransportError::QueueFull {
                    peer: to.clone(),
                    limit: limits.peer_queue,
                    limit_bytes: limits.peer_queue_bytes,
                })
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                *guard = None;
                Err(TransportError::NoLink { peer: to.clone() })
            }
        }
    }

    /// Fraction (0.0–1.0) of the fullest live per-peer send queue; a driver uses it to
    /// hold back local sends before a queue overflows.
    pub fn queue_fill(&self) -> f64 {
        let cap = self.shared.limits.peer_queue.max(1) as f64;
        self.shared
            .peers
            .values()
            .filter_map(|p| {
                p.link()
                    .as_ref()
                    .map(|l| (cap - l.tx.capacity() as f64) / cap)
            })
            .fold(0.0, f64::max)
    }

    /// Bytes waiting in the fullest live per-peer send queue.
    pub fn max_queued_bytes(&self) -> usize {
        self.shared
            .peers
            .values()
            .filter_map(|p| p.link().as_ref().map(|l| l.queued.load(Ordering::Relaxed)))
            .max()
            .unwrap_or(0)
    }

    /// What the live link to `peer` has measured (`None` without a live link): for logs,
    /// status and tests.
    pub fn link_stats(&self, peer: &NodeId) -> Option<LinkStats> {
        let p = self.shared.peers.get(peer)?;
        let guard = p.link();
        let s = guard.as_ref()?.conn.stats();
        Some(LinkStats {
            mtu: s.path.current_mtu,
            rtt: s.path.rtt,
            sent_packets: s.path.sent_packets,
            lost_packets: s.path.lost_packets,
            black_holes: s.path.black_holes_detected,
            udp_datagrams_sent: s.udp_tx.datagrams,
            udp_sends: s.udp_tx.ios,
        })
    }

    /// The transport's limits.
    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// Opens a point-to-point stream to `peer` over the existing link.
    pub async fn open_stream(
        &self,
        peer: &NodeId,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), TransportError> {
        let conn = {
            let p = self.peer(peer)?;
            let guard = p.link();
            guard
                .as_ref()
                .map(|l| l.conn.clone())
                .ok_or_else(|| TransportError::NoLink { peer: peer.clone() })?
        };
        conn.open_bi()
            .await
            .map_err(|source| TransportError::Connection {
                peer: peer.clone(),
                source,
            })
    }

    /// Waits for the next point-to-point stream a peer opened; `None` after shutdown.
    pub async fn accept_stream(&self) -> Option<IncomingStream> {
        let mut rx = self.incoming.lock().await;
        let mut shutdown = self.shared.shutdown.clone();
        tokio::select! {
            s = rx.recv() => s,
            _ = shutdown.wait_for(|s| *s) => None,
        }
    }

    /// Handshakes refused since the transport started (bad certificates, garbage
    /// Initials, timeouts): a counter for metrics.
    pub fn handshakes_refused(&self) -> u64 {
        self.shared.refusals.total()
    }

    /// Closes every link and the endpoint, and waits (bounded) until the peers know.
    pub async fn shutdown(&self) {
        let _ = self.shutdown_tx.send(true);
        self.shared
            .endpoint
            .close(close_code::SHUTDOWN.into(), b"shutdown");
        let _ =
            tokio::time::timeout(Duration::from_secs(1), self.shared.endpoint.wait_idle()).await;
    }

    /// Closes the current link to `peer` with `reason` (logged and sent to the peer); the
    /// link is re-established as usual.
    pub fn close_link(&self, peer: &NodeId, reason: &str) {
        if let Some(p) = self.shared.peers.get(peer) {
            if let Some(link) = p.link().take() {
                warn!(peer = %peer, %reason, "closing the link");
                link.conn
                    .close(close_code::PROTOCOL.into(), reason.as_bytes());
            }
        }
    }

    /// Partition switch: cuts traffic with `peer` (closes the link and refuses it until
    /// [`Transport::restore`]). Cut both ends for a symmetric partition ([`partition`]).
    pub fn cut(&self, peer: &NodeId) {
        self.shared.blocked.set(peer, true);
        if let Some(p) = self.shared.peers.get(peer) {
            if let Some(link) = p.link().take() {
                link.conn
                    .close(close_code::CUT.into(), b"cut by the partition switch");
            }
        }
    }

    /// Partition switch: lets traffic with `peer` flow again.
    pub fn restore(&self, peer: &NodeId) {
        self.shared.blocked.set(peer, false);
    }

    fn peer(&self, name: &NodeId) -> Result<&Peer, TransportError> {
        self.shared
            .peers
            .get(name)
            .ok_or_else(|| TransportError::UnknownPeer { peer: name.clone() })
    }
}

/// Accepts connections, checks who they are, and hands them to the peer's task.
async fn accept_loop<M: Message>(shared: Arc<Shared<M>>) {
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
    let found = tls::peer_name(&chain, shared.peers.keys().map(NodeId::as_str));
    let Some((name, peer)) = found.and_then(|f| shared.peers.iter().find(|(k, _)| k.as_str() == f))
    else {
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
async fn peer_task<M: Message>(
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
        if *shutdown.borrow() {
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
    let mut buf = Vec::with_capacity(shared.limits.write_batch);
    loop {
        let Some(first) = rx.recv().await else {
            // The queue's sender was dropped: the link was closed by `send` (overflow)
            // or by the partition switch; the connection close says which.
            conn.closed().await;
            return (close_code::SHUTDOWN, "link closed locally".into());
        };
        buf.clear();
        let mut next = Some(first);
        // Coalesce what is queued into one write (fewer stream operations and packets).
        while let Some(frame) = next.take() {
            if let Some(q) = queued {
                q.fetch_sub(frame.len(), Ordering::Relaxed);
            }
            buf.extend_from_slice(&frame);
            if buf.len() < shared.limits.write_batch {
                next = rx.try_recv().ok();
            }
        }
        if let Err(e) = stream.write_all(&buf).await {
            return lost(conn, "write", e);
        }
        if buf.capacity() > 4 * shared.limits.write_batch {
            buf = Vec::with_capacity(shared.limits.write_batch);
        }
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
