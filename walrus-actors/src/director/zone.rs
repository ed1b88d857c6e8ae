//! The zone model of one area's name server (paper §7.2): what the area's server holds,
//! computed from the layout and the current answer.
//!
//! Layout: area *n*'s name server is authoritative for its own zone (`area-n.example.com`)
//! and for the site zone (`example.com`). In the site zone `www.example.com` is a CNAME to
//! `www.area-n.example.com`; the Director only ever changes the A/AAAA records of
//! `www.<area-zone>`. The site zone's NS rrset names every area's server, and every area
//! zone that lies inside the site zone is delegated from it (NS and glue), so any site
//! server refers a resolver to the right area server ([`ZoneContents`]). The embedded
//! server answers from this model ([`super::answer`]); `dns bind-config` writes the same
//! model as zone files ([`super::bind_config`]).

use super::vocabulary::DirectorError;
use crate::model::AreaAnswer;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// The TTL of `www.<area-zone>`: how long resolvers may keep an answer, so how gradual a
/// move between clusters is (paper §5). At least 1 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordTtl(u32);

impl RecordTtl {
    /// The default: 30 s.
    pub const DEFAULT: RecordTtl = RecordTtl(30);

    /// Seconds.
    pub fn secs(self) -> u32 {
        self.0
    }
}

impl Default for RecordTtl {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TryFrom<Duration> for RecordTtl {
    type Error = DirectorError;

    fn try_from(d: Duration) -> Result<Self, Self::Error> {
        let secs = d.as_secs();
        if secs < 1 || d.subsec_nanos() != 0 {
            return Err(DirectorError::BadTtl { ttl: d });
        }
        u32::try_from(secs)
            .ok()
            .filter(|s| *s <= i32::MAX as u32)
            .map(RecordTtl)
            .ok_or(DirectorError::BadTtl { ttl: d })
    }
}

/// The A/AAAA record set of `www.<area-zone>` with its TTL: what the Director wants a name
/// server to hold, and what it finds there. Sets, because a DNS rrset has no order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WwwRecords {
    /// IPv4 addresses (A records).
    pub v4: BTreeSet<Ipv4Addr>,
    /// IPv6 addresses (AAAA records).
    pub v6: BTreeSet<Ipv6Addr>,
    /// TTL of both rrsets, seconds. Meaningless (and compared as equal) when both are empty.
    pub ttl: u32,
}

impl WwwRecords {
    /// The records for one area's answer with the configured TTL. An empty answer is
    /// refused: it would make the site vanish for the area's clients, and an old answer
    /// (even to dead or overloaded servers) is better than none.
    pub fn from_answer(answer: &AreaAnswer, ttl: RecordTtl) -> Result<Self, DirectorError> {
        if answer.records.is_empty() {
            return Err(DirectorError::EmptyAnswer {
                cluster: answer.cluster.clone(),
            });
        }
        Ok(Self::from_addrs(answer.records.iter().copied(), ttl))
    }

    /// The records for a list of addresses.
    pub fn from_addrs(addrs: impl IntoIterator<Item = IpAddr>, ttl: RecordTtl) -> Self {
        let mut out = Self {
            ttl: ttl.secs(),
            ..Self::default()
        };
        for a in addrs {
            match a {
                IpAddr::V4(a) => out.v4.insert(a),
                IpAddr::V6(a) => out.v6.insert(a),
            };
        }
        out
    }

    /// True when there is no record at all.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Same records and, when there are any, the same TTL: the test for "the name server
    /// already holds this answer, send no update".
    pub fn same_as(&self, other: &WwwRecords) -> bool {
        self.v4 == other.v4 && self.v6 == other.v6 && (self.is_empty() || self.ttl == other.ttl)
    }
}

