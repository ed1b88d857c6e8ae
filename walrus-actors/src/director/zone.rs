//! The zone model of one area's name server (paper §7.2) and the authoritative answer
//! logic of the embedded server.
//!
//! Layout: area *n*'s name server is authoritative for its own zone (`area-n.example.com`)
//! and for the site zone (`example.com`). In the site zone `www.example.com` is a CNAME to
//! `www.area-n.example.com`; the Director only ever changes the A/AAAA records of
//! `www.<area-zone>`. Both zones have an SOA and an NS record naming this server.
//!
//! [`respond`] is sans-IO: request bytes in, response bytes out, for UDP (with the TC bit
//! when the answer does not fit the client's datagram size) or TCP. The embedded server's
//! sockets are a thin shell around it.

use super::DirectorError;
use crate::model::AreaAnswer;
use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
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
    /// The other areas' name servers, listed beside ours in the site zone's NS rrset: every
    /// area server is authoritative for the site zone (§7.2), and a resolver that takes the
    /// NS rrset from the child (not the parent's delegation) must still see all of them, or
    /// it keeps asking only the first server it met. Empty by default.
    pub site_servers: Vec<Name>,
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
            site_servers: Vec::new(),
        })
    }

    /// The same layout with NS records and name-server addresses served with `ns_ttl`.
    pub fn with_ns_ttl(mut self, ns_ttl: RecordTtl) -> Self {
        self.ns_ttl = ns_ttl;
        self
    }

    /// The same layout with the other areas' name servers (host names as an operator writes
    /// them) added to the site zone's NS rrset.
    pub fn with_site_servers(mut self, names: &[&str]) -> Result<Self, DirectorError> {
        for n in names {
            let n = fqdn(n)?;
            if n != self.ns_name && !self.site_servers.contains(&n) {
                self.site_servers.push(n);
            }
        }
        Ok(self)
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

fn child(label: &str, parent: &Name) -> Result<Name, DirectorError> {
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
}

impl Default for ZoneState {
    fn default() -> Self {
        Self {
            serial: 1,
            www: WwwRecords::default(),
        }
    }
}

/// The transport a request came over: UDP answers are cut to the client's datagram size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A datagram: at most 512 bytes, or the EDNS size the client advertised (capped at
    /// [`EDNS_MAX_PAYLOAD`]); larger answers are replaced by an empty one with TC set.
    Udp,
    /// A stream: up to 65535 bytes.
    Tcp,
}

/// The largest UDP payload we send, whatever the client advertises (the DNS flag day 2020
/// value, which avoids IP fragmentation).
pub const EDNS_MAX_PAYLOAD: u16 = 1232;

/// The answer of the embedded server to one request, or `None` when the bytes are not a
/// DNS request worth answering (too short for a header, or itself a response). Never
/// panics on any input.
pub fn respond(
    layout: &ZoneLayout,
    state: &ZoneState,
    request: &[u8],
    transport: Transport,
) -> Option<Vec<u8>> {
    respond_with(layout, state, request, transport, None)
}

