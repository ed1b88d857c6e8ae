//! From one run's records to its figures: convergence of each resolver on the nearest
//! area's name server (from the relays' query logs, the ground truth), and the clients'
//! latency, errors and requests per cluster. Pure functions over records, unit-tested with
//! planted faults; plus the checks the CI form asserts.

use super::clients::ClientRecord;
use super::relay::QueryRecord;
use super::runtime::{masters_at, Watch};
use super::servers::is_probe;
use super::spec::{Area, LabSpec, Region, ResolverKind, ScenarioEvent};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Width of one convergence bin, seconds.
pub const BIN_SECS: u64 = 2;
/// Probes before this many seconds are the resolvers' learning period.
pub const WARMUP_SECS: u64 = 10;

/// How one resolver kind spread its probe queries over the areas (all regions pooled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Convergence {
    /// The resolver.
    pub resolver: ResolverKind,
    /// Number of areas in the run.
    pub areas: u8,
    /// Probe queries seen at the area servers.
    pub queries: usize,
    /// Fraction that went to the querying region's nearest area, whole run.
    pub nearest_all: f64,
    /// The same after [`WARMUP_SECS`].
    pub nearest_after_warmup: f64,
    /// Fraction per bin of [`BIN_SECS`]: (bin start in seconds, fraction, queries).
    pub series: Vec<(u64, f64, usize)>,
    /// Queries per area (area number → count).
    pub per_area: BTreeMap<u8, usize>,
    /// Per region: probe queries before the first [`SETTLED_RUN`] in a row that all went
    /// to the nearest area (the learning cost), or `None` if that never happened.
    #[serde(default)]
    pub settle_after: Vec<Option<usize>>,
}

/// Consecutive probes to the nearest area that count as "settled".
pub const SETTLED_RUN: usize = 10;

/// Index of the first run of [`SETTLED_RUN`] `true`s in a row.
fn settled_at(hits: &[bool]) -> Option<usize> {
    let mut run = 0;
    for (i, h) in hits.iter().enumerate() {
        run = if *h { run + 1 } else { 0 };
        if run == SETTLED_RUN {
            return Some(i + 1 - SETTLED_RUN);
        }
    }
    None
}

/// What the clients of one resolver (or the oracle) saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientSummary {
    /// `unbound`, `bind`, ..., or `oracle`.
    pub who: String,
    /// Requests made.
    pub requests: usize,
    /// Requests that failed (DNS or HTTP).
    pub errors: usize,
    /// Median request time including DNS, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Fraction of successful requests served by the region's nearest cluster.
    pub nearest: f64,
    /// Successful requests per cluster (area number of the cluster → count).
    pub per_cluster: BTreeMap<u8, usize>,
    /// Fraction of DNS answers whose CNAME named the region's nearest area's zone.
    pub answer_nearest: f64,
}

/// When the failure of a run happened (Unix ms), as the orchestrator wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureTimes {
    /// The dying cluster's web servers were killed.
    pub killed: u64,
    /// The area's answer was moved (none: never).
    pub updated: Option<u64>,
}

/// What the clients saw of a cluster's death.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureOutcome {
    /// The times.
    pub times: FailureTimes,
    /// Requests to the dead cluster after it died.
    pub dead_uses: usize,
    /// Failed requests after it died.
    pub errors_after: usize,
    /// Requests after it died.
    pub requests_after: usize,
    /// Last use of a dead address, ms after the kill (none: never used).
    pub last_dead_use_ms: Option<u64>,
    /// Last use of a dead address, ms after the answer moved.
    pub last_dead_use_after_update_ms: Option<i64>,
}

/// The area whose cluster dies in a run: the scripted failure's, or a runtime
/// "cluster dies" event's.
pub fn dead_area(spec: &LabSpec) -> Option<Area> {
    match (spec.failure, spec.event) {
        (Some(f), _) => Some(f.area),
        (None, Some(ScenarioEvent::ClusterDies { area, .. })) => Some(area),
        _ => None,
    }
}

/// When a runtime event happened (Unix ms), as the orchestrator wrote it (`event.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventTimes {
    /// It started (nginx killed, slow clients connected, master killed, backbone cut).
    pub start: u64,
    /// It ended (overload released, partition healed), when it does.
    pub end: Option<u64>,
    /// The killed master's node.
    pub victim: Option<String>,
}

/// What a runtime event did, measured from outside: the watcher's record of every area
/// server's answer and every Controller's status, and the clients' records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventOutcome {
    /// `cluster-dies`, `overload`, `master-dies`, `partition`.
    pub kind: String,
    /// Its times.
    pub times: EventTimes,
    /// Time from the start to the struck area's first answer without its own (dead or
    /// overloaded) cluster; for `master-dies`, to one new master; for `partition`, to
    /// the cut-off side having a master of its own (ms).
    pub reaction_ms: Option<u64>,
    /// Time from the end to the area's answer back at its home cluster (overload), or to
    /// exactly one master (partition), ms.
    pub recovery_ms: Option<u64>,
    /// Most Controllers claiming mastership at once between start and end (or run end).
    pub max_masters: usize,
    /// Controllers claiming mastership at the end of the run.
    pub masters_at_end: usize,
    /// Answer changes from the start on: (ms after the start, area, clusters answered).
    pub answer_changes: Vec<(i64, u8, Vec<u8>)>,
    /// The clients' figures from the start to the end of the run (all resolvers).
    pub after: Option<ClientSummary>,
    /// The clients' figures from the start to the end of the event, for events that end
    /// (all resolvers; `who` = `all`), and the same for the struck area's region(s) only
    /// (`who` = `struck-region`).
    #[serde(default)]
    pub during: Vec<ClientSummary>,
}

