//! The `/status` document: what it says, in serde types shared by the node, the dashboard
//! and `walrus-node status`.

use super::*;

/// Everything `/status` says (also what the dashboard and `walrus-node status` show).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    /// The node serving this page ("demo" for the demo's deployment view).
    pub node: String,
    /// The site.
    pub site: String,
    /// The group-communication view this node is in (none on a client node).
    pub view: Option<ViewDoc>,
    /// On a client node (`tier = "client"`): which member it is attached through.
    #[serde(default)]
    pub client: Option<ClientDoc>,
    /// Client nodes and the member each is attached through, as this node knows them: on
    /// a member, the clients attached to it; on a client node, itself; in the demo, every
    /// client node of the deployment. Sorted by node.
    #[serde(default)]
    pub clients: Vec<ClientLinkDoc>,
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
    /// Learned steering at this node's embedded name servers (`[dns.learned]`), when on:
    /// table size, answers by who decided them, truncated answers sent to measure.
    #[serde(default)]
    pub steering: Option<SteeringCounters>,
}

/// `/steering?resolver=ADDR`: how this node's area servers answer one resolver, and why
/// (`walrus-node status --resolver ADDR`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResolverDoc {
    /// The resolver asked about.
    pub resolver: String,
    /// One entry per embedded name server on this node.
    pub servers: Vec<ResolverAnswerDoc>,
}

/// How one area's server answers the resolver.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResolverAnswerDoc {
    /// The area whose server answers.
    pub area: String,
    /// The zone `www.<site>` points at, or "own area" (the paper's §7.2 answer).
    pub steered_to: String,
    /// "override", "learned" or "paper".
    pub by: String,
    /// Why, in words.
    pub why: String,
    /// The learned table's prefix for the resolver (its /24 or /48), when it has one.
    pub prefix: Option<String>,
    /// What each area measured for that prefix.
    pub areas: Vec<AreaRttDoc>,
}

/// One area's measurements of a prefix.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AreaRttDoc {
    /// The area that measured.
    pub area: String,
    /// The median TC round trip of its fresh samples, once it has enough, in ms.
    pub rtt_ms: Option<f64>,
    /// Its fresh samples.
    pub samples: usize,
    /// Age of its newest sample, in seconds.
    pub newest_age_s: Option<f64>,
}

impl ResolverAnswerDoc {
    /// From what an embedded server says of the resolver.
    pub fn of(e: &Explained) -> Self {
        let why = match (e.by, e.learning) {
            (By::Override, _) => "a [[dns.steering]] rule covers the resolver".to_owned(),
            (By::Learned, _) => format!(
                "{} has the lowest median TC round trip (another area takes over only when faster by the hysteresis margin)",
                e.entry
                    .as_ref()
                    .and_then(|v| v.chosen.as_ref())
                    .map_or_else(|| "that area".to_owned(), |a| a.0.clone())
            ),
            (By::Paper, false) => {
                "no rule, learned steering off: the answering area (paper §7.2)".to_owned()
            }
            (By::Paper, true) => {
                "no rule, too few fresh samples yet: the answering area (paper §7.2)".to_owned()
            }
        };
        Self {
            area: e.area.0.clone(),
            steered_to: e.target.clone().unwrap_or_else(|| "own area".to_owned()),
            by: match e.by {
                By::Override => "override",
                By::Learned => "learned",
                By::Paper => "paper",
            }
            .to_owned(),
            why,
            prefix: e.entry.as_ref().map(|v| v.prefix.to_string()),
            areas: e
                .entry
                .iter()
                .flat_map(|v| v.areas.iter())
                .map(|a| AreaRttDoc {
                    area: a.area.0.clone(),
                    rtt_ms: a.rtt.map(|d| d.as_secs_f64() * 1000.0),
                    samples: a.samples,
                    newest_age_s: a.newest_age.map(|d| d.as_secs_f64()),
                })
                .collect(),
        }
    }
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

/// A client node's link to the group (walrus-gcs [`walrus_gcs::tier::ClientStats`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientDoc {
    /// The member it is attached to now (`None` while it connects to the next).
    pub attached_to: Option<String>,
    /// Links to a member established since the node started (the first attachment and
    /// every fail-over).
    #[serde(default)]
    pub attachments: u64,
    /// Established links that ended (each followed by a fail-over to the next member).
    #[serde(default)]
    pub links_lost: u64,
    /// Multicasts the client accepted from its roles.
    #[serde(default)]
    pub multicasts: u64,
    /// Messages delivered to its roles.
    #[serde(default)]
    pub delivered: u64,
    /// Multicasts not yet confirmed by a member (resent on fail-over).
    #[serde(default)]
    pub unconfirmed: u64,
}

/// One client node and its member (see [`StatusDoc::clients`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientLinkDoc {
    /// The client node (its name in the file, without the `client.` of its certificate).
    pub node: String,
    /// The member it is attached to (`None` while it connects to the next).
    pub attached_to: Option<String>,
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
