//! [`Gcs`]: the public async (tokio) API, and the thin driver that runs one node.
//!
//! What it owns: one driver task per node that turns transport events (messages, link
//! up/down), local requests from [`Session`]s and one timer (armed from
//! [`Node::poll_timeout`]) into inputs of the sans-IO [`Node`], and the node's outputs
//! into sends on the [`Transport`] and events for sessions. No protocol rule lives here:
//! ordering, membership, failure detection and flow control are the core's.
//!
//! ```text
//!  Session::multicast ─cmd─▶ ┌────────── driver task ──────────┐
//!  Session::join/leave ─cmd─▶│ Node::multicast / join / leave  │─ Output::Send ─▶ Transport
//!  Transport events ────────▶│ handle_message / link_up / down │
//!  timer (poll_timeout) ────▶│ handle_timeout                  │─ Output::Deliver ─▶ Session::recv
//!                            └─────────────────────────────────┘
//! ```
//!
//! The one rule the driver applies on its own is a link-level one: a frame whose sender
//! incarnation is older than one already heard from that peer is stale (a previous life
//! of the node); it is dropped and the link closed with a logged reason. Stale views are
//! the core's to judge.
//!
//! Bounded memory: a session's events wait in a channel, but the core counts what a
//! session has not read ([`Node::mark_read`], called as [`Session::recv`] takes events)
//! and disconnects a session past `CoreConfig::session_queue_limit`; local multicasts
//! wait when the core reports backpressure.
//!
//! # Example
//!
//! One node on loopback (add `(name, address)` pairs to `peers` for a cluster; every
//! node gets a certificate from the same CA, see [`crate::transport::certs`]):
//!
//! ```
//! use walrus_gcs::transport::{certs, Limits, Listen, NodeIdentity, TransportConfig};
//! use walrus_gcs::{CoreConfig, Event, Gcs, GcsConfig, GcsThread, GroupName, NodeId, Service};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let ca = certs::create_ca()?;
//!     let cert = certs::issue_node_cert(&ca.key, "node-a")?;
//!     let gcs = Gcs::start(GcsConfig {
//!         transport: TransportConfig {
//!             me: NodeId::new("node-a"),
//!             listen: Listen::Addr("127.0.0.1:0".parse()?),
//!             peers: vec![],
//!             identity: NodeIdentity { ca: ca.cert, cert: cert.cert, key: cert.key },
//!             limits: Limits::default(),
//!         },
//!         core: CoreConfig::lan(),
//!         incarnation: None,
//!         thread: GcsThread::Own,
//!     })
//!     .await?;
//!     let mut session = gcs.open_session().await?;
//!     let controllers = GroupName::new("Controllers");
//!     session.join(controllers.clone()).await?;
//!     session.multicast(Service::Agreed, &[controllers], b"report".to_vec()).await?;
//!     while let Some(event) = session.recv().await {
//!         match event {
//!             Event::Membership { members, .. } => println!("master: {:?}", members.first()),
//!             Event::Message { payload, .. } => {
//!                 assert_eq!(&payload[..], b"report");
//!                 break;
//!             }
//!             Event::Disconnected { .. } => break,
//!         }
//!     }
//!     gcs.shutdown().await;
//!     Ok(())
//! }
//! ```

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, error, info};

use crate::event::{Event, Output, ViewChange};
use crate::tier::link::{ClientIn, ClientLinks};
use crate::transport::{
    Lane, Limits, Staged, Transport, TransportConfig, TransportError, TransportEvent,
    TransportEvents,
};
use crate::{
    CoreConfig, GcsError, GroupName, Incarnation, Node, NodeId, PeerMessage, Service, SessionId,
};

/// Configuration of one GCS node.
#[derive(Debug)]
pub struct GcsConfig {
    /// Name, address, peers, certificates and limits of the transport.
    pub transport: TransportConfig,
    /// Protocol timeouts and limits ([`CoreConfig::lan`] or [`CoreConfig::wan`]).
    pub core: CoreConfig,
    /// This life of the node; `None` takes the wall clock in milliseconds, which grows
    /// across restarts.
    pub incarnation: Option<Incarnation>,
    /// Where the driver, the transport and its QUIC endpoint run (default
    /// [`GcsThread::Own`]).
    pub thread: GcsThread,
}

/// Where a node's protocol runs: its driver, its transport's link tasks and its QUIC
/// endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GcsThread {
    /// On a thread of its own, with a current-thread tokio runtime (the default). A frame
    /// then goes from the socket through quinn and the link task to the driver, and back
    /// out, without waking another thread: each hand-off between tasks on a work-stealing
    /// runtime may wake a parked worker, and a hop of the protocol crosses several. It also
    /// keeps heartbeats and view changes off the application's runtime, whatever that is
    /// busy with. The cost: one core at most for the protocol, which a Walrus site's
    /// reports (a few per round) are far from needing.
    #[default]
    Own,
    /// On the tokio runtime that calls [`Gcs::start`], with the application's tasks.
    Caller,
}

