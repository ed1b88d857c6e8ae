//! Source steering: the site zone's answer chosen by where the query comes from.
//!
//! The DNS round-trip-times method (paper §5) relies on each resolver coming to prefer the
//! nearest area's name server for the site zone. Some resolvers never do: Unbound with its
//! defaults picks at random among all servers within 400 ms of the fastest (measured in
//! the steering lab, `docs/lab/`). Steering closes that gap on the server side: every area
//! server knows a map *source prefix → nearest area*, and when a resolver from a mapped
//! prefix asks any area server for `www.<site>`, the CNAME points at `www.<nearest area
//! zone>` instead of the answering server's own area zone. That name lives only on the
//! nearest area's server, so the resolver follows the CNAME there and gets the answer the
//! Controller gave the nearest area — whichever site-zone server it happened to ask.
//!
//! ```text
//!   resolver in region R ──(site zone, any area server)──► CNAME www.<zone of nearest(R)>
//!                        ──(area zone, only nearest(R))──► A/AAAA of the cluster assigned
//!                                                           to nearest(R) (paper §6.1)
//! ```
//!
//! Unmapped sources get the unchanged §7.2 answer (own area), so an empty map is exactly
//! the paper's behaviour. Pure logic, no I/O: [`Steering::target_for`] is called by the
//! embedded server with the query's source address.
//!
//! # Areas that are down
//! An area's zone has one name server, the area's own (the zone is delegated to it
//! alone), so a CNAME into the zone of an area whose server does not answer is a failed
//! lookup: with area 2's Director stalled for 12 s in the lab, PowerDNS clients of region 2
//! got 111 SERVFAILs (`docs/lab/reading.md`). The paper's rule never does this: whichever
//! server answers names its own area. So a steered answer names only areas that are
//! *alive* (a Director of the area in the `Steering` group's view, [`super::sharing`];
//! with learned steering off there is no such view and every area counts as alive):
//! - a learned answer whose area is down goes to the next nearest alive area of the same
//!   entry ([`super::proximity::Proximity::nearest_alive`]), else the paper's rule. The
//!   entry's choice and hysteresis are kept: the answer returns to the area once it is
//!   back in the view;
//! - a hand-written `[[dns.steering]]` rule whose area is down is skipped as if it did not
//!   match: the learned answer for the source, else the paper's rule. An operator who
//!   pinned a prefix to an area wants the site to keep resolving while that area is
//!   down, not a SERVFAIL for the prefix; the rule applies again once the area is back. A
//!   rule naming a zone that is no area's stays as written;
//! - with a client subnet whose rule is down, the fallback carries the client's whole
//!   source prefix as its scope (the narrowest a resolver caches for);
//! - each such answer counts in `answers_avoided_down` (`/status`,
//!   `walrus_steering_answers_avoided_down_total` in `/metrics`), and the sharing task logs
//!   each area that leaves or re-enters the view.
//!
//! It reacts as fast as the group's failure detector (about 0.5 s with the LAN timing) and
//! follows its partitions: each side steers only to areas on its side.
//!
//! # EDNS Client Subnet (RFC 7871)
//!
//! When the query carries a client subnet ([`super::ecs`]), [`Steering::pick`] steers by
//! the client's prefix instead of the resolver's address (a public resolver serves clients
//! everywhere), falls back to the resolver's address when no rule covers the client's
//! prefix, and computes the SCOPE PREFIX-LENGTH the reply carries. The resolver caches the
//! answer for every client inside *client address / scope*, so the scope must be long
//! enough that every address in that prefix gets the same answer from the table:
//!
//! - only rules that contain the whole client prefix can match (a /32 rule inside a /24
//!   client subnet says nothing about which of its clients asks);
//! - the scope is at least the matching rule's length (0 when none matches), and longer
//!   where a more specific rule with another answer lies inside that prefix: one bit past
//!   the bits the client shares with that rule, so the cached prefix excludes it;
//! - it is capped at the client's SOURCE PREFIX-LENGTH: a more specific rule *inside* the
//!   client subnet cannot be told apart with what the resolver sent (RFC 7871 §7.2.1 lets
//!   a scope exceed the source, but the resolver then caches for the source prefix anyway);
//! - an answer that does not depend on the client gets scope 0: no rule of the client's
//!   family, a source prefix of 0 (the client opted out; the resolver's address decides,
//!   as without ECS), or a name other than `www.<site>` ([`super::answer`] sees to that).

