//! Learned proximity (issue 21): which area is nearest to a resolver, from round-trip
//! times the areas' name servers measure, instead of a table an operator writes by hand.
//!
//! Sans-IO: the server reports what it saw and measured, with the time passed in, and asks
//! what to answer; it sends no probe and reads no clock itself. The measurement (a truncated
//! answer timed to its TCP retry) and the sharing between areas are in [`super::learned`]:
//! this is the table they feed.
//!
//! ```text
//!   query from resolver R ──saw_query(now, R)──► Some(Probe { target: R }) within budget
//!   RTT from area A to R  ──record(now, R, A, rtt)──► samples of prefix(R) for A
//!   answer for R          ──nearest(now, R)──► Some(A) once learned, else None
//!                                              (None: the paper's rule, or the override)
//! ```
//!
//! - **Prefixes, not addresses.** A resolver is kept by its /24 (IPv4) or /48 (IPv6):
//!   the servers of one resolver farm sit together, and the table stays small.
//! - **Samples age out.** Each area keeps its last [`ProximityConfig::samples_kept`]
//!   samples per prefix; those older than [`ProximityConfig::max_age`] do not count. An
//!   area's estimate is the median of its fresh samples, once it has
//!   [`ProximityConfig::min_samples`] of them: one sample moves a median by one rank at
//!   most, so one late reply (or one freak fast one) cannot make an area look near or far.
//! - **Hysteresis.** The choice moves from the current area to another only when the
//!   other's estimate is lower by both [`ProximityConfig::switch_ratio_permille`] of the
//!   current one and [`ProximityConfig::switch_gap`]; a near tie never flaps. When the
//!   current area's samples have all aged out, the best fresh area is taken at once.
//! - **Measured while it matters.** An area measures a prefix until it has `min_samples`
//!   fresh samples; past that only while the answer is not yet settled (its estimate
//!   within twice the hysteresis of the chosen area's), up to `samples_kept`; and to
//!   refresh samples about to age out ([`Proximity::wants_sample`]).
//! - **Bounded state.** At most [`ProximityConfig::cap`] prefixes; a new prefix past the
//!   cap evicts the one measured longest ago. Probe bookkeeping is a second map of the
//!   same cap, so queries alone never evict a learned entry: only a measurement does.
//! - **Probe budget.** At most one probe per prefix per
//!   [`ProximityConfig::probe_interval`] (per [`ProximityConfig::learn_interval`] while the
//!   area has fewer than `min_samples` fresh samples of it, so at most `min_samples` such
//!   quick ones per `max_age` from a resolver that answers them; a probe never answered frees its prefix at once,
//!   but not its address: [`Proximity::unanswered`]), at most one per address per
//!   interval, and at most [`ProximityConfig::probes_per_second`] in all (a token bucket);
//!   probes go only to addresses that sent us a query.
//!
//! # Spoofing: the worst case
//! A UDP query's source can be forged. What a forger can do with this table:
//! - *Steer another prefix?* No. Samples are round trips *we* time to the source
//!   address (a probe's reply, a TCP handshake); a forger off the path between the area
//!   and the victim's prefix cannot answer for it, and a forged query only makes us measure
//!   the victim's true RTT. On the path, a forger can delay replies (make an area look
//!   far) but not make them arrive earlier than the path allows.
//! - *Make us probe a target?* At most one probe per area per `probe_interval` to any
//!   one address (default 2 per minute per area), whatever the query rate; to one /24 or
//!   /48, one per interval plus one per unanswered probe (each to another address), and at most
//!   `probes_per_second` in all: spread over the whole address space, the forger gets that
//!   global rate of probes, each to an address it named, never more.
//! - *Push real entries out?* Only by causing real measurements: entries enter the table
//!   from samples, at most `probes_per_second` new prefixes a second, so turning over a full
//!   table of `cap` entries takes at least `cap / probes_per_second` seconds (100k at
//!   100/s: about 17 minutes), and an evicted prefix falls back to the paper's rule, not to
//!   a wrong area.

use crate::model::AreaName;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Two samples of one area and prefix with the same RTT (to the microsecond) taken less
/// than this apart are one sample heard twice (its time is rebuilt from an age in
/// milliseconds, late by the batch's transit).
const SAME_SAMPLE: Duration = Duration::from_secs(1);

