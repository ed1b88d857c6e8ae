//! The four-phase assignment of areas to clusters (paper §6.1, Figure 6.1), as one pure
//! function: [`assign`].
//!
//! Inputs ([`Input`]): the topology, this round's [`Observation`] of every server, the
//! [`History`] carried from earlier rounds (last round's loads, open incidents, per-area
//! hysteresis), the current answers, the [`Params`], the round number and `now`.
//! Output ([`Outcome`]): every area's new answer, a [`Change`] with its reason for every
//! area whose answer changed, the notifications to send, each server's effective state
//! (for the status page) and the history for the next round. Nothing here touches a clock,
//! a socket or a random source: the same input gives the same output.
//!
//! In order of importance (paper §6.1): every area has a working server; areas use local
//! servers; load is balanced.
//!
//! - **Phase 1, problem notification.** BYPASS and PANIC count as dead; PANIC notifies a
//!   human once per incident and again when the server works again. No answer counts as
//!   dead too, and (beyond the paper, its proposed future work) notifies once the server
//!   has been silent for [`Params::dead_after`]. TEMPFAIL uses last round's load; a
//!   TEMPFAIL server with no last round (just started, or dead last round) counts as
//!   working at exactly the threshold: it keeps an area served if nothing better works,
//!   but is not "below threshold", so it attracts no area by itself.
//! - **Phase 2, locality.** Every area whose home cluster has a working server below
//!   `threshold` is assigned home. An area that is away from home returns only when a home
//!   server is below `threshold - return_margin` (hysteresis, see below).
//! - **Phase 3, availability.** Every area pointing at a cluster with no working server (or
//!   at nothing yet) goes to working clusters round-robin, best (least loaded) first, even
//!   if they are over threshold.
//! - **Phase 4, load balancing.** Remaining areas, worst (most loaded cluster) first, each
//!   to the best cluster not yet given an area in this phase, only when that cluster's load
//!   is lower than the current one's by at least `margin`. At most one area per cluster per
//!   round (paper §6.2: conservatism against oscillation).
//!
//! **Record set.** The working servers of the area's cluster below threshold, or all its
//! working servers if none is below; least loaded first; at most `max_records` addresses.
//! Beyond the paper, with a small hysteresis (`record_hysteresis`): a server already in
//! the answer stays until `threshold + record_hysteresis`, so a server whose load jitters
//! around the threshold does not cause a DNS update every round.
//! An answer whose cluster and address *set* are unchanged is kept as it was (order
//! included), so a reshuffle of loads alone never causes a DNS update. If no server
//! anywhere works, every area keeps its last answer (fail static) and a human is told.
//!
//! **Hysteresis (beyond the paper).** The oscillation test showed a loop the paper does not
//! guard against: an area whose own traffic pushes its home cluster over threshold leaves
//! in phase 4, its home then falls below threshold, phase 2 brings it back, and so on
//! every other round. Two guards: an area away from home returns only when its home has a
//! server below `threshold - return_margin`; and when an area leaves home again within
//! `flap_window` rounds of returning, its own return margin doubles (capped at the
//! threshold). After staying home `flap_window` rounds the margin is reset. While the
//! area is away, a raised margin decays back towards `return_margin` with a half-life of
//! `return_margin_half_life` (default 10 minutes), so an area is never exiled for good:
//! once its home can take it again it returns; if its own traffic still overloads its
//! home, it costs about one round trip (two DNS changes) per half-life, not one per round.
//!
//! **Ping-pong damping (beyond the paper).** The Controller does not know how much traffic
//! each area brings. An area heavier than `margin` of a cluster's capacity (say its home
//! cluster is down and two idle clusters remain) would move back and forth in phase 4 in
//! the paper's algorithm: after each move the cluster it left is better by more than
//! `margin`. So when phase 4 moves an area again within `flap_window` rounds of its last
//! phase-4 move (straight back, or round a cycle of clusters), that area's extra required
//! gain doubles (starting at `margin`) and decays with `return_margin_half_life`. A heavy
//! area then settles after a few moves. The damping is also a backstop for the other two
//! guards (the oscillation tests show each guard's own effect with the others off).

use crate::controller::incident::Incident;
use crate::model::{AreaAnswer, AreaName, Change, ClusterName, Round, ServerName, Topology};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Tuning of the assignment. Every field has a documented default ([`Params::default`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// A server at or above this load gets no new clients except in dire need.
    /// Unit: load (1.0 = at capacity). Default: 0.8.
    pub threshold: f64,
    /// Phase 4 moves an area only to a cluster whose load is lower than its current
    /// cluster's by at least this much, to pay for the DNS update. Default: 0.2.
    pub margin: f64,
    /// At most this many addresses in an area's answer, so it fits one UDP datagram.
    /// Default: 20.
    pub max_records: usize,
    /// Notify a human when a server has not answered for this long (beyond the paper).
    /// Default: 5 minutes.
    pub dead_after: Duration,
    /// Hysteresis: an area away from home returns only when a home server is below
    /// `threshold - return_margin`. Default: 0.1.
    pub return_margin: f64,
    /// Rounds after a return home within which leaving again counts as a flap (and doubles
    /// that area's return margin); also the rounds at home after which the margin resets.
    /// Default: 10.
    pub flap_window: u64,
    /// While an area is away, a return margin raised by flaps halves over this time, down
    /// to `return_margin`. Zero: no decay (an area that flapped enough stays away).
    /// Default: 10 minutes.
    pub return_margin_half_life: Duration,
    /// Record-set hysteresis: a server already in an area's answer stays while below
    /// `threshold + record_hysteresis`, and ranks as if this much less loaded when the
    /// answer is cut to `max_records`. Default: 0.05.
    pub record_hysteresis: f64,
    /// Beyond the paper: a server whose content is more than this many generations behind
    /// the newest announced one is left out like BYPASS, so no client is sent to stale
    /// content (see [`super::round::stale_content`]). Unit: generations. Default: 1.
    pub max_generation_lag: u64,
    /// Beyond the paper (issue 18): a generation counts for `max_generation_lag` only once
    /// it has been announced for this long — the time a deploy needs to reach the
    /// farthest replica. A replica still pulling it is not stale; one still behind after
    /// this is (see [`super::round::stale_content`]). Zero: lag counts from the
    /// announcement (the rule before issue 18). Default: 10 minutes.
    pub generation_grace: Duration,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            threshold: 0.8,
            margin: 0.2,
            max_records: 20,
            dead_after: Duration::from_secs(300),
            return_margin: 0.1,
            flap_window: 10,
            return_margin_half_life: Duration::from_secs(600),
            record_hysteresis: 0.05,
            max_generation_lag: 1,
            generation_grace: Duration::from_secs(600),
        }
    }
}

/// A [`Params`] value that would make the assignment meaningless.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamsError {
    /// A load figure that must be a finite number in the given range is not.
    #[error("{field} = {value} must be a finite number in {range}")]
    OutOfRange {
        /// The parameter's name.
        field: &'static str,
        /// The value given.
        value: f64,
        /// The accepted range, for the message.
        range: &'static str,
    },
    /// `max_records` is outside 1 to [`MAX_RECORDS`].
    #[error("max_records = {0} is out of range; expected 1 to {MAX_RECORDS} (one UDP datagram)")]
    Records(usize),
}

impl ParamsError {
    /// The parameter's name (as in the `[controller]` section).
    pub fn field(&self) -> &'static str {
        match self {
            ParamsError::OutOfRange { field, .. } => field,
            ParamsError::Records(_) => "max_records",
        }
    }
}

/// Most addresses an answer may hold (keeps it in one UDP datagram).
pub const MAX_RECORDS: usize = 30;