/// The outcome of a runtime event from its records.
pub fn event_outcome(
    spec: &LabSpec,
    times: EventTimes,
    watch: &[Watch],
    recs: &[ClientRecord],
) -> Option<EventOutcome> {
    let e = spec.event?;
    let clusters_of = |addrs: &[std::net::Ipv4Addr]| -> Vec<u8> {
        let mut v: Vec<u8> = addrs
            .iter()
            .filter_map(|a| Area::of_web((*a).into()).map(|(x, _)| x.0))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    // The clients' last request ends the run: what the watcher saw later is the shutdown.
    let end_of_run = recs.iter().map(|r| r.t).max().unwrap_or(u64::MAX);
    let answer_changes: Vec<(i64, u8, Vec<u8>)> = watch
        .iter()
        .filter_map(|w| match w {
            Watch::Answer { t, area, addrs } if *t + 1000 >= times.start && *t <= end_of_run => {
                Some((*t as i64 - times.start as i64, *area, clusters_of(addrs)))
            }
            _ => None,
        })
        .collect();
    let first_answer = |area: u8, from: u64, pred: &dyn Fn(&[u8]) -> bool| -> Option<u64> {
        watch.iter().find_map(|w| match w {
            Watch::Answer { t, area: a, addrs }
                if *a == area && *t >= from && pred(&clusters_of(addrs)) =>
            {
                Some(*t - from)
            }
            _ => None,
        })
    };
    // Every instant at which the set of masters may change.
    let instants: Vec<u64> = watch
        .iter()
        .filter_map(|w| match w {
            Watch::Master { t, .. } => Some(*t),
            Watch::Answer { .. } => None,
        })
        .collect();
    let window_end = times.end.unwrap_or(end_of_run);
    let max_masters = std::iter::once(times.start)
        .chain(
            instants
                .iter()
                .copied()
                .filter(|t| *t >= times.start && *t <= window_end),
        )
        .map(|t| masters_at(watch, t).len())
        .max()
        .unwrap_or(0);
    let masters_at_end = masters_at(watch, end_of_run).len();
    let (reaction_ms, recovery_ms) = match e {
        ScenarioEvent::ClusterDies { area, .. } => (
            first_answer(area.0, times.start, &|c| !c.contains(&area.0)),
            None,
        ),
        ScenarioEvent::Overload { area, .. } => (
            first_answer(area.0, times.start, &|c| !c.contains(&area.0)),
            times
                .end
                .and_then(|end| first_answer(area.0, end, &|c| c == [area.0])),
        ),
        ScenarioEvent::MasterDies { .. } => {
            let victim = times.victim.clone().unwrap_or_default();
            let new = instants
                .iter()
                .copied()
                .filter(|t| *t >= times.start)
                .find(|t| {
                    let m = masters_at(watch, *t);
                    m.len() == 1 && m[0] != victim
                });
            (new.map(|t| t - times.start), None)
        }
        ScenarioEvent::Partition { .. } => {
            let two = instants
                .iter()
                .copied()
                .filter(|t| *t >= times.start)
                .find(|t| masters_at(watch, *t).len() >= 2);
            let one = times.end.and_then(|end| {
                instants
                    .iter()
                    .copied()
                    .filter(|t| *t >= end)
                    .find(|t| masters_at(watch, *t).len() == 1)
                    .map(|t| t - end)
            });
            (two.map(|t| t - times.start), one)
        }
    };
    let after: Vec<ClientRecord> = recs
        .iter()
        .filter(|r| r.t >= times.start)
        .cloned()
        .collect();
    let after = client_summaries(spec, &after)
        .into_iter()
        .find(|c| c.who == "all");
    let mut during = Vec::new();
    if let Some(end) = times.end {
        let win: Vec<ClientRecord> = recs
            .iter()
            .filter(|r| r.t >= times.start && r.t < end)
            .cloned()
            .collect();
        during.extend(
            client_summaries(spec, &win)
                .into_iter()
                .filter(|c| c.who == "all"),
        );
        if let Some(area) = e.area() {
            let struck: Vec<ClientRecord> = win
                .into_iter()
                .filter(|r| spec.nearest(Region(r.region)) == area)
                .collect();
            during.extend(
                client_summaries(spec, &struck)
                    .into_iter()
                    .filter(|c| c.who == "all")
                    .map(|mut c| {
                        c.who = "struck-region".into();
                        c
                    }),
            );
        }
    }
    Some(EventOutcome {
        during,
        kind: e.name().to_owned(),
        times,
        reaction_ms,
        recovery_ms,
        max_masters,
        masters_at_end,
        answer_changes,
        after,
    })
}

/// The failure outcome of a run with a failure.
pub fn failure_outcome(
    spec: &LabSpec,
    times: FailureTimes,
    recs: &[ClientRecord],
) -> Option<FailureOutcome> {
    let dead = spec.cluster(dead_area(spec)?);
    let after: Vec<&ClientRecord> = recs.iter().filter(|r| r.t >= times.killed).collect();
    let dead_uses: Vec<&&ClientRecord> = after
        .iter()
        .filter(|r| r.addr.is_some_and(|a| dead.contains(&a)))
        .collect();
    let last = dead_uses.iter().map(|r| r.t).max();
    Some(FailureOutcome {
        times,
        dead_uses: dead_uses.len(),
        errors_after: after.iter().filter(|r| r.error.is_some()).count(),
        requests_after: after.len(),
        last_dead_use_ms: last.map(|t| t - times.killed),
        last_dead_use_after_update_ms: match (last, times.updated) {
            (Some(l), Some(u)) => Some(l as i64 - u as i64),
            _ => None,
        },
    })
}

/// Everything measured in one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// The run's name (scenario and size).
    pub name: String,
    /// The mode (what the area servers answered).
    pub mode: String,
    /// Areas.
    pub areas: u8,
    /// Regions.
    pub regions: u8,
    /// Per resolver kind.
    pub convergence: Vec<Convergence>,
    /// Per resolver kind (or oracle), then `all`.
    pub clients: Vec<ClientSummary>,
    /// The cluster failure, when the run had one.
    #[serde(default)]
    pub failure: Option<FailureOutcome>,
    /// The runtime event, when the run had one.
    #[serde(default)]
    pub event: Option<EventOutcome>,
    /// Per resolver kind (or oracle): the clients' warm-up and what they got after it.
    #[serde(default)]
    pub warmup: Vec<WarmUp>,
    /// The commit and command the run was made with.
    #[serde(default)]
    pub provenance: Option<Provenance>,
    /// Why the run was not made (its figures are empty), e.g. a `walrus-node` without
    /// learned steering.
    #[serde(default)]
    pub not_run: Option<String>,
    /// Learned steering: the area servers' counters and the spoofing test, when measured.
    #[serde(default)]
    pub steering: Option<super::learned::SteeringOutcome>,
    /// The RTT each area can measure to each region's resolvers (TCP connect), against
    /// the latency matrix: the delay line's check.
    #[serde(default)]
    pub measured_rtt: Vec<super::learned::MeasuredRtt>,
}

