//! The embedded server's answers: request bytes in, response bytes out, sans-IO.
//!
//! The lookup is RFC 1034 §4.3.2 over our two zones ([`ZoneContents`]): the most specific
//! zone we serve that encloses the name (the parent for a DS at a zone's apex); a referral
//! (NS in authority, glue in additional, AA clear) for a name at or below a delegated area
//! zone; a CNAME chased only inside the zone that holds it (into another zone the resolver
//! follows it, as BIND does: `www.<site>` answers with the CNAME alone); NXDOMAIN by the
//! last name of the chain (RFC 6604); negative answers with the zone's SOA (RFC 2308). The sections follow BIND 9's defaults (`minimal-responses
//! no-auth-recursive`), so that an area served by BIND from `dns bind-config`'s files and
//! one served by us look the same to a resolver: a query without RD (a resolver's) gets the
//! zone's NS rrset in authority and the name servers' addresses in additional on a positive
//! answer, one with RD (a stub's, dig's) does not; an NS answer always carries the
//! addresses. A/AAAA rrsets are rotated by [`QueryContext::rotation`] so clients that take
//! the first address spread over a cluster.
//!
//! Also: the EDNS DO bit is echoed (RFC 3225); a TSIG-signed request is answered NOTAUTH
//! with TSIG error BADKEY, unsigned (RFC 8945 §5.2.2: we hold no keys); a NOTIFY for one
//! of our zones is acknowledged (we are the zones' only source, there is nothing to
//! fetch), any other gets NOTAUTH, as from BIND; an unknown opcode is NOTIMP; UDP answers are cut to the
//! client's datagram size (first the optional additional and authority records, then TC).
//! An EDNS Client Subnet option (RFC 7871) is echoed with the scope steering computed
//! ([`QueryContext::ecs`]; scope 0 for every name but `www.<site>`, the only one steering
//! changes), and a malformed one is answered FORMERR (RFC 7871 §6).

use super::steering::SourcePrefix;
use super::zone::{zone_of, ZoneContents, ZoneLayout, ZoneState};
use hickory_proto::dnssec::rdata::tsig::{make_tsig_record, TSIG};
use hickory_proto::dnssec::rdata::DNSSECRData;
use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// The transport a request came over: UDP answers are cut to the client's datagram size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A datagram: at most 512 bytes, or the EDNS size the client advertised (capped at
    /// [`EDNS_MAX_PAYLOAD`]); larger answers lose their optional records, then are
    /// replaced by an empty one with TC set.
    Udp,
    /// A stream: up to 65535 bytes.
    Tcp,
}

/// The largest UDP payload we send, whatever the client advertises (the DNS flag day 2020
/// value, which avoids IP fragmentation).
pub const EDNS_MAX_PAYLOAD: u16 = 1232;

/// TSIG error BADKEY (RFC 8945 §5.2.2).
const TSIG_BADKEY: u16 = 17;

/// How one request is answered, beside the zones: the transport, source steering's pick,
/// and the rotation of address rrsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryContext<'a> {
    /// UDP or TCP.
    pub transport: Transport,
    /// When given (and not our own area zone), `www.<site>` is a CNAME to
    /// `www.<site_target>`: the answer [`super::steering::Steering`] picks from the
    /// query's source.
    pub site_target: Option<&'a Name>,
    /// A/AAAA rrsets start at this index (modulo their length): the server passes a
    /// counter so the first address cycles over the cluster (BIND randomises).
    pub rotation: usize,
    /// What the request's EDNS Client Subnet option asks of the reply.
    pub ecs: EcsReply,
}

/// The reply's EDNS Client Subnet option (RFC 7871), decided before the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcsReply {
    /// The request has no ECS option: the reply has none.
    Absent,
    /// The request's ECS option is malformed: FORMERR (RFC 7871 §6).
    Malformed,
    /// Echo the client's subnet (family, source prefix and address copied, RFC 7871
    /// §7.2.1) with `scope` when the question is `www.<site>`, scope 0 for any other name.
    Echo {
        /// The client subnet the request carried.
        client: SourcePrefix,
        /// SCOPE PREFIX-LENGTH of a steered answer ([`super::steering::Steering::pick`]).
        scope: u8,
    },
}

