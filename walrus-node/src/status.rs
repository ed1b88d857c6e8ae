//! Observability of a node (or of the demo's whole deployment): the `/status` JSON
//! document, `/metrics` in Prometheus text format, and `/` a live dashboard page, served
//! with actix-web on the node's `status_addr`.
//!
//! ```text
//!  ControllerHandle ─┐                        ┌─▶ GET /status   (StatusDoc as JSON)
//!  ReporterHandle   ─┼─ Sources ─▶ Observer ──┼─▶ GET /metrics  (counters + gauges)
//!  Director watches ─┤   (poll,    (counters,  └─▶ GET /        (dashboard.html: polls
//!  gcs view watch   ─┘   100 ms)    event log)                   /status, no assets)
//! ```
//!
//! The [`Observer`] is pure: it is fed [`Sample`]s (what the handles say now) and keeps
//! what a snapshot cannot: counters (rounds, reports, moves, DNS updates, view changes)
//! and the log of the last decisions with their reasons ("round 812: area eu → c2,
//! phase 3, c1 has no working server"). A sampling task polls the handles every 100 ms,
//! far shorter than a round, and feeds it; decisions it could miss between two samples
//! still show in the answers, and rounds are counted from round numbers.

use crate::config::Config;
use crate::history::{History, HistoryDoc};
use crate::http_access::HttpAccess;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use walrus_actors::controller::actor::{wall_clock_ms, ControllerHandle, ControllerStatus};
use walrus_actors::controller::assign::{DeadCause, LoadBasis, ServerState};
use walrus_actors::controller::overrides::Target;
use walrus_actors::digests::Digests;
use walrus_actors::director::core::DirectorStatus;
use walrus_actors::model::{AreaName, Decision};
use walrus_actors::replicator::actor::ReplicatorStatus;
use walrus_actors::reporter::state::{Condition, Snapshot};
use walrus_actors::reporter::ReporterHandle;
use walrus_actors::supervision::{RoleMetrics, Supervision};
use walrus_gcs::{Gcs, GcsStats, ViewChange};

/// How many decisions the event log keeps.
pub const EVENT_LOG: usize = 50;

/// Why the status server could not start, or `walrus-node status` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// The address could not be bound.
    #[error("status server on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
    /// The status page could not be fetched.
    #[error("GET {url}: {detail}")]
    Fetch {
        /// The page.
        url: String,
        /// What failed.
        detail: String,
    },
    /// The status page is not a status document.
    #[error("{url}: not a status document: {source}")]
    Parse {
        /// The page.
        url: String,
        /// What is wrong.
        source: serde_json::Error,
    },
}

// ----------------------------------------------------------------------------------------
// The document.

/// Everything `/status` says (also what the dashboard and `walrus-node status` show).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    /// The node serving this page ("demo" for the demo's deployment view).
    pub node: String,
    /// The site.
    pub site: String,
    /// The group-communication view this node is in.
    pub view: Option<ViewDoc>,
    /// The master Controller's node, as this node knows it.
    pub master: Option<String>,
    /// True when this node's Controller is master.
    pub is_master: bool,
    /// The last round decided (made or adopted).
    pub round: Option<u64>,
    /// Every area: home cluster, assigned cluster, answer, name server state.
    pub areas: Vec<AreaDoc>,
    /// Every cluster with its load (from the last round this node closed as master).
    pub clusters: Vec<ClusterDoc>,
    /// Every server with its state and load.
    pub servers: Vec<ServerDoc>,
    /// The last decisions that changed an answer, with their reasons, oldest first.
    pub events: Vec<String>,
    /// Counters since this node started.
    pub counters: Counters,
    /// This node's Replicator, when it runs one.
    #[serde(default)]
    pub replication: Option<ReplicationDoc>,
    /// The newest content generation the Controller knows (announced or reported).
    #[serde(default)]
    pub newest_generation: Option<u64>,
    /// The digest of this node's configuration file ([`Config::digest`]): nodes whose
    /// digests differ run different files.
    #[serde(default)]
    pub config_digest: String,
    /// Each node's config digest as announced to this node over the group (this node's
    /// own included): node → digest. More than one digest: the nodes run different files
    /// (a push in progress); the master decides with its own.
    #[serde(default)]
    pub config_digests: BTreeMap<String, String>,
    /// This node's role actors: restarts and mailboxes.
    #[serde(default)]
    pub actors: Vec<ActorDoc>,
    /// Where this node's Reporter reads OS statistics: "procfs" or "sysinfo".
    #[serde(default)]
    pub os_source: Option<String>,
    /// Operators' drains and pins in force, one line each (who, what, for how long, why).
    #[serde(default)]
    pub overrides: Vec<String>,
}

/// One role actor on the status page (from its supervision record).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActorDoc {
    /// The role ("controller", "reporter", "director", ...).
    pub role: String,
    /// Restarts since the node started.
    pub restarts: u64,
    /// The cause of the last restart.
    pub last_cause: Option<String>,
    /// Events waiting in its queue.
    pub mailbox_depth: usize,
    /// The queue's capacity.
    pub mailbox_capacity: usize,
    /// Times its queue was found full.
    pub mailbox_full: u64,
}

/// This node's Replicator on the status page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicationDoc {
    /// "primary" or "replica".
    pub role: String,
    /// The generation this node serves (primary: the newest it published).
    pub generation: Option<u64>,
    /// The newest generation the primary announced, as far as this node knows.
    pub newest: Option<u64>,
    /// Generations behind `newest`.
    pub lag: Option<u64>,
    /// Pulls that brought a new generation.
    pub pulls: u64,
    /// Failed pull attempts.
    pub failures: u64,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
}

/// A group-communication view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewDoc {
    /// The view identifier.
    pub id: String,
    /// Its member nodes.
    pub members: Vec<String>,
}

/// One area on the status page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AreaDoc {
    /// The area.
    pub name: String,
    /// Its home cluster.
    pub home_cluster: String,
    /// The cluster it is assigned to (None before the first decision).
    pub cluster: Option<String>,
    /// The addresses its name server hands out.
    pub answer: Vec<String>,
    /// The name server's state when this node runs the area's Director.
    pub dns: Option<String>,
}

/// One cluster on the status page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterDoc {
    /// The cluster.
    pub name: String,
    /// Its load (1.0 = at capacity); None when no server of it works or no round is known.
    pub load: Option<f64>,
}

/// One web server on the status page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerDoc {
    /// The server.
    pub name: String,
    /// Its cluster.
    pub cluster: String,
    /// "working", "working (last round's load)", "dead (no answer)", "dead (BYPASS)",
    /// "dead (PANIC)" or "unknown".
    pub state: String,
    /// Its load (1.0 = at capacity), when working.
    pub load: Option<f64>,
    /// What this node's Reporter says, when it reports on this server.
    pub reporter: Option<String>,
    /// The content generation the server's host last reported (with a Replicator).
    #[serde(default)]
    pub generation: Option<u64>,
    /// Generations behind the newest one.
    #[serde(default)]
    pub generation_lag: Option<u64>,
}

