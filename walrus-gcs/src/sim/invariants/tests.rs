//! Every checker catches a planted fault: synthetic observations that break exactly one
//! guarantee.

use super::*;
use crate::event::MembershipReason;
use crate::types::{Incarnation, Member, NodeId, Stamp, ViewId};

fn n(s: &str) -> NodeRef {
    NodeRef {
        id: NodeId::new(s),
        incarnation: Incarnation(1),
    }
}

fn vid(c: u64) -> ViewId {
    ViewId {
        counter: c,
        coordinator: NodeId::new("a"),
        incarnation: Incarnation(1),
    }
}

fn change(view: u64, prev: Option<u64>, members: &[&str], digest: u64) -> ViewChange {
    ViewChange {
        view: vid(view),
        members: members.iter().map(|m| n(m)).collect(),
        previous: prev.map(vid),
        delivered: 1,
        digest,
    }
}

fn g() -> GroupName {
    GroupName::new("g")
}

fn sent(c: &mut Checker, id: u64, from: &str, index: u64) {
    c.sent(Sent {
        id,
        node: n(from),
        session: SessionId(1),
        index,
        service: Service::Agreed,
        groups: vec![g()],
        at: Duration::ZERO,
    });
}

fn msg(id: u64, from: &str) -> Event {
    Event::Message {
        sender: (NodeId::new(from), SessionId(1)),
        service: Service::Agreed,
        groups: vec![g()],
        payload: id.to_le_bytes().to_vec().into(),
        client: None,
    }
}

fn t() -> Duration {
    Duration::from_secs(1)
}

fn caught(c: &Checker, prefix: &str) -> bool {
    c.violations.iter().any(|v| v.starts_with(prefix))
}

#[test]
fn view_agreement_catches_two_member_lists_for_one_id_and_shrinking_ids() {
    let mut c = Checker::default();
    c.view(t(), &n("a"), &change(2, None, &["a", "b"], 0));
    c.view(t(), &n("b"), &change(2, None, &["b"], 0));
    assert!(caught(&c, "view agreement"));
    let mut c = Checker::default();
    c.view(t(), &n("a"), &change(3, None, &["a"], 0));
    c.view(t(), &n("a"), &change(2, None, &["a"], 0));
    assert!(caught(&c, "view agreement"));
}

#[test]
fn virtual_synchrony_catches_different_deliveries_between_the_same_views() {
    let mut c = Checker::default();
    c.view(t(), &n("a"), &change(3, Some(2), &["a", "b"], 7));
    c.view(t(), &n("b"), &change(3, Some(2), &["a", "b"], 8));
    assert!(caught(&c, "virtual synchrony"));
}

#[test]
fn total_order_catches_two_sessions_in_opposite_orders() {
    let mut c = Checker::default();
    sent(&mut c, 1, "a", 0);
    sent(&mut c, 2, "b", 0);
    c.deliver(t(), &n("a"), SessionId(1), &msg(1, "a"));
    c.deliver(t(), &n("a"), SessionId(1), &msg(2, "b"));
    c.deliver(t(), &n("b"), SessionId(1), &msg(2, "b"));
    c.deliver(t(), &n("b"), SessionId(1), &msg(1, "a"));
    c.finish(&EndState::default());
    assert!(caught(&c, "total order"), "{:?}", c.violations);
}

#[test]
fn no_duplication_and_no_creation_catch_a_repeat_and_a_forgery() {
    let mut c = Checker::default();
    sent(&mut c, 1, "a", 0);
    c.deliver(t(), &n("b"), SessionId(1), &msg(1, "a"));
    c.deliver(t(), &n("b"), SessionId(1), &msg(1, "a"));
    assert!(caught(&c, "no duplication"));
    c.deliver(t(), &n("b"), SessionId(1), &msg(99, "a"));
    assert!(caught(&c, "no creation"));
}