impl QueryContext<'_> {
    /// The plain §7.2 answer over `transport`, no rotation.
    pub fn plain(transport: Transport) -> Self {
        Self {
            transport,
            site_target: None,
            rotation: 0,
            ecs: EcsReply::Absent,
        }
    }
}

/// The answer to one request, or `None` when the bytes are not a DNS request worth
/// answering (too short for a header, or itself a response). Never panics on any input.
pub fn respond(
    layout: &ZoneLayout,
    state: &ZoneState,
    request: &[u8],
    transport: Transport,
) -> Option<Vec<u8>> {
    respond_with(layout, state, request, &QueryContext::plain(transport))
}

/// Like [`respond`], with steering and rotation.
pub fn respond_with(
    layout: &ZoneLayout,
    state: &ZoneState,
    request: &[u8],
    ctx: &QueryContext<'_>,
) -> Option<Vec<u8>> {
    let req = match Message::from_vec(request) {
        Ok(m) => m,
        Err(_) => return formerr_from_raw_header(request),
    };
    if req.message_type() != MessageType::Query {
        return None;
    }
    let mut resp = Message::new();
    resp.set_header(Header::response_from_request(req.header()));
    let limit = match ctx.transport {
        Transport::Tcp => u16::MAX as usize,
        Transport::Udp => match req.extensions() {
            Some(e) => e.max_payload().clamp(512, EDNS_MAX_PAYLOAD) as usize,
            None => 512,
        },
    };
    resp.add_queries(req.queries().iter().cloned());
    if let Some(e) = req.extensions() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_MAX_PAYLOAD)
            .set_version(0)
            .set_dnssec_ok(e.flags().dnssec_ok);
        resp.set_edns(edns);
        if e.version() > 0 {
            // RFC 6891 §6.1.3: unknown EDNS version → BADVERS.
            resp.set_response_code(ResponseCode::BADVERS);
            return emit(resp, limit, false);
        }
    }
    if let Some(tsig) = req.signature().iter().find_map(tsig_of) {
        return emit(badkey(resp, &req, tsig), limit, false);
    }
    let [query] = req.queries() else {
        resp.set_response_code(ResponseCode::FormErr);
        return emit(resp, limit, false);
    };
    if ctx.ecs == EcsReply::Malformed {
        resp.set_response_code(ResponseCode::FormErr);
        return emit(resp, limit, false);
    }
    match req.op_code() {
        OpCode::Query => {}
        OpCode::Notify => {
            // As BIND: acknowledged for our zones, NOTAUTH for any other.
            let ours = zone_of(layout, &query.name().to_lowercase()).is_some();
            resp.set_authoritative(ours);
            if !ours {
                resp.set_response_code(ResponseCode::NotAuth);
            }
            return emit(resp, limit, false);
        }
        _ => {
            resp.set_response_code(ResponseCode::NotImp);
            return emit(resp, limit, false);
        }
    }
    let optional_authority = answer_query(layout, state, query, ctx, &mut resp);
    if let (EcsReply::Echo { client, scope }, Some(edns)) = (ctx.ecs, resp.extensions_mut()) {
        let mut qname = query.name().to_lowercase();
        qname.set_fqdn(true);
        let steered = qname == layout.site_www();
        let scope = if steered { scope } else { 0 };
        let option = ClientSubnet::new(client.addr(), client.len(), scope);
        edns.options_mut().insert(EdnsOption::Subnet(option));
    }
    emit(resp, limit, optional_authority)
}

fn tsig_of(r: &Record) -> Option<(&Name, &TSIG)> {
    match r.data() {
        RData::DNSSEC(DNSSECRData::TSIG(t)) => Some((r.name(), t)),
        _ => None,
    }
}