/// The names of one area's §7.2 layout, validated once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneLayout {
    /// The site zone, e.g. `example.com.`; `www.<site>` is what clients look up.
    pub site: Name,
    /// This area's own zone, e.g. `area-1.example.com.`; holds `www.<area_zone>`.
    pub area_zone: Name,
    /// The host name of this area's name server (SOA MNAME and NS of both zones), e.g.
    /// `ns.area-1.example.com.`.
    pub ns_name: Name,
    /// Addresses of `ns_name`, served as its A/AAAA when it lies in one of the two zones.
    pub ns_addrs: Vec<IpAddr>,
    /// TTL of the www records and of negative answers (SOA minimum).
    pub ttl: RecordTtl,
    /// TTL of the NS records and of the name server's own addresses. [`ZoneLayout::new`]
    /// sets it to `ttl`; [`ZoneLayout::with_ns_ttl`] raises it. The steering lab found that
    /// a low TTL here (like the www TTL) makes resolvers replace the parent's long-lived glue
    /// by our short-lived records, and BIND then fails with "loop detected" once they
    /// expire: give it hours.
    pub ns_ttl: RecordTtl,
    /// The other areas of the site: their zones and name servers. Every area server is
    /// authoritative for the site zone (§7.2), so the site zone's NS rrset lists all of
    /// them (a resolver that takes the NS rrset from the child must see every one), and an
    /// area zone inside the site zone (the paper's layout, `area-us.example.com` under
    /// `example.com`) is delegated from it with NS and glue: a resolver follows the CNAME
    /// to `www.area-us.example.com` by asking *any* site server, which must refer it to
    /// us's server rather than answer NXDOMAIN. Empty by default.
    pub other_areas: Vec<AreaServer>,
}

impl ZoneLayout {
    /// Builds the layout from names as an operator writes them (with or without the final
    /// dot). `ns_name` defaults to `ns.<area_zone>`.
    pub fn new(
        site: &str,
        area_zone: &str,
        ns_name: Option<&str>,
        ns_addrs: Vec<IpAddr>,
        ttl: RecordTtl,
    ) -> Result<Self, DirectorError> {
        let site = fqdn(site)?;
        let area_zone = fqdn(area_zone)?;
        if site == area_zone {
            return Err(DirectorError::BadName {
                name: area_zone.to_ascii(),
                reason: "the area zone must differ from the site zone".into(),
            });
        }
        let ns_name = match ns_name {
            Some(n) => fqdn(n)?,
            None => child("ns", &area_zone)?,
        };
        // The names derived later must exist (a name near the 255-octet limit would not
        // take another label): check once here so the getters cannot fail.
        for zone in [&site, &area_zone] {
            child("www", zone)?;
            child("hostmaster", zone)?;
        }
        Ok(Self {
            site,
            area_zone,
            ns_name,
            ns_addrs,
            ttl,
            ns_ttl: ttl,
            other_areas: Vec::new(),
        })
    }

    /// The same layout with NS records and name-server addresses served with `ns_ttl`.
    pub fn with_ns_ttl(mut self, ns_ttl: RecordTtl) -> Self {
        self.ns_ttl = ns_ttl;
        self
    }

    /// The same layout with the other areas of the site (ours, if listed, is skipped).
    pub fn with_other_areas(mut self, areas: impl IntoIterator<Item = AreaServer>) -> Self {
        for a in areas {
            if a.zone != self.area_zone && !self.other_areas.iter().any(|o| o.zone == a.zone) {
                self.other_areas.push(a);
            }
        }
        self
    }

    /// This area's own zone and name server, as [`AreaServer`].
    pub fn own_area(&self) -> AreaServer {
        AreaServer {
            zone: self.area_zone.clone(),
            ns_name: self.ns_name.clone(),
            ns_addrs: self.ns_addrs.clone(),
        }
    }