/// Like [`respond`], but `www.<site>` is a CNAME to `www.<site_target>` instead of this
/// area's own `www.<area_zone>` when `site_target` is given (and differs from our own area
/// zone): the answer [`super::steering::Steering`] picks from the query's source. Nothing
/// else changes; the other area's zone is not ours, so the answer holds only the CNAME and
/// the resolver follows it to that area's own name server.
pub fn respond_with(
    layout: &ZoneLayout,
    state: &ZoneState,
    request: &[u8],
    transport: Transport,
    site_target: Option<&Name>,
) -> Option<Vec<u8>> {
    let req = match Message::from_vec(request) {
        Ok(m) => m,
        Err(_) => return formerr_from_raw_header(request),
    };
    if req.message_type() != MessageType::Query {
        return None;
    }
    let mut resp = Message::new();
    let mut header = Header::response_from_request(req.header());
    header.set_recursion_desired(req.recursion_desired());
    resp.set_header(header);
    let limit = match transport {
        Transport::Tcp => u16::MAX as usize,
        Transport::Udp => match req.extensions() {
            Some(e) => e.max_payload().clamp(512, EDNS_MAX_PAYLOAD) as usize,
            None => 512,
        },
    };
    if let Some(e) = req.extensions() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_MAX_PAYLOAD).set_version(0);
        if e.version() > 0 {
            // RFC 6891 §6.1.3: unknown EDNS version → BADVERS.
            resp.set_edns(edns);
            resp.add_queries(req.queries().iter().cloned());
            resp.set_response_code(ResponseCode::BADVERS);
            return emit(&resp, limit);
        }
        resp.set_edns(edns);
    }
    if req.op_code() != OpCode::Query {
        resp.add_queries(req.queries().iter().cloned());
        resp.set_response_code(ResponseCode::NotImp);
        return emit(&resp, limit);
    }
    let [query] = req.queries() else {
        resp.add_queries(req.queries().iter().cloned());
        resp.set_response_code(ResponseCode::FormErr);
        return emit(&resp, limit);
    };
    resp.add_query(query.clone());
    answer_query(layout, state, query, site_target, &mut resp);
    emit(&resp, limit)
}

/// Serialises `resp`; when it exceeds `limit`, sends instead the header and question with
/// TC set, so the resolver retries over TCP (RFC 1035 §4.2.1, RFC 7766).
fn emit(resp: &Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = resp.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    let mut cut = Message::new();
    let mut header = *resp.header();
    header.set_truncated(true);
    cut.set_header(header);
    cut.add_queries(resp.queries().iter().cloned());
    if let Some(e) = resp.extensions() {
        cut.set_edns(e.clone());
    }
    cut.to_vec().ok()
}

/// A FORMERR for bytes that have a header but do not parse; nothing for anything shorter
/// than a header or for a response (never answer a response: no loops).
fn formerr_from_raw_header(request: &[u8]) -> Option<Vec<u8>> {
    if request.len() < 12 || request[2] & 0x80 != 0 {
        return None;
    }
    let id = u16::from_be_bytes([request[0], request[1]]);
    let mut resp = Message::new();
    resp.set_id(id)
        .set_message_type(MessageType::Response)
        .set_response_code(ResponseCode::FormErr);
    resp.to_vec().ok()
}

/// Which of our two zones holds `name`: the most specific one that encloses it.
fn zone_of<'a>(layout: &'a ZoneLayout, name: &Name) -> Option<&'a Name> {
    let in_area = layout.area_zone.zone_of(name);
    let in_site = layout.site.zone_of(name);
    match (in_area, in_site) {
        (true, true) => {
            if layout.area_zone.num_labels() >= layout.site.num_labels() {
                Some(&layout.area_zone)
            } else {
                Some(&layout.site)
            }
        }
        (true, false) => Some(&layout.area_zone),
        (false, true) => Some(&layout.site),
        (false, false) => None,
    }
}

/// Every record of `zone` (the whole zone is a handful of records).
fn zone_records(
    layout: &ZoneLayout,
    state: &ZoneState,
    zone: &Name,
    site_target: Option<&Name>,
) -> Vec<Record> {
    let ttl = layout.ttl.secs();
    let is_area = zone == &layout.area_zone;
    // The site zone never changes, so its serial is constant.
    let serial = if is_area { state.serial } else { 1 };
    let ns_ttl = layout.ns_ttl.secs();
    let mut out = vec![
        layout.soa(zone, serial),
        Record::from_rdata(zone.clone(), ns_ttl, RData::NS(NS(layout.ns_name.clone()))),
    ];
    if !is_area {
        for other in &layout.site_servers {
            out.push(Record::from_rdata(
                zone.clone(),
                ns_ttl,
                RData::NS(NS(other.clone())),
            ));
        }
    }
    if zone_of(layout, &layout.ns_name) == Some(zone) {
        for a in &layout.ns_addrs {
            out.push(addr_record(layout.ns_name.clone(), ns_ttl, *a));
        }
    }
    if is_area {
        let www = layout.area_www();
        for a in &state.www.v4 {
            out.push(Record::from_rdata(
                www.clone(),
                state.www.ttl,
                RData::A(A(*a)),
            ));
        }
        for a in &state.www.v6 {
            out.push(Record::from_rdata(
                www.clone(),
                state.www.ttl,
                RData::AAAA(AAAA(*a)),
            ));
        }
    } else {
        let target = match site_target {
            Some(t) if t != &layout.area_zone => {
                child("www", t).unwrap_or_else(|_| layout.area_www())
            }
            _ => layout.area_www(),
        };
        out.push(Record::from_rdata(
            layout.site_www(),
            ttl,
            RData::CNAME(CNAME(target)),
        ));
    }
    out
}