impl GcsConfig {
    /// The LAN profile: `CoreConfig::lan()` and `Limits::lan()` on `transport`.
    pub fn lan(mut transport: TransportConfig) -> Self {
        transport.limits = Limits::lan();
        Self {
            transport,
            core: CoreConfig::lan(),
            incarnation: None,
            thread: GcsThread::default(),
        }
    }

    /// The WAN profile (one line to switch): every protocol and connection timeout
    /// longer, see `CoreConfig::wan()` and `Limits::wan()`.
    pub fn wan(mut transport: TransportConfig) -> Self {
        transport.limits = Limits::wan();
        Self {
            transport,
            core: CoreConfig::wan(),
            incarnation: None,
            thread: GcsThread::default(),
        }
    }
}

/// Why a call on [`Gcs`] or [`Session`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The transport could not start.
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// The core refused the request.
    #[error("{0}")]
    Refused(#[from] GcsError),
    /// The node has shut down.
    #[error("the GCS node has stopped")]
    Stopped,
    /// The node's own thread or its runtime could not start (see [`GcsThread::Own`]).
    #[error("thread of the GCS node: {0}")]
    Thread(String),
    /// The client tier could not start: a member's client listener (see
    /// [`Gcs::serve_clients`]) or a client's link.
    #[error("client tier: {0}")]
    Clients(String),
    /// Another live process proves this node's name and keeps it (a cloned host, a copied
    /// configuration, a stolen key): this one is the duplicate, it left the cluster and
    /// stopped. The text names both addresses. The process should exit non-zero.
    #[error("{0}")]
    Duplicate(String),
    /// [`SessionSender::try_multicast`] only: the send window is full (this node has
    /// `CoreConfig::max_pending` messages or `max_pending_bytes` on their way, or a
    /// peer's send queue is long). Nothing was sent; the payload is handed back.
    #[error("send window full: try again once earlier multicasts are delivered")]
    Full(Vec<u8>),
}

type Reply = oneshot::Sender<Result<(), GcsError>>;

enum Command {
    Open {
        reply: oneshot::Sender<SessionId>,
        events: mpsc::UnboundedSender<Vec<Event>>,
        read: Arc<AtomicUsize>,
    },
    Close {
        session: SessionId,
    },
    Join {
        session: SessionId,
        group: GroupName,
        reply: Reply,
    },
    Leave {
        session: SessionId,
        group: GroupName,
        reply: Reply,
    },
    Multicast {
        session: SessionId,
        service: Service,
        groups: Vec<GroupName>,
        payload: Vec<u8>,
        reply: oneshot::Sender<Result<(), (GcsError, Vec<u8>)>>,
    },
    /// A multicast of [`SessionSender::multicast`]: no reply; the driver holds it until
    /// the send window has room (see [`Driver::parked`]).
    Post(Post),
    SetPeers(Vec<NodeId>),
}

/// One posted multicast, with its share of the [`PostBudget`] (freed at the end of the
/// driver turn in which the core took it).
struct Post {
    session: SessionId,
    service: Service,
    groups: Vec<GroupName>,
    payload: Vec<u8>,
    budget: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

/// Bounds the multicasts posted to the driver and not yet taken by the core, in messages
/// and in payload bytes (a message over the byte budget takes all of it), so a fast
/// sender queues little in front of the core's own send window.
struct PostBudget {
    msgs: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    byte_cap: usize,
}

impl PostBudget {
    /// Posted multicasts waiting for the core: at most this many messages (a post waits
    /// in front of the send window, so at saturation it is latency like the window: with
    /// 3 members, 1 KiB and a window of 64 each, 64 posts gave p50 7–8 ms, 16 gave
    /// 4.5–5.5 ms at the same throughput)…
    const MSGS: usize = 16;
    /// …and this many payload bytes.
    const BYTES: usize = 64 * 1024;

    fn new() -> Self {
        Self {
            msgs: Arc::new(Semaphore::new(Self::MSGS)),
            bytes: Arc::new(Semaphore::new(Self::BYTES)),
            byte_cap: Self::BYTES,
        }
    }

    async fn take(
        &self,
        len: usize,
    ) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), DriverError> {
        let bytes = u32::try_from(len.clamp(1, self.byte_cap)).unwrap_or(u32::MAX);
        let m = self
            .msgs
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| DriverError::Stopped)?;
        let b = self
            .bytes
            .clone()
            .acquire_many_owned(bytes)
            .await
            .map_err(|_| DriverError::Stopped)?;
        Ok((m, b))
    }
}

