//! The dashboard's memory: each cluster's load over the last minutes and each area's
//! cluster over time, with the reason of every move. The status observer feeds it from
//! the samples it takes (rounds this node closed, decisions it saw); `/history` serves it
//! and the dashboard draws it (a load plot and an area → cluster timeline).
//!
//! Sans-IO: every call takes the wall-clock time in milliseconds since the Unix epoch.
//! Bounded: load points older than [`WINDOW_MS`] are dropped, and each area keeps its last
//! [`SEGMENTS_PER_AREA`] segments.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use walrus_actors::model::Decision;

/// How far back the plots go: ten minutes.
pub const WINDOW_MS: u64 = 10 * 60 * 1000;
/// Segments kept per area (the one in force at the window's start is among them unless the
/// area moved more often than this within the window).
pub const SEGMENTS_PER_AREA: usize = 100;

/// One round's cluster loads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadPoint {
    /// When the observer saw the round closed (ms since the Unix epoch).
    pub t_ms: u64,
    /// The round.
    pub round: u64,
    /// Each cluster with a working server: its load (1.0 = at capacity). A cluster with no
    /// working server is absent (a gap in its line).
    pub clusters: BTreeMap<String, f64>,
}

/// An area on one cluster, from `from_ms` until the next segment (or now).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// When the observer first saw this assignment (ms since the Unix epoch).
    pub from_ms: u64,
    /// The round of the decision that made it.
    pub round: u64,
    /// The cluster.
    pub cluster: String,
    /// Why (the decision's reason for the area, or how the observer first saw it).
    pub reason: String,
}

/// What `/history` returns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryDoc {
    /// The node's clock when the document was made (ms since the Unix epoch).
    pub now_ms: u64,
    /// The span the plots cover, ending at `now_ms`.
    pub window_ms: u64,
    /// Loads of the rounds this node closed as master within the window, oldest first.
    pub loads: Vec<LoadPoint>,
    /// Each area's segments, oldest first; the first may start before the window.
    pub areas: BTreeMap<String, Vec<Segment>>,
}

/// The memory itself.
#[derive(Debug, Clone, Default)]
pub struct History {
    loads: VecDeque<LoadPoint>,
    areas: BTreeMap<String, VecDeque<Segment>>,
}

impl History {
    /// A round this node closed, with each cluster's load (None: no working server).
    pub fn record_round(
        &mut self,
        now_ms: u64,
        round: u64,
        loads: impl IntoIterator<Item = (String, Option<f64>)>,
    ) {
        if self.loads.back().is_some_and(|p| p.round >= round) {
            return;
        }
        let clusters = loads
            .into_iter()
            .filter_map(|(c, l)| l.filter(|l| l.is_finite()).map(|l| (c, l)))
            .collect();
        self.loads.push_back(LoadPoint {
            t_ms: now_ms,
            round,
            clusters,
        });
        self.trim(now_ms);
    }

    /// A decision this node saw: an area whose cluster differs from its last segment's
    /// starts a new segment, with the decision's reason for it.
    pub fn record_decision(&mut self, now_ms: u64, d: &Decision) {
        for (area, answer) in &d.answers {
            let segments = self.areas.entry(area.0.clone()).or_default();
            if segments
                .back()
                .is_some_and(|s| s.cluster == answer.cluster.0)
            {
                continue;
            }
            let reason = d
                .changes
                .iter()
                .rev()
                .find(|c| c.area == *area && c.to == answer.cluster)
                .map(|c| c.reason.clone())
                .unwrap_or_else(|| format!("assigned when this node first saw round {}", d.round));
            if segments.len() == SEGMENTS_PER_AREA {
                segments.pop_front();
            }
            segments.push_back(Segment {
                from_ms: now_ms,
                round: d.round.0,
                cluster: answer.cluster.0.clone(),
                reason,
            });
        }
        self.trim(now_ms);
    }

