//! The client's driver over QUIC ([`Client`], [`ClientSession`]): thin I/O around
//! [`ClientCore`]. It dials the member the core names (ALPN
//! [`super::link::CLIENT_ALPN`], mutual TLS with the cluster CA, its client
//! certificate), says [`Hello`], writes requests and reads notices; when the connection
//! ends it tells the core, which names the next member of its list.

use super::link::{Hello, CLIENT_ALPN};
use super::{ClientConfig, ClientCore, ClientError, ClientNotice, ClientOutput, ClientRequest};
use crate::codec;
use crate::event::Event;
use crate::gcs::GcsThread;
use crate::transport::frames::FrameBuffer;
use crate::transport::{tls, Limits, NodeIdentity};
use crate::types::{GroupName, Incarnation, NodeId, Service, SessionId};
use quinn::crypto::rustls::QuicClientConfig;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// How a client attaches.
#[derive(Debug, Clone)]
pub struct ClientLinkConfig {
    /// The cluster CA and this client's certificate (its name starts with `client.`).
    pub identity: NodeIdentity,
    /// Its name.
    pub name: NodeId,
    /// Its incarnation (`None`: the wall clock in ms).
    pub incarnation: Option<Incarnation>,
    /// The members it may attach to and their client listeners, in order of preference.
    pub members: Vec<(NodeId, SocketAddr)>,
    /// The address it sends from (the port is the system's choice): the host's own
    /// address, so the members' firewalls and logs see the host the operator declared.
    /// `None`: the loopback of the members' family when every member is on the
    /// loopback, else the unspecified address of their family (`[::]`, dual-stack, when
    /// they are on both).
    pub local: Option<IpAddr>,
    /// Multicasts not yet confirmed at most.
    pub window: usize,
    /// Wait before connecting to the next member after a link ended.
    pub retry: Duration,
    /// The transport's limits, of the members' profile (`Limits::lan()`/`wan()`); the
    /// link uses [`Limits::client_link`] of them: its idle timeout is how soon the client
    /// finds its member dead.
    pub limits: Limits,
    /// Where the link runs (default [`GcsThread::Own`]: a thread of its own, as a
    /// member's protocol; many clients in one process, as in a test driver, want
    /// [`GcsThread::Caller`]).
    pub thread: GcsThread,
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientLinkError {
    /// The client could not start.
    #[error("client setup: {0}")]
    Setup(String),
    /// The client has stopped.
    #[error("the client has stopped")]
    Stopped,
    /// The core refused the request.
    #[error("{0}")]
    Refused(#[from] ClientError),
}

enum Cmd {
    Open {
        reply: oneshot::Sender<SessionId>,
        events: mpsc::UnboundedSender<Event>,
    },
    Close(SessionId),
    Join(
        SessionId,
        GroupName,
        oneshot::Sender<Result<(), ClientError>>,
    ),
    Leave(
        SessionId,
        GroupName,
        oneshot::Sender<Result<(), ClientError>>,
    ),
    /// A multicast: session, service, groups, payload.
    Multicast(
        SessionId,
        Service,
        Vec<GroupName>,
        Vec<u8>,
        oneshot::Sender<Result<u64, ClientError>>,
    ),
    Unconfirmed(oneshot::Sender<usize>),
}

enum LinkEv {
    Up {
        epoch: u64,
        member: NodeId,
        conn: quinn::Connection,
        writer: mpsc::UnboundedSender<ClientRequest>,
    },
    Notice {
        epoch: u64,
        member: NodeId,
        notice: Box<ClientNotice>,
    },
    Down {
        epoch: u64,
        member: NodeId,
    },
}

/// A running client (see the module doc).
pub struct Client {
    cmds: mpsc::Sender<Cmd>,
    member: watch::Receiver<Option<NodeId>>,
    task: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<LinkCounters>,
}

/// A client link's counters since it started (for metrics: a monitoring system turns
/// them into rates), and its queue of unconfirmed multicasts now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Links to a member established (the first attachment and every later one).
    pub attachments: u64,
    /// Established links that ended (the member died, was cut off, or dropped the
    /// client): each is followed by a fail-over to the next member of the list.
    pub links_lost: u64,
    /// Multicasts the client accepted from its sessions.
    pub multicasts: u64,
    /// Messages delivered to its sessions.
    pub delivered: u64,
    /// Multicasts not yet confirmed by a member (resent on fail-over), at most
    /// [`ClientLinkConfig::window`].
    pub unconfirmed: u64,
}

#[derive(Debug, Default)]
struct LinkCounters {
    attachments: AtomicU64,
    links_lost: AtomicU64,
    multicasts: AtomicU64,
    delivered: AtomicU64,
    unconfirmed: AtomicU64,
}

/// One session of a client: the same calls as a member's [`crate::Session`].
pub struct ClientSession {
    id: SessionId,
    cmds: mpsc::Sender<Cmd>,
    events: mpsc::UnboundedReceiver<Event>,
}

impl Client {
    /// Starts the client; it attaches to the first member of its list that admits it.
    pub async fn attach(config: ClientLinkConfig) -> Result<Client, ClientLinkError> {
        match config.thread {
            GcsThread::Caller => Ok(Self::attach_here(config)?.0),
            GcsThread::Own => {
                let name = format!("gcs {}", config.name);
                crate::own_thread::start(
                    name,
                    move || async move { Self::attach_here(config) },
                    ClientLinkError::Setup,
                )
                .await
            }
        }
    }

