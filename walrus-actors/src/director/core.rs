//! The Director's decision logic as a sans-IO state machine: decisions, finished
//! applications and timeouts in; commands ("apply this", "abandon that") out. Time is
//! passed in. The driver ([`super::driver`]) or an actor performs the commands with
//! [`super::apply`] and feeds the reports back.
//!
//! Rules:
//! - Only this area's answer matters ([`AreaDirector::wanted`]); an empty answer is
//!   refused and the last one stays.
//! - A wanted answer that differs from the last one abandons any application in flight
//!   (the newer decision wins) and starts a new one.
//! - The same answer is not re-applied every round; it is re-checked every
//!   `recheck` (a name server restored from an old zone file, or edited by hand, is
//!   brought back), and `retry_after_failure` after an application that gave up.
//! - A refusal (bad key, policy) is shown in status and only re-tried at the slow
//!   `recheck` pace: not a loop that hides it, but it recovers once a human fixes it.
//! - **A Director that has just started changes nothing on one decision** (issue 16).
//!   For its first [`CoreConfig::confirm_after_start`] decisions, an answer is applied only
//!   once two consecutive decisions agree on it. Why: a node restarted while its web server
//!   stayed up gets, first, the master's decision made while it was dead (its Reporter
//!   silent, its area moved away) — right then, stale now. One round after its Reporter is
//!   back the master moves the area home. Applying the first decision would change the
//!   answer twice for nothing; waiting for a second agreeing decision never applies what the
//!   next round takes back, and costs at most one round, only right after a start.
//!   Why here and not in the master: the master's decision was correct when made, and the
//!   master cannot know which Director is about to read it; the Director knows it has just
//!   started (its name server still serves the stored answer meanwhile).
//! - Writes are fenced by the decision's epoch ([`super::Fence`]): the newest decision's
//!   epoch goes with every application, and the first application after this Director
//!   becomes its area's writer also stamps the epoch when the records are already held,
//!   so a deposed writer's late update of an older decision is refused by the server.
//! - Only the area's writer writes ([`DirectorCore::handle_writer`]): when several
//!   Directors serve one area, the others follow decisions and stand by; a standby that
//!   becomes the writer applies the newest decision at once.

use super::vocabulary::{Applied, ApplyReport, AreaDirector, Fence, NameServerError};
use super::zone::WwwRecords;
use crate::model::{AreaName, Decision, Round};
use serde::Serialize;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How many finished applications the status keeps.
const STATUS_HISTORY: usize = 16;

/// A command for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run [`super::apply`] for `want`; report back with `id`.
    Apply {
        /// Identifies this application in [`DirectorCore::handle_applied`].
        id: u64,
        /// The records the server must hold.
        want: WwwRecords,
        /// How the write is fenced.
        fence: Fence,
    },
    /// Abandon the application `id` (drop its future): a newer answer superseded it.
    Abandon {
        /// The application to drop.
        id: u64,
    },
}

/// Timing of the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreConfig {
    /// Re-check a held answer this often even if no decision changed it. Default 60 s.
    pub recheck: Duration,
    /// After an application gave up (server unreachable for all its attempts), try again
    /// after this long. Default 5 s.
    pub retry_after_failure: Duration,
    /// For this many decisions after the Director starts, an answer is applied only once
    /// two consecutive decisions agree on it (see the module doc). Default 4; 0 turns the
    /// rule off (a direct-mode updater, fed only the answers that changed, must use 0).
    pub confirm_after_start: u32,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            recheck: Duration::from_secs(60),
            retry_after_failure: Duration::from_secs(5),
            confirm_after_start: 4,
        }
    }
}

/// One finished application, for the status page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusEntry {
    /// The round whose answer was applied.
    pub round: Round,
    /// Attempts made.
    pub attempts: u32,
    /// "unchanged (serial N)", "updated (serial A → B)" or the error.
    pub outcome: String,
    /// True when the server refused: a human must look.
    pub refused: bool,
}