impl Params {
    /// Checks the parameters once, when the configuration is loaded.
    pub fn validate(&self) -> Result<(), ParamsError> {
        let check = |field, value: f64, ok: bool, range| {
            if value.is_finite() && ok {
                Ok(())
            } else {
                Err(ParamsError::OutOfRange {
                    field,
                    value,
                    range,
                })
            }
        };
        check(
            "threshold",
            self.threshold,
            self.threshold > 0.0 && self.threshold <= 10.0,
            "(0, 10] (1.0 = at capacity)",
        )?;
        check(
            "margin",
            self.margin,
            (0.0..=1.0).contains(&self.margin),
            "[0, 1]",
        )?;
        check(
            "return_margin",
            self.return_margin,
            (0.0..=self.threshold).contains(&self.return_margin),
            "[0, threshold]",
        )?;
        check(
            "record_hysteresis",
            self.record_hysteresis,
            self.record_hysteresis >= 0.0,
            "[0, inf)",
        )?;
        if !(1..=MAX_RECORDS).contains(&self.max_records) {
            return Err(ParamsError::Records(self.max_records));
        }
        Ok(())
    }
}

/// What this round said about one server (from its report, or its silence).
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// Fresh statistics, already turned into a load by the load formula.
    Load(f64),
    /// TEMPFAIL: no statistics this round; use last round's.
    TempFail,
    /// BYPASS: leave me out this round.
    Bypass {
        /// The Reporter's reason.
        reason: String,
    },
    /// PANIC: leave me out and tell a human.
    Panic {
        /// The Reporter's reason.
        reason: String,
    },
    /// No (usable) report arrived before the round's report timeout.
    NoAnswer,
}

/// Where a working server's load figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadBasis {
    /// This round's report.
    Fresh,
    /// TEMPFAIL: last round's figure.
    LastRound,
    /// TEMPFAIL with no last round: taken as exactly the threshold.
    Unknown,
}

/// Why a server counts as dead this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadCause {
    /// It did not answer (it may only be unreachable).
    NoAnswer,
    /// It answered BYPASS.
    Bypass,
    /// It answered PANIC.
    Panic,
}

/// A server's effective state this round, after phase 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ServerState {
    /// It may be given clients.
    Working {
        /// Its load (1.0 = at capacity).
        load: f64,
        /// Where that figure comes from.
        basis: LoadBasis,
    },
    /// It gets no clients this round.
    Dead(DeadCause),
}

/// What the assignment remembers between rounds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// Per server: last load, open incidents.
    pub servers: BTreeMap<ServerName, ServerHistory>,
    /// Per area: hysteresis state.
    pub areas: BTreeMap<AreaName, AreaHistory>,
    /// True while no server anywhere works (fail static; the human was told once).
    pub fail_static: bool,
}

/// One server's memory between rounds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerHistory {
    /// Its load last round, if it worked with a known load (used on TEMPFAIL).
    pub last_load: Option<f64>,
    /// A PANIC incident is open (the human was told; tell again when it works).
    pub panic_open: bool,
    /// When it stopped answering, if it is silent now.
    pub silent_since: Option<Instant>,
    /// The human was told it has been silent longer than `dead_after`.
    pub dead_notified: bool,
}

/// One area's memory between rounds (hysteresis against returning home in a loop).
#[derive(Debug, Clone, PartialEq)]
pub struct AreaHistory {
    /// Its current return margin (starts at [`Params::return_margin`]).
    pub return_margin: f64,
    /// The round it last returned home in phase 2, while that is within the flap window.
    pub returned_home: Option<Round>,
    /// When `return_margin` was last raised by a flap (the decay starts there).
    pub raised_at: Option<Instant>,
    /// The round of its last phase-4 move: moving again within `flap_window` rounds is a
    /// ping-pong (straight back, or round a cycle of clusters).
    pub last_move: Option<Round>,
    /// Extra gain (above `margin`) phase 4 needs to move this area, raised on each
    /// ping-pong; decays with the same half-life as the return margin.
    pub move_extra: f64,
    /// When `move_extra` was last raised.
    pub move_raised_at: Option<Instant>,
}

impl AreaHistory {
    /// The return margin in force at `now`: the raised margin decayed with the half-life,
    /// never below [`Params::return_margin`].
    pub fn effective_margin(&self, p: &Params, now: Instant) -> f64 {
        decayed(self.return_margin, self.raised_at, p, now).max(p.return_margin)
    }

    /// The extra phase-4 gain in force at `now` (decayed; 0 when negligible).
    pub fn effective_move_extra(&self, p: &Params, now: Instant) -> f64 {
        let extra = decayed(self.move_extra, self.move_raised_at, p, now);
        if extra < MIN_MOVE_EXTRA {
            0.0
        } else {
            extra
        }
    }
}

/// `value`, raised at `raised_at`, halved every `return_margin_half_life` since then
/// (unchanged when never raised or when the half-life is zero).
fn decayed(value: f64, raised_at: Option<Instant>, p: &Params, now: Instant) -> f64 {
    let Some(at) = raised_at else {
        return value;
    };
    if p.return_margin_half_life.is_zero() {
        return value;
    }
    let halves =
        now.saturating_duration_since(at).as_secs_f64() / p.return_margin_half_life.as_secs_f64();
    value * 0.5f64.powf(halves)
}

/// Below this, a decayed ping-pong damping counts as gone.
const MIN_MOVE_EXTRA: f64 = 0.01;
/// Ping-pong damping never grows beyond this (loads differ by less in practice).
const MAX_MOVE_EXTRA: f64 = 10.0;

/// Everything one round of the assignment needs.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Areas with their home cluster, clusters with their servers.
    pub topology: &'a Topology,
    /// This round's observation per server; a server missing here did not answer.
    pub observations: &'a BTreeMap<ServerName, Observation>,
    /// What earlier rounds left ([`Outcome::history`] of the previous round).
    pub history: &'a History,
    /// The answers in force now (the last decision); empty at the very first round.
    pub current: &'a BTreeMap<AreaName, AreaAnswer>,
    /// Tuning.
    pub params: &'a Params,
    /// This round's number.
    pub round: Round,
    /// This round's time (for `dead_after`).
    pub now: Instant,
    /// Operators' pins (`super::overrides`): area → (cluster, why). A pinned area goes to
    /// its cluster in phase 0 while that cluster has a working server.
    pub pins: &'a BTreeMap<AreaName, (ClusterName, String)>,
}

/// No pins (most rounds, and the tests of the paper's phases).
pub static NO_PINS: BTreeMap<AreaName, (ClusterName, String)> = BTreeMap::new();

/// The result of one round of the assignment.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Every area's answer after this round (changed or not).
    pub answers: BTreeMap<AreaName, AreaAnswer>,
    /// One entry per area whose answer changed, with phase and figures.
    pub changes: Vec<Change>,
    /// Notifications for a human, already deduplicated per incident.
    pub notifications: Vec<Incident>,
    /// Each server's effective state this round (status page).
    pub states: BTreeMap<ServerName, ServerState>,
    /// Each cluster's load (mean of its working servers'), None when none works.
    pub cluster_loads: BTreeMap<ClusterName, Option<f64>>,
    /// To pass as [`Input::history`] next round.
    pub history: History,
}

/// Runs one round of the four-phase assignment.
pub fn assign(input: &Input<'_>) -> Outcome {
    assign_with(input, Rules::ALL)
}

/// Switches that exist so tests can show a rule matters, and for the early rounds of fast
/// failover (no phase 4, see [`super::round`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    /// Phase 4 runs at all (off in an early round: only phases 1-3 and record sets).
    pub(crate) load_balancing: bool,
    /// Phase 4 gives at most one area to each cluster per round (paper §6.2).
    pub(crate) one_per_cluster: bool,
    /// Phase 4 damps an area that moves straight back to the cluster it just left.
    pub(crate) ping_pong_damping: bool,
    /// Phase 4 moves an area only between clusters with a load figure (not the threshold
    /// stand-in of a TEMPFAIL with no history): no first-round churn.
    pub(crate) known_loads_only: bool,
}

impl Rules {
    pub(crate) const ALL: Rules = Rules {
        load_balancing: true,
        one_per_cluster: true,
        ping_pong_damping: true,
        known_loads_only: true,
    };
}

/// Float slack when comparing loads against the margin.
const EPS: f64 = 1e-9;