    /// Starts the client on the current runtime; the receiver fires when its task ends.
    fn attach_here(
        config: ClientLinkConfig,
    ) -> Result<(Client, oneshot::Receiver<()>), ClientLinkError> {
        let tls = tls::rustls_client_config(&config.identity, CLIENT_ALPN)
            .map_err(|e| ClientLinkError::Setup(e.to_string()))?;
        let quic =
            QuicClientConfig::try_from(tls).map_err(|e| ClientLinkError::Setup(e.to_string()))?;
        let mut client_config = quinn::ClientConfig::new(Arc::new(quic));
        client_config.transport_config(Arc::new(tls::transport_config(
            &config.limits.client_link(),
        )));
        let bind = match config.local {
            Some(ip) => SocketAddr::new(ip, 0),
            None => local_bind(config.members.iter().map(|(_, a)| *a)),
        };
        let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| {
            ClientLinkError::Setup(format!("binding {bind}, the address it sends from: {e}"))
        })?;
        endpoint.set_default_client_config(client_config);
        let incarnation = config.incarnation.unwrap_or_else(|| {
            Incarnation(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_millis() as u64),
            )
        });
        let core = ClientCore::new(ClientConfig {
            name: config.name.clone(),
            incarnation,
            members: config.members.iter().map(|(n, _)| n.clone()).collect(),
            window: config.window,
        });
        let (cmds, cmd_rx) = mpsc::channel(1024);
        let (member_tx, member) = watch::channel(None);
        let stats = Arc::new(LinkCounters::default());
        let run = Run {
            stats: stats.clone(),
            core,
            endpoint,
            addrs: config.members.into_iter().collect(),
            hello: Hello {
                name: config.name,
                incarnation,
            },
            retry: config.retry,
            epoch: 0,
            writer: None,
            conn: None,
            sessions: HashMap::new(),
            member: member_tx,
            first: true,
        };
        let (done_tx, stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            run.run(cmd_rx).await;
            let _ = done_tx.send(());
        });
        let client = Client {
            cmds,
            member,
            task: Mutex::new(Some(task)),
            stats,
        };
        Ok((client, stopped))
    }

    /// Opens a session.
    pub async fn open_session(&self) -> Result<ClientSession, ClientLinkError> {
        let (reply, rx) = oneshot::channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        self.cmds
            .send(Cmd::Open { reply, events })
            .await
            .map_err(|_| ClientLinkError::Stopped)?;
        let id = rx.await.map_err(|_| ClientLinkError::Stopped)?;
        Ok(ClientSession {
            id,
            cmds: self.cmds.clone(),
            events: events_rx,
        })
    }

    /// The member it is attached to now (changes on fail-over).
    pub fn watch_member(&self) -> watch::Receiver<Option<NodeId>> {
        self.member.clone()
    }

    /// The link's counters since the client started.
    pub fn stats(&self) -> ClientStats {
        let c = &self.stats;
        ClientStats {
            attachments: c.attachments.load(Ordering::Relaxed),
            links_lost: c.links_lost.load(Ordering::Relaxed),
            multicasts: c.multicasts.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            unconfirmed: c.unconfirmed.load(Ordering::Relaxed),
        }
    }

    /// How many multicasts are not yet confirmed.
    pub async fn unconfirmed(&self) -> Result<usize, ClientLinkError> {
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Unconfirmed(reply))
            .await
            .map_err(|_| ClientLinkError::Stopped)?;
        rx.await.map_err(|_| ClientLinkError::Stopped)
    }

    /// Stops the client (its sessions end; its members see them gone).
    pub async fn shutdown(&self) {
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }
}

