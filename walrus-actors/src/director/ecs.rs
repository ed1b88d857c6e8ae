//! EDNS Client Subnet (RFC 7871) in a request: found and checked, sans-IO.
//!
//! A resolver that sends ECS tells the authoritative server which client subnet it asks
//! for, so source steering ([`super::steering`]) can answer by where the *client* is rather
//! than where its resolver is. This module only reads the option out of the request bytes
//! and checks it strictly; what the answer and its SCOPE PREFIX-LENGTH are is
//! [`super::steering::Steering::pick`]'s rule, and putting the option into the reply is
//! [`super::answer`]'s.
//!
//! Why we walk the raw message instead of taking hickory-proto's parsed
//! `EdnsOption::Subnet`: hickory reads exactly the octets the source prefix needs and
//! ignores any extra octets, and it does not look at the bits beyond the prefix, so two of
//! RFC 7871 §6's FORMERR cases ("too few or too many ADDRESS octets, or non-zero ADDRESS
//! bits set beyond SOURCE PREFIX-LENGTH") would pass unseen. Here every length comes from
//! the message and is checked against what is left of it: no read goes past the request,
//! and every loop consumes input, so any byte string is safe to give.
//!
//! ```text
//!   request bytes ──client_subnet──► Ok(None)              no OPT, or OPT without ECS
//!                                   Ok(Some(ClientSubnet)) family 1/2, source ≤ 32/128,
//!                                                          exact octets, zero tail bits,
//!                                                          scope 0, one option only
//!                                   Err(EcsError)          → FORMERR
//! ```

use super::steering::SourcePrefix;
use hickory_proto::rr::Name;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The OPT pseudo-record's type (RFC 6891 §6.1.2).
const TYPE_OPT: u16 = 41;
/// The ECS option's code (RFC 7871 §6).
pub const OPTION_CODE: u16 = 8;
/// Address family numbers (IANA) ECS uses.
const FAMILY_IPV4: u16 = 1;
const FAMILY_IPV6: u16 = 2;

/// Why an ECS option is rejected (the request is answered FORMERR, RFC 7871 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EcsError {
    /// The option is shorter than its fixed part (family, source, scope).
    #[error("ECS option too short")]
    TooShort,
    /// A family other than IPv4 (1) or IPv6 (2).
    #[error("ECS family {0} not IPv4 or IPv6")]
    Family(u16),
    /// SOURCE PREFIX-LENGTH longer than the family's address.
    #[error("ECS source prefix /{0} longer than the address")]
    SourceTooLong(u8),
    /// ADDRESS has more or fewer octets than SOURCE PREFIX-LENGTH needs.
    #[error("ECS address has {got} octets, source prefix needs {want}")]
    AddressOctets {
        /// Octets in the option.
        got: usize,
        /// Octets the source prefix needs.
        want: usize,
    },
    /// A bit beyond SOURCE PREFIX-LENGTH is set.
    #[error("ECS address has bits set beyond the source prefix")]
    BitsBeyondPrefix,
    /// SCOPE PREFIX-LENGTH is not 0 in a query (RFC 7871 §6: "MUST be set to 0").
    #[error("ECS scope /{0} in a query")]
    ScopeInQuery(u8),
    /// More than one ECS option: which client would we answer for?
    #[error("more than one ECS option")]
    Repeated,
}

/// The client subnet a query carries: its address (zero beyond the prefix) and SOURCE
/// PREFIX-LENGTH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSubnet {
    /// The client's prefix as sent.
    pub prefix: SourcePrefix,
}

/// The ECS option of `request`, checked. `Ok(None)` when there is none, and also when the
/// message cannot be walked (a broken message is not ours to judge here: the parser that
/// answers it says FORMERR on its own).
pub fn client_subnet(request: &[u8]) -> Result<Option<ClientSubnet>, EcsError> {
    let Some(rdata) = opt_rdata(request) else {
        return Ok(None);
    };
    let mut found = None;
    let mut rest = rdata;
    while let [c0, c1, l0, l1, tail @ ..] = rest {
        let code = u16::from_be_bytes([*c0, *c1]);
        let len = usize::from(u16::from_be_bytes([*l0, *l1]));
        let Some((data, after)) = tail.split_at_checked(len) else {
            // The option runs past the OPT record: not a well-formed OPT at all.
            return Ok(found);
        };
        if code == OPTION_CODE {
            if found.is_some() {
                return Err(EcsError::Repeated);
            }
            found = Some(decode(data)?);
        }
        rest = after;
    }
    Ok(found)
}

