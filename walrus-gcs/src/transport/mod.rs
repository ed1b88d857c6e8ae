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
//!
//! Where each part lives: this file is the API ([`Transport`], its configuration, events
//! and errors, and the shared state of the links); `limits.rs` every bound ([`Limits`]);
//! `link.rs` the link tasks (accept and admit, dial and reconnect, each lane's writer and
//! reader); [`admission`] the duplicate rule; `frames.rs` frame reading; [`tls`] and
//! [`certs`] the certificates; [`bulk`] point-to-point TCP streams; `fault.rs` the
//! partition switch ([`partition`]).

pub mod admission;
pub mod bulk;
pub mod certs;
mod fault;
pub(crate) mod frames;
mod limits;
mod link;
mod peer_set;
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
use limits::size_udp_buffers;
pub use limits::{Limits, MTU_UPPER_BOUND_MAX};
use link::{accept_loop, peer_task};

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

/// Frames staged by [`Transport::stage`] during one turn of a driver, per peer and lane,
/// until [`Transport::flush_staged`].
#[derive(Debug, Default)]
pub struct Staged {
    frames: Vec<(NodeId, Lane, Vec<u8>)>,
}

impl Staged {
    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
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
    peers: peer_set::PeerTable,
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
    /// The runtime the transport started on: its tasks (links, peers added later by
    /// [`Transport::set_peers`]) run there, whoever calls.
    runtime: tokio::runtime::Handle,
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
            if peer_map.insert(name.clone(), Arc::new(peer)).is_some() {
                return Err(TransportError::Config(format!("peer {name} listed twice")));
            }
            accepted_rxs.push((name, acc_rx));
        }
        let shared = Arc::new(Shared {
            me,
            limits,
            endpoint,
            peers: peer_set::PeerTable::new(peer_map),
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
            runtime: tokio::runtime::Handle::current(),
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

    /// The runtime the transport runs on (the one [`Transport::start`] was called on).
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.shared.runtime
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
        let mut frame = Vec::new();
        self.encode(to, &msg, &mut frame)?;
        self.enqueue(lane, to, frame)
    }

    /// Appends `msg`'s frame to the frames staged for `to` on `lane` in `staged`; they go
    /// to the link's queue together, as one write, at [`Transport::flush_staged`] (or at
    /// once when they reach [`Limits::write_batch`] bytes). A driver stages what one turn
    /// sends and flushes at the end of the turn: many small messages to a peer cost one
    /// queue entry, one wake-up of the writer and one stream write, and nothing waits for
    /// a timer. Order holds per peer and lane, as with [`Transport::send_on`] (do not mix
    /// the two for one peer within a turn). Fails at once for an unknown peer or a
    /// message that cannot be encoded; queue errors come from the flush.
    pub fn stage(
        &self,
        staged: &mut Staged,
        lane: Lane,
        to: &NodeId,
        msg: &M,
    ) -> Result<(), TransportError> {
        self.peer(to)?;
        let i = match staged
            .frames
            .iter()
            .position(|(p, l, _)| p == to && *l == lane)
        {
            Some(i) => i,
            None => {
                staged.frames.push((to.clone(), lane, Vec::new()));
                staged.frames.len() - 1
            }
        };
        let buf = &mut staged.frames[i].2;
        self.encode(to, msg, buf)?;
        if buf.len() >= self.shared.limits.write_batch {
            let (to, lane, frames) = staged.frames.swap_remove(i);
            self.enqueue(lane, &to, frames)?;
        }
        Ok(())
    }

    /// Hands every staged frame to its link's queue (see [`Transport::stage`]); returns
    /// the peers whose queue refused them, with why.
    pub fn flush_staged(&self, staged: &mut Staged) -> Vec<(NodeId, TransportError)> {
        let mut failed = Vec::new();
        for (to, lane, frames) in staged.frames.drain(..) {
            if let Err(e) = self.enqueue(lane, &to, frames) {
                failed.push((to, e));
            }
        }
        failed
    }

    /// Appends the frame of `msg` to `out`. Encoded on the caller's task, so the queue's
    /// size is known in bytes.
    fn encode(&self, to: &NodeId, msg: &M, out: &mut Vec<u8>) -> Result<(), TransportError> {
        let body = FrameRef {
            from: self.shared.me.as_str(),
            msg,
        };
        codec::encode_frame(&body, out).map_err(|source| TransportError::Encode {
            peer: to.clone(),
            source,
        })
    }

    /// Puts encoded frames (one or several) on the queue of `to`'s link for `lane`.
    fn enqueue(&self, lane: Lane, to: &NodeId, frame: Vec<u8>) -> Result<(), TransportError> {
        let peer = self.peer(to)?;
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
            .iter()
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
            .iter()
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

    fn peer(&self, name: &NodeId) -> Result<Arc<Peer>, TransportError> {
        self.shared
            .peers
            .get(name)
            .ok_or_else(|| TransportError::UnknownPeer { peer: name.clone() })
    }
}
