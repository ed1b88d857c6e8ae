//! Changing the configured peers of a running [`Node`] (a reloaded configuration).

use super::Node;
use crate::types::NodeId;

impl Node {
    /// Makes `peers` the configured peers (this node itself is ignored). A new peer
    /// starts unheard, like one given at start: it enters a view once it is heard and
    /// mutually connected with the members. A removed peer is forgotten at once: it no
    /// longer counts as alive, so the next view change leaves it out. The node keeps its
    /// view, its sessions and their groups meanwhile.
    pub fn set_peers(&mut self, peers: &[NodeId]) {
        self.peers.retain(|id, _| peers.contains(id));
        for p in peers.iter().filter(|p| **p != self.me.id) {
            self.peers.entry(p.clone()).or_default();
        }
    }
}