/// What the Director shows on the status page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirectorStatus {
    /// The area.
    pub area: AreaName,
    /// The server, as its updater describes it.
    pub server: String,
    /// The round of the answer wanted now.
    pub wanted_round: Option<Round>,
    /// The answer wanted now.
    pub wanted: Option<WwwRecords>,
    /// True when the server is known to hold `wanted` (the last application succeeded).
    pub in_sync: bool,
    /// Applications that failed since the last success.
    pub consecutive_failures: u32,
    /// The last decision that could not be applied as given (an empty answer).
    pub last_rejected: Option<String>,
    /// The latest finished applications, oldest first.
    pub history: VecDeque<StatusEntry>,
    /// True when this Director writes its area's server; false while it stands by
    /// (another Director of the area writes, or the master is not relying on it).
    pub writer: bool,
    /// The epoch of the decision wanted now.
    pub wanted_epoch: u64,
}

/// The Director's state machine for one area.
#[derive(Debug, Clone)]
pub struct DirectorCore {
    director: AreaDirector,
    cfg: CoreConfig,
    wanted: Option<(Round, WwwRecords)>,
    /// The newest decision's epoch seen (it fences the writes).
    epoch: u64,
    /// Whether this Director writes now.
    writer: bool,
    /// Whether an application succeeded since it became the writer (until then each
    /// application stamps the epoch).
    stamped: bool,
    in_flight: Option<u64>,
    next_id: u64,
    /// When to apply `wanted` again if nothing else happens.
    due: Option<Instant>,
    status: DirectorStatus,
    /// Decisions seen since the start (counts up to `confirm_after_start`).
    decisions: u32,
    /// While confirming: the answer the previous decision wanted, not applied yet.
    unconfirmed: Option<WwwRecords>,
}

impl DirectorCore {
    /// A Director for `director.area`, its server described as `server`.
    pub fn new(director: AreaDirector, server: String, cfg: CoreConfig) -> Self {
        let status = DirectorStatus {
            area: director.area.clone(),
            server,
            wanted_round: None,
            wanted: None,
            in_sync: false,
            consecutive_failures: 0,
            last_rejected: None,
            history: VecDeque::new(),
            writer: true,
            wanted_epoch: 0,
        };
        Self {
            director,
            cfg,
            wanted: None,
            epoch: 0,
            writer: true,
            stamped: false,
            in_flight: None,
            next_id: 1,
            due: None,
            status,
            decisions: 0,
            unconfirmed: None,
        }
    }

    /// The status page view.
    pub fn status(&self) -> &DirectorStatus {
        &self.status
    }

    /// A decision from the master.
    pub fn handle_decision(&mut self, now: Instant, decision: &Decision) -> Vec<Command> {
        let want = match self.director.wanted(decision) {
            Ok(Some(w)) => w,
            Ok(None) => return vec![],
            Err(e) => {
                tracing::warn!(area = %self.director.area, round = %decision.round, error = %e, "decision not applied");
                self.status.last_rejected = Some(format!("round {}: {e}", decision.round));
                return vec![];
            }
        };
        if decision.epoch > 0 && decision.epoch < self.epoch {
            tracing::warn!(area = %self.director.area, round = %decision.round, epoch = decision.epoch, newest = self.epoch, "decision older than one already seen: ignored");
            return vec![];
        }
        self.epoch = self.epoch.max(decision.epoch);
        self.status.wanted_epoch = self.epoch;
        let same = self.wanted.as_ref().is_some_and(|(_, w)| w.same_as(&want));
        if self.decisions < self.cfg.confirm_after_start {
            self.decisions += 1;
            if !same {
                let confirmed = self.unconfirmed.as_ref().is_some_and(|w| w.same_as(&want));
                if !confirmed {
                    tracing::info!(area = %self.director.area, round = %decision.round, "just started: answer held until the next decision agrees");
                    self.unconfirmed = Some(want);
                    return vec![];
                }
            }
            self.unconfirmed = None;
        }
        if same {
            // Nothing new: keep the round for status, let the timers decide.
            if let Some((r, _)) = self.wanted.as_mut() {
                *r = decision.round;
            }
            self.status.wanted_round = Some(decision.round);
            return vec![];
        }
        self.wanted = Some((decision.round, want.clone()));
        self.status.wanted_round = Some(decision.round);
        self.status.wanted = Some(want);
        self.status.in_sync = false;
        self.start(now)
    }

