//! Unit tests of the core: one input, the exact outputs.

use super::*;
use crate::event::{Event, MembershipReason, Output, ViewChange};
use crate::wire::{Accept, FlushReport, Heartbeat, Install, Op, OpKind, Ordered, Propose, Run};
use std::time::Duration;

mod failure;
mod groups;
mod ordering;
mod view_change;

fn id(s: &str) -> NodeId {
    NodeId::new(s)
}

fn r(s: &str) -> NodeRef {
    NodeRef {
        id: id(s),
        incarnation: Incarnation(1),
    }
}

fn vid(counter: u64, by: &str) -> ViewId {
    ViewId {
        counter,
        coordinator: id(by),
        incarnation: Incarnation(1),
    }
}

fn g(s: &str) -> GroupName {
    GroupName::new(s)
}

fn m(node: &str, s: SessionId) -> Member {
    Member {
        node: id(node),
        incarnation: Incarnation(1),
        session: s,
    }
}

fn ms(t0: Instant, n: u64) -> Instant {
    t0 + Duration::from_millis(n)
}

fn node(name: &str, t0: Instant) -> Node {
    let mut n = Node::new(
        CoreConfig::default(),
        id(name),
        Incarnation(1),
        vec![id("a"), id("b")],
        t0,
    );
    let first = drain(&mut n);
    assert!(matches!(first.as_slice(), [Output::ViewInstalled(_)]));
    n
}

fn drain(n: &mut Node) -> Vec<Output> {
    std::iter::from_fn(|| n.poll_output()).collect()
}

/// The one message `outs` sends to `to`.
fn sent_to(outs: &[Output], to: &str) -> PeerMessage {
    let found = sends_to(outs, to);
    assert_eq!(found.len(), 1, "expected one message to {to} in {outs:?}");
    found[0].clone()
}

/// An `Ack` of incarnation 1 in view 2.a (the view of [`both_in_g`]).
fn ack_in_2a(held: u64, delivered: u64) -> PeerMessage {
    PeerMessage::Ack(crate::wire::Ack {
        incarnation: Incarnation(1),
        view: vid(2, "a"),
        held,
        delivered,
    })
}

/// The messages `outs` sends to `to`, in order.
fn sends_to(outs: &[Output], to: &str) -> Vec<PeerMessage> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Send { to: t, msg } if *t == id(to) => Some(msg.clone()),
            _ => None,
        })
        .collect()
}

/// Nodes `a` and `b` in view 2.a, each with one session that joined group "g" (the
/// joins are ordered first; exchanged to quiescence). Returns the time reached and the
/// sessions.
fn both_in_g(t0: Instant) -> (Node, Node, Instant, SessionId, SessionId) {
    let mut a = node("a", t0);
    let mut b = node("b", t0);
    let t = merge(&mut a, &mut b, t0);
    let sa = a.open_session(t);
    let sb = b.open_session(t);
    a.join(t, sa, g("g")).unwrap();
    b.join(t, sb, g("g")).unwrap();
    shuttle(&mut a, &mut b, t);
    (a, b, t, sa, sb)
}