/// Per cluster, what the phases need to know.
struct ClusterView<'a> {
    /// Working servers, least loaded first: (load, name).
    working: Vec<(f64, &'a ServerName)>,
    /// Mean load of the working servers.
    load: Option<f64>,
    /// Some working server's load is a figure (this round's or last round's), not the
    /// threshold stand-in for a TEMPFAIL with no history ([`LoadBasis::Unknown`]).
    known: bool,
}

impl ClusterView<'_> {
    fn min_load(&self) -> Option<f64> {
        self.working.first().map(|(l, _)| *l)
    }
}

/// How an area got its cluster this round.
struct Placement {
    cluster: ClusterName,
    phase: u8,
    reason: Reason,
}

/// Why a phase placed an area, as data: formatted only for the areas that change (most
/// areas stay where they are every round).
enum Reason {
    /// Phase 2: the home cluster has a working server below the bar.
    Home {
        home: ClusterName,
        min: f64,
        threshold: f64,
        /// The return margin, when the area was away from home.
        return_margin: Option<f64>,
    },
    /// Phase 3: the current cluster cannot serve.
    Availability {
        why: Unserved,
        target: ClusterName,
        load: f64,
    },
    /// Phase 4: a move to a better cluster.
    Balance {
        cur: ClusterName,
        cur_load: f64,
        best: ClusterName,
        best_load: f64,
        margin: f64,
        damping: f64,
    },
    /// Phase 4 left the area where it was.
    Stay,
    /// Phase 0: an operator's pin.
    Pinned { cluster: ClusterName, why: String },
}

/// Why an area needs phase 3.
enum Unserved {
    NothingYet,
    NoWorkingServer(ClusterName),
    NotInTopology(ClusterName),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Home {
                home,
                min,
                threshold,
                return_margin,
            } => {
                write!(
                    f,
                    "home cluster {home} has a working server at {min:.2}, below threshold \
                     {threshold:.2}"
                )?;
                if let Some(m) = return_margin {
                    write!(f, " minus return margin {m:.2}")?;
                }
                Ok(())
            }
            Reason::Availability { why, target, load } => {
                match why {
                    Unserved::NothingYet => write!(f, "no cluster assigned yet")?,
                    Unserved::NoWorkingServer(c) => write!(f, "{c} has no working server")?,
                    Unserved::NotInTopology(c) => write!(f, "{c} is not in the topology")?,
                }
                write!(f, "; round-robin to working cluster {target} at {load:.2}")
            }
            Reason::Balance {
                cur,
                cur_load,
                best,
                best_load,
                margin,
                damping,
            } => {
                write!(
                    f,
                    "{cur} at {cur_load:.2}; {best} at {best_load:.2} is better by at least \
                     the margin {margin:.2}"
                )?;
                if *damping > 0.0 {
                    write!(f, " plus ping-pong damping {damping:.2}")?;
                }
                Ok(())
            }
            Reason::Stay => write!(f, "stays"),
            Reason::Pinned { cluster, why } => write!(f, "pinned to {cluster}: {why}"),
        }
    }
}

pub(crate) fn assign_with(input: &Input<'_>, rules: Rules) -> Outcome {
    let p = input.params;
    let mut history = History {
        servers: BTreeMap::new(),
        areas: input.history.areas.clone(),
        fail_static: input.history.fail_static,
    };
    let mut notifications = Vec::new();
    // Collected as vectors and bulk-built into maps afterwards: much cheaper than one
    // insert per server at 20,000 servers (see examples/assign_bench.rs).
    let mut states_v = Vec::with_capacity(input.observations.len());
    let mut servers_v = Vec::with_capacity(input.observations.len());

    // Phase 1: problem notification, and each server's effective state.
    let mut clusters: BTreeMap<&ClusterName, ClusterView<'_>> = BTreeMap::new();
    for (cname, spec) in &input.topology.clusters {
        let mut working = Vec::new();
        let mut known = false;
        for server in spec.servers.keys() {
            let prev = input
                .history
                .servers
                .get(server)
                .cloned()
                .unwrap_or_default();
            let obs = input
                .observations
                .get(server)
                .unwrap_or(&Observation::NoAnswer);
            let (state, next) = phase1_server(server, cname, obs, &prev, input, &mut notifications);
            if let ServerState::Working { load, basis } = state {
                working.push((load, server));
                known |= basis != LoadBasis::Unknown;
            }
            states_v.push((server.clone(), state));
            servers_v.push((server.clone(), next));
        }
        working.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        let load = if working.is_empty() {
            None
        } else {
            Some(working.iter().map(|(l, _)| l).sum::<f64>() / working.len() as f64)
        };
        clusters.insert(
            cname,
            ClusterView {
                working,
                load,
                known,
            },
        );
    }
    let states: BTreeMap<ServerName, ServerState> = states_v.into_iter().collect();
    history.servers = servers_v.into_iter().collect();
    let cluster_loads: BTreeMap<ClusterName, Option<f64>> = clusters
        .iter()
        .map(|(n, v)| ((*n).clone(), v.load))
        .collect();
    // Working clusters, best (least loaded) first, ties by name.
    let mut ranked: Vec<(f64, ClusterName)> = clusters
        .iter()
        .filter_map(|(n, v)| v.load.map(|l| (l, (*n).clone())))
        .collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));

    if ranked.is_empty() {
        // Fail static: no server anywhere works; keep every answer as it is.
        if !history.fail_static {
            notifications.push(Incident::NoWorkingServer {
                round: input.round,
                areas: input.topology.areas.len(),
            });
        }
        history.fail_static = true;
        return Outcome {
            answers: input.current.clone(),
            changes: Vec::new(),
            notifications,
            states,
            cluster_loads,
            history,
        };
    }
    if history.fail_static {
        notifications.push(Incident::WorkingServerRestored { round: input.round });
        history.fail_static = false;
    }

    let mut placed: BTreeMap<AreaName, Placement> = BTreeMap::new();
    let current_cluster = |area: &AreaName| input.current.get(area).map(|a| &a.cluster);

    // Phase 0 (beyond the paper): operators' pins, while the pinned cluster works.
    for (area, (cluster, why)) in input.pins {
        let works = clusters.get(cluster).is_some_and(|v| v.load.is_some());
        if works && input.topology.areas.contains_key(area) {
            let reason = Reason::Pinned {
                cluster: cluster.clone(),
                why: why.clone(),
            };
            placed.insert(
                area.clone(),
                Placement {
                    cluster: cluster.clone(),
                    phase: 0,
                    reason,
                },
            );
        }
    }

    // Phase 2: locality preference.
    for (area, spec) in &input.topology.areas {
        if placed.contains_key(area) {
            continue;
        }
        let home = &spec.home_cluster;
        let Some(view) = clusters.get(home) else {
            continue;
        };
        let away = current_cluster(area).is_some_and(|c| c != home);
        let extra = if away {
            history
                .areas
                .get(area)
                .map_or(p.return_margin, |h| h.effective_margin(p, input.now))
        } else {
            0.0
        };
        let bar = p.threshold - extra;
        if let Some(min) = view.min_load() {
            if min < bar {
                let reason = Reason::Home {
                    home: home.clone(),
                    min,
                    threshold: p.threshold,
                    return_margin: away.then_some(extra),
                };
                placed.insert(
                    area.clone(),
                    Placement {
                        cluster: home.clone(),
                        phase: 2,
                        reason,
                    },
                );
            }
        }
    }

    // Phase 3: ensure availability, round-robin over working clusters, best first.
    let mut rr = 0usize;
    for area in input.topology.areas.keys() {
        if placed.contains_key(area) {
            continue;
        }
        let cur = current_cluster(area);
        let cur_works = cur
            .and_then(|c| clusters.get(c))
            .and_then(|v| v.load)
            .is_some();
        if cur_works {
            continue;
        }
        let (load, target) = &ranked[rr % ranked.len()];
        rr += 1;
        let why = match cur {
            None => Unserved::NothingYet,
            Some(c) if clusters.contains_key(c) => Unserved::NoWorkingServer(c.clone()),
            Some(c) => Unserved::NotInTopology(c.clone()),
        };
        placed.insert(
            area.clone(),
            Placement {
                cluster: target.clone(),
                phase: 3,
                reason: Reason::Availability {
                    why,
                    target: target.clone(),
                    load: *load,
                },
            },
        );
    }

    // Phase 4: load balancing, worst area first, at most one area per cluster. Only on
    // load figures: a cluster whose every working server is TEMPFAIL with no history
    // (start-up) has the threshold as a stand-in, which would move areas away in the
    // first round only for them to return once real figures arrive.
    let known = |c: &ClusterName| clusters.get(c).is_some_and(|v| v.known);
    let mut remaining: Vec<(f64, AreaName, ClusterName)> = input
        .topology
        .areas
        .keys()
        .filter(|a| !placed.contains_key(*a))
        .filter_map(|a| {
            let c = current_cluster(a)?;
            let l = clusters.get(c)?.load?;
            Some((l, a.clone(), c.clone()))
        })
        .collect();
    remaining.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let mut given: BTreeSet<ClusterName> = BTreeSet::new();
    for (cur_load, area, cur) in remaining {
        // Without load balancing (an early round) every remaining area stays.
        let best = if !rules.load_balancing || (rules.known_loads_only && !known(&cur)) {
            None
        } else {
            ranked.iter().find(|(_, c)| {
                !(rules.one_per_cluster && given.contains(c))
                    && (!rules.known_loads_only || known(c))
            })
        };
        // An area that just moved back and forth needs a larger gain (ping-pong damping).
        let extra = if rules.ping_pong_damping {
            history
                .areas
                .get(&area)
                .map_or(0.0, |h| h.effective_move_extra(p, input.now))
        } else {
            0.0
        };
        let needed = p.margin + extra;
        let placement = match best {
            Some((best_load, best)) if *best != cur && cur_load - best_load >= needed - EPS => {
                given.insert(best.clone());
                Placement {
                    cluster: best.clone(),
                    phase: 4,
                    reason: Reason::Balance {
                        cur,
                        cur_load,
                        best: best.clone(),
                        best_load: *best_load,
                        margin: p.margin,
                        damping: extra,
                    },
                }
            }
            _ => Placement {
                cluster: cur,
                phase: 4,
                reason: Reason::Stay,
            },
        };
        placed.insert(area, placement);
    }

    // Hysteresis bookkeeping, record sets and changes.
    let mut answers = BTreeMap::new();
    let mut changes = Vec::new();
    for (area, spec) in &input.topology.areas {
        let Some(placement) = placed.remove(area) else {
            continue;
        };
        let home = &spec.home_cluster;
        let from = current_cluster(area).cloned();
        update_area_history(&mut history, area, home, from.as_ref(), &placement, input);

        let Some(view) = clusters.get(&placement.cluster) else {
            continue;
        };
        let old = input.current.get(area);
        // Servers already in this area's answer (same cluster) keep their place a little
        // longer: record-set hysteresis.
        let serving: BTreeSet<IpAddr> = old
            .filter(|o| o.cluster == placement.cluster)
            .map(|o| o.records.iter().copied().collect())
            .unwrap_or_default();
        let records = record_set(view, input.topology, &placement.cluster, p, &serving);
        let same =
            old.is_some_and(|o| o.cluster == placement.cluster && same_set(&o.records, &records));
        if same {
            if let Some(o) = old {
                answers.insert(area.clone(), o.clone());
            }
            continue;
        }
        let moved = from.as_ref() != Some(&placement.cluster);
        let (phase, reason) = if moved {
            (placement.phase, placement.reason.to_string())
        } else {
            (
                0,
                record_change_reason(old.map(|o| &o.records[..]), &records),
            )
        };
        changes.push(Change {
            area: area.clone(),
            from,
            to: placement.cluster.clone(),
            phase,
            reason,
        });
        answers.insert(
            area.clone(),
            AreaAnswer {
                cluster: placement.cluster,
                records,
            },
        );
    }

    Outcome {
        answers,
        changes,
        notifications,
        states,
        cluster_loads,
        history,
    }
}

