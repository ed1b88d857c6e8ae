//! Which node runs which configuration file: every node announces the digest of its file
//! on the `Nodes` group, and keeps the digest each member announced ([`DigestTable`],
//! pure; [`run`], its shell).
//!
//! ```text
//!  own session joins `Nodes` ─▶ Membership ─ newcomer (or own join)? ─▶ multicast own digest
//!  reload (digest watch)     ─▶ multicast own digest
//!  ConfigDigest from a member ─▶ table[node] = digest;  member left ─▶ entry dropped
//!  table ─▶ watch (status page, metrics, the runtime's peer admission)
//! ```
//!
//! Why a group of its own rather than a field in the Reporter's reports or a message on
//! `Controllers`: every node must announce and every node should know, whatever its
//! roles. Reports are sent only by Reporters and heard only by Controllers, so a
//! Controller-only or Director-only node would never announce, and only Controllers would
//! know; a session that joins `Controllers` takes part in the master election (its first
//! member is master), so a node cannot listen there without a Controller. One session per
//! node on `Nodes` costs one group record per node and, per node joining, one small
//! message per member: each member re-announces when a newcomer appears, so the newcomer
//! learns every digest at once and nothing is sent periodically. A member that leaves (or
//! whose node leaves the view) drops out of the membership and so out of the table. The
//! digest is announced Agreed, so every member sees the announcements in the same order.

use crate::group::{GroupLayer, GroupSession};
use crate::messages::{self, WalrusMessage, NODES};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use tokio::sync::watch;
use walrus_gcs::{Event, Member, NodeId, Service};

/// Each node's digest as this node knows it (this node's own included).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Digests {
    /// This node's own digest.
    pub mine: String,
    /// Node name → the digest it announced last (members of `Nodes` only).
    pub nodes: BTreeMap<String, String>,
    /// The nodes with a session in `Nodes` now (some may not have announced yet).
    pub members: BTreeSet<String>,
}

impl Digests {
    /// The members whose digest is not `self.mine` (or who have not announced one yet),
    /// among `members`.
    pub fn disagreeing<'a>(&self, members: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        members
            .into_iter()
            .filter(|m| self.nodes.get(*m) != Some(&self.mine))
            .map(str::to_owned)
            .collect()
    }
}

/// The rules: who is a member, what they announced, when to announce.
#[derive(Debug, Clone)]
pub struct DigestTable {
    me: NodeId,
    members: BTreeSet<String>,
    digests: Digests,
}

impl DigestTable {
    /// Node `me` running a file of digest `mine`.
    pub fn new(me: &NodeId, mine: &str) -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(me.as_str().to_owned(), mine.to_owned());
        Self {
            me: me.clone(),
            members: BTreeSet::new(),
            digests: Digests {
                mine: mine.to_owned(),
                nodes,
                members: BTreeSet::new(),
            },
        }
    }

    /// The `Nodes` membership changed. Returns true when this node must announce its
    /// digest: a node appeared that was not a member before (this node's own join
    /// included), and cannot know it yet.
    pub fn handle_membership(&mut self, members: &[Member]) -> bool {
        let now: BTreeSet<String> = members.iter().map(|m| m.node.as_str().to_owned()).collect();
        let newcomer = now.iter().any(|n| !self.members.contains(n));
        let me = self.me.as_str();
        self.digests
            .nodes
            .retain(|n, _| n == me || now.contains(n.as_str()));
        self.digests.members = now.clone();
        self.members = now;
        newcomer
    }

    /// Node `node` announced `digest`.
    pub fn handle_digest(&mut self, node: &NodeId, digest: String) {
        if *node == self.me || self.members.contains(node.as_str()) {
            self.digests.nodes.insert(node.as_str().to_owned(), digest);
        }
    }

    /// This node now runs a file of digest `mine` (a reload). Returns true when it
    /// changed (announce it).
    pub fn set_mine(&mut self, mine: &str) -> bool {
        if self.digests.mine == mine {
            return false;
        }
        self.digests.mine = mine.to_owned();
        self.digests
            .nodes
            .insert(self.me.as_str().to_owned(), mine.to_owned());
        true
    }

    /// What is known now.
    pub fn digests(&self) -> &Digests {
        &self.digests
    }
}