    /// Every area of the site, ours first: the site zone's name servers.
    pub fn all_areas(&self) -> impl Iterator<Item = AreaServer> + '_ {
        std::iter::once(self.own_area()).chain(self.other_areas.iter().cloned())
    }

    /// `www.<site>`: the name clients resolve.
    pub fn site_www(&self) -> Name {
        // `new` checked that this label fits; the fallback is never taken for a layout
        // built by `new`.
        child("www", &self.site).unwrap_or_else(|_| self.site.clone())
    }

    /// `www.<area_zone>`: the only name the Director updates.
    pub fn area_www(&self) -> Name {
        child("www", &self.area_zone).unwrap_or_else(|_| self.area_zone.clone())
    }

    /// The SOA of `zone` with `serial`. The SOA minimum (negative-caching TTL, RFC 2308)
    /// is the record TTL so that a NODATA does not outlive a real answer.
    pub fn soa(&self, zone: &Name, serial: u32) -> Record {
        let ttl = self.ttl.secs();
        let rname = child("hostmaster", zone).unwrap_or_else(|_| zone.clone());
        Record::from_rdata(
            zone.clone(),
            ttl,
            RData::SOA(SOA::new(
                self.ns_name.clone(),
                rname,
                serial,
                3600,
                600,
                86400,
                ttl,
            )),
        )
    }
}

/// One area as the site zone sees it: its zone and the name server it is delegated to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AreaServer {
    /// The area's zone, e.g. `area-us.example.com.`.
    pub zone: Name,
    /// Its name server's host name, e.g. `ns.area-us.example.com.`.
    pub ns_name: Name,
    /// The name server's addresses: the glue when `ns_name` lies inside the site zone.
    pub ns_addrs: Vec<IpAddr>,
}

impl AreaServer {
    /// From names as an operator writes them; `ns_name` defaults to `ns.<zone>`.
    pub fn new(
        zone: &str,
        ns_name: Option<&str>,
        ns_addrs: Vec<IpAddr>,
    ) -> Result<Self, DirectorError> {
        let zone = fqdn(zone)?;
        let ns_name = match ns_name {
            Some(n) => fqdn(n)?,
            None => child("ns", &zone)?,
        };
        Ok(Self {
            zone,
            ns_name,
            ns_addrs,
        })
    }
}

/// Parses an operator-written name as an absolute name.
pub fn fqdn(s: &str) -> Result<Name, DirectorError> {
    let mut n = Name::from_ascii(s).map_err(|e| DirectorError::BadName {
        name: s.to_owned(),
        reason: e.to_string(),
    })?;
    n.set_fqdn(true);
    if n.is_root() {
        return Err(DirectorError::BadName {
            name: s.to_owned(),
            reason: "the root is not a zone we serve".into(),
        });
    }
    Ok(n.to_lowercase())
}

pub(super) fn child(label: &str, parent: &Name) -> Result<Name, DirectorError> {
    parent
        .prepend_label(label)
        .map_err(|e| DirectorError::BadName {
            name: format!("{label}.{parent}"),
            reason: e.to_string(),
        })
}

/// What the embedded server holds right now and persists: the www records and the SOA
/// serial of the area zone (the site zone's serial is constant: it never changes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneState {
    /// SOA serial of the area zone; grows by one per applied change.
    pub serial: u32,
    /// The current answer.
    pub www: WwwRecords,
    /// The epoch of the decision that answer came from (0: none yet, or written
    /// unfenced): the fence against older decisions (see `director::Fence`).
    #[serde(default)]
    pub epoch: u64,
}

impl Default for ZoneState {
    fn default() -> Self {
        Self {
            serial: 1,
            www: WwwRecords::default(),
            epoch: 0,
        }
    }
}

/// A delegation in the site zone (RFC 1034 §4.2.1): an area zone inside it, served by that
/// area's own name server. Names at or below it are answered with a referral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The child zone's apex, e.g. `area-us.example.com.`.
    pub name: Name,
    /// The child's NS rrset as the parent holds it.
    pub ns: Vec<Record>,
}

/// What one of our two zones holds, computed from the layout and the current answer: the
/// authoritative records, the delegations, and the glue (addresses of delegated name
/// servers, below a cut, so not authoritative). One model for the embedded server's
/// answers ([`super::answer`]) and the zone files `dns bind-config` writes, so the two
/// agree by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneContents {
    /// The zone's apex.
    pub apex: Name,
    /// Authoritative records: SOA and NS at the apex, then the zone's data.
    pub records: Vec<Record>,
    /// Delegations (the site zone's nested area zones; none in an area zone).
    pub cuts: Vec<Cut>,
    /// Addresses of delegated name servers that lie inside this zone.
    pub glue: Vec<Record>,
}