use super::zone::fqdn;
use super::DirectorError;
use hickory_proto::rr::Name;
use std::net::IpAddr;

/// An address prefix such as `10.255.0.0/24` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcePrefix {
    addr: IpAddr,
    len: u8,
}

impl SourcePrefix {
    /// The prefix of `addr` with `len` bits (cut to the family's length); bits of `addr`
    /// beyond `len` are ignored by every comparison.
    pub fn new(addr: IpAddr, len: u8) -> Self {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        Self {
            addr,
            len: len.min(max),
        }
    }

    /// The address as given.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The same prefix with the bits beyond its length cleared.
    pub fn masked(&self) -> Self {
        Self {
            addr: masked(self.addr, self.len),
            ..*self
        }
    }

    /// Parses `ADDR/LEN` (a bare address is a host prefix).
    pub fn parse(s: &str) -> Result<Self, DirectorError> {
        let bad = |reason: &str| DirectorError::BadName {
            name: s.to_owned(),
            reason: format!("not a source prefix: {reason}"),
        };
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| bad("bad address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            Some(l) => l.trim().parse::<u8>().map_err(|_| bad("bad length"))?,
            None => max,
        };
        if len > max {
            return Err(bad("length longer than the address"));
        }
        Ok(Self { addr, len })
    }

    /// The prefix length in bits.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// True for a zero-length prefix (matches every address of its family).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `ip` lies inside the prefix (families must match).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.addr.is_ipv4() == ip.is_ipv4() && masked(self.addr, self.len) == masked(ip, self.len)
    }
}

/// `addr` with the bits beyond the first `len` cleared.
fn masked(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

/// Who decided an answer: the operator's table, the learned table, or nobody (the paper's
/// §7.2 rule: the answering server's own area).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// A hand-written `[[dns.steering]]` rule (always consulted first).
    Override,
    /// The learned proximity table ([`super::learned`]).
    Learned,
    /// Neither knows the source: the paper's answer.
    Paper,
}

/// Steering's answer to one query: where `www.<site>` points, the SCOPE PREFIX-LENGTH the
/// reply's ECS option carries, and who decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick<'a> {
    /// The area zone to point at (`None`: the paper's §7.2 answer).
    pub target: Option<&'a Name>,
    /// Bits of the client's address the answer holds for (see the module doc).
    pub scope: u8,
    /// Which table decided.
    pub by: By,
    /// A rule or the learned table chose an area whose name server is down (not in the
    /// `Steering` group's view), and this answer names another (the module doc's
    /// "Areas that are down").
    pub avoided: bool,
}

/// The learned table as steering sees it (at one instant): the nearest area's zone for an
/// address's prefix, and how long that prefix is.
pub trait LearnedAreas {
    /// The zone of the area learned nearest to the prefix holding `ip` among the areas
    /// that are alive (the next nearest alive one when the chosen area is down), if known.
    fn nearest_zone(&self, ip: IpAddr) -> Option<&Name>;
    /// Whether the area learned nearest to `ip`'s prefix is down, so that
    /// [`LearnedAreas::nearest_zone`] named another or none (default: never).
    fn chosen_down(&self, _ip: IpAddr) -> bool {
        false
    }
    /// Whether the area whose zone is `zone` has a name server that answers; a zone of
    /// no known area counts as alive (default: every zone).
    fn zone_alive(&self, _zone: &Name) -> bool {
        true
    }
    /// The length of the prefix an entry holds for, in bits, for `ip`'s family (24 for
    /// IPv4 and 48 for IPv6 in [`super::proximity`]).
    fn prefix_len(&self, ip: IpAddr) -> u8;
}

/// One rule: queries from `source` are sent to `area_zone` (the nearest area's zone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SteerRule {
    /// Where the resolver's queries come from.
    pub source: SourcePrefix,
    /// The area zone whose `www` the site's CNAME points at, e.g. `area-2.example.com.`.
    pub area_zone: Name,
}