impl ClientSession {
    /// The session's id (the client's numbering).
    pub fn id(&self) -> SessionId {
        self.id
    }

    async fn ask<T>(
        &self,
        cmd: impl FnOnce(oneshot::Sender<Result<T, ClientError>>) -> Cmd,
    ) -> Result<T, ClientLinkError> {
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(cmd(reply))
            .await
            .map_err(|_| ClientLinkError::Stopped)?;
        Ok(rx.await.map_err(|_| ClientLinkError::Stopped)??)
    }

    /// Joins `group` (once ordered at the member, the group's members get the event).
    pub async fn join(&self, group: GroupName) -> Result<(), ClientLinkError> {
        self.ask(|r| Cmd::Join(self.id, group, r)).await
    }

    /// Leaves `group`.
    pub async fn leave(&self, group: GroupName) -> Result<(), ClientLinkError> {
        self.ask(|r| Cmd::Leave(self.id, group, r)).await
    }

    /// Multicasts; `Err(Refused(Full))` while `ClientLinkConfig::window` multicasts
    /// are not confirmed. Returns the message's counter.
    pub async fn try_multicast(
        &self,
        service: Service,
        groups: &[GroupName],
        payload: Vec<u8>,
    ) -> Result<u64, ClientLinkError> {
        let groups = groups.to_vec();
        self.ask(|reply| Cmd::Multicast(self.id, service, groups, payload, reply))
            .await
    }

    /// Multicasts, waiting while the window is full. Returns the message's counter.
    pub async fn multicast(
        &self,
        service: Service,
        groups: &[GroupName],
        payload: Vec<u8>,
    ) -> Result<u64, ClientLinkError> {
        loop {
            match self.try_multicast(service, groups, payload.clone()).await {
                Err(ClientLinkError::Refused(ClientError::Full(_))) => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                other => return other,
            }
        }
    }