impl ZoneContents {
    /// The site zone: SOA (serial 1: it never changes), every area's name server in the NS
    /// rrset, a delegation with glue for every area zone inside it (ours too, as in a zone
    /// file: a server that also serves the child answers from the child), and
    /// `www.<site>` as a CNAME to `www.<area zone>` — ours, or `site_target`'s when source
    /// steering picked another area.
    pub fn site(layout: &ZoneLayout, site_target: Option<&Name>) -> Self {
        let site = &layout.site;
        let ns_ttl = layout.ns_ttl.secs();
        let areas: Vec<AreaServer> = layout.all_areas().collect();
        let cuts: Vec<Cut> = areas
            .iter()
            .filter(|a| a.zone != *site && site.zone_of(&a.zone))
            .map(|a| Cut {
                name: a.zone.clone(),
                ns: vec![ns_record(&a.zone, ns_ttl, &a.ns_name)],
            })
            .collect();
        let below_cut = |n: &Name| cuts.iter().any(|c| c.name.zone_of(n));
        let mut records = vec![layout.soa(site, 1)];
        records.extend(areas.iter().map(|a| ns_record(site, ns_ttl, &a.ns_name)));
        let mut glue = Vec::new();
        for a in &areas {
            if !site.zone_of(&a.ns_name) {
                continue;
            }
            let addrs = a
                .ns_addrs
                .iter()
                .map(|ip| addr_record(&a.ns_name, ns_ttl, *ip));
            if below_cut(&a.ns_name) {
                glue.extend(addrs);
            } else {
                records.extend(addrs);
            }
        }
        let target = match site_target {
            Some(t) if t != &layout.area_zone => child("www", t).ok(),
            _ => None,
        }
        .unwrap_or_else(|| layout.area_www());
        records.push(Record::from_rdata(
            layout.site_www(),
            layout.ttl.secs(),
            RData::CNAME(CNAME(target)),
        ));
        dedup(&mut records);
        dedup(&mut glue);
        Self {
            apex: site.clone(),
            records,
            cuts,
            glue,
        }
    }

    /// This area's zone: SOA with the state's serial, our name server alone in the NS
    /// rrset (each area's answer differs, so only its own server may serve its zone), its
    /// addresses when its name lies inside, and the current www answer.
    pub fn area(layout: &ZoneLayout, state: &ZoneState) -> Self {
        let zone = &layout.area_zone;
        let ns_ttl = layout.ns_ttl.secs();
        let mut records = vec![
            layout.soa(zone, state.serial),
            ns_record(zone, ns_ttl, &layout.ns_name),
        ];
        if zone.zone_of(&layout.ns_name) {
            records.extend(
                layout
                    .ns_addrs
                    .iter()
                    .map(|ip| addr_record(&layout.ns_name, ns_ttl, *ip)),
            );
        }
        let www = layout.area_www();
        let ttl = state.www.ttl;
        records.extend(
            state
                .www
                .v4
                .iter()
                .map(|a| addr_record(&www, ttl, (*a).into())),
        );
        records.extend(
            state
                .www
                .v6
                .iter()
                .map(|a| addr_record(&www, ttl, (*a).into())),
        );
        dedup(&mut records);
        Self {
            apex: zone.clone(),
            records,
            cuts: Vec::new(),
            glue: Vec::new(),
        }
    }

    /// The zone's SOA record.
    pub fn soa(&self) -> Option<&Record> {
        self.records
            .iter()
            .find(|r| r.record_type() == RecordType::SOA)
    }

    /// The NS rrset at the apex.
    pub fn apex_ns(&self) -> impl Iterator<Item = &Record> {
        self.records
            .iter()
            .filter(|r| r.record_type() == RecordType::NS && r.name() == &self.apex)
    }

