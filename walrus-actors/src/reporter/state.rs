//! The platform-independent piece of the Reporter (paper §4, "three pieces"): sans-IO,
//! deterministic.
//!
//! [`ReporterState`] takes each gathering's results (an OS sample, a web reading, the bypass
//! file), turns consecutive ones into statistics over the period, and decides the
//! server's condition. It publishes a [`Snapshot`]; a round request is answered from the
//! latest snapshot by [`Snapshot::report`], a pure function of the snapshot and the time,
//! so the request path never reads statistics.
//!
//! Special replies, in order of precedence:
//! 1. **BYPASS** while the operator's bypass file is in force (a server taken out for
//!    maintenance is not a failure: no human is paged). An unreadable bypass file counts
//!    as a bypass: the operator meant something by creating it.
//! 2. **TEMPFAIL** before the first statistics (a period needs two readings), when the
//!    latest gathering is stale (older than `stale_after`), when the OS reading failed, or
//!    while the web server has failed fewer than `panic_after` readings in a row.
//! 3. **PANIC** when the web server refuses connections (nothing listens: it is down, at
//!    once) or has failed `panic_after` readings in a row (status page failing, probe
//!    failing, timeouts) — with the reason, for the human who gets the notification.
//!
//! **Fast failover (issue 23, beyond the paper).** Built with
//! [`ReporterState::with_fast_failover`], the state also takes the results of a cheap
//! liveness probe between readings ([`ReporterState::handle_probe`]: a TCP connect to the
//! status page's host and port, every ~100 ms) and raises *urgent* reports
//! ([`ReporterState::poll_urgent`]) that the actor multicasts at once, outside the round:
//! 4. A probe that is refused makes the condition PANIC at once (as a refused reading
//!    does); `panic_after` probes in a row without an answer do too (one slow connect on a
//!    loaded host is not a failure).
//! 5. Every transition from up to down (by a probe or a reading) raises one urgent report,
//!    except while the server is held (rule 6): the master already counts a held server
//!    PANIC at every round, so a fall during the hold tells it nothing. A flapping server
//!    thus sends at most two per episode (its first fall, and the fall that starts the
//!    hold), then at most one per `hold`. Not "at most one per `window`" (the first
//!    design): that silenced the urgent report of a *genuine* second failure of a server
//!    that had recovered (a crash 20 s after a restart is exactly when clients must move
//!    fast), and the bench's trials, which kill the same servers every few seconds, fell
//!    back to the normal rounds. The master adds its own guard (one early round per
//!    server per round period, see `controller::round`).
//! 6. **Flap damping.** A server that goes down again within `window` of an earlier fall
//!    (down, up, down) is *held* PANIC until it has been up continuously (every probe and
//!    reading answering) for [`FlapDamping::hold`]; any fall during the hold starts it
//!    again. Readings go on meanwhile, so statistics are ready when the hold ends. So a
//!    flaky server costs its area at most one move out and one move back, however often
//!    it flaps. The Controller's early rounds never re-admit a dead server (see
//!    `controller::round`), so the short "up" between the first two falls moves nothing.
//!
//! Without fast failover (the paper's exact behaviour) no probe runs, nothing is urgent
//! and nothing is held: the condition is that of the latest reading.

use super::bypass::{Bypass, BypassError};
use super::os::{os_stats_between, OsError, OsReading};
use super::web::{WebError, WebReading};
use crate::model::{Generation, Report, ReportBody, Round, ServerName, ServerStats, WebStats};
use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

/// Flap damping of fast failover (see the module docs, rule 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlapDamping {
    /// A fall within this time of the previous one is a flap. Default 30 s.
    pub window: Duration,
    /// A flapping server is held PANIC until up continuously for this long. Default 10 s.
    pub hold: Duration,
}

impl Default for FlapDamping {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(30),
            hold: Duration::from_secs(10),
        }
    }
}

/// What one liveness probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// The server accepted a connection.
    Up,
    /// Nothing listens (connection refused): down at once.
    Refused {
        /// What the probe saw, for the PANIC reason.
        reason: String,
    },
    /// No answer within the probe's timeout, or another connect error: down after
    /// `panic_after` in a row.
    NoAnswer {
        /// What the probe saw.
        reason: String,
    },
}

/// An urgent report to multicast at once (fast failover, rule 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Urgent {
    /// When the fall was seen.
    pub at: Instant,
    /// Why the server is down.
    pub reason: String,
}