    /// The next event; `None` once the client stopped.
    pub async fn recv(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// Closes the session.
    pub async fn close(self) {
        let _ = self.cmds.send(Cmd::Close(self.id)).await;
    }
}

/// The client's task.
struct Run {
    stats: Arc<LinkCounters>,
    core: ClientCore,
    endpoint: quinn::Endpoint,
    addrs: HashMap<NodeId, SocketAddr>,
    hello: Hello,
    retry: Duration,
    epoch: u64,
    writer: Option<mpsc::UnboundedSender<ClientRequest>>,
    conn: Option<quinn::Connection>,
    sessions: HashMap<SessionId, mpsc::UnboundedSender<Event>>,
    member: watch::Sender<Option<NodeId>>,
    first: bool,
}

impl Run {
    async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>) {
        let (link_tx, mut link_rx) = mpsc::unbounded_channel();
        loop {
            self.outputs(&link_tx);
            tokio::select! {
                cmd = cmds.recv() => {
                    let Some(cmd) = cmd else { break };
                    self.command(cmd);
                }
                ev = link_rx.recv() => {
                    let Some(ev) = ev else { break };
                    self.link(ev);
                }
            }
        }
        if let Some(c) = &self.conn {
            c.close(quinn::VarInt::from_u32(0), b"client stopped");
        }
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"client stopped");
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Open { reply, events } => {
                let s = self.core.open_session();
                self.sessions.insert(s, events);
                let _ = reply.send(s);
            }
            Cmd::Close(s) => {
                self.sessions.remove(&s);
                let _ = self.core.close_session(s);
            }
            Cmd::Join(s, g, reply) => {
                let _ = reply.send(self.core.join(s, g));
            }
            Cmd::Leave(s, g, reply) => {
                let _ = reply.send(self.core.leave(s, g));
            }
            Cmd::Multicast(session, service, groups, payload, reply) => {
                let r = self.core.multicast(session, service, &groups, payload);
                if r.is_ok() {
                    self.stats.multicasts.fetch_add(1, Ordering::Relaxed);
                }
                let _ = reply.send(r);
            }
            Cmd::Unconfirmed(reply) => {
                let _ = reply.send(self.core.unconfirmed());
            }
        }
    }

    fn link(&mut self, ev: LinkEv) {
        match ev {
            LinkEv::Up {
                epoch,
                member,
                conn,
                writer,
            } => {
                if epoch != self.epoch {
                    conn.close(quinn::VarInt::from_u32(0), b"superseded");
                    return;
                }
                info!(client = %self.hello.name, %member, "attached");
                self.stats.attachments.fetch_add(1, Ordering::Relaxed);
                self.writer = Some(writer);
                self.conn = Some(conn);
                self.member.send_replace(Some(member.clone()));
                self.core.link_up(&member);
            }
            LinkEv::Notice {
                epoch,
                member,
                notice,
            } => {
                if epoch == self.epoch {
                    let broken = self.core.broken_deltas();
                    self.core.handle(&member, *notice);
                    if self.core.broken_deltas() > broken {
                        warn!(%member, "a membership delta did not fit: attaching again");
                    }
                }
            }
            LinkEv::Down { epoch, member } => {
                if epoch != self.epoch {
                    return;
                }
                info!(client = %self.hello.name, %member, "link to member ended");
                self.writer = None;
                if let Some(c) = self.conn.take() {
                    // An established link, not a failed connection attempt.
                    self.stats.links_lost.fetch_add(1, Ordering::Relaxed);
                    c.close(quinn::VarInt::from_u32(0), b"link ended");
                }
                self.member.send_replace(None);
                self.core.link_down(&member);
            }
        }
    }

    fn outputs(&mut self, link_tx: &mpsc::UnboundedSender<LinkEv>) {
        self.stats
            .unconfirmed
            .store(self.core.unconfirmed() as u64, Ordering::Relaxed);
        while let Some(out) = self.core.poll_output() {
            match out {
                ClientOutput::Connect(member) => {
                    self.epoch += 1;
                    self.writer = None;
                    let delay = if self.first {
                        Duration::ZERO
                    } else {
                        self.retry
                    };
                    self.first = false;
                    let Some(addr) = self.addrs.get(&member).copied() else {
                        continue;
                    };
                    tokio::spawn(connect(
                        self.endpoint.clone(),
                        addr,
                        member,
                        self.epoch,
                        self.hello.clone(),
                        delay,
                        link_tx.clone(),
                    ));
                }
                ClientOutput::Send { req, .. } => {
                    if let Some(w) = &self.writer {
                        let _ = w.send(req);
                    }
                }
                ClientOutput::Deliver { session, event } => {
                    if matches!(event, Event::Message { .. }) {
                        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(tx) = self.sessions.get(&session) {
                        let _ = tx.send(event);
                    }
                }
            }
        }
    }
}

