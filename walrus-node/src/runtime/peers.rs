//! Peer admission after a reload: the group layer's peer list follows the file in force
//! only once every node of this node's view runs the same file ([`admit_peers`]; the rule
//! is [`admission`]'s).

use super::*;
use walrus_gcs::ViewChange;

/// What [`admit_peers`] does with a reloaded peer set, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Apply it: every other node of the view (and of `Nodes`) that the file lists
    /// announced this file.
    Apply,
    /// This node's own announcement of the reloaded file is on its way: the digests
    /// change again in a moment.
    OwnDigestPending,
    /// This node is in no view yet (starting): it cannot tell who must agree.
    NoView,
    /// This node is alone in its view while the peers in force name other members: it is
    /// cut off, or up before the others, and nobody can agree with it.
    Alone,
    /// These nodes of the view run another file (or have not announced one yet).
    Late(Vec<String>),
}

/// Whether node `me`, running the file of digest `digest` that lists `listed`, may change
/// its peers from `applied` (the peers in force) now, judged against `view` (the view it
/// is in) and `digests` (what `Nodes` announced).
///
/// Every other node of the view that the file lists must have announced the same digest,
/// and so must every such node heard on `Nodes` (the view should hold them all; the union
/// is the safe side). A node the file no longer lists is not asked (it is being removed).
/// With no view, or alone in a view while the peers in force name others, there is no
/// one to judge against: [`Admission::NoView`], [`Admission::Alone`] (the old peers are
/// kept). A minority side of a partition is judged by its own view: the other side learns
/// the change when it runs the same file.
pub fn admission(
    me: &str,
    listed: &[String],
    view: Option<&ViewChange>,
    digests: &Digests,
    digest: &str,
    applied: &[(NodeId, SocketAddr)],
) -> Admission {
    if digests.mine != digest {
        return Admission::OwnDigestPending;
    }
    let Some(view) = view else {
        return Admission::NoView;
    };
    let others: BTreeSet<&str> = view
        .members
        .iter()
        .map(|m| m.id.as_str())
        .chain(digests.members.iter().map(String::as_str))
        .filter(|n| *n != me && listed.iter().any(|l| l == n))
        .collect();
    let alone = view.members.iter().all(|m| m.id.as_str() == me);
    if alone && !applied.is_empty() {
        return Admission::Alone;
    }
    let late = digests.disagreeing(others);
    if late.is_empty() {
        Admission::Apply
    } else {
        Admission::Late(late)
    }
}

/// Keeps the group layer's peers in step with the configuration in force, once it is
/// safe ([`admission`]): every other node of this node's view that the file names runs
/// the same file (announces the same digest on `Nodes`).
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
/// Judged against the view, not only against the `Nodes` members heard so far: a node
/// early in its start, or cut off, has heard too few to judge, and waits (logging why)
/// until it shares a view.
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
    let mut view = layer.watch_view();
    // The last reason for waiting that was logged (logged once per change).
    let mut logged: Option<Admission> = None;
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
            let v = view.borrow_and_update().clone();
            let verdict = admission(&me, &listed, v.as_ref(), &d, &digest, &applied);
            match &verdict {
                Admission::Apply => match layer.set_peers(&target).await {
                    Ok(()) => {
                        let names: Vec<&str> = target.iter().map(|(n, _)| n.as_str()).collect();
                        tracing::info!(peers = ?names, "group peers changed: every node in the group runs this file");
                        applied = target;
                    }
                    Err(e) => tracing::error!(error = %e, "group peers not changed"),
                },
                Admission::OwnDigestPending => {}
                waiting if logged.as_ref() == Some(waiting) => {}
                Admission::NoView => tracing::info!(
                    "the group's peers are not changed yet: this node is in no view, so it \
                     cannot tell which nodes must run this file; the running peers are kept"
                ),
                Admission::Alone => tracing::info!(
                    "the group's peers are not changed yet: this node is alone in its view \
                     (cut off, or up before the others), so no node can agree; the running \
                     peers are kept until it shares a view"
                ),
                Admission::Late(nodes) => {
                    tracing::info!(nodes = ?nodes, "the group's peers change once these nodes run this file (their config digest differs)")
                }
            }
            logged = match verdict {
                Admission::Apply => None,
                Admission::OwnDigestPending => logged,
                waiting => Some(waiting),
            };
        }
        tokio::select! {
            _ = &mut stop => return Ok(()),
            r = config.changed() => if r.is_err() { return Ok(()) },
            r = digests.changed() => if r.is_err() { return Ok(()) },
            r = view.changed() => if r.is_err() { return Ok(()) },
        }
    }
}