/// The knobs of the learned table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProximityConfig {
    /// Most prefixes kept (default 100,000).
    pub cap: usize,
    /// Samples kept per prefix and area (default 5).
    pub samples_kept: usize,
    /// Fresh samples an area needs before its estimate counts (default 3).
    pub min_samples: usize,
    /// A sample older than this does not count (default 10 minutes).
    pub max_age: Duration,
    /// Another area replaces the current one only when its estimate is lower by at least
    /// this share of the current estimate, in permille (default 100: 10 %) ...
    pub switch_ratio_permille: u32,
    /// ... and by at least this much (default 2 ms).
    pub switch_gap: Duration,
    /// Least time between two probes of one prefix (default 30 s) ...
    pub probe_interval: Duration,
    /// ... but this while the area has fewer than `min_samples` fresh samples of it
    /// (default 5 s; a longer one counts as `probe_interval`): an area learns a new resolver's prefix in
    /// about `min_samples × learn_interval`, not `min_samples × probe_interval`.
    pub learn_interval: Duration,
    /// Most probes a second in all, also the burst (default 100).
    pub probes_per_second: u32,
}

impl Default for ProximityConfig {
    fn default() -> Self {
        Self {
            cap: 100_000,
            samples_kept: 5,
            min_samples: 3,
            max_age: Duration::from_secs(600),
            switch_ratio_permille: 100,
            switch_gap: Duration::from_millis(2),
            probe_interval: Duration::from_secs(30),
            learn_interval: Duration::from_secs(5),
            probes_per_second: 100,
        }
    }
}

/// A resolver's prefix: the key of the table (/24 or /48).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResolverPrefix(IpAddr);

impl std::fmt::Display for ResolverPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.0, Self::len_of(self.0))
    }
}

impl ResolverPrefix {
    /// The prefix length kept for `ip`'s family: 24 for IPv4, 48 for IPv6.
    pub fn len_of(ip: IpAddr) -> u8 {
        if ip.is_ipv4() {
            24
        } else {
            48
        }
    }

    /// The /24 (IPv4) or /48 (IPv6) that holds `ip`.
    pub fn of(ip: IpAddr) -> Self {
        Self(match ip {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & 0xffff_ff00).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & !((1u128 << 80) - 1)).into()),
        })
    }
}

/// One area's estimate for one prefix, as `walrus-node status --resolver` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AreaEstimate {
    /// The area that measured.
    pub area: AreaName,
    /// The median of its fresh samples, once it has enough of them.
    pub rtt: Option<Duration>,
    /// Its fresh samples.
    pub samples: usize,
    /// How long ago its newest sample was taken.
    pub newest_age: Option<Duration>,
}

/// What the table knows of one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryView {
    /// The prefix.
    pub prefix: ResolverPrefix,
    /// Every area that measured it, by name.
    pub areas: Vec<AreaEstimate>,
    /// The area answered now, if the entry is learned (see [`Proximity::nearest`]).
    pub chosen: Option<AreaName>,
}

/// A probe to send: the resolver's address that queried us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Where to measure the round trip to.
    pub target: IpAddr,
}

/// What is known of one prefix.
#[derive(Debug, Default)]
struct Entry {
    /// Per area, its last samples (time taken, RTT), oldest first.
    samples: HashMap<AreaName, VecDeque<(Instant, Duration)>>,
    /// The area answered now (hysteresis keeps it until another is clearly nearer).
    chosen: Option<AreaName>,
    /// When the last sample came: the eviction order.
    updated: Option<Instant>,
}

/// The learned table of one area's server.
#[derive(Debug)]
pub struct Proximity {
    cfg: ProximityConfig,
    entries: HashMap<ResolverPrefix, Entry>,
    /// (last sample, prefix) of every entry: the oldest is evicted first.
    by_age: BTreeSet<(Instant, ResolverPrefix)>,
    /// Last probe per prefix (and whether it went unanswered, which frees the prefix),
    /// insertion order for eviction.
    probed: HashMap<ResolverPrefix, (Instant, bool)>,
    probed_order: VecDeque<ResolverPrefix>,
    /// Addresses whose last probe went unanswered (a forged source, a resolver that never
    /// retries): not probed again before `probe_interval`; insertion order for eviction.
    silent: HashMap<IpAddr, Instant>,
    silent_order: VecDeque<IpAddr>,
    /// Token bucket of the global probe budget: tokens and when they were counted.
    tokens: u32,
    tokens_at: Option<Instant>,
}