/// The source → nearest-area map of one site (the same on every area server), held in
/// one binary trie per address family: a lookup walks at most the address's bits, however
/// many rules there are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Steering {
    rules: Vec<SteerRule>,
    /// Boxed: settings that hold a `Steering` stay small.
    index: Box<Index>,
}

/// The rules' index: the answers and one trie per family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Index {
    /// Each distinct answer once; the trie refers to answers by their index here.
    zones: Vec<Name>,
    v4: Trie,
    v6: Trie,
}

/// A binary trie over address bits (IPv4 addresses sit in the top 32 of 128 bits).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Trie {
    /// `nodes[0]` is the root once a rule is in; child index 0 means "none".
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node {
    child: [u32; 2],
    /// The rule ending here (the first given among rules for the same prefix).
    rule: Option<u32>,
    /// Smallest and largest answer index of the rules in this subtree: one answer when
    /// equal, which is all the scope computation needs to know.
    answers: Option<(u32, u32)>,
}

/// `ip`'s bits, left-aligned in 128.
fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
        IpAddr::V6(a) => u128::from(a),
    }
}

fn bit(addr: u128, depth: u8) -> usize {
    usize::from((addr >> (127 - u32::from(depth))) & 1 == 1)
}

impl Trie {
    fn insert(&mut self, addr: u128, len: u8, rule: u32, answer: u32) {
        if self.nodes.is_empty() {
            self.nodes.push(Node::default());
        }
        let mut path = Vec::with_capacity(usize::from(len) + 1);
        let mut at = 0usize;
        path.push(at);
        for d in 0..len {
            let b = bit(addr, d);
            let next = self.nodes[at].child[b] as usize;
            at = if next == 0 {
                self.nodes.push(Node::default());
                // At most one node per rule bit: 129 × the rules, far below u32::MAX.
                let new = u32::try_from(self.nodes.len() - 1).unwrap_or(u32::MAX);
                self.nodes[at].child[b] = new;
                new as usize
            } else {
                next
            };
            path.push(at);
        }
        if self.nodes[at].rule.is_some() {
            return; // the first rule for a prefix wins
        }
        self.nodes[at].rule = Some(rule);
        for n in path {
            let a = &mut self.nodes[n].answers;
            *a = Some(a.map_or((answer, answer), |(lo, hi)| {
                (lo.min(answer), hi.max(answer))
            }));
        }
    }

    fn node(&self, i: u32) -> Option<&Node> {
        (i != 0).then(|| self.nodes.get(i as usize)).flatten()
    }

    /// The longest rule of at most `max_len` bits containing `addr`.
    fn longest(&self, addr: u128, max_len: u8) -> Option<(u8, u32)> {
        let mut node = self.nodes.first()?;
        let mut best = None;
        let mut depth = 0u8;
        loop {
            if let Some(r) = node.rule {
                best = Some((depth, r));
            }
            if depth >= max_len {
                return best;
            }
            match self.node(node.child[bit(addr, depth)]) {
                Some(n) => node = n,
                None => return best,
            }
            depth += 1;
        }
    }

    /// The scope for a client `addr/len` answered `ours` with a scope of at least `scope`:
    /// one bit past the bits the client shares with any rule giving another answer, capped
    /// at `len` (the module doc's rules). A rule sharing exactly `d` bits with the client
    /// lies in the subtree that branches off the client's path at depth `d`.
    fn narrow(&self, addr: u128, len: u8, mut scope: u8, ours: Option<u32>) -> u8 {
        let differs = |n: &Node| {
            n.answers
                .is_some_and(|(lo, hi)| !(lo == hi && Some(lo) == ours))
        };
        let Some(mut node) = self.nodes.first() else {
            return scope.min(len);
        };
        for d in 0..len {
            let b = bit(addr, d);
            if d + 1 > scope && self.node(node.child[1 - b]).is_some_and(differs) {
                scope = d + 1;
            }
            match self.node(node.child[b]) {
                Some(n) => node = n,
                None => return scope.min(len),
            }
        }
        // Rules inside the client's prefix with another answer: the client cannot be told
        // apart further, the scope is the whole source prefix.
        if node
            .child
            .iter()
            .any(|c| self.node(*c).is_some_and(differs))
        {
            scope = len;
        }
        scope.min(len)
    }
}