/// The commit a run was made from and the command that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// `git rev-parse HEAD` of the lab's source tree (`unknown` outside a checkout).
    pub commit: String,
    /// Whether the tree had changes outside `docs/` (the code run was not the commit).
    pub dirty: bool,
    /// The command line.
    pub command: String,
    /// When (Unix ms).
    pub at_ms: u64,
}

impl Provenance {
    /// The provenance of what runs now: the source tree this binary was built from.
    pub fn now() -> Self {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .arg("-C")
                .arg(&root)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
        let dirty = git(&["status", "--porcelain", "--", ".", ":(exclude)docs"])
            .is_none_or(|s| !s.is_empty());
        let command = std::env::args()
            .enumerate()
            .map(|(i, a)| if i == 0 { "walrus-lab".to_owned() } else { a })
            .collect::<Vec<_>>()
            .join(" ");
        Self {
            commit,
            dirty,
            command,
            at_ms: super::relay::now_ms(),
        }
    }
    /// `9b5304d` or `9b5304d (dirty)`.
    pub fn short(&self) -> String {
        let c: String = self.commit.chars().take(12).collect();
        if self.dirty {
            format!("{c} (dirty)")
        } else {
            c
        }
    }
}

/// The clients' warm-up for one resolver kind (or the oracle), regions pooled where
/// shares are given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmUp {
    /// `unbound`, `bind`, ..., or `oracle`.
    pub who: String,
    /// Per region: client requests (the region's clients of this resolver, in time
    /// order) before the first [`SETTLED_RUN`] in a row served by the nearest cluster;
    /// `None`: never within the run.
    pub requests_before: Vec<Option<usize>>,
    /// Share of successful requests served by the nearest cluster after each region's
    /// warm-up (a region that never settled counts with all its requests).
    pub nearest_after: f64,
    /// Requests counted in `nearest_after`.
    pub requests_after: usize,
    /// Median request time after warm-up (same requests), ms.
    pub p50_after_ms: f64,
    /// Share of successful requests served by the nearest cluster per [`BIN_SECS`] bin
    /// from the clients' start: (bin start in seconds, share, requests).
    #[serde(default)]
    pub series: Vec<(u64, f64, usize)>,
    /// The first bin (seconds after the clients' start) from which every bin to the end
    /// has at least [`STEADY_SHARE`] of its requests served by the nearest cluster
    /// (`None`: none, e.g. the last bin is below). Unlike `requests_before`, chance runs of
    /// ten cannot fake it.
    #[serde(default)]
    pub steady_from_secs: Option<u64>,
    /// Share served by the nearest cluster from `steady_from_secs` on.
    #[serde(default)]
    pub nearest_when_steady: Option<f64>,
    /// Median request time from `steady_from_secs` on, ms.
    #[serde(default)]
    pub p50_when_steady_ms: Option<f64>,
    /// As `steady_from_secs`, for the *answer*: the first bin from which every bin has at
    /// least [`STEADY_SHARE`] of its requests resolved to the nearest area's zone. This is
    /// steering's own figure: the cluster serving a request also follows the Controller,
    /// which moves an area to another cluster when its servers look down (on an
    /// overloaded machine, because their reports came late).
    #[serde(default)]
    pub answer_steady_from_secs: Option<u64>,
    /// Whether `answer_steady_from_secs` was computed (false in runs analysed before it).
    #[serde(default)]
    pub answer_checked: bool,
}

/// The share every bin from [`WarmUp::steady_from_secs`] on reaches.
pub const STEADY_SHARE: f64 = 0.95;