/// Brings `a` and `b` (fresh, at `t0`) into view 2.a, step by step, checking each step's
/// exact outputs. Returns the time reached.
fn merge(a: &mut Node, b: &mut Node, t0: Instant) -> Instant {
    a.handle_timeout(t0);
    let hb_a = sent_to(&drain(a), "b");
    assert_eq!(
        hb_a,
        PeerMessage::Heartbeat(Heartbeat {
            incarnation: Incarnation(1),
            view: vid(1, "a"),
            alive: vec![],
            max_counter: 1,
        })
    );
    b.handle_message(t0, &id("a"), hb_a);
    assert_eq!(drain(b), vec![]);
    b.handle_timeout(t0);
    let hb_b = sent_to(&drain(b), "a");
    assert_eq!(
        hb_b,
        PeerMessage::Heartbeat(Heartbeat {
            incarnation: Incarnation(1),
            view: vid(1, "b"),
            alive: vec![r("a")],
            max_counter: 1,
        })
    );
    a.handle_message(t0, &id("b"), hb_b);
    assert_eq!(drain(a), vec![]);
    // a now sees a clique {a, b}; as its first member it waits `settle`, then proposes.
    a.handle_timeout(ms(t0, 100));
    let hb = sent_to(&drain(a), "b");
    assert!(matches!(hb, PeerMessage::Heartbeat(_)));
    assert_eq!(a.poll_timeout(), Some(ms(t0, 150)));
    a.handle_timeout(ms(t0, 150));
    let propose = PeerMessage::Propose(Propose {
        incarnation: Incarnation(1),
        proposal: vid(2, "a"),
        members: vec![r("a"), r("b")],
    });
    assert_eq!(
        drain(a),
        vec![Output::Send {
            to: id("b"),
            msg: propose.clone()
        }]
    );
    b.handle_message(ms(t0, 150), &id("a"), propose);
    let accept = PeerMessage::Accept(Accept {
        incarnation: Incarnation(1),
        proposal: vid(2, "a"),
        report: FlushReport {
            old_view: vid(1, "b"),
            delivered: 0,
            commit: 0,
            group_count: 0,
            held_count: 0,
            max_counter: 2,
        },
    });
    assert_eq!(
        drain(b),
        vec![Output::Send {
            to: id("a"),
            msg: accept.clone()
        }]
    );
    a.handle_message(ms(t0, 151), &id("b"), accept);
    let install = PeerMessage::Install(Install {
        incarnation: Incarnation(1),
        view: vid(2, "a"),
        members: vec![r("a"), r("b")],
        cuts: vec![
            Cut {
                old_view: vid(1, "a"),
                above: 0,
                seqs: vec![],
            },
            Cut {
                old_view: vid(1, "b"),
                above: 0,
                seqs: vec![],
            },
        ],
        group_count: 0,
    });
    assert_eq!(
        drain(a),
        vec![
            Output::Send {
                to: id("b"),
                msg: install.clone()
            },
            Output::ViewInstalled(ViewChange {
                view: vid(2, "a"),
                members: vec![r("a"), r("b")],
                previous: Some(vid(1, "a")),
                delivered: 0,
                digest: FNV_START,
            })
        ]
    );
    b.handle_message(ms(t0, 152), &id("a"), install);
    assert_eq!(
        drain(b),
        vec![Output::ViewInstalled(ViewChange {
            view: vid(2, "a"),
            members: vec![r("a"), r("b")],
            previous: Some(vid(1, "b")),
            delivered: 0,
            digest: FNV_START,
        })]
    );
    ms(t0, 152)
}

/// Delivers every message between `a` and `b` until both are quiet.
fn shuttle(a: &mut Node, b: &mut Node, t: Instant) -> (Vec<Output>, Vec<Output>) {
    let (mut rest_a, mut rest_b) = (Vec::new(), Vec::new());
    loop {
        let (oa, ob) = (drain(a), drain(b));
        if oa.is_empty() && ob.is_empty() {
            return (rest_a, rest_b);
        }
        for o in oa {
            match o {
                Output::Send { msg, .. } => b.handle_message(t, &id("a"), msg),
                other => rest_a.push(other),
            }
        }
        for o in ob {
            match o {
                Output::Send { msg, .. } => a.handle_message(t, &id("b"), msg),
                other => rest_b.push(other),
            }
        }
    }
}

/// Hands every message one node sends to the other until neither sends more; returns
/// their other outputs.
fn exchange(x: &mut Node, y: &mut Node, t: Instant) -> Vec<Output> {
    let mut others = Vec::new();
    loop {
        let moved = forward(x, y, t, &mut others) | forward(y, x, t, &mut others);
        if !moved {
            return others;
        }
    }
}

fn forward(src: &mut Node, dst: &mut Node, t: Instant, others: &mut Vec<Output>) -> bool {
    let from = src.id().clone();
    let mut moved = false;
    for out in drain(src) {
        match out {
            Output::Send { msg, .. } => {
                dst.handle_message(t, &from, msg);
                moved = true;
            }
            other => others.push(other),
        }
    }
    moved
}