/// Counters since the node started (the monotonic part of `/metrics`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Rounds this node closed as master.
    pub rounds: u64,
    /// Reports used in those rounds.
    pub reports: u64,
    /// Sum of those rounds' durations (report request to decision), seconds.
    pub round_seconds_sum: f64,
    /// The last of those rounds' duration, seconds.
    pub last_round_seconds: f64,
    /// Decisions seen (made or adopted).
    pub decisions: u64,
    /// Areas moved to another cluster.
    pub area_moves: u64,
    /// Answers changed within the same cluster.
    pub answer_changes: u64,
    /// Name-server applications that changed the zone.
    pub dns_updates: u64,
    /// Name-server applications that failed.
    pub dns_failures: u64,
    /// Group views installed.
    pub view_changes: u64,
    /// Times this node's Controller became master.
    pub master_terms: u64,
    /// The group node's message counters (from the latest sample).
    pub gcs: GcsCounters,
}

/// walrus-gcs message counters (see [`GcsStats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct GcsCounters {
    /// Multicasts accepted from local sessions.
    pub multicasts: u64,
    /// Messages delivered to local sessions.
    pub delivered: u64,
    /// Protocol frames sent.
    pub frames_sent: u64,
    /// Protocol frames received.
    pub frames_received: u64,
    /// Handshakes refused.
    pub handshakes_refused: u64,
}

// ----------------------------------------------------------------------------------------
// Samples and the observer.

/// What the handles say at one instant.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// This node's Controller (or, in the demo, the master's).
    pub controller: Option<ControllerStatus>,
    /// The master's node name, if another source knows it better than `controller`.
    pub master: Option<String>,
    /// Reporters' snapshots by server name.
    pub reporters: BTreeMap<String, Snapshot>,
    /// Directors' status by area.
    pub directors: BTreeMap<AreaName, DirectorStatus>,
    /// The group view.
    pub view: Option<ViewChange>,
    /// The group node's message counters.
    pub gcs: Option<GcsStats>,
    /// This node's Replicator.
    pub replicator: Option<ReplicatorStatus>,
    /// The role actors' supervision figures.
    pub actors: BTreeMap<String, RoleMetrics>,
    /// This node's Reporter's OS reader.
    pub os_source: Option<&'static str>,
    /// Each node's config digest as announced on `Nodes` (`walrus_actors::digests`).
    pub digests: Option<Digests>,
}

/// Keeps counters and the event log across samples; builds the status document.
#[derive(Debug, Clone)]
pub struct Observer {
    node: String,
    config: Config,
    counters: Counters,
    events: VecDeque<String>,
    last_decision: Option<Decision>,
    last_round_closed: Option<u64>,
    last_view: Option<String>,
    dns_seen: BTreeMap<AreaName, (usize, Option<(u64, String)>)>,
    was_master: bool,
    latest: Sample,
    history: History,
}

impl Observer {
    /// An observer for node `node` of `config`.
    pub fn new(node: &str, config: &Config) -> Self {
        Self {
            node: node.to_owned(),
            config: config.clone(),
            counters: Counters::default(),
            events: VecDeque::new(),
            last_decision: None,
            last_round_closed: None,
            last_view: None,
            dns_seen: BTreeMap::new(),
            was_master: false,
            latest: Sample::default(),
            history: History::default(),
        }
    }

    /// Takes one sample now; returns the event lines it added (new decisions with changes).
    pub fn observe(&mut self, s: Sample) -> Vec<String> {
        self.observe_at(s, wall_clock_ms())
    }

    /// The dashboard's history (loads and area timelines) at `now_ms`.
    pub fn history(&self, now_ms: u64) -> HistoryDoc {
        self.history.doc(now_ms)
    }

    /// Takes one sample taken at `now_ms` (wall clock, ms since the Unix epoch).
    pub fn observe_at(&mut self, s: Sample, now_ms: u64) -> Vec<String> {
        let mut added = Vec::new();
        if let Some(c) = &s.controller {
            if c.is_master && !self.was_master {
                self.counters.master_terms += 1;
            }
            self.was_master = c.is_master;
            if let Some(r) = &c.last_round {
                if self.last_round_closed != Some(r.round.0) {
                    self.history.record_round(
                        now_ms,
                        r.round.0,
                        r.cluster_loads.iter().map(|(c, l)| (c.0.clone(), *l)),
                    );
                    self.counters.rounds += 1;
                    self.counters.reports += r.reports as u64;
                    self.counters.round_seconds_sum += r.duration.as_secs_f64();
                    self.counters.last_round_seconds = r.duration.as_secs_f64();
                    self.last_round_closed = Some(r.round.0);
                }
            }
            if let Some(d) = &c.last_decision {
                let newer = self
                    .last_decision
                    .as_ref()
                    .is_none_or(|l| d.round > l.round);
                if newer {
                    self.history.record_decision(now_ms, d);
                    self.counters.decisions += 1;
                    for line in describe_changes(d) {
                        added.push(line.clone());
                        self.push_event(line);
                    }
                    for ch in &d.changes {
                        if ch.from.as_ref().is_some_and(|f| *f != ch.to) {
                            self.counters.area_moves += 1;
                        } else {
                            self.counters.answer_changes += 1;
                        }
                    }
                    self.last_decision = Some(d.clone());
                }
            }
        }
        for (area, st) in &s.directors {
            let newest = st.history.back().map(|e| (e.round.0, e.outcome.clone()));
            let (_, seen) = self.dns_seen.entry(area.clone()).or_default();
            if newest.is_some() && newest != *seen {
                if let Some((_, outcome)) = &newest {
                    if outcome.starts_with("updated") {
                        self.counters.dns_updates += 1;
                    } else if !outcome.starts_with("unchanged") {
                        self.counters.dns_failures += 1;
                    }
                }
                *seen = newest;
            }
        }
        if let Some(g) = s.gcs {
            self.counters.gcs = GcsCounters {
                multicasts: g.multicasts,
                delivered: g.delivered,
                frames_sent: g.frames_sent,
                frames_received: g.frames_received,
                handshakes_refused: g.handshakes_refused,
            };
        }
        if let Some(v) = &s.view {
            let id = v.view.to_string();
            if self.last_view.as_ref() != Some(&id) {
                self.counters.view_changes += 1;
                self.last_view = Some(id);
            }
        }
        self.latest = s;
        added
    }

    fn push_event(&mut self, line: String) {
        if self.events.len() == EVENT_LOG {
            self.events.pop_front();
        }
        self.events.push_back(line);
    }

