//! The two sides of a client link wired in memory to a member alone in its view.

use super::*;
use crate::config::CoreConfig;
use crate::event::{MembershipReason, Output};
use crate::node::Node;
use crate::types::{Incarnation, NodeId};
use std::time::Instant;

struct World {
    now: Instant,
    node: Node,
    host: ClientHost,
    client: ClientCore,
    /// Whether notices reach the client (false: they are lost with the link).
    notices_arrive: bool,
    /// What the client's application got.
    got: Vec<(SessionId, Event)>,
    /// The membership events the node delivered to hosted sessions, in order.
    hosted_membership: Vec<Event>,
    /// Membership notices sent whole and as deltas.
    snapshots: usize,
    deltas: usize,
}

fn member() -> NodeId {
    NodeId::new("m1")
}

fn world(limits: HostLimits) -> World {
    world_with(CoreConfig::default(), limits)
}

fn world_with(config: CoreConfig, limits: HostLimits) -> World {
    let now = Instant::now();
    let node = Node::new(config, member(), Incarnation(1), vec![member()], now);
    let client = ClientCore::new(ClientConfig {
        name: NodeId::new("client.a"),
        incarnation: Incarnation(7),
        members: vec![member()],
        window: 8,
    });
    let mut w = World {
        now,
        node,
        host: ClientHost::new(limits),
        client,
        notices_arrive: true,
        got: Vec::new(),
        hosted_membership: Vec::new(),
        snapshots: 0,
        deltas: 0,
    };
    w.run();
    w
}

impl World {
    /// Moves everything until nothing moves; returns the host's refusals.
    fn run(&mut self) -> Vec<HostRefusal> {
        let mut refused = Vec::new();
        let name = NodeId::new("client.a");
        for _ in 0..100 {
            let mut moved = false;
            while let Some(out) = self.node.poll_output() {
                moved = true;
                if let Output::Deliver {
                    session,
                    event: event @ Event::Membership { .. },
                } = &out
                {
                    if self.host.hosts(*session) {
                        self.hosted_membership.push(event.clone());
                    }
                }
                let _ = self.host.on_output(&mut self.node, out);
            }
            while let Some((_, notice)) = self.host.poll_notice() {
                moved = true;
                match &notice {
                    ClientNotice::Membership {
                        change: MemberChange::Snapshot(_),
                        ..
                    } => self.snapshots += 1,
                    ClientNotice::Membership { .. } => self.deltas += 1,
                    _ => {}
                }
                if self.notices_arrive {
                    self.client.handle(&member(), notice);
                }
            }
            while let Some(out) = self.client.poll_output() {
                moved = true;
                match out {
                    ClientOutput::Connect(m) => {
                        assert_eq!(m, member());
                        self.host
                            .attach(&mut self.node, self.now, &name, Incarnation(7))
                            .unwrap();
                        self.client.link_up(&m);
                    }
                    ClientOutput::Send { req, .. } => {
                        if let Err(e) = self.host.request(&mut self.node, self.now, &name, req) {
                            refused.push(e);
                        }
                    }
                    ClientOutput::Deliver { session, event } => self.got.push((session, event)),
                }
            }
            if !moved {
                break;
            }
        }
        refused
    }

    fn messages(&self) -> Vec<Vec<u8>> {
        self.got
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Message { payload, .. } => Some(payload.to_vec()),
                _ => None,
            })
            .collect()
    }
}

fn g() -> GroupName {
    GroupName::new("g")
}

#[test]
fn a_client_session_joins_multicasts_and_is_confirmed() {
    let mut w = world(HostLimits::default());
    assert!(w.host.is_attached(&NodeId::new("client.a")));
    let s = w.client.open_session();
    w.client.join(s, g()).unwrap();
    let counter = w
        .client
        .multicast(s, Service::Agreed, &[g()], b"hi".to_vec())
        .unwrap();
    assert_eq!(counter, 1);
    assert!(w.run().is_empty());
    assert_eq!(w.client.unconfirmed(), 0);
    assert_eq!(w.messages(), vec![b"hi".to_vec()]);
    let joined = w.got.iter().any(|(_, e)| {
        matches!(e, Event::Membership { reason: MembershipReason::Join, members, .. }
            if members.len() == 1 && members[0].node == member())
    });
    assert!(joined, "{:?}", w.got);
    let Some((_, Event::Message { client, sender, .. })) = w
        .got
        .iter()
        .find(|(_, e)| matches!(e, Event::Message { .. }))
    else {
        panic!("no message");
    };
    assert_eq!(sender.0, member());
    assert_eq!(
        client.as_ref().map(|id| (id.client.as_str(), id.counter)),
        Some(("client.a", 1))
    );
}