/// NOTAUTH with an unsigned TSIG record carrying BADKEY: we hold no key, so no signed
/// request is ours to verify (RFC 8945 §5.2.2).
fn badkey(mut resp: Message, req: &Message, (key, tsig): (&Name, &TSIG)) -> Message {
    resp.set_response_code(ResponseCode::NotAuth);
    let rdata = TSIG::new(
        tsig.algorithm().clone(),
        tsig.time(),
        tsig.fudge(),
        Vec::new(),
        req.id(),
        TSIG_BADKEY,
        Vec::new(),
    );
    resp.add_tsig(make_tsig_record(key.clone(), rdata));
    resp
}

/// Serialises `resp`. When it exceeds `limit`: drops the additional section, then the
/// authority section if `optional_authority` (the NS rrset of a positive answer), and as
/// a last resort sends the header and question with TC set, so the resolver retries over
/// TCP (RFC 1035 §4.2.1, RFC 7766).
fn emit(mut resp: Message, limit: usize, optional_authority: bool) -> Option<Vec<u8>> {
    let bytes = resp.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    if !resp.additionals().is_empty() {
        resp.take_additionals();
        let bytes = resp.to_vec().ok()?;
        if bytes.len() <= limit {
            return Some(bytes);
        }
    }
    if optional_authority {
        resp.take_name_servers();
        let bytes = resp.to_vec().ok()?;
        if bytes.len() <= limit {
            return Some(bytes);
        }
    }
    cut(&resp)
}