fn addr_record(name: Name, ttl: u32, a: IpAddr) -> Record {
    match a {
        IpAddr::V4(a) => Record::from_rdata(name, ttl, RData::A(A(a))),
        IpAddr::V6(a) => Record::from_rdata(name, ttl, RData::AAAA(AAAA(a))),
    }
}

/// Fills answer and authority sections for one question (RFC 1034 §4.3.2, simplified to
/// our two zones without delegations or wildcards).
fn answer_query(
    layout: &ZoneLayout,
    state: &ZoneState,
    query: &Query,
    site_target: Option<&Name>,
    resp: &mut Message,
) {
    if query.query_class() != DNSClass::IN && query.query_class() != DNSClass::ANY {
        resp.set_response_code(ResponseCode::Refused);
        return;
    }
    let mut qname = query.name().to_lowercase();
    qname.set_fqdn(true);
    let qtype = query.query_type();
    if matches!(
        qtype,
        RecordType::AXFR | RecordType::IXFR | RecordType::OPT | RecordType::TSIG
    ) {
        resp.set_response_code(ResponseCode::Refused);
        return;
    }
    let Some(zone) = zone_of(layout, &qname) else {
        // Not ours: an authoritative-only server refuses (it is no resolver, §7.2).
        resp.set_response_code(ResponseCode::Refused);
        return;
    };
    resp.set_authoritative(true);
    // Follow CNAMEs inside our zones (at most a few hops: our layout has one).
    let mut name = qname;
    let mut zone = zone.clone();
    for _ in 0..8 {
        let records = zone_records(layout, state, &zone, site_target);
        let at_name: Vec<&Record> = records.iter().filter(|r| r.name() == &name).collect();
        if at_name.is_empty() {
            let exists = records.iter().any(|r| name.zone_of(r.name()));
            if !exists && resp.answers().is_empty() {
                resp.set_response_code(ResponseCode::NXDomain);
            }
            resp.add_name_server(negative_soa(layout, state, &zone));
            return;
        }
        let matching: Vec<Record> = at_name
            .iter()
            .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
            .map(|r| (*r).clone())
            .collect();
        if !matching.is_empty() {
            resp.add_answers(matching);
            return;
        }
        let cname = at_name.iter().find_map(|r| match r.data() {
            RData::CNAME(c) => Some(((*r).clone(), c.0.clone())),
            _ => None,
        });
        match cname {
            Some((rec, target)) => {
                resp.add_answer(rec);
                match zone_of(layout, &target) {
                    Some(z) => {
                        zone = z.clone();
                        name = target;
                    }
                    None => return,
                }
            }
            None => {
                // NODATA: the name exists without this type.
                resp.add_name_server(negative_soa(layout, state, &zone));
                return;
            }
        }
    }
}