/// A running GCS node. See the crate docs for an example.
pub struct Gcs {
    me: NodeId,
    incarnation: Incarnation,
    cmds: mpsc::Sender<Command>,
    transport: Transport<PeerMessage>,
    view: watch::Receiver<Option<ViewChange>>,
    posts: Arc<PostBudget>,
    max_message_size: usize,
    /// Set by [`Gcs::shutdown`]: the driver stops.
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<Counters>,
    /// Set when the driver stopped on its own for a reason the process must exit for.
    fatal: watch::Receiver<Option<DriverError>>,
    /// Clients' links to the driver (see [`Gcs::serve_clients`]).
    clients: mpsc::Sender<ClientIn>,
    /// The client listener, once started.
    client_endpoint: Mutex<Option<quinn::Endpoint>>,
    /// The clients attached to this member now (names, sorted).
    attached_clients: watch::Receiver<Vec<NodeId>>,
    /// Fires when the driver has stopped (taken by the thread of [`GcsThread::Own`],
    /// which keeps its runtime until then).
    driver_done: Option<oneshot::Receiver<()>>,
}

/// Message counters of a running node, since it started (for metrics: a monitoring
/// system turns them into rates).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcsStats {
    /// Multicasts the core accepted from local sessions.
    pub multicasts: u64,
    /// Messages delivered to local sessions.
    pub delivered: u64,
    /// Protocol frames handed to the transport.
    pub frames_sent: u64,
    /// Protocol frames received from peers.
    pub frames_received: u64,
    /// Handshakes the transport refused (bad certificates, garbage, timeouts).
    pub handshakes_refused: u64,
}

#[derive(Debug, Default)]
struct Counters {
    multicasts: AtomicU64,
    delivered: AtomicU64,
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
}

impl Gcs {
    /// Starts the transport and the driver, on a thread of their own or on the caller's
    /// runtime (see [`GcsThread`]). Must run inside a tokio runtime.
    pub async fn start(config: GcsConfig) -> Result<Self, DriverError> {
        match config.thread {
            GcsThread::Caller => Self::start_here(config).await,
            GcsThread::Own => Self::start_on_own_thread(config).await,
        }
    }

    /// [`GcsThread::Own`]: a thread named after the node runs a current-thread runtime
    /// until the driver stops (after [`Gcs::shutdown`], or once the `Gcs` and every
    /// session are gone, as on the caller's runtime), then drops it.
    async fn start_on_own_thread(config: GcsConfig) -> Result<Self, DriverError> {
        let name = format!("gcs {}", config.transport.me);
        crate::own_thread::start(
            name,
            move || async move {
                let mut gcs = Self::start_here(config).await?;
                let stopped = gcs
                    .driver_done
                    .take()
                    .ok_or_else(|| DriverError::Thread("started twice".into()))?;
                Ok((gcs, stopped))
            },
            DriverError::Thread,
        )
        .await
    }