/// `resp` cut to its header (TC set) and question, its EDNS record (an ECS option in it
/// included) kept.
fn cut(resp: &Message) -> Option<Vec<u8>> {
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

/// Whether a reply is one learned steering may send truncated, read from its header
/// alone (no parse on the hot path): NOERROR or NXDOMAIN, not already truncated, and
/// authoritative or a referral (an answer from our zones, not REFUSED or an error).
pub fn measurable(reply: &[u8]) -> bool {
    let [_, _, flags, rcode, _, _, _, _, ns_hi, ns_lo, ..] = reply else {
        return false;
    };
    let (aa, tc) = (flags & 0x04 != 0, flags & 0x02 != 0);
    matches!(rcode & 0x0f, 0 | 3) && !tc && (aa || (*ns_hi, *ns_lo) != (0, 0))
}

/// A reply turned into a truncated one (TC set, no records) when it is an answer from our
/// zones (NOERROR or NXDOMAIN with AA, or a referral): learned steering's measurement
/// ([`super::learned`]). `None` leaves the reply as it is (an error, REFUSED, a response
/// that does not parse).
pub fn truncated(reply: &[u8]) -> Option<Vec<u8>> {
    let resp = Message::from_vec(reply).ok()?;
    let ours = matches!(
        resp.response_code(),
        ResponseCode::NoError | ResponseCode::NXDomain
    ) && (resp.authoritative() || !resp.name_servers().is_empty());
    if !ours || resp.truncated() {
        return None;
    }
    cut(&resp)
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

/// Our two zones, computed once per request.
struct Zones {
    site: ZoneContents,
    area: ZoneContents,
}

impl Zones {
    fn get(&self, apex: &Name) -> &ZoneContents {
        if *apex == self.area.apex {
            &self.area
        } else {
            &self.site
        }
    }
}

/// Fills answer, authority and additional sections for one question. Returns whether the
/// authority section is optional (may be dropped to fit a datagram).
fn answer_query(
    layout: &ZoneLayout,
    state: &ZoneState,
    query: &Query,
    ctx: &QueryContext<'_>,
    resp: &mut Message,
) -> bool {
    if query.query_class() != DNSClass::IN && query.query_class() != DNSClass::ANY {
        resp.set_response_code(ResponseCode::Refused);
        return false;
    }
    let qtype = query.query_type();
    if matches!(
        qtype,
        RecordType::AXFR | RecordType::IXFR | RecordType::OPT | RecordType::TSIG
    ) {
        resp.set_response_code(ResponseCode::Refused);
        return false;
    }
    let mut name = query.name().to_lowercase();
    name.set_fqdn(true);
    let apex = if qtype == RecordType::DS && name == layout.area_zone {
        // A DS lives in the parent: answered from the site zone when it is ours.
        Some(&layout.site).filter(|s| s.zone_of(&name))
    } else {
        None
    };
    let Some(apex) = apex.or_else(|| zone_of(layout, &name)).cloned() else {
        // Not ours: an authoritative-only server refuses (it is no resolver, §7.2).
        resp.set_response_code(ResponseCode::Refused);
        return false;
    };
    let zones = Zones {
        site: ZoneContents::site(layout, ctx.site_target),
        area: ZoneContents::area(layout, state),
    };
    resp.set_authoritative(true);
    // Follow CNAMEs inside our zones (our layout has one hop; the bound stops loops).
    for _ in 0..8 {
        let zone = zones.get(&apex);
        if let Some(cut) = zone.cut_for(&name, qtype) {
            // A referral. After a CNAME we stay authoritative for what we answered.
            if resp.answers().is_empty() {
                resp.set_authoritative(false);
            }
            resp.add_name_servers(cut.ns.iter().cloned());
            add_addresses_for(zone, &cut.ns, true, resp);
            return false;
        }
        let at_name: Vec<&Record> = zone.records.iter().filter(|r| r.name() == &name).collect();
        if at_name.is_empty() {
            if !zone.name_exists(&name) {
                // RFC 6604 §3: the rcode is that of the last name in the chain.
                resp.set_response_code(ResponseCode::NXDomain);
            }
            resp.add_name_servers(zone.soa().cloned());
            return false;
        }
        let matching: Vec<Record> = at_name
            .iter()
            .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
            .map(|r| (*r).clone())
            .collect();
        if !matching.is_empty() {
            let ns_answer: Vec<Record> = matching
                .iter()
                .filter(|r| r.record_type() == RecordType::NS)
                .cloned()
                .collect();
            resp.add_answers(rotated(matching, ctx.rotation));
            add_addresses_for(zone, &ns_answer, false, resp);
            if !resp.header().recursion_desired() && ns_answer.is_empty() {
                let ns: Vec<Record> = zone.apex_ns().cloned().collect();
                resp.add_name_servers(ns.iter().cloned());
                add_addresses_for(zone, &ns, false, resp);
                return true;
            }
            return false;
        }
        let cname = at_name.iter().find_map(|r| match r.data() {
            RData::CNAME(c) => Some(((*r).clone(), c.0.to_lowercase())),
            _ => None,
        });
        let Some((rec, target)) = cname else {
            // NODATA: the name exists without this type.
            resp.add_name_servers(zone.soa().cloned());
            return false;
        };
        resp.add_answer(rec);
        if zone_of(layout, &target) != Some(&apex) {
            // Into another zone (ours or not): the resolver follows it there, as with
            // BIND, which chases a CNAME only inside the zone it answers from.
            return false;
        }
        name = target;
    }
    false
}

/// Adds to the additional section the addresses of the name servers in `ns` that `zone`
/// holds: its own records, and with `glue` (a referral) the delegated servers' glue. Like
/// BIND: only from the zone that answered, and nothing already in the answer section.
fn add_addresses_for(zone: &ZoneContents, ns: &[Record], glue: bool, resp: &mut Message) {
    let glue_records = if glue { &zone.glue[..] } else { &[] };
    for r in ns {
        let RData::NS(target) = r.data() else {
            continue;
        };
        let found: Vec<Record> = zone
            .records
            .iter()
            .chain(glue_records)
            .filter(|a| {
                a.name() == &target.0 && matches!(a.record_type(), RecordType::A | RecordType::AAAA)
            })
            .filter(|a| !resp.answers().contains(a) && !resp.additionals().contains(a))
            .cloned()
            .collect();
        for a in found {
            resp.add_additional(a);
        }
    }
}

/// Each A and AAAA rrset in `records` rotated left by `by` (modulo its length); other
/// records keep their place.
fn rotated(mut records: Vec<Record>, by: usize) -> Vec<Record> {
    for t in [RecordType::A, RecordType::AAAA] {
        let idx: Vec<usize> = (0..records.len())
            .filter(|i| records[*i].record_type() == t)
            .collect();
        if idx.len() < 2 {
            continue;
        }
        let mut set: Vec<Record> = idx.iter().map(|i| records[*i].clone()).collect();
        set.rotate_left(by % idx.len());
        for (i, r) in idx.into_iter().zip(set) {
            records[i] = r;
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::director::zone::{AreaServer, RecordTtl, WwwRecords};

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
            epoch: 0,
            www: WwwRecords::from_addrs(
                addrs.iter().map(|a| a.parse().unwrap()),
                RecordTtl::try_from(std::time::Duration::from_secs(30)).unwrap(),
            ),
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
    fn area_www_holds_the_answer_with_its_ttl() {
        let st = state(&["10.0.0.1", "2001:db8::1"]);
        let r = run(
            &st,
            "www.area-1.example.com.",
            RecordType::A,
            Transport::Udp,
        );
        assert_eq!(r.response_code(), ResponseCode::NoError);
        assert!(r.authoritative());
        assert_eq!(r.id(), 4242);
        let types: Vec<_> = r.answers().iter().map(|a| a.record_type()).collect();
        assert_eq!(types, vec![RecordType::A]);
        assert_eq!(r.answers()[0].name(), &layout().area_www());
        assert_eq!(r.answers()[0].ttl(), 30);
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
        let r = run(
            &st,
            "www.area-1.example.com.",
            RecordType::AAAA,
            Transport::Udp,
        );
        assert!(r.truncated());
        assert!(r.answers().is_empty());
        let r = run(
            &st,
            "www.area-1.example.com.",
            RecordType::AAAA,
            Transport::Tcp,
        );
        assert!(!r.truncated());
        assert_eq!(r.answers().len(), 60);
        // With EDNS 4096 the cap is 1232 bytes: 60 AAAA (~28 bytes each) still do not fit.
        let bytes = respond(
            &layout(),
            &st,
            &ask("www.area-1.example.com.", RecordType::AAAA, Some(4096)),
            Transport::Udp,
        )
        .unwrap();
        assert!(bytes.len() <= EDNS_MAX_PAYLOAD as usize);
        assert!(Message::from_vec(&bytes).unwrap().truncated());
        // 25 IPv4 addresses (the paper's 20–30) fit in 512 bytes without EDNS.
        let v4: Vec<String> = (0..25).map(|i| format!("10.0.0.{i}")).collect();
        let st = state(&v4.iter().map(|s| s.as_str()).collect::<Vec<_>>());
        let r = run(
            &st,
            "www.area-1.example.com.",
            RecordType::A,
            Transport::Udp,
        );
        assert!(!r.truncated());
        assert_eq!(r.answers().len(), 25);
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
            .with_ns_ttl(RecordTtl::try_from(std::time::Duration::from_secs(3600)).unwrap())
            .with_other_areas([
                AreaServer::new("area-2.example.com", None, vec![]).unwrap(),
                AreaServer::new("area-1.example.com.", None, vec![]).unwrap(),
            ]);
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

    fn ask_with(name: &str, t: RecordType, rd: bool, edit: impl FnOnce(&mut Message)) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(77).set_recursion_desired(rd);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
        edit(&mut m);
        m.to_vec().unwrap()
    }

    fn three_areas() -> ZoneLayout {
        layout()
            .with_ns_ttl(RecordTtl::try_from(std::time::Duration::from_secs(3600)).unwrap())
            .with_other_areas([
                AreaServer::new(
                    "area-2.example.com",
                    None,
                    vec!["192.0.2.54".parse().unwrap()],
                )
                .unwrap(),
                AreaServer::new(
                    "area-3.elsewhere.test",
                    None,
                    vec!["192.0.2.55".parse().unwrap()],
                )
                .unwrap(),
            ])
    }

    fn ask3(name: &str, t: RecordType, rd: bool) -> Message {
        let bytes = respond(
            &three_areas(),
            &state(&["10.0.0.1", "10.0.0.2"]),
            &ask_with(name, t, rd, |_| {}),
            Transport::Udp,
        );
        Message::from_vec(&bytes.unwrap()).unwrap()
    }

    fn names(records: &[Record]) -> Vec<String> {
        let mut v: Vec<String> = records
            .iter()
            .map(|r| format!("{} {} {}", r.name(), r.record_type(), r.data()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn another_nested_area_gets_a_referral_with_glue_not_nxdomain() {
        for name in [
            "www.area-2.example.com.",
            "area-2.example.com.",
            "ns.area-2.example.com.",
            "deep.www.area-2.example.com.",
        ] {
            for t in [RecordType::A, RecordType::NS, RecordType::SOA] {
                let r = ask3(name, t, false);
                assert_eq!(r.response_code(), ResponseCode::NoError, "{name} {t}");
                assert!(
                    !r.authoritative(),
                    "a referral is not authoritative: {name} {t}"
                );
                assert!(r.answers().is_empty());
                assert_eq!(
                    names(r.name_servers()),
                    ["area-2.example.com. NS ns.area-2.example.com."]
                );
                assert_eq!(
                    names(r.additionals()),
                    ["ns.area-2.example.com. A 192.0.2.54"]
                );
                assert_eq!(r.additionals()[0].ttl(), 3600);
            }
        }
        // A DS at the cut is the parent's: NODATA from the site zone, authoritative.
        let r = ask3("area-2.example.com.", RecordType::DS, false);
        assert!(r.authoritative());
        assert_eq!(r.response_code(), ResponseCode::NoError);
        assert_eq!(r.name_servers()[0].name().to_ascii(), "example.com.");
        // So is our own area zone's DS.
        let r = ask3("area-1.example.com.", RecordType::DS, false);
        assert_eq!(r.name_servers()[0].name().to_ascii(), "example.com.");
        // An area zone outside the site zone is not ours to answer.
        let r = ask3("www.area-3.elsewhere.test.", RecordType::A, false);
        assert_eq!(r.response_code(), ResponseCode::Refused);
    }

    #[test]
    fn site_zone_names_every_area_server_and_answers_the_site_cname_alone() {
        let r = ask3("example.com.", RecordType::NS, true);
        assert_eq!(
            names(r.answers()),
            [
                "example.com. NS ns.area-1.example.com.",
                "example.com. NS ns.area-2.example.com.",
                "example.com. NS ns.area-3.elsewhere.test.",
            ]
        );
        // The nested servers' addresses are glue (below a cut), which BIND does not give
        // for the apex NS rrset either.
        assert!(r.additionals().is_empty());
        // The CNAME leads into another zone: the resolver follows it there.
        let r = ask3("www.example.com.", RecordType::A, false);
        assert!(r.authoritative());
        assert_eq!(
            names(r.answers()),
            ["www.example.com. CNAME www.area-1.example.com."]
        );
        assert!(r.name_servers().is_empty());
    }

    #[test]
    fn resolvers_get_the_zone_ns_and_addresses_stubs_do_not() {
        let r = ask3("www.area-1.example.com.", RecordType::A, false);
        assert_eq!(r.answers().len(), 2);
        assert_eq!(
            names(r.name_servers()),
            ["area-1.example.com. NS ns.area-1.example.com."]
        );
        assert_eq!(
            names(r.additionals()),
            ["ns.area-1.example.com. A 192.0.2.53"]
        );
        let r = ask3("www.area-1.example.com.", RecordType::A, true);
        assert!(r.name_servers().is_empty() && r.additionals().is_empty());
        // An NS answer carries the addresses the zone holds, whatever RD says.
        let r = ask3("area-1.example.com.", RecordType::NS, true);
        assert_eq!(
            names(r.additionals()),
            ["ns.area-1.example.com. A 192.0.2.53"]
        );
        // An address already in the answer is not repeated.
        let r = ask3("ns.area-1.example.com.", RecordType::A, false);
        assert_eq!(r.name_servers().len(), 1);
        assert!(r.additionals().is_empty());
    }

    #[test]
    fn address_rrsets_rotate_with_the_counter() {
        let l = layout();
        let st = state(&["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]);
        let req = ask_with("www.area-1.example.com.", RecordType::A, true, |_| {});
        let first = |rotation: usize| {
            let ctx = QueryContext {
                rotation,
                ..QueryContext::plain(Transport::Udp)
            };
            let r = Message::from_vec(&respond_with(&l, &st, &req, &ctx).unwrap()).unwrap();
            assert_eq!(r.answers().len(), 4, "rotation keeps every record");
            r.answers()[0].data().to_string()
        };
        let firsts: Vec<String> = (0..8).map(first).collect();
        assert_eq!(
            firsts,
            [
                "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.1", "10.0.0.2", "10.0.0.3",
                "10.0.0.4"
            ]
        );
    }

    #[test]
    fn dnssec_ok_is_echoed() {
        for dnssec_ok in [false, true] {
            let req = ask_with("www.example.com.", RecordType::A, false, |m| {
                if let Some(e) = m.extensions_mut() {
                    e.set_dnssec_ok(dnssec_ok);
                }
            });
            let r = respond(&layout(), &state(&["10.0.0.1"]), &req, Transport::Udp).unwrap();
            let r = Message::from_vec(&r).unwrap();
            assert_eq!(
                r.extensions().as_ref().unwrap().flags().dnssec_ok,
                dnssec_ok
            );
        }
    }

    #[test]
    fn a_signed_request_gets_notauth_badkey_unsigned() {
        use hickory_proto::dnssec::rdata::tsig::TsigAlgorithm;
        let req = ask_with("www.example.com.", RecordType::A, false, |m| {
            let tsig = TSIG::new(
                TsigAlgorithm::HmacSha256,
                1_700_000_000,
                300,
                vec![1; 32],
                77,
                0,
                Vec::new(),
            );
            m.add_tsig(make_tsig_record(Name::from_ascii("nokey.").unwrap(), tsig));
        });
        let r = respond(&layout(), &state(&["10.0.0.1"]), &req, Transport::Udp).unwrap();
        let r = Message::from_vec(&r).unwrap();
        assert_eq!(r.response_code(), ResponseCode::NotAuth);
        assert!(r.answers().is_empty());
        let (key, tsig) = r
            .signature()
            .iter()
            .find_map(tsig_of)
            .expect("a TSIG record");
        assert_eq!(key.to_ascii(), "nokey.");
        // Same key, algorithm, time and fudge; empty MAC (unsigned: we hold no key);
        // error BADKEY.
        let want = TSIG::new(
            TsigAlgorithm::HmacSha256,
            1_700_000_000,
            300,
            Vec::new(),
            77,
            TSIG_BADKEY,
            Vec::new(),
        );
        assert_eq!(tsig, &want);
    }

    #[test]
    fn notify_is_acknowledged_for_our_zones_only() {
        for (zone, rcode, aa) in [
            ("example.com.", ResponseCode::NoError, true),
            ("area-1.example.com.", ResponseCode::NoError, true),
            ("example.org.", ResponseCode::NotAuth, false),
        ] {
            let req = ask_with(zone, RecordType::SOA, false, |m| {
                m.set_op_code(OpCode::Notify);
            });
            let r = respond(&layout(), &state(&[]), &req, Transport::Udp).unwrap();
            let r = Message::from_vec(&r).unwrap();
            assert_eq!(
                (r.op_code(), r.response_code(), r.authoritative()),
                (OpCode::Notify, rcode, aa)
            );
        }
    }
}
