//! RFC 2136 dynamic update with TSIG (RFC 8945, hmac-sha256) to an existing authoritative
//! server: BIND 9, Knot, PowerDNS, ...
//!
//! One update message replaces the A and AAAA rrsets of `www.<area-zone>` (delete rrset A,
//! delete rrset AAAA, add each new record, RFC 2136 §2.5): the server applies it atomically
//! and bumps the zone serial by one. Queries go through hickory-client.
//!
//! Fencing (see `director::Fence`): the decision's epoch lives beside the answer, as the
//! TXT record of `_walrus-epoch.<area-zone>`, and a fenced update carries a prerequisite
//! (RFC 2136 §2.4) that this TXT still holds the epoch read just before (or does not exist
//! yet) and replaces it with the new epoch in the same message: a compare-and-swap. Two
//! writers racing make one of them fail the prerequisite (NXRRSET or YXRRSET), re-read,
//! and find itself behind. The zone's `update-policy` must grant the key that TXT too
//! (`dns bind-config` writes it).
//!
//! The update itself is signed with hickory's `TSigner` but exchanged by [`super::transport`]
//! rather than through hickory-client's `Client`: a refused signed update comes back
//! unsigned (TSIG error BADKEY/BADSIG with an empty MAC), hickory-client's verifier then
//! fails and the caller only sees an opaque `Err` that cannot be told from a transport
//! failure. Reading the reply ourselves gives the rcode and the TSIG error, so a refusal is
//! reported as such and never retried, while a timeout is.

use super::transport;
use super::zone::{fqdn, WwwRecords};
use super::{DirectorError, Fence, Held, NameServer, NameServerError};
use crate::model::AreaName;
use hickory_proto::dnssec::rdata::tsig::TsigAlgorithm;
use hickory_proto::dnssec::rdata::DNSSECRData;
use hickory_proto::dnssec::tsig::TSigner;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::{A, AAAA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable};
use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// TSIG fudge: the clock difference the server tolerates (RFC 8945 recommends 300 s).
const FUDGE_SECS: u16 = 300;

/// A TSIG key (hmac-sha256). The secret is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigKey {
    /// The key name, as the server knows it (`key "NAME" { ... }` in BIND).
    pub name: Name,
    secret: Vec<u8>,
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name.to_ascii())
            .field("secret", &"<hidden>")
            .finish()
    }
}

impl TsigKey {
    /// A key from its name and base64 secret.
    pub fn new(name: &str, secret_base64: &str) -> Result<Self, DirectorError> {
        let name = fqdn(name).map_err(|e| DirectorError::BadKey {
            key: name.to_owned(),
            reason: e.to_string(),
        })?;
        let secret = base64_decode(secret_base64).ok_or_else(|| DirectorError::BadKey {
            key: name.to_ascii(),
            reason: "secret is not valid base64".into(),
        })?;
        if secret.is_empty() {
            return Err(DirectorError::BadKey {
                key: name.to_ascii(),
                reason: "empty secret".into(),
            });
        }
        Ok(Self { name, secret })
    }

    /// Parses the output of `tsig-keygen -a hmac-sha256 NAME` (a BIND `key` statement):
    /// `key "NAME" { algorithm hmac-sha256; secret "BASE64"; };`.
    pub fn from_bind_key(text: &str) -> Result<Self, DirectorError> {
        let bad = |reason: &str| DirectorError::BadKey {
            key: "key statement".into(),
            reason: reason.to_owned(),
        };
        let after_key = text
            .trim_start()
            .strip_prefix("key")
            .ok_or_else(|| bad("does not start with `key`"))?;
        let name = quoted(after_key).ok_or_else(|| bad("no quoted key name"))?;
        let algorithm = text
            .split_once("algorithm")
            .and_then(|(_, rest)| rest.split(';').next())
            .map(|a| a.trim().trim_matches('"').to_ascii_lowercase())
            .ok_or_else(|| bad("no algorithm"))?;
        if algorithm != "hmac-sha256" {
            return Err(DirectorError::BadKey {
                key: name.to_owned(),
                reason: format!("algorithm {algorithm}; only hmac-sha256 is supported"),
            });
        }
        let secret = text
            .split_once("secret")
            .and_then(|(_, rest)| quoted(rest))
            .ok_or_else(|| bad("no quoted secret"))?;
        Self::new(name, secret)
    }

