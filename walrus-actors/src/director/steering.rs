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
        match (self.addr, ip) {
            (IpAddr::V4(p), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(p) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(p), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(p) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
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
}

#[cfg(test)]
mod tests {
    use super::super::answer::{respond, respond_with, QueryContext, Transport};
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
}