/// Phase 1 for one server: its state this round and its history for the next.
fn phase1_server(
    server: &ServerName,
    cluster: &ClusterName,
    obs: &Observation,
    prev: &ServerHistory,
    input: &Input<'_>,
    notifications: &mut Vec<Incident>,
) -> (ServerState, ServerHistory) {
    let p = input.params;
    let mut next = prev.clone();
    let state = match obs {
        Observation::Load(l) => ServerState::Working {
            load: *l,
            basis: LoadBasis::Fresh,
        },
        Observation::TempFail => match prev.last_load {
            Some(l) => ServerState::Working {
                load: l,
                basis: LoadBasis::LastRound,
            },
            None => ServerState::Working {
                load: p.threshold,
                basis: LoadBasis::Unknown,
            },
        },
        Observation::Bypass { .. } => ServerState::Dead(DeadCause::Bypass),
        Observation::Panic { .. } => ServerState::Dead(DeadCause::Panic),
        Observation::NoAnswer => ServerState::Dead(DeadCause::NoAnswer),
    };
    next.last_load = match state {
        ServerState::Working {
            load,
            basis: LoadBasis::Fresh | LoadBasis::LastRound,
        } => Some(load),
        _ => None,
    };
    let working = matches!(state, ServerState::Working { .. });

    // PANIC: once per incident, and again when the server works again.
    if let Observation::Panic { reason } = obs {
        if !prev.panic_open {
            notifications.push(Incident::PanicRaised {
                round: input.round,
                server: server.clone(),
                cluster: cluster.clone(),
                reason: reason.clone(),
            });
        }
        next.panic_open = true;
    } else if working && prev.panic_open {
        notifications.push(Incident::PanicCleared {
            round: input.round,
            server: server.clone(),
            cluster: cluster.clone(),
        });
        next.panic_open = false;
    }

    // Silence longer than dead_after: once per incident, and again when it answers.
    if matches!(obs, Observation::NoAnswer) {
        let since = prev.silent_since.unwrap_or(input.now);
        next.silent_since = Some(since);
        let silent_for = input.now.saturating_duration_since(since);
        if !prev.dead_notified && silent_for >= p.dead_after {
            notifications.push(Incident::ServerDead {
                round: input.round,
                server: server.clone(),
                cluster: cluster.clone(),
                silent_secs: silent_for.as_secs(),
            });
            next.dead_notified = true;
        }
    } else {
        if prev.dead_notified {
            let silent_for = prev
                .silent_since
                .map_or(Duration::ZERO, |s| input.now.saturating_duration_since(s));
            notifications.push(Incident::ServerBack {
                round: input.round,
                server: server.clone(),
                cluster: cluster.clone(),
                silent_secs: silent_for.as_secs(),
            });
        }
        next.silent_since = None;
        next.dead_notified = false;
    }
    (state, next)
}

/// Keeps the per-area hysteresis state: doubles the return margin on a flap, resets it
/// after a stay at home of `flap_window` rounds.
fn update_area_history(
    history: &mut History,
    area: &AreaName,
    home: &ClusterName,
    from: Option<&ClusterName>,
    placement: &Placement,
    input: &Input<'_>,
) {
    let p = input.params;
    let h = history.areas.entry(area.clone()).or_insert(AreaHistory {
        return_margin: p.return_margin,
        returned_home: None,
        raised_at: None,
        last_move: None,
        move_extra: 0.0,
        move_raised_at: None,
    });
    let within = |r: Round| input.round.0.saturating_sub(r.0) <= p.flap_window;
    if placement.phase == 4 && from.is_some_and(|f| f != &placement.cluster) {
        // Moved by phase 4 again soon after its last phase-4 move: damp it.
        if h.last_move.is_some_and(within) {
            let raised = (h.effective_move_extra(p, input.now) * 2.0).max(p.margin);
            h.move_extra = raised.min(MAX_MOVE_EXTRA);
            h.move_raised_at = Some(input.now);
        }
        h.last_move = Some(input.round);
    }
    let to = &placement.cluster;
    if from.is_some_and(|f| f != home) && to == home {
        h.returned_home = Some(input.round);
    } else if from == Some(home) && to != home && placement.phase == 4 {
        if h.returned_home.is_some_and(within) {
            h.return_margin = (h.effective_margin(p, input.now) * 2.0).min(p.threshold);
            h.raised_at = Some(input.now);
        }
        h.returned_home = None;
    } else if to == home && h.returned_home.is_some_and(|r| !within(r)) {
        h.return_margin = p.return_margin;
        h.returned_home = None;
        h.raised_at = None;
    }
}