    /// Records an event that is not a decision (the demo's scripted events).
    pub fn note(&mut self, line: String) {
        self.push_event(line);
    }

    /// A reloaded configuration: the areas, clusters, servers and digest shown follow it.
    pub fn set_config(&mut self, config: Config) {
        self.config = config;
    }

    /// The configuration it describes.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The status document from the latest sample.
    pub fn doc(&self) -> StatusDoc {
        let s = &self.latest;
        let ctl = s.controller.as_ref();
        let decision = ctl
            .and_then(|c| c.last_decision.as_ref())
            .or(self.last_decision.as_ref());
        let round = ctl.and_then(|c| c.last_round.as_ref());
        let areas = self
            .config
            .areas
            .iter()
            .map(|(name, a)| {
                let answer = decision.and_then(|d| d.answers.get(name));
                AreaDoc {
                    name: name.0.clone(),
                    home_cluster: a.home_cluster.0.clone(),
                    cluster: answer.map(|x| x.cluster.0.clone()),
                    answer: answer
                        .map(|x| x.records.iter().map(|r| r.to_string()).collect())
                        .unwrap_or_default(),
                    dns: s.directors.get(name).map(describe_director),
                }
            })
            .collect();
        let clusters = self
            .config
            .clusters
            .keys()
            .map(|c| ClusterDoc {
                name: c.0.clone(),
                load: round.and_then(|r| r.cluster_loads.get(c).copied().flatten()),
            })
            .collect();
        let mut servers = Vec::new();
        for (cname, c) in &self.config.clusters {
            for sname in c.servers.keys() {
                let st = round.and_then(|r| r.states.get(sname));
                let generation = round.and_then(|r| r.generations.get(sname)).map(|g| g.0);
                let newest = round.and_then(|r| r.newest_generation).map(|g| g.0);
                let (state, load) = match st {
                    Some(ServerState::Working { load, basis }) => (
                        match basis {
                            LoadBasis::Fresh => "working".to_owned(),
                            LoadBasis::LastRound => "working (last round's load)".to_owned(),
                            LoadBasis::Unknown => "working (load unknown)".to_owned(),
                        },
                        Some(*load),
                    ),
                    Some(ServerState::Dead(cause)) => (
                        match cause {
                            DeadCause::NoAnswer => "dead (no answer)",
                            DeadCause::Bypass => "dead (BYPASS)",
                            DeadCause::Panic => "dead (PANIC)",
                        }
                        .to_owned(),
                        None,
                    ),
                    None => ("unknown".to_owned(), None),
                };
                servers.push(ServerDoc {
                    name: sname.0.clone(),
                    cluster: cname.0.clone(),
                    state,
                    load,
                    reporter: s.reporters.get(&sname.0).map(describe_snapshot),
                    generation,
                    generation_lag: generation.zip(newest).map(|(g, n)| n.saturating_sub(g)),
                });
            }
        }
        let master = s.master.clone().or_else(|| {
            ctl.and_then(|c| c.members.first())
                .map(|m| m.node.as_str().to_owned())
        });
        StatusDoc {
            node: self.node.clone(),
            site: self.config.site.clone(),
            view: s.view.as_ref().map(|v| ViewDoc {
                id: v.view.to_string(),
                members: v.members.iter().map(|m| m.id.as_str().to_owned()).collect(),
            }),
            master,
            is_master: ctl.is_some_and(|c| c.is_master),
            round: decision.map(|d| d.round.0),
            areas,
            clusters,
            servers,
            events: self.events.iter().cloned().collect(),
            counters: self.counters.clone(),
            replication: s.replicator.as_ref().map(|r| ReplicationDoc {
                role: if r.primary { "primary" } else { "replica" }.to_owned(),
                generation: r.generation.map(|g| g.0),
                newest: r.newest.map(|g| g.0),
                lag: r.lag(),
                pulls: r.pulls,
                failures: r.failures,
                last_error: r.last_error.clone(),
            }),
            newest_generation: round.and_then(|r| r.newest_generation).map(|g| g.0),
            config_digest: self.config.digest.clone(),
            config_digests: s
                .digests
                .as_ref()
                .map(|d| d.nodes.clone())
                .unwrap_or_default(),
            overrides: ctl
                .map(|c| {
                    let now = wall_clock_ms();
                    c.overrides
                        .iter()
                        .map(|o| {
                            let what = match &o.target {
                                Target::Drain { server } => format!("server {server}"),
                                Target::Pin { area, cluster } => {
                                    format!("area {area} → {cluster}")
                                }
                            };
                            format!("{what}: {}", o.describe(now))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            actors: s
                .actors
                .iter()
                .map(|(role, m)| ActorDoc {
                    role: role.clone(),
                    restarts: m.restarts,
                    last_cause: m.last_cause.clone(),
                    mailbox_depth: m.mailbox_depth,
                    mailbox_capacity: m.mailbox_capacity,
                    mailbox_full: m.mailbox_full,
                })
                .collect(),
            os_source: s.os_source.map(str::to_owned),
        }
    }
}

/// One line per change of a decision: "round 812: area eu → c2, phase 3, c1 has no
/// working server".
pub fn describe_changes(d: &Decision) -> Vec<String> {
    d.changes
        .iter()
        .map(|c| match &c.from {
            Some(from) if *from != c.to => format!(
                "round {}: area {} → {} (from {}), phase {}, {}",
                d.round, c.area, c.to, from, c.phase, c.reason
            ),
            Some(_) => format!(
                "round {}: area {} stays on {}, answer changed: {}",
                d.round, c.area, c.to, c.reason
            ),
            None => format!(
                "round {}: area {} assigned to {}, phase {}, {}",
                d.round, c.area, c.to, c.phase, c.reason
            ),
        })
        .collect()
}

fn describe_director(st: &DirectorStatus) -> String {
    let last = st
        .history
        .back()
        .map(|e| format!("round {}: {}", e.round, e.outcome))
        .unwrap_or_else(|| "no application yet".to_owned());
    if st.in_sync {
        format!("in sync ({last})")
    } else if st.consecutive_failures > 0 {
        format!("{} failures ({last})", st.consecutive_failures)
    } else {
        format!("pending ({last})")
    }
}

fn describe_snapshot(s: &Snapshot) -> String {
    match &s.condition {
        Condition::Starting => "starting".to_owned(),
        Condition::Stats(st) => format!(
            "{} of {} workers busy, {} hits",
            st.web.busy_workers, st.web.max_workers, st.web.hits
        ),
        Condition::Transient { reason } => format!("TEMPFAIL: {reason}"),
        Condition::Down { reason } => format!("PANIC: {reason}"),
    }
}

// ----------------------------------------------------------------------------------------
// Metrics.

/// The Prometheus text exposition of a status document.
pub fn render_metrics(doc: &StatusDoc) -> String {
    let c = &doc.counters;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in lines {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let one = |v: u64| vec![(String::new(), v as f64)];
    metric(
        "walrus_rounds_total",
        "counter",
        "Rounds this node closed as master.",
        one(c.rounds),
    );
    metric(
        "walrus_round_duration_seconds",
        "summary",
        "Duration of the rounds this node closed as master (report request to decision).",
        vec![
            ("_sum".to_owned(), c.round_seconds_sum),
            ("_count".to_owned(), c.rounds as f64),
        ],
    );
    metric(
        "walrus_last_round_duration_seconds",
        "gauge",
        "Duration of the last round this node closed as master.",
        vec![(String::new(), c.last_round_seconds)],
    );
    metric(
        "walrus_reports_received_total",
        "counter",
        "Reports used in the rounds this node closed.",
        one(c.reports),
    );
    metric(
        "walrus_decisions_total",
        "counter",
        "Decisions made or adopted.",
        one(c.decisions),
    );
    metric(
        "walrus_area_moves_total",
        "counter",
        "Areas moved to another cluster.",
        one(c.area_moves),
    );
    metric(
        "walrus_answer_changes_total",
        "counter",
        "Answers changed within the same cluster.",
        one(c.answer_changes),
    );
    metric(
        "walrus_dns_updates_total",
        "counter",
        "Name-server applications that changed the zone.",
        one(c.dns_updates),
    );
    metric(
        "walrus_dns_update_failures_total",
        "counter",
        "Name-server applications that failed.",
        one(c.dns_failures),
    );
    metric(
        "walrus_gcs_view_changes_total",
        "counter",
        "Group-communication views installed.",
        one(c.view_changes),
    );
    metric(
        "walrus_master_terms_total",
        "counter",
        "Times this node's Controller became master.",
        one(c.master_terms),
    );
    for (name, help, v) in [
        (
            "walrus_gcs_multicasts_total",
            "Multicasts the group node accepted from local sessions.",
            c.gcs.multicasts,
        ),
        (
            "walrus_gcs_messages_delivered_total",
            "Messages the group node delivered to local sessions.",
            c.gcs.delivered,
        ),
        (
            "walrus_gcs_frames_sent_total",
            "Protocol frames the group node sent to peers.",
            c.gcs.frames_sent,
        ),
        (
            "walrus_gcs_frames_received_total",
            "Protocol frames the group node received from peers.",
            c.gcs.frames_received,
        ),
        (
            "walrus_gcs_handshakes_refused_total",
            "Connection handshakes the group node refused (certificates not from this cluster's CA, unknown names, garbage, timeouts).",
            c.gcs.handshakes_refused,
        ),
    ] {
        metric(name, "counter", help, one(v));
    }
    metric(
        "walrus_gcs_view_members",
        "gauge",
        "Nodes in the current view.",
        one(doc.view.as_ref().map_or(0, |v| v.members.len() as u64)),
    );
    metric(
        "walrus_is_master",
        "gauge",
        "1 while this node's Controller is master.",
        one(u64::from(doc.is_master)),
    );
    metric(
        "walrus_round",
        "gauge",
        "The last round decided.",
        one(doc.round.unwrap_or(0)),
    );
    let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
    for s in &doc.servers {
        let state = s.state.split(' ').next().unwrap_or("unknown");
        *by_state.entry(state).or_default() += 1;
    }
    metric(
        "walrus_servers",
        "gauge",
        "Web servers by state in the last round this node closed.",
        ["working", "dead", "unknown"]
            .iter()
            .map(|st| {
                (
                    format!("{{state=\"{st}\"}}"),
                    by_state.get(st).copied().unwrap_or(0) as f64,
                )
            })
            .collect(),
    );
    metric(
        "walrus_server_load",
        "gauge",
        "Each working server's load (1.0 = at capacity).",
        doc.servers
            .iter()
            .filter_map(|s| {
                s.load.map(|l| {
                    (
                        format!("{{server=\"{}\",cluster=\"{}\"}}", s.name, s.cluster),
                        l,
                    )
                })
            })
            .collect(),
    );
    metric(
        "walrus_server_generation",
        "gauge",
        "The content generation each server's host last reported.",
        doc.servers
            .iter()
            .filter_map(|s| {
                s.generation
                    .map(|g| (format!("{{server=\"{}\"}}", s.name), g as f64))
            })
            .collect(),
    );
    metric(
        "walrus_server_generation_lag",
        "gauge",
        "Generations each server's content is behind the newest one.",
        doc.servers
            .iter()
            .filter_map(|s| {
                s.generation_lag
                    .map(|l| (format!("{{server=\"{}\"}}", s.name), l as f64))
            })
            .collect(),
    );
    let repl = doc.replication.as_ref();
    metric(
        "walrus_replica_generation",
        "gauge",
        "The content generation this node's Replicator serves (primary: publishes).",
        repl.and_then(|r| r.generation)
            .map(|g| vec![(String::new(), g as f64)])
            .unwrap_or_default(),
    );
    metric(
        "walrus_replica_lag",
        "gauge",
        "Generations this node's Replicator is behind the newest announced one.",
        repl.and_then(|r| r.lag)
            .map(|l| vec![(String::new(), l as f64)])
            .unwrap_or_default(),
    );
    metric(
        "walrus_replica_pull_failures_total",
        "counter",
        "Failed pull attempts of this node's Replicator.",
        repl.map(|r| vec![(String::new(), r.failures as f64)])
            .unwrap_or_default(),
    );
    metric(
        "walrus_area_cluster",
        "gauge",
        "1 for the cluster each area is assigned to in the last decision this node knows.",
        doc.areas
            .iter()
            .filter_map(|a| {
                a.cluster
                    .as_ref()
                    .map(|c| (format!("{{area=\"{}\",cluster=\"{c}\"}}", a.name), 1.0))
            })
            .collect(),
    );
    let mut cluster_states: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for c in &doc.clusters {
        for st in ["working", "dead", "unknown"] {
            cluster_states.insert((c.name.as_str(), st), 0);
        }
    }
    for s in &doc.servers {
        let state = s.state.split(' ').next().unwrap_or("unknown");
        *cluster_states
            .entry((s.cluster.as_str(), state))
            .or_default() += 1;
    }
    metric(
        "walrus_cluster_servers",
        "gauge",
        "Each cluster's web servers by state in the last round this node closed.",
        cluster_states
            .into_iter()
            .map(|((c, st), n)| (format!("{{cluster=\"{c}\",state=\"{st}\"}}"), n as f64))
            .collect(),
    );
    let mut digests = doc.config_digests.clone();
    digests
        .entry(doc.node.clone())
        .or_insert_with(|| doc.config_digest.clone());
    metric(
        "walrus_config_info",
        "gauge",
        "Always 1, one series per node this node knows: the digest of the configuration file \
         that node runs (its own, and the others' as announced over the group).",
        digests
            .iter()
            .map(|(node, d)| (format!("{{node=\"{node}\",digest=\"{d}\"}}"), 1.0))
            .collect(),
    );
    metric(
        "walrus_area_home",
        "gauge",
        "1 while an area is assigned to its home cluster.",
        doc.areas
            .iter()
            .map(|a| {
                (
                    format!("{{area=\"{}\"}}", a.name),
                    f64::from(u8::from(a.cluster.as_deref() == Some(&a.home_cluster))),
                )
            })
            .collect(),
    );
    let per_role = |f: &dyn Fn(&ActorDoc) -> f64| -> Vec<(String, f64)> {
        doc.actors
            .iter()
            .map(|a| (format!("{{role=\"{}\"}}", a.role), f(a)))
            .collect()
    };
    metric(
        "walrus_actor_restarts_total",
        "counter",
        "Restarts of each role actor by its supervisor (a panic or a failed session).",
        per_role(&|a| a.restarts as f64),
    );
    metric(
        "walrus_actor_mailbox_depth",
        "gauge",
        "Events waiting in each role actor's bounded queue.",
        per_role(&|a| a.mailbox_depth as f64),
    );
    metric(
        "walrus_actor_mailbox_capacity",
        "gauge",
        "Capacity of each role actor's bounded queue.",
        per_role(&|a| a.mailbox_capacity as f64),
    );
    metric(
        "walrus_actor_mailbox_full_total",
        "counter",
        "Times an event found a role actor's queue full (the sender waited).",
        per_role(&|a| a.mailbox_full as f64),
    );
    out
}

// ----------------------------------------------------------------------------------------
// Sources: a node's handles.

/// A node's handles the status page reads (clones: they stay valid while the node runs).
#[derive(Clone)]
pub struct NodeSources {
    /// The Controller, if the node runs one.
    pub controller: Option<ControllerHandle>,
    /// The Reporter and its server's name, if the node runs one.
    pub reporter: Option<(String, ReporterHandle)>,
    /// Directors by area.
    pub directors: BTreeMap<AreaName, watch::Receiver<DirectorStatus>>,
    /// The group view.
    pub view: Option<watch::Receiver<Option<ViewChange>>>,
    /// The group node, for its message counters.
    pub gcs: Option<Arc<Gcs>>,
    /// The Replicator's status, if the node runs one.
    pub replicator: Option<watch::Receiver<ReplicatorStatus>>,
    /// The role actors' supervision record.
    pub supervision: Option<Supervision>,
    /// The configuration in force (changes on a reload).
    pub config: Option<watch::Receiver<Config>>,
    /// Each node's config digest as announced over the group.
    pub digests: Option<watch::Receiver<Digests>>,
}

impl NodeSources {
    /// The handles of a running node over walrus-gcs.
    pub fn of(rt: &crate::runtime::NodeRuntime<walrus_gcs::Gcs>) -> Self {
        let server = rt
            .config()
            .nodes
            .get(rt.name())
            .and_then(|n| n.server.as_ref())
            .map(|s| s.0.clone());
        NodeSources {
            controller: rt.controller().cloned(),
            reporter: server.zip(rt.reporter().cloned()),
            directors: rt
                .directors()
                .iter()
                .map(|(a, d)| (a.clone(), d.status.clone()))
                .collect(),
            view: Some(rt.layer().watch_view()),
            gcs: Some(rt.shared_layer()),
            replicator: rt.replicator().cloned(),
            supervision: Some(rt.supervision().clone()),
            config: Some(rt.watch_config()),
            digests: Some(rt.digests()),
        }
    }

    /// What the handles say now. The Controller is asked through its address
    /// ([`walrus_actors::controller::actor::GetStatus`]); while it cannot answer within
    /// [`STATUS_WAIT`] (it is joining `Controllers`, which waits for the group to settle),
    /// the status it last published is shown.
    pub async fn sample(&self) -> Sample {
        let controller = match &self.controller {
            Some(c) => match tokio::time::timeout(STATUS_WAIT, c.get_status()).await {
                Ok(Ok(s)) => Some(s),
                _ => Some(c.status()),
            },
            None => None,
        };
        Sample {
            controller,
            master: None,
            reporters: self
                .reporter
                .iter()
                .map(|(s, h)| (s.clone(), h.snapshot()))
                .collect(),
            directors: self
                .directors
                .iter()
                .map(|(a, rx)| (a.clone(), rx.borrow().clone()))
                .collect(),
            view: self.view.as_ref().and_then(|v| v.borrow().clone()),
            gcs: self.gcs.as_ref().map(|g| g.stats()),
            replicator: self.replicator.as_ref().map(|r| r.borrow().clone()),
            os_source: self.reporter.as_ref().map(|(_, h)| h.os_source()),
            actors: self
                .supervision
                .as_ref()
                .map(Supervision::metrics)
                .unwrap_or_default(),
            digests: self.digests.as_ref().map(|d| d.borrow().clone()),
        }
    }
}

/// How long the sampler waits for an actor's answer to a status request.
pub const STATUS_WAIT: Duration = Duration::from_millis(200);

/// An observer shared between its sampling task and the HTTP handlers.
pub type SharedObserver = Arc<Mutex<Observer>>;

/// Locks an observer (a panicked holder leaves plain data: keep using it).
pub fn lock(o: &SharedObserver) -> std::sync::MutexGuard<'_, Observer> {
    o.lock().unwrap_or_else(|p| p.into_inner())
}

/// Samples `sources` every 100 ms into `observer` until `stop` completes.
pub async fn sample_loop(
    mut sources: NodeSources,
    observer: SharedObserver,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                let s = sources.sample().await;
                let reloaded = sources
                    .config
                    .as_mut()
                    .filter(|c| c.has_changed().unwrap_or(false))
                    .map(|c| c.borrow_and_update().clone());
                let mut o = lock(&observer);
                if let Some(c) = reloaded {
                    o.set_config(c);
                }
                o.observe(s);
            }
        }
    }
}

// ----------------------------------------------------------------------------------------
// The HTTP server.

/// The dashboard page: plain HTML and JavaScript polling `/status`; no external assets.
pub const DASHBOARD: &str = include_str!("dashboard.html");

/// A running status server.
pub struct StatusServer {
    addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<()>,
}

impl StatusServer {
    /// Binds `addr` (port 0: any free port) and serves `/status`, `/metrics` and `/` from
    /// `observer` over plain HTTP to anyone, on one actix-web worker (the demo, tests on
    /// loopback). Must run inside a tokio runtime.
    pub fn start(addr: SocketAddr, observer: SharedObserver) -> Result<Self, StatusError> {
        Self::start_with(addr, observer, HttpAccess::open(), None)
    }