/// The first bin from which every bin reaches [`STEADY_SHARE`], and the share from there.
fn steady_from(series: &[(u64, f64, usize)]) -> (Option<u64>, Option<f64>) {
    // The last bin is partial (the clients stop): it does not decide.
    let full = &series[..series.len().saturating_sub(1)];
    let mut from = None;
    for (i, (b, share, _)) in full.iter().enumerate().rev() {
        if *share < STEADY_SHARE {
            break;
        }
        from = Some((i, *b));
    }
    match from {
        Some((i, b)) => {
            let (n, k) = series[i..]
                .iter()
                .fold((0usize, 0.0f64), |(n, k), (_, s, c)| {
                    (n + c, k + s * *c as f64)
                });
            (Some(b), (n > 0).then(|| k / n as f64))
        }
        None => (None, None),
    }
}

/// Per [`BIN_SECS`] bin from `start` (Unix ms): (bin start in seconds, share of `recs`
/// that are `hit`, requests).
fn binned<'a>(
    recs: impl Iterator<Item = &'a ClientRecord>,
    start: u64,
    hit: impl Fn(&ClientRecord) -> bool,
) -> Vec<(u64, f64, usize)> {
    let mut bins: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
    for r in recs {
        let b = r.t.saturating_sub(start) / 1000 / BIN_SECS * BIN_SECS;
        let e = bins.entry(b).or_default();
        e.1 += 1;
        if hit(r) {
            e.0 += 1;
        }
    }
    bins.into_iter()
        .map(|(b, (n, all))| (b, n as f64 / all as f64, all))
        .collect()
}

/// The clients' warm-up per resolver kind (or oracle); `start` is the clients' start
/// (Unix ms).
pub fn warmups(spec: &LabSpec, recs: &[ClientRecord], start: u64) -> Vec<WarmUp> {
    let mut whos: Vec<Option<ResolverKind>> = Vec::new();
    for r in recs {
        if !whos.contains(&r.resolver) {
            whos.push(r.resolver);
        }
    }
    whos.sort();
    whos.into_iter()
        .map(|who| {
            let mut before = Vec::new();
            let mut after: Vec<&ClientRecord> = Vec::new();
            for region in spec.all_regions() {
                let mut mine: Vec<&ClientRecord> = recs
                    .iter()
                    .filter(|r| r.resolver == who && r.region == region.0)
                    .collect();
                mine.sort_by_key(|r| r.t);
                let near = spec.nearest(region);
                let hits: Vec<bool> = mine
                    .iter()
                    .map(|r| r.error.is_none() && r.served_area == Some(near.0))
                    .collect();
                let at = settled_at(&hits);
                before.push(at);
                after.extend(mine.into_iter().skip(at.unwrap_or(0)));
            }
            let ok: Vec<&&ClientRecord> = after.iter().filter(|r| r.error.is_none()).collect();
            let near = ok
                .iter()
                .filter(|r| r.served_area.map(Area) == Some(spec.nearest(Region(r.region))))
                .count();
            let mut times: Vec<f64> = after.iter().map(|r| r.total_ms).collect();
            times.sort_by(f64::total_cmp);
            let mine = recs
                .iter()
                .filter(|r| r.resolver == who && r.error.is_none());
            let series = binned(mine.clone(), start, |r| {
                r.served_area.map(Area) == Some(spec.nearest(Region(r.region)))
            });
            let answers = binned(mine, start, |r| {
                r.answer_area.map(Area) == Some(spec.nearest(Region(r.region)))
            });
            let (steady_from_secs, nearest_when_steady) = steady_from(&series);
            let p50_when_steady_ms = steady_from_secs.map(|from| {
                let mut t: Vec<f64> = recs
                    .iter()
                    .filter(|r| r.resolver == who && r.t >= start + from * 1000)
                    .map(|r| r.total_ms)
                    .collect();
                t.sort_by(f64::total_cmp);
                percentile(&t, 0.5)
            });
            WarmUp {
                answer_steady_from_secs: steady_from(&answers).0,
                answer_checked: true,
                p50_when_steady_ms,
                series,
                steady_from_secs,
                nearest_when_steady,
                who: who.map_or("oracle", |k| k.name()).to_owned(),
                requests_before: before,
                nearest_after: if ok.is_empty() {
                    0.0
                } else {
                    near as f64 / ok.len() as f64
                },
                requests_after: after.len(),
                p50_after_ms: percentile(&times, 0.5),
            }
        })
        .collect()
}