/// The link ends before the confirmation arrives: the client sends the message again
/// after re-attaching, the member drops the copy (its session does not get it twice)
/// and confirms it.
#[test]
fn a_message_sent_again_after_reattaching_is_delivered_once() {
    let mut w = world(HostLimits::default());
    let s = w.client.open_session();
    w.client.join(s, g()).unwrap();
    w.run();
    w.notices_arrive = false;
    w.client
        .multicast(s, Service::Agreed, &[g()], b"once".to_vec())
        .unwrap();
    w.run();
    assert_eq!(w.client.unconfirmed(), 1);
    // The link ends: the member closes the client's sessions; the client attaches again.
    w.host.detach(&mut w.node, w.now, &NodeId::new("client.a"));
    w.notices_arrive = true;
    w.client.link_down(&member());
    assert!(w.run().is_empty());
    assert_eq!(w.client.unconfirmed(), 0, "the copy was not confirmed");
    assert!(
        w.messages().is_empty(),
        "the copy was delivered: {:?}",
        w.got
    );
    // The session was opened and joined again at the member.
    assert_eq!(w.node.group_members(&g()).len(), 1);
}

#[test]
fn a_client_that_breaks_the_rules_is_refused() {
    let mut w = world(HostLimits {
        sessions_per_client: 1,
        ..HostLimits::default()
    });
    let name = NodeId::new("client.a");
    let now = w.now;
    let join = ClientRequest::Join {
        session: SessionId(9),
        group: g(),
    };
    assert!(matches!(
        w.host.request(&mut w.node, now, &name, join),
        Err(HostRefusal::Protocol(_))
    ));
    let open = |s| ClientRequest::Open {
        session: SessionId(s),
    };
    w.host.request(&mut w.node, now, &name, open(1)).unwrap();
    assert!(matches!(
        w.host.request(&mut w.node, now, &name, open(2)),
        Err(HostRefusal::TooManySessions(1))
    ));
    let m = |counter| ClientRequest::Multicast {
        session: SessionId(1),
        counter,
        service: Service::Reliable,
        groups: vec![g()],
        payload: vec![1],
    };
    w.host.request(&mut w.node, now, &name, m(5)).unwrap();
    assert!(matches!(
        w.host.request(&mut w.node, now, &name, m(5)),
        Err(HostRefusal::Protocol(_))
    ));
    let stranger = NodeId::new("client.b");
    assert_eq!(
        w.host.request(&mut w.node, now, &stranger, open(1)),
        Err(HostRefusal::NotAttached)
    );
    // An older incarnation of an attached client is stale.
    assert_eq!(
        w.host.attach(&mut w.node, now, &name, Incarnation(6)),
        Err(HostRefusal::Stale)
    );
}

/// The node disconnects a client's session that got more than `session_queue_limit`
/// events at once (here a burst of a local session's messages): what the client sent on
/// it before hearing so goes nowhere, as a local application's would, and does not
/// refuse the client. (Simulator seed 8612, 7 December 2026: the member refused the
/// client, "s2 is not open", and closed its link.)
#[test]
fn requests_on_a_session_the_node_disconnected_go_nowhere_and_do_not_refuse_the_client() {
    let config = CoreConfig {
        session_queue_limit: 4,
        ..CoreConfig::default()
    };
    let mut w = world_with(config, HostLimits::default());
    let s = w.client.open_session();
    w.client.join(s, g()).unwrap();
    assert!(w.run().is_empty());
    let local = w.node.open_session(w.now);
    w.node.join(w.now, local, g()).unwrap();
    for p in 0..6u8 {
        // The local session reads as it goes (so its sends are not held back).
        w.node.mark_read(local, 10);
        w.node
            .multicast(w.now, local, Service::Agreed, &[g()], vec![p])
            .unwrap();
    }
    // The node's outputs reach the host, not yet the client: its next requests on the
    // session are on their way.
    let name = NodeId::new("client.a");
    while let Some(out) = w.node.poll_output() {
        let _ = w.host.on_output(&mut w.node, out);
    }
    let multicast = ClientRequest::Multicast {
        session: s,
        counter: 1,
        service: Service::Agreed,
        groups: vec![g()],
        payload: b"late".to_vec(),
    };
    let leave = ClientRequest::Leave {
        session: s,
        group: g(),
    };
    for req in [multicast, leave, ClientRequest::Close { session: s }] {
        assert_eq!(w.host.request(&mut w.node, w.now, &name, req), Ok(()));
    }
    assert!(w.run().is_empty());
    assert!(
        w.got
            .iter()
            .any(|(session, e)| *session == s && matches!(e, Event::Disconnected { .. })),
        "{:?}",
        w.got
    );
    assert!(!w.messages().contains(&b"late".to_vec()));
    // A session the client never opened is still a breach.
    let stranger = ClientRequest::Leave {
        session: SessionId(99),
        group: g(),
    };
    assert!(matches!(
        w.host.request(&mut w.node, w.now, &name, stranger),
        Err(HostRefusal::Protocol(_))
    ));
}