    /// [`Self::start`] with `access`'s token, TLS and admins ([`crate::http_access`]);
    /// `controller` takes the admins' drains and pins (`POST /admin/override`).
    pub fn start_with(
        addr: SocketAddr,
        observer: SharedObserver,
        access: HttpAccess,
        controller: Option<ControllerHandle>,
    ) -> Result<Self, StatusError> {
        let bind_err = |source| StatusError::Bind { addr, source };
        let listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
        let local = listener.local_addr().map_err(bind_err)?;
        let tls = access.tls();
        let access = web::Data::new(access);
        let controller = web::Data::new(controller);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(observer.clone()))
                .app_data(access.clone())
                .app_data(controller.clone())
                .route("/admin/override", web::post().to(admin_override))
                .route("/status", web::get().to(status_json))
                .route("/metrics", web::get().to(metrics_text))
                .route("/history", web::get().to(history_json))
                .route("/", web::get().to(dashboard))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .on_connect(|conn, ext| {
            // The client's certificate chain (verified by the handshake), for the admin
            // routes.
            type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
            if let Some(tls) = conn.downcast_ref::<Tls>() {
                if let Some(chain) = tls.get_ref().1.peer_certificates() {
                    ext.insert(PeerChain(chain.to_vec()));
                }
            }
        });
        let server = match tls {
            Some(config) => server.listen_rustls_0_23(listener, (*config).clone()),
            None => server.listen(listener),
        }
        .map_err(bind_err)?
        .run();
        let handle = server.handle();
        let task = tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::warn!(error = %e, "status server stopped");
            }
        });
        Ok(Self {
            addr: local,
            handle,
            task,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops it.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.task.await;
    }
}