/// The addresses an area assigned to this cluster is given: working servers below
/// threshold (or all working ones if none is), least loaded first, at most `max_records`.
/// A server whose address is in `serving` (the area's current answer) counts as below
/// threshold up to `threshold + record_hysteresis`, and ranks as if `record_hysteresis`
/// less loaded, so load jitter around the threshold or among the least loaded does not
/// rewrite DNS every round.
fn record_set(
    view: &ClusterView<'_>,
    topology: &Topology,
    cluster: &ClusterName,
    p: &Params,
    serving: &BTreeSet<IpAddr>,
) -> Vec<IpAddr> {
    let Some(spec) = topology.clusters.get(cluster) else {
        return Vec::new();
    };
    let h = p.record_hysteresis;
    // (rank load, load, name, addresses)
    let mut ranked: Vec<(f64, f64, &ServerName, &[IpAddr])> = view
        .working
        .iter()
        .filter_map(|(load, name)| {
            let addrs = spec.servers.get(name)?;
            let incumbent = addrs.iter().any(|a| serving.contains(a));
            let rank = if incumbent { load - h } else { *load };
            Some((rank, *load, *name, addrs.as_slice()))
        })
        .collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.2.cmp(b.2)));
    // Below threshold, or (incumbents) below threshold + h: exactly rank < threshold.
    let below: Vec<&[IpAddr]> = ranked
        .iter()
        .filter(|(rank, ..)| *rank < p.threshold)
        .map(|(.., addrs)| *addrs)
        .collect();
    let chosen = if below.is_empty() {
        ranked.iter().map(|(.., addrs)| *addrs).collect()
    } else {
        below
    };
    chosen
        .into_iter()
        .flatten()
        .copied()
        .take(p.max_records)
        .collect()
}

fn same_set(a: &[IpAddr], b: &[IpAddr]) -> bool {
    let a: BTreeSet<&IpAddr> = a.iter().collect();
    let b: BTreeSet<&IpAddr> = b.iter().collect();
    a == b
}

