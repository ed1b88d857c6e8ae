//! A delay relay on loopback: a "distance" between a resolver and a name server, for
//! tests that need one area's server to be nearer than another without network
//! namespaces or `tc netem` (this kernel has none).
//!
//! UDP and TCP on one loopback port. Each datagram, and each chunk of a TCP stream, is held
//! `one_way` on the way to the server and `one_way` on the way back. TCP is terminated
//! here, as in the lab's relay (`lab/src/relay.rs`): the client's connect completes at
//! once and the connection to the server opens after `one_way`, so a TCP query reaches
//! the server about one round trip after the client decided to send it. The server sees
//! the relay's 127.0.0.1 as the source.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;

/// A running relay; every task stops when it is dropped.
pub struct DelayRelay {
    addr: SocketAddr,
    _tasks: JoinSet<()>,
}

impl DelayRelay {
    /// Relays a free loopback port (UDP and TCP) to `backend`, each way held `one_way`.
    pub async fn start(backend: SocketAddr, one_way: Duration) -> Self {
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.expect("a UDP port");
            let addr = udp.local_addr().expect("its address");
            if let Ok(tcp) = TcpListener::bind(addr).await {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().expect("its address");
        let mut tasks = JoinSet::new();
        tasks.spawn(udp_relay(Arc::new(udp), backend, one_way));
        tasks.spawn(tcp_relay(tcp, backend, one_way));
        Self {
            addr,
            _tasks: tasks,
        }
    }

    /// Where clients send (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// One upstream socket per client address; replies pumped back by a task of the flow.
async fn udp_relay(listen: Arc<UdpSocket>, backend: SocketAddr, one_way: Duration) {
    let mut flows: std::collections::HashMap<SocketAddr, Arc<UdpSocket>> = Default::default();
    let mut pumps = JoinSet::new();
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((n, client)) = listen.recv_from(&mut buf).await else {
            continue;
        };
        let up = match flows.get(&client) {
            Some(s) => s.clone(),
            None => {
                let Ok(s) = UdpSocket::bind("127.0.0.1:0").await else {
                    continue;
                };
                if s.connect(backend).await.is_err() {
                    continue;
                }
                let s = Arc::new(s);
                flows.insert(client, s.clone());
                let (from, to) = (s.clone(), listen.clone());
                pumps.spawn(async move {
                    let mut buf = vec![0u8; 65535];
                    while let Ok(n) = from.recv(&mut buf).await {
                        let (data, to) = (buf[..n].to_vec(), to.clone());
                        tokio::spawn(async move {
                            tokio::time::sleep(one_way).await;
                            let _ = to.send_to(&data, client).await;
                        });
                    }
                });
                s
            }
        };
        let data = buf[..n].to_vec();
        tokio::spawn(async move {
            tokio::time::sleep(one_way).await;
            let _ = up.send(&data).await;
        });
    }
}

async fn tcp_relay(listener: TcpListener, backend: SocketAddr, one_way: Duration) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        conns.spawn(async move {
            tokio::time::sleep(one_way).await;
            let Ok(server) = TcpStream::connect(backend).await else {
                return;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let up = tokio::spawn(held(cr, sw, one_way));
            held(sr, cw, one_way).await;
            up.abort();
        });
        while conns.try_join_next().is_some() {}
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read.
async fn held(
    mut from: impl AsyncReadExt + Unpin,
    to: impl AsyncWriteExt + Unpin + Send + 'static,
    delay: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        let mut to = to;
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if chunk.is_empty() || to.write_all(&chunk).await.is_err() {
                let _ = to.shutdown().await;
                return;
            }
        }
    });
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        let due = tokio::time::Instant::now() + delay;
        if tx.send((due, buf[..n].to_vec())).is_err() || n == 0 {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}
