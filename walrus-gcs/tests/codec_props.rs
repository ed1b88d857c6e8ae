//! Property tests of the wire: every `PeerMessage` round-trips through a transport frame,
//! and the decoder survives arbitrary and mutated bytes (no panic, bounded memory). This
//! is the decoder's fuzz target that runs under `cargo test`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use walrus_gcs::codec::{self, FRAME_HEADER_LEN, MAX_FRAME};
use walrus_gcs::{
    Accept, AcceptData, AcceptGroups, Ack, Cut, Entry, FlushReport, GroupName, GroupRecord,
    Heartbeat, Incarnation, Install, InstallData, InstallGroups, Member, NodeId, NodeRef, Op,
    OpKind, Ordered, PeerMessage, Propose, Reject, Run, Service, SessionId, Stamp, Submit, ViewId,
};

fn node_id() -> impl Strategy<Value = NodeId> {
    "[a-z][a-z0-9-]{0,12}".prop_map(NodeId::new)
}
fn inc() -> impl Strategy<Value = Incarnation> {
    any::<u64>().prop_map(Incarnation)
}
fn view_id() -> impl Strategy<Value = ViewId> {
    (any::<u64>(), node_id(), inc()).prop_map(|(counter, coordinator, incarnation)| ViewId {
        counter,
        coordinator,
        incarnation,
    })
}
fn node_ref() -> impl Strategy<Value = NodeRef> {
    (node_id(), inc()).prop_map(|(id, incarnation)| NodeRef { id, incarnation })
}
fn group() -> impl Strategy<Value = GroupName> {
    "[A-Za-z]{1,12}".prop_map(GroupName::new)
}
fn service() -> impl Strategy<Value = Service> {
    prop_oneof![Just(Service::Reliable), Just(Service::Agreed)]
}
fn op() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![
        group().prop_map(OpKind::Join),
        group().prop_map(OpKind::Leave),
        Just(OpKind::Gone),
        (
            service(),
            prop::collection::vec(group(), 1..4),
            prop::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(service, groups, payload)| OpKind::Message {
                service,
                groups,
                payload: payload.into(),
                client: None,
            }),
    ];
    (any::<u64>(), any::<u64>(), kind).prop_map(|(counter, s, kind)| Op {
        counter,
        session: SessionId(s),
        kind,
    })
}
fn entry() -> impl Strategy<Value = Entry> {
    (any::<u64>(), node_ref(), op()).prop_map(|(seq, origin, op)| Entry { seq, origin, op })
}
fn member() -> impl Strategy<Value = Member> {
    (node_id(), inc(), any::<u64>()).prop_map(|(node, incarnation, s)| Member {
        node,
        incarnation,
        session: SessionId(s),
    })
}
fn record() -> impl Strategy<Value = GroupRecord> {
    (group(), view_id(), any::<u64>(), member(), any::<bool>()).prop_map(
        |(group, view, seq, member, alone)| GroupRecord {
            group,
            stamp: Stamp { view, seq },
            member,
            alone,
        },
    )
}
fn entries() -> impl Strategy<Value = Vec<Entry>> {
    prop::collection::vec(entry(), 0..5)
}