/// `answer()` if `access` lets this request through, else 401.
fn guarded(
    req: &HttpRequest,
    access: &HttpAccess,
    answer: impl FnOnce() -> HttpResponse,
) -> HttpResponse {
    let auth = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if access.allows(req.path(), auth) {
        return answer();
    }
    HttpResponse::Unauthorized()
        .insert_header(("WWW-Authenticate", "Bearer realm=\"walrus\""))
        .body("this node's status needs its token: Authorization: Bearer <[http] token_file>\n")
}

/// The certificate chain a TLS client presented (none: no entry).
#[derive(Clone)]
struct PeerChain(Vec<rustls::pki_types::CertificateDer<'static>>);

/// An admin's request to `POST /admin/override` (JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AdminRequest {
    /// `drain`, `undrain`, `pin` or `unpin`.
    pub action: String,
    /// The server (drain, undrain).
    #[serde(default)]
    pub server: Option<String>,
    /// The area (pin, unpin).
    #[serde(default)]
    pub area: Option<String>,
    /// The cluster (pin).
    #[serde(default)]
    pub cluster: Option<String>,
    /// How long, seconds (drain, pin).
    #[serde(default)]
    pub for_secs: Option<u64>,
    /// Why (shown in every decision reason and log line).
    #[serde(default)]
    pub reason: String,
}