/// Fast failover's memory (see the module docs, rules 4-6).
#[derive(Debug, Clone)]
struct FastFailover {
    damping: FlapDamping,
    /// The server is down as last seen by a probe or a reading.
    down: bool,
    /// Probes in a row without an answer.
    probe_misses: u32,
    /// When the server went down, within the last `window`.
    falls: VecDeque<Instant>,
    /// Held PANIC for flapping: `Some(None)` while down, `Some(Some(t))` up since `t`.
    held: Option<Option<Instant>>,
    /// The urgent report not yet polled.
    pending: Option<Urgent>,
}

impl FastFailover {
    /// A probe or reading saw the server down at `now`.
    fn saw_down(&mut self, now: Instant, reason: &str) {
        self.probe_misses = 0;
        let was_held = self.held.is_some();
        if let Some(up_since) = &mut self.held {
            *up_since = None;
        }
        if self.down {
            return;
        }
        self.down = true;
        while self
            .falls
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.damping.window)
        {
            self.falls.pop_front();
        }
        self.falls.push_back(now);
        if self.falls.len() >= 2 {
            self.held = Some(None);
        }
        if !was_held {
            self.pending = Some(Urgent {
                at: now,
                reason: reason.to_owned(),
            });
        }
    }

    /// A probe or reading saw the server answer at `now`.
    fn saw_up(&mut self, now: Instant) {
        self.down = false;
        self.probe_misses = 0;
        match self.held {
            Some(None) => self.held = Some(Some(now)),
            Some(Some(since)) if now.saturating_duration_since(since) >= self.damping.hold => {
                self.held = None
            }
            _ => {}
        }
    }

    /// The PANIC reason while the server is held for flapping.
    fn hold_reason(&self, now: Instant) -> Option<String> {
        let up_since = self.held?;
        let up = up_since.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        Some(format!(
            "web server flapping: down {} times within {} s; held PANIC until up for {} s \
             (up for {} ms)",
            self.falls.len(),
            self.damping.window.as_secs(),
            self.damping.hold.as_secs(),
            up.as_millis()
        ))
    }
}

/// What the bypass file said at the latest gathering.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BypassStatus {
    /// No file.
    #[default]
    Off,
    /// A file (possibly expired: checked against the wall clock when a report is built).
    On(Bypass),
    /// A file that could not be read or parsed: counts as a bypass until cleared.
    Unreadable(String),
}

impl BypassStatus {
    /// From the result of `read_bypass`.
    pub fn from_read(result: Result<Option<Bypass>, BypassError>) -> Self {
        match result {
            Ok(None) => BypassStatus::Off,
            Ok(Some(b)) => BypassStatus::On(b),
            Err(e) => BypassStatus::Unreadable(e.to_string()),
        }
    }

    /// The BYPASS reason when in force at `wall`.
    fn active_reason(&self, wall: SystemTime) -> Option<String> {
        match self {
            BypassStatus::Off => None,
            BypassStatus::On(b) => b.is_active(wall).then(|| b.describe(wall)),
            BypassStatus::Unreadable(e) => Some(format!("operator bypass ({e})")),
        }
    }
}

/// The server's condition after the latest gathering.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// No statistics yet: nothing read, or only one reading (a period needs two).
    Starting,
    /// Fresh statistics over the latest period.
    Stats(ServerStats),
    /// A reading failed, transiently as far as we know: TEMPFAIL.
    Transient {
        /// What failed.
        reason: String,
    },
    /// The web server is down or keeps failing: PANIC.
    Down {
        /// What happened.
        reason: String,
    },
}

/// The latest state, as published after each gathering.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Gatherings so far (lets an observer tell whether it missed one).
    pub gatherings: u64,
    /// The gathering at which the condition took its present kind (Starting, Stats,
    /// Transient or Down): "PANIC since gathering 812", whenever one looks.
    pub condition_since: u64,
    /// When the latest gathering took its readings, or a liveness probe saw the server
    /// fall (fast failover); None before either.
    pub at: Option<Instant>,
    /// The server's condition.
    pub condition: Condition,
    /// The bypass file.
    pub bypass: BypassStatus,
}

impl Default for Snapshot {
    fn default() -> Self {
        Self {
            gatherings: 0,
            condition_since: 0,
            at: None,
            condition: Condition::Starting,
            bypass: BypassStatus::Off,
        }
    }
}

