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

/// How many leading bits `a` and `b` share (`None` across families).
fn common_bits(a: IpAddr, b: IpAddr) -> Option<u8> {
    let bits = match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) ^ u32::from(b)).leading_zeros(),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a) ^ u128::from(b)).leading_zeros(),
        _ => return None,
    };
    u8::try_from(bits).ok()
}

/// Steering's answer to one query with a client subnet: where `www.<site>` points, and the
/// SCOPE PREFIX-LENGTH the reply's ECS option carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick<'a> {
    /// The area zone to point at (`None`: the paper's §7.2 answer).
    pub target: Option<&'a Name>,
    /// Bits of the client's address the answer holds for (see the module doc).
    pub scope: u8,
}

/// One rule: queries from `source` are sent to `area_zone` (the nearest area's zone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SteerRule {
    /// Where the resolver's queries come from.
    pub source: SourcePrefix,
    /// The area zone whose `www` the site's CNAME points at, e.g. `area-2.example.com.`.
    pub area_zone: Name,
}

/// The source → nearest-area map of one site (the same on every area server).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Steering {
    rules: Vec<SteerRule>,
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
        Ok(Self { rules })
    }

    /// The rules, in the order given.
    pub fn rules(&self) -> &[SteerRule] {
        &self.rules
    }

    /// True when there is no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The area zone for a query from `source`: the longest matching prefix (the first
    /// given among equals), or `None` (answer as §7.2 says).
    pub fn target_for(&self, source: IpAddr) -> Option<&Name> {
        self.rules
            .iter()
            .filter(|r| r.source.contains(source))
            .fold(None::<&SteerRule>, |best, r| match best {
                Some(b) if b.source.len() >= r.source.len() => Some(b),
                _ => Some(r),
            })
            .map(|r| &r.area_zone)
    }

    /// The answer to a query from `resolver` carrying the client subnet `client` (RFC
    /// 7871), with its scope: the rules in the module doc.
    pub fn pick(&self, client: SourcePrefix, resolver: IpAddr) -> Pick<'_> {
        if client.is_empty() {
            return Pick {
                target: self.target_for(resolver),
                scope: 0,
            };
        }
        let matched = self
            .rules
            .iter()
            .filter(|r| r.source.len <= client.len && r.source.contains(client.addr))
            .fold(None::<&SteerRule>, |best, r| match best {
                Some(b) if b.source.len() >= r.source.len() => Some(b),
                _ => Some(r),
            });
        let answer = matched.map(|r| &r.area_zone);
        let mut scope = matched.map_or(0, |r| r.source.len);
        for r in &self.rules {
            if Some(&r.area_zone) == answer || r.source.len <= scope {
                continue;
            }
            // A rule with another answer, more specific than what decides for the client:
            // the cached prefix must stop one bit past what the client shares with it.
            let Some(shared) = common_bits(client.addr, r.source.addr) else {
                continue;
            };
            scope = scope.max(shared.saturating_add(1));
        }
        Pick {
            target: answer.or_else(|| self.target_for(resolver)),
            scope: scope.min(client.len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::answer::{respond, respond_with, EcsReply, QueryContext, Transport};
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
                transport: Transport::Udp,
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
            Transport::Udp,
        );
        for src in ["10.9.0.1", "192.0.2.1"] {
            let got = respond_with(
                &layout(),
                &state(),
                &ask("www.example.com."),
                &QueryContext {
                    transport: Transport::Udp,
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
                transport: Transport::Udp,
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
                Transport::Udp
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

    /// The invariant a resolver's cache relies on: every address inside
    /// *client / scope* gets the same answer from the table as the client did, except
    /// addresses the client's own prefix cannot tell apart (inside the client subnet and
    /// inside a rule longer than it).
    fn check_scope(s: &Steering, client: SourcePrefix, resolver: IpAddr) -> Result<(), String> {
        let pick = s.pick(client, resolver);
        let IpAddr::V4(a) = client.addr() else {
            return Err("v4 only".into());
        };
        let span = 32 - u32::from(pick.scope);
        let base = u32::from(a) & u32::MAX.checked_shl(span).unwrap_or(0);
        for i in 0..(1u64 << span) {
            let x = IpAddr::V4((base | i as u32).into());
            let truth = s.target_for(x).or_else(|| s.target_for(resolver));
            let ambiguous = client.contains(x)
                && s.rules()
                    .iter()
                    .any(|r| r.source.len() > client.len() && r.source.contains(x));
            if truth != pick.target && !ambiguous {
                return Err(format!(
                    "{client:?} scope /{} answers {:?}, but {x} gets {:?}",
                    pick.scope, pick.target, truth
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
        for case in 0..300 {
            // Rules and clients inside 10.0.0.0/20, prefixes /20../32: small enough to
            // check every address of the scope.
            let mut rand_prefix = |min: u64| {
                let len = (20 + next() % 13).max(min) as u8;
                let addr = 0x0a00_0000 | (next() as u32 & 0x0fff);
                SourcePrefix::new(IpAddr::V4(addr.into()), len).masked()
            };
            let rules: Vec<SteerRule> = (0..(1 + case % 6))
                .map(|i| SteerRule {
                    source: rand_prefix(20),
                    area_zone: fqdn(&format!("area-{}.example.com", i % 3)).unwrap(),
                })
                .collect();
            let client = rand_prefix(20);
            let s = Steering { rules };
            let resolver = ip("192.0.2.99");
            if let Err(e) = check_scope(&s, client, resolver) {
                panic!("case {case}: {e}; rules {:?}", s.rules());
            }
        }
    }
}