fn peer_message() -> impl Strategy<Value = PeerMessage> {
    prop_oneof![
        (
            inc(),
            view_id(),
            prop::collection::vec(node_ref(), 0..6),
            any::<u64>()
        )
            .prop_map(
                |(incarnation, view, alive, max_counter)| PeerMessage::Heartbeat(Heartbeat {
                    incarnation,
                    view,
                    alive,
                    max_counter
                })
            ),
        (
            inc(),
            view_id(),
            any::<u64>(),
            prop::collection::vec(op(), 0..5)
        )
            .prop_map(
                |(incarnation, view, base, ops)| PeerMessage::Submit(Submit {
                    incarnation,
                    view,
                    base,
                    ops
                })
            ),
        (
            inc(),
            view_id(),
            any::<u64>(),
            prop::collection::vec((node_ref(), prop::collection::vec(op(), 0..4)), 0..4)
        )
            .prop_map(
                |(incarnation, view, first, runs)| PeerMessage::Ordered(Ordered {
                    incarnation,
                    view,
                    first,
                    runs: runs
                        .into_iter()
                        .map(|(origin, ops)| Run { origin, ops })
                        .collect()
                })
            ),
        (inc(), view_id(), any::<u64>(), any::<u64>()).prop_map(
            |(incarnation, view, held, delivered)| PeerMessage::Ack(Ack {
                incarnation,
                view,
                held,
                delivered,
            })
        ),
        (inc(), view_id(), prop::collection::vec(node_ref(), 0..6)).prop_map(
            |(incarnation, proposal, members)| PeerMessage::Propose(Propose {
                incarnation,
                proposal,
                members
            })
        ),
        (inc(), view_id(), entries()).prop_map(|(incarnation, proposal, entries)| {
            PeerMessage::AcceptData(AcceptData {
                incarnation,
                proposal,
                entries,
            })
        }),
        (
            inc(),
            view_id(),
            view_id(),
            any::<(u64, u64, u64, u64, u64)>(),
        )
            .prop_map(
                |(
                    incarnation,
                    proposal,
                    old_view,
                    (delivered, commit, group_count, held_count, max_counter),
                )| {
                    PeerMessage::Accept(Accept {
                        incarnation,
                        proposal,
                        report: FlushReport {
                            old_view,
                            delivered,
                            commit,
                            group_count,
                            held_count,
                            max_counter,
                        },
                    })
                }
            ),
        (inc(), view_id(), view_id()).prop_map(|(incarnation, proposal, highest)| {
            PeerMessage::Reject(Reject {
                incarnation,
                proposal,
                highest,
            })
        }),
        (inc(), view_id(), view_id(), entries()).prop_map(
            |(incarnation, view, old_view, entries)| {
                PeerMessage::InstallData(InstallData {
                    incarnation,
                    view,
                    old_view,
                    entries,
                })
            }
        ),
        (
            inc(),
            view_id(),
            prop::collection::vec(node_ref(), 0..6),
            prop::collection::vec(
                (
                    view_id(),
                    any::<u64>(),
                    prop::collection::vec(any::<u64>(), 0..5)
                )
                    .prop_map(|(old_view, above, seqs)| Cut {
                        old_view,
                        above,
                        seqs
                    }),
                0..3
            ),
            any::<u64>(),
        )
            .prop_map(|(incarnation, view, members, cuts, group_count)| {
                PeerMessage::Install(Install {
                    incarnation,
                    view,
                    members,
                    cuts,
                    group_count,
                })
            }),
        (inc(), view_id(), prop::collection::vec(record(), 0..4)).prop_map(
            |(incarnation, proposal, groups)| {
                PeerMessage::AcceptGroups(AcceptGroups {
                    incarnation,
                    proposal,
                    groups,
                })
            }
        ),
        (inc(), view_id(), prop::collection::vec(record(), 0..4)).prop_map(
            |(incarnation, view, groups)| {
                PeerMessage::InstallGroups(InstallGroups {
                    incarnation,
                    view,
                    groups,
                })
            }
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Every message survives framing: header, length, body, as the transport does it.
    #[test]
    fn every_peer_message_round_trips_through_a_frame(
        msg in peer_message(),
        from in node_id(),
    ) {
        let mut buf = Vec::new();
        codec::encode_frame(&(from.as_str(), &msg), &mut buf).unwrap();
        let header: [u8; FRAME_HEADER_LEN] = buf[..FRAME_HEADER_LEN].try_into().unwrap();
        let len = codec::parse_frame_header(header, MAX_FRAME).unwrap();
        prop_assert_eq!(len, buf.len() - FRAME_HEADER_LEN);
        let (f, back): (String, PeerMessage) = codec::decode(&buf[FRAME_HEADER_LEN..]).unwrap();
        prop_assert_eq!(f, from.as_str());
        prop_assert_eq!(back, msg);
    }

    /// Arbitrary bytes never panic the decoder.
    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = codec::decode::<(String, PeerMessage)>(&bytes);
        if bytes.len() >= FRAME_HEADER_LEN {
            let header: [u8; FRAME_HEADER_LEN] = bytes[..FRAME_HEADER_LEN].try_into().unwrap();
            if let Ok(len) = codec::parse_frame_header(header, 4096) {
                prop_assert!(len > 0 && len <= 4096);
            }
        }
    }

    /// Valid encodings with a few bytes changed, or cut short, never panic the decoder,
    /// and anything it accepts encodes back to the same bytes' meaning.
    #[test]
    fn mutated_frames_never_panic_the_decoder(
        msg in peer_message(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = codec::encode(&("n0", &msg)).unwrap();
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= b | 1;
        }
        if let Ok((_, m)) = codec::decode::<(String, PeerMessage)>(&bytes) {
            let again = codec::encode(&("n0", &m)).unwrap();
            prop_assert!(codec::decode::<(String, PeerMessage)>(&again).is_ok());
        }
        let short = &bytes[..cut.index(bytes.len())];
        let _ = codec::decode::<(String, PeerMessage)>(short);
    }
}

/// A length prefix that claims gigabytes inside a small frame must fail without
/// allocating them (the limit is checked before allocation).
#[test]
fn huge_inner_length_prefixes_fail_fast() {
    // A Vec<u8> payload whose varint length claims u64::MAX bytes.
    let mut bytes = codec::encode(&("n0", 1u8)).unwrap();
    bytes.truncate(3);
    bytes.extend_from_slice(&[0xFD, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
    let t = std::time::Instant::now();
    assert!(codec::decode::<(String, Vec<u8>)>(&bytes).is_err());
    assert!(t.elapsed() < std::time::Duration::from_secs(1));
}
