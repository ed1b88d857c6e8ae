//! The embedded server's reply cache: the serialised reply to a request, kept until the
//! zones or the steering change, so a repeated question costs a hash lookup and a copy
//! instead of parsing the request, looking the name up and serialising the reply (names
//! compared label by label: most of a query's CPU under load, measured with `perf`).
//!
//! What makes a cached reply exact: [`super::answer::respond_with`] is a pure function of
//! the request bytes, the transport, the zones, the steering pick and the rotation counter,
//! and the rotation only moves each A/AAAA rrset's start "modulo their length"
//! ([`super::answer::QueryContext::rotation`]). So the key is the request without its ID
//! (the ID is copied into the reply on the way out) and the transport; an entry keeps one
//! reply per rotation value modulo the least common multiple of the reply's A/AAAA rrset
//! sizes, filled as those values come. The server bypasses the cache when source steering
//! is on (the pick depends on the source address), and never caches a signed reply (TSIG
//! carries the time). [`AnswerCache::invalidate`] runs on every change of the zones or the
//! steering; a reply computed before a change is refused by [`AnswerCache::put`] (its
//! generation is stale), so a change is never hidden by a reply computed just before it.
//!
//! ```text
//!   request --get(bytes[2..], transport, rotation)--> hit: copy, set ID --> reply
//!          \--miss--> respond_with --> put(generation read before the zones) --> reply
//! ```

use super::answer::QueryTransport;
use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RecordType};
use std::collections::HashMap;
use std::sync::RwLock;

/// Most distinct requests kept (per transport); when full the cache starts again empty. A
/// site has a handful of names, but requests differ by EDNS options (cookies) and by the
/// letter case of the name (DNS 0x20), so the key space is open.
const MAX_ENTRIES: usize = 4096;
/// Most replies kept per request (rotations of its rrsets); a reply with a longer period
/// is not cached.
const MAX_PERIOD: usize = 64;

/// Cached replies, shared by the server's workers.
#[derive(Default)]
pub(crate) struct AnswerCache {
    slots: RwLock<Slots>,
}

#[derive(Default)]
struct Slots {
    /// Bumped by every invalidation: a reply computed under an older generation is stale.
    generation: u64,
    udp: HashMap<Box<[u8]>, Entry>,
    tcp: HashMap<Box<[u8]>, Entry>,
}

impl Slots {
    fn map(&mut self, transport: QueryTransport) -> &mut HashMap<Box<[u8]>, Entry> {
        match transport {
            QueryTransport::Udp => &mut self.udp,
            QueryTransport::Tcp => &mut self.tcp,
        }
    }
}

/// The replies to one request: index `rotation % replies.len()`.
struct Entry {
    replies: Vec<Option<Box<[u8]>>>,
}

impl AnswerCache {
    /// The current generation: read it *before* reading the zones a reply is computed
    /// from, and give it to [`AnswerCache::put`].
    pub(crate) fn generation(&self) -> u64 {
        match self.slots.read() {
            Ok(s) => s.generation,
            Err(p) => p.into_inner().generation,
        }
    }

    /// Forgets every reply (the zones or the steering changed).
    pub(crate) fn invalidate(&self) {
        let mut s = match self.slots.write() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        s.generation = s.generation.wrapping_add(1);
        s.udp.clear();
        s.tcp.clear();
    }

    /// The cached reply to `request` for this rotation, with the request's ID.
    pub(crate) fn get(
        &self,
        request: &[u8],
        transport: QueryTransport,
        rotation: usize,
    ) -> Option<Vec<u8>> {
        let key = request.get(2..).filter(|_| request.len() >= 12)?;
        let slots = match self.slots.read() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let map = match transport {
            QueryTransport::Udp => &slots.udp,
            QueryTransport::Tcp => &slots.tcp,
        };
        let entry = map.get(key)?;
        let cached = entry
            .replies
            .get(rotation % entry.replies.len())?
            .as_ref()?;
        let mut reply = cached.to_vec();
        reply[..2].copy_from_slice(&request[..2]);
        Some(reply)
    }

    /// Keeps `reply`, the answer to `request` computed with `rotation` from zones read
    /// after `generation` was; refused when the zones changed since, when the reply is
    /// signed, or when its rotation period is too long.
    pub(crate) fn put(
        &self,
        generation: u64,
        request: &[u8],
        transport: QueryTransport,
        rotation: usize,
        reply: &[u8],
    ) {
        if request.len() < 12 || reply.len() < 12 {
            return;
        }
        let Some(period) = rotation_period(reply) else {
            return;
        };
        let mut slots = match self.slots.write() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        if slots.generation != generation {
            return;
        }
        let map = slots.map(transport);
        let key = &request[2..];
        if map.len() >= MAX_ENTRIES && !map.contains_key(key) {
            map.clear();
        }
        let entry = map.entry(key.into()).or_insert_with(|| Entry {
            replies: vec![None; period],
        });
        if entry.replies.len() != period {
            // Cannot happen within one generation (same request, same zones); start over.
            entry.replies = vec![None; period];
        }
        entry.replies[rotation % period] = Some(reply.into());
    }
}

