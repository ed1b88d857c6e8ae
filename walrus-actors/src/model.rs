//! The vocabulary the actors share: names, reports, topology and decisions.
//!
//! These types cross actor and host boundaries (a Reporter's report reaches the master
//! Controller through walrus-gcs; a Controller's decision reaches every Director), so they
//! are plain serde data with no behaviour beyond small helpers. One concept, one type:
//! the Reporter produces [`Report`], the Controller consumes it and produces [`Decision`],
//! the Director consumes [`AreaAnswer`].

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub String);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    };
}

name_type!(
    /// An area: a part of the network with one authoritative name server (paper §2).
    AreaName
);
name_type!(
    /// A cluster: one or more web servers in one place.
    ClusterName
);
name_type!(
    /// One web server, as named in the configuration (unique across the site).
    ServerName
);

/// A Controller round number; the master numbers its rounds, a new master continues
/// from the last decided round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Round(pub u64);

impl fmt::Display for Round {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A Replicator content generation (grows by one per consistent change set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Generation(pub u64);

/// The site as the Controller sees it: areas with their home cluster, clusters with
/// their servers. Built from the validated configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    /// Every area, with its home cluster (the cluster in the same place).
    pub areas: BTreeMap<AreaName, AreaSpec>,
    /// Every cluster, with its servers.
    pub clusters: BTreeMap<ClusterName, ClusterSpec>,
}

/// One area of the [`Topology`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AreaSpec {
    /// The cluster in the same part of the network.
    pub home_cluster: ClusterName,
}

/// One cluster of the [`Topology`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// The servers of this cluster, with the addresses clients are sent to.
    pub servers: BTreeMap<ServerName, Vec<IpAddr>>,
}

/// A Reporter's reply to a round request (paper §4), sent on the `Controllers` group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The web server this report is about.
    pub server: ServerName,
    /// The round whose request this answers.
    pub round: Round,
    /// Statistics or one of the special replies.
    pub body: ReportBody,
    /// The content generation the host serves, when a Replicator runs beside it.
    pub generation: Option<Generation>,
}

/// What a Reporter says about its server this round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReportBody {
    /// Fresh statistics.
    Stats(ServerStats),
    /// No statistics yet, or a reading failed transiently: use last round's.
    TempFail {
        /// Why, for the log and the status page.
        reason: String,
    },
    /// Leave this server out this round (an operator took it out).
    Bypass {
        /// Why, for the log and the status page.
        reason: String,
    },
    /// Like BYPASS, and tell a human (for example: the web server process failed).
    Panic {
        /// What happened, for the notification.
        reason: String,
    },
}

/// OS and web-server statistics over one reporting period (paper §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerStats {
    /// The period these statistics cover.
    pub period: Duration,
    /// Fraction of CPU time in user mode over the period (0.0–1.0). Absent where the
    /// reader cannot split CPU time (the portable reader: sysinfo has only a total).
    pub cpu_user: Option<f64>,
    /// Fraction of CPU time in system mode over the period (0.0–1.0). Absent like
    /// `cpu_user`.
    pub cpu_system: Option<f64>,
    /// Fraction of CPU time idle over the period (0.0–1.0).
    pub cpu_idle: f64,
    /// Free physical memory, bytes.
    pub mem_free_bytes: u64,
    /// Swap in use, bytes (memory paged out).
    pub swap_used_bytes: u64,
    /// Pages swapped out per second over the period.
    /// Absent where the reader cannot count paging (the portable reader).
    pub pages_out_per_sec: Option<f64>,
    /// Free virtual memory (available memory plus free swap), bytes.
    pub free_virtual_bytes: u64,
    /// Total virtual memory (physical plus swap), bytes; with `free_virtual_bytes`
    /// it tells how close the host is to exhaustion.
    pub total_virtual_bytes: u64,
    /// Runnable processes (`procs_running`). Absent where the reader cannot count them.
    pub procs_running: Option<u32>,
    /// Processes blocked on I/O (`procs_blocked`). Absent like `procs_running`.
    pub procs_blocked: Option<u32>,
    /// The web server's own figures.
    pub web: WebStats,
}

/// Web-server statistics (nginx `stub_status`, Apache `mod_status`, or a health probe).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebStats {
    /// Requests served over the period (hits).
    pub hits: u64,
    /// Busy workers (connections being served) at the end of the period.
    pub busy_workers: u32,
    /// Maximum workers (from the server, or from configuration where it does not say).
    pub max_workers: u32,
}

/// One area's answer: what its name server hands out for the site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AreaAnswer {
    /// The cluster the area is assigned to.
    pub cluster: ClusterName,
    /// The addresses to answer with (A and AAAA), least loaded first, at most `max_records`.
    pub records: Vec<IpAddr>,
}

/// A round's outcome, multicast by the master on `Controllers` (so backups hold the
/// state) and on `Directors` (so each area's name server follows it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The round this decision closes.
    pub round: Round,
    /// Every area's current answer (changed or not).
    pub answers: BTreeMap<AreaName, AreaAnswer>,
    /// Why each area that moved or changed its answer did so, for logs and status.
    pub changes: Vec<Change>,
    /// The decision's epoch: the sending master's wall clock, in milliseconds since the
    /// Unix epoch, stamped when the decision leaves it (0: not stamped). Writes to a name
    /// server are fenced by it: a server that holds an answer of a newer epoch refuses an
    /// older one, so a deposed writer's late update can never take an area back to an
    /// older decision (see `director`).
    #[serde(default)]
    pub epoch: u64,
}

/// One change of one area's answer, with its reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The area whose answer changed.
    pub area: AreaName,
    /// The cluster it was assigned to before (None at the first round).
    pub from: Option<ClusterName>,
    /// The cluster it is assigned to now.
    pub to: ClusterName,
    /// The phase of the assignment algorithm that made the change (1–4), or 0 for a
    /// record-set change within the same cluster.
    pub phase: u8,
    /// Human explanation with figures, e.g. "c1 has no working server".
    pub reason: String,
}
