//! One incarnation per name (issue 16): a second live process proving a node's name — a
//! duplicate with the node's certificate, or an impostor presenting it under another
//! name — never disturbs a connected cluster, and when it goes away the remaining
//! incarnation is a full member again within the merge time.
//!
//! The simulator runs these scenarios after the liveness phase, when every node is up and
//! connected and in one view. Checked:
//! * **connected**: while the original is live and connected, no other node installs any
//!   view (the newcomer changes nothing: no master change, no answer change downstream)
//!   and no view of another node contains the newcomer; the newcomer is refused (its
//!   process stops) within [`REFUSAL_BOUND`];
//! * **after a cut**: the original was cut off and the newcomer took its name meanwhile;
//!   once the newcomer is gone (stopped by its operator, or evicted by the original when
//!   the cut heals) and the cut healed, every node is in one view with every configured
//!   node within [`RECOVERY_BOUND`].

use super::Invariant;
use crate::event::ViewChange;
use crate::types::{NodeRef, ViewId};
use std::time::Duration;

/// How soon a newcomer on a connected cluster must be refused: the admission probe (1 s)
/// plus latency and slack.
pub const REFUSAL_BOUND: Duration = Duration::from_secs(3);

/// How soon after the newcomer is gone and the cut healed the cluster must be one view
/// again (the merge time the README promises).
pub const RECOVERY_BOUND: Duration = Duration::from_secs(3);

/// What kind of newcomer a scenario starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Newcomer {
    /// The node's own certificate and name, a newer incarnation, another address.
    Duplicate,
    /// The node's certificate under another name: its frames name another sender.
    Impostor,
}

#[derive(Default)]
pub(crate) struct DuplicateIncarnation {
    /// The newcomer while it runs, its kind, and whether the cluster is connected.
    active: Option<(NodeRef, Newcomer, bool)>,
    stopped: Option<(Duration, bool)>,
}

impl DuplicateIncarnation {
    /// A newcomer starts; `connected`: the original is live and reachable by all.
    pub(crate) fn started(&mut self, dup: NodeRef, kind: Newcomer, connected: bool) {
        self.active = Some((dup, kind, connected));
        self.stopped = None;
    }

    /// The newcomer's process stopped (`refused`: because a peer refused it).
    pub(crate) fn stopped(&mut self, at: Duration, refused: bool) {
        self.stopped = Some((at, refused));
    }

    /// The connected newcomer must have been refused by now.
    pub(crate) fn check_refused(&self, at: Duration, v: &mut Vec<String>) {
        let Some((dup, kind, _)) = &self.active else {
            return;
        };
        match self.stopped {
            Some((_, true)) => {}
            Some((t, false)) => v.push(format!(
                "duplicate incarnation: {kind:?} {dup} was never refused; its operator stopped it at {t:?}"
            )),
            None => v.push(format!(
                "duplicate incarnation: {kind:?} {dup} still runs at {at:?}, {REFUSAL_BOUND:?} after it started on a connected cluster"
            )),
        }
    }

    /// After the newcomer is gone and the cut healed: one view of every configured node.
    pub(crate) fn check_one_view(
        &self,
        at: Duration,
        views: &[(NodeRef, ViewId, Vec<NodeRef>)],
        all: &[NodeRef],
        v: &mut Vec<String>,
    ) {
        let what = match &self.active {
            Some((dup, kind, _)) => {
                if self.stopped.is_none() {
                    v.push(format!(
                        "duplicate incarnation: {kind:?} {dup} still runs at {at:?} after the cut healed"
                    ));
                    return;
                }
                format!("duplicate incarnation: at {at:?}, {RECOVERY_BOUND:?} after {kind:?} {dup} went away")
            }
            None => format!("isolated start: at {at:?}, {RECOVERY_BOUND:?} after the heal"),
        };
        for (who, view, members) in views {
            if members != all {
                v.push(format!(
                    "{what}, {who} is in {view} with {members:?}, not all of {all:?}"
                ));
                return;
            }
        }
    }
}

impl Invariant for DuplicateIncarnation {
    fn on_view(&mut self, at: Duration, who: &NodeRef, c: &ViewChange, v: &mut Vec<String>) {
        let Some((dup, kind, connected)) = &self.active else {
            return;
        };
        if !*connected || who == dup {
            return;
        }
        if c.members.contains(dup) {
            v.push(format!(
                "duplicate incarnation: {who} installed {} containing {kind:?} {dup} while the original was live and connected ({at:?})",
                c.view
            ));
        } else {
            v.push(format!(
                "duplicate incarnation: {kind:?} {dup} made {who} change its view to {} with {:?} ({at:?})",
                c.view, c.members
            ));
        }
    }
}
