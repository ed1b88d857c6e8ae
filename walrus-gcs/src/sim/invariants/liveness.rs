//! Liveness: after the last fault (links symmetric and transitive again, every node up),
//! all nodes install one common view within the stated bound, and messages sent after
//! that reach every member within the stated bound.

use super::{EndState, Invariant, Sent, SessionKey};
use crate::types::{NodeRef, ViewId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// What the simulator observed in its quiet phase.
#[derive(Clone, Debug, Default)]
pub struct LivenessProbe {
    /// How long after the last fault the views were sampled.
    pub view_bound: Duration,
    /// Each live node's view and members at that time.
    pub views: Vec<(NodeRef, ViewId, Vec<NodeRef>)>,
    /// The node incarnations alive then (empty: take those alive at the end; a scenario
    /// run after the liveness phase may crash and restart nodes).
    pub alive: Vec<NodeRef>,
    /// Probe messages sent after that, and the bound they had to arrive within.
    pub probes: Vec<u64>,
    /// How long probes were given.
    pub delivery_bound: Duration,
    /// The probe sessions (one per live node) that had to receive every probe.
    pub receivers: Vec<SessionKey>,
    /// Which probes each probe session got in time.
    pub received: BTreeSet<(SessionKey, u64)>,
}

pub(super) struct Liveness;

impl Invariant for Liveness {
    fn at_end(
        &mut self,
        end: &EndState,
        _sent: &BTreeMap<u64, Sent>,
        _r: &super::Requests,
        v: &mut Vec<String>,
    ) {
        let Some(p) = &end.probe else { return };
        let mut all: Vec<NodeRef> = if p.alive.is_empty() {
            end.alive.clone()
        } else {
            p.alive.clone()
        };
        all.sort();
        for (who, view, members) in &p.views {
            if *members != all {
                v.push(format!(
                    "liveness: {:?} after the last fault {who} is in view {view} with {:?}, not all of {:?}",
                    p.view_bound, members, all
                ));
                return;
            }
        }
        let ids: BTreeSet<&ViewId> = p.views.iter().map(|x| &x.1).collect();
        if ids.len() > 1 {
            v.push(format!(
                "liveness: nodes are in different views {ids:?} after {:?}",
                p.view_bound
            ));
            return;
        }
        for id in &p.probes {
            for r in &p.receivers {
                if !p.received.contains(&(r.clone(), *id)) {
                    v.push(format!(
                        "liveness: probe {id} did not reach {}/{} within {:?}",
                        r.0, r.1, p.delivery_bound
                    ));
                    return;
                }
            }
        }
    }
}
