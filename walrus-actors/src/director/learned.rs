//! Learned steering (issue 21): how an area's embedded name server measures its round
//! trip to the resolvers that query it, and what it shares with the other areas.
//!
//! Sans-IO: the server hands in each query (its source, its question, UDP or TCP) with the
//! time; this type says whether to answer it truncated, turns a returning TCP query into a
//! sample, keeps the learned table ([`super::proximity::Proximity`]), batches the samples
//! for the `Steering` group and takes in the batches of the other areas.
//!
//! ```text
//!   UDP query from R ──on_udp_query──► true: answer with TC=1 (R's prefix wants a sample,
//!                                        within the probe budget); remember (R, question, t0)
//!   TCP query from R ──on_tcp_query──► same address R and question within `tc_wait`:
//!                                        sample = now − t0 → table, and the outbox
//!   no retry         ──(expiry)────────► R's prefix due again, R itself not before
//!                                        `probe_interval` (Proximity::unanswered)
//!   every second     ──take_batch────► SampleBatch { area, samples (age, not clock) } → Steering group
//!   batch of area B  ──heard─────────► the samples enter the table as B's
//!   answer           ──at(now)───────► LearnedAreas for Steering::pick_with
//! ```
//!
//! # The measurement: a truncated answer and the TCP query it brings back
//! A small share of UDP answers (only to a prefix this area still measures, see
//! [`Proximity::wants_sample`], at most one per prefix per `probe_interval` plus one more, to another of
//! its addresses, each time one goes unanswered, at most one per address per
//! `probe_interval`, at most `probes_per_second` in all) is sent with TC=1 and no records. Every resolver retries a truncated answer
//! over TCP to the same server (RFC 1035 §4.2.1, RFC 7766 §5); the sample is the time from
//! the truncated answer leaving to the TCP query for the same question arriving from the
//! same address (the table keeps it by the address's /24 or /48). Not any address of the
//! prefix: another resolver there that asks over TCP anyway (a TCP-only forwarder) would
//! make a sample of a truncated answer it never got, timed by whoever sent the UDP query,
//! possibly a forger. A resolver farm that retries from another address of its prefix
//! gives no sample and is answered by the paper's rule. Why this and not the alternatives:
//! - *The TCP handshake RTT of the accepted socket* (`TCP_INFO`'s `tcpi_rtt`) measures
//!   the last TCP hop. In the lab, the "distance" between a region and an area is a
//!   user-space relay (`lab/src/relay.rs`) that terminates the resolver's TCP connection
//!   locally and opens its own to the server after one one-way delay: the server's socket
//!   sees a handshake with the relay, about 0. Reading it also needs `getsockopt`, i.e.
//!   `unsafe` or a new dependency, and the workspace forbids `unsafe`.
//! - *Active probes* (ICMP echo, a SYN to port 53) need raw sockets or privileges, are
//!   dropped by many resolver operators' firewalls, and measure a path no query takes.
//! - The TC round trip travels the path the resolver's queries take, needs nothing but
//!   the DNS, and works through the relay. Its size: on the Internet the answer takes a
//!   one-way trip, the SYN one back, the SYN-ACK one out and the ACK with the query one
//!   back: **about 2 RTT**. Through the relay the answer is held one one-way delay, the
//!   resolver's SYN is accepted by the relay at once, the relay connects to the server
//!   after one one-way delay and the query's bytes arrive with it: **about 1 RTT** (read
//!   from `tcp_relay` and `pump`). Either way the sample is a fixed multiple of the path's
//!   RTT plus the resolver's own turnaround, the same for every area, so the ranking of
//!   the areas and the relative hysteresis ([`super::proximity`]) are right in both; the
//!   absolute figures shown by `walrus-node status --resolver` are TC round trips, not
//!   ping times. (Correcting with `tcpi_rtt` would make them 1 RTT on the Internet; left
//!   out for the reasons above.)
//! - Cost to clients: the truncated query costs its client one more round trip and a TCP
//!   handshake, for one query per prefix per `probe_interval` at most while the area
//!   learns, and none once the answer is *settled* (this area's estimate and the chosen
//!   area's a clear margin apart, [`Proximity::wants_sample`]) but to refresh samples
//!   before they age out: with the defaults 3 truncated answers per prefix per area per
//!   10 minutes. Only a thin margin (near-equal areas) keeps measuring up to
//!   `samples_kept` fresh samples. The price: a settled entry notices a changed path
//!   only at its next refresh (within `max_age`).
//!
//! # Sharing: the `Steering` group, Reliable
//! Each area multicasts its own samples once a second (a batch is bounded by
//! [`LearnedConfig::batch_max`]; more wait for the next one, and past
//! [`LearnedConfig::outbox_cap`] they are kept only locally). Samples carry their *age* at
//! sending, not a wall-clock time, so no two nodes' clocks need to agree. Reliable, not
//! Agreed: a sample is a fact measured by one area; receiving two areas' batches in
//! different orders changes no median, and only which of two near-equal areas hysteresis
//! keeps during a tie, where either answer is right. Nothing needs total order, and
//! Agreed would add the sequencer's round to every batch. A node that misses batches
//! (joins late, was cut off) answers by the paper's rule or the partial table until
//! fresh samples arrive; samples age out anyway.
//!
//! # Spoofing
//! The table's worst case is in [`super::proximity`]. What a forger adds here: a forged UDP
//! query can earn its source a truncated answer (within the same budget: one per address
//! per `probe_interval`, `probes_per_second` in all), never more bytes than the query (a TC
//! answer is the header and the question). A sample needs a TCP query for the same
//! question from the very address the truncated answer went to, within `tc_wait`, i.e. a
//! completed TCP handshake from that address: an off-path forger cannot complete one, so
//! a truncated answer to a forged source never becomes a sample, whatever else the
//! prefix sends over TCP (left: forging the very address of a resolver that itself asks
//! the same question over TCP, without a truncated answer, within `tc_wait`). Queries alone never change an answer (only a sample re-runs the
//! choice, [`super::proximity`]). A forged query can take its prefix's probe, but only
//! until `tc_wait` passes without a retry: then the prefix is due again and the forged
//! address is not probed before `probe_interval`, so a forger using one address of a
//! prefix cannot keep its real resolvers from being measured. One cycling through many
//! addresses of a prefix (at least `probe_interval / tc_wait`, 10 with the defaults, per
//! interval and area) can: the prefix then gets no new samples and, once its samples age
//! out (`max_age`), is answered by the paper's rule, never by a wrong area; it costs the
//! forger's targets at most one truncated answer per address per `probe_interval`. An
//! on-path forger (inside the prefix) can only delay its own prefix's samples. Pending TC
//! answers are capped ([`LearnedConfig::pending_cap`]): past it no TC answer is sent.

