//! The pure [`Observer`]: fed [`Sample`]s, it keeps the counters and the event log a
//! snapshot cannot, and builds the [`StatusDoc`].

use super::*;

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
    pub os_source: Option<String>,
    /// Each node's config digest as announced on `Nodes` (`walrus_actors::digests`).
    pub digests: Option<Digests>,
    /// Learned steering's counters, summed over this node's embedded servers (None: off).
    pub steering: Option<SteeringCounters>,
    /// On a client node: the member it is attached to now (`Some(None)` between links).
    pub attached_to: Option<Option<String>>,
    /// On a client node: its link's counters.
    pub client_link: Option<walrus_gcs::tier::ClientStats>,
    /// Client nodes → the member each is attached to now, as far as the sources know (a
    /// member: its attached clients; the demo: every client node). See
    /// [`StatusDoc::clients`].
    pub clients: BTreeMap<String, Option<String>>,
}

/// The embedded name servers whose learned tables `/steering` reads.
#[derive(Clone, Default)]
pub struct SteeringServers(pub Vec<EmbeddedServer>);

impl std::fmt::Debug for SteeringServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SteeringServers({})", self.0.len())
    }
}

impl SteeringServers {
    /// How each server answers `resolver` now.
    pub fn resolver_doc(&self, resolver: std::net::IpAddr) -> ResolverDoc {
        ResolverDoc {
            resolver: resolver.to_string(),
            servers: self
                .0
                .iter()
                .map(|s| ResolverAnswerDoc::of(&s.explain(resolver)))
                .collect(),
        }
    }

    /// The servers' counters summed (None when none learns).
    pub fn counters(&self) -> Option<SteeringCounters> {
        self.0
            .iter()
            .filter_map(EmbeddedServer::steering_counters)
            .reduce(|a, b| SteeringCounters {
                table_prefixes: a.table_prefixes + b.table_prefixes,
                answers_learned: a.answers_learned + b.answers_learned,
                answers_override: a.answers_override + b.answers_override,
                answers_paper: a.answers_paper + b.answers_paper,
                probes_sent: a.probes_sent + b.probes_sent,
                samples_measured: a.samples_measured + b.samples_measured,
                samples_heard: a.samples_heard + b.samples_heard,
                samples_dropped: a.samples_dropped + b.samples_dropped,
                answers_avoided_down: a.answers_avoided_down + b.answers_avoided_down,
                areas_alive: a.areas_alive.max(b.areas_alive),
            })
    }
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
    /// The embedded servers `/steering` asks.
    steering: SteeringServers,
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
            steering: SteeringServers::default(),
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

    /// Sets the embedded servers `/steering` reads.
    pub fn set_steering_servers(&mut self, servers: SteeringServers) {
        self.steering = servers;
    }

    /// How this node's embedded servers answer `resolver` (`/steering`).
    pub fn resolver_doc(&self, resolver: std::net::IpAddr) -> ResolverDoc {
        self.steering.resolver_doc(resolver)
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
            client: s.attached_to.as_ref().map(|m| {
                let link = s.client_link.unwrap_or_default();
                ClientDoc {
                    attached_to: m.clone(),
                    attachments: link.attachments,
                    links_lost: link.links_lost,
                    multicasts: link.multicasts,
                    delivered: link.delivered,
                    unconfirmed: link.unconfirmed,
                }
            }),
            clients: s
                .clients
                .iter()
                .map(|(node, m)| ClientLinkDoc {
                    node: node.clone(),
                    attached_to: m.clone(),
                })
                .collect(),
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
            os_source: s.os_source.clone(),
            steering: s.steering,
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