/// The SOA for the authority section of a negative answer: its TTL is the SOA minimum
/// (RFC 2308 §3).
fn negative_soa(layout: &ZoneLayout, state: &ZoneState, zone: &Name) -> Record {
    let serial = if zone == &layout.area_zone {
        state.serial
    } else {
        1
    };
    layout.soa(zone, serial)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ClusterName;

    fn layout() -> ZoneLayout {
        ZoneLayout::new(
            "example.com",
            "area-1.example.com.",
            None,
            vec!["192.0.2.53".parse().unwrap()],
            RecordTtl::DEFAULT,
        )
        .unwrap()
    }

    fn state(addrs: &[&str]) -> ZoneState {
        ZoneState {
            serial: 7,
            www: WwwRecords::from_addrs(addrs.iter().map(|a| a.parse().unwrap()), RecordTtl(30)),
        }
    }

    fn ask(name: &str, t: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(4242).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        if let Some(p) = edns {
            let mut e = Edns::new();
            e.set_max_payload(p);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn run(st: &ZoneState, name: &str, t: RecordType, tr: Transport) -> Message {
        Message::from_vec(&respond(&layout(), st, &ask(name, t, None), tr).unwrap()).unwrap()
    }

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

    #[test]
    fn site_www_is_cname_followed_into_area_zone() {
        let st = state(&["10.0.0.1", "2001:db8::1"]);
        let r = run(&st, "www.example.com.", RecordType::A, Transport::Udp);
        assert_eq!(r.response_code(), ResponseCode::NoError);
        assert!(r.authoritative());
        assert_eq!(r.id(), 4242);
        let types: Vec<_> = r.answers().iter().map(|a| a.record_type()).collect();
        assert_eq!(types, vec![RecordType::CNAME, RecordType::A]);
        assert_eq!(r.answers()[1].name(), &layout().area_www());
        assert_eq!(r.answers()[1].ttl(), 30);
    }

    #[test]
    fn nodata_and_nxdomain_carry_the_soa() {
        let st = state(&["10.0.0.1"]);
        let r = run(
            &st,
            "www.area-1.example.com.",
            RecordType::AAAA,
            Transport::Udp,
        );
        assert_eq!(r.response_code(), ResponseCode::NoError);
        assert!(r.answers().is_empty());
        assert_eq!(r.name_servers()[0].record_type(), RecordType::SOA);

        let r = run(
            &st,
            "nope.area-1.example.com.",
            RecordType::A,
            Transport::Udp,
        );
        assert_eq!(r.response_code(), ResponseCode::NXDomain);
        match r.name_servers()[0].data() {
            RData::SOA(s) => assert_eq!(s.serial(), 7),
            other => panic!("not an SOA: {other:?}"),
        }
        // The apex exists (NODATA for TXT) and an empty non-terminal is not NXDOMAIN.
        let r = run(&st, "example.com.", RecordType::TXT, Transport::Udp);
        assert_eq!(r.response_code(), ResponseCode::NoError);
        let r = run(&st, "foo.example.com.", RecordType::A, Transport::Udp);
        assert_eq!(r.response_code(), ResponseCode::NXDomain);
    }

    #[test]
    fn foreign_names_are_refused() {
        let r = run(
            &state(&[]),
            "www.example.org.",
            RecordType::A,
            Transport::Udp,
        );
        assert_eq!(r.response_code(), ResponseCode::Refused);
        assert!(!r.authoritative());
    }

    #[test]
    fn big_answer_sets_tc_over_udp_but_not_tcp() {
        let addrs: Vec<String> = (0..60).map(|i| format!("2001:db8::{i:x}")).collect();
        let refs: Vec<&str> = addrs.iter().map(|s| s.as_str()).collect();
        let st = state(&refs);
        let r = run(&st, "www.example.com.", RecordType::AAAA, Transport::Udp);
        assert!(r.truncated());
        assert!(r.answers().is_empty());
        let r = run(&st, "www.example.com.", RecordType::AAAA, Transport::Tcp);
        assert!(!r.truncated());
        assert_eq!(r.answers().len(), 61);
        // With EDNS 4096 the cap is 1232 bytes: 60 AAAA (~28 bytes each) still do not fit.
        let bytes = respond(
            &layout(),
            &st,
            &ask("www.example.com.", RecordType::AAAA, Some(4096)),
            Transport::Udp,
        )
        .unwrap();
        assert!(bytes.len() <= EDNS_MAX_PAYLOAD as usize);
        assert!(Message::from_vec(&bytes).unwrap().truncated());
        // 25 IPv4 addresses (the paper's 20–30) fit in 512 bytes without EDNS.
        let v4: Vec<String> = (0..25).map(|i| format!("10.0.0.{i}")).collect();
        let st = state(&v4.iter().map(|s| s.as_str()).collect::<Vec<_>>());
        let r = run(&st, "www.example.com.", RecordType::A, Transport::Udp);
        assert!(!r.truncated());
        assert_eq!(r.answers().len(), 26);
    }

    #[test]
    fn garbage_never_panics_and_gets_formerr_or_nothing() {
        let l = layout();
        let st = state(&["10.0.0.1"]);
        assert_eq!(respond(&l, &st, &[], Transport::Udp), None);
        assert_eq!(respond(&l, &st, &[1, 2, 3], Transport::Udp), None);
        let junk = [0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
        let r = Message::from_vec(&respond(&l, &st, &junk, Transport::Udp).unwrap()).unwrap();
        assert_eq!(r.response_code(), ResponseCode::FormErr);
        assert_eq!(r.id(), 0x1234);
        // A response is never answered.
        let mut resp = junk;
        resp[2] |= 0x80;
        assert_eq!(respond(&l, &st, &resp, Transport::Udp), None);
        for len in 0..64 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            let _ = respond(&l, &st, &bytes, Transport::Udp);
        }
    }

    #[test]
    fn update_opcode_is_not_implemented() {
        let mut m = Message::new();
        m.set_id(1).set_op_code(OpCode::Update);
        m.add_query(Query::query(
            Name::from_ascii("area-1.example.com.").unwrap(),
            RecordType::SOA,
        ));
        let r = respond(&layout(), &state(&[]), &m.to_vec().unwrap(), Transport::Udp).unwrap();
        assert_eq!(
            Message::from_vec(&r).unwrap().response_code(),
            ResponseCode::NotImp
        );
    }

    #[test]
    fn site_zone_lists_every_area_server_with_the_ns_ttl() {
        let l = layout()
            .with_ns_ttl(RecordTtl(3600))
            .with_site_servers(&["ns.area-2.example.com", "ns.area-1.example.com."])
            .unwrap();
        let ask_ns = |zone: &str| {
            let bytes = respond(
                &l,
                &state(&[]),
                &ask(zone, RecordType::NS, None),
                Transport::Udp,
            );
            Message::from_vec(&bytes.unwrap()).unwrap()
        };
        let site = ask_ns("example.com.");
        let names: Vec<String> = site
            .answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::NS(n) => Some(n.0.to_ascii()),
                _ => None,
            })
            .collect();
        assert_eq!(names, ["ns.area-1.example.com.", "ns.area-2.example.com."]);
        assert!(site.answers().iter().all(|r| r.ttl() == 3600));
        // The area zone is ours alone; its www keeps the short TTL.
        assert_eq!(ask_ns("area-1.example.com.").answers().len(), 1);
        let r = run(
            &state(&["10.0.0.1"]),
            "www.area-1.example.com.",
            RecordType::A,
            Transport::Udp,
        );
        assert_eq!(r.answers()[0].ttl(), 30);
        let glue = respond(
            &l,
            &state(&[]),
            &ask("ns.area-1.example.com.", RecordType::A, None),
            Transport::Udp,
        );
        assert_eq!(
            Message::from_vec(&glue.unwrap()).unwrap().answers()[0].ttl(),
            3600
        );
    }

    #[test]
    fn ns_glue_is_served_in_the_area_zone() {
        let r = run(
            &state(&[]),
            "ns.area-1.example.com.",
            RecordType::A,
            Transport::Udp,
        );
        assert_eq!(r.answers().len(), 1);
        let r = run(&state(&[]), "example.com.", RecordType::NS, Transport::Udp);
        assert_eq!(r.answers().len(), 1);
    }
}