impl Proximity {
    /// An empty table.
    pub fn new(cfg: ProximityConfig) -> Self {
        Self {
            tokens: cfg.probes_per_second,
            cfg,
            entries: HashMap::new(),
            by_age: BTreeSet::new(),
            probed: HashMap::new(),
            probed_order: VecDeque::new(),
            silent: HashMap::new(),
            silent_order: VecDeque::new(),
            tokens_at: None,
        }
    }

    /// Prefixes in the table.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is learned.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A query from `resolver` arrived at `area`'s server: a probe to send when its prefix
    /// is due (`learn_interval` after the last while `area` has fewer than `min_samples`
    /// fresh samples of it, else `probe_interval`) and the global budget allows.
    pub fn saw_query(&mut self, now: Instant, resolver: IpAddr, area: &AreaName) -> Option<Probe> {
        let prefix = ResolverPrefix::of(resolver);
        let interval = self.cfg.probe_interval;
        let learning = self
            .entries
            .get(&prefix)
            .and_then(|e| e.samples.get(area))
            .is_none_or(|s| fresh_count(&self.cfg, now, s) < self.cfg.min_samples.max(1));
        let prefix_interval = if learning {
            self.cfg.learn_interval.min(interval)
        } else {
            interval
        };
        let since = |at: &Instant| now.saturating_duration_since(*at);
        let prefix_busy = self
            .probed
            .get(&prefix)
            .is_some_and(|(at, unanswered)| !unanswered && since(at) < prefix_interval);
        if prefix_busy
            || self
                .silent
                .get(&resolver)
                .is_some_and(|at| since(at) < interval)
        {
            return None;
        }
        self.refill(now);
        if self.tokens == 0 {
            return None;
        }
        self.tokens -= 1;
        let cap = self.cfg.cap;
        remember(
            &mut self.probed,
            &mut self.probed_order,
            prefix,
            (now, false),
            cap,
        );
        Some(Probe { target: resolver })
    }

    /// The probe sent to `resolver` at `at` was never answered: its prefix is due again
    /// (another of its addresses may be measured at once, within the global budget), and
    /// this address is not probed again before `probe_interval`. So a forger who sends
    /// queries from one address of a prefix holds that prefix's probe for no longer than
    /// the wait for the answer, and cannot keep its real resolvers from being measured.
    pub fn unanswered(&mut self, at: Instant, resolver: IpAddr) {
        let prefix = ResolverPrefix::of(resolver);
        if let Some((last, unanswered)) = self.probed.get_mut(&prefix) {
            *unanswered |= *last == at;
        }
        let cap = self.cfg.cap;
        remember(&mut self.silent, &mut self.silent_order, resolver, at, cap);
    }

