//! DNS exchanges with a name server: queries through hickory-client, and the raw
//! exchange of a TSIG-signed UPDATE.
//!
//! Every call opens its own sockets to the given address, so nothing assumes the server is
//! local (direct mode calls this from the master Controller's host). All reads are bounded:
//! a UDP reply by its buffer, a TCP reply by its 16-bit length prefix.

use hickory_client::client::{Client, ClientHandle};
use hickory_proto::op::Message;
use hickory_proto::rr::{DNSClass, Name, RecordType};
use hickory_proto::runtime::TokioRuntimeProvider;
use hickory_proto::tcp::TcpClientStream;
use hickory_proto::udp::UdpClientStream;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Largest UDP reply we read; larger ones are truncated by the server (TC) anyway.
const UDP_BUF: usize = 4096;

/// Asks `server` for `name`/`rtype` (class IN) and returns the reply message, whatever
/// its rcode. Over UDP first; when the reply is truncated, again over TCP. The error is a
/// human-readable description of the transport failure.
pub async fn query(
    server: SocketAddr,
    name: Name,
    rtype: RecordType,
    timeout: Duration,
) -> Result<Message, String> {
    let reply = query_udp(server, name.clone(), rtype, timeout).await?;
    if !reply.truncated() {
        return Ok(reply);
    }
    query_tcp(server, name, rtype, timeout).await
}

async fn query_udp(
    server: SocketAddr,
    name: Name,
    rtype: RecordType,
    timeout: Duration,
) -> Result<Message, String> {
    let stream = UdpClientStream::builder(server, TokioRuntimeProvider::default())
        .with_timeout(Some(timeout))
        .build();
    let (mut client, bg) = Client::connect(stream)
        .await
        .map_err(|e| format!("udp setup: {e}"))?;
    let bg = tokio::spawn(bg);
    let reply = client.query(name, DNSClass::IN, rtype).await;
    bg.abort();
    reply
        .map(|r| r.into_message())
        .map_err(|e| format!("udp query: {e}"))
}

async fn query_tcp(
    server: SocketAddr,
    name: Name,
    rtype: RecordType,
    timeout: Duration,
) -> Result<Message, String> {
    let (connect, handle) =
        TcpClientStream::new(server, None, Some(timeout), TokioRuntimeProvider::default());
    let (mut client, bg) = Client::with_timeout(connect, handle, timeout, None)
        .await
        .map_err(|e| format!("tcp connect: {e}"))?;
    let bg = tokio::spawn(bg);
    let reply = client.query(name, DNSClass::IN, rtype).await;
    bg.abort();
    reply
        .map(|r| r.into_message())
        .map_err(|e| format!("tcp query: {e}"))
}

/// Requests larger than this go straight over TCP (a datagram this size is not
/// fragmented on any sane path; the DNS flag day 2020 value).
const UDP_REQUEST_MAX: usize = 1232;

/// Sends the already-serialised (and signed) request `bytes` with message id `id` and
/// returns the raw reply: over UDP, then over TCP when the reply has TC set; a request
/// too large for one unfragmented datagram goes over TCP directly.
pub async fn exchange_raw(
    server: SocketAddr,
    id: u16,
    bytes: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    if bytes.len() > UDP_REQUEST_MAX {
        return tokio::time::timeout(timeout, exchange_tcp(server, bytes))
            .await
            .map_err(|_| format!("no reply within {timeout:?} (tcp)"))?;
    }
    let reply = tokio::time::timeout(timeout, exchange_udp(server, id, bytes))
        .await
        .map_err(|_| format!("no reply within {timeout:?} (udp)"))??;
    // TC is bit 1 of the third header octet.
    if reply.get(2).is_some_and(|b| b & 0x02 != 0) {
        return tokio::time::timeout(timeout, exchange_tcp(server, bytes))
            .await
            .map_err(|_| format!("no reply within {timeout:?} (tcp)"))?;
    }
    Ok(reply)
}

async fn exchange_udp(server: SocketAddr, id: u16, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let local: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local)
        .await
        .map_err(|e| format!("udp bind: {e}"))?;
    sock.connect(server)
        .await
        .map_err(|e| format!("udp connect: {e}"))?;
    sock.send(bytes)
        .await
        .map_err(|e| format!("udp send: {e}"))?;
    let mut buf = vec![0u8; UDP_BUF];
    loop {
        let n = sock
            .recv(&mut buf)
            .await
            .map_err(|e| format!("udp recv: {e}"))?;
        // A connected socket only receives from the server; still match the id and the
        // QR bit so a stray datagram is not taken for the reply.
        if n >= 12 && u16::from_be_bytes([buf[0], buf[1]]) == id && buf[2] & 0x80 != 0 {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn exchange_tcp(server: SocketAddr, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let len = u16::try_from(bytes.len()).map_err(|_| "request too large for tcp".to_owned())?;
    let mut s = TcpStream::connect(server)
        .await
        .map_err(|e| format!("tcp connect: {e}"))?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    s.write_all(&framed)
        .await
        .map_err(|e| format!("tcp send: {e}"))?;
    let n = s.read_u16().await.map_err(|e| format!("tcp recv: {e}"))? as usize;
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf)
        .await
        .map_err(|e| format!("tcp recv: {e}"))?;
    Ok(buf)
}