impl Steering {
    /// No rules: every query gets the paper's §7.2 answer.
    pub fn none() -> Self {
        Self::default()
    }

    /// Builds the map from operator-written pairs (`"10.1.0.0/16"`, `"area-1.example.com"`).
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, DirectorError> {
        let mut rules = Vec::new();
        for (src, zone) in pairs {
            rules.push(SteerRule {
                source: SourcePrefix::parse(src)?,
                area_zone: fqdn(zone)?,
            });
        }
        Ok(Self::from_rules(rules))
    }

    /// Builds the map from rules (the first given wins among rules for one prefix).
    pub fn from_rules(rules: Vec<SteerRule>) -> Self {
        let mut s = Self {
            rules,
            ..Self::default()
        };
        let ix = &mut s.index;
        for (i, r) in s.rules.iter().enumerate() {
            let answer = match ix.zones.iter().position(|z| *z == r.area_zone) {
                Some(a) => a,
                None => {
                    ix.zones.push(r.area_zone.clone());
                    ix.zones.len() - 1
                }
            };
            let trie = if r.source.addr.is_ipv4() {
                &mut ix.v4
            } else {
                &mut ix.v6
            };
            // Rule and answer counts are bounded by the configuration file's size.
            let (Ok(i), Ok(answer)) = (u32::try_from(i), u32::try_from(answer)) else {
                break;
            };
            trie.insert(bits(r.source.addr), r.source.len, i, answer);
        }
        s
    }

    /// The rules, in the order given.
    pub fn rules(&self) -> &[SteerRule] {
        &self.rules
    }

    /// True when there is no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn trie(&self, ip: IpAddr) -> &Trie {
        if ip.is_ipv4() {
            &self.index.v4
        } else {
            &self.index.v6
        }
    }

    fn rule(&self, i: u32) -> Option<&SteerRule> {
        self.rules.get(i as usize)
    }

    fn answer_index(&self, zone: &Name) -> Option<u32> {
        self.index
            .zones
            .iter()
            .position(|z| z == zone)
            .and_then(|i| u32::try_from(i).ok())
    }

    /// The area zone for a query from `source` by the hand-written rules alone: the longest
    /// matching prefix (the first given among equals), or `None` (answer as §7.2 says).
    pub fn target_for(&self, source: IpAddr) -> Option<&Name> {
        self.trie(source)
            .longest(bits(source), 128)
            .and_then(|(_, r)| self.rule(r))
            .map(|r| &r.area_zone)
    }

    /// The answer to a query from `resolver` without a client subnet: a rule, else the
    /// learned table, else the paper's rule (scope 0: there is no option to carry one). A
    /// rule or learned area that is down is skipped (the module doc's "Areas that are
    /// down").
    pub fn answer_for<'a>(
        &'a self,
        resolver: IpAddr,
        learned: Option<&'a dyn LearnedAreas>,
    ) -> Pick<'a> {
        let mut rule_down = false;
        if let Some(t) = self.target_for(resolver) {
            if learned.is_none_or(|l| l.zone_alive(t)) {
                return Pick {
                    target: Some(t),
                    scope: 0,
                    by: By::Override,
                    avoided: false,
                };
            }
            rule_down = true;
        }
        let mut pick = self.learned_or_paper(resolver, learned);
        pick.avoided |= rule_down;
        pick
    }

    /// The learned table's answer for `ip`'s prefix, else the paper's rule.
    fn learned_or_paper<'a>(
        &'a self,
        ip: IpAddr,
        learned: Option<&'a dyn LearnedAreas>,
    ) -> Pick<'a> {
        let avoided = learned.is_some_and(|l| l.chosen_down(ip));
        let target = learned.and_then(|l| l.nearest_zone(ip));
        Pick {
            target,
            scope: 0,
            by: if target.is_some() {
                By::Learned
            } else {
                By::Paper
            },
            avoided,
        }
    }

    /// The answer to a query from `resolver` carrying the client subnet `client` (RFC
    /// 7871), by the hand-written rules alone, with its scope: the rules in the module doc.
    pub fn pick(&self, client: SourcePrefix, resolver: IpAddr) -> Pick<'_> {
        self.pick_with(client, resolver, None)
    }

    /// Like [`Steering::pick`], with the learned table after the rules: a rule containing
    /// the client prefix, else the learned entry of the client's prefix (when the client
    /// prefix is at least as long as an entry's), else the resolver's answer
    /// ([`Steering::answer_for`]). With a learned table, an answer not from a rule holds
    /// for no more than one learned prefix: the scope is at least the entry's length
    /// (capped at the source), since the next prefix may be learned nearer another area.
    pub fn pick_with<'a>(
        &'a self,
        client: SourcePrefix,
        resolver: IpAddr,
        learned: Option<&'a dyn LearnedAreas>,
    ) -> Pick<'a> {
        if client.is_empty() {
            return self.answer_for(resolver, learned);
        }
        let trie = self.trie(client.addr);
        let addr = bits(client.addr);
        let matched = trie
            .longest(addr, client.len)
            .and_then(|(len, r)| Some((len, self.rule(r)?)));
        let (mut pick, floor, ours) = match matched {
            Some((len, r)) if learned.is_none_or(|l| l.zone_alive(&r.area_zone)) => (
                Pick {
                    target: Some(&r.area_zone),
                    scope: 0,
                    by: By::Override,
                    avoided: false,
                },
                len,
                self.answer_index(&r.area_zone),
            ),
            Some(_) => {
                // The client's rule names an area that is down: the learned or the
                // paper's answer, for this client subnet alone (the whole source
                // prefix: which addresses near it get the same fallback is not worked
                // out, and the answer lasts only while the area is down).
                let own = self.learned_or_paper(client.addr, learned);
                let mut pick = if own.target.is_some() {
                    own
                } else {
                    self.answer_for(resolver, learned)
                };
                pick.avoided = true;
                pick.scope = client.len;
                return pick;
            }
            None => {
                let entry = learned.map_or(0, |l| l.prefix_len(client.addr));
                let own = learned
                    .filter(|_| client.len >= entry)
                    .map(|_| self.learned_or_paper(client.addr, learned));
                match own {
                    Some(
                        p @ Pick {
                            target: Some(t), ..
                        },
                    ) => (p, entry, self.answer_index(t)),
                    // No rule and no entry covers the client: every rule differs from the
                    // fallback (the resolver's answer is not the client's).
                    _ => {
                        let mut p = self.answer_for(resolver, learned);
                        p.avoided |= own.is_some_and(|o| o.avoided);
                        (p, entry, None)
                    }
                }
            }
        };
        pick.scope = trie.narrow(addr, client.len, floor, ours);
        pick
    }
}