use super::proximity::{EntryView, Proximity, ProximityConfig, ResolverPrefix};
use super::steering::{By, LearnedAreas};
use crate::knob::KnobError;
use crate::model::AreaName;
use hickory_proto::rr::Name;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The knobs of learned steering (`[dns.learned]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnedConfig {
    /// The table: samples kept, median, hysteresis, cap, probe budgets.
    pub table: ProximityConfig,
    /// A TCP query arriving later than this after the truncated answer is no sample
    /// (default 3 s: 2 RTT of the farthest resolvers, with room).
    pub tc_wait: Duration,
    /// Most truncated answers awaiting their TCP query (default 4096).
    pub pending_cap: usize,
    /// Most samples in one batch to the `Steering` group (default 500).
    pub batch_max: usize,
    /// Most samples waiting to be shared (default 10,000); past it they stay local.
    pub outbox_cap: usize,
    /// How often the batch is sent (default 1 s).
    pub share_interval: Duration,
}

impl Default for LearnedConfig {
    fn default() -> Self {
        Self {
            table: ProximityConfig::default(),
            tc_wait: Duration::from_secs(3),
            pending_cap: 4096,
            batch_max: 500,
            outbox_cap: 10_000,
            share_interval: Duration::from_secs(1),
        }
    }
}

/// The `[dns.learned]` section of the configuration file, deserialized straight into this
/// type (unknown fields refused, missing ones at [`LearnedConfig`]'s defaults);
/// [`LearnedKnobs::validate`] checks the ranges and names the field.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LearnedKnobs {
    /// Learned steering on (default false; the embedded backend only).
    pub enabled: bool,
    /// Least time between two truncated answers to one /24 or /48 (default 30s; at least
    /// 100ms).
    #[serde(deserialize_with = "crate::controller::knobs::human_duration")]
    pub probe_interval: Duration,
    /// Least time between two truncated answers to one /24 or /48 while this area has
    /// fewer than `min_samples` fresh samples of it (default 5s; at least 100ms; a longer
    /// one than `probe_interval` counts as `probe_interval`).
    #[serde(deserialize_with = "crate::controller::knobs::human_duration")]
    pub learn_interval: Duration,
    /// Most truncated answers a second in all, also the burst (default 100; 1..=10000).
    pub probes_per_second: u32,
    /// Fresh samples an area needs before its estimate counts (default 3; 1..=samples_kept).
    pub min_samples: usize,
    /// Samples kept per prefix and area (default 5; 1..=100).
    pub samples_kept: usize,
    /// A sample older than this does not count (default 10m; at least 1s).
    #[serde(deserialize_with = "crate::controller::knobs::human_duration")]
    pub max_age: Duration,
    /// Most prefixes in the table (default 100000; 1..=10000000).
    pub table_cap: usize,
    /// How often each area multicasts its samples (default 1s; 10ms..=60s).
    #[serde(deserialize_with = "crate::controller::knobs::human_duration")]
    pub share_interval: Duration,
}

impl Default for LearnedKnobs {
    fn default() -> Self {
        let c = LearnedConfig::default();
        Self {
            enabled: false,
            probe_interval: c.table.probe_interval,
            learn_interval: c.table.learn_interval,
            probes_per_second: c.table.probes_per_second,
            min_samples: c.table.min_samples,
            samples_kept: c.table.samples_kept,
            max_age: c.table.max_age,
            table_cap: c.table.cap,
            share_interval: c.share_interval,
        }
    }
}

impl LearnedKnobs {
    /// Checks the ranges in the fields' docs.
    pub fn validate(&self) -> Result<(), KnobError> {
        let out = |field, range: &str| Err(KnobError::new(field, format!("out of range {range}")));
        if self.probe_interval < Duration::from_millis(100) {
            return out("probe_interval", "100ms and more");
        }
        if self.learn_interval < Duration::from_millis(100) {
            return out("learn_interval", "100ms and more");
        }
        if !(1..=10_000).contains(&self.probes_per_second) {
            return out("probes_per_second", "1..=10000");
        }
        if !(1..=100).contains(&self.samples_kept) {
            return out("samples_kept", "1..=100");
        }
        if self.min_samples == 0 || self.min_samples > self.samples_kept {
            return out("min_samples", "1..=samples_kept");
        }
        if self.max_age < Duration::from_secs(1) {
            return out("max_age", "1s and more");
        }
        if !(1..=10_000_000).contains(&self.table_cap) {
            return out("table_cap", "1..=10000000");
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&self.share_interval) {
            return out("share_interval", "10ms..=60s");
        }
        Ok(())
    }

    /// The configuration of a server with these knobs (`None` when not enabled).
    pub fn config(&self) -> Option<LearnedConfig> {
        if !self.enabled {
            return None;
        }
        let mut c = LearnedConfig::default();
        c.table.probe_interval = self.probe_interval;
        c.table.learn_interval = self.learn_interval;
        c.table.probes_per_second = self.probes_per_second;
        c.table.min_samples = self.min_samples;
        c.table.samples_kept = self.samples_kept;
        c.table.max_age = self.max_age;
        c.table.cap = self.table_cap;
        c.share_interval = self.share_interval;
        Some(c)
    }
}

/// One measured round trip, as multicast to the `Steering` group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// The resolver's address (its /24 or /48 is the table's key).
    pub resolver: IpAddr,
    /// The TC round trip, in microseconds.
    pub rtt_us: u32,
    /// How long before the batch left it was taken, in milliseconds.
    pub age_ms: u32,
}

/// One area's samples since its last batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleBatch {
    /// The area that measured.
    pub area: AreaName,
    /// Its samples.
    pub samples: Vec<Sample>,
}

/// What learned steering did, for `/status` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SteeringCounters {
    /// Prefixes in the learned table now.
    pub table_prefixes: u64,
    /// `www.<site>` answers decided by the learned table.
    pub answers_learned: u64,
    /// ... by a hand-written `[[dns.steering]]` rule.
    pub answers_override: u64,
    /// ... by the paper's rule (the answering server's own area).
    pub answers_paper: u64,
    /// Truncated answers sent to measure a resolver.
    pub probes_sent: u64,
    /// Samples this area measured.
    pub samples_measured: u64,
    /// Samples heard from the other areas.
    pub samples_heard: u64,
    /// Samples not shared (the outbox was full) or not taken in (implausible).
    pub samples_dropped: u64,
    /// `www.<site>` answers that did not name the area a rule or the table chose, because
    /// that area's Director was not in the `Steering` group's view (counted also under
    /// who decided the answer given instead).
    #[serde(default)]
    pub answers_avoided_down: u64,
    /// Areas whose Director is in the `Steering` group's view now, this one included
    /// (0: no view yet, every area counts as alive).
    #[serde(default)]
    pub areas_alive: u64,
}

/// How one area's server answers a resolver now, and why ([`super::embedded::EmbeddedServer::explain`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explained {
    /// The area whose server answers.
    pub area: AreaName,
    /// Who decides: a rule, the learned table, or the paper's rule.
    pub by: By,
    /// The area zone `www.<site>` points at (`None`: the server's own area, §7.2).
    pub target: Option<String>,
    /// What the learned table holds for the resolver's prefix.
    pub entry: Option<EntryView>,
    /// Whether learned steering is on at this server.
    pub learning: bool,
}

/// Every area with its zone: what a learned answer points at.
pub type AreaZones = Vec<(AreaName, Name)>;

/// A question as a key: the name's wire bytes lowercased, then the type and class.
type QuestionKey = Vec<u8>;

/// One area server's learned steering state.
#[derive(Debug)]
pub struct Learned {
    area: AreaName,
    cfg: LearnedConfig,
    table: Proximity,
    /// Each area's zone: what a learned answer points at.
    zones: HashMap<AreaName, Name>,
    /// `www.<site>`'s wire name, lowercased: the answers counted.
    site_www: Vec<u8>,
    /// Truncated answers awaiting their TCP query, by the exact address they were sent to
    /// and the question, and their order for expiry.
    pending: HashMap<(IpAddr, QuestionKey), Instant>,
    pending_order: VecDeque<(Instant, IpAddr, QuestionKey)>,
    /// Samples not yet shared: when taken, where to, how long.
    outbox: VecDeque<(Instant, IpAddr, Duration)>,
    /// The areas whose Director is in the `Steering` group's view (`None`: no view yet;
    /// every area counts as alive). This area is always alive to itself.
    alive: Option<HashSet<AreaName>>,
    counters: SteeringCounters,
}

impl Learned {
    /// An empty table for the server of `area`, whose site's `www` is `site_www`.
    pub fn new(area: AreaName, site_www: &Name, cfg: LearnedConfig) -> Self {
        let mut site_www =
            hickory_proto::serialize::binary::BinEncodable::to_bytes(&site_www.to_lowercase())
                .unwrap_or_default();
        site_www.make_ascii_lowercase();
        Self {
            table: Proximity::new(cfg.table.clone()),
            area,
            cfg,
            zones: HashMap::new(),
            site_www,
            pending: HashMap::new(),
            pending_order: VecDeque::new(),
            outbox: VecDeque::new(),
            alive: None,
            counters: SteeringCounters::default(),
        }
    }

    /// Sets each area's zone (at start and when the configuration's areas change).
    pub fn set_zones(&mut self, zones: impl IntoIterator<Item = (AreaName, Name)>) {
        self.zones = zones.into_iter().collect();
    }

    /// Sets the areas whose name server answers: those with a Director in the `Steering`
    /// group's view ([`super::sharing::SteeringView`]); `None` when no view is known.
    /// Learned and rule answers name only these (see [`super::steering`]).
    pub fn set_alive(&mut self, alive: Option<HashSet<AreaName>>) {
        self.alive = alive;
    }

    /// Whether `area`'s name server counts as answering now.
    fn is_alive(&self, area: &AreaName) -> bool {
        *area == self.area || self.alive.as_ref().is_none_or(|a| a.contains(area))
    }

    /// The knobs.
    pub fn config(&self) -> &LearnedConfig {
        &self.cfg
    }

    /// A UDP query for `question` ([`question_key`]) from `resolver`: whether to answer it
    /// truncated, to measure the round trip of the TCP retry.
    pub fn on_udp_query(&mut self, now: Instant, resolver: IpAddr, question: &[u8]) -> bool {
        self.expire(now);
        if !self.table.wants_sample(now, resolver, &self.area)
            || self.pending.len() >= self.cfg.pending_cap
        {
            return false;
        }
        let key = (resolver, question.to_vec());
        if self.pending.contains_key(&key)
            || self.table.saw_query(now, resolver, &self.area).is_none()
        {
            return false;
        }
        self.pending_order.push_back((now, resolver, key.1.clone()));
        self.pending.insert(key, now);
        self.counters.probes_sent += 1;
        true
    }

    /// A TCP query for `question` from `resolver`: the sample it completes, if it is the
    /// retry of a truncated answer sent to this very address (and the sample is then in
    /// the table and the outbox). A TCP query from another address of the prefix is no
    /// retry of it: a truncated answer sent to a forged source must never become a sample.
    pub fn on_tcp_query(
        &mut self,
        now: Instant,
        resolver: IpAddr,
        question: &[u8],
    ) -> Option<Duration> {
        self.expire(now);
        let key = (resolver, question.to_vec());
        let sent = self.pending.remove(&key)?;
        let rtt = now.saturating_duration_since(sent);
        self.table.record(now, resolver, &self.area, rtt);
        self.counters.samples_measured += 1;
        if self.outbox.len() < self.cfg.outbox_cap {
            self.outbox.push_back((now, resolver, rtt));
        } else {
            self.counters.samples_dropped += 1;
        }
        Some(rtt)
    }

    fn expire(&mut self, now: Instant) {
        let wait = self.cfg.tc_wait;
        while self
            .pending_order
            .front()
            .is_some_and(|(at, _, _)| now.saturating_duration_since(*at) > wait)
        {
            let Some((at, resolver, q)) = self.pending_order.pop_front() else {
                break;
            };
            let key = (resolver, q);
            if self.pending.get(&key) == Some(&at) {
                self.pending.remove(&key);
                // Never retried (a forged source, or a resolver that ignores TC): the
                // prefix may be measured through another of its addresses.
                self.table.unanswered(at, resolver);
            }
        }
    }

    /// The samples to multicast now (at most [`LearnedConfig::batch_max`]), if any.
    pub fn take_batch(&mut self, now: Instant) -> Option<SampleBatch> {
        if self.outbox.is_empty() {
            return None;
        }
        let n = self.outbox.len().min(self.cfg.batch_max.max(1));
        let samples = self
            .outbox
            .drain(..n)
            .map(|(at, resolver, rtt)| Sample {
                resolver,
                rtt_us: u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX),
                age_ms: u32::try_from(now.saturating_duration_since(at).as_millis())
                    .unwrap_or(u32::MAX),
            })
            .collect();
        Some(SampleBatch {
            area: self.area.clone(),
            samples,
        })
    }

    /// Queues this area's own fresh samples to be shared again (newest first, within
    /// [`LearnedConfig::outbox_cap`]): for a member that joined the `Steering` group after
    /// they were first sent. Receivers keep a sample they already hold once.
    pub fn reshare(&mut self, now: Instant) {
        let room = self.cfg.outbox_cap.saturating_sub(self.outbox.len());
        let mut own = self.table.samples_of(now, &self.area);
        own.sort_by_key(|s| std::cmp::Reverse(s.0));
        self.outbox.extend(own.into_iter().take(room));
    }

    /// Takes in another area's batch (our own is already in the table). Samples older
    /// than the table keeps, or longer than [`LearnedConfig::tc_wait`] (no real TC round
    /// trip is), are dropped; so are samples past [`LearnedConfig::outbox_cap`] in one batch.
    pub fn heard(&mut self, now: Instant, batch: &SampleBatch) {
        if batch.area == self.area {
            return;
        }
        for (i, s) in batch.samples.iter().enumerate() {
            let age = Duration::from_millis(u64::from(s.age_ms));
            let rtt = Duration::from_micros(u64::from(s.rtt_us));
            let at = now.checked_sub(age);
            match at {
                Some(at)
                    if i < self.cfg.outbox_cap
                        && age <= self.cfg.table.max_age
                        && rtt <= self.cfg.tc_wait =>
                {
                    self.table.record(at, s.resolver, &batch.area, rtt);
                    self.counters.samples_heard += 1;
                }
                _ => self.counters.samples_dropped += 1,
            }
        }
    }

    /// Counts one answer by who decided it (and whether it avoided a down area), if
    /// `question` is `www.<site>`'s.
    pub fn count(&mut self, question: &[u8], by: By, avoided: bool) {
        if question.len() < 4 || question[..question.len() - 4] != self.site_www[..] {
            return;
        }
        let c = &mut self.counters;
        c.answers_avoided_down += u64::from(avoided);
        match by {
            By::Learned => c.answers_learned += 1,
            By::Override => c.answers_override += 1,
            By::Paper => c.answers_paper += 1,
        }
    }

    /// The counters, with the table's size now.
    pub fn counters(&self) -> SteeringCounters {
        SteeringCounters {
            table_prefixes: self.table.len() as u64,
            areas_alive: self
                .alive
                .as_ref()
                .map_or(0, |a| a.len() as u64 + u64::from(!a.contains(&self.area))),
            ..self.counters
        }
    }

    /// What is known of `resolver`'s prefix.
    pub fn entry(&self, now: Instant, resolver: IpAddr) -> Option<EntryView> {
        self.table.entry(now, resolver)
    }

    /// The table as [`super::steering::Steering::pick_with`] reads it at `now`.
    pub fn at(&self, now: Instant) -> LearnedAt<'_> {
        LearnedAt { learned: self, now }
    }
}

/// The learned table at one instant.
#[derive(Debug, Clone, Copy)]
pub struct LearnedAt<'a> {
    learned: &'a Learned,
    now: Instant,
}

impl LearnedAreas for LearnedAt<'_> {
    fn nearest_zone(&self, ip: IpAddr) -> Option<&Name> {
        let l = self.learned;
        let area = l.table.nearest_alive(self.now, ip, &|a| l.is_alive(a))?;
        l.zones.get(area)
    }

    fn chosen_down(&self, ip: IpAddr) -> bool {
        let l = self.learned;
        l.table
            .nearest(self.now, ip)
            .is_some_and(|a| !l.is_alive(a))
    }

    fn zone_alive(&self, zone: &Name) -> bool {
        let l = self.learned;
        l.zones
            .iter()
            .filter(|(_, z)| *z == zone)
            .all(|(a, _)| l.is_alive(a))
    }

    fn prefix_len(&self, ip: IpAddr) -> u8 {
        ResolverPrefix::len_of(ip)
    }
}

/// The first question of a request as a key: the name's wire bytes (lowercased) with type
/// and class; `None` for a request too short, without a question, or with a compressed
/// name in it (no resolver sends one).
pub fn question_key(request: &[u8]) -> Option<QuestionKey> {
    let qdcount = u16::from_be_bytes([*request.get(4)?, *request.get(5)?]);
    if qdcount == 0 {
        return None;
    }
    let mut at = 12usize;
    loop {
        let len = usize::from(*request.get(at)?);
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        at += 1 + len;
    }
    let mut key = request.get(12..at + 5)?.to_vec();
    let name_end = key.len() - 4;
    key[..name_end].make_ascii_lowercase();
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::super::steering::Steering;
    use super::*;
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::RecordType;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn area(n: u8) -> AreaName {
        AreaName::from(format!("area-{n}").as_str())
    }

    fn question(name: &str) -> QuestionKey {
        let mut m = Message::new();
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        question_key(&m.to_vec().unwrap()).unwrap()
    }

    fn learned(n: u8, cfg: LearnedConfig) -> Learned {
        let mut l = Learned::new(area(n), &Name::from_ascii("www.example.com.").unwrap(), cfg);
        l.set_zones((1..=3).map(|i| {
            (
                area(i),
                Name::from_ascii(format!("area-{i}.example.com.")).unwrap(),
            )
        }));
        l
    }

    #[test]
    fn a_truncated_answer_and_its_tcp_retry_make_one_sample() {
        let t0 = Instant::now();
        let mut l = learned(1, LearnedConfig::default());
        let q = question("WWW.Example.com.");
        assert_eq!(q, question("www.example.com."), "case does not matter");
        assert!(l.on_udp_query(t0, ip("192.0.2.7"), &q));
        // A TCP query from another address of the /24 is no retry of it.
        let other = t0 + Duration::from_millis(20);
        assert_eq!(l.on_tcp_query(other, ip("192.0.2.9"), &q), None);
        // The retry from the address the truncated answer went to, 40 ms later.
        let rtt = l.on_tcp_query(t0 + Duration::from_millis(40), ip("192.0.2.7"), &q);
        assert_eq!(rtt, Some(Duration::from_millis(40)));
        // A second TCP query is no sample.
        assert_eq!(l.on_tcp_query(t0, ip("192.0.2.7"), &q), None);
        assert!(
            !l.on_udp_query(t0 + Duration::from_secs(1), ip("192.0.2.7"), &q),
            "budget"
        );
        let batch = l.take_batch(t0 + Duration::from_millis(1040)).unwrap();
        assert_eq!(
            batch.samples,
            vec![Sample {
                resolver: ip("192.0.2.7"),
                rtt_us: 40_000,
                age_ms: 1000
            }]
        );
        assert_eq!(l.take_batch(t0), None);
        let c = l.counters();
        assert_eq!(
            (c.probes_sent, c.samples_measured, c.table_prefixes),
            (1, 1, 1)
        );
    }

    #[test]
    fn a_late_retry_is_no_sample() {
        let t0 = Instant::now();
        let mut l = learned(1, LearnedConfig::default());
        let q = question("www.example.com.");
        assert!(l.on_udp_query(t0, ip("192.0.2.7"), &q));
        assert_eq!(
            l.on_tcp_query(t0 + Duration::from_secs(4), ip("192.0.2.7"), &q),
            None
        );
        assert!(l.pending.is_empty() && l.pending_order.is_empty());
        // Never retried: the prefix is due again, through another of its addresses only.
        let later = t0 + Duration::from_secs(5);
        assert!(!l.on_udp_query(later, ip("192.0.2.7"), &q));
        assert!(l.on_udp_query(later, ip("192.0.2.8"), &q));
        assert!(!l.on_udp_query(later, ip("192.0.2.9"), &q), "one at a time");
    }

    /// Areas 1 to 3, measuring a prefix every 100 ms at most.
    fn three_areas() -> Vec<Learned> {
        let cfg = LearnedConfig {
            table: ProximityConfig {
                probe_interval: Duration::from_millis(100),
                ..ProximityConfig::default()
            },
            ..LearnedConfig::default()
        };
        (1..=3).map(|n| learned(n, cfg.clone())).collect()
    }

    #[test]
    fn shared_samples_steer_every_area_to_the_nearest() {
        let t0 = Instant::now();
        let mut areas = three_areas();
        let rtts = [60u64, 12, 35];
        let q = question("www.example.com.");
        let r = ip("198.51.100.53");
        for round in 0..5u64 {
            let now = t0 + Duration::from_secs(round);
            for (a, rtt) in areas.iter_mut().zip(rtts) {
                // Three rounds of samples settle the answer (12 ms against 35 and 60: a
                // clear margin); then no more truncated answers for this prefix.
                let truncated = a.on_udp_query(now, r, &q);
                assert_eq!(truncated, round < 3, "round {round}, {}", a.area);
                a.on_tcp_query(now + Duration::from_millis(rtt), r, &q);
            }
            let batches: Vec<SampleBatch> = areas
                .iter_mut()
                .filter_map(|a| a.take_batch(now + Duration::from_millis(100)))
                .collect();
            for a in &mut areas {
                for b in &batches {
                    a.heard(now + Duration::from_millis(110), b);
                }
            }
        }
        let now = t0 + Duration::from_secs(5);
        for a in &areas {
            let zone = a.at(now).nearest_zone(r).map(|n| n.to_ascii());
            assert_eq!(zone.as_deref(), Some("area-2.example.com."), "{}", a.area);
            assert!(!a.table.wants_sample(now, r, &a.area));
        }
        let e = areas[0].entry(now, r).unwrap();
        assert_eq!(e.chosen, Some(area(2)));
        assert_eq!(e.areas[1].rtt, Some(Duration::from_millis(12)));
        assert_eq!(e.areas[1].samples, 3);
        assert_eq!(areas[1].counters().probes_sent, 3);
    }

    #[test]
    fn a_late_joiner_hears_the_samples_it_missed_once() {
        let t0 = Instant::now();
        let mut areas = three_areas();
        let q = question("www.example.com.");
        let r = ip("198.51.100.53");
        // Areas 1 and 2 measure three rounds; area 3 has not joined the group yet.
        for round in 0..3u64 {
            let now = t0 + Duration::from_secs(round);
            for (a, rtt) in areas[..2].iter_mut().zip([60u64, 12]) {
                assert!(a.on_udp_query(now, r, &q));
                a.on_tcp_query(now + Duration::from_millis(rtt), r, &q);
            }
            share(&mut areas[..2], now + Duration::from_millis(100));
        }
        let now = t0 + Duration::from_secs(3);
        assert_eq!(areas[2].entry(now, r), None, "area 3 heard nothing");
        // Area 3 joins: everyone shares its own samples again.
        for a in &mut areas {
            a.reshare(now);
        }
        share(&mut areas, now);
        for a in &areas {
            let e = a.entry(now, r).unwrap();
            assert_eq!(e.chosen, Some(area(2)), "{}", a.area);
            // Heard twice by area 1 and 2 (first sent, then shared again): kept once.
            let n: Vec<usize> = e.areas.iter().map(|x| x.samples).collect();
            assert_eq!(n, [3, 3], "{}", a.area);
        }
    }

    /// Exchanges every area's batch with every other (the `Steering` group), at `now`.
    fn share(areas: &mut [Learned], now: Instant) {
        let batches: Vec<SampleBatch> =
            areas.iter_mut().filter_map(|a| a.take_batch(now)).collect();
        for a in areas.iter_mut() {
            for b in &batches {
                a.heard(now, b);
            }
        }
    }

    /// The spoofing test of the lab, sans-IO: a forger sends UDP queries from an address of
    /// the victim's /24 that is not its own, first each time the prefix is due for a
    /// measurement. The victim's /24 holds a resolver that asks over UDP (and retries a
    /// truncated answer over TCP) and a forwarder that asks over TCP only, at times the
    /// forger can guess: soon after the forged query at area 3, late at area 1. The
    /// truncated answers to the forged address are never retried; paired with the
    /// forwarder's queries they would be samples the forger times. For 20 minutes (past
    /// `max_age`, so the honest samples age out and must be renewed) the victim's learned
    /// answer must stay the nearest area.
    #[test]
    fn forged_queries_from_one_address_cannot_move_their_prefix() {
        let t0 = Instant::now();
        let mut areas: Vec<Learned> = (1..=3)
            .map(|n| learned(n, LearnedConfig::default()))
            .collect();
        let q = question("www.example.com.");
        let resolver = ip("10.200.1.9");
        let forwarder = ip("10.200.1.10");
        let forged = ip("10.200.1.250");
        let interval = ProximityConfig::default().probe_interval;
        let zone = |areas: &[Learned], at: Instant| -> Vec<Option<String>> {
            areas
                .iter()
                .map(|a| a.at(at).nearest_zone(resolver).map(|n| n.to_ascii()))
                .collect()
        };
        let nearest = vec![Some("area-1.example.com.".to_string()); 3];
        let mut honest = 0;
        for round in 0..40u32 {
            let now = t0 + interval * round;
            for (a, (rtt, forwarder_wait)) in
                areas
                    .iter_mut()
                    .zip([(20u64, 2900u64), (80, 1500), (140, 1)])
            {
                let before = a.at(now).nearest_zone(resolver).map(|n| n.to_ascii());
                if round >= 3 {
                    for k in 0..10 {
                        a.on_udp_query(now + Duration::from_millis(k), forged, &q);
                    }
                    // Queries alone (answered or truncated) change nothing.
                    let after = a.at(now).nearest_zone(resolver).map(|n| n.to_ascii());
                    assert_eq!(before, after, "round {round}: a query moved the answer");
                }
                let at = now + Duration::from_millis(forwarder_wait);
                a.on_tcp_query(at, forwarder, &q);
                // The resolver asks 4 s into the round and retries a truncated answer.
                let at = now + Duration::from_secs(4);
                if a.on_udp_query(at, resolver, &q) {
                    let rtt = Duration::from_millis(rtt);
                    assert_eq!(a.on_tcp_query(at + rtt, resolver, &q), Some(rtt));
                    honest += 1;
                }
            }
            share(&mut areas, now + Duration::from_secs(5));
            if round >= 2 {
                let at = now + Duration::from_secs(5);
                assert_eq!(zone(&areas, at), nearest, "round {round}: the answer moved");
            }
        }
        let measured: u64 = areas.iter().map(|a| a.counters().samples_measured).sum();
        assert_eq!(
            measured, honest,
            "only the resolver's own retries are samples"
        );
    }

    /// The lab's SIGSTOP case, sans-IO: area 1's server has learned that area 2 is nearest
    /// to a resolver (and a rule sends another prefix to area 2); area 2's Director leaves
    /// the `Steering` view. No answer may name area 2 until it is back.
    #[test]
    fn answers_never_name_an_area_that_is_down() {
        let t0 = Instant::now();
        let mut l = learned(1, LearnedConfig::default());
        let r = ip("198.51.100.53");
        let batch = |n: u8, rtt_ms: u32| SampleBatch {
            area: area(n),
            samples: (0..3)
                .map(|i| Sample {
                    resolver: r,
                    rtt_us: rtt_ms * 1000 + i,
                    age_ms: 0,
                })
                .collect(),
        };
        l.heard(t0, &batch(2, 12));
        l.heard(t0, &batch(3, 35));
        let rule = Steering::from_pairs([("10.9.0.0/16", "area-2.example.com")]).unwrap();
        let by_rule = ip("10.9.1.1");
        let www = question("www.example.com.");
        let ask = |l: &mut Learned, from: IpAddr| {
            let at = l.at(t0);
            let p = rule.answer_for(from, Some(&at as &dyn LearnedAreas));
            let got = (p.target.map(|n| n.to_ascii()), p.by, p.avoided);
            l.count(&www, p.by, p.avoided);
            got
        };
        let zone = |n: u8| Some(format!("area-{n}.example.com."));
        let alive = |names: &[u8]| Some(names.iter().map(|n| area(*n)).collect());
        // No view yet, then all three alive: as before.
        for set in [None, alive(&[1, 2, 3])] {
            l.set_alive(set);
            assert_eq!(ask(&mut l, r), (zone(2), By::Learned, false));
            assert_eq!(ask(&mut l, by_rule), (zone(2), By::Override, false));
        }
        // Area 2 down: the next nearest alive area (3); the rule's prefix, with no learned
        // entry, gets the paper's rule (this area's own answer).
        l.set_alive(alive(&[1, 3]));
        assert_eq!(ask(&mut l, r), (zone(3), By::Learned, true));
        assert_eq!(ask(&mut l, by_rule), (None, By::Paper, true));
        // Only this area in the view (cut off): the paper's rule; this area counts as
        // alive even when the view is given without it.
        l.set_alive(alive(&[]));
        assert_eq!(ask(&mut l, r), (None, By::Paper, true));
        // An ECS query whose client subnet a rule to area 2 covers: the fallback, for the
        // client's source prefix alone.
        l.set_alive(alive(&[1, 3]));
        let at = l.at(t0);
        let client = super::super::steering::SourcePrefix::parse("10.9.1.0/24").unwrap();
        let p = rule.pick_with(client, r, Some(&at as &dyn LearnedAreas));
        assert_eq!(
            (p.target.map(|n| n.to_ascii()), p.scope, p.avoided),
            (zone(3), 24, true)
        );
        // Back: named again at once.
        l.set_alive(alive(&[1, 2, 3]));
        assert_eq!(ask(&mut l, r), (zone(2), By::Learned, false));
        let c = l.counters();
        assert_eq!((c.answers_avoided_down, c.areas_alive), (3, 3));
    }

    #[test]
    fn counts_only_answers_to_the_site_www() {
        let mut l = learned(1, LearnedConfig::default());
        l.count(&question("www.example.com."), By::Learned, false);
        l.count(&question("www.area-1.example.com."), By::Learned, true);
        l.count(&question("WWW.example.com."), By::Paper, true);
        let c = l.counters();
        assert_eq!(
            (c.answers_learned, c.answers_paper, c.answers_override),
            (1, 1, 0)
        );
        assert_eq!(c.answers_avoided_down, 1);
    }

    #[test]
    fn question_keys_never_panic_on_garbage() {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(21);
        for _ in 0..20_000 {
            let len = rand::Rng::random_range(&mut rng, 0..40usize);
            let bytes: Vec<u8> = (0..len).map(|_| rand::Rng::random(&mut rng)).collect();
            let _ = question_key(&bytes);
        }
        assert_eq!(question_key(&[0; 12]), None, "no question");
    }
}