/// Reads a JSON-lines file, skipping lines that do not parse (a killed writer's last line).
pub fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Vec<T> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The convergence of every resolver kind from the relays' records. `start` is the
/// clients' start time (Unix ms).
pub fn convergence(spec: &LabSpec, queries: &[QueryRecord], start: u64) -> Vec<Convergence> {
    let mut out = Vec::new();
    for &kind in &spec.resolvers {
        let settle_after = spec
            .all_regions()
            .map(|r| {
                let mut qs: Vec<&QueryRecord> = queries
                    .iter()
                    .filter(|q| q.region == r.0 && is_probe(&q.qname))
                    .filter(|q| ResolverKind::of_addr(q.src) == Some((r, kind)))
                    .collect();
                qs.sort_by_key(|q| q.t);
                let hits: Vec<bool> = qs.iter().map(|q| Area(q.area) == spec.nearest(r)).collect();
                settled_at(&hits)
            })
            .collect();
        let mine: Vec<(u64, bool, u8)> = queries
            .iter()
            .filter(|q| is_probe(&q.qname))
            .filter_map(|q| {
                let (region, k) = ResolverKind::of_addr(q.src)?;
                (k == kind && region.0 == q.region).then_some(())?;
                let near = spec.nearest(Region(q.region));
                Some((
                    q.t.saturating_sub(start) / 1000,
                    Area(q.area) == near,
                    q.area,
                ))
            })
            .collect();
        let frac = |v: &[&(u64, bool, u8)]| {
            if v.is_empty() {
                0.0
            } else {
                v.iter().filter(|x| x.1).count() as f64 / v.len() as f64
            }
        };
        let all: Vec<&(u64, bool, u8)> = mine.iter().collect();
        let late: Vec<&(u64, bool, u8)> = mine.iter().filter(|x| x.0 >= WARMUP_SECS).collect();
        let mut bins: BTreeMap<u64, Vec<&(u64, bool, u8)>> = BTreeMap::new();
        let mut per_area = BTreeMap::new();
        for x in &mine {
            bins.entry(x.0 / BIN_SECS * BIN_SECS).or_default().push(x);
            *per_area.entry(x.2).or_insert(0) += 1;
        }
        out.push(Convergence {
            resolver: kind,
            areas: spec.areas,
            queries: mine.len(),
            nearest_all: frac(&all),
            nearest_after_warmup: frac(&late),
            series: bins.iter().map(|(b, v)| (*b, frac(v), v.len())).collect(),
            per_area,
            settle_after,
        });
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Summaries of the clients' records, per resolver (or oracle) and over all.
pub fn client_summaries(spec: &LabSpec, recs: &[ClientRecord]) -> Vec<ClientSummary> {
    let mut groups: BTreeMap<String, Vec<&ClientRecord>> = BTreeMap::new();
    for r in recs {
        let who = r.resolver.map_or("oracle", |k| k.name()).to_owned();
        groups.entry(who).or_default().push(r);
        groups.entry("all".into()).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|(who, v)| summarize(spec, who, &v))
        .collect()
}

fn summarize(spec: &LabSpec, who: String, v: &[&ClientRecord]) -> ClientSummary {
    let mut times: Vec<f64> = v.iter().map(|r| r.total_ms).collect();
    times.sort_by(f64::total_cmp);
    let ok: Vec<&&ClientRecord> = v.iter().filter(|r| r.error.is_none()).collect();
    let mut per_cluster = BTreeMap::new();
    let mut nearest = 0usize;
    for r in &ok {
        if let Some(a) = r.served_area {
            *per_cluster.entry(a).or_insert(0) += 1;
            if Area(a) == spec.nearest(Region(r.region)) {
                nearest += 1;
            }
        }
    }
    let answered: Vec<&&ClientRecord> = v.iter().filter(|r| r.answer_area.is_some()).collect();
    let answer_nearest = answered
        .iter()
        .filter(|r| r.answer_area.map(Area) == Some(spec.nearest(Region(r.region))))
        .count();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    ClientSummary {
        who,
        requests: v.len(),
        errors: v.len() - ok.len(),
        p50_ms: percentile(&times, 0.5),
        p99_ms: percentile(&times, 0.99),
        nearest: ratio(nearest, ok.len()),
        per_cluster,
        answer_nearest: ratio(answer_nearest, answered.len()),
    }
}

/// Reads a finished run's records from its directory and computes its figures.
pub fn analyze(spec: &LabSpec, name: &str) -> RunResult {
    let mut queries = Vec::new();
    let mut clients = Vec::new();
    let mut start = u64::MAX;
    for r in spec.all_regions() {
        queries.extend(read_jsonl::<QueryRecord>(
            &spec.dir.join(format!("relay-{r}.jsonl")),
        ));
        clients.extend(read_jsonl::<ClientRecord>(
            &spec.dir.join(format!("clients-{r}.jsonl")),
        ));
        if let Ok(s) = std::fs::read_to_string(spec.dir.join(format!("start-{r}.txt"))) {
            if let Ok(t) = s.trim().parse::<u64>() {
                start = start.min(t);
            }
        }
    }
    if start == u64::MAX {
        start = queries.iter().map(|q| q.t).min().unwrap_or(0);
    }
    RunResult {
        name: name.to_owned(),
        mode: spec.mode.name().to_owned(),
        areas: spec.areas,
        regions: spec.regions,
        convergence: convergence(spec, &queries, start),
        clients: client_summaries(spec, &clients),
        failure: std::fs::read_to_string(spec.dir.join("failure.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .and_then(|t| failure_outcome(spec, t, &clients)),
        event: std::fs::read_to_string(spec.dir.join("event.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .and_then(|t| {
                let watch: Vec<Watch> = read_jsonl(&spec.dir.join("watch.jsonl"));
                event_outcome(spec, t, &watch, &clients)
            }),
        warmup: warmups(spec, &clients, start),
        provenance: None,
        not_run: None,
        steering: super::learned::outcome(spec),
        measured_rtt: read_jsonl(&spec.dir.join("rtt.jsonl")),
    }
}

/// A violated check of the CI form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckFailed {
    /// Too few probes reached the area servers to judge.
    #[error("{resolver}: only {queries} probe queries reached the area servers (need {need})")]
    TooFewProbes {
        /// The resolver.
        resolver: String,
        /// Seen.
        queries: usize,
        /// Needed.
        need: usize,
    },
    /// After warm-up the nearest area did not serve most of the probes.
    #[error("{resolver}: after warm-up only {percent}% of probes went to the nearest area")]
    NotConverged {
        /// The resolver.
        resolver: String,
        /// Percent to the nearest area.
        percent: u32,
    },
    /// A client used a dead server's address after failover + TTL.
    #[error(
        "client {client} in r{region} used dead server {addr} {late_ms} ms after the answer moved"
    )]
    DeadAddress {
        /// Region.
        region: u8,
        /// Client.
        client: u32,
        /// The address.
        addr: String,
        /// How long after the answer moved.
        late_ms: u64,
    },
    /// A client was given an address that the answering area's zone does not hold.
    #[error(
        "client {client} in r{region} got {addr} from area a{area}'s zone, which does not hold it"
    )]
    ForeignAddress {
        /// Region.
        region: u8,
        /// Client.
        client: u32,
        /// The address.
        addr: String,
        /// The area named by the CNAME.
        area: u8,
    },
}

