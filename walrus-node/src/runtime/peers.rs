//! Peer admission after a reload: the group layer's peer list follows the file in force
//! only once every node runs the same file ([`admit_peers`]).

use super::*;

/// Keeps the group layer's peers in step with the configuration in force, once it is
/// safe: every other node the file names that is in the group (a member of `Nodes`) runs
/// the same file (announces the same digest).
///
/// Why wait: the transport admits only configured peers (mutual TLS names them), so a
/// node listed by some members and not by others is connected to part of the group only.
/// The membership protocol then sees a view that is not a clique of the connectivity
/// matrix, and a newcomer's proposals can pull members out of the running view: the view
/// flaps, rounds lose their reports, and areas may move for nothing. Applying the change
/// when every member lists the same nodes makes it one clean view change. Meanwhile the
/// Controller already runs the new topology (the master decides with its own file), a new
/// node waits alone, and a removed one stays until the last file is pushed. A digest that
/// differs for another reason (any edit) also holds the change back; the log says who.
pub async fn admit_peers<L: GroupLayer>(
    layer: Arc<L>,
    me: String,
    mut config: watch::Receiver<Config>,
    mut digests: watch::Receiver<Digests>,
    stop: impl Future<Output = ()>,
) -> Result<(), String> {
    let mut applied = {
        let c = config.borrow_and_update();
        peer_addresses(&c, &me)
    };
    let mut waiting_for: Vec<String> = Vec::new();
    tokio::pin!(stop);
    loop {
        let (target, listed, digest) = {
            let c = config.borrow_and_update();
            (
                peer_addresses(&c, &me),
                c.nodes.keys().cloned().collect::<Vec<_>>(),
                c.digest.clone(),
            )
        };
        if target != applied {
            let d = digests.borrow_and_update().clone();
            // Only members that announced the file this node runs count as having it.
            let others = d
                .members
                .iter()
                .filter(|n| **n != me && listed.contains(*n))
                .map(String::as_str);
            let late = d.disagreeing(others);
            if d.mine != digest {
                // This node's own announcement of the reloaded file is on its way: the
                // digests change again in a moment.
            } else if late.is_empty() {
                match layer.set_peers(&target).await {
                    Ok(()) => {
                        let names: Vec<&str> = target.iter().map(|(n, _)| n.as_str()).collect();
                        tracing::info!(peers = ?names, "group peers changed: every node in the group runs this file");
                        applied = target;
                        waiting_for.clear();
                    }
                    Err(e) => tracing::error!(error = %e, "group peers not changed"),
                }
            } else if late != waiting_for {
                tracing::info!(nodes = ?late, "the group's peers change once these nodes run this file (their config digest differs)");
                waiting_for = late;
            }
        }
        tokio::select! {
            _ = &mut stop => return Ok(()),
            r = config.changed() => if r.is_err() { return Ok(()) },
            r = digests.changed() => if r.is_err() { return Ok(()) },
        }
    }
}