    /// The delegation that covers `name`, if any: `name` at or below a cut, except a DS
    /// query at the cut itself, which the parent answers (RFC 4035 §3.1.4.1).
    pub fn cut_for(&self, name: &Name, qtype: RecordType) -> Option<&Cut> {
        self.cuts
            .iter()
            .filter(|c| c.name.zone_of(name) && !(c.name == *name && qtype == RecordType::DS))
            .max_by_key(|c| c.name.num_labels())
    }

    /// Whether `name` exists in this zone (has records, or is an empty non-terminal above
    /// some record or delegation): the line between NODATA and NXDOMAIN.
    pub fn name_exists(&self, name: &Name) -> bool {
        self.records
            .iter()
            .map(Record::name)
            .chain(self.cuts.iter().map(|c| &c.name))
            .any(|n| name.zone_of(n))
    }
}

/// Which of our zones holds `name`: the most specific one that encloses it.
pub fn zone_of<'a>(layout: &'a ZoneLayout, name: &Name) -> Option<&'a Name> {
    [&layout.area_zone, &layout.site]
        .into_iter()
        .filter(|z| z.zone_of(name))
        .max_by_key(|z| z.num_labels())
}

fn ns_record(owner: &Name, ttl: u32, target: &Name) -> Record {
    Record::from_rdata(owner.clone(), ttl, RData::NS(NS(target.clone())))
}

/// An A or AAAA record.
pub(super) fn addr_record(name: &Name, ttl: u32, a: IpAddr) -> Record {
    match a {
        IpAddr::V4(a) => Record::from_rdata(name.clone(), ttl, RData::A(A(a))),
        IpAddr::V6(a) => Record::from_rdata(name.clone(), ttl, RData::AAAA(AAAA(a))),
    }
}

/// Drops repeated records (the same address configured twice), keeping the first.
fn dedup(records: &mut Vec<Record>) {
    let mut seen = Vec::with_capacity(records.len());
    records.retain(|r| {
        let key = (r.name().clone(), r.data().clone());
        if seen.contains(&key) {
            false
        } else {
            seen.push(key);
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ClusterName;

    #[test]
    fn names_too_long_for_the_layout_are_refused() {
        let long = format!("{}.example.com", vec!["a".repeat(60); 4].join("."));
        assert!(ZoneLayout::new(
            &long,
            "area-1.example.com",
            None,
            vec![],
            RecordTtl::DEFAULT
        )
        .is_err());
        assert!(ZoneLayout::new(
            "example.com",
            "example.com",
            None,
            vec![],
            RecordTtl::DEFAULT
        )
        .is_err());
    }

    #[test]
    fn ttl_below_one_second_is_refused() {
        assert!(RecordTtl::try_from(Duration::from_millis(500)).is_err());
        assert!(RecordTtl::try_from(Duration::ZERO).is_err());
        assert_eq!(
            RecordTtl::try_from(Duration::from_secs(1)).unwrap().secs(),
            1
        );
    }

    #[test]
    fn empty_answer_is_refused() {
        let a = AreaAnswer {
            cluster: ClusterName::from("c1"),
            records: vec![],
        };
        assert!(matches!(
            WwwRecords::from_answer(&a, RecordTtl::DEFAULT),
            Err(DirectorError::EmptyAnswer { .. })
        ));
    }

    #[test]
    fn same_as_ignores_order_and_ttl_of_empty_sets() {
        let a = WwwRecords::from_addrs(
            ["10.0.0.2", "10.0.0.1"].map(|s| s.parse().unwrap()),
            RecordTtl(30),
        );
        let b = WwwRecords::from_addrs(
            ["10.0.0.1", "10.0.0.2"].map(|s| s.parse().unwrap()),
            RecordTtl(30),
        );
        assert!(a.same_as(&b));
        let c = WwwRecords {
            ttl: 5,
            ..b.clone()
        };
        assert!(!a.same_as(&c), "a TTL change is a change");
        assert!(WwwRecords::default().same_as(&WwwRecords {
            ttl: 9,
            ..WwwRecords::default()
        }));
    }
}