/// Turns an admin's request into a command, checked against `config`'s servers, areas and
/// clusters; the error is the 400 answer's text.
pub fn admin_command(
    req: &AdminRequest,
    by: &str,
    config: &Config,
    now_ms: u64,
) -> Result<walrus_actors::controller::overrides::Command, String> {
    use walrus_actors::controller::overrides::{Command, Override};
    use walrus_actors::model::{ClusterName, ServerName};
    let server = || -> Result<ServerName, String> {
        let s = ServerName(req.server.clone().ok_or("`server` is missing")?);
        if config.clusters.values().any(|c| c.servers.contains_key(&s)) {
            Ok(s)
        } else {
            Err(format!("there is no server `{s}`"))
        }
    };
    let area = || -> Result<AreaName, String> {
        let a = AreaName(req.area.clone().ok_or("`area` is missing")?);
        if config.areas.contains_key(&a) {
            Ok(a)
        } else {
            Err(format!("there is no area `{a}`"))
        }
    };
    let until = || -> Result<u64, String> {
        let secs = req.for_secs.ok_or("`for_secs` is missing: say how long")?;
        if secs == 0 {
            return Err("`for_secs` must be more than 0".into());
        }
        Ok(now_ms.saturating_add(secs.saturating_mul(1000)))
    };
    let set = |target| -> Result<Command, String> {
        Ok(Command::Set(Override {
            target,
            by: by.to_owned(),
            reason: req.reason.clone(),
            until_ms: until()?,
        }))
    };
    match req.action.as_str() {
        "drain" => set(Target::Drain { server: server()? }),
        "pin" => {
            let c = ClusterName(req.cluster.clone().ok_or("`cluster` is missing")?);
            if !config.clusters.contains_key(&c) {
                return Err(format!("there is no cluster `{c}`"));
            }
            set(Target::Pin {
                area: area()?,
                cluster: c,
            })
        }
        "undrain" => Ok(Command::Undrain {
            server: server()?,
            by: by.to_owned(),
        }),
        "unpin" => Ok(Command::Unpin {
            area: area()?,
            by: by.to_owned(),
        }),
        other => Err(format!(
            "`{other}` is not an action: drain, undrain, pin or unpin"
        )),
    }
}

async fn admin_override(
    req: HttpRequest,
    body: web::Json<AdminRequest>,
    o: web::Data<SharedObserver>,
    access: web::Data<HttpAccess>,
    controller: web::Data<Option<ControllerHandle>>,
) -> HttpResponse {
    let chain = req
        .conn_data::<PeerChain>()
        .map(|c| c.0.clone())
        .unwrap_or_default();
    let Some(admin) = access.admin_of(&chain) else {
        tracing::warn!(peer = ?req.peer_addr(), certificate = !chain.is_empty(), "drain/pin refused: no admin certificate");
        return HttpResponse::Forbidden().body(
            "drain and pin need an admin certificate (walrus-node certs issue --admin NAME) \
             named in [http] admins; a node certificate cannot\n",
        );
    };
    let Some(ctl) = controller.get_ref().clone() else {
        return HttpResponse::Conflict()
            .body("this node runs no Controller: send the request to a Controller node\n");
    };
    let cmd = {
        let obs = lock(&o);
        match admin_command(&body, &admin, obs.config(), wall_clock_ms()) {
            Ok(c) => c,
            Err(e) => return HttpResponse::BadRequest().body(format!("{e}\n")),
        }
    };
    tracing::info!(%admin, action = %body.action, server = ?body.server, area = ?body.area,
        cluster = ?body.cluster, for_secs = ?body.for_secs, reason = %body.reason,
        "operator override requested");
    match ctl.send_override(cmd).await {
        Ok(()) => HttpResponse::Ok().body(format!("{} accepted from {admin}\n", body.action)),
        Err(e) => HttpResponse::ServiceUnavailable().body(format!("{e}\n")),
    }
}