#[test]
fn fifo_catches_a_reordered_sender() {
    let mut c = Checker::default();
    sent(&mut c, 1, "a", 0);
    sent(&mut c, 2, "a", 1);
    c.deliver(t(), &n("b"), SessionId(1), &msg(2, "a"));
    c.deliver(t(), &n("b"), SessionId(1), &msg(1, "a"));
    assert!(caught(&c, "FIFO"));
}

#[test]
fn self_delivery_catches_a_lost_own_message() {
    let mut c = Checker::default();
    c.request(Duration::ZERO, (n("a"), SessionId(1)), g(), Request::Join);
    sent(&mut c, 1, "a", 0);
    c.finish(&EndState {
        alive: vec![n("a")],
        ..EndState::default()
    });
    assert!(caught(&c, "self-delivery"));
}

#[test]
fn self_delivery_orders_a_join_by_the_session_not_by_the_clock() {
    // A multicast, then a join to its group in the same virtual instant (seed 8832):
    // the session was not a member when it sent, so not getting it back is right.
    let mut c = Checker::default();
    sent(&mut c, 1, "a", 0);
    c.request(Duration::ZERO, (n("a"), SessionId(1)), g(), Request::Join);
    let end = EndState {
        alive: vec![n("a")],
        ..EndState::default()
    };
    c.finish(&end);
    assert!(c.violations.is_empty(), "{:?}", c.violations);
    // Its next multicast, after the join, must come back.
    sent(&mut c, 2, "a", 1);
    c.finish(&end);
    assert!(caught(&c, "self-delivery"));
}

fn members(list: &[(&str, u64)]) -> Vec<Member> {
    list.iter()
        .map(|(node, s)| Member {
            node: NodeId::new(*node),
            incarnation: Incarnation(1),
            session: SessionId(*s),
        })
        .collect()
}

fn membership(list: &[(&str, u64)], reason: MembershipReason, seq: u64) -> Event {
    Event::Membership {
        group: g(),
        view: vid(2),
        members: members(list).into(),
        reason,
        at: Stamp { view: vid(2), seq },
    }
}

#[test]
fn group_membership_catches_a_join_that_deposes_the_first_and_split_lists() {
    let mut c = Checker::default();
    c.deliver(
        t(),
        &n("a"),
        SessionId(1),
        &membership(&[("a", 1)], MembershipReason::Join, 1),
    );
    c.deliver(
        t(),
        &n("a"),
        SessionId(1),
        &membership(&[("b", 1), ("a", 1)], MembershipReason::Join, 2),
    );
    assert!(caught(&c, "membership"));

    let mut c = Checker::default();
    c.deliver(
        t(),
        &n("a"),
        SessionId(1),
        &membership(&[("a", 1), ("b", 1)], MembershipReason::Join, 2),
    );
    c.deliver(
        t(),
        &n("b"),
        SessionId(1),
        &membership(&[("b", 1), ("a", 1)], MembershipReason::Join, 2),
    );
    c.finish(&EndState::default());
    assert!(caught(&c, "membership"), "{:?}", c.violations);
}

#[test]
fn liveness_catches_a_split_after_the_last_fault_and_a_lost_probe() {
    let mut c = Checker::default();
    c.finish(&EndState {
        alive: vec![n("a"), n("b")],
        probe: Some(LivenessProbe {
            views: vec![
                (n("a"), vid(5), vec![n("a")]),
                (n("b"), vid(6), vec![n("b")]),
            ],
            ..LivenessProbe::default()
        }),
        ..EndState::default()
    });
    assert!(caught(&c, "liveness"));

    let mut c = Checker::default();
    c.finish(&EndState {
        alive: vec![n("a")],
        probe: Some(LivenessProbe {
            views: vec![(n("a"), vid(5), vec![n("a")])],
            probes: vec![1],
            receivers: vec![(n("a"), SessionId(1))],
            ..LivenessProbe::default()
        }),
        ..EndState::default()
    });
    assert!(caught(&c, "liveness"));
}