    /// This Director became its area's writer (`true`) or stands by (`false`). Becoming
    /// the writer applies the newest wanted answer at once, stamping its epoch; standing
    /// by abandons any application in flight.
    pub fn handle_writer(&mut self, now: Instant, writer: bool) -> Vec<Command> {
        if writer == self.writer {
            return vec![];
        }
        self.writer = writer;
        self.status.writer = writer;
        tracing::info!(area = %self.director.area, writer, "director role changed: {}", if writer { "writing the area's name server" } else { "standing by" });
        if writer {
            self.stamped = false;
            return self.start(now);
        }
        self.due = None;
        self.status.in_sync = false;
        match self.in_flight.take() {
            Some(id) => vec![Command::Abandon { id }],
            None => vec![],
        }
    }

    /// An application finished (with `id` from [`Command::Apply`]).
    pub fn handle_applied(&mut self, now: Instant, id: u64, report: &ApplyReport) {
        if self.in_flight != Some(id) {
            return; // abandoned: a newer one is running
        }
        self.in_flight = None;
        let round = self.wanted.as_ref().map(|(r, _)| *r).unwrap_or(Round(0));
        let (outcome, refused, ok) = match report.outcome() {
            Ok(Applied::Unchanged { serial }) => {
                (format!("unchanged (serial {})", show(serial)), false, true)
            }
            Ok(Applied::Updated { before, after }) => (
                format!("updated (serial {} → {})", show(before), show(after)),
                false,
                true,
            ),
            // Behind a newer decision: nothing to retry until a newer one arrives.
            Err(e @ NameServerError::Stale { .. }) => (e.to_string(), false, false),
            Err(e) => (
                e.to_string(),
                matches!(e, NameServerError::Refused { .. }),
                false,
            ),
        };
        self.status.in_sync = ok;
        if ok {
            self.stamped = true;
            self.status.consecutive_failures = 0;
            self.due = Some(now + self.cfg.recheck);
        } else {
            self.status.consecutive_failures += 1;
            let wait = if refused {
                self.cfg.recheck
            } else {
                self.cfg.retry_after_failure
            };
            self.due = Some(now + wait);
        }
        if self.status.history.len() == STATUS_HISTORY {
            self.status.history.pop_front();
        }
        self.status.history.push_back(StatusEntry {
            round,
            attempts: report.attempts.len() as u32,
            outcome,
            refused,
        });
    }

    /// When [`DirectorCore::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.in_flight.is_some() {
            return None;
        }
        self.due
    }

    /// Time passed: re-check or retry when due.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Command> {
        match self.due {
            Some(due)
                if now >= due
                    && self.in_flight.is_none()
                    && self.wanted.is_some()
                    && self.writer =>
            {
                self.start(now)
            }
            _ => vec![],
        }
    }

    fn start(&mut self, _now: Instant) -> Vec<Command> {
        let Some((_, want)) = self.wanted.clone() else {
            return vec![];
        };
        if !self.writer {
            return vec![];
        }
        let mut out = vec![];
        if let Some(old) = self.in_flight.take() {
            out.push(Command::Abandon { id: old });
        }
        let id = self.next_id;
        self.next_id += 1;
        self.in_flight = Some(id);
        self.due = None;
        let fence = Fence {
            epoch: self.epoch,
            expect: None,
            stamp: !self.stamped,
        };
        out.push(Command::Apply { id, want, fence });
        out
    }
}

