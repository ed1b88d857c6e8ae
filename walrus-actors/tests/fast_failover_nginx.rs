//! Fast failover (issue 23) against a real nginx: the Reporter (its real gatherer, with
//! the liveness probe) and the master's [`RoundMachine`] driven together in real time.
//!
//! Area a1's home cluster c1 has one server, w1, a real nginx; area a2's home c2 has x1,
//! whose reports are synthetic. The round period is 1 s; the Reporter reads nginx every
//! 1 s (every 200 ms in the flapping test), and probes it every 100 ms.
//! - `the_last_server_killed_moves_its_area_before_the_next_round`: nginx is killed right
//!   after a round closed; a1's answer moves to c2 in an early round, before the next
//!   round was due (read from the machine's outputs and its timer).
//! - `a_flapping_server_moves_its_area_at_most_once_out_and_once_back`: nginx goes down
//!   and up every 300 ms for 10 s, then stays up: a1 moves out once and back once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use tokio::time::Instant;
use walrus_actors::controller::round::{Output, RoundConfig, RoundMachine};
use walrus_actors::model::{
    AreaName, ClusterName, Decision, Report, ReportBody, Round, ServerName,
};
use walrus_actors::reporter::{self, ReporterHandle};
use walrus_testkit::actors::fixtures::{stats, topology_of};
use walrus_testkit::actors::reporter::{Kind, TempDir, WebServer};

/// x1's figures: 10 of 100 workers busy.
fn x1_report(round: Round) -> Report {
    Report {
        server: ServerName::from("x1"),
        round,
        body: ReportBody::Stats(stats(10, 100, 0)),
        generation: None,
    }
}

/// What the test saw of one closed round.
#[derive(Debug, Clone)]
struct Closed {
    at: Instant,
    decision: Decision,
    early: bool,
}

/// The master and w1's Reporter, driven together.
struct Rig {
    machine: RoundMachine,
    reporter: ReporterHandle,
    urgent: ReporterHandle,
    last_round: Round,
    closed: Vec<Closed>,
    pending: Option<Decision>,
}

impl Rig {
    fn new(fast_failover: bool, reporter: ReporterHandle) -> Self {
        let mut config = RoundConfig {
            fast_failover,
            ..RoundConfig::default()
        };
        // The machine is shared with other builds: no CPU in the load.
        config.load.use_cpu = false;
        let mut machine = RoundMachine::new(
            config,
            topology_of(&[
                ("a1", "c1", "w1", "10.1.0.1"),
                ("a2", "c2", "x1", "10.2.0.1"),
            ]),
        );
        machine.handle_became_master(Instant::now().into_std());
        Self {
            machine,
            urgent: reporter.clone(),
            reporter,
            last_round: Round(0),
            closed: Vec::new(),
            pending: None,
        }
    }

    /// Performs the machine's outputs (each Reporter answers a request at once).
    fn perform(&mut self) {
        while let Some(out) = self.machine.poll_output() {
            let now = Instant::now();
            match out {
                Output::RequestReports { round } => {
                    self.last_round = round;
                    // w1's report may be a duplicate of its urgent one: ignored then.
                    let _ = self
                        .machine
                        .handle_report(now.into_std(), self.reporter.report(round));
                    self.machine
                        .handle_report(now.into_std(), x1_report(round))
                        .unwrap();
                }
                Output::Multicast(d) => self.pending = Some(d),
                Output::Status(s) => {
                    let decision = self.pending.take().expect("decision before status");
                    assert_eq!(decision.round, s.round);
                    self.closed.push(Closed {
                        at: now,
                        decision,
                        early: s.early,
                    });
                }
                _ => {}
            }
        }
    }

    /// Runs until `stop` says so (checked after every input) or `until`.
    async fn run(&mut self, until: Instant, mut stop: impl FnMut(&Rig) -> bool) {
        let mut urgent_open = true;
        loop {
            self.perform();
            if stop(self) || Instant::now() >= until {
                return;
            }
            let deadline = self
                .machine
                .poll_timeout()
                .map_or(until, |t| Instant::from_std(t).min(until));
            tokio::select! {
                r = self.urgent.next_urgent(self.last_round), if urgent_open => match r {
                    Ok(report) => {
                        let _ = self.machine.handle_urgent(Instant::now().into_std(), report);
                    }
                    Err(_) => urgent_open = false,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    self.machine.handle_timeout(Instant::now().into_std());
                }
            }
        }
    }

    fn a1_cluster(&self) -> Option<ClusterName> {
        self.closed
            .last()
            .map(|c| c.decision.answers[&AreaName::from("a1")].cluster.clone())
    }

    /// a1's moves so far: (round, from, to).
    fn a1_moves(&self) -> Vec<(Round, String, String)> {
        self.closed
            .iter()
            .flat_map(|c| {
                c.decision
                    .changes
                    .iter()
                    .map(move |ch| (c.decision.round, ch))
            })
            .filter(|(_, ch)| ch.area.0 == "a1" && ch.from.as_ref() != Some(&ch.to))
            .map(|(r, ch)| {
                (
                    r,
                    ch.from.as_ref().map_or("-".into(), |f| f.0.clone()),
                    ch.to.0.clone(),
                )
            })
            .collect()
    }
}