fn json_no_store(body: impl Serialize) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(body)
}

async fn status_json(
    req: HttpRequest,
    o: web::Data<SharedObserver>,
    access: web::Data<HttpAccess>,
) -> HttpResponse {
    guarded(&req, &access, || json_no_store(lock(&o).doc()))
}

async fn history_json(
    req: HttpRequest,
    o: web::Data<SharedObserver>,
    access: web::Data<HttpAccess>,
) -> HttpResponse {
    guarded(&req, &access, || {
        json_no_store(lock(&o).history(wall_clock_ms()))
    })
}

async fn metrics_text(
    req: HttpRequest,
    o: web::Data<SharedObserver>,
    access: web::Data<HttpAccess>,
) -> HttpResponse {
    guarded(&req, &access, || {
        HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4")
            .body(render_metrics(&lock(&o).doc()))
    })
}

async fn dashboard() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(DASHBOARD)
}

// ----------------------------------------------------------------------------------------
// `walrus-node status`.

/// Fetches `/status` from `addr`.
pub async fn fetch(addr: SocketAddr) -> Result<StatusDoc, StatusError> {
    fetch_with(addr, &FetchOptions::default()).await
}

/// How `walrus-node status` reaches a node whose HTTP side has `[http]` TLS or a token.
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// HTTPS, verified against this CA file (the cluster's `ca.pem` for `tls =
    /// "cluster"`); None: plain HTTP.
    pub https_ca: Option<std::path::PathBuf>,
    /// The name the node's certificate carries (its node name for `tls = "cluster"`).
    pub server_name: Option<String>,
    /// The bearer token.
    pub token: Option<String>,
}

/// Reads `/status` of the node at `addr` as `options` say.
pub async fn fetch_with(
    addr: SocketAddr,
    options: &FetchOptions,
) -> Result<StatusDoc, StatusError> {
    use walrus_actors::reporter::http::{Page, TlsOptions};
    let scheme = if options.https_ca.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{addr}/status");
    let err = |detail: String| StatusError::Fetch {
        url: url.clone(),
        detail,
    };
    let tls = TlsOptions {
        ca_file: options.https_ca.clone(),
        server_name: options.server_name.clone(),
        client_cert: None,
    };
    let mut page = Page::new(&url, Duration::from_secs(5), &tls).map_err(|e| err(e.to_string()))?;
    if let Some(token) = &options.token {
        page = page
            .with_header("Authorization", &format!("Bearer {token}"))
            .map_err(|e| err(e.to_string()))?;
    }
    let answer = page.get().await.map_err(|e| err(e.to_string()))?;
    if answer.status == 401 {
        return Err(err(
            "401: the node asks for its token (--token-file, the node's [http] token_file)".into(),
        ));
    }
    if answer.status != 200 {
        return Err(err(format!("status {}", answer.status)));
    }
    serde_json::from_str(&answer.body).map_err(|source| StatusError::Parse {
        url: url.clone(),
        source,
    })
}

/// One line: this node's config digest and, when the nodes run different files, which
/// node runs which ("config digests DIFFER: 1a2b… n-1 n-2 | 3c4d… n-3").
pub fn describe_digests(doc: &StatusDoc) -> String {
    let mut by_digest: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (node, d) in &doc.config_digests {
        by_digest.entry(d.as_str()).or_default().push(node.as_str());
    }
    if by_digest.len() <= 1 {
        let n = doc.config_digests.len().max(1);
        return format!(
            "config digest {} (same on the {n} node(s) heard)",
            doc.config_digest
        );
    }
    let groups: Vec<String> = by_digest
        .iter()
        .map(|(d, nodes)| {
            let mine = if *d == doc.config_digest {
                " (this node)"
            } else {
                ""
            };
            format!("{d}{mine}: {}", nodes.join(" "))
        })
        .collect();
    format!("config digests DIFFER: {}", groups.join(" | "))
}