/// Bytes from a client are decoded as a `ClientRequest` only, with the codec's size
/// limit.
#[test]
fn client_bytes_are_decoded_with_a_size_limit() {
    let req = ClientRequest::Open {
        session: SessionId(1),
    };
    let bytes = crate::codec::encode(&req).unwrap();
    assert_eq!(crate::codec::decode::<ClientRequest>(&bytes).unwrap(), req);
    let huge = vec![0u8; crate::codec::MAX_FRAME + 1];
    assert!(crate::codec::decode::<ClientRequest>(&huge).is_err());
    assert!(crate::codec::decode::<ClientRequest>(&[0xff, 0xff, 0xff]).is_err());
}

/// Membership changes cross the link as deltas; the client's application still gets
/// every list whole, the same as the member's core delivered to the hosted sessions.
#[test]
fn membership_changes_cross_the_link_as_deltas_and_are_rebuilt_whole() {
    let mut w = world(HostLimits::default());
    let local = w.node.open_session(w.now);
    w.node.join(w.now, local, g()).unwrap();
    let (s1, s2, s3) = (
        w.client.open_session(),
        w.client.open_session(),
        w.client.open_session(),
    );
    for s in [s1, s2, s3] {
        w.client.join(s, g()).unwrap();
        w.run();
    }
    w.client.join(s1, GroupName::new("other")).unwrap();
    w.client.leave(s2, g()).unwrap();
    w.run();
    w.client.join(s2, g()).unwrap();
    w.run();
    w.client.close_session(s3).unwrap();
    w.run();
    w.node.leave(w.now, local, g()).unwrap();
    assert!(w.run().is_empty());
    let rebuilt: Vec<Event> = w
        .got
        .iter()
        .filter(|(_, e)| matches!(e, Event::Membership { .. }))
        .map(|(_, e)| e.clone())
        .collect();
    let first_difference = rebuilt
        .iter()
        .zip(&w.hosted_membership)
        .position(|(a, b)| a != b);
    assert_eq!(
        (rebuilt.len(), first_difference),
        (w.hosted_membership.len(), None),
        "{rebuilt:?}"
    );
    assert!(rebuilt.len() >= 12, "{rebuilt:?}");
    // Whole once per session and group it (re)joined: s1, s2, s3 in g, s1 in other, s2
    // in g again. Everything else is a delta.
    assert_eq!(w.snapshots, 5, "{:?}", w.got);
    assert_eq!(w.deltas, rebuilt.len() - 5);
    // After re-attaching, the first change of each group is whole again.
    w.host.detach(&mut w.node, w.now, &NodeId::new("client.a"));
    w.client.link_down(&member());
    assert!(w.run().is_empty());
    assert_eq!(w.snapshots, 8, "s1 and s2 rejoin g, s1 other: whole each");
    let last = w.got.iter().rev().find_map(|(s, e)| match e {
        Event::Membership { members, .. } if *s == s2 => Some(members.to_vec()),
        _ => None,
    });
    assert_eq!(last, Some(w.node.group_members(&g())));
}

/// A delta that does not fit what the client holds makes it attach again (to the next
/// member), never a wrong list for its application.
#[test]
fn a_delta_that_does_not_fit_ends_the_link() {
    let mut w = world(HostLimits::default());
    let s = w.client.open_session();
    w.client.join(s, g()).unwrap();
    w.run();
    let got = w.got.len();
    let Some((_, Event::Membership { view, at, .. })) = w.got.last().cloned() else {
        panic!("no membership: {:?}", w.got);
    };
    let wrong_base = crate::types::Stamp {
        view: view.clone(),
        seq: at.seq + 100,
    };
    w.client.handle(
        &member(),
        ClientNotice::Membership {
            session: s,
            group: g(),
            view,
            reason: MembershipReason::Join,
            at,
            change: MemberChange::Delta {
                base: wrong_base,
                left: vec![],
                joined: vec![],
            },
        },
    );
    assert_eq!(w.client.member(), None, "the link was given up");
    assert_eq!(
        w.client.poll_output(),
        Some(ClientOutput::Connect(member()))
    );
    assert_eq!(w.got.len(), got, "nothing delivered");
}