    /// The secret in base64, for the name servers' configurations (Knot's `secret:`,
    /// `pdnsutil import-tsig-key`).
    pub fn secret_base64(&self) -> String {
        base64_encode(&self.secret)
    }

    /// The key as a BIND `key` statement (for generated configurations and tests).
    pub fn to_bind_key(&self) -> String {
        format!(
            "key \"{}\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{}\";\n}};\n",
            self.name.to_ascii().trim_end_matches('.'),
            self.secret_base64()
        )
    }

    fn signer(&self) -> Result<TSigner, String> {
        TSigner::new(
            self.secret.clone(),
            TsigAlgorithm::HmacSha256,
            self.name.clone(),
            FUDGE_SECS,
        )
        .map_err(|e| format!("cannot build TSIG signer: {e}"))
    }
}

/// The first `"..."` in `s`.
fn quoted(s: &str) -> Option<&str> {
    let start = s.find('"')? + 1;
    let len = s[start..].find('"')?;
    Some(&s[start..start + len])
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn base64_encode(b: &[u8]) -> String {
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &x)| n | (x as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The configuration of one area's RFC 2136 updater.
#[derive(Debug, Clone)]
pub struct Rfc2136Config {
    /// The area whose answer this server carries (for errors and logs).
    pub area: AreaName,
    /// The name server's address; need not be local (direct mode).
    pub server: SocketAddr,
    /// The area zone, e.g. `area-1.example.com.`: the zone updated.
    pub area_zone: Name,
    /// The key the server's `update-policy` grants `www.<area_zone>` A AAAA to.
    pub key: TsigKey,
    /// How long to wait for each reply. Default 2 s.
    pub timeout: Duration,
}

/// Updates one area's name server by RFC 2136 with TSIG.
#[derive(Debug, Clone)]
pub struct Rfc2136Updater {
    cfg: Rfc2136Config,
    www: Name,
    /// `_walrus-epoch.<area-zone>`: the TXT that holds the epoch of the answer held.
    epoch_name: Name,
}

/// The label of the name that holds the answer's epoch in the area zone.
pub const EPOCH_LABEL: &str = "_walrus-epoch";

impl Rfc2136Updater {
    /// An updater for `cfg`.
    pub fn new(cfg: Rfc2136Config) -> Result<Self, DirectorError> {
        let www = cfg
            .area_zone
            .prepend_label("www")
            .map_err(|e| DirectorError::BadName {
                name: cfg.area_zone.to_ascii(),
                reason: e.to_string(),
            })?;
        let epoch_name =
            cfg.area_zone
                .prepend_label(EPOCH_LABEL)
                .map_err(|e| DirectorError::BadName {
                    name: cfg.area_zone.to_ascii(),
                    reason: e.to_string(),
                })?;
        Ok(Self {
            cfg,
            www,
            epoch_name,
        })
    }

    fn unreachable(&self, detail: String) -> NameServerError {
        NameServerError::Unreachable {
            area: self.cfg.area.clone(),
            server: self.cfg.server.to_string(),
            detail,
        }
    }

    fn failed(&self, detail: String) -> NameServerError {
        NameServerError::Failed {
            area: self.cfg.area.clone(),
            server: self.cfg.server.to_string(),
            detail,
        }
    }

    fn refused(&self, reason: String) -> NameServerError {
        NameServerError::Refused {
            area: self.cfg.area.clone(),
            server: self.cfg.server.to_string(),
            key: self.cfg.key.name.to_ascii(),
            reason,
        }
    }

    async fn query(&self, name: Name, rtype: RecordType) -> Result<Message, NameServerError> {
        let reply = transport::query(self.cfg.server, name, rtype, self.cfg.timeout)
            .await
            .map_err(|e| self.unreachable(e))?;
        match reply.response_code() {
            ResponseCode::NoError | ResponseCode::NXDomain => Ok(reply),
            rc => Err(self.failed(format!("query {rtype} answered {rc}"))),
        }
    }

    /// The update message: zone section = the area zone, then delete A, delete AAAA,
    /// add every wanted record.
    fn update_message(&self, want: &WwwRecords, fence: &Fence) -> Message {
        let mut msg = Message::new();
        msg.set_id(rand::random())
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Update)
            .set_recursion_desired(false);
        let mut zone = Query::new();
        zone.set_name(self.cfg.area_zone.clone())
            .set_query_class(DNSClass::IN)
            .set_query_type(RecordType::SOA);
        msg.add_zone(zone);
        for rtype in [RecordType::A, RecordType::AAAA] {
            let mut del = Record::update0(self.www.clone(), 0, rtype);
            del.set_dns_class(DNSClass::ANY);
            msg.add_update(del);
        }
        for a in &want.v4 {
            msg.add_update(Record::from_rdata(
                self.www.clone(),
                want.ttl,
                RData::A(A(*a)),
            ));
        }
        for a in &want.v6 {
            msg.add_update(Record::from_rdata(
                self.www.clone(),
                want.ttl,
                RData::AAAA(AAAA(*a)),
            ));
        }
        if fence.epoch > 0 {
            // Prerequisite (RFC 2136 §2.4): the epoch read before is still there.
            match fence.expect {
                Some(0) | None => {
                    // "RRset does not exist": class NONE, TTL 0, no data.
                    let mut none = Record::update0(self.epoch_name.clone(), 0, RecordType::TXT);
                    none.set_dns_class(DNSClass::NONE);
                    msg.add_pre_requisite(none);
                }
                Some(e) => {
                    // "RRset exists (value dependent)": class IN, TTL 0, the exact data.
                    msg.add_pre_requisite(Record::from_rdata(
                        self.epoch_name.clone(),
                        0,
                        RData::TXT(TXT::new(vec![e.to_string()])),
                    ));
                }
            }
            let mut del = Record::update0(self.epoch_name.clone(), 0, RecordType::TXT);
            del.set_dns_class(DNSClass::ANY);
            msg.add_update(del);
            msg.add_update(Record::from_rdata(
                self.epoch_name.clone(),
                want.ttl,
                RData::TXT(TXT::new(vec![fence.epoch.to_string()])),
            ));
        }
        msg
    }
}

/// The extended error of the reply's TSIG record (RFC 8945 §5.3: 16 BADSIG, 17 BADKEY,
/// 18 BADTIME, 22 BADTRUNC), or `None` when there is no TSIG or it reports no error.
/// hickory 0.25 has no accessor for the field, so it is read from the record's wire form:
/// algorithm name, time (48 bits), fudge, MAC size, MAC, original id, error.
fn tsig_error(reply: &Message) -> Option<u16> {
    let rec = reply.signature().last()?;
    let RData::DNSSEC(DNSSECRData::TSIG(tsig)) = rec.data() else {
        return None;
    };
    let bytes = tsig.to_bytes().ok()?;
    let mut dec = BinDecoder::new(&bytes);
    Name::read(&mut dec).ok()?;
    let rest = dec.read_slice(bytes.len() - dec.index()).ok()?.unverified();
    let mac_len = u16::from_be_bytes([*rest.get(8)?, *rest.get(9)?]) as usize;
    let at = 10 + mac_len + 2;
    let err = u16::from_be_bytes([*rest.get(at)?, *rest.get(at + 1)?]);
    (err != 0).then_some(err)
}

fn tsig_error_name(code: u16) -> String {
    match code {
        16 => "BADSIG (wrong secret)".into(),
        17 => "BADKEY (key unknown to the server, or, from Knot, not allowed by the zone's ACL)"
            .into(),
        18 => "BADTIME (clocks differ by more than the fudge)".into(),
        22 => "BADTRUNC".into(),
        n => format!("TSIG error {n}"),
    }
}

/// The rcode as the RFCs and `dig` spell it.
fn rcode_name(rc: ResponseCode) -> String {
    match rc {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::YXDomain => "YXDOMAIN".into(),
        ResponseCode::YXRRSet => "YXRRSET".into(),
        ResponseCode::NXRRSet => "NXRRSET".into(),
        ResponseCode::NotAuth => "NOTAUTH".into(),
        ResponseCode::NotZone => "NOTZONE".into(),
        other => format!("rcode {}", u16::from(other)),
    }
}

fn now_secs() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

impl NameServer for Rfc2136Updater {
    fn area(&self) -> &AreaName {
        &self.cfg.area
    }

    fn describe(&self) -> String {
        format!(
            "RFC 2136 server {} (zone {}, key {})",
            self.cfg.server, self.cfg.area_zone, self.cfg.key.name
        )
    }

    async fn held(&self) -> Result<Held, NameServerError> {
        let a = self.query(self.www.clone(), RecordType::A).await?;
        let aaaa = self.query(self.www.clone(), RecordType::AAAA).await?;
        let soa = self
            .query(self.cfg.area_zone.clone(), RecordType::SOA)
            .await?;
        let mut www = WwwRecords::default();
        let mut ttls = BTreeSet::new();
        for r in a.answers().iter().chain(aaaa.answers()) {
            if r.name() != &self.www {
                continue;
            }
            match r.data() {
                RData::A(x) => {
                    www.v4.insert(x.0);
                    ttls.insert(r.ttl());
                }
                RData::AAAA(x) => {
                    www.v6.insert(x.0);
                    ttls.insert(r.ttl());
                }
                _ => {}
            }
        }
        // Two different TTLs (A vs AAAA) count as "not the wanted TTL": take the largest.
        www.ttl = ttls.last().copied().unwrap_or(0);
        if ttls.len() > 1 {
            www.ttl = u32::MAX;
        }
        let serial = soa.answers().iter().find_map(|r| match r.data() {
            RData::SOA(s) => Some(s.serial()),
            _ => None,
        });
        let txt = self.query(self.epoch_name.clone(), RecordType::TXT).await?;
        let epoch = txt.answers().iter().find_map(|r| match r.data() {
            RData::TXT(t) => t
                .iter()
                .next()
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.trim().parse::<u64>().ok()),
            _ => None,
        });
        Ok(Held { www, serial, epoch })
    }

    async fn replace(&self, want: &WwwRecords, fence: &Fence) -> Result<(), NameServerError> {
        let mut msg = self.update_message(want, fence);
        let signer = self.cfg.key.signer().map_err(|e| self.refused(e))?;
        let mut verifier = msg
            .finalize(&signer, now_secs())
            .map_err(|e| self.failed(format!("cannot sign the update: {e}")))?;
        let bytes = msg
            .to_vec()
            .map_err(|e| self.failed(format!("cannot encode the update: {e}")))?;
        let raw = transport::exchange_raw(self.cfg.server, msg.id(), &bytes, self.cfg.timeout)
            .await
            .map_err(|e| self.unreachable(e))?;
        let reply = Message::from_vec(&raw)
            .map_err(|e| self.failed(format!("malformed reply to the update: {e}")))?;
        let rcode = reply.response_code();
        if let Some(err) = tsig_error(&reply) {
            return Err(self.refused(format!("{}, {}", rcode_name(rcode), tsig_error_name(err))));
        }
        // Authenticate the reply before believing it (RFC 8945 §5.3).
        let verified = match verifier.as_mut() {
            Some(v) => v(&raw).map(|_| ()),
            None => Ok(()),
        };
        match rcode {
            ResponseCode::NoError => verified
                .map_err(|e| self.failed(format!("reply to the update not authenticated: {e}"))),
            ResponseCode::ServFail => Err(self.failed("update answered SERVFAIL".into())),
            ResponseCode::Refused => Err(self.refused(format!(
                "REFUSED (the server's update-policy does not grant this key {} A/AAAA{}; `walrus-node dns bind-config` prints the policy; PowerDNS also answers a wrong or unknown key so)",
                self.www,
                if fence.epoch > 0 {
                    format!(" and {} TXT", self.epoch_name)
                } else {
                    String::new()
                }
            ))),
            // The prerequisite failed: another writer changed the epoch since we read it.
            ResponseCode::NXRRSet | ResponseCode::YXRRSet => Err(self.failed(format!(
                "{}: another writer changed the answer meanwhile; reading again",
                rcode_name(rcode)
            ))),
            // REFUSED (policy), NOTAUTH (not authoritative / key not allowed), NOTZONE,
            // FORMERR, NOTIMP, YXDOMAIN...: a human must look.
            rc => Err(self.refused(rcode_name(rc))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::director::zone::RecordTtl;

    const KEYGEN: &str = r#"key "walrus-area1" {
	algorithm hmac-sha256;
	secret "Fe7qz0cC7XnBsP4qgGLU7oY0yqg9Ba7mmQNs+1ou7Kk=";
};
"#;

    #[test]
    fn parses_tsig_keygen_output_and_round_trips() {
        let k = TsigKey::from_bind_key(KEYGEN).unwrap();
        assert_eq!(k.name.to_ascii(), "walrus-area1.");
        assert_eq!(k.secret.len(), 32);
        assert_eq!(TsigKey::from_bind_key(&k.to_bind_key()).unwrap(), k);
        assert!(
            !format!("{k:?}").contains("Fe7q"),
            "secret must not be printed"
        );
    }

    #[test]
    fn rejects_other_algorithms_and_bad_base64() {
        let md5 = KEYGEN.replace("hmac-sha256", "hmac-md5");
        assert!(TsigKey::from_bind_key(&md5).is_err());
        assert!(TsigKey::new("k", "not base64!").is_err());
        assert!(TsigKey::new("k", "").is_err());
        assert!(TsigKey::from_bind_key("zone \"x\" {};").is_err());
    }

    #[test]
    fn base64_round_trips_every_length() {
        for n in 0..10u8 {
            let v: Vec<u8> = (0..n).map(|i| i.wrapping_mul(97)).collect();
            assert_eq!(base64_decode(&base64_encode(&v)).unwrap(), v);
        }
    }

    fn updater() -> Rfc2136Updater {
        Rfc2136Updater::new(Rfc2136Config {
            area: AreaName::from("a1"),
            server: "127.0.0.1:53".parse().unwrap(),
            area_zone: fqdn("area-1.example.com").unwrap(),
            key: TsigKey::from_bind_key(KEYGEN).unwrap(),
            timeout: Duration::from_secs(1),
        })
        .unwrap()
    }

    #[test]
    fn update_deletes_both_rrsets_then_adds() {
        let want = WwwRecords::from_addrs(
            ["10.0.0.1", "2001:db8::1"].map(|s| s.parse().unwrap()),
            RecordTtl::DEFAULT,
        );
        let m = updater().update_message(&want, &Fence::NONE);
        assert_eq!(m.op_code(), OpCode::Update);
        // In an UPDATE, the answer section is the prerequisites, authority the updates.
        let ups = m.name_servers();
        assert_eq!(ups.len(), 4);
        assert_eq!(ups[0].dns_class(), DNSClass::ANY);
        assert_eq!(ups[0].record_type(), RecordType::A);
        assert_eq!(ups[1].record_type(), RecordType::AAAA);
        assert_eq!(ups[2].ttl(), 30);
        assert_eq!(ups[2].name().to_ascii(), "www.area-1.example.com.");
        assert_eq!(m.queries()[0].name().to_ascii(), "area-1.example.com.");
    }

    #[test]
    fn reads_the_tsig_error_of_a_refusal() {
        let k = TsigKey::from_bind_key(KEYGEN).unwrap();
        let mut reply = Message::new();
        reply.set_message_type(MessageType::Response);
        reply.set_response_code(ResponseCode::NotAuth);
        let tsig = hickory_proto::dnssec::rdata::tsig::TSIG::new(
            TsigAlgorithm::HmacSha256,
            1,
            300,
            vec![],
            7,
            17,
            vec![],
        );
        reply.add_tsig(hickory_proto::dnssec::rdata::tsig::make_tsig_record(
            k.name.clone(),
            tsig,
        ));
        let parsed = Message::from_vec(&reply.to_vec().unwrap()).unwrap();
        assert_eq!(tsig_error(&parsed), Some(17));
        assert_eq!(tsig_error(&Message::new()), None);
    }
}