    /// Starts the transport and the driver on the current runtime.
    async fn start_here(config: GcsConfig) -> Result<Self, DriverError> {
        let GcsConfig {
            transport,
            core,
            incarnation,
            thread: _,
        } = config;
        let me = transport.me.clone();
        let peers: Vec<NodeId> = transport.peers.iter().map(|(n, _)| n.clone()).collect();
        let incarnation = incarnation.unwrap_or_else(wall_clock_incarnation);
        let (transport, events) = Transport::<PeerMessage>::start(transport).await?;
        let max_message_size = core.max_message_size;
        let node = Node::new(core, me.clone(), incarnation, peers, now());
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let (view_tx, view_rx) = watch::channel(None);
        let stats = Arc::new(Counters::default());
        let (fatal_tx, fatal_rx) = watch::channel(None);
        let (clients_tx, clients_rx) = mpsc::channel(1024);
        let client_links = ClientLinks::default();
        let attached_clients = client_links.watch();
        let driver = Driver {
            clients: client_links,
            stats: stats.clone(),
            node,
            transport: transport.clone(),
            sessions: HashMap::new(),
            view: view_tx,
            fatal: fatal_tx,
            parked: None,
            spent_posts: None,
            staged: Staged::default(),
        };
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, driver_done) = oneshot::channel();
        let task = tokio::spawn(async move {
            driver.run(cmd_rx, events, stop_rx, clients_rx).await;
            let _ = done_tx.send(());
        });
        info!(node = %me, %incarnation, "GCS node started");
        Ok(Self {
            me,
            incarnation,
            cmds: cmd_tx,
            transport,
            view: view_rx,
            posts: Arc::new(PostBudget::new()),
            max_message_size,
            stop,
            task: Mutex::new(Some(task)),
            stats,
            fatal: fatal_rx,
            clients: clients_tx,
            client_endpoint: Mutex::new(None),
            attached_clients,
            driver_done: Some(driver_done),
        })
    }

    /// Lets clients attach to this member (`PROTOCOL.md`, "Clients"): a QUIC listener on
    /// `listen` (ALPN `walrus-gcs-client/1`, mutual TLS with the cluster CA of
    /// `identity`) that admits only client certificates (names starting with
    /// `client.`). Returns the address it listens on.
    pub fn serve_clients(
        &self,
        identity: &crate::transport::NodeIdentity,
        listen: SocketAddr,
    ) -> Result<SocketAddr, DriverError> {
        if crate::tier::link::is_client_name(self.me.as_str()) {
            return Err(DriverError::Clients(format!(
                "a member may not have a client's name ({})",
                self.me
            )));
        }
        // The listener's tasks run where the node's do.
        let _runtime = self.transport.runtime().enter();
        let endpoint = crate::tier::link::listen(
            identity,
            listen,
            self.transport.limits(),
            self.clients.clone(),
        )
        .map_err(|e| DriverError::Clients(format!("listening on {listen} (UDP): {e}")))?;
        let addr = endpoint
            .local_addr()
            .map_err(|e| DriverError::Clients(e.to_string()))?;
        *self
            .client_endpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(endpoint);
        Ok(addr)
    }

    /// Waits until the node stops on its own for a reason the process must exit for
    /// ([`DriverError::Duplicate`]); pending forever otherwise.
    pub async fn fatal(&self) -> DriverError {
        let mut rx = self.fatal.clone();
        loop {
            if let Some(e) = rx.borrow_and_update().as_ref() {
                return match e {
                    DriverError::Duplicate(s) => DriverError::Duplicate(s.clone()),
                    _ => DriverError::Stopped,
                };
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// This node's name.
    pub fn id(&self) -> &NodeId {
        &self.me
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// Opens a local session (the Controller, the Reporter and the Replicator each hold
    /// one).
    pub async fn open_session(&self) -> Result<Session, DriverError> {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let read = Arc::new(AtomicUsize::new(0));
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(Command::Open {
                reply,
                events: events_tx,
                read: read.clone(),
            })
            .await
            .map_err(|_| DriverError::Stopped)?;
        let id = rx.await.map_err(|_| DriverError::Stopped)?;
        Ok(Session {
            sender: SessionSender {
                id,
                cmds: self.cmds.clone(),
                posts: self.posts.clone(),
                max_message_size: self.max_message_size,
            },
            events: events_rx,
            inbox: VecDeque::new(),
            read,
            closed: false,
        })
    }

    /// The view this node is in (`None` until it installs its first one).
    pub fn view(&self) -> Option<ViewChange> {
        self.view.borrow().clone()
    }

    /// Message counters since the node started.
    pub fn stats(&self) -> GcsStats {
        let c = &self.stats;
        GcsStats {
            multicasts: c.multicasts.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            frames_sent: c.frames_sent.load(Ordering::Relaxed),
            frames_received: c.frames_received.load(Ordering::Relaxed),
            handshakes_refused: self.transport.handshakes_refused(),
        }
    }

    /// Watches view installations.
    pub fn watch_view(&self) -> watch::Receiver<Option<ViewChange>> {
        self.view.clone()
    }

    /// Watches the clients attached to this member (`client.` names, sorted; empty
    /// without [`Gcs::serve_clients`]).
    pub fn watch_clients(&self) -> watch::Receiver<Vec<NodeId>> {
        self.attached_clients.clone()
    }

    /// The transport, for point-to-point streams ([`Transport::open_stream`],
    /// [`Transport::accept_stream`]) and the partition switch ([`Transport::cut`]).
    pub fn transport(&self) -> &Transport<PeerMessage> {
        &self.transport
    }

    /// Makes `peers` the configured peers (a reloaded configuration): new ones are dialed
    /// and may enter the view, removed ones are disconnected and left out of the next
    /// view. This node keeps its view, sessions and groups meanwhile.
    pub async fn set_peers(&self, peers: &[(NodeId, SocketAddr)]) -> Result<(), DriverError> {
        self.transport.set_peers(peers)?;
        let names = peers.iter().map(|(n, _)| n.clone()).collect();
        self.cmds
            .send(Command::SetPeers(names))
            .await
            .map_err(|_| DriverError::Stopped)
    }

    /// Stops the node: sessions end, peers are told the links close, the driver exits.
    pub async fn shutdown(&self) {
        // Not through the command queue: requests may wait there behind a parked
        // multicast (see `Driver::parked`).
        self.stop.send_replace(true);
        let clients = self
            .client_endpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(endpoint) = clients {
            endpoint.close(quinn::VarInt::from_u32(0), b"member stopped");
        }
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// One local session: joins and leaves groups, multicasts, and receives its events.
/// [`Session::sender`] gives a cloneable handle for sending from other tasks.
pub struct Session {
    sender: SessionSender,
    /// The session's events, a turn's worth at a time (see [`SessionSlot::outbox`]).
    events: mpsc::UnboundedReceiver<Vec<Event>>,
    /// Events of a received batch not yet returned.
    inbox: VecDeque<Event>,
    read: Arc<AtomicUsize>,
    closed: bool,
}

/// The sending side of a [`Session`] (cheap to clone; usable from any task).
#[derive(Clone)]
pub struct SessionSender {
    id: SessionId,
    cmds: mpsc::Sender<Command>,
    posts: Arc<PostBudget>,
    max_message_size: usize,
}

impl Session {
    /// The session's id (unique within this incarnation of the node).
    pub fn id(&self) -> SessionId {
        self.sender.id
    }

    /// A handle that joins, leaves and multicasts for this session from another task.
    pub fn sender(&self) -> SessionSender {
        self.sender.clone()
    }

    /// See [`SessionSender::join`].
    pub async fn join(&self, group: GroupName) -> Result<(), DriverError> {
        self.sender.join(group).await
    }

    /// See [`SessionSender::leave`].
    pub async fn leave(&self, group: GroupName) -> Result<(), DriverError> {
        self.sender.leave(group).await
    }

    /// See [`SessionSender::multicast`].
    pub async fn multicast(
        &self,
        service: Service,
        groups: &[GroupName],
        payload: Vec<u8>,
    ) -> Result<(), DriverError> {
        self.sender.multicast(service, groups, payload).await
    }

    /// See [`SessionSender::try_multicast`].
    pub async fn try_multicast(
        &self,
        service: Service,
        groups: &[GroupName],
        payload: Vec<u8>,
    ) -> Result<(), DriverError> {
        self.sender.try_multicast(service, groups, payload).await
    }

    /// The next event for this session; `None` once it is disconnected or the node
    /// stopped.
    pub async fn recv(&mut self) -> Option<Event> {
        while self.inbox.is_empty() {
            let batch = self.events.recv().await?;
            self.inbox.extend(batch);
        }
        self.take_one()
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        while self.inbox.is_empty() {
            let batch = self.events.try_recv().ok()?;
            self.inbox.extend(batch);
        }
        self.take_one()
    }

    /// Returns the inbox's first event and counts it read (the reader window).
    fn take_one(&mut self) -> Option<Event> {
        let e = self.inbox.pop_front()?;
        self.read.fetch_add(1, Ordering::Relaxed);
        Some(e)
    }

    /// Closes the session: it leaves every group (members see `Disconnect`).
    pub async fn close(mut self) {
        self.closed = true;
        let _ = self
            .sender
            .cmds
            .send(Command::Close {
                session: self.sender.id,
            })
            .await;
    }
}

impl SessionSender {
    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// Joins `group`; the members get a membership event once it is ordered.
    pub async fn join(&self, group: GroupName) -> Result<(), DriverError> {
        let (reply, rx) = oneshot::channel();
        self.request(Command::Join {
            session: self.id,
            group,
            reply,
        })
        .await?;
        Ok(rx.await.map_err(|_| DriverError::Stopped)??)
    }

    /// Leaves `group`.
    pub async fn leave(&self, group: GroupName) -> Result<(), DriverError> {
        let (reply, rx) = oneshot::channel();
        self.request(Command::Leave {
            session: self.id,
            group,
            reply,
        })
        .await?;
        Ok(rx.await.map_err(|_| DriverError::Stopped)??)
    }

    /// Multicasts `payload` to every session in at least one of `groups` (open groups:
    /// the sender need not be a member). Flow control: waits while the node's send
    /// window is full (`CoreConfig::max_pending` messages or `max_pending_bytes` bytes of
    /// its multicasts not yet delivered, or a peer's send queue over
    /// `Limits::backpressure_bytes`), so a sender that outruns the group slows down
    /// instead of queueing. Refuses payloads over `CoreConfig::max_message_size` and an
    /// empty list of groups.
    ///
    /// Batching (issue 24): the multicast is posted to the driver without waiting for an
    /// answer, so a sender that multicasts in a loop hands the driver many messages per
    /// turn (one `Submit` frame for all of them) instead of one turn per message. `Ok`
    /// means it is queued, in order with this node's other requests, and the core takes
    /// it as soon as its window has room; posted messages not yet taken are bounded (16
    /// messages, 64 KiB). A message posted by a session the core has meanwhile closed or
    /// disconnected is dropped (the session's `recv` reports why).
    pub async fn multicast(
        &self,
        service: Service,
        groups: &[GroupName],
        payload: Vec<u8>,
    ) -> Result<(), DriverError> {
        if payload.len() > self.max_message_size {
            return Err(GcsError::MessageTooLarge {
                size: payload.len(),
                limit: self.max_message_size,
            }
            .into());
        }
        if groups.is_empty() {
            return Err(GcsError::NoGroups.into());
        }
        let budget = self.posts.take(payload.len()).await?;
        self.request(Command::Post(Post {
            session: self.id,
            service,
            groups: groups.to_vec(),
            payload,
            budget,
        }))
        .await
    }

    /// Like [`SessionSender::multicast`], but never waits for room: when the send
    /// window is full it returns [`DriverError::Full`] with the payload.
    pub async fn try_multicast(
        &self,
        service: Service,
        groups: &[GroupName],
        payload: Vec<u8>,
    ) -> Result<(), DriverError> {
        self.offer(service, groups, payload)
            .await?
            .map_err(DriverError::Full)
    }

    /// Hands one multicast to the driver: `Ok(Err(payload))` when the window is full.
    async fn offer(
        &self,
        service: Service,
        groups: &[GroupName],
        payload: Vec<u8>,
    ) -> Result<Result<(), Vec<u8>>, DriverError> {
        let (reply, rx) = oneshot::channel();
        self.request(Command::Multicast {
            session: self.id,
            service,
            groups: groups.to_vec(),
            payload,
            reply,
        })
        .await?;
        match rx.await.map_err(|_| DriverError::Stopped)? {
            Ok(()) => Ok(Ok(())),
            Err((GcsError::Backpressure { .. }, back)) => Ok(Err(back)),
            Err((e, _)) => Err(e.into()),
        }
    }

    async fn request(&self, cmd: Command) -> Result<(), DriverError> {
        self.cmds.send(cmd).await.map_err(|_| DriverError::Stopped)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.sender.cmds.try_send(Command::Close {
                session: self.sender.id,
            });
        }
    }
}

struct SessionSlot {
    events: mpsc::UnboundedSender<Vec<Event>>,
    /// The events of this turn, sent as one batch at its end: one wake of the reader a
    /// turn, not one an event (a wake costs a system call and, on a virtual machine, tens
    /// of microseconds; at saturation it was a tenth of the protocol thread's time).
    outbox: Vec<Event>,
    read: Arc<AtomicUsize>,
}

impl SessionSlot {
    /// Hands the turn's events to the session.
    fn send_outbox(&mut self) {
        if !self.outbox.is_empty() {
            let _ = self.events.send(std::mem::take(&mut self.outbox));
        }
    }
}

struct Driver {
    node: Node,
    /// Attached clients (`PROTOCOL.md`, "Clients").
    clients: ClientLinks,
    transport: Transport<PeerMessage>,
    sessions: HashMap<SessionId, SessionSlot>,
    view: watch::Sender<Option<ViewChange>>,
    stats: Arc<Counters>,
    /// Why the driver stopped on its own (see [`Gcs::fatal`]).
    fatal: watch::Sender<Option<DriverError>>,
    /// Frames of this turn, per peer, handed to the links at its end (see `flush`).
    staged: Staged,
    /// A posted multicast waiting for room in the send window; no request is taken
    /// meanwhile (they queue behind it, in order).
    parked: Option<Post>,
    /// The [`PostBudget`] permits of the posts the core took this turn, merged; freed at
    /// the end of the turn (`flush`).
    spent_posts: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

/// How often the driver looks again for room for a parked multicast when nothing else
/// happens (room in the links' send queues comes without an event).
const PARKED_RETRY: Duration = Duration::from_millis(1);

/// How many queued inputs of one kind the driver takes before flushing outputs.
const BATCH: usize = 256;

impl Driver {
    async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Command>,
        mut events: TransportEvents<PeerMessage>,
        mut stop: watch::Receiver<bool>,
        mut clients: mpsc::Receiver<ClientIn>,
    ) {
        self.flush();
        loop {
            let deadline = self.node.poll_timeout();
            let timer = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                    None => std::future::pending().await,
                }
            };
            let parked = self.parked.is_some();
            // An acknowledgement held back while a session lags goes out as the session
            // reads, which is no input either: look again soon while one is held.
            let recheck = parked || self.node.holding_ack();
            let stopping = async {
                if stop.wait_for(|s| *s).await.is_err() {
                    // The `Gcs` is gone but sessions may live on: run on.
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = stopping => break,
                // While a posted multicast waits for room, later requests wait behind it
                // (in order) in the bounded command queue.
                cmd = cmds.recv(), if !parked => {
                    let Some(cmd) = cmd else { break };
                    if !self.command(cmd) {
                        break;
                    }
                    let mut stop = false;
                    for _ in 0..BATCH {
                        if self.parked.is_some() {
                            break;
                        }
                        match cmds.try_recv() {
                            Ok(cmd) => if !self.command(cmd) { stop = true; break; },
                            Err(_) => break,
                        }
                    }
                    if stop {
                        break;
                    }
                }
                ev = events.recv() => {
                    let Some(ev) = ev else { break };
                    let mut stop = !self.transport_event(ev);
                    for _ in 0..BATCH {
                        if stop {
                            break;
                        }
                        match events.try_recv() {
                            Some(ev) => stop = !self.transport_event(ev),
                            None => break,
                        }
                    }
                    if stop {
                        break;
                    }
                }
                input = clients.recv() => {
                    if let Some(input) = input {
                        self.clients.input(&mut self.node, now(), input);
                        for _ in 0..BATCH {
                            match clients.try_recv() {
                                Ok(input) => self.clients.input(&mut self.node, now(), input),
                                Err(_) => break,
                            }
                        }
                    }
                }
                // Room also opens as the links' queues drain, which is no input: look again
                // soon (only while a multicast waits, so never at light load).
                _ = tokio::time::sleep(PARKED_RETRY), if recheck => {}
                _ = timer => {
                    // Frames that arrived while the driver was not running came before
                    // this deadline: feed them first, so liveness is judged on them.
                    let mut stop = false;
                    for _ in 0..BATCH {
                        match events.try_recv() {
                            Some(ev) => if !self.transport_event(ev) { stop = true; break; },
                            None => break,
                        }
                    }
                    if stop {
                        break;
                    }
                }
            }
            // Busy periods can run past the deadline: time is an input like any other.
            if let Some(late) = deadline.and_then(|d| now().checked_duration_since(d)) {
                if late > Duration::from_millis(100) {
                    debug!(node = %self.node.id(), late_ms = late.as_millis() as u64, "driver ran late");
                }
            }
            if self.node.poll_timeout().is_some_and(|t| t <= now()) {
                self.node.handle_timeout(now());
            }
            self.mark_read();
            self.unpark();
            self.flush();
        }
        self.sessions.clear();
        self.transport.shutdown().await;
        info!(node = %self.node.id(), "GCS node stopped");
    }

    /// Applies one local request; `false` means shut down.
    fn command(&mut self, cmd: Command) -> bool {
        let t = now();
        match cmd {
            Command::Open {
                reply,
                events,
                read,
            } => {
                let id = self.node.open_session(t);
                self.sessions.insert(
                    id,
                    SessionSlot {
                        events,
                        outbox: Vec::new(),
                        read,
                    },
                );
                let _ = reply.send(id);
            }
            Command::Close { session } => {
                self.sessions.remove(&session);
                let _ = self.node.close_session(t, session);
            }
            Command::Join {
                session,
                group,
                reply,
            } => {
                let _ = reply.send(self.node.join(t, session, group));
            }
            Command::Leave {
                session,
                group,
                reply,
            } => {
                let _ = reply.send(self.node.leave(t, session, group));
            }
            Command::Multicast {
                session,
                service,
                groups,
                payload,
                reply,
            } => {
                let queued = self.transport.max_queued_bytes();
                let limit = self.transport.limits().backpressure_bytes;
                if !self.has_room(session, payload.len()) {
                    let e = GcsError::Backpressure {
                        pending: self.node.pending(),
                        pending_bytes: queued,
                        limit: 0,
                        limit_bytes: limit,
                    };
                    let _ = reply.send(Err((e, payload)));
                    return true;
                }
                // The window has room, so the core refuses only for a reason the caller
                // cannot fix by retrying: the payload is not needed back.
                let r = self.node.multicast(t, session, service, &groups, payload);
                if r.is_ok() {
                    self.stats.multicasts.fetch_add(1, Ordering::Relaxed);
                }
                let _ = reply.send(r.map_err(|e| (e, Vec::new())));
            }
            Command::Post(post) => self.post(post),
            Command::SetPeers(peers) => self.node.set_peers(&peers),
        }
        true
    }

    /// Local flow control: a multicast of `size` bytes by `session` may go to the core
    /// now. Not while a peer's send queue is long (so queues stay short and heartbeats are
    /// not stuck behind data), nor while the core's send window is full, nor while the
    /// session lags behind its own events (see [`Node::reader_keeps_up`]).
    fn has_room(&self, session: SessionId, size: usize) -> bool {
        self.transport.max_queued_bytes() <= self.transport.limits().backpressure_bytes
            && self.node.window_has_room(size)
            && self.node.reader_keeps_up(session)
    }

    /// A posted multicast: to the core if there is room, else parked until there is.
    fn post(&mut self, post: Post) {
        if !self.has_room(post.session, post.payload.len()) {
            self.parked = Some(post);
            return;
        }
        let Post {
            session,
            service,
            groups,
            payload,
            budget: (msgs, bytes),
        } = post;
        match &mut self.spent_posts {
            Some((m, b)) => {
                m.merge(msgs);
                b.merge(bytes);
            }
            None => self.spent_posts = Some((msgs, bytes)),
        }
        match self
            .node
            .multicast(now(), session, service, &groups, payload)
        {
            Ok(()) => {
                self.stats.multicasts.fetch_add(1, Ordering::Relaxed);
            }
            // Checked by the sender but for the session, which may be gone by now.
            Err(e) => debug!(%session, error = %e, "posted multicast dropped"),
        }
    }

    /// Gives a parked multicast to the core if there is room now.
    fn unpark(&mut self) {
        if let Some(post) = self.parked.take() {
            self.post(post);
        }
    }

    /// Feeds one transport event to the core; `false` means this node must stop (it is a
    /// duplicate of its own name).
    fn transport_event(&mut self, ev: TransportEvent<PeerMessage>) -> bool {
        let t = now();
        match ev {
            TransportEvent::LinkUp { peer } => self.node.handle_link_up(t, &peer),
            TransportEvent::LinkDown { peer, reason } => {
                debug!(%peer, %reason, "link down");
                self.node.handle_link_down(t, &peer);
            }
            TransportEvent::Duplicate { peer, reason } => {
                tracing::error!(node = %self.node.id(), %peer, "{reason}: this process stops");
                self.fatal
                    .send_replace(Some(DriverError::Duplicate(reason)));
                return false;
            }
            TransportEvent::Message { from, msg } => {
                self.stats.frames_received.fetch_add(1, Ordering::Relaxed);
                // Incarnations are the core's business: it drops an older incarnation's
                // frames only while the newer one is alive (see `Node::handle_message`).
                self.node.handle_message(t, &from, msg);
            }
        }
        true
    }

    fn mark_read(&mut self) {
        for (id, slot) in &self.sessions {
            let n = slot.read.swap(0, Ordering::Relaxed);
            if n > 0 {
                self.node.mark_read(*id, n);
            }
        }
    }

    fn flush(&mut self) {
        self.clients.pump(&mut self.node, now());
        while let Some(out) = self.node.poll_output() {
            let Some(out) = self.clients.output(&mut self.node, out) else {
                continue;
            };
            match out {
                Output::Send { to, msg } => {
                    match self
                        .transport
                        .stage(&mut self.staged, lane(&msg), &to, &msg)
                    {
                        Ok(()) => {
                            self.stats.frames_sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => send_failed(&to, &e),
                    }
                }
                Output::Deliver { session, event } => {
                    if matches!(event, Event::Message { .. }) {
                        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    let gone = matches!(event, Event::Disconnected { .. });
                    if let Some(slot) = self.sessions.get_mut(&session) {
                        slot.outbox.push(event);
                        if gone {
                            slot.send_outbox();
                            self.sessions.remove(&session);
                        }
                    }
                }
                Output::ViewInstalled(v) => {
                    info!(node = %self.node.id(), view = %v.view, members = v.members.len(), "view installed");
                    self.view.send_replace(Some(v));
                }
                // Taken by `self.clients` above.
                Output::Confirmed { .. } => {}
            }
        }
        self.clients.send_notices(&mut self.node, now());
        for slot in self.sessions.values_mut() {
            slot.send_outbox();
        }
        // The permits of the multicasts the core took this turn go back in one piece:
        // one wake of a waiting sender a turn, not one a message.
        self.spent_posts = None;
        // The end of the turn: what it sent to each peer goes out as one write.
        for (to, e) in self.transport.flush_staged(&mut self.staged) {
            send_failed(&to, &e);
        }
    }
}

/// A lost link is the core's business (it hears of it as a link down); anything else is
/// logged.
fn send_failed(to: &NodeId, e: &TransportError) {
    match e {
        TransportError::NoLink { .. } => {}
        // Not the link's fault and not passing: a protocol message over the frame limit
        // (e.g. a view change's group table with thousands of client sessions) is never
        // delivered, so what waits for it (a view change) cannot complete.
        TransportError::Encode { .. } => {
            error!(peer = %to, error = %e, "a protocol message could not be sent");
        }
        _ => debug!(peer = %to, error = %e, "send failed"),
    }
}

/// Heartbeats and view changes go on the transport's control lane.
fn lane(msg: &PeerMessage) -> Lane {
    if msg.is_control() {
        Lane::Control
    } else {
        Lane::Data
    }
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

fn wall_clock_incarnation() -> Incarnation {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Incarnation(ms)
}