fn show(serial: &Option<u32>) -> String {
    serial.map_or_else(|| "?".into(), |s| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::director::{zone::RecordTtl, Attempt};
    use crate::model::{AreaAnswer, ClusterName};

    fn core() -> DirectorCore {
        DirectorCore::new(
            AreaDirector {
                area: AreaName::from("a1"),
                ttl: RecordTtl::DEFAULT,
            },
            "srv".into(),
            // These tests are about a running Director: no start-up confirmation.
            CoreConfig {
                confirm_after_start: 0,
                ..CoreConfig::default()
            },
        )
    }

    /// Issue 16: a Director that has just started (its node restarted while its web
    /// server stayed up) is handed the master's decision made while it was dead (area
    /// moved to c2), then, one round later, the decision with its Reporter back (home,
    /// c1). It applies nothing on the first, and only c1 once two decisions agree.
    #[test]
    fn a_just_started_director_applies_no_answer_that_the_next_round_takes_back() {
        let mut c = DirectorCore::new(
            AreaDirector {
                area: AreaName::from("a1"),
                ttl: RecordTtl::DEFAULT,
            },
            "srv".into(),
            CoreConfig::default(),
        );
        let t = Instant::now();
        assert_eq!(c.handle_decision(t, &decision(7, &["10.2.0.1"])), vec![]);
        assert_eq!(c.handle_decision(t, &decision(8, &["10.1.0.1"])), vec![]);
        let out = c.handle_decision(t, &decision(9, &["10.1.0.1"]));
        assert!(
            matches!(out.as_slice(), [Command::Apply { want: w, .. }] if *w == want(&["10.1.0.1"])),
            "{out:?}"
        );
        // After the window, a change applies at once.
        for r in 10..12 {
            assert_eq!(c.handle_decision(t, &decision(r, &["10.1.0.1"])), vec![]);
        }
        assert_eq!(c.handle_decision(t, &decision(12, &["10.2.0.1"])).len(), 2);
    }

    fn decision(round: u64, addrs: &[&str]) -> Decision {
        Decision {
            round: Round(round),
            epoch: round,
            answers: [(
                AreaName::from("a1"),
                AreaAnswer {
                    cluster: ClusterName::from("c1"),
                    records: addrs.iter().map(|a| a.parse().unwrap()).collect(),
                },
            )]
            .into_iter()
            .collect(),
            changes: vec![],
        }
    }

    fn want(addrs: &[&str]) -> WwwRecords {
        WwwRecords::from_addrs(addrs.iter().map(|a| a.parse().unwrap()), RecordTtl::DEFAULT)
    }

    fn report(outcome: Result<Applied, NameServerError>) -> ApplyReport {
        ApplyReport {
            server: "srv".into(),
            attempts: vec![Attempt {
                number: 1,
                waited: Duration::ZERO,
                outcome,
            }],
        }
    }

    fn ok() -> ApplyReport {
        report(Ok(Applied::Updated {
            before: Some(1),
            after: Some(2),
        }))
    }

    #[test]
    fn new_answer_is_applied_same_answer_is_not() {
        let t = Instant::now();
        let mut c = core();
        assert_eq!(
            c.handle_decision(t, &decision(1, &["10.0.0.1"])),
            vec![Command::Apply {
                id: 1,
                want: want(&["10.0.0.1"]),
                fence: Fence {
                    epoch: 1,
                    expect: None,
                    stamp: true
                }
            }]
        );
        c.handle_applied(t, 1, &ok());
        assert!(c.status().in_sync);
        assert_eq!(c.handle_decision(t, &decision(2, &["10.0.0.1"])), vec![]);
        assert_eq!(c.status().wanted_round, Some(Round(2)));
        assert_eq!(c.poll_timeout(), Some(t + Duration::from_secs(60)));
    }

    #[test]
    fn newer_answer_abandons_the_one_in_flight() {
        let t = Instant::now();
        let mut c = core();
        c.handle_decision(t, &decision(1, &["10.0.0.1"]));
        assert_eq!(
            c.handle_decision(t, &decision(2, &["10.0.0.2"])),
            vec![
                Command::Abandon { id: 1 },
                Command::Apply {
                    id: 2,
                    want: want(&["10.0.0.2"]),
                    fence: Fence {
                        epoch: 2,
                        expect: None,
                        stamp: true
                    }
                }
            ]
        );
        // A late report of the abandoned one changes nothing.
        c.handle_applied(t, 1, &ok());
        assert!(!c.status().in_sync);
        assert!(c.status().history.is_empty());
        assert_eq!(c.poll_timeout(), None, "one is in flight");
    }

    #[test]
    fn failure_retries_soon_refusal_only_at_recheck_pace() {
        let t = Instant::now();
        let mut c = core();
        c.handle_decision(t, &decision(1, &["10.0.0.1"]));
        let unreachable = NameServerError::Unreachable {
            area: AreaName::from("a1"),
            server: "srv".into(),
            detail: "timeout".into(),
        };
        c.handle_applied(t, 1, &report(Err(unreachable)));
        assert_eq!(c.poll_timeout(), Some(t + Duration::from_secs(5)));
        assert_eq!(c.handle_timeout(t + Duration::from_secs(4)), vec![]);
        let cmds = c.handle_timeout(t + Duration::from_secs(5));
        assert!(matches!(cmds[..], [Command::Apply { id: 2, .. }]));

        let refused = NameServerError::Refused {
            area: AreaName::from("a1"),
            server: "srv".into(),
            key: "k".into(),
            reason: "NOTAUTH, BADSIG".into(),
        };
        let t2 = t + Duration::from_secs(5);
        c.handle_applied(t2, 2, &report(Err(refused)));
        assert_eq!(c.poll_timeout(), Some(t2 + Duration::from_secs(60)));
        let s = c.status();
        assert_eq!(s.consecutive_failures, 2);
        assert!(s.history.back().unwrap().refused);
        assert!(s.history.back().unwrap().outcome.contains("BADSIG"));
    }

    #[test]
    fn empty_answer_is_shown_and_keeps_the_last() {
        let t = Instant::now();
        let mut c = core();
        c.handle_decision(t, &decision(1, &["10.0.0.1"]));
        c.handle_applied(t, 1, &ok());
        assert_eq!(c.handle_decision(t, &decision(2, &[])), vec![]);
        assert!(c
            .status()
            .last_rejected
            .as_ref()
            .unwrap()
            .contains("round 2"));
        assert_eq!(c.status().wanted, Some(want(&["10.0.0.1"])));
    }

    #[test]
    fn recheck_reapplies_a_held_answer() {
        let t = Instant::now();
        let mut c = core();
        c.handle_decision(t, &decision(1, &["10.0.0.1"]));
        c.handle_applied(t, 1, &ok());
        let later = t + Duration::from_secs(61);
        assert!(matches!(
            c.handle_timeout(later)[..],
            [Command::Apply { id: 2, .. }]
        ));
    }

    #[test]
    fn history_is_bounded() {
        let t = Instant::now();
        let mut c = core();
        c.handle_decision(t, &decision(1, &["10.0.0.1"]));
        for id in 1..=40 {
            c.handle_applied(t, id, &ok());
            c.handle_timeout(t + Duration::from_secs(3600));
        }
        assert_eq!(c.status().history.len(), STATUS_HISTORY);
    }

    #[test]
    fn a_standby_writes_nothing_until_it_becomes_the_writer_then_stamps_the_newest_epoch() {
        let t = Instant::now();
        let mut c = core();
        assert_eq!(c.handle_writer(t, false), vec![]);
        assert!(!c.status().writer);
        assert_eq!(c.handle_decision(t, &decision(1, &["10.0.0.1"])), vec![]);
        assert_eq!(c.handle_decision(t, &decision(2, &["10.0.0.2"])), vec![]);
        assert_eq!(c.handle_timeout(t + Duration::from_secs(600)), vec![]);
        // Takes over: the newest answer at once, with its epoch, stamped.
        let cmds = c.handle_writer(t, true);
        assert_eq!(
            cmds,
            vec![Command::Apply {
                id: 1,
                want: want(&["10.0.0.2"]),
                fence: Fence {
                    epoch: 2,
                    expect: None,
                    stamp: true
                }
            }]
        );
        c.handle_applied(t, 1, &ok());
        // Once stamped, later applications only write a changed answer.
        let cmds = c.handle_decision(t, &decision(3, &["10.0.0.3"]));
        assert!(
            matches!(
                cmds[..],
                [Command::Apply {
                    fence: Fence {
                        epoch: 3,
                        stamp: false,
                        ..
                    },
                    ..
                }]
            ),
            "{cmds:?}"
        );
        // Standing by abandons what is in flight.
        assert_eq!(c.handle_writer(t, false), vec![Command::Abandon { id: 2 }]);
    }

    #[test]
    fn a_decision_older_than_one_seen_is_ignored() {
        let t = Instant::now();
        let mut c = core();
        let mut newer = decision(5, &["10.0.0.5"]);
        newer.epoch = 500;
        let mut older = decision(6, &["10.0.0.4"]);
        older.epoch = 400;
        assert_eq!(c.handle_decision(t, &newer).len(), 1);
        assert_eq!(c.handle_decision(t, &older), vec![]);
        assert_eq!(c.status().wanted_epoch, 500);
    }
}