/// Checks one ECS option's data (RFC 7871 §6).
pub fn decode(data: &[u8]) -> Result<ClientSubnet, EcsError> {
    let [f0, f1, source, scope, address @ ..] = data else {
        return Err(EcsError::TooShort);
    };
    let family = u16::from_be_bytes([*f0, *f1]);
    let max = match family {
        FAMILY_IPV4 => 32,
        FAMILY_IPV6 => 128,
        other => return Err(EcsError::Family(other)),
    };
    if *source > max {
        return Err(EcsError::SourceTooLong(*source));
    }
    let want = usize::from(source.div_ceil(8));
    if address.len() != want {
        return Err(EcsError::AddressOctets {
            got: address.len(),
            want,
        });
    }
    if let Some(last) = address.last() {
        let used = source % 8;
        if used != 0 && last & (0xffu8 >> used) != 0 {
            return Err(EcsError::BitsBeyondPrefix);
        }
    }
    if *scope != 0 {
        return Err(EcsError::ScopeInQuery(*scope));
    }
    let addr = if family == FAMILY_IPV4 {
        let mut o = [0u8; 4];
        o[..want].copy_from_slice(address);
        IpAddr::V4(Ipv4Addr::from(o))
    } else {
        let mut o = [0u8; 16];
        o[..want].copy_from_slice(address);
        IpAddr::V6(Ipv6Addr::from(o))
    };
    Ok(ClientSubnet {
        prefix: SourcePrefix::new(addr, *source),
    })
}

