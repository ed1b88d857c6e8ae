//! The client link over QUIC, member side: a listener of its own (ALPN
//! [`CLIENT_ALPN`], mutual TLS with the cluster CA) that admits only client
//! certificates, reads [`ClientRequest`]s and writes [`ClientNotice`]s, and the
//! driver's part ([`ClientLinks`]): the [`ClientHost`] and one bounded notice queue per
//! attached client.
//!
//! A connection carries one bidirectional stream: the client writes a [`Hello`] frame
//! (its name and incarnation) and then request frames; the member writes notice frames.
//! Frames are the transport's (version byte, `u32` length checked against
//! [`codec::MAX_FRAME`] before allocating, bincode body). The member admits the
//! connection only if the name starts with [`CLIENT_PREFIX`] and the certificate (from
//! the cluster CA, checked by rustls) names it; a member's certificate never names such
//! a name (members refuse to be configured with one), so a client cannot be a member
//! and a member link is never opened with a client certificate (the member transport
//! admits only configured member names).

use super::{ClientHost, ClientNotice, ClientRequest};
use crate::codec;
use crate::event::Output;
use crate::node::Node;
use crate::transport::frames::FrameBuffer;
use crate::transport::{tls, Limits, NodeIdentity};
use crate::types::{Incarnation, NodeId};
use quinn::crypto::rustls::QuicServerConfig;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info};

/// ALPN protocol name of the client link (version 1).
pub const CLIENT_ALPN: &[u8] = b"walrus-gcs-client/1";

/// Every client's name (and certificate SAN) starts with this; no member's does.
pub const CLIENT_PREFIX: &str = "client.";

/// Notices queued to one client at most; a client that reads slower is detached.
pub const CLIENT_QUEUE: usize = 16 * 1024;

/// How long a new connection may take to say who it is.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `name` is a client's name.
pub fn is_client_name(name: &str) -> bool {
    name.starts_with(CLIENT_PREFIX) && name.len() > CLIENT_PREFIX.len()
}

/// The first frame of a client link: who the client is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Its name (must be what its certificate names).
    pub name: NodeId,
    /// Its incarnation.
    pub incarnation: Incarnation,
}

/// What the listener tells the driver.
#[derive(Debug)]
pub(crate) enum ClientIn {
    /// A client proved its name; `notices` is its link's queue.
    Attached {
        hello: Hello,
        conn: u64,
        notices: mpsc::Sender<ClientNotice>,
    },
    /// A request of connection `conn`.
    Request {
        name: NodeId,
        conn: u64,
        req: ClientRequest,
    },
    /// Connection `conn` ended.
    Gone { name: NodeId, conn: u64 },
}

/// The quinn server configuration of the client listener.
fn server_config(identity: &NodeIdentity, limits: &Limits) -> Result<quinn::ServerConfig, String> {
    let tls = tls::rustls_server_config(identity, CLIENT_ALPN).map_err(|e| e.to_string())?;
    let quic = QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
    server
        .transport_config(Arc::new(tls::transport_config(&limits.client_link())))
        .migration(false);
    Ok(server)
}

/// Starts the client listener on `listen` with the member's transport `limits` (see
/// [`Limits::client_link`]); returns the endpoint (close it to stop).
pub(crate) fn listen(
    identity: &NodeIdentity,
    listen: SocketAddr,
    limits: &Limits,
    to_driver: mpsc::Sender<ClientIn>,
) -> Result<quinn::Endpoint, String> {
    let endpoint = quinn::Endpoint::server(server_config(identity, limits)?, listen)
        .map_err(|e| e.to_string())?;
    let accepting = endpoint.clone();
    tokio::spawn(async move {
        let next = Arc::new(AtomicU64::new(1));
        while let Some(incoming) = accepting.accept().await {
            let to_driver = to_driver.clone();
            let conn_id = next.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                if let Err(e) = serve(incoming, conn_id, to_driver).await {
                    debug!(error = %e, "client link ended");
                }
            });
        }
    });
    Ok(endpoint)
}

/// Reads the next frame body of `stream` into `fb`; `None` at the end of the stream.
async fn next_frame<T: serde::de::DeserializeOwned>(
    stream: &mut quinn::RecvStream,
    fb: &mut FrameBuffer,
) -> Result<Option<T>, String> {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if let Some(range) = fb.next_frame().map_err(|e| e.to_string())? {
            let v = codec::decode(fb.body(range)).map_err(|e| e.to_string());
            fb.compact();
            return v.map(Some);
        }
        match stream.read(&mut chunk).await.map_err(|e| e.to_string())? {
            Some(n) => fb.push(&chunk[..n]),
            None => return Ok(None),
        }
    }
}

/// Writes `value` as one frame.
async fn write_frame<T: Serialize>(
    stream: &mut quinn::SendStream,
    value: &T,
) -> Result<(), String> {
    let mut out = Vec::new();
    codec::encode_frame(value, &mut out).map_err(|e| e.to_string())?;
    stream.write_all(&out).await.map_err(|e| e.to_string())
}