/// The table `walrus-node status` prints.
pub fn render_table(doc: &StatusDoc) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "node {}   site {}", doc.node, doc.site);
    let _ = writeln!(
        t,
        "master {}{}   round {}",
        doc.master.as_deref().unwrap_or("(none)"),
        if doc.is_master { " (this node)" } else { "" },
        doc.round.map_or_else(|| "-".to_owned(), |r| r.to_string())
    );
    if let Some(v) = &doc.view {
        let _ = writeln!(t, "view {} members {}", v.id, v.members.join(", "));
    }
    if let Some(os) = &doc.os_source {
        let _ = writeln!(t, "os statistics from {os}");
    }
    let _ = writeln!(t, "{}", describe_digests(doc));
    for a in &doc.actors {
        let _ = writeln!(
            t,
            "actor {:<16} restarts {}   mailbox {}/{} (full {}){}",
            a.role,
            a.restarts,
            a.mailbox_depth,
            a.mailbox_capacity,
            a.mailbox_full,
            a.last_cause
                .as_ref()
                .map(|c| format!("   last cause: {c}"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(t);
    let _ = writeln!(t, "{:<10} {:<10} {:<10} answer", "area", "home", "cluster");
    for a in &doc.areas {
        let _ = writeln!(
            t,
            "{:<10} {:<10} {:<10} {}{}",
            a.name,
            a.home_cluster,
            a.cluster.as_deref().unwrap_or("-"),
            a.answer.join(" "),
            a.dns
                .as_ref()
                .map(|d| format!("   [dns: {d}]"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "{:<10} {:<10} {:<28} {:<6} generation",
        "server", "cluster", "state", "load"
    );
    for s in &doc.servers {
        let _ = writeln!(
            t,
            "{:<10} {:<10} {:<28} {:<6} {}",
            s.name,
            s.cluster,
            s.state,
            s.load.map_or_else(|| "-".to_owned(), |l| format!("{l:.2}")),
            match (s.generation, s.generation_lag) {
                (Some(g), Some(l)) => format!("{g} (lag {l})"),
                (Some(g), None) => g.to_string(),
                _ => "-".to_owned(),
            }
        );
    }
    if let Some(r) = &doc.replication {
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "replicator {}: generation {} newest {} lag {}   pulls {} failures {}{}",
            r.role,
            r.generation
                .map_or_else(|| "-".to_owned(), |g| g.to_string()),
            r.newest.map_or_else(|| "-".to_owned(), |g| g.to_string()),
            r.lag.map_or_else(|| "-".to_owned(), |g| g.to_string()),
            r.pulls,
            r.failures,
            r.last_error
                .as_ref()
                .map(|e| format!("   last error: {e}"))
                .unwrap_or_default()
        );
    }
    if !doc.overrides.is_empty() {
        let _ = writeln!(t);
        let _ = writeln!(t, "operator overrides:");
        for o in &doc.overrides {
            let _ = writeln!(t, "  {o}");
        }
    }
    if !doc.events.is_empty() {
        let _ = writeln!(t);
        let _ = writeln!(t, "last decisions:");
        for e in &doc.events {
            let _ = writeln!(t, "  {e}");
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use walrus_actors::controller::round::RoundStatus;
    use walrus_actors::model::{AreaAnswer, Change, ClusterName, Generation, Round, ServerName};

    const EXAMPLE: &str = include_str!("../../config/walrus.toml");

    fn config() -> Config {
        Config::from_toml(Path::new("walrus.toml"), EXAMPLE).unwrap()
    }

    fn decision(round: u64, eu: &str, changes: Vec<Change>) -> Decision {
        Decision {
            round: Round(round),
            epoch: round,
            answers: [(
                AreaName::from("eu"),
                AreaAnswer {
                    cluster: ClusterName::from(eu),
                    records: vec!["127.0.2.1".parse().unwrap()],
                },
            )]
            .into(),
            changes,
        }
    }

    fn master_status(round: u64, d: Decision) -> ControllerStatus {
        ControllerStatus {
            is_master: true,
            last_decision: Some(d),
            last_round: Some(RoundStatus {
                round: Round(round),
                reports: 5,
                states: [
                    (
                        ServerName::from("eu-1"),
                        ServerState::Dead(DeadCause::Panic),
                    ),
                    (
                        ServerName::from("us-1"),
                        ServerState::Working {
                            load: 0.25,
                            basis: LoadBasis::Fresh,
                        },
                    ),
                ]
                .into(),
                cluster_loads: [(ClusterName::from("c-us"), Some(0.25))].into(),
                duration: Duration::from_millis(400),
                early: false,
                generations: [(ServerName::from("us-1"), Generation(4))].into(),
                newest_generation: Some(Generation(5)),
            }),
            ..ControllerStatus::default()
        }
    }

    #[test]
    fn a_move_is_logged_with_its_round_phase_and_reason_and_counted() {
        let mut o = Observer::new("eu-a", &config());
        let first = decision(1, "c-eu", vec![]);
        assert!(o
            .observe(Sample {
                controller: Some(master_status(1, first)),
                ..Sample::default()
            })
            .is_empty());
        let moved = decision(
            2,
            "c-us",
            vec![Change {
                area: AreaName::from("eu"),
                from: Some(ClusterName::from("c-eu")),
                to: ClusterName::from("c-us"),
                phase: 3,
                reason: "c-eu has no working server".into(),
            }],
        );
        let added = o.observe(Sample {
            controller: Some(master_status(2, moved.clone())),
            ..Sample::default()
        });
        assert_eq!(
            added,
            ["round 2: area eu → c-us (from c-eu), phase 3, c-eu has no working server"]
        );
        // The same decision sampled again adds nothing.
        assert!(o
            .observe(Sample {
                controller: Some(master_status(2, moved)),
                ..Sample::default()
            })
            .is_empty());
        let c = o.counters();
        assert_eq!((c.rounds, c.reports, c.decisions), (2, 10, 2));
        assert_eq!((c.area_moves, c.answer_changes, c.master_terms), (1, 0, 1));
        let doc = o.doc();
        let eu = doc.areas.iter().find(|a| a.name == "eu").unwrap();
        assert_eq!(eu.cluster.as_deref(), Some("c-us"));
        assert_eq!(eu.answer, ["127.0.2.1"]);
        let s = doc.servers.iter().find(|s| s.name == "eu-1").unwrap();
        assert_eq!(s.state, "dead (PANIC)");
        assert_eq!(doc.events.len(), 1);
        assert_eq!(doc.round, Some(2));
    }

    #[test]
    fn metrics_are_prometheus_text_with_every_family() {
        let mut o = Observer::new("eu-a", &config());
        o.observe(Sample {
            controller: Some(master_status(7, decision(7, "c-eu", vec![]))),
            replicator: Some(ReplicatorStatus {
                generation: Some(Generation(3)),
                newest: Some(Generation(5)),
                failures: 2,
                ..ReplicatorStatus::default()
            }),
            ..Sample::default()
        });
        let m = render_metrics(&o.doc());
        for family in [
            "walrus_rounds_total 1",
            "walrus_reports_received_total 5",
            "walrus_round_duration_seconds_sum 0.4",
            "walrus_round_duration_seconds_count 1",
            "walrus_area_moves_total 0",
            "walrus_dns_updates_total 0",
            "walrus_dns_update_failures_total 0",
            "walrus_gcs_view_changes_total 0",
            "walrus_servers{state=\"working\"} 1",
            "walrus_servers{state=\"dead\"} 1",
            "walrus_server_load{server=\"us-1\",cluster=\"c-us\"} 0.25",
            "walrus_area_home{area=\"eu\"} 1",
            "walrus_is_master 1",
            "walrus_round 7",
            "walrus_server_generation{server=\"us-1\"} 4",
            "walrus_server_generation_lag{server=\"us-1\"} 1",
            "walrus_replica_generation 3",
            "walrus_replica_lag 2",
            "walrus_replica_pull_failures_total 2",
            "walrus_area_cluster{area=\"eu\",cluster=\"c-eu\"} 1",
            "walrus_cluster_servers{cluster=\"c-us\",state=\"working\"} 1",
            "walrus_cluster_servers{cluster=\"c-eu\",state=\"dead\"} 1",
            "walrus_cluster_servers{cluster=\"c-eu\",state=\"working\"} 0",
        ] {
            assert!(m.contains(family), "missing {family} in\n{m}");
        }
        // Every sample line belongs to a declared family.
        for line in m.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let base = name
                .strip_suffix("_sum")
                .or_else(|| name.strip_suffix("_count"))
                .unwrap_or(name);
            assert!(
                m.contains(&format!("# TYPE {name} "))
                    || m.contains(&format!("# TYPE {base} summary")),
                "{line}"
            );
        }
    }

    #[test]
    fn the_table_shows_master_areas_and_servers() {
        let mut o = Observer::new("eu-a", &config());
        o.observe(Sample {
            controller: Some(master_status(3, decision(3, "c-us", vec![]))),
            ..Sample::default()
        });
        let t = render_table(&o.doc());
        assert!(t.contains("(this node)"), "{t}");
        // Each server's content generation and lag behind the newest (5).
        assert!(t.contains("0.25   4 (lag 1)"), "{t}");
        assert!(
            t.contains("eu         c-eu       c-us       127.0.2.1"),
            "{t}"
        );
        assert!(t.contains("dead (PANIC)"), "{t}");
        let back: StatusDoc =
            serde_json::from_str(&serde_json::to_string(&o.doc()).unwrap()).unwrap();
        assert_eq!(back, o.doc());
    }
}