fn record_change_reason(old: Option<&[IpAddr]>, new: &[IpAddr]) -> String {
    let old: BTreeSet<&IpAddr> = old.unwrap_or(&[]).iter().collect();
    let new_set: BTreeSet<&IpAddr> = new.iter().collect();
    let added: Vec<String> = new_set.difference(&old).map(|a| a.to_string()).collect();
    let removed: Vec<String> = old.difference(&new_set).map(|a| a.to_string()).collect();
    format!(
        "record set changed: added [{}], removed [{}]",
        added.join(", "),
        removed.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AreaSpec, ClusterSpec};
    use std::net::Ipv4Addr;

    /// `clusters`: per cluster, its number of servers. Area `aN` has home `cN`; server
    /// `cN-sM` has address 10.N.0.M.
    fn topo(clusters: &[usize]) -> Topology {
        let mut t = Topology {
            areas: BTreeMap::new(),
            clusters: BTreeMap::new(),
        };
        for (i, n) in clusters.iter().enumerate() {
            let c = i + 1;
            t.areas.insert(
                AreaName(format!("a{c}")),
                AreaSpec {
                    home_cluster: ClusterName(format!("c{c}")),
                },
            );
            let servers = (1..=*n)
                .map(|s| {
                    (
                        ServerName(format!("c{c}-s{s}")),
                        vec![IpAddr::V4(Ipv4Addr::new(10, c as u8, 0, s as u8))],
                    )
                })
                .collect();
            t.clusters
                .insert(ClusterName(format!("c{c}")), ClusterSpec { servers });
        }
        t
    }

    fn ip(c: u8, s: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, c, 0, s))
    }

    fn answer(c: u8, records: &[IpAddr]) -> AreaAnswer {
        AreaAnswer {
            cluster: ClusterName(format!("c{c}")),
            records: records.to_vec(),
        }
    }

    fn home_answers(t: &Topology) -> BTreeMap<AreaName, AreaAnswer> {
        t.areas
            .iter()
            .map(|(a, s)| {
                let recs = t.clusters[&s.home_cluster]
                    .servers
                    .values()
                    .flatten()
                    .copied()
                    .collect();
                (
                    a.clone(),
                    AreaAnswer {
                        cluster: s.home_cluster.clone(),
                        records: recs,
                    },
                )
            })
            .collect()
    }

    struct Run {
        topology: Topology,
        history: History,
        current: BTreeMap<AreaName, AreaAnswer>,
        params: Params,
        round: u64,
        t0: Instant,
    }

    impl Run {
        fn new(topology: Topology) -> Self {
            Self {
                current: home_answers(&topology),
                topology,
                history: History::default(),
                params: Params::default(),
                round: 0,
                t0: Instant::now(),
            }
        }

        fn step_at(&mut self, o: &BTreeMap<ServerName, Observation>, at: Duration) -> Outcome {
            self.round += 1;
            let out = assign(&Input {
                topology: &self.topology,
                observations: o,
                history: &self.history,
                current: &self.current,
                params: &self.params,
                round: Round(self.round),
                now: self.t0 + at,
                pins: &NO_PINS,
            });
            self.history = out.history.clone();
            self.current = out.answers.clone();
            out
        }

        fn step(&mut self, o: &BTreeMap<ServerName, Observation>) -> Outcome {
            self.step_at(o, Duration::from_secs(self.round + 1))
        }
    }

    fn all_load(t: &Topology, load: f64) -> BTreeMap<ServerName, Observation> {
        t.clusters
            .values()
            .flat_map(|c| c.servers.keys())
            .map(|s| (s.clone(), Observation::Load(load)))
            .collect()
    }

    fn set(o: &mut BTreeMap<ServerName, Observation>, s: &str, v: Observation) {
        o.insert(ServerName::from(s), v);
    }

    /// Paper Figure 2.2: three areas; cluster 2 has two dead servers and one overloaded;
    /// area 2 moves to cluster 3 and the others stay home.
    #[test]
    fn figure_2_2_area_2_moves_to_cluster_3() {
        let mut run = Run::new(topo(&[3, 3, 3]));
        let mut o = all_load(&run.topology, 0.3);
        set(&mut o, "c1-s1", Observation::Load(0.5));
        set(&mut o, "c1-s2", Observation::Load(0.5));
        set(&mut o, "c1-s3", Observation::Load(0.5));
        set(&mut o, "c2-s1", Observation::NoAnswer);
        set(&mut o, "c2-s2", Observation::NoAnswer);
        set(&mut o, "c2-s3", Observation::Load(0.95));
        let out = run.step(&o);
        assert_eq!(out.changes.len(), 1, "{:?}", out.changes);
        let ch = &out.changes[0];
        assert_eq!(ch.area, AreaName::from("a2"));
        assert_eq!(ch.from, Some(ClusterName::from("c2")));
        assert_eq!(ch.to, ClusterName::from("c3"));
        assert_eq!(ch.phase, 4);
        assert!(ch.reason.contains("c2 at 0.95"), "{}", ch.reason);
        assert_eq!(
            out.answers[&AreaName::from("a2")],
            answer(3, &[ip(3, 1), ip(3, 2), ip(3, 3)])
        );
        assert_eq!(
            out.answers[&AreaName::from("a1")].cluster,
            ClusterName::from("c1")
        );
        assert_eq!(
            out.answers[&AreaName::from("a3")].cluster,
            ClusterName::from("c3")
        );
        assert!(
            out.notifications.is_empty(),
            "silence is not notified at once"
        );
        assert_eq!(
            out.states[&ServerName::from("c2-s1")],
            ServerState::Dead(DeadCause::NoAnswer)
        );
    }

    #[test]
    fn phase2_brings_an_area_home_and_record_set_drops_overloaded_servers() {
        let mut run = Run::new(topo(&[3, 3]));
        run.current
            .insert(AreaName::from("a1"), answer(2, &[ip(2, 1)]));
        let mut o = all_load(&run.topology, 0.2);
        set(&mut o, "c1-s2", Observation::Load(0.9));
        let out = run.step(&o);
        // a2 stays in c2 with the same three addresses: no change for it.
        assert_eq!(out.changes.len(), 1, "{:?}", out.changes);
        assert_eq!(out.changes[0].phase, 2);
        assert_eq!(out.changes[0].to, ClusterName::from("c1"));
        assert_eq!(
            out.answers[&AreaName::from("a1")],
            answer(1, &[ip(1, 1), ip(1, 3)])
        );
        // Next round c1-s2 recovers: same cluster, new record set, phase 0.
        set(&mut o, "c1-s2", Observation::Load(0.1));
        let out = run.step(&o);
        assert_eq!(out.changes.len(), 1, "{:?}", out.changes);
        assert_eq!(out.changes[0].phase, 0);
        assert!(out.changes[0].reason.contains("added [10.1.0.2]"));
        assert_eq!(
            out.answers[&AreaName::from("a1")].records,
            vec![ip(1, 2), ip(1, 1), ip(1, 3)]
        );
    }

    #[test]
    fn all_servers_of_a_cluster_dead_moves_its_area_in_phase_3() {
        let mut run = Run::new(topo(&[2, 2, 2]));
        let mut o = all_load(&run.topology, 0.5);
        set(&mut o, "c1-s1", Observation::Load(0.3));
        set(
            &mut o,
            "c2-s1",
            Observation::Bypass {
                reason: "maint".into(),
            },
        );
        set(&mut o, "c2-s2", Observation::NoAnswer);
        let out = run.step(&o);
        let a2 = &out.changes[0];
        assert_eq!((a2.area.0.as_str(), a2.phase), ("a2", 3));
        // best cluster first: c1 (mean 0.4) beats c3 (0.5)
        assert_eq!(a2.to, ClusterName::from("c1"));
        assert!(
            a2.reason.contains("c2 has no working server"),
            "{}",
            a2.reason
        );
        assert_eq!(out.cluster_loads[&ClusterName::from("c2")], None);
        // record set least loaded first
        assert_eq!(
            out.answers[&AreaName::from("a2")].records,
            vec![ip(1, 1), ip(1, 2)]
        );
    }

    #[test]
    fn phase3_is_round_robin_best_first_even_over_threshold() {
        let mut run = Run::new(topo(&[1, 1, 1, 1, 1]));
        let mut o = all_load(&run.topology, 0.9);
        set(&mut o, "c4-s1", Observation::Load(0.95));
        set(&mut o, "c1-s1", Observation::NoAnswer);
        set(&mut o, "c2-s1", Observation::NoAnswer);
        set(&mut o, "c3-s1", Observation::NoAnswer);
        let out = run.step(&o);
        let to: Vec<(&str, &str, u8)> = out
            .changes
            .iter()
            .map(|c| (c.area.0.as_str(), c.to.0.as_str(), c.phase))
            .collect();
        assert_eq!(to, vec![("a1", "c5", 3), ("a2", "c4", 3), ("a3", "c5", 3)]);
    }

    #[test]
    fn first_round_with_no_current_answers_uses_phase_2_and_3() {
        let mut run = Run::new(topo(&[1, 1]));
        run.current.clear();
        let mut o = all_load(&run.topology, 0.1);
        set(&mut o, "c2-s1", Observation::Load(0.9));
        let out = run.step(&o);
        assert_eq!(out.changes.len(), 2);
        assert_eq!(
            (out.changes[0].phase, out.changes[0].from.clone()),
            (2, None)
        );
        assert_eq!(out.changes[1].phase, 3);
        assert_eq!(out.changes[1].to, ClusterName::from("c1"));
        assert!(out.changes[1].reason.contains("no cluster assigned yet"));
    }

    #[test]
    fn all_clusters_over_threshold_everyone_stays_and_gets_all_working_servers() {
        let mut run = Run::new(topo(&[2, 2, 2]));
        let mut o = all_load(&run.topology, 0.9);
        set(&mut o, "c1-s1", Observation::Load(1.2));
        set(&mut o, "c1-s2", Observation::Load(1.0));
        let out = run.step(&o);
        // c1 at 1.1 vs best 0.9: better by exactly... 0.2 → a1 moves (margin is "at least").
        assert_eq!(out.changes.len(), 1, "{:?}", out.changes);
        assert_eq!(out.changes[0].phase, 4);
        assert_eq!(out.changes[0].to, ClusterName::from("c2"));
        // All over threshold: records are all working servers.
        assert_eq!(
            out.answers[&AreaName::from("a1")].records,
            vec![ip(2, 1), ip(2, 2)]
        );

        // Within margin: nobody moves.
        let mut run = Run::new(topo(&[2, 2, 2]));
        let mut o = all_load(&run.topology, 0.9);
        set(&mut o, "c1-s1", Observation::Load(1.0));
        let out = run.step(&o);
        assert!(out.changes.is_empty(), "{:?}", out.changes);
    }

    #[test]
    fn tempfail_uses_last_round_load() {
        let mut run = Run::new(topo(&[2, 2]));
        let mut o = all_load(&run.topology, 0.2);
        set(&mut o, "c1-s1", Observation::Load(0.6));
        run.step(&o);
        set(&mut o, "c1-s1", Observation::TempFail);
        let out = run.step(&o);
        assert_eq!(
            out.states[&ServerName::from("c1-s1")],
            ServerState::Working {
                load: 0.6,
                basis: LoadBasis::LastRound
            }
        );
        assert!(out.changes.is_empty());
        // Still TEMPFAIL: the carried figure carries on.
        let out = run.step(&o);
        assert_eq!(
            out.states[&ServerName::from("c1-s1")],
            ServerState::Working {
                load: 0.6,
                basis: LoadBasis::LastRound
            }
        );
    }

    #[test]
    fn tempfail_without_history_counts_as_working_at_threshold() {
        // c1: its only server TEMPFAILs at the first round; a1 is not sent home by it
        // (not below threshold) but it is not dead either, so a1 stays.
        let mut run = Run::new(topo(&[1, 1]));
        let mut o = all_load(&run.topology, 0.7);
        set(&mut o, "c1-s1", Observation::TempFail);
        let out = run.step(&o);
        assert_eq!(
            out.states[&ServerName::from("c1-s1")],
            ServerState::Working {
                load: 0.8,
                basis: LoadBasis::Unknown
            }
        );
        assert!(out.changes.is_empty(), "{:?}", out.changes);
        // Its home cluster is only TEMPFAIL and a1 points at a dead c2: phase 3 picks c1.
        let mut run = Run::new(topo(&[1, 1]));
        run.current
            .insert(AreaName::from("a1"), answer(2, &[ip(2, 1)]));
        set(&mut o, "c2-s1", Observation::NoAnswer);
        let out = run.step(&o);
        assert_eq!(out.answers[&AreaName::from("a1")], answer(1, &[ip(1, 1)]));
        assert_eq!(out.changes[0].phase, 3);
        // A dead round forgets the load: TEMPFAIL after it is Unknown again.
        let mut run = Run::new(topo(&[1, 1]));
        let mut o = all_load(&run.topology, 0.3);
        run.step(&o);
        set(&mut o, "c1-s1", Observation::NoAnswer);
        run.step(&o);
        set(&mut o, "c1-s1", Observation::TempFail);
        let out = run.step(&o);
        assert!(matches!(
            out.states[&ServerName::from("c1-s1")],
            ServerState::Working {
                basis: LoadBasis::Unknown,
                ..
            }
        ));
    }

    #[test]
    fn at_most_one_move_into_each_cluster_per_round() {
        // c1..c3 overloaded, c4 and c5 idle: only two areas can move this round, one each.
        let mut run = Run::new(topo(&[1, 1, 1, 1, 1]));
        let mut o = all_load(&run.topology, 0.1);
        set(&mut o, "c1-s1", Observation::Load(1.3));
        set(&mut o, "c2-s1", Observation::Load(1.2));
        set(&mut o, "c3-s1", Observation::Load(1.1));
        set(&mut o, "c5-s1", Observation::Load(0.05));
        let out = run.step(&o);
        let moves: Vec<(&str, &str)> = out
            .changes
            .iter()
            .map(|c| (c.area.0.as_str(), c.to.0.as_str()))
            .collect();
        // worst area (a1, c1 at 1.3) gets the best cluster (c5), next worst gets c4.
        assert_eq!(moves, vec![("a1", "c5"), ("a2", "c4")]);
        // Without the rule both would go to c5 and a3 too.
        let out = assign_with(
            &Input {
                topology: &run.topology,
                observations: &o,
                history: &History::default(),
                current: &home_answers(&run.topology),
                params: &run.params,
                round: Round(1),
                now: run.t0,
                pins: &NO_PINS,
            },
            Rules {
                one_per_cluster: false,
                ..Rules::ALL
            },
        );
        assert_eq!(out.changes.len(), 3);
        assert!(out.changes.iter().all(|c| c.to == ClusterName::from("c5")));
    }

    #[test]
    fn panic_notifies_once_per_incident_and_when_it_clears() {
        let mut run = Run::new(topo(&[2, 1]));
        let mut o = all_load(&run.topology, 0.2);
        set(
            &mut o,
            "c1-s1",
            Observation::Panic {
                reason: "nginx died".into(),
            },
        );
        let out = run.step(&o);
        assert_eq!(
            out.notifications,
            vec![Incident::PanicRaised {
                round: Round(1),
                server: "c1-s1".into(),
                cluster: "c1".into(),
                reason: "nginx died".into()
            }]
        );
        assert_eq!(out.answers[&AreaName::from("a1")].records, vec![ip(1, 2)]);
        assert!(run.step(&o).notifications.is_empty());
        // Silence in between does not end the incident.
        set(&mut o, "c1-s1", Observation::NoAnswer);
        assert!(run.step(&o).notifications.is_empty());
        set(
            &mut o,
            "c1-s1",
            Observation::Panic {
                reason: "nginx died".into(),
            },
        );
        assert!(run.step(&o).notifications.is_empty());
        set(&mut o, "c1-s1", Observation::Load(0.2));
        let out = run.step(&o);
        assert_eq!(
            out.notifications,
            vec![Incident::PanicCleared {
                round: Round(5),
                server: "c1-s1".into(),
                cluster: "c1".into()
            }]
        );
        assert!(run.step(&o).notifications.is_empty());
    }

    #[test]
    fn silence_longer_than_dead_after_notifies_once_and_on_return() {
        let mut run = Run::new(topo(&[2]));
        let mut o = all_load(&run.topology, 0.2);
        set(&mut o, "c1-s2", Observation::NoAnswer);
        let out = run.step_at(&o, Duration::from_secs(10));
        assert!(out.notifications.is_empty());
        let out = run.step_at(&o, Duration::from_secs(309));
        assert!(out.notifications.is_empty(), "299 s < 300 s");
        let out = run.step_at(&o, Duration::from_secs(310));
        assert_eq!(
            out.notifications,
            vec![Incident::ServerDead {
                round: Round(3),
                server: "c1-s2".into(),
                cluster: "c1".into(),
                silent_secs: 300
            }]
        );
        assert!(run
            .step_at(&o, Duration::from_secs(400))
            .notifications
            .is_empty());
        set(&mut o, "c1-s2", Observation::TempFail);
        let out = run.step_at(&o, Duration::from_secs(410));
        assert_eq!(
            out.notifications,
            vec![Incident::ServerBack {
                round: Round(5),
                server: "c1-s2".into(),
                cluster: "c1".into(),
                silent_secs: 400
            }]
        );
        // BYPASS is an answer: it never counts towards dead_after.
        let mut run = Run::new(topo(&[2]));
        set(
            &mut o,
            "c1-s2",
            Observation::Bypass {
                reason: "maint".into(),
            },
        );
        run.step_at(&o, Duration::from_secs(0));
        assert!(run
            .step_at(&o, Duration::from_secs(1000))
            .notifications
            .is_empty());
    }

    #[test]
    fn no_working_server_anywhere_keeps_last_answers_and_notifies_once() {
        let mut run = Run::new(topo(&[1, 1]));
        let before = run.current.clone();
        let o = BTreeMap::new();
        let out = run.step(&o);
        assert_eq!(out.answers, before);
        assert!(out.changes.is_empty());
        assert_eq!(
            out.notifications,
            vec![Incident::NoWorkingServer {
                round: Round(1),
                areas: 2
            }]
        );
        assert!(run.step(&o).notifications.is_empty());
        let out = run.step(&all_load(&run.topology, 0.1));
        assert_eq!(
            out.notifications,
            vec![Incident::WorkingServerRestored { round: Round(3) }]
        );
    }

    #[test]
    fn record_set_is_capped_and_reordering_alone_is_no_change() {
        let mut run = Run::new(topo(&[30]));
        run.current.clear();
        let mut o = all_load(&run.topology, 0.5);
        for s in 1..=30u32 {
            set(
                &mut o,
                &format!("c1-s{s}"),
                Observation::Load(f64::from(s) / 100.0),
            );
        }
        let out = run.step(&o);
        let recs = &out.answers[&AreaName::from("a1")].records;
        assert_eq!(recs.len(), 20);
        assert_eq!(recs[0], ip(1, 1));
        assert_eq!(recs[19], ip(1, 20));
        // Same twenty least loaded, different order: no change, old order kept.
        for s in 1..=20u32 {
            set(
                &mut o,
                &format!("c1-s{s}"),
                Observation::Load(f64::from(21 - s) / 100.0),
            );
        }
        let out = run.step(&o);
        assert!(out.changes.is_empty());
        assert_eq!(out.answers[&AreaName::from("a1")].records[0], ip(1, 1));
    }

    /// Rounds in which a1's answer changed while c1-s2's load alternates 0.78 / 0.82.
    fn churn_with(record_hysteresis: f64) -> usize {
        let mut run = Run::new(topo(&[3]));
        run.params.record_hysteresis = record_hysteresis;
        let mut o = all_load(&run.topology, 0.3);
        (0..20)
            .filter(|i| {
                let l = if i % 2 == 0 { 0.78 } else { 0.82 };
                set(&mut o, "c1-s2", Observation::Load(l));
                !run.step(&o).changes.is_empty()
            })
            .count()
    }

    #[test]
    fn a_server_jittering_around_the_threshold_does_not_rewrite_dns_every_round() {
        assert_eq!(churn_with(0.05), 0);
        // Planted fault: without the hysteresis the answer changes every round after the
        // first (out at 0.82, back in at 0.78).
        assert_eq!(churn_with(0.0), 19);
    }

    #[test]
    fn an_incumbent_leaves_beyond_threshold_plus_hysteresis() {
        let mut run = Run::new(topo(&[3]));
        let mut o = all_load(&run.topology, 0.3);
        set(&mut o, "c1-s2", Observation::Load(0.84));
        assert!(run.step(&o).changes.is_empty(), "0.84 < 0.8 + 0.05: stays");
        set(&mut o, "c1-s2", Observation::Load(0.86));
        let out = run.step(&o);
        assert_eq!(
            out.answers[&AreaName::from("a1")].records,
            vec![ip(1, 1), ip(1, 3)]
        );
        // Coming back, it must be below the threshold itself.
        set(&mut o, "c1-s2", Observation::Load(0.81));
        assert!(run.step(&o).changes.is_empty());
        set(&mut o, "c1-s2", Observation::Load(0.79));
        assert_eq!(run.step(&o).changes.len(), 1);
    }

    #[test]
    fn params_validation() {
        assert_eq!(Params::default().validate(), Ok(()));
        let bad = |p: Params| p.validate().unwrap_err();
        assert!(matches!(
            bad(Params {
                threshold: f64::NAN,
                ..Params::default()
            }),
            ParamsError::OutOfRange {
                field: "threshold",
                ..
            }
        ));
        assert!(matches!(
            bad(Params {
                margin: -0.1,
                ..Params::default()
            }),
            ParamsError::OutOfRange {
                field: "margin",
                ..
            }
        ));
        assert!(matches!(
            bad(Params {
                return_margin: 0.9,
                ..Params::default()
            }),
            ParamsError::OutOfRange {
                field: "return_margin",
                ..
            }
        ));
        assert_eq!(
            bad(Params {
                max_records: 0,
                ..Params::default()
            }),
            ParamsError::Records(0)
        );
    }

    #[test]
    fn an_area_away_from_home_returns_only_below_threshold_minus_return_margin() {
        let mut run = Run::new(topo(&[1, 1]));
        run.current
            .insert(AreaName::from("a1"), answer(2, &[ip(2, 1)]));
        let mut o = all_load(&run.topology, 0.2);
        set(&mut o, "c1-s1", Observation::Load(0.75));
        let out = run.step(&o);
        assert!(out.changes.is_empty(), "0.75 is not below 0.8 - 0.1");
        set(&mut o, "c1-s1", Observation::Load(0.65));
        let out = run.step(&o);
        assert_eq!(out.changes[0].phase, 2);
        assert!(out.changes[0].reason.contains("return margin 0.10"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn observation() -> impl Strategy<Value = Observation> {
            prop_oneof![
                4 => (0.0f64..1.5).prop_map(Observation::Load),
                1 => Just(Observation::TempFail),
                1 => Just(Observation::Bypass { reason: "b".into() }),
                1 => Just(Observation::Panic { reason: "p".into() }),
                2 => Just(Observation::NoAnswer),
            ]
        }

        /// A random site: cluster sizes, per area (home, current cluster or none), per
        /// server an observation and maybe a last load.
        fn site() -> impl Strategy<Value = Site> {
            (1usize..7).prop_flat_map(|nc| {
                (
                    proptest::collection::vec(1usize..6, nc),
                    proptest::collection::vec((0..nc, proptest::option::of(0..nc)), 1..10),
                    proptest::collection::vec(
                        (observation(), proptest::option::of(0.0f64..1.5)),
                        30,
                    ),
                )
            })
        }

        type Site = (
            Vec<usize>,
            Vec<(usize, Option<usize>)>,
            Vec<(Observation, Option<f64>)>,
        );

        proptest! {
            #[test]
            fn answers_are_working_nonempty_and_phase4_is_conservative(site in site()) {
                check(site, Rules::ALL)?;
            }
        }

        /// The checker catches a planted fault: without the one-per-cluster rule, it finds
        /// a round where phase 4 moves two areas into one cluster.
        #[test]
        fn property_checker_catches_phase4_without_the_rule() {
            let mut runner = proptest::test_runner::TestRunner::deterministic();
            let result = runner.run(&site(), |s| {
                check(
                    s,
                    Rules {
                        one_per_cluster: false,
                        ..Rules::ALL
                    },
                )
            });
            let Err(proptest::test_runner::TestError::Fail(why, _)) = result else {
                panic!("no counterexample found: {result:?}");
            };
            assert!(why.to_string().contains("phase: 4"), "{why}");
        }

        fn check((sizes, areas, server_obs): Site, rules: Rules) -> Result<(), TestCaseError> {
            {
                let mut t = topo(&sizes);
                t.areas = areas
                    .iter()
                    .enumerate()
                    .map(|(i, (home, _))| {
                        (
                            AreaName(format!("x{i}")),
                            AreaSpec {
                                home_cluster: ClusterName(format!("c{}", home + 1)),
                            },
                        )
                    })
                    .collect();
                let servers: Vec<ServerName> = t
                    .clusters
                    .values()
                    .flat_map(|c| c.servers.keys().cloned())
                    .collect();
                let mut observations = BTreeMap::new();
                let mut history = History::default();
                for (i, s) in servers.iter().enumerate() {
                    let (o, last) = server_obs[i % server_obs.len()].clone();
                    observations.insert(s.clone(), o);
                    history.servers.insert(
                        s.clone(),
                        ServerHistory {
                            last_load: last,
                            ..ServerHistory::default()
                        },
                    );
                }
                let current: BTreeMap<AreaName, AreaAnswer> = areas
                    .iter()
                    .enumerate()
                    .filter_map(|(i, (_, cur))| {
                        let c = ClusterName(format!("c{}", (*cur)? + 1));
                        let records = t.clusters[&c].servers.values().flatten().copied().collect();
                        Some((
                            AreaName(format!("x{i}")),
                            AreaAnswer {
                                cluster: c,
                                records,
                            },
                        ))
                    })
                    .collect();
                let params = Params::default();
                let mut current = current;
                // Three chained rounds: the first from the random state, then with the
                // observations rotated, feeding answers and history back.
                for k in 0..3usize {
                    if k > 0 {
                        for (i, s) in servers.iter().enumerate() {
                            let (o, _) = server_obs[(i + 7 * k) % server_obs.len()].clone();
                            observations.insert(s.clone(), o);
                        }
                    }
                    let out = assign_with(
                        &Input {
                            topology: &t,
                            observations: &observations,
                            history: &history,
                            current: &current,
                            params: &params,
                            round: Round(7 + k as u64),
                            now: Instant::now(),
                            pins: &NO_PINS,
                        },
                        rules,
                    );
                    check_round(&t, &params, &current, &out)?;
                    current = out.answers;
                    history = out.history;
                }
            }
            Ok(())
        }

        /// The properties of one round's outcome given the answers before it.
        fn check_round(
            t: &Topology,
            params: &Params,
            current: &BTreeMap<AreaName, AreaAnswer>,
            out: &Outcome,
        ) -> Result<(), TestCaseError> {
            let working: BTreeSet<IpAddr> = out
                .states
                .iter()
                .filter(|(_, st)| matches!(st, ServerState::Working { .. }))
                .flat_map(|(s, _)| {
                    t.clusters
                        .values()
                        .filter_map(move |c| c.servers.get(s))
                        .flatten()
                        .copied()
                })
                .collect();
            if working.is_empty() {
                // Fail static: nothing changes.
                prop_assert_eq!(&out.answers, current);
                prop_assert!(out.changes.is_empty());
            } else {
                prop_assert_eq!(out.answers.len(), t.areas.len());
                for (area, ans) in &out.answers {
                    prop_assert!(!ans.records.is_empty(), "{} has no records", area);
                    prop_assert!(ans.records.len() <= params.max_records);
                    for r in &ans.records {
                        prop_assert!(working.contains(r), "{} answers dead {}", area, r);
                    }
                    // Records belong to the cluster the area is assigned to.
                    let own: BTreeSet<IpAddr> = t.clusters[&ans.cluster]
                        .servers
                        .values()
                        .flatten()
                        .copied()
                        .collect();
                    prop_assert!(ans.records.iter().all(|r| own.contains(r)));
                }
            }
            let mut phase4_into: BTreeMap<&ClusterName, usize> = BTreeMap::new();
            for c in out.changes.iter().filter(|c| c.phase == 4) {
                *phase4_into.entry(&c.to).or_default() += 1;
            }
            prop_assert!(phase4_into.values().all(|&n| n <= 1), "{:?}", out.changes);
            // Every change is real and explained.
            for c in &out.changes {
                prop_assert!(!c.reason.is_empty());
                prop_assert!(current.get(&c.area) != out.answers.get(&c.area));
            }
            Ok(())
        }
    }
}