    fn trim(&mut self, now_ms: u64) {
        let start = now_ms.saturating_sub(WINDOW_MS);
        while self.loads.front().is_some_and(|p| p.t_ms < start) {
            self.loads.pop_front();
        }
        for segments in self.areas.values_mut() {
            // Keep the segment in force at the window's start; drop the ones before it.
            while segments.len() > 1 && segments.get(1).is_some_and(|s| s.from_ms <= start) {
                segments.pop_front();
            }
        }
    }

    /// The document for `/history` at `now_ms`.
    pub fn doc(&self, now_ms: u64) -> HistoryDoc {
        let start = now_ms.saturating_sub(WINDOW_MS);
        HistoryDoc {
            now_ms,
            window_ms: WINDOW_MS,
            loads: self
                .loads
                .iter()
                .filter(|p| p.t_ms >= start)
                .cloned()
                .collect(),
            areas: self
                .areas
                .iter()
                .map(|(a, s)| (a.clone(), s.iter().cloned().collect()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use walrus_actors::model::{AreaAnswer, AreaName, Change, ClusterName, Round};

    fn decision(round: u64, eu: &str, change: Option<&str>) -> Decision {
        Decision {
            round: Round(round),
            answers: [(
                AreaName::from("eu"),
                AreaAnswer {
                    cluster: ClusterName::from(eu),
                    records: vec![],
                },
            )]
            .into(),
            changes: change
                .map(|r| Change {
                    area: AreaName::from("eu"),
                    from: Some(ClusterName::from("c-eu")),
                    to: ClusterName::from(eu),
                    phase: 3,
                    reason: r.to_owned(),
                })
                .into_iter()
                .collect(),
            epoch: 0,
        }
    }

    #[test]
    fn a_move_starts_a_segment_with_its_reason_and_a_repeat_does_not() {
        let mut h = History::default();
        h.record_decision(1_000, &decision(1, "c-eu", None));
        h.record_decision(2_000, &decision(2, "c-eu", None));
        h.record_decision(
            3_000,
            &decision(3, "c-us", Some("c-eu has no working server")),
        );
        let doc = h.doc(4_000);
        let eu = &doc.areas["eu"];
        assert_eq!(eu.len(), 2);
        assert_eq!((eu[0].from_ms, eu[0].cluster.as_str()), (1_000, "c-eu"));
        assert!(
            eu[0].reason.contains("first saw round 1"),
            "{}",
            eu[0].reason
        );
        assert_eq!((eu[1].from_ms, eu[1].round), (3_000, 3));
        assert_eq!(eu[1].reason, "c-eu has no working server");
    }

    #[test]
    fn loads_are_kept_for_the_window_once_per_round_and_dead_clusters_are_gaps() {
        let mut h = History::default();
        h.record_round(0, 1, [("c-eu".to_owned(), Some(0.5))]);
        h.record_round(500, 1, [("c-eu".to_owned(), Some(0.9))]);
        h.record_round(
            1_000,
            2,
            [("c-eu".to_owned(), None), ("c-us".to_owned(), Some(0.2))],
        );
        let doc = h.doc(2_000);
        assert_eq!(doc.loads.len(), 2);
        assert_eq!(doc.loads[0].clusters["c-eu"], 0.5);
        assert!(!doc.loads[1].clusters.contains_key("c-eu"));
        h.record_round(WINDOW_MS + 600, 3, [("c-us".to_owned(), Some(0.3))]);
        let doc = h.doc(WINDOW_MS + 600);
        assert_eq!(
            doc.loads.iter().map(|p| p.round).collect::<Vec<_>>(),
            [2, 3],
            "round 1 fell out of the window"
        );
    }

    #[test]
    fn old_segments_go_but_the_one_in_force_at_the_window_start_stays() {
        let mut h = History::default();
        h.record_decision(0, &decision(1, "c-eu", None));
        h.record_decision(1_000, &decision(2, "c-us", Some("moved")));
        h.record_decision(WINDOW_MS + 5_000, &decision(3, "c-eu", Some("back home")));
        let eu = &h.doc(WINDOW_MS + 5_000).areas["eu"];
        assert_eq!(
            eu.iter().map(|s| s.cluster.as_str()).collect::<Vec<_>>(),
            ["c-us", "c-eu"]
        );
    }
}