    fn refill(&mut self, now: Instant) {
        let rate = u64::from(self.cfg.probes_per_second);
        let Some(at) = self.tokens_at else {
            self.tokens_at = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(at);
        let new =
            (elapsed.as_millis().min(u128::from(u32::MAX)) as u64).saturating_mul(rate) / 1000;
        if new > 0 {
            let tokens = (u64::from(self.tokens) + new).min(rate);
            self.tokens = u32::try_from(tokens).unwrap_or(u32::MAX);
            self.tokens_at = Some(now);
        }
    }

    /// A round trip from `area` to `resolver` took `rtt` (measured at `now`).
    pub fn record(&mut self, now: Instant, resolver: IpAddr, area: &AreaName, rtt: Duration) {
        let prefix = ResolverPrefix::of(resolver);
        if !self.entries.contains_key(&prefix) && self.entries.len() >= self.cfg.cap {
            if let Some(oldest) = self.by_age.pop_first() {
                self.entries.remove(&oldest.1);
            }
        }
        let entry = self.entries.entry(prefix).or_default();
        if let Some(at) = entry.updated.replace(now) {
            self.by_age.remove(&(at, prefix));
        }
        self.by_age.insert((now, prefix));
        let kept = entry.samples.entry(area.clone()).or_default();
        // The same sample heard twice (shared again for a late joiner): kept once. A
        // sample is its area, prefix and RTT to the microsecond, taken at about the same
        // time (its age travels in milliseconds).
        if kept.iter().any(|(at, r)| {
            *r == rtt && at.max(&now).saturating_duration_since(*at.min(&now)) < SAME_SAMPLE
        }) {
            return;
        }
        kept.push_back((now, rtt));
        while kept.len() > self.cfg.samples_kept.max(1) {
            kept.pop_front();
        }
        entry.chosen = choose(&self.cfg, now, entry);
    }

    /// `area`'s fresh samples of every prefix: (taken at, the prefix's address, RTT).
    pub fn samples_of(&self, now: Instant, area: &AreaName) -> Vec<(Instant, IpAddr, Duration)> {
        self.entries
            .iter()
            .filter_map(|(prefix, e)| Some((prefix, e.samples.get(area)?)))
            .flat_map(|(prefix, s)| {
                s.iter()
                    .filter(|(at, _)| now.saturating_duration_since(*at) <= self.cfg.max_age)
                    .map(|(at, rtt)| (*at, prefix.0, *rtt))
            })
            .collect()
    }

    /// Whether `area` should measure `resolver`'s prefix again (each measurement costs a
    /// client a round trip and a TCP handshake):
    /// - yes while it has fewer than [`ProximityConfig::min_samples`] fresh samples (an
    ///   unknown prefix: learning), or would have one `probe_interval` from now (samples
    ///   aging out: refresh before `max_age`, so a settled entry never lapses to the paper's
    ///   rule);
    /// - no once the answer is *settled*: this area's estimate and the chosen area's differ
    ///   by at least twice what it takes to switch ([`settled`]), so more samples could not
    ///   change the answer;
    /// - else (a thin margin, or no other area to compare with) yes until it holds
    ///   [`ProximityConfig::samples_kept`].
    ///
    /// So a prefix whose nearest area is clear costs each area `min_samples` truncated
    /// answers per `max_age` (3 per 10 minutes with the defaults), not `samples_kept`.
    pub fn wants_sample(&self, now: Instant, resolver: IpAddr, area: &AreaName) -> bool {
        let Some(entry) = self.entries.get(&ResolverPrefix::of(resolver)) else {
            return true;
        };
        let Some(mine) = entry.samples.get(area) else {
            return true;
        };
        let min = self.cfg.min_samples.max(1);
        if fresh_count(&self.cfg, now, mine) < min
            || fresh_count(&self.cfg, now + self.cfg.probe_interval, mine) < min
        {
            return true;
        }
        if settled(&self.cfg, now, entry, area) {
            return false;
        }
        fresh_count(&self.cfg, now, mine) < self.cfg.samples_kept.max(1)
    }

    /// What is known of `resolver`'s prefix, if anything.
    pub fn entry(&self, now: Instant, resolver: IpAddr) -> Option<EntryView> {
        let prefix = ResolverPrefix::of(resolver);
        let entry = self.entries.get(&prefix)?;
        let mut areas: Vec<AreaEstimate> = entry
            .samples
            .iter()
            .map(|(area, s)| AreaEstimate {
                area: area.clone(),
                rtt: estimate(&self.cfg, now, s),
                samples: fresh_count(&self.cfg, now, s),
                newest_age: s
                    .iter()
                    .map(|(at, _)| *at)
                    .max()
                    .map(|at| now.saturating_duration_since(at)),
            })
            .collect();
        areas.sort_by(|a, b| a.area.cmp(&b.area));
        Some(EntryView {
            prefix,
            areas,
            chosen: self.nearest(now, resolver).cloned(),
        })
    }

    /// The nearest area for `resolver` as learned, or `None` while too little is known
    /// (or all of it aged out): answer by the paper's rule then.
    pub fn nearest(&self, now: Instant, resolver: IpAddr) -> Option<&AreaName> {
        let entry = self.entries.get(&ResolverPrefix::of(resolver))?;
        let chosen = entry.chosen.as_ref()?;
        estimate(&self.cfg, now, entry.samples.get(chosen)?).map(|_| chosen)
    }

    /// Like [`Proximity::nearest`], among the areas `alive` says answer: the chosen area
    /// when it is alive, else the alive area with the lowest estimate (ties by name), else
    /// `None` (the paper's rule). The choice itself (and its hysteresis) is untouched, so
    /// the answer returns to the chosen area as soon as it is alive again.
    pub fn nearest_alive(
        &self,
        now: Instant,
        resolver: IpAddr,
        alive: &dyn Fn(&AreaName) -> bool,
    ) -> Option<&AreaName> {
        if let Some(chosen) = self.nearest(now, resolver) {
            if alive(chosen) {
                return Some(chosen);
            }
        }
        let entry = self.entries.get(&ResolverPrefix::of(resolver))?;
        entry
            .samples
            .iter()
            .filter(|(area, _)| alive(area))
            .filter_map(|(area, s)| estimate(&self.cfg, now, s).map(|e| (e, area)))
            .min()
            .map(|(_, area)| area)
    }
}

/// Sets `key` in a map of at most `cap` keys, evicting the longest-known ones; `order`
/// holds each key once, in insertion order (keys are never removed but by eviction).
fn remember<K: std::hash::Hash + Eq + Copy, V>(
    map: &mut HashMap<K, V>,
    order: &mut VecDeque<K>,
    key: K,
    value: V,
    cap: usize,
) {
    if map.insert(key, value).is_none() {
        order.push_back(key);
        while map.len() > cap {
            match order.pop_front() {
                Some(old) => {
                    map.remove(&old);
                }
                None => break,
            }
        }
    }
}

/// How many of an area's samples still count.
fn fresh_count(
    cfg: &ProximityConfig,
    now: Instant,
    samples: &VecDeque<(Instant, Duration)>,
) -> usize {
    samples
        .iter()
        .filter(|(at, _)| now.saturating_duration_since(*at) <= cfg.max_age)
        .count()
}

/// An area's estimate: the median of its fresh samples, if it has enough.
fn estimate(
    cfg: &ProximityConfig,
    now: Instant,
    samples: &VecDeque<(Instant, Duration)>,
) -> Option<Duration> {
    let mut fresh: Vec<Duration> = samples
        .iter()
        .filter(|(at, _)| now.saturating_duration_since(*at) <= cfg.max_age)
        .map(|(_, rtt)| *rtt)
        .collect();
    if fresh.len() < cfg.min_samples.max(1) {
        return None;
    }
    fresh.sort_unstable();
    Some(fresh[fresh.len() / 2])
}

/// Whether `area`'s samples can no longer change `entry`'s answer: an answer is chosen,
/// and either `area` is not the chosen one and its estimate is farther than the chosen
/// area's by a clear margin, or it is the chosen one and every other area with an estimate
/// (at least one) is. A clear margin is twice the gain [`choose`] needs to switch (the
/// larger of `switch_gap` and `switch_ratio_permille` of the farther estimate).
fn settled(cfg: &ProximityConfig, now: Instant, entry: &Entry, area: &AreaName) -> bool {
    let Some(chosen) = entry.chosen.as_ref() else {
        return false;
    };
    let estimate_of = |a: &AreaName| entry.samples.get(a).and_then(|s| estimate(cfg, now, s));
    let Some(best) = estimate_of(chosen) else {
        return false;
    };
    let clear = |far: Duration| {
        let need = cfg
            .switch_gap
            .max(far * cfg.switch_ratio_permille / 1000)
            .saturating_mul(2);
        far.saturating_sub(best) >= need
    };
    if area != chosen {
        return estimate_of(area).is_some_and(clear);
    }
    let others: Vec<Duration> = entry
        .samples
        .keys()
        .filter(|a| *a != chosen)
        .filter_map(estimate_of)
        .collect();
    !others.is_empty() && others.into_iter().all(clear)
}

/// The area to answer after a sample: the current one unless another is clearly nearer.
fn choose(cfg: &ProximityConfig, now: Instant, entry: &Entry) -> Option<AreaName> {
    let mut estimates: Vec<(Duration, &AreaName)> = entry
        .samples
        .iter()
        .filter_map(|(area, s)| estimate(cfg, now, s).map(|e| (e, area)))
        .collect();
    // Ties by name, so the pick does not depend on the map's order.
    estimates.sort();
    let (best_rtt, best) = *estimates.first()?;
    let current = entry
        .chosen
        .as_ref()
        .and_then(|c| estimates.iter().find(|(_, a)| *a == c));
    let Some((current_rtt, current)) = current else {
        return Some(best.clone());
    };
    let gain = current_rtt.saturating_sub(best_rtt);
    let ratio_gain = *current_rtt * cfg.switch_ratio_permille / 1000;
    if gain >= cfg.switch_gap && gain >= ratio_gain {
        Some(best.clone())
    } else {
        Some((*current).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn area(n: u8) -> AreaName {
        AreaName::from(format!("area-{n}").as_str())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Feeds `rounds` samples from every area (area n: `rtts[n - 1]`), one second apart.
    fn feed(p: &mut Proximity, t0: Instant, from: u64, resolver: &str, rtts: &[u64]) {
        for (i, rtt) in rtts.iter().enumerate() {
            let n = u8::try_from(i + 1).unwrap();
            p.record(
                t0 + Duration::from_secs(from),
                ip(resolver),
                &area(n),
                ms(*rtt),
            );
        }
    }

    #[test]
    fn learns_the_nearest_area_after_enough_samples() {
        let t0 = Instant::now();
        let mut p = Proximity::new(ProximityConfig::default());
        for s in 0..2 {
            feed(&mut p, t0, s, "192.0.2.7", &[40, 12, 80]);
            assert_eq!(
                p.nearest(t0 + Duration::from_secs(s), ip("192.0.2.7")),
                None
            );
        }
        feed(&mut p, t0, 2, "192.0.2.7", &[40, 12, 80]);
        let now = t0 + Duration::from_secs(2);
        assert_eq!(p.nearest(now, ip("192.0.2.7")), Some(&area(2)));
        // The same /24, another resolver address: the same entry.
        assert_eq!(p.nearest(now, ip("192.0.2.200")), Some(&area(2)));
        assert_eq!(p.nearest(now, ip("192.0.3.7")), None);
    }

    #[test]
    fn one_noisy_sample_cannot_flip_the_choice_but_a_clear_change_does() {
        let t0 = Instant::now();
        let mut p = Proximity::new(ProximityConfig::default());
        for s in 0..5 {
            feed(&mut p, t0, s, "198.51.100.1", &[20, 30]);
        }
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(p.nearest(at(4), ip("198.51.100.1")), Some(&area(1)));
        // A freak fast reply from area 2, then a freak slow one from area 1.
        p.record(at(5), ip("198.51.100.1"), &area(2), ms(1));
        p.record(at(5), ip("198.51.100.1"), &area(1), ms(900));
        assert_eq!(p.nearest(at(5), ip("198.51.100.1")), Some(&area(1)));
        // A near tie (area 2 at 19 ms against 20: under 10 % and under 2 ms) keeps area 1.
        for s in 6..12 {
            feed(&mut p, t0, s, "198.51.100.1", &[20, 19]);
        }
        assert_eq!(p.nearest(at(11), ip("198.51.100.1")), Some(&area(1)));
        // Area 1 really got slower: after a majority of samples, area 2 takes over.
        for s in 12..15 {
            feed(&mut p, t0, s, "198.51.100.1", &[45, 19]);
        }
        assert_eq!(p.nearest(at(14), ip("198.51.100.1")), Some(&area(2)));
    }

    #[test]
    fn an_area_that_is_down_is_skipped_for_the_next_alive_one() {
        let (t0, r) = (Instant::now(), ip("192.0.2.7"));
        let mut p = Proximity::new(ProximityConfig::default());
        (0..3).for_each(|s| feed(&mut p, t0, s, "192.0.2.7", &[40, 12, 80]));
        let now = t0 + Duration::from_secs(2);
        let all = |_: &AreaName| true;
        assert_eq!(p.nearest_alive(now, r, &all), Some(&area(2)));
        // Area 2 down: the next nearest that answers (area 1 at 40 ms, not area 3 at 80).
        let no_2 = |a: &AreaName| *a != area(2);
        assert_eq!(p.nearest_alive(now, r, &no_2), Some(&area(1)));
        // Only area 3 alive: it, however far; none alive: the paper's rule.
        let only_3 = |a: &AreaName| *a == area(3);
        assert_eq!(p.nearest_alive(now, r, &only_3), Some(&area(3)));
        let none = |_: &AreaName| false;
        assert_eq!(p.nearest_alive(now, r, &none), None);
        // The choice itself is kept: back up, area 2 is answered again.
        assert_eq!(p.nearest(now, r), Some(&area(2)));
        assert_eq!(p.nearest_alive(now, r, &all), Some(&area(2)));
    }

    #[test]
    fn samples_age_out_and_the_paper_rule_returns() {
        let t0 = Instant::now();
        let cfg = ProximityConfig::default();
        let max_age = cfg.max_age;
        let mut p = Proximity::new(cfg);
        for s in 0..3 {
            feed(&mut p, t0, s, "2001:db8:1:2::53", &[50, 10]);
        }
        // At max_age after the first sample all three still count; a moment later one
        // has aged out, two are too few.
        let later = t0 + max_age;
        assert_eq!(p.nearest(later, ip("2001:db8:1:ffff::1")), Some(&area(2)));
        assert_eq!(p.nearest(later + ms(1), ip("2001:db8:1:2::53")), None);
        assert_eq!(p.nearest(later, ip("2001:db8:2::1")), None, "another /48");
    }

    #[test]
    fn the_table_is_capped_and_the_least_recently_measured_prefix_goes() {
        let t0 = Instant::now();
        let mut p = Proximity::new(ProximityConfig {
            cap: 3,
            min_samples: 1,
            ..ProximityConfig::default()
        });
        for (s, r) in ["10.0.1.1", "10.0.2.1", "10.0.3.1"].iter().enumerate() {
            feed(&mut p, t0, s as u64, r, &[5]);
        }
        // 10.0.1.0/24 is measured again: 10.0.2.0/24 is now the oldest.
        feed(&mut p, t0, 3, "10.0.1.9", &[5]);
        feed(&mut p, t0, 4, "10.0.4.1", &[5]);
        let now = t0 + Duration::from_secs(4);
        assert_eq!(p.len(), 3);
        assert_eq!(p.nearest(now, ip("10.0.2.1")), None);
        for kept in ["10.0.1.1", "10.0.3.1", "10.0.4.1"] {
            assert_eq!(p.nearest(now, ip(kept)), Some(&area(1)), "{kept}");
        }
        // Many more prefixes: never above the cap.
        for i in 0..1000u64 {
            let r = format!("10.{}.{}.1", i / 256, i % 256);
            feed(&mut p, t0, 5 + i, &r, &[5]);
            assert!(p.len() <= 3);
        }
    }

    #[test]
    fn a_settled_answer_is_measured_only_to_refresh_it_a_thin_one_to_samples_kept() {
        let t0 = Instant::now();
        let cfg = ProximityConfig::default();
        let (interval, max_age) = (cfg.probe_interval, cfg.max_age);
        let mut p = Proximity::new(cfg);
        let at = |s: u64| t0 + Duration::from_secs(s);
        // 198.51.100.0/24: area 1 at 12 ms, area 2 at 45, area 3 at 75 (clear margins);
        // 203.0.113.0/24: area 1 at 20 ms, area 2 at 22 (a thin one: under twice 10 %).
        let (clear, thin) = (ip("198.51.100.53"), ip("203.0.113.53"));
        for round in 0..5u64 {
            let now = at(30 * round);
            for a in 1..=3 {
                let settled = round >= 3;
                assert_eq!(
                    p.wants_sample(now, clear, &area(a)),
                    !settled,
                    "{round} {a}"
                );
            }
            for a in 1..=2 {
                assert!(p.wants_sample(now, thin, &area(a)), "thin {round} {a}");
            }
            if round < 3 {
                feed(&mut p, t0, 30 * round, "198.51.100.53", &[12, 45, 75]);
            }
            feed(&mut p, t0, 30 * round, "203.0.113.53", &[20, 22]);
        }
        // The thin one: samples_kept (5) fresh, then no more until they age.
        assert!(!p.wants_sample(at(120), thin, &area(1)));
        // The settled one was measured three times (0, 30, 60 s) per area; the first
        // sample ages out at max_age: one probe interval before, it is measured again,
        // so its answer never lapses to the paper's rule.
        let refresh = t0 + max_age - interval;
        assert!(!p.wants_sample(refresh - ms(1), clear, &area(2)));
        assert!(p.wants_sample(refresh + ms(1), clear, &area(2)));
        assert_eq!(p.nearest(refresh + ms(1), clear), Some(&area(1)));
        // An area alone (nothing to compare with) is not settled: it keeps samples_kept.
        let lone = ip("192.0.2.53");
        for s in 0..4 {
            feed(&mut p, t0, s, "192.0.2.53", &[30]);
        }
        assert_eq!(p.nearest(at(3), lone), Some(&area(1)));
        assert!(p.wants_sample(at(3), lone, &area(1)));
        // A newcomer area with no samples always wants one.
        assert!(p.wants_sample(at(200), clear, &area(4)));
    }

    #[test]
    fn a_new_prefix_is_probed_at_the_learning_interval_until_min_samples() {
        let t0 = Instant::now();
        let cfg = ProximityConfig::default();
        let (learn, interval) = (cfg.learn_interval, cfg.probe_interval);
        let mut p = Proximity::new(cfg);
        let resolver = ip("192.0.2.53");
        // A resolver asking area 1 every 100 ms for 2 minutes, answering every probe
        // (20 ms later); area 1 alone, so the answer never settles.
        let mut probes = Vec::new();
        for i in 0..1200u32 {
            let now = t0 + ms(100) * i;
            if p.saw_query(now, resolver, &area(1)).is_some() {
                probes.push(now - t0);
                p.record(now + ms(20), resolver, &area(1), ms(20));
            }
        }
        // Three quick ones (min_samples), then one per probe_interval.
        let want = [
            Duration::ZERO,
            learn,
            learn * 2,
            learn * 2 + interval,
            learn * 2 + interval * 2,
            learn * 2 + interval * 3,
        ];
        assert_eq!(probes, want);
        assert_eq!(p.nearest(t0 + learn * 2 + ms(20), resolver), Some(&area(1)));
        // The quick interval is per area: another area that has not measured it yet
        // probes it at once, and an address that never answers is not probed again before
        // probe_interval, learning or not.
        let later = t0 + Duration::from_secs(200);
        assert!(p.saw_query(later, resolver, &area(2)).is_some());
        let forged = ip("198.51.100.250");
        assert!(p.saw_query(later, forged, &area(1)).is_some());
        p.unanswered(later, forged);
        for s in 1..30 {
            let at = later + Duration::from_secs(s);
            assert_eq!(p.saw_query(at, forged, &area(1)), None, "{s} s");
        }
        assert!(p.saw_query(later + interval, forged, &area(1)).is_some());
    }

    #[test]
    fn probes_are_rate_limited_per_prefix_and_in_all() {
        let t0 = Instant::now();
        // No probe is ever answered here: one interval while learning too (the learning
        // interval is tested above).
        let mut p = Proximity::new(ProximityConfig {
            probes_per_second: 10,
            learn_interval: ProximityConfig::default().probe_interval,
            ..ProximityConfig::default()
        });
        // One resolver flooding us: one probe per interval.
        let mut probes = 0;
        for i in 0..6000u64 {
            let now = t0 + ms(i * 10);
            probes += usize::from(p.saw_query(now, ip("203.0.113.9"), &area(1)).is_some());
        }
        assert_eq!(probes, 2, "60 s of queries, one probe per 30 s");
        // Forged sources across the space: the global budget holds (10/s, burst 10).
        let t1 = t0 + Duration::from_secs(100);
        let mut probes = 0;
        for i in 0..50_000u64 {
            let now = t1 + Duration::from_micros(i * 100);
            let src = IpAddr::V4((0x0a00_0000 | ((i as u32) << 8)).into());
            probes += usize::from(p.saw_query(now, src, &area(1)).is_some());
        }
        // 5 s of forged queries: at most the burst plus 10 a second.
        assert!(probes <= 10 + 50, "{probes} probes");
        assert!(probes >= 40, "{probes} probes: the budget is also spent");
        // Queries alone never create a learned entry.
        assert!(p.is_empty());
    }

    #[test]
    fn an_unanswered_probe_frees_its_prefix_but_not_its_address() {
        let t0 = Instant::now();
        // The real resolver is never measured here: one interval while learning too.
        let mut p = Proximity::new(ProximityConfig {
            learn_interval: ProximityConfig::default().probe_interval,
            ..ProximityConfig::default()
        });
        let (forged, real) = (ip("10.200.1.250"), ip("10.200.1.9"));
        for round in 0..100u32 {
            let at = t0 + Duration::from_secs(3) * round;
            let forged_probe = p.saw_query(at, forged, &area(1));
            // Once the real resolver's probe (1 ms after the forged one) is due again.
            assert_eq!(forged_probe.is_some(), round % 11 == 0, "round {round}");
            assert_eq!(p.saw_query(at, real, &area(1)), None, "the prefix is busy");
            if forged_probe.is_some() {
                p.unanswered(at, forged);
                assert_eq!(p.saw_query(at + ms(1), forged, &area(1)), None, "silent");
                assert_eq!(
                    p.saw_query(at + ms(1), real, &area(1)),
                    Some(Probe { target: real })
                );
            }
        }
        // Bookkeeping stays one entry per key.
        assert_eq!((p.probed.len(), p.probed_order.len()), (1, 1));
        assert_eq!((p.silent.len(), p.silent_order.len()), (1, 1));
    }
}
