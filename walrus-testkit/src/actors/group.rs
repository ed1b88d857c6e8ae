//! Real walrus-gcs members in the test's process: nodes on loopback that all know each
//! other, with certificates from one CA (the actors' integration tests that need a real
//! group, not the in-process bus).

use std::net::{SocketAddr, UdpSocket};
use walrus_gcs::transport::certs::{CertifiedKey, NodeIdentity};
use walrus_gcs::transport::{Listen, TransportConfig};
use walrus_gcs::{Gcs, GcsConfig, NodeId};

/// Starts a member per name in `names` (LAN profile), each with a certificate `ca` issues
/// for its name, all peers of each other.
pub async fn start_members(ca: &CertifiedKey, names: &[&str]) -> Vec<Gcs> {
    let bound: Vec<(String, UdpSocket, SocketAddr)> = names
        .iter()
        .map(|n| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("a loopback UDP port");
            let a = s.local_addr().expect("a bound socket's address");
            (n.to_string(), s, a)
        })
        .collect();
    let mut out = Vec::new();
    for (name, socket, _) in &bound {
        let transport = TransportConfig {
            me: NodeId::new(name.clone()),
            listen: Listen::Socket(socket.try_clone().expect("a socket clone")),
            peers: bound
                .iter()
                .filter(|(n, _, _)| n != name)
                .map(|(n, _, a)| (NodeId::new(n.clone()), *a))
                .collect(),
            identity: NodeIdentity::issued_by(ca, name).expect("a node certificate"),
            limits: Default::default(),
        };
        out.push(
            Gcs::start(GcsConfig::lan(transport))
                .await
                .expect("a walrus-gcs member on loopback"),
        );
    }
    out
}
