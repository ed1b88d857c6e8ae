//! The partition switch: real link cuts in a real QUIC deployment.
//!
//! [`Transport::cut`] closes the link to a peer and refuses it until
//! [`Transport::restore`]; [`partition`] applies that to whole components, so partition
//! tests, the demo's partition step and operators' drills run over real sockets with real
//! connection loss and reconnection. It is built in every build (no feature): a runtime
//! switch, inert until a caller uses it (`walrus-node run` never does), with no test code
//! behind it. The simulator and the planted bugs are the test-only parts (feature
//! `testing`).

use super::{Message, Transport};

/// Splits the nodes of `transports` into `components` (lists of node names): links
/// between nodes of different components are cut at both ends, links inside a component
/// are restored. A node listed in no component is cut from everyone.
pub fn partition<M: Message>(transports: &[&Transport<M>], components: &[&[&str]]) {
    let component_of = |name: &str| components.iter().position(|c| c.contains(&name));
    for t in transports {
        let mine = component_of(t.me().as_str());
        for other in t.shared.peers.keys().iter() {
            let theirs = component_of(other.as_str());
            if mine.is_some() && mine == theirs {
                t.restore(other);
            } else {
                t.cut(other);
            }
        }
    }
}
