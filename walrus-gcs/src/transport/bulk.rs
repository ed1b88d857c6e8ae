//! Point-to-point byte streams over TCP with the cluster's mutual TLS, for bulk transfers.
//!
//! The QUIC transport's streams ([`super::Transport::open_stream`]) need UDP. On the 2-core
//! test machine one QUIC stream between two nodes moves 920–1,120 MB/s (since the path MTU
//! may reach [`super::MTU_UPPER_BOUND_MAX`]; 410–680 MB/s at 1,452 bytes), TLS over TCP
//! 1.0–1.2 GB/s and a plain TCP socket 1.8–2.4 GB/s
//! (`cargo run --release -p walrus-gcs --example transport_bench -- --streams 1024`).
//! [`TcpStreams`] offers the same kind of stream to a named peer over kernel TCP, for
//! paths that drop or throttle UDP, with the same certificates and the same rule for who
//! is let in:
//! - **Where.** Each node listens on TCP at its configured address, the same port number
//!   as its QUIC endpoint (which is UDP); a peer is dialed at its configured address.
//! - **Who is let in.** TLS 1.3 with the cluster CA on both sides
//!   ([`super::tls::rustls_server_config`]), ALPN [`BULK_ALPN`]; the client checks that
//!   the server's certificate names the peer it dialed, the server that the client's names
//!   a configured peer. Anything else is dropped and logged.
//! - **Bounded.** At most [`super::Limits::max_incoming`] handshakes at once, each within
//!   [`super::Limits::handshake_timeout`]; at most [`super::Limits::stream_queue`]
//!   accepted streams wait for [`TcpStreams::accept`], more are closed.
//!
//! What it does not own: what flows on a stream (the Replicator's protocol frames it).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};
use tracing::{debug, warn};

use super::certs::NodeIdentity;
use super::tls::{peer_name, rustls_client_config, rustls_server_config, TlsError};
use super::Limits;
use crate::NodeId;

/// ALPN protocol name of the bulk streams (version 1).
pub const BULK_ALPN: &[u8] = b"walrus-bulk/1";

/// One TLS-over-TCP stream to or from a peer (read and write; split it with
/// `tokio::io::split`).
pub type BulkStream = TlsStream<TcpStream>;

/// Why a bulk stream could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BulkError {
    /// The TLS configuration could not be built from the node's identity.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// The TCP listener could not be bound.
    #[error("bind TCP {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The peer is not a configured node.
    #[error("{peer} is not a configured peer")]
    UnknownPeer {
        /// The peer.
        peer: NodeId,
    },
    /// Dialing or the handshake failed.
    #[error("connect to {peer} at {addr}: {detail}")]
    Connect {
        /// The peer.
        peer: NodeId,
        /// Its address.
        addr: SocketAddr,
        /// What went wrong.
        detail: String,
    },
}

/// This node's bulk streams: a TCP listener that hands authenticated streams to
/// [`TcpStreams::accept`], and a dialer for [`TcpStreams::open`].
pub struct TcpStreams {
    peers: HashMap<NodeId, SocketAddr>,
    connector: TlsConnector,
    incoming: tokio::sync::Mutex<mpsc::Receiver<(NodeId, BulkStream)>>,
    accept_task: tokio::task::JoinHandle<()>,
    local_addr: SocketAddr,
    timeout: Duration,
}

impl std::fmt::Debug for TcpStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpStreams")
            .field("local_addr", &self.local_addr)
            .field("peers", &self.peers)
            .finish_non_exhaustive()
    }
}

impl Drop for TcpStreams {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl TcpStreams {
    /// Listens on TCP `addr` (port 0 picks one) for `peers`, authenticating with
    /// `identity`. Must run inside a tokio runtime.
    pub async fn bind(
        addr: SocketAddr,
        peers: Vec<(NodeId, SocketAddr)>,
        identity: &NodeIdentity,
        limits: &Limits,
    ) -> Result<Self, BulkError> {
        let acceptor = TlsAcceptor::from(rustls_server_config(identity, BULK_ALPN)?);
        let connector = TlsConnector::from(rustls_client_config(identity, BULK_ALPN)?);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| BulkError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| BulkError::Bind { addr, source })?;
        let peers: HashMap<NodeId, SocketAddr> = peers.into_iter().collect();
        let (tx, rx) = mpsc::channel(limits.stream_queue.max(1));
        let names: Arc<Vec<String>> = Arc::new(peers.keys().map(|p| p.0.to_string()).collect());
        let accept_task = tokio::spawn(accept_loop(
            listener,
            acceptor,
            names,
            tx,
            Arc::new(Semaphore::new(limits.max_incoming.max(1))),
            limits.handshake_timeout,
        ));
        Ok(Self {
            peers,
            connector,
            incoming: tokio::sync::Mutex::new(rx),
            accept_task,
            local_addr,
            timeout: limits.handshake_timeout,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Dials `peer` and completes the TLS handshake (which checks that the server's
    /// certificate names `peer`).
    pub async fn open(&self, peer: &NodeId) -> Result<BulkStream, BulkError> {
        let addr = *self
            .peers
            .get(peer)
            .ok_or_else(|| BulkError::UnknownPeer { peer: peer.clone() })?;
        let fail = |detail: String| BulkError::Connect {
            peer: peer.clone(),
            addr,
            detail,
        };
        let name = ServerName::try_from(peer.0.to_string()).map_err(|e| fail(e.to_string()))?;
        let dial = async {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            self.connector.connect(name, tcp).await
        };
        match tokio::time::timeout(self.timeout, dial).await {
            Ok(Ok(s)) => Ok(TlsStream::Client(s)),
            Ok(Err(e)) => Err(fail(e.to_string())),
            Err(_) => Err(fail(format!("no handshake within {:?}", self.timeout))),
        }
    }

    /// The next stream a configured peer opened, with its name as its certificate says;
    /// `None` once the listener has stopped.
    pub async fn accept(&self) -> Option<(NodeId, BulkStream)> {
        self.incoming.lock().await.recv().await
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    names: Arc<Vec<String>>,
    tx: mpsc::Sender<(NodeId, BulkStream)>,
    handshakes: Arc<Semaphore>,
    timeout: Duration,
) {
    loop {
        let (tcp, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Such as EMFILE: wait a little rather than spin.
                warn!(error = %e, "bulk: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            warn!(%from, "bulk: too many handshakes at once; connection closed");
            continue;
        };
        let (acceptor, names, tx) = (acceptor.clone(), names.clone(), tx.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            let stream = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    warn!(%from, error = %e, "bulk: TLS handshake failed");
                    return;
                }
                Err(_) => {
                    warn!(%from, "bulk: no TLS handshake within {timeout:?}");
                    return;
                }
            };
            let chain = stream.get_ref().1.peer_certificates().unwrap_or_default();
            let Some(peer) = peer_name(chain, names.iter().map(String::as_str)) else {
                warn!(%from, "bulk: the client's certificate names no configured peer; closed");
                return;
            };
            let peer = NodeId::new(peer);
            debug!(%from, peer = %peer.0, "bulk: stream accepted");
            if tx.try_send((peer, TlsStream::Server(stream))).is_err() {
                warn!(%from, "bulk: too many streams waiting to be accepted; closed");
            }
        });
    }
}