/// After the answer moved and `grace_ms` more (the TTL the resolver and the stub may still
/// hold, plus requests in flight), no client uses a dead server's address.
pub fn check_no_dead_address(
    spec: &LabSpec,
    times: FailureTimes,
    recs: &[ClientRecord],
    grace_ms: u64,
) -> Result<(), CheckFailed> {
    let (Some(area), Some(updated)) = (dead_area(spec), times.updated) else {
        return Ok(());
    };
    let dead = spec.cluster(area);
    for r in recs {
        if r.t > updated + grace_ms {
            if let Some(addr) = r.addr.filter(|a| dead.contains(a)) {
                return Err(CheckFailed::DeadAddress {
                    region: r.region,
                    client: r.client,
                    addr: addr.to_string(),
                    late_ms: r.t - updated,
                });
            }
        }
    }
    Ok(())
}

/// After warm-up, the nearest area serves most (more than `min_share`) of each resolver's
/// probes. Only for resolvers known to converge (BIND, Knot, PowerDNS, tuned Unbound).
pub fn check_converged(
    conv: &[Convergence],
    min_share: f64,
    min_queries: usize,
) -> Result<(), CheckFailed> {
    for c in conv {
        if c.queries < min_queries {
            return Err(CheckFailed::TooFewProbes {
                resolver: c.resolver.name().into(),
                queries: c.queries,
                need: min_queries,
            });
        }
        if c.nearest_after_warmup <= min_share {
            return Err(CheckFailed::NotConverged {
                resolver: c.resolver.name().into(),
                percent: (c.nearest_after_warmup * 100.0) as u32,
            });
        }
    }
    Ok(())
}