/// One client connection: admit, then read requests and write notices until it ends.
async fn serve(
    incoming: quinn::Incoming,
    conn_id: u64,
    to_driver: mpsc::Sender<ClientIn>,
) -> Result<(), String> {
    let conn = incoming.await.map_err(|e| e.to_string())?;
    let chain = tls::peer_chain(&conn);
    let (mut send, mut recv) = tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi())
        .await
        .map_err(|_| "no stream in time".to_owned())?
        .map_err(|e| e.to_string())?;
    let mut fb = FrameBuffer::new(codec::MAX_FRAME);
    let hello: Hello = tokio::time::timeout(HELLO_TIMEOUT, next_frame(&mut recv, &mut fb))
        .await
        .map_err(|_| "no hello in time".to_owned())??
        .ok_or("closed before its hello")?;
    let name = hello.name.clone();
    if !is_client_name(name.as_str()) || tls::peer_name(&chain, [name.as_str()]).is_none() {
        conn.close(
            quinn::VarInt::from_u32(1),
            b"not a client certificate for that name",
        );
        return Err(format!(
            "refused {name}: not a client certificate for that name"
        ));
    }
    let (notices, mut rx) = mpsc::channel(CLIENT_QUEUE);
    to_driver
        .send(ClientIn::Attached {
            hello,
            conn: conn_id,
            notices,
        })
        .await
        .map_err(|_| "driver stopped")?;
    let writer_conn = conn.clone();
    tokio::spawn(async move {
        while let Some(n) = rx.recv().await {
            if write_frame(&mut send, &n).await.is_err() {
                break;
            }
        }
        // The driver dropped the queue: detached (refused, overflow, stopped).
        writer_conn.close(quinn::VarInt::from_u32(2), b"detached");
    });
    let result = loop {
        match next_frame::<ClientRequest>(&mut recv, &mut fb).await {
            Ok(Some(req)) => {
                let msg = ClientIn::Request {
                    name: name.clone(),
                    conn: conn_id,
                    req,
                };
                if to_driver.send(msg).await.is_err() {
                    break Ok(());
                }
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    conn.close(quinn::VarInt::from_u32(0), b"bye");
    let _ = to_driver
        .send(ClientIn::Gone {
            name,
            conn: conn_id,
        })
        .await;
    result
}

/// The driver's part of its clients: the host and each attached client's queue.
#[derive(Debug, Default)]
pub(crate) struct ClientLinks {
    host: ClientHost,
    links: HashMap<NodeId, (u64, mpsc::Sender<ClientNotice>)>,
    /// The attached clients' names, sorted, for [`crate::Gcs::watch_clients`].
    attached: watch::Sender<Vec<NodeId>>,
}

impl ClientLinks {
    /// Takes one input of the listener.
    pub(crate) fn input(&mut self, node: &mut Node, now: Instant, input: ClientIn) {
        match input {
            ClientIn::Attached {
                hello,
                conn,
                notices,
            } => match self.host.attach(node, now, &hello.name, hello.incarnation) {
                Ok(()) => {
                    info!(client = %hello.name, incarnation = %hello.incarnation, "client attached");
                    self.links.insert(hello.name, (conn, notices));
                    self.publish();
                }
                Err(e) => info!(client = %hello.name, error = %e, "client refused"),
            },
            ClientIn::Request { name, conn, req } => {
                if self.links.get(&name).map(|l| l.0) != Some(conn) {
                    return;
                }
                if let Err(e) = self.host.request(node, now, &name, req) {
                    info!(client = %name, error = %e, "client refused");
                    self.detach(node, now, &name);
                }
            }
            ClientIn::Gone { name, conn } => {
                if self.links.get(&name).map(|l| l.0) == Some(conn) {
                    info!(client = %name, "client link ended");
                    self.detach(node, now, &name);
                }
            }
        }
    }

    fn detach(&mut self, node: &mut Node, now: Instant, name: &NodeId) {
        self.links.remove(name);
        self.host.detach(node, now, name);
        self.publish();
    }

    /// Who is attached now, for [`crate::Gcs::watch_clients`].
    fn publish(&self) {
        let mut names: Vec<NodeId> = self.links.keys().cloned().collect();
        names.sort();
        self.attached.send_if_modified(|old| {
            let changed = *old != names;
            *old = names;
            changed
        });
    }

    /// Watches the attached clients' names.
    pub(crate) fn watch(&self) -> watch::Receiver<Vec<NodeId>> {
        self.attached.subscribe()
    }

    /// Requests waiting for the node's send window go in (call before draining outputs).
    pub(crate) fn pump(&mut self, node: &mut Node, now: Instant) {
        for (name, e) in self.host.pump(node, now) {
            info!(client = %name, error = %e, "client refused");
            self.detach(node, now, &name);
        }
    }

    /// One output of the node: `None` if it was a client's.
    pub(crate) fn output(&mut self, node: &mut Node, out: Output) -> Option<Output> {
        match &out {
            Output::Deliver { session, .. } if self.host.hosts(*session) => {
                self.host.on_output(node, out)
            }
            Output::Confirmed { .. } => self.host.on_output(node, out),
            _ => Some(out),
        }
    }

    /// Sends the notices of this turn; a client whose queue is full is detached.
    pub(crate) fn send_notices(&mut self, node: &mut Node, now: Instant) {
        let mut slow = Vec::new();
        while let Some((name, notice)) = self.host.poll_notice() {
            if let Some((_, q)) = self.links.get(&name) {
                if q.try_send(notice).is_err() {
                    slow.push(name);
                }
            }
        }
        for name in slow {
            info!(client = %name, "client too slow: detached");
            self.detach(node, now, &name);
        }
    }
}