/// The RDATA of the request's OPT record, if it has one that can be reached.
fn opt_rdata(request: &[u8]) -> Option<&[u8]> {
    let count = |i: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*request.get(i)?, *request.get(i + 1)?]))
    };
    let (qd, an, ns, ar) = (count(4)?, count(6)?, count(8)?, count(10)?);
    let mut d = BinDecoder::new(request);
    d.read_slice(12).ok()?;
    for _ in 0..qd {
        Name::read(&mut d).ok()?;
        d.read_slice(4).ok()?;
    }
    let records = u32::from(an) + u32::from(ns) + u32::from(ar);
    for _ in 0..records {
        Name::read(&mut d).ok()?;
        let rtype = d.read_u16().ok()?.unverified(/* any type is fine to compare */);
        d.read_slice(6).ok()?;
        let len = d.read_u16().ok()?.unverified(/* bounded by read_slice below */);
        let rdata = d.read_slice(usize::from(len)).ok()?.unverified(/* raw bytes */);
        if rtype == TYPE_OPT {
            return Some(rdata);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message, Query};
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    use hickory_proto::rr::RecordType;

    /// A query whose OPT carries the given raw options (code, data).
    fn query_with(options: &[(u16, &[u8])]) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(1);
        m.add_query(Query::query(
            Name::from_ascii("www.example.com.").unwrap(),
            RecordType::A,
        ));
        let mut e = Edns::new();
        e.set_max_payload(1232);
        for (code, data) in options {
            e.options_mut()
                .insert(EdnsOption::Unknown(*code, data.to_vec()));
        }
        m.set_edns(e);
        m.to_vec().unwrap()
    }

    #[test]
    fn a_well_formed_option_is_read() {
        let got = client_subnet(&query_with(&[(8, &[0, 1, 24, 0, 10, 2, 3])])).unwrap();
        assert_eq!(
            got.unwrap().prefix,
            SourcePrefix::parse("10.2.3.0/24").unwrap()
        );
        let got = client_subnet(&query_with(&[(
            8,
            &[0, 2, 33, 0, 0x20, 1, 0xd, 0xb8, 0x80],
        )]))
        .unwrap();
        assert_eq!(
            got.unwrap().prefix,
            SourcePrefix::parse("2001:db8:8000::/33").unwrap()
        );
        // Source 0: no address octets (a client that opted out).
        let got = client_subnet(&query_with(&[(8, &[0, 1, 0, 0])])).unwrap();
        assert_eq!(got.unwrap().prefix.len(), 0);
        // Other options around it are skipped.
        let got = client_subnet(&query_with(&[
            (10, &[1, 2, 3, 4, 5, 6, 7, 8]),
            (8, &[0, 1, 32, 0, 127, 0, 0, 2]),
        ]))
        .unwrap();
        assert_eq!(
            got.unwrap().prefix,
            SourcePrefix::parse("127.0.0.2").unwrap()
        );
    }

    #[test]
    fn hickory_writes_what_we_read() {
        let mut m = Message::from_vec(&query_with(&[])).unwrap();
        let mut e = m.extensions().clone().unwrap();
        e.options_mut()
            .insert(EdnsOption::Subnet("192.0.2.0/24".parse().unwrap()));
        m.set_edns(e);
        let got = client_subnet(&m.to_vec().unwrap()).unwrap().unwrap();
        assert_eq!(got.prefix, SourcePrefix::parse("192.0.2.0/24").unwrap());
        assert_eq!(u16::from(EdnsCode::Subnet), OPTION_CODE);
    }

    #[test]
    fn malformed_options_are_errors() {
        let cases: [(&[u8], EcsError); 8] = [
            (&[0, 1, 24], EcsError::TooShort),
            (&[0, 3, 0, 0], EcsError::Family(3)),
            (&[0, 1, 33, 0, 1, 2, 3, 4, 5], EcsError::SourceTooLong(33)),
            (&[0, 2, 129, 0], EcsError::SourceTooLong(129)),
            (
                &[0, 1, 24, 0, 10, 2],
                EcsError::AddressOctets { got: 2, want: 3 },
            ),
            (
                &[0, 1, 24, 0, 10, 2, 3, 0],
                EcsError::AddressOctets { got: 4, want: 3 },
            ),
            (&[0, 1, 23, 0, 10, 2, 3], EcsError::BitsBeyondPrefix),
            (&[0, 1, 24, 24, 10, 2, 3], EcsError::ScopeInQuery(24)),
        ];
        for (data, want) in cases {
            assert_eq!(
                client_subnet(&query_with(&[(8, data)])),
                Err(want),
                "{data:?}"
            );
        }
        let one: &[u8] = &[0, 1, 8, 0, 10];
        assert_eq!(
            client_subnet(&query_with(&[(8, one), (8, one)])),
            Err(EcsError::Repeated)
        );
    }

    #[test]
    fn no_option_and_garbage_are_none() {
        assert_eq!(client_subnet(&query_with(&[])), Ok(None));
        let mut plain = Message::new();
        plain.add_query(Query::query(Name::root(), RecordType::A));
        assert_eq!(client_subnet(&plain.to_vec().unwrap()), Ok(None));
        let q = query_with(&[(8, &[0, 1, 24, 0, 10, 2, 3])]);
        for cut in 0..q.len() {
            // Never panics; a cut-short message has no reachable option or a short one.
            let _ = client_subnet(&q[..cut]);
        }
        for junk in [&[][..], &[0xff; 12], &[0; 11], &[0xc0; 40]] {
            assert_eq!(client_subnet(junk), Ok(None), "{junk:?}");
        }
    }

    #[test]
    fn random_options_never_panic_and_what_is_accepted_reencodes_to_the_same_bytes() {
        // A fixed seed: replayed exactly.
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0x0ec5_7871);
        let mut next = move || rand::Rng::random::<u64>(&mut rng);
        let mut accepted = 0;
        for _ in 0..20_000 {
            let len = (next() % 24) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Bias towards plausible headers so the deeper checks are reached.
            if len >= 4 && next() % 2 == 0 {
                data[0] = 0;
                data[1] = 1 + (next() % 2) as u8;
                data[2] = (next() % 130) as u8;
                data[3] = 0;
                if next() % 2 == 0 {
                    // The right number of octets, the tail bits cleared.
                    let source = data[2];
                    data.resize(4 + usize::from(source.div_ceil(8)), 0);
                    if let (Some(last), used @ 1..=7) = (data.last_mut(), source % 8) {
                        *last &= 0xffu8 << (8 - used);
                    }
                }
            }
            let Ok(c) = decode(&data) else {
                continue;
            };
            accepted += 1;
            let again = hickory_proto::rr::rdata::opt::ClientSubnet::new(
                c.prefix.addr(),
                c.prefix.len(),
                0,
            );
            assert_eq!(Vec::<u8>::try_from(&again).unwrap(), data);
        }
        assert!(
            accepted > 100,
            "only {accepted} accepted: the generator is off"
        );
    }
}
