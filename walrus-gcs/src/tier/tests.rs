//! The two sides of a client link wired in memory to a member alone in its view.

use super::*;
use crate::config::CoreConfig;
use crate::event::MembershipReason;
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
}

fn member() -> NodeId {
    NodeId::new("m1")
}

fn world(limits: HostLimits) -> World {
    let now = Instant::now();
    let node = Node::new(
        CoreConfig::default(),
        member(),
        Incarnation(1),
        vec![member()],
        now,
    );
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
                let _ = self.host.on_output(&mut self.node, out);
            }
            while let Some((_, notice)) = self.host.poll_notice() {
                moved = true;
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
                Event::Message { payload, .. } => Some(payload.clone()),
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