#[cfg(test)]
mod tests {
    use super::super::answer::{respond, respond_with, EcsReply, QueryContext, QueryTransport};
    use super::super::zone::{AreaServer, RecordTtl, ZoneLayout, ZoneState};
    use super::*;
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{RData, RecordType};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_match_by_bits() {
        let p = SourcePrefix::parse("10.255.0.0/24").unwrap();
        assert!(p.contains(ip("10.255.0.101")));
        assert!(!p.contains(ip("10.255.1.1")));
        assert!(!p.contains(ip("::1")));
        let any = SourcePrefix::parse("0.0.0.0/0").unwrap();
        assert!(any.is_empty() && any.contains(ip("192.0.2.1")));
        let host = SourcePrefix::parse("2001:db8::1").unwrap();
        assert_eq!(host.len(), 128);
        assert!(host.contains(ip("2001:db8::1")) && !host.contains(ip("2001:db8::2")));
        assert!(SourcePrefix::parse("2001:db8::/33")
            .unwrap()
            .contains(ip("2001:db8:7fff::1")));
        for bad in ["10.0.0.0/33", "10.0.0/8", "x/1", "10.0.0.0/-1"] {
            assert!(SourcePrefix::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let s = Steering::from_pairs([
            ("10.0.0.0/8", "area-1.example.com"),
            ("10.2.0.0/16", "area-2.example.com."),
        ])
        .unwrap();
        assert_eq!(
            s.target_for(ip("10.2.3.4")).unwrap().to_ascii(),
            "area-2.example.com."
        );
        assert_eq!(
            s.target_for(ip("10.3.3.4")).unwrap().to_ascii(),
            "area-1.example.com."
        );
        assert_eq!(s.target_for(ip("192.0.2.1")), None);
        assert!(Steering::none().target_for(ip("10.2.3.4")).is_none());
    }

    fn layout() -> ZoneLayout {
        ZoneLayout::new(
            "example.com",
            "area-1.example.com",
            None,
            vec![ip("192.0.2.53")],
            RecordTtl::DEFAULT,
        )
        .unwrap()
        .with_other_areas([AreaServer::new(
            "area-2.example.com",
            None,
            vec![ip("192.0.2.54")],
        )
        .unwrap()])
    }

    fn ask(name: &str) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(7);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    fn state() -> ZoneState {
        ZoneState {
            serial: 3,
            epoch: 0,
            www: super::super::zone::WwwRecords::from_addrs([ip("10.0.0.1")], RecordTtl::DEFAULT),
        }
    }

    #[test]
    fn steered_answer_is_only_the_cname_to_the_nearest_area() {
        let s = Steering::from_pairs([("10.9.0.0/16", "area-2.example.com")]).unwrap();
        let target = s.target_for(ip("10.9.1.1"));
        let bytes = respond_with(
            &layout(),
            &state(),
            &ask("www.example.com."),
            &QueryContext {
                transport: QueryTransport::Udp,
                site_target: target,
                rotation: 0,
                ecs: EcsReply::Absent,
            },
        )
        .unwrap();
        let r = Message::from_vec(&bytes).unwrap();
        assert!(r.authoritative());
        assert_eq!(r.answers().len(), 1, "the other area's zone is not ours");
        // ... but it is delegated from the site zone: the referral comes along.
        assert_eq!(r.name_servers().len(), 1);
        assert_eq!(r.name_servers()[0].record_type(), RecordType::NS);
        assert_eq!(r.additionals().len(), 1, "glue for ns.area-2.example.com");
        match r.answers()[0].data() {
            RData::CNAME(c) => assert_eq!(c.0.to_ascii(), "www.area-2.example.com."),
            other => panic!("not a CNAME: {other:?}"),
        }
    }

    #[test]
    fn unmapped_or_own_area_sources_get_the_paper_answer() {
        let s = Steering::from_pairs([("10.9.0.0/16", "area-1.example.com")]).unwrap();
        let plain = respond(
            &layout(),
            &state(),
            &ask("www.example.com."),
            QueryTransport::Udp,
        );
        for src in ["10.9.0.1", "192.0.2.1"] {
            let got = respond_with(
                &layout(),
                &state(),
                &ask("www.example.com."),
                &QueryContext {
                    transport: QueryTransport::Udp,
                    site_target: s.target_for(ip(src)),
                    rotation: 0,
                    ecs: EcsReply::Absent,
                },
            );
            assert_eq!(got, plain, "{src}");
        }
        // Names other than www.<site> are never steered.
        let got = respond_with(
            &layout(),
            &state(),
            &ask("www.area-1.example.com."),
            &QueryContext {
                transport: QueryTransport::Udp,
                site_target: Some(&fqdn("area-2.example.com").unwrap()),
                rotation: 0,
                ecs: EcsReply::Absent,
            },
        );
        assert_eq!(
            got,
            respond(
                &layout(),
                &state(),
                &ask("www.area-1.example.com."),
                QueryTransport::Udp
            )
        );
    }

    /// Checks picks against a table. `rules`: `PREFIX=AREA` words; `cases`: `CLIENT=AREA/SCOPE`
    /// words (`-` for no area); the resolver is 192.0.2.99.
    fn expect_picks(rules: &str, cases: &str) {
        let zone = |n: &str| format!("area-{n}.example.com.");
        let pairs: Vec<(&str, String)> = rules
            .split_whitespace()
            .map(|w| w.split_once('=').unwrap())
            .map(|(p, n)| (p, zone(n)))
            .collect();
        let s = Steering::from_pairs(pairs.iter().map(|(p, z)| (*p, z.as_str()))).unwrap();
        for case in cases.split_whitespace() {
            let (client, want) = case.split_once('=').unwrap();
            let (area, scope) = want.split_once('/').unwrap();
            let want = (
                Some(area).filter(|a| *a != "-").map(zone),
                scope.parse().unwrap(),
            );
            let p = s.pick(SourcePrefix::parse(client).unwrap(), ip("192.0.2.99"));
            let got = (p.target.map(|n| n.to_ascii()), p.scope);
            assert_eq!(got, want, "{case} with {rules}");
        }
    }

    #[test]
    fn scope_is_the_matching_rule_when_nothing_more_specific_differs() {
        // The last: a /12 client inside no rule's reach gets the source's /12.
        expect_picks(
            "10.1.0.0/16=1 10.2.0.0/16=2",
            "10.1.7.0/24=1/16 10.2.7.9=2/16 10.1.0.0/12=-/12",
        );
    }

    #[test]
    fn a_more_specific_rule_with_another_answer_narrows_the_scope() {
        // 10.2.4.0 shares 21 bits with 10.2.3.0 (…00000100 vs …00000011): /22; 10.200.0.0
        // shares 8: /9; the /16 with the /8's answer narrows nothing. A client subnet
        // wider than the /24 rule inside it cannot be told apart: the covering /8
        // answers, the scope capped at the source (/20).
        expect_picks(
            "10.0.0.0/8=1 10.2.3.0/24=2 10.128.0.0/16=1",
            "10.2.4.0/24=1/22 10.200.0.0/16=1/9 10.2.3.77=2/24 10.2.0.0/20=1/20",
        );
    }

    #[test]
    fn unmapped_clients_fall_back_to_the_resolver_with_a_scope_that_avoids_every_rule() {
        // 10.8.0.0 shares 15 bits with 10.9.0.0: /16, answered by the resolver's rule
        // (area 3). An IPv6 client with IPv4-only rules, and a source of 0 (the client
        // opted out): the answer does not depend on the client, scope 0.
        expect_picks(
            "10.9.0.0/16=2 192.0.2.0/24=3",
            "10.8.1.0/24=3/16 2001:db8::/56=3/0 10.9.0.0/0=3/0 0.0.0.0/0=3/0",
        );
        // No rules at all: the paper's answer, scope 0.
        expect_picks("", "10.9.1.0/24=-/0");
    }

    /// A learned table for tests: /24 entries (IPv4 only).
    struct Table(std::collections::HashMap<u32, Name>);

    impl LearnedAreas for Table {
        fn nearest_zone(&self, ip: IpAddr) -> Option<&Name> {
            match ip {
                IpAddr::V4(a) => self.0.get(&(u32::from(a) & 0xffff_ff00)),
                IpAddr::V6(_) => None,
            }
        }
        fn prefix_len(&self, ip: IpAddr) -> u8 {
            if ip.is_ipv4() {
                24
            } else {
                48
            }
        }
    }

    /// The truth the trie must agree with, by scanning every rule: the longest rule
    /// containing `x` (the first given among equals).
    fn linear(s: &Steering, x: IpAddr) -> Option<&Name> {
        s.rules()
            .iter()
            .filter(|r| r.source.contains(x))
            .fold(None::<&SteerRule>, |best, r| match best {
                Some(b) if b.source.len() >= r.source.len() => Some(b),
                _ => Some(r),
            })
            .map(|r| &r.area_zone)
    }

    /// The invariant a resolver's cache relies on: every address inside
    /// *client / scope* gets the same answer from the tables as the client did, except
    /// addresses the client's own prefix cannot tell apart (inside the client subnet and
    /// inside a rule or learned entry longer than it).
    fn check_scope(
        s: &Steering,
        learned: Option<&Table>,
        client: SourcePrefix,
        resolver: IpAddr,
    ) -> Result<(), String> {
        let view = learned.map(|t| t as &dyn LearnedAreas);
        let pick = s.pick_with(client, resolver, view);
        let IpAddr::V4(a) = client.addr() else {
            return Err("v4 only".into());
        };
        let by_table = |x: IpAddr| linear(s, x).or_else(|| view.and_then(|l| l.nearest_zone(x)));
        let span = 32 - u32::from(pick.scope);
        let base = u32::from(a) & u32::MAX.checked_shl(span).unwrap_or(0);
        for i in 0..(1u64 << span) {
            let x = IpAddr::V4((base | i as u32).into());
            let truth = by_table(x).or_else(|| by_table(resolver));
            let ambiguous = client.contains(x)
                && (s
                    .rules()
                    .iter()
                    .any(|r| r.source.len() > client.len() && r.source.contains(x))
                    || (learned.is_some() && client.len() < 24));
            if truth != pick.target && !ambiguous {
                return Err(format!(
                    "{client:?} scope /{} answers {:?} ({:?}), but {x} gets {:?}",
                    pick.scope, pick.target, pick.by, truth
                ));
            }
        }
        Ok(())
    }

    #[test]
    fn random_tables_never_get_a_scope_wider_than_their_answer() {
        // A fixed seed: replayed exactly.
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0x5eed_0021);
        let mut next = move || rand::Rng::random::<u64>(&mut rng);
        let zone = |i: u64| fqdn(&format!("area-{}.example.com", i % 3)).unwrap();
        for case in 0..600 {
            // Rules, learned entries and clients inside 10.0.0.0/20, prefixes /20../32:
            // small enough to check every address of the scope.
            let mut rand_prefix = |min: u64| {
                let len = (20 + next() % 13).max(min) as u8;
                let addr = 0x0a00_0000 | (next() as u32 & 0x0fff);
                SourcePrefix::new(IpAddr::V4(addr.into()), len).masked()
            };
            let rules: Vec<SteerRule> = (0..(1 + case % 6))
                .map(|i| SteerRule {
                    source: rand_prefix(20),
                    area_zone: zone(i),
                })
                .collect();
            let client = rand_prefix(20);
            // Every other case with a learned table of a few /24s (the resolver's too).
            let learned = (case % 2 == 1).then(|| {
                let mut t: std::collections::HashMap<u32, Name> = (0..(case % 5))
                    .map(|i| {
                        (
                            0x0a00_0000 | ((i as u32 * 5 + case as u32) % 16) << 8,
                            zone(i + 1),
                        )
                    })
                    .collect();
                if case % 4 == 1 {
                    t.insert(0xc000_0200, zone(2));
                }
                Table(t)
            });
            let s = Steering::from_rules(rules);
            let resolver = ip("192.0.2.99");
            for probe in [client.addr(), resolver] {
                assert_eq!(s.target_for(probe), linear(&s, probe), "case {case}");
            }
            if let Err(e) = check_scope(&s, learned.as_ref(), client, resolver) {
                panic!("case {case}: {e}; rules {:?}", s.rules());
            }
        }
    }

    #[test]
    fn rules_come_first_then_learned_entries_then_the_paper() {
        let s = Steering::from_pairs([("10.1.0.0/16", "area-1.example.com")]).unwrap();
        let z2 = fqdn("area-2.example.com").unwrap();
        let learned = Table([(0x0a01_0200, z2.clone()), (0x0a02_0200, z2.clone())].into());
        let l = Some(&learned as &dyn LearnedAreas);
        // The rule wins over a learned entry inside it.
        let p = s.answer_for(ip("10.1.2.3"), l);
        assert_eq!(
            (p.target.map(|n| n.to_ascii()), p.by),
            (Some("area-1.example.com.".into()), By::Override)
        );
        let p = s.answer_for(ip("10.2.2.3"), l);
        assert_eq!((p.target, p.by), (Some(&z2), By::Learned));
        let p = s.answer_for(ip("10.3.2.3"), l);
        assert_eq!((p.target, p.by), (None, By::Paper));
        // ECS: the client's learned /24 decides, scope /24; a /16 client cannot use a /24
        // entry: the resolver's answer, scope capped at the source.
        let client = |c: &str| SourcePrefix::parse(c).unwrap();
        let p = s.pick_with(client("10.2.2.0/24"), ip("10.3.0.1"), l);
        assert_eq!((p.target, p.scope, p.by), (Some(&z2), 24, By::Learned));
        let p = s.pick_with(client("10.2.0.0/16"), ip("10.2.2.1"), l);
        assert_eq!((p.target, p.scope, p.by), (Some(&z2), 16, By::Learned));
        let p = s.pick_with(client("10.4.4.0/24"), ip("10.3.0.1"), l);
        assert_eq!((p.target, p.scope, p.by), (None, 24, By::Paper));
    }
}
