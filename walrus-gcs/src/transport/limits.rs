//! [`Limits`]: every bound of the transport (queues, frames, QUIC windows and timeouts,
//! socket buffers), with the LAN and WAN profiles, and the sizing of the UDP socket.

use std::net::UdpSocket;
use std::time::Duration;

use tracing::info;

use crate::codec;

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
    /// QUIC idle timeout of a client link (`crate::tier`): how soon a client finds its
    /// member dead and attaches to the next one, and a member finds a client gone.
    /// Members detect each other by heartbeats (`CoreConfig::failure_timeout`); a client
    /// has only this. Default 1 s (LAN), 10 s (WAN). Shorter makes fail-over faster but
    /// detaches every client of a member whose process stalls that long (each comes
    /// back as a leave and a join of its sessions).
    pub client_idle_timeout: Duration,
    /// QUIC keep-alive interval of a client link: four per `client_idle_timeout`, so
    /// three lost in a row are not a dead link. Default 250 ms (LAN), 2.5 s (WAN).
    pub client_keep_alive: Duration,
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
            client_idle_timeout: Duration::from_secs(1),
            client_keep_alive: Duration::from_millis(250),
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
    /// The limits of a client link (`crate::tier`, both ends): these, with the client
    /// link's idle timeout and keep-alive.
    pub fn client_link(&self) -> Limits {
        Limits {
            idle_timeout: self.client_idle_timeout,
            keep_alive: self.client_keep_alive,
            ..self.clone()
        }
    }

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
            client_idle_timeout: lan.client_idle_timeout * 10,
            client_keep_alive: lan.client_keep_alive * 10,
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
pub(super) fn size_udp_buffers(socket: &UdpSocket, bytes: usize) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A client link finds a dead member sooner than the members' own links time out
    /// (those rely on heartbeats), and the WAN profile stretches it like every timeout.
    #[test]
    fn a_client_link_takes_the_client_timeouts_of_its_profile() {
        for (profile, idle) in [
            (Limits::lan(), Duration::from_secs(1)),
            (Limits::wan(), Duration::from_secs(10)),
        ] {
            let link = profile.client_link();
            assert_eq!(link.idle_timeout, idle);
            assert_eq!(link.keep_alive * 4, idle);
            assert!(link.idle_timeout < profile.idle_timeout);
            assert_eq!(link.peer_queue, profile.peer_queue);
        }
    }
}