/// Runs node `me`'s announcements over `layer` until `stop` completes: one session joined
/// to `Nodes`, its own digest from `mine` (changed by a reload), the table published on
/// `out`.
pub async fn run<L: GroupLayer>(
    layer: Arc<L>,
    me: NodeId,
    mut mine: watch::Receiver<String>,
    out: watch::Sender<Digests>,
    stop: impl Future<Output = ()>,
) -> Result<(), String> {
    let mut table = DigestTable::new(&me, &mine.borrow_and_update());
    out.send_replace(table.digests().clone());
    let mut session = layer
        .open_session()
        .await
        .map_err(|e| format!("digests: opening a session: {e}"))?;
    session
        .join(messages::group(NODES))
        .await
        .map_err(|e| format!("digests: joining {NODES}: {e}"))?;
    tokio::pin!(stop);
    loop {
        let announce = tokio::select! {
            _ = &mut stop => break,
            ev = session.recv() => match ev {
                None => return Err("digests: the group session ended".into()),
                Some(Event::Membership { group, members, .. }) if group.as_str() == NODES => {
                    table.handle_membership(&members)
                }
                Some(Event::Message { sender, payload, .. }) => {
                    match WalrusMessage::decode(&payload) {
                        Ok(WalrusMessage::ConfigDigest { digest }) => {
                            table.handle_digest(&sender.0, digest);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(from = %sender.0, error = %e, "malformed message on Nodes ignored"),
                    }
                    false
                }
                Some(_) => false,
            },
            r = mine.changed() => match r {
                Ok(()) => {
                    let d = mine.borrow_and_update().clone();
                    table.set_mine(&d)
                }
                Err(_) => break,
            },
        };
        out.send_replace(table.digests().clone());
        if announce {
            let msg = WalrusMessage::ConfigDigest {
                digest: table.digests().mine.clone(),
            };
            match msg.encode() {
                Ok(p) => {
                    if let Err(e) = session
                        .multicast(Service::Agreed, &[messages::group(NODES)], p)
                        .await
                    {
                        tracing::warn!(error = %e, "config digest not announced");
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot encode the config digest"),
            }
        }
    }
    let _ = session.leave(messages::group(NODES)).await;
    session.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use walrus_gcs::SessionId;

    fn member(node: &str) -> Member {
        Member {
            node: NodeId::new(node),
            incarnation: walrus_gcs::Incarnation(1),
            session: SessionId(1),
        }
    }

    #[test]
    fn newcomers_trigger_an_announcement_and_leavers_drop_out() {
        let mut t = DigestTable::new(&NodeId::new("a"), "d1");
        assert!(t.handle_membership(&[member("a")]), "own join announces");
        assert!(t.handle_membership(&[member("a"), member("b")]));
        t.handle_digest(&NodeId::new("b"), "d2".into());
        t.handle_digest(&NodeId::new("stranger"), "d9".into());
        assert_eq!(
            t.digests().nodes,
            [("a".into(), "d1".into()), ("b".into(), "d2".into())].into()
        );
        assert_eq!(t.digests().disagreeing(["a", "b"]), vec!["b".to_owned()]);
        // No newcomer: no announcement. b leaves: its digest goes.
        assert!(!t.handle_membership(&[member("a"), member("b")]));
        assert!(!t.handle_membership(&[member("a")]));
        assert_eq!(t.digests().nodes.len(), 1);
        // A reload announces once.
        assert!(t.set_mine("d2"));
        assert!(!t.set_mine("d2"));
        assert_eq!(t.digests().nodes["a"], "d2");
        // A member that has not announced yet disagrees.
        assert!(t.handle_membership(&[member("a"), member("c")]));
        assert_eq!(t.digests().disagreeing(["a", "c"]), vec!["c".to_owned()]);
    }
}