impl Snapshot {
    /// The report for `round` at `now` (monotonic, for staleness) and `wall` (for bypass
    /// expiry). Pure and instant: this is the whole request path.
    pub fn report(
        &self,
        server: &ServerName,
        round: Round,
        generation: Option<Generation>,
        now: Instant,
        wall: SystemTime,
        stale_after: Duration,
    ) -> Report {
        Report {
            server: server.clone(),
            round,
            body: self.body(now, wall, stale_after),
            generation,
        }
    }

    fn body(&self, now: Instant, wall: SystemTime, stale_after: Duration) -> ReportBody {
        if let Some(reason) = self.bypass.active_reason(wall) {
            return ReportBody::Bypass { reason };
        }
        let Some(at) = self.at else {
            return ReportBody::TempFail {
                reason: "no statistics yet (just started)".to_owned(),
            };
        };
        let age = now.saturating_duration_since(at);
        if age > stale_after {
            return ReportBody::TempFail {
                reason: format!(
                    "latest statistics are {} ms old (limit {} ms): the gatherer is late",
                    age.as_millis(),
                    stale_after.as_millis()
                ),
            };
        }
        match &self.condition {
            Condition::Starting => ReportBody::TempFail {
                reason: "no statistics yet: first reading taken, a period needs two".to_owned(),
            },
            Condition::Stats(s) => ReportBody::Stats(s.clone()),
            Condition::Transient { reason } => ReportBody::TempFail {
                reason: reason.clone(),
            },
            Condition::Down { reason } => ReportBody::Panic {
                reason: reason.clone(),
            },
        }
    }
}

/// The readings a period is measured from.
#[derive(Debug, Clone, Copy)]
struct Previous {
    at: Instant,
    os: OsReading,
    web: WebReading,
}

/// Keeps the latest statistics and decides the condition (see the module docs).
#[derive(Debug, Clone)]
pub struct ReporterState {
    panic_after: u32,
    previous: Option<Previous>,
    failures_in_a_row: u32,
    snapshot: Snapshot,
    /// None: the paper's behaviour (no probe, nothing urgent, nothing held).
    fast: Option<FastFailover>,
}

impl ReporterState {
    /// `panic_after`: web readings failed in a row (other than connection refused) before
    /// PANIC; at least 1.
    pub fn new(panic_after: u32) -> Self {
        Self {
            panic_after: panic_after.max(1),
            previous: None,
            failures_in_a_row: 0,
            snapshot: Snapshot::default(),
            fast: None,
        }
    }

    /// With fast failover: probes, urgent reports and flap damping (module docs, 4-6).
    pub fn with_fast_failover(panic_after: u32, damping: FlapDamping) -> Self {
        let mut s = Self::new(panic_after);
        s.fast = Some(FastFailover {
            damping,
            down: false,
            probe_misses: 0,
            falls: VecDeque::new(),
            held: None,
            pending: None,
        });
        s
    }

    /// The urgent report raised by the latest input, if any (none while held).
    pub fn poll_urgent(&mut self) -> Option<Urgent> {
        self.fast.as_mut()?.pending.take()
    }

    /// True while the server is held PANIC for flapping (rule 6).
    pub fn is_held(&self) -> bool {
        self.fast.as_ref().is_some_and(|f| f.held.is_some())
    }

    /// One liveness probe's result, at `now` (fast failover only; ignored otherwise).
    /// Only a fall changes the snapshot; a server that answers again is measured from
    /// the next reading (a period needs two), or stays held if it flapped.
    pub fn handle_probe(&mut self, now: Instant, probe: ProbeResult) -> &Snapshot {
        let panic_after = self.panic_after;
        let Some(fast) = self.fast.as_mut() else {
            return &self.snapshot;
        };
        let reason = match probe {
            ProbeResult::Up => {
                fast.saw_up(now);
                return &self.snapshot;
            }
            ProbeResult::Refused { reason } => format!("web server down: liveness probe: {reason}"),
            ProbeResult::NoAnswer { reason } => {
                fast.probe_misses = fast.probe_misses.saturating_add(1);
                let n = fast.probe_misses;
                if n < panic_after {
                    return &self.snapshot;
                }
                format!("web server down: {n} liveness probes in a row failed: {reason}")
            }
        };
        fast.saw_down(now, &reason);
        let reason = fast.hold_reason(now).unwrap_or(reason);
        // A restarted server starts its counters again: measure from its next reading.
        self.previous = None;
        // The condition is as fresh as the probe (even before the first gathering).
        self.snapshot.at = Some(now);
        self.set_condition(Condition::Down { reason });
        &self.snapshot
    }