/// Connects to `member`, says hello, and runs the link until it ends.
async fn connect(
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    member: NodeId,
    epoch: u64,
    hello: Hello,
    delay: Duration,
    link_tx: mpsc::UnboundedSender<LinkEv>,
) {
    tokio::time::sleep(delay).await;
    let down = LinkEv::Down {
        epoch,
        member: member.clone(),
    };
    let conn = match endpoint.connect(addr, member.as_str()) {
        Ok(connecting) => match tokio::time::timeout(Duration::from_secs(3), connecting).await {
            Ok(Ok(c)) => c,
            other => {
                debug!(%member, "connect failed: {:?}", other.map(|r| r.err()));
                let _ = link_tx.send(down);
                return;
            }
        },
        Err(e) => {
            debug!(%member, error = %e, "connect failed");
            let _ = link_tx.send(down);
            return;
        }
    };
    let (mut send, mut recv) = match conn.open_bi().await {
        Ok(s) => s,
        Err(_) => {
            let _ = link_tx.send(down);
            return;
        }
    };
    let mut out = Vec::new();
    if codec::encode_frame(&hello, &mut out).is_err() || send.write_all(&out).await.is_err() {
        let _ = link_tx.send(down);
        return;
    }
    // The member's first notice says it admitted this client.
    let mut fb = FrameBuffer::new(codec::MAX_FRAME);
    let mut chunk = vec![0u8; 64 * 1024];
    let admitted = loop {
        match fb.next_frame() {
            Ok(Some(range)) => {
                break matches!(
                    codec::decode::<ClientNotice>(fb.body(range)),
                    Ok(ClientNotice::Attached)
                );
            }
            Ok(None) => {}
            Err(_) => break false,
        }
        match tokio::time::timeout(Duration::from_secs(3), recv.read(&mut chunk)).await {
            Ok(Ok(Some(n))) => fb.push(&chunk[..n]),
            _ => break false,
        }
    };
    if !admitted {
        debug!(%member, "not admitted");
        conn.close(quinn::VarInt::from_u32(0), b"not admitted");
        let _ = link_tx.send(down);
        return;
    }
    let (writer, mut requests) = mpsc::unbounded_channel::<ClientRequest>();
    let _ = link_tx.send(LinkEv::Up {
        epoch,
        member: member.clone(),
        conn: conn.clone(),
        writer,
    });
    tokio::spawn(async move {
        while let Some(req) = requests.recv().await {
            let mut out = Vec::new();
            if codec::encode_frame(&req, &mut out).is_err() || send.write_all(&out).await.is_err() {
                break;
            }
        }
    });
    'read: loop {
        loop {
            match fb.next_frame() {
                Ok(Some(range)) => {
                    let Ok(notice) = codec::decode::<ClientNotice>(fb.body(range)) else {
                        break 'read;
                    };
                    let _ = link_tx.send(LinkEv::Notice {
                        epoch,
                        member: member.clone(),
                        notice: Box::new(notice),
                    });
                }
                Ok(None) => break,
                Err(_) => break 'read,
            }
        }
        fb.compact();
        match recv.read(&mut chunk).await {
            Ok(Some(n)) => fb.push(&chunk[..n]),
            _ => break,
        }
    }
    conn.close(quinn::VarInt::from_u32(0), b"link ended");
    let _ = link_tx.send(down);
}

/// The address a client's endpoint binds to when none is given, from its members'
/// addresses: the loopback of their family when every member is on the loopback (nothing
/// on the network can reach the client then), the unspecified address of their family
/// otherwise, and the dual-stack `[::]` when the members are on both families.
fn local_bind(members: impl Iterator<Item = SocketAddr>) -> SocketAddr {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let (mut v4, mut v6, mut loopback) = (false, false, true);
    for a in members {
        v4 |= a.is_ipv4();
        v6 |= a.is_ipv6();
        loopback &= a.ip().is_loopback();
    }
    let ip = match (v4, v6, loopback) {
        (_, false, true) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (_, false, false) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (false, true, true) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        (_, true, _) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

#[cfg(test)]
mod bind_tests {
    use super::local_bind;
    use std::net::SocketAddr;

    fn bind_for(members: &[&str]) -> String {
        local_bind(members.iter().map(|a| a.parse::<SocketAddr>().unwrap())).to_string()
    }

    #[test]
    fn a_client_binds_the_loopback_of_its_members_family_or_everything_it_may_need() {
        assert_eq!(
            bind_for(&["127.0.0.1:7000", "127.0.0.2:7000"]),
            "127.0.0.1:0"
        );
        assert_eq!(bind_for(&["[::1]:7000"]), "[::1]:0");
        assert_eq!(bind_for(&["192.0.2.1:7000", "127.0.0.1:7000"]), "0.0.0.0:0");
        assert_eq!(bind_for(&["[2001:db8::1]:7000"]), "[::]:0");
        assert_eq!(bind_for(&["127.0.0.1:7000", "[::1]:7000"]), "[::]:0");
        assert_eq!(bind_for(&[]), "127.0.0.1:0");
    }
}