/// The number of distinct replies rotation can make of `reply`: the least common multiple
/// of its A/AAAA rrset sizes (1 without any rrset of two or more). `None` when the reply
/// must not be cached: it does not parse, it is signed, or the period exceeds
/// [`MAX_PERIOD`].
fn rotation_period(reply: &[u8]) -> Option<usize> {
    let m = Message::from_vec(reply).ok()?;
    if !m.signature().is_empty() {
        return None;
    }
    let mut sizes: HashMap<(Name, RecordType), usize> = HashMap::new();
    for r in m
        .answers()
        .iter()
        .chain(m.name_servers())
        .chain(m.additionals())
        .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
    {
        *sizes
            .entry((r.name().to_lowercase(), r.record_type()))
            .or_default() += 1;
    }
    let mut period = 1usize;
    for n in sizes.into_values() {
        period = period / gcd(period, n) * n;
        if period > MAX_PERIOD {
            return None;
        }
    }
    Some(period)
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{MessageType, Query};
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::{RData, Record};

    fn request(id: u16) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(id);
        m.add_query(Query::query(
            Name::from_ascii("www.example.com.").unwrap(),
            RecordType::A,
        ));
        m.to_vec().unwrap()
    }

    /// A reply with `n` A records starting at address `first`.
    fn reply(id: u16, n: u8, first: u8) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(id).set_message_type(MessageType::Response);
        let name = Name::from_ascii("www.example.com.").unwrap();
        if n == 0 {
            m.add_answer(Record::from_rdata(
                name.clone(),
                30,
                RData::CNAME(CNAME(Name::from_ascii("www.a.example.com.").unwrap())),
            ));
        }
        for i in 0..n {
            let last = (first + i - 1) % n + 1;
            m.add_answer(Record::from_rdata(
                name.clone(),
                30,
                RData::A(A::new(10, 0, 0, last)),
            ));
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn a_hit_carries_the_requests_id() {
        let c = AnswerCache::default();
        let g = c.generation();
        c.put(g, &request(1), QueryTransport::Udp, 0, &reply(1, 0, 1));
        let got = c.get(&request(77), QueryTransport::Udp, 5).unwrap();
        assert_eq!(got, reply(77, 0, 1));
        assert!(
            c.get(&request(77), QueryTransport::Tcp, 5).is_none(),
            "per transport"
        );
    }

    #[test]
    fn one_reply_per_rotation_modulo_the_rrset_size() {
        let c = AnswerCache::default();
        let g = c.generation();
        c.put(g, &request(1), QueryTransport::Udp, 3, &reply(1, 3, 1));
        assert_eq!(
            c.get(&request(2), QueryTransport::Udp, 6).unwrap(),
            reply(2, 3, 1)
        );
        assert!(
            c.get(&request(2), QueryTransport::Udp, 4).is_none(),
            "not filled yet"
        );
        c.put(g, &request(1), QueryTransport::Udp, 4, &reply(1, 3, 2));
        assert_eq!(
            c.get(&request(2), QueryTransport::Udp, 7).unwrap(),
            reply(2, 3, 2)
        );
    }

    #[test]
    fn a_reply_computed_before_a_change_is_refused() {
        let c = AnswerCache::default();
        let before = c.generation();
        c.invalidate();
        c.put(before, &request(1), QueryTransport::Udp, 0, &reply(1, 0, 1));
        assert!(c.get(&request(1), QueryTransport::Udp, 0).is_none());
        c.put(
            c.generation(),
            &request(1),
            QueryTransport::Udp,
            0,
            &reply(1, 0, 1),
        );
        assert!(c.get(&request(1), QueryTransport::Udp, 0).is_some());
        c.invalidate();
        assert!(c.get(&request(1), QueryTransport::Udp, 0).is_none());
    }

    #[test]
    fn garbage_is_neither_kept_nor_found() {
        let c = AnswerCache::default();
        let g = c.generation();
        c.put(g, &request(1), QueryTransport::Udp, 0, b"not a dns message");
        c.put(g, b"short", QueryTransport::Udp, 0, &reply(1, 0, 1));
        assert!(c.get(&request(1), QueryTransport::Udp, 0).is_none());
        assert!(c.get(b"", QueryTransport::Udp, 0).is_none());
    }

    #[test]
    fn periods() {
        assert_eq!(rotation_period(&reply(1, 0, 1)), Some(1));
        assert_eq!(rotation_period(&reply(1, 1, 1)), Some(1));
        assert_eq!(rotation_period(&reply(1, 4, 1)), Some(4));
        assert_eq!(gcd(12, 18), 6);
    }
}