/// Every address a client used came from the zone of the area its CNAME named (the DNS
/// path is consistent end to end: no stale, foreign or made-up address). With the real
/// runtime the Controller may give an area any cluster: there every address must be one
/// of the site's servers.
pub fn check_addresses(spec: &LabSpec, recs: &[ClientRecord]) -> Result<(), CheckFailed> {
    let site: Vec<std::net::Ipv4Addr> = spec.all_areas().flat_map(|a| spec.cluster(a)).collect();
    for r in recs {
        if spec.mode.is_runtime() {
            if let (Some(addr), Some(area)) = (r.addr, r.answer_area) {
                if !site.contains(&addr) {
                    return Err(CheckFailed::ForeignAddress {
                        region: r.region,
                        client: r.client,
                        addr: addr.to_string(),
                        area,
                    });
                }
            }
            continue;
        }
        let (Some(addr), Some(area), Some(_)) = (r.addr, r.answer_area, r.resolver) else {
            continue;
        };
        let moved = spec
            .failure
            .filter(|f| f.redirect && f.area == Area(area))
            .map(|f| spec.cluster(f.to))
            .unwrap_or_default();
        if !spec.answer_of(Area(area)).contains(&addr) && !moved.contains(&addr) {
            return Err(CheckFailed::ForeignAddress {
                region: r.region,
                client: r.client,
                addr: addr.to_string(),
                area,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Mode;

    fn spec() -> LabSpec {
        LabSpec {
            prefix: "t".into(),
            dir: "/nonexistent".into(),
            areas: 2,
            servers_per_cluster: 2,
            regions: 2,
            rtt_ms: LabSpec::ring_matrix(2, 2, 10, 40),
            resolvers: vec![ResolverKind::Bind],
            mode: Mode::Walrus,
            ttl_secs: 1,
            seconds: 30,
            clients_per_resolver: 1,
            think_ms: 100,
            probe_rate: 10,
            seed: 1,
            failure: None,
            event: None,
            spoof: None,
        }
    }

    fn probes(region: u8, areas: &[u8]) -> Vec<QueryRecord> {
        areas
            .iter()
            .enumerate()
            .map(|(i, a)| QueryRecord {
                t: 1_000 + i as u64 * 500,
                region,
                src: ResolverKind::Bind.addr(Region(region)).into(),
                area: *a,
                qname: format!("p{i}-bind-r{region}.walrus.test."),
                qtype: "A".into(),
            })
            .collect()
    }

    #[test]
    fn converged_resolver_passes() {
        // 10 s of learning spread over both areas, then region 1 sticks to area 1.
        let mut q = probes(1, &[[1u8, 2]; 9].concat());
        q.extend(probes(1, &[1; 40]).into_iter().map(|mut r| {
            r.t += 11_000;
            r
        }));
        let c = convergence(&spec(), &q, 0);
        assert_eq!(c[0].queries, 58);
        assert!(c[0].nearest_after_warmup > 0.99);
        assert!(check_converged(&c, 0.5, 20).is_ok());
    }

    #[test]
    fn settling_is_the_first_run_of_nearest_probes() {
        let t = true;
        let f = false;
        assert_eq!(settled_at(&[t; 10]), Some(0));
        assert_eq!(
            settled_at(&[[f, t, f].as_slice(), &[t; 10]].concat()),
            Some(3)
        );
        assert_eq!(
            settled_at(&[[t; 9].as_slice(), &[f], &[t; 9]].concat()),
            None
        );
        let mut q = probes(1, &[2, 2, 1, 2]);
        q.extend(probes(1, &[1; 12]).into_iter().map(|mut r| {
            r.t += 10_000;
            r
        }));
        assert_eq!(
            convergence(&spec(), &q, 0)[0].settle_after,
            vec![Some(4), None]
        );
    }

    #[test]
    fn planted_fault_far_area_is_caught() {
        // The planted fault: region 1's resolver keeps asking the far area.
        let q: Vec<QueryRecord> = probes(1, &[2; 60]);
        let c = convergence(&spec(), &q, 0);
        assert_eq!(c[0].nearest_all, 0.0);
        assert!(matches!(
            check_converged(&c, 0.5, 20),
            Err(CheckFailed::NotConverged { .. })
        ));
        assert!(matches!(
            check_converged(&convergence(&spec(), &q[..5], 0), 0.5, 20),
            Err(CheckFailed::TooFewProbes { .. })
        ));
    }

    fn rec(addr: &str, area: u8) -> ClientRecord {
        ClientRecord {
            t: 0,
            region: 1,
            resolver: Some(ResolverKind::Bind),
            client: 1,
            addr: Some(addr.parse().unwrap()),
            answer_area: Some(area),
            served_area: Area::of_web(addr.parse().unwrap()).map(|x| x.0 .0),
            cached: false,
            dns_ms: 1.0,
            total_ms: 20.0,
            error: None,
        }
    }

    #[test]
    fn addresses_check_catches_a_foreign_address() {
        assert!(check_addresses(&spec(), &[rec("10.1.1.2", 1), rec("10.2.1.1", 2)]).is_ok());
        // Planted fault: area 1's zone cannot have given a server of area 2.
        assert!(matches!(
            check_addresses(&spec(), &[rec("10.2.1.1", 1)]),
            Err(CheckFailed::ForeignAddress { area: 1, .. })
        ));
    }

    #[test]
    fn dead_address_after_grace_is_caught() {
        let mut s = spec();
        s.failure = Some(crate::spec::Failure {
            area: Area(2),
            at_secs: 5,
            to: Area(1),
            detect_ms: 1000,
            redirect: true,
        });
        let times = FailureTimes {
            killed: 5_000,
            updated: Some(6_000),
        };
        let mut early = rec("10.2.1.1", 2);
        early.t = 6_500;
        let mut moved = rec("10.1.1.1", 2);
        moved.t = 20_000;
        let recs = vec![early.clone(), moved];
        assert!(check_no_dead_address(&s, times, &recs, 3_000).is_ok());
        // Planted fault: a dead address long after the move.
        let mut late = early;
        late.t = 12_000;
        assert!(matches!(
            check_no_dead_address(&s, times, &[late.clone()], 3_000),
            Err(CheckFailed::DeadAddress { late_ms: 6_000, .. })
        ));
        let o = failure_outcome(&s, times, &recs).unwrap();
        assert_eq!((o.dead_uses, o.last_dead_use_ms), (1, Some(1_500)));
    }

    #[test]
    fn warm_up_counts_requests_before_ten_nearest_in_a_row() {
        let s = spec();
        // Region 1 (nearest a1): 3 far, 1 near, 1 far, then 12 near.
        let mut recs = Vec::new();
        let seq = [[2u8, 2, 2, 1, 2].as_slice(), &[1; 12]].concat();
        for (i, a) in seq.iter().enumerate() {
            let mut r = rec(&format!("10.{a}.1.1"), *a);
            r.t = i as u64 * 100;
            recs.push(r);
        }
        let w = warmups(&s, &recs, 0);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].requests_before, vec![Some(5), None]);
        assert_eq!(w[0].requests_after, 12);
        assert_eq!(w[0].nearest_after, 1.0);
        // Planted fault: one far request in the middle of the run of 12 breaks it.
        recs[10] = rec("10.2.1.1", 2);
        recs[10].t = 1_000;
        let w = warmups(&s, &recs, 0);
        assert_eq!(w[0].requests_before, vec![None, None]);
        assert!(w[0].nearest_after < 0.8);
    }

    #[test]
    fn the_answer_is_steady_while_the_controller_moves_the_cluster() {
        let s = spec();
        // Region 1's requests, one a second for 40 s, all resolved to area 1's zone; from
        // 20 to 24 s the Controller has moved area 1 to cluster 2 (its addresses).
        let mut recs = Vec::new();
        for i in 0..40u64 {
            let moved = (20..24).contains(&i);
            let mut r = rec(if moved { "10.2.1.1" } else { "10.1.1.1" }, 1);
            r.t = i * 1000;
            recs.push(r);
        }
        let w = &warmups(&s, &recs, 0)[0];
        assert!(w.answer_checked);
        assert_eq!(w.answer_steady_from_secs, Some(0));
        assert_eq!(w.steady_from_secs, Some(24));
        // Planted fault: steering named area 2's zone from 30 to 32 s.
        for r in &mut recs[30..32] {
            *r = ClientRecord {
                answer_area: Some(2),
                ..r.clone()
            };
        }
        let w = &warmups(&s, &recs, 0)[0];
        assert_eq!(w.answer_steady_from_secs, Some(32));
    }

    #[test]
    fn steady_from_is_the_first_bin_of_the_last_run_at_95_percent() {
        let s = |v: &[f64]| -> Vec<(u64, f64, usize)> {
            v.iter()
                .enumerate()
                .map(|(i, x)| (i as u64 * BIN_SECS, *x, 10))
                .collect()
        };
        assert_eq!(
            steady_from(&s(&[0.4, 1.0, 0.3, 1.0, 0.96, 1.0, 0.2])),
            (Some(6), Some((10.0 + 9.6 + 10.0 + 2.0) / 40.0))
        );
        // Planted fault: a dip in the middle of the late run moves the start past it.
        assert_eq!(steady_from(&s(&[1.0, 1.0, 0.9, 1.0, 1.0])).0, Some(6));
        assert_eq!(steady_from(&s(&[1.0, 0.5, 0.3])), (None, None));
    }

    #[test]
    fn summaries_count_clusters_and_percentiles() {
        let mut recs = vec![rec("10.1.1.1", 1), rec("10.2.1.1", 2), rec("10.1.1.2", 1)];
        recs[1].total_ms = 100.0;
        recs[2].error = Some("http timeout".into());
        let s = client_summaries(&spec(), &recs);
        let all = s.iter().find(|s| s.who == "all").unwrap();
        assert_eq!(all.requests, 3);
        assert_eq!(all.errors, 1);
        assert_eq!(all.per_cluster.get(&1), Some(&1));
        assert_eq!(all.nearest, 0.5);
        assert_eq!(all.p99_ms, 100.0);
    }

    fn answer(t: u64, area: u8, addrs: &[&str]) -> Watch {
        Watch::Answer {
            t,
            area,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn master(t: u64, node: &str, is: bool) -> Watch {
        Watch::Master {
            t,
            node: node.into(),
            is_master: Some(is),
            master: None,
        }
    }

    #[test]
    fn runtime_cluster_dies_uses_the_watchers_move_and_catches_a_late_dead_address() {
        let mut s = spec();
        s.mode = Mode::Runtime;
        s.event = Some(ScenarioEvent::ClusterDies {
            area: Area(2),
            at_secs: 5,
        });
        assert_eq!(dead_area(&s), Some(Area(2)));
        let watch = vec![
            answer(1_000, 2, &["10.2.1.1", "10.2.1.2"]),
            answer(7_200, 2, &["10.1.1.1", "10.1.1.2"]),
        ];
        let times = EventTimes {
            start: 5_000,
            end: None,
            victim: None,
        };
        let o = event_outcome(&s, times, &watch, &[]).unwrap();
        assert_eq!(o.reaction_ms, Some(2_200));
        assert_eq!(o.answer_changes, vec![(2_200, 2, vec![1])]);
        // The runtime may give area 2 area 1's servers: not a foreign address there.
        assert!(check_addresses(&s, &[rec("10.1.1.1", 2)]).is_ok());
        assert!(check_addresses(&s, &[rec("10.9.1.1", 2)]).is_err());
        let ft = FailureTimes {
            killed: 5_000,
            updated: Some(7_200),
        };
        let mut ok = rec("10.2.1.1", 2);
        ok.t = 8_000;
        assert!(check_no_dead_address(&s, ft, &[ok], 2_000).is_ok());
        // Planted fault: a dead server used 5 s after the answer moved.
        let mut late = rec("10.2.1.2", 2);
        late.t = 12_200;
        assert!(matches!(
            check_no_dead_address(&s, ft, &[late], 2_000),
            Err(CheckFailed::DeadAddress { late_ms: 5_000, .. })
        ));
    }

    #[test]
    fn runtime_master_and_partition_outcomes_count_masters() {
        let mut s = spec();
        s.mode = Mode::Runtime;
        s.event = Some(ScenarioEvent::MasterDies { at_secs: 5 });
        let w = vec![
            master(100, "a1-c", true),
            master(100, "a2-c", false),
            master(5_300, "a1-c", false),
            master(5_900, "a2-c", true),
        ];
        let times = EventTimes {
            start: 5_000,
            end: None,
            victim: Some("a1-c".into()),
        };
        let o = event_outcome(&s, times.clone(), &w, &[]).unwrap();
        assert_eq!(o.reaction_ms, Some(900));
        assert_eq!((o.max_masters, o.masters_at_end), (1, 1));
        s.event = Some(ScenarioEvent::Partition {
            area: Area(2),
            at_secs: 5,
            secs: 5,
        });
        let w = vec![
            master(100, "a1-c", true),
            master(100, "a2-c", false),
            master(6_000, "a2-c", true),
            master(10_700, "a2-c", false),
        ];
        let times = EventTimes {
            start: 5_000,
            end: Some(10_000),
            victim: None,
        };
        let o = event_outcome(&s, times, &w, &[]).unwrap();
        assert_eq!(o.reaction_ms, Some(1_000));
        assert_eq!(o.recovery_ms, Some(700));
        assert_eq!((o.max_masters, o.masters_at_end), (2, 1));
    }
}