    fn set_condition(&mut self, condition: Condition) {
        if std::mem::discriminant(&condition) != std::mem::discriminant(&self.snapshot.condition) {
            self.snapshot.condition_since = self.snapshot.gatherings;
        }
        self.snapshot.condition = condition;
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// One gathering's results, taken at `now` (when the OS sample was read).
    pub fn handle_gathering(
        &mut self,
        now: Instant,
        os: Result<OsReading, OsError>,
        web: Result<WebReading, WebError>,
        bypass: BypassStatus,
    ) -> &Snapshot {
        self.snapshot.gatherings += 1;
        self.snapshot.at = Some(now);
        self.snapshot.bypass = bypass;
        let web_ok = web.is_ok();
        let condition = match (os, web) {
            (_, Err(e)) => self.web_failed(&e),
            (Err(e), Ok(_)) => {
                self.failures_in_a_row = 0;
                Condition::Transient {
                    reason: format!("OS statistics unreadable: {e}"),
                }
            }
            (Ok(os), Ok(web)) => {
                self.failures_in_a_row = 0;
                let current = Previous { at: now, os, web };
                match self.previous.replace(current) {
                    None => Condition::Starting,
                    Some(prev) => Condition::Stats(stats(&prev, &current)),
                }
            }
        };
        let condition = match (self.fast.as_mut(), condition) {
            (None, c) => c,
            (Some(fast), c) => {
                match &c {
                    Condition::Down { reason } => fast.saw_down(now, reason),
                    _ if web_ok => fast.saw_up(now),
                    _ => {}
                }
                match fast.hold_reason(now) {
                    Some(reason) => Condition::Down { reason },
                    None => c,
                }
            }
        };
        self.set_condition(condition);
        &self.snapshot
    }

    fn web_failed(&mut self, e: &WebError) -> Condition {
        self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
        let n = self.failures_in_a_row;
        if e.is_down() {
            // A restarted server starts its counters again: measure from its next reading.
            self.previous = None;
            Condition::Down {
                reason: format!("web server down: {e}"),
            }
        } else if n >= self.panic_after {
            self.previous = None;
            Condition::Down {
                reason: format!("web server failed {n} readings in a row: {e}"),
            }
        } else {
            Condition::Transient {
                reason: format!(
                    "web server reading failed ({n} of {} before PANIC): {e}",
                    self.panic_after
                ),
            }
        }
    }
}

fn stats(prev: &Previous, cur: &Previous) -> ServerStats {
    let period = cur.at.saturating_duration_since(prev.at);
    let os = os_stats_between(&prev.os, &cur.os, period);
    let hits = match (prev.web.requests, cur.web.requests) {
        (Some(a), Some(b)) if b >= a => b - a,
        // The counter went back: the server restarted; all it counts is since then.
        (Some(_), Some(b)) => b,
        _ => 0,
    }
    .saturating_sub(cur.web.own_requests);
    ServerStats {
        period,
        cpu_user: os.cpu_user,
        cpu_system: os.cpu_system,
        cpu_idle: os.cpu_idle,
        mem_free_bytes: os.mem_free_bytes,
        swap_used_bytes: os.swap_used_bytes,
        pages_out_per_sec: os.pages_out_per_sec,
        free_virtual_bytes: os.free_virtual_bytes,
        total_virtual_bytes: os.total_virtual_bytes,
        procs_running: os.procs_running,
        procs_blocked: os.procs_blocked,
        web: WebStats {
            hits,
            busy_workers: cur.web.busy_workers,
            max_workers: cur.web.max_workers.unwrap_or(0),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::http::HttpError;
    use super::super::os::{CpuTimes, MemInfo, OsSample, ProcStat, VmStat};
    use super::*;
    use std::time::UNIX_EPOCH;

    const STALE: Duration = Duration::from_secs(3);

    fn os(ticks: u64) -> OsReading {
        OsReading::from(OsSample {
            stat: ProcStat {
                cpu: CpuTimes {
                    user: ticks,
                    system: ticks,
                    idle: 2 * ticks,
                    ..CpuTimes::default()
                },
                procs_running: 2,
                procs_blocked: 1,
            },
            mem: MemInfo {
                total: 1000,
                free: 400,
                available: 600,
                swap_total: 100,
                swap_free: 100,
            },
            vm: VmStat { pswpout: ticks },
        })
    }

    fn web(requests: u64) -> WebReading {
        WebReading {
            requests: Some(requests),
            own_requests: 1,
            busy_workers: 3,
            max_workers: Some(64),
        }
    }

    fn refused() -> WebError {
        WebError::Http {
            url: "http://127.0.0.1:8080/nginx_status".into(),
            source: HttpError::Refused {
                target: "127.0.0.1:8080".into(),
            },
        }
    }

    fn status_500() -> WebError {
        WebError::Status {
            url: "http://127.0.0.1:8080/".into(),
            status: 500,
            expected: "200".into(),
        }
    }

    fn body(s: &ReporterState, now: Instant) -> ReportBody {
        s.snapshot()
            .report(
                &ServerName::from("w1"),
                Round(7),
                None,
                now,
                UNIX_EPOCH + Duration::from_secs(1000),
                STALE,
            )
            .body
    }

    fn tempfail(b: &ReportBody) -> &str {
        match b {
            ReportBody::TempFail { reason } => reason,
            other => panic!("expected TEMPFAIL, got {other:?}"),
        }
    }

    fn panic_reason(b: &ReportBody) -> &str {
        match b {
            ReportBody::Panic { reason } => reason,
            other => panic!("expected PANIC, got {other:?}"),
        }
    }

    #[test]
    fn tempfail_until_two_readings_then_stats() {
        let t0 = Instant::now();
        let mut s = ReporterState::new(3);
        assert_eq!(tempfail(&body(&s, t0)), "no statistics yet (just started)");
        s.handle_gathering(t0, Ok(os(100)), Ok(web(10)), BypassStatus::Off);
        assert!(tempfail(&body(&s, t0)).contains("a period needs two"));
        let t1 = t0 + Duration::from_secs(2);
        s.handle_gathering(t1, Ok(os(200)), Ok(web(31)), BypassStatus::Off);
        let ReportBody::Stats(st) = body(&s, t1) else {
            panic!("expected stats")
        };
        assert_eq!(st.period, Duration::from_secs(2));
        assert_eq!(st.web.hits, 20, "21 counted, 1 of them ours");
        assert_eq!((st.web.busy_workers, st.web.max_workers), (3, 64));
        assert_eq!(
            (st.cpu_user, st.cpu_system, st.cpu_idle),
            (Some(0.25), Some(0.25), 0.5)
        );
        assert_eq!(st.pages_out_per_sec, Some(50.0));
        assert_eq!((st.procs_running, st.procs_blocked), (Some(2), Some(1)));
        assert_eq!(st.free_virtual_bytes, 700);
    }

    #[test]
    fn report_carries_name_round_and_generation() {
        let s = ReporterState::new(3);
        let r = s.snapshot().report(
            &ServerName::from("w9"),
            Round(42),
            Some(Generation(5)),
            Instant::now(),
            SystemTime::now(),
            STALE,
        );
        assert_eq!(r.server, ServerName::from("w9"));
        assert_eq!(r.round, Round(42));
        assert_eq!(r.generation, Some(Generation(5)));
    }

    #[test]
    fn refused_is_panic_at_once_and_recovery_is_normal() {
        let t0 = Instant::now();
        let mut s = ReporterState::new(3);
        s.handle_gathering(t0, Ok(os(1)), Ok(web(1)), BypassStatus::Off);
        let t1 = t0 + Duration::from_secs(1);
        s.handle_gathering(t1, Ok(os(2)), Err(refused()), BypassStatus::Off);
        assert_eq!(
            panic_reason(&body(&s, t1)),
            "web server down: http://127.0.0.1:8080/nginx_status: connection to 127.0.0.1:8080 refused"
        );
        assert_eq!(s.snapshot().condition_since, 2);
        s.handle_gathering(t1, Ok(os(2)), Err(refused()), BypassStatus::Off);
        assert_eq!(
            s.snapshot().condition_since,
            2,
            "still down since gathering 2"
        );
        // Back: one reading to start a period (TEMPFAIL), then statistics; the restarted
        // server's counter starts again and no hits are invented across the outage.
        let t2 = t1 + Duration::from_secs(1);
        s.handle_gathering(t2, Ok(os(3)), Ok(web(1)), BypassStatus::Off);
        tempfail(&body(&s, t2));
        let t3 = t2 + Duration::from_secs(1);
        s.handle_gathering(t3, Ok(os(4)), Ok(web(6)), BypassStatus::Off);
        let ReportBody::Stats(st) = body(&s, t3) else {
            panic!("expected stats")
        };
        assert_eq!(st.web.hits, 4);
    }

    #[test]
    fn other_failures_panic_after_n_in_a_row() {
        let t0 = Instant::now();
        let mut s = ReporterState::new(3);
        s.handle_gathering(t0, Ok(os(1)), Ok(web(1)), BypassStatus::Off);
        for n in 1..=2 {
            s.handle_gathering(t0, Ok(os(1)), Err(status_500()), BypassStatus::Off);
            let r = body(&s, t0);
            assert!(
                tempfail(&r).contains(&format!("({n} of 3 before PANIC)")),
                "{r:?}"
            );
        }
        // A success in between resets the count.
        s.handle_gathering(t0, Ok(os(1)), Ok(web(1)), BypassStatus::Off);
        for _ in 0..2 {
            s.handle_gathering(t0, Ok(os(1)), Err(status_500()), BypassStatus::Off);
            tempfail(&body(&s, t0));
        }
        s.handle_gathering(t0, Ok(os(1)), Err(status_500()), BypassStatus::Off);
        assert_eq!(
            panic_reason(&body(&s, t0)),
            "web server failed 3 readings in a row: http://127.0.0.1:8080/: status 500, expected 200"
        );
    }

    #[test]
    fn os_failure_is_tempfail() {
        let t0 = Instant::now();
        let mut s = ReporterState::new(3);
        let err = OsError::Missing {
            file: "/proc/stat",
            field: "cpu",
        };
        s.handle_gathering(t0, Err(err), Ok(web(1)), BypassStatus::Off);
        assert_eq!(
            tempfail(&body(&s, t0)),
            "OS statistics unreadable: /proc/stat: field `cpu` is missing"
        );
    }

    #[test]
    fn stale_snapshot_is_tempfail() {
        let t0 = Instant::now();
        let mut s = ReporterState::new(3);
        s.handle_gathering(t0, Ok(os(1)), Ok(web(1)), BypassStatus::Off);
        s.handle_gathering(t0, Ok(os(2)), Ok(web(2)), BypassStatus::Off);
        assert!(matches!(body(&s, t0 + STALE), ReportBody::Stats(_)));
        let late = body(&s, t0 + STALE + Duration::from_millis(1));
        assert!(tempfail(&late).contains("the gatherer is late"));
        // Even a PANIC turns into TEMPFAIL when it is stale: we no longer know.
        s.handle_gathering(t0, Ok(os(2)), Err(refused()), BypassStatus::Off);
        tempfail(&body(&s, t0 + STALE * 2));
    }

    #[test]
    fn bypass_wins_and_expires() {
        let t0 = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1000);
        let mut s = ReporterState::new(3);
        let b = Bypass::new("disk swap", Some(Duration::from_secs(60)), wall);
        // BYPASS beats PANIC: a server taken down for maintenance pages nobody.
        s.handle_gathering(t0, Ok(os(1)), Err(refused()), BypassStatus::On(b));
        let rep = |secs| {
            s.snapshot()
                .report(
                    &ServerName::from("w1"),
                    Round(1),
                    None,
                    t0,
                    UNIX_EPOCH + Duration::from_secs(secs),
                    STALE,
                )
                .body
        };
        assert_eq!(
            rep(1000),
            ReportBody::Bypass {
                reason: "disk swap (bypass ends in 60s)".into()
            }
        );
        // Expired: the server's real condition shows again.
        panic_reason(&rep(1060));
    }

    #[test]
    fn unreadable_bypass_file_counts_as_bypass() {
        let t0 = Instant::now();
        let mut s = ReporterState::new(3);
        let status = BypassStatus::from_read(Err(BypassError::Syntax {
            line: 1,
            reason: "expected `key = value`".into(),
        }));
        s.handle_gathering(t0, Ok(os(1)), Ok(web(1)), status);
        assert!(matches!(body(&s, t0), ReportBody::Bypass { .. }));
    }

    #[test]
    fn counter_going_back_counts_from_restart() {
        let t0 = Instant::now();
        let mut s = ReporterState::new(3);
        s.handle_gathering(t0, Ok(os(1)), Ok(web(500)), BypassStatus::Off);
        s.handle_gathering(t0, Ok(os(2)), Ok(web(8)), BypassStatus::Off);
        let ReportBody::Stats(st) = body(&s, t0) else {
            panic!("expected stats")
        };
        assert_eq!(st.web.hits, 7);
    }

    // ---- fast failover (issue 23): rules 4-6 of the module docs ----

    const WINDOW: Duration = Duration::from_secs(30);
    const HOLD: Duration = Duration::from_secs(10);

    fn fast() -> ReporterState {
        ReporterState::with_fast_failover(
            3,
            FlapDamping {
                window: WINDOW,
                hold: HOLD,
            },
        )
    }

    /// A fast-failover state with statistics, at `t0` and `t0 + 1 s`.
    fn fast_with_stats(t0: Instant) -> ReporterState {
        let mut s = fast();
        s.handle_gathering(t0, Ok(os(1)), Ok(web(1)), BypassStatus::Off);
        s.handle_gathering(t0 + SEC, Ok(os(2)), Ok(web(2)), BypassStatus::Off);
        assert!(matches!(body(&s, t0 + SEC), ReportBody::Stats(_)));
        s
    }

    const SEC: Duration = Duration::from_secs(1);

    fn probe_refused() -> ProbeResult {
        ProbeResult::Refused {
            reason: "connection to 127.0.0.1:8080 refused".into(),
        }
    }

    fn probe_silent() -> ProbeResult {
        ProbeResult::NoAnswer {
            reason: "no answer from 127.0.0.1:8080 within 200ms".into(),
        }
    }

    #[test]
    fn a_refused_probe_is_panic_at_once_with_one_urgent_report() {
        let t0 = Instant::now();
        let mut s = fast_with_stats(t0);
        let t = t0 + SEC + 100 * MS;
        s.handle_probe(t, probe_refused());
        let reason = "web server down: liveness probe: connection to 127.0.0.1:8080 refused";
        assert_eq!(panic_reason(&body(&s, t)), reason);
        assert_eq!(
            s.poll_urgent(),
            Some(Urgent {
                at: t,
                reason: reason.into()
            })
        );
        assert_eq!(s.poll_urgent(), None, "polled once");
        // Still down: no second urgent report.
        s.handle_probe(t + 100 * MS, probe_refused());
        assert_eq!(s.poll_urgent(), None);
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn silent_probes_panic_only_after_panic_after_in_a_row() {
        let t0 = Instant::now();
        let mut s = fast_with_stats(t0);
        let t = t0 + SEC;
        s.handle_probe(t, probe_silent());
        s.handle_probe(t, probe_silent());
        assert!(matches!(body(&s, t), ReportBody::Stats(_)));
        // An answer in between starts the count again.
        s.handle_probe(t, ProbeResult::Up);
        s.handle_probe(t, probe_silent());
        s.handle_probe(t, probe_silent());
        assert!(matches!(body(&s, t), ReportBody::Stats(_)));
        assert_eq!(s.poll_urgent(), None);
        s.handle_probe(t, probe_silent());
        assert_eq!(
            panic_reason(&body(&s, t)),
            "web server down: 3 liveness probes in a row failed: no answer from 127.0.0.1:8080 within 200ms"
        );
        assert!(s.poll_urgent().is_some());
    }

    #[test]
    fn a_refused_reading_raises_the_urgent_report_too() {
        let t0 = Instant::now();
        let mut s = fast_with_stats(t0);
        let t = t0 + 2 * SEC;
        s.handle_gathering(t, Ok(os(3)), Err(refused()), BypassStatus::Off);
        let u = s.poll_urgent().expect("urgent");
        assert_eq!(u.at, t);
        assert!(u.reason.starts_with("web server down: http://"), "{u:?}");
    }

    #[test]
    fn one_fall_then_recovery_is_not_held() {
        let t0 = Instant::now();
        let mut s = fast_with_stats(t0);
        let t = t0 + 2 * SEC;
        s.handle_probe(t, probe_refused());
        s.handle_probe(t + SEC, ProbeResult::Up);
        s.handle_gathering(t + SEC, Ok(os(3)), Ok(web(1)), BypassStatus::Off);
        tempfail(&body(&s, t + SEC));
        s.handle_gathering(t + 2 * SEC, Ok(os(4)), Ok(web(3)), BypassStatus::Off);
        assert!(matches!(body(&s, t + 2 * SEC), ReportBody::Stats(_)));
        assert!(!s.is_held());
    }

    #[test]
    fn no_urgent_report_while_held() {
        let t0 = Instant::now();
        let mut s = fast_with_stats(t0);
        let t = t0 + 2 * SEC;
        s.handle_probe(t, probe_refused());
        assert_eq!(s.poll_urgent().map(|u| u.at), Some(t));
        s.handle_probe(t + SEC, ProbeResult::Up);
        // The fall that starts the hold is still news to the master.
        s.handle_probe(t + 2 * SEC, probe_refused());
        assert!(s.is_held());
        assert_eq!(s.poll_urgent().map(|u| u.at), Some(t + 2 * SEC));
        // Falls during the hold are not.
        for i in 0..5u32 {
            s.handle_probe(t + (3 + 2 * i) * SEC, ProbeResult::Up);
            s.handle_probe(t + (4 + 2 * i) * SEC, probe_refused());
            assert_eq!(s.poll_urgent(), None, "fall {i} during the hold");
        }
        // Up for the hold time: released; a fall is urgent again (and held again: still
        // within the window of the last falls).
        let up = t + 15 * SEC;
        s.handle_probe(up, ProbeResult::Up);
        s.handle_probe(up + HOLD, ProbeResult::Up);
        assert!(!s.is_held());
        s.handle_probe(up + HOLD + SEC, probe_refused());
        assert_eq!(s.poll_urgent().map(|u| u.at), Some(up + HOLD + SEC));
        assert!(s.is_held());
    }

    #[test]
    fn a_flapping_server_is_held_panic_until_up_for_the_hold_time() {
        let t0 = Instant::now();
        let mut s = fast_with_stats(t0);
        let mut t = t0 + 2 * SEC;
        // Down, up, down within the window: held.
        s.handle_probe(t, probe_refused());
        assert!(s.poll_urgent().is_some(), "the first fall is urgent");
        s.handle_probe(t + 300 * MS, ProbeResult::Up);
        assert!(!s.is_held(), "one fall is not a flap");
        t += 600 * MS;
        s.handle_probe(t, probe_refused());
        assert!(s.is_held());
        assert!(
            s.poll_urgent().is_some(),
            "the fall that starts the hold is urgent"
        );
        // Up again, readings fine: still PANIC, with the reason, until up for HOLD.
        t += 300 * MS;
        s.handle_probe(t, ProbeResult::Up);
        let up_at = t;
        s.handle_gathering(t, Ok(os(3)), Ok(web(1)), BypassStatus::Off);
        s.handle_gathering(t + SEC, Ok(os(4)), Ok(web(3)), BypassStatus::Off);
        assert_eq!(
            panic_reason(&body(&s, t + SEC)),
            "web server flapping: down 2 times within 30 s; held PANIC until up for 10 s (up for 1000 ms)"
        );
        // A fall during the hold starts it again (and raises nothing urgent).
        t += 5 * SEC;
        s.handle_probe(t, probe_refused());
        s.handle_probe(t + 100 * MS, ProbeResult::Up);
        let up_at_2 = t + 100 * MS;
        s.handle_gathering(up_at + HOLD, Ok(os(5)), Ok(web(5)), BypassStatus::Off);
        panic_reason(&body(&s, up_at + HOLD));
        assert!(s.is_held(), "the hold restarted at the fall");
        // Up continuously for HOLD since then: released, statistics at once.
        s.handle_probe(up_at_2 + HOLD, ProbeResult::Up);
        assert!(!s.is_held());
        s.handle_gathering(up_at_2 + HOLD, Ok(os(6)), Ok(web(9)), BypassStatus::Off);
        assert!(matches!(body(&s, up_at_2 + HOLD), ReportBody::Stats(_)));
        let urgent: Vec<Urgent> = std::iter::from_fn(|| s.poll_urgent()).collect();
        assert_eq!(urgent, vec![], "no fall during the hold was urgent");
    }

    #[test]
    fn without_fast_failover_probes_are_ignored_and_nothing_is_held() {
        let t0 = Instant::now();
        let mut s = ReporterState::new(3);
        s.handle_gathering(t0, Ok(os(1)), Ok(web(1)), BypassStatus::Off);
        s.handle_gathering(t0 + SEC, Ok(os(2)), Ok(web(2)), BypassStatus::Off);
        s.handle_probe(t0 + SEC, probe_refused());
        assert!(matches!(body(&s, t0 + SEC), ReportBody::Stats(_)));
        // Readings down, up, down, up: the condition follows the latest reading.
        for (i, up) in [false, true, false, true, true].into_iter().enumerate() {
            let t = t0 + SEC * (i as u32 + 2);
            let w = if up {
                Ok(web(i as u64 + 3))
            } else {
                Err(refused())
            };
            s.handle_gathering(t, Ok(os(i as u64 + 3)), w, BypassStatus::Off);
            assert_eq!(s.poll_urgent(), None);
        }
        assert!(matches!(body(&s, t0 + 6 * SEC), ReportBody::Stats(_)));
        assert!(!s.is_held());
    }
}