/// Starts nginx as w1 and its Reporter (readings every `interval`, fast failover as given).
fn start_w1(
    dir: &TempDir,
    interval: Duration,
    fast_failover: bool,
) -> (WebServer, ReporterHandle, tokio::sync::oneshot::Sender<()>) {
    let server = WebServer::start(Kind::Nginx, dir.path());
    let mut config = walrus_testkit::actors::reporter::config_for(&server, dir.path());
    config.interval = interval;
    if !fast_failover {
        config.fast_failover = None;
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (handle, _task) = reporter::spawn(config, async {
        let _ = stopped.await;
    })
    .unwrap();
    (server, handle, stop)
}

/// Runs rounds until w1 reports statistics and a1 is home on c1.
async fn warm_up(rig: &mut Rig) {
    let until = Instant::now() + walrus_testkit::actors::reporter::PATIENCE;
    rig.run(until, |r| {
        r.closed.len() >= 3
            && r.a1_cluster() == Some("c1".into())
            && matches!(r.reporter.report(Round(0)).body, ReportBody::Stats(_))
    })
    .await;
    assert_eq!(rig.a1_cluster(), Some("c1".into()), "{:#?}", rig.closed);
    // Wait for a round to close, so the kill falls between rounds.
    let n = rig.closed.len();
    rig.run(until, |r| r.closed.len() > n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_server_killed_moves_its_area_before_the_next_round() {
    let dir = TempDir::new("fast-failover-kill");
    let (mut server, handle, _stop) = start_w1(&dir, Duration::from_secs(1), true);
    let mut rig = Rig::new(true, handle);
    warm_up(&mut rig).await;
    let last = rig.closed.last().cloned().expect("a closed round");
    let next_due = Instant::from_std(rig.machine.poll_timeout().expect("master"));
    server.stop();
    let killed = Instant::now();
    assert!(killed < next_due, "the kill fell between rounds");
    rig.run(killed + Duration::from_secs(5), |r| {
        r.a1_cluster() == Some("c2".into())
    })
    .await;
    let moved = rig.closed.last().cloned().expect("a closed round");
    let after = moved.at.saturating_duration_since(killed);
    eprintln!(
        "killed {} ms after round {} closed; a1 moved in round {} (early: {}) {} ms after the kill; \
         the next round was due {} ms after the kill",
        killed.saturating_duration_since(last.at).as_millis(),
        last.decision.round,
        moved.decision.round,
        moved.early,
        after.as_millis(),
        next_due.saturating_duration_since(killed).as_millis(),
    );
    assert_eq!(rig.a1_cluster(), Some("c2".into()), "{:#?}", rig.closed);
    assert_eq!(moved.decision.round, Round(last.decision.round.0 + 1));
    assert!(moved.early, "{moved:#?}");
    assert!(
        moved.at < next_due,
        "a1 moved {} ms after the next round was due",
        moved.at.saturating_duration_since(next_due).as_millis()
    );
    let change = &moved.decision.changes[0];
    assert_eq!(change.phase, 3);
    assert!(
        change
            .reason
            .starts_with("early round (urgent report from w1): c1 has no working server"),
        "{change:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_server_moves_its_area_at_most_once_out_and_once_back() {
    let dir = TempDir::new("fast-failover-flap");
    // Readings every 200 ms: a server up for 300 ms can give two readings, i.e. fresh
    // statistics, which without damping would bring a1 home between two falls.
    let (server, handle, _stop) = start_w1(&dir, Duration::from_millis(200), true);
    let mut rig = Rig::new(true, handle);
    warm_up(&mut rig).await;
    // Down and up every 300 ms for 10 s, then up for good.
    let flapping = std::thread::spawn(move || {
        let mut server = server;
        let end = std::time::Instant::now() + Duration::from_secs(10);
        let mut flaps = 0;
        while std::time::Instant::now() < end {
            server.stop();
            std::thread::sleep(Duration::from_millis(300));
            server.restart();
            flaps += 1;
            std::thread::sleep(Duration::from_millis(300));
        }
        (server, flaps)
    });
    let flap_end = Instant::now() + Duration::from_secs(10);
    rig.run(flap_end, |_| false).await;
    let (_server, flaps) = tokio::task::spawn_blocking(move || flapping.join().unwrap())
        .await
        .unwrap();
    let during = rig.a1_moves();
    // Held for 10 s after the last fall, then a normal round brings a1 home.
    rig.run(Instant::now() + Duration::from_secs(25), |r| {
        r.a1_cluster() == Some("c1".into())
    })
    .await;
    let moves = rig.a1_moves();
    eprintln!("{flaps} flaps; a1's moves during them {during:?}, in all {moves:?}");
    assert!(flaps >= 8, "only {flaps} flaps");
    let out = moves.iter().filter(|m| m.2 == "c2").count();
    let back = moves.iter().filter(|m| m.2 == "c1").count();
    assert!(out <= 1 && back <= 1, "{flaps} flaps moved a1 {moves:?}");
    assert_eq!((out, back), (1, 1), "a1 moved out and came home: {moves:?}");
}
