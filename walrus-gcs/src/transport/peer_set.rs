//! The configured peers of a running transport, and changing them (a reloaded
//! configuration): [`Transport::set_peers`].
//!
//! A peer added is dialed (or awaited) by its own task like the peers given at start; a
//! peer removed has its link closed and its task ends; its connections are refused from
//! then on ("certificate names no configured peer"). Links to peers that stay are not
//! touched.

use super::{certs, peer_task, Message, Peer, Transport, TransportError};
use crate::types::NodeId;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::mpsc;

/// The peers by name (shared by every task of the transport; replaced by
/// [`Transport::set_peers`]).
pub(super) struct PeerTable(RwLock<HashMap<NodeId, Arc<Peer>>>);

impl PeerTable {
    pub(super) fn new(map: HashMap<NodeId, Arc<Peer>>) -> Self {
        Self(RwLock::new(map))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<NodeId, Arc<Peer>>> {
        // A poisoned lock only means a task panicked while holding it; the map inside is
        // whole (every change is one insert or remove).
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn get(&self, name: &NodeId) -> Option<Arc<Peer>> {
        self.read().get(name).cloned()
    }

    pub(super) fn keys(&self) -> Vec<NodeId> {
        self.read().keys().cloned().collect()
    }

    pub(super) fn values(&self) -> Vec<Arc<Peer>> {
        self.read().values().cloned().collect()
    }
}

impl<M: Message> Transport<M> {
    /// Makes `peers` the configured peers: new ones are dialed (or awaited), removed ones
    /// have their link closed and are refused from then on, and one whose address changed
    /// is dialed again at the new address. Links to the others are kept.
    pub fn set_peers(&self, peers: &[(NodeId, SocketAddr)]) -> Result<(), TransportError> {
        let shared = &self.shared;
        for (name, _) in peers {
            if *name == shared.me {
                return Err(TransportError::Config(format!(
                    "{name} lists itself as a peer"
                )));
            }
            certs::check_node_name(name.as_str())
                .map_err(|e| TransportError::Config(e.to_string()))?;
        }
        let mut started = Vec::new();
        {
            let mut map = shared.peers.0.write().unwrap_or_else(|p| p.into_inner());
            let gone: Vec<NodeId> = map
                .iter()
                .filter(|(n, p)| !peers.iter().any(|(m, a)| m == *n && *a == p.addr))
                .map(|(n, _)| n.clone())
                .collect();
            for name in gone {
                if let Some(p) = map.remove(&name) {
                    if let Some(link) = p.link().take() {
                        link.conn.close(
                            super::close_code::SHUTDOWN.into(),
                            b"removed from the configuration",
                        );
                    }
                    tracing::info!(peer = %name, "peer removed from the configuration");
                }
            }
            for (name, addr) in peers {
                if map.contains_key(name) {
                    continue;
                }
                let (acc_tx, acc_rx) = mpsc::channel(2);
                let peer = Peer {
                    addr: *addr,
                    link: Mutex::new(None),
                    accepted: acc_tx,
                };
                map.insert(name.clone(), Arc::new(peer));
                tracing::info!(peer = %name, %addr, "peer added to the configuration");
                started.push((name.clone(), acc_rx));
            }
        }
        for (name, acc_rx) in started {
            shared
                .runtime
                .spawn(peer_task(shared.clone(), name, acc_rx));
        }
        Ok(())
    }
}
