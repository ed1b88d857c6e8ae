//! Unit tests of the core: one input, the exact outputs.

use super::*;
use crate::event::{Event, MembershipReason, Output, ViewChange};
use crate::wire::{Accept, Commit, FlushReport, Heartbeat, Install, Op, OpKind, Ordered};
use std::time::Duration;

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
    let found: Vec<&PeerMessage> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Send { to: t, msg } if *t == id(to) => Some(msg),
            _ => None,
        })
        .collect();
    assert_eq!(found.len(), 1, "expected one message to {to} in {outs:?}");
    found[0].clone()
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
            groups: vec![],
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
        groups: vec![],
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

#[test]
fn a_new_node_is_alone_in_its_own_view() {
    let t0 = Instant::now();
    let mut a = Node::new(
        CoreConfig::default(),
        id("a"),
        Incarnation(1),
        vec![id("a"), id("b")],
        t0,
    );
    assert_eq!(
        drain(&mut a),
        vec![Output::ViewInstalled(ViewChange {
            view: vid(1, "a"),
            members: vec![r("a")],
            previous: None,
            delivered: 0,
            digest: FNV_START,
        })]
    );
}

#[test]
fn join_delivers_the_member_list_to_the_joiner() {
    let t0 = Instant::now();
    let mut a = node("a", t0);
    let s = a.open_session(t0);
    a.join(t0, s, g("ctl")).unwrap();
    assert_eq!(
        drain(&mut a),
        vec![Output::Deliver {
            session: s,
            event: Event::Membership {
                group: g("ctl"),
                view: vid(1, "a"),
                members: vec![m("a", s)],
                reason: MembershipReason::Join,
                at: Stamp {
                    view: vid(1, "a"),
                    seq: 1
                },
            }
        }]
    );
}

#[test]
fn a_join_never_changes_who_is_first() {
    let t0 = Instant::now();
    let mut a = node("a", t0);
    let s1 = a.open_session(t0);
    let s2 = a.open_session(t0);
    a.join(t0, s2, g("ctl")).unwrap();
    drain(&mut a);
    a.join(t0, s1, g("ctl")).unwrap();
    let outs = drain(&mut a);
    assert_eq!(outs.len(), 2);
    for o in outs {
        let Output::Deliver {
            event: Event::Membership {
                members, reason, ..
            },
            ..
        } = o
        else {
            panic!("{o:?}")
        };
        assert_eq!(reason, MembershipReason::Join);
        assert_eq!(members, vec![m("a", s2), m("a", s1)]);
    }
}

#[test]
fn leave_tells_the_rest_and_the_leaver() {
    let t0 = Instant::now();
    let mut a = node("a", t0);
    let s1 = a.open_session(t0);
    let s2 = a.open_session(t0);
    a.join(t0, s1, g("ctl")).unwrap();
    a.join(t0, s2, g("ctl")).unwrap();
    drain(&mut a);
    a.leave(t0, s1, g("ctl")).unwrap();
    let event = |members| Event::Membership {
        group: g("ctl"),
        view: vid(1, "a"),
        members,
        reason: MembershipReason::Leave,
        at: Stamp {
            view: vid(1, "a"),
            seq: 3,
        },
    };
    assert_eq!(
        drain(&mut a),
        vec![
            Output::Deliver {
                session: s2,
                event: event(vec![m("a", s2)])
            },
            Output::Deliver {
                session: s1,
                event: event(vec![m("a", s2)])
            },
        ]
    );
}

#[test]
fn multicast_refuses_oversize_payloads_and_empty_group_lists() {
    let t0 = Instant::now();
    let mut a = node("a", t0);
    let s = a.open_session(t0);
    let big = vec![0; CoreConfig::default().max_message_size + 1];
    assert_eq!(
        a.multicast(t0, s, Service::Agreed, &[g("x")], big),
        Err(GcsError::MessageTooLarge {
            size: 1024 * 1024 + 1,
            limit: 1024 * 1024
        })
    );
    assert_eq!(
        a.multicast(t0, s, Service::Agreed, &[], vec![1]),
        Err(GcsError::NoGroups)
    );
    assert_eq!(
        a.multicast(t0, SessionId(99), Service::Agreed, &[g("x")], vec![1]),
        Err(GcsError::UnknownSession(SessionId(99)))
    );
    assert_eq!(drain(&mut a), vec![]);
}

#[test]
fn two_singletons_merge_into_one_view() {
    let t0 = Instant::now();
    let mut a = node("a", t0);
    let mut b = node("b", t0);
    merge(&mut a, &mut b, t0);
    assert_eq!(a.members(), b.members());
    assert_eq!(a.view(), &vid(2, "a"));
}

#[test]
fn agreed_message_goes_through_the_sequencer_and_commits_when_the_sender_holds_it() {
    let t0 = Instant::now();
    let mut a = node("a", t0);
    let mut b = node("b", t0);
    let t = merge(&mut a, &mut b, t0);
    let sa = a.open_session(t);
    let sb = b.open_session(t);
    // Both sessions join "g" (the joins are ordered first; exchanged to quiescence).
    a.join(t, sa, g("g")).unwrap();
    b.join(t, sb, g("g")).unwrap();
    shuttle(&mut a, &mut b, t);

    b.multicast(t, sb, Service::Agreed, &[g("g")], b"hi".to_vec())
        .unwrap();
    let op = Op {
        counter: 2,
        session: sb,
        kind: OpKind::Message {
            service: Service::Agreed,
            groups: vec![g("g")],
            payload: b"hi".to_vec(),
        },
    };
    let submit = PeerMessage::Submit(Submit {
        incarnation: Incarnation(1),
        view: vid(2, "a"),
        base: 1,
        ops: vec![op.clone()],
    });
    assert_eq!(
        drain(&mut b),
        vec![Output::Send {
            to: id("a"),
            msg: submit.clone()
        }]
    );
    a.handle_message(t, &id("b"), submit);
    let ordered = PeerMessage::Ordered(Ordered {
        incarnation: Incarnation(1),
        view: vid(2, "a"),
        entries: vec![Entry {
            seq: 3,
            origin: r("b"),
            op,
        }],
    });
    // Not delivered yet: the sender does not hold its sequence number yet.
    assert_eq!(
        drain(&mut a),
        vec![Output::Send {
            to: id("b"),
            msg: ordered.clone()
        }]
    );
    b.handle_message(t, &id("a"), ordered);
    let ack = PeerMessage::Ack(Ack {
        incarnation: Incarnation(1),
        view: vid(2, "a"),
        held: 3,
    });
    assert_eq!(
        drain(&mut b),
        vec![Output::Send {
            to: id("a"),
            msg: ack.clone()
        }]
    );
    a.handle_message(t, &id("b"), ack);
    let commit = PeerMessage::Commit(Commit {
        incarnation: Incarnation(1),
        view: vid(2, "a"),
        commit: 3,
        stable: 3,
    });
    let message = Event::Message {
        sender: (id("b"), sb),
        service: Service::Agreed,
        groups: vec![g("g")],
        payload: b"hi".to_vec(),
    };
    assert_eq!(
        drain(&mut a),
        vec![
            Output::Send {
                to: id("b"),
                msg: commit.clone()
            },
            Output::Deliver {
                session: sa,
                event: message.clone()
            }
        ]
    );
    b.handle_message(t, &id("a"), commit);
    assert_eq!(
        drain(&mut b),
        vec![Output::Deliver {
            session: sb,
            event: message
        }]
    );
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

#[test]
fn a_silent_peer_is_dropped_from_the_view_after_the_failure_timeout() {
    let t0 = Instant::now();
    let mut a = node("a", t0);
    let mut b = node("b", t0);
    let t = merge(&mut a, &mut b, t0);
    let sa = a.open_session(t);
    let sb = b.open_session(t);
    a.join(t, sa, g("g")).unwrap();
    b.join(t, sb, g("g")).unwrap();
    shuttle(&mut a, &mut b, t);
    // b falls silent. Before the failure timeout nothing changes (a ticks at each of
    // its heartbeats: a node that runs late does not count the time against b)...
    let mut outs = Vec::new();
    for step in [200, 300, 400, 500] {
        a.handle_timeout(ms(t0, step));
        outs.extend(drain(&mut a));
    }
    assert!(outs.iter().all(|o| matches!(
        o,
        Output::Send {
            msg: PeerMessage::Heartbeat(_),
            ..
        }
    )));
    // ...after it (last heard at 152 ms, timeout 400 ms), a wants a view without b and,
    // after `settle`, installs it and tells its members of group g.
    a.handle_timeout(ms(t0, 600));
    let _ = drain(&mut a);
    a.handle_timeout(ms(t0, 650));
    assert_eq!(
        drain(&mut a),
        vec![
            Output::ViewInstalled(ViewChange {
                view: vid(3, "a"),
                members: vec![r("a")],
                previous: Some(vid(2, "a")),
                delivered: 2,
                digest: a_digest_of_two_joins(sa, sb),
            }),
            Output::Deliver {
                session: sa,
                event: Event::Membership {
                    group: g("g"),
                    view: vid(3, "a"),
                    members: vec![m("a", sa)],
                    reason: MembershipReason::Network,
                    at: Stamp {
                        view: vid(3, "a"),
                        seq: 0
                    },
                }
            }
        ]
    );
}

fn a_digest_of_two_joins(sa: SessionId, sb: SessionId) -> u64 {
    let _ = (sa, sb);
    let mut d = FNV_START;
    for (origin, counter, seq) in [("a", 1u64, 1u64), ("b", 1, 2)] {
        d = fnv(d, origin.as_bytes());
        d = fnv(d, &1u64.to_le_bytes());
        d = fnv(d, &counter.to_le_bytes());
        d = fnv(d, &seq.to_le_bytes());
    }
    d
}

#[test]
fn link_down_drops_the_peer_without_waiting_for_the_timeout() {
    let t0 = Instant::now();
    let mut a = node("a", t0);
    let mut b = node("b", t0);
    let t = merge(&mut a, &mut b, t0);
    a.handle_link_down(t, &id("b"));
    assert_eq!(drain(&mut a), vec![]);
    // It wakes up in time to propose after `settle` (a heartbeat tick may come first).
    assert!(a.poll_timeout() <= Some(t + CoreConfig::default().settle));
    a.handle_timeout(t + CoreConfig::default().settle);
    let installs: Vec<Output> = drain(&mut a)
        .into_iter()
        .filter(|o| !matches!(o, Output::Send { .. }))
        .collect();
    assert!(
        matches!(installs.as_slice(), [Output::ViewInstalled(c)] if c.members == vec![r("a")]),
        "{installs:?}"
    );
}

#[test]
fn a_session_that_does_not_read_is_disconnected() {
    let t0 = Instant::now();
    let mut a = Node::new(
        CoreConfig {
            session_queue_limit: 2,
            ..CoreConfig::default()
        },
        id("a"),
        Incarnation(1),
        vec![],
        t0,
    );
    drain(&mut a);
    let s = a.open_session(t0);
    a.join(t0, s, g("g")).unwrap();
    a.multicast(t0, s, Service::Reliable, &[g("g")], vec![1])
        .unwrap();
    assert_eq!(drain(&mut a).len(), 2);
    a.multicast(t0, s, Service::Reliable, &[g("g")], vec![2])
        .unwrap();
    let outs = drain(&mut a);
    assert_eq!(
        outs.last(),
        Some(&Output::Deliver {
            session: s,
            event: Event::Disconnected {
                reason: DisconnectReason::QueueOverflow { limit: 2 }
            }
        })
    );
    assert_eq!(
        a.multicast(t0, s, Service::Reliable, &[g("g")], vec![3]),
        Err(GcsError::UnknownSession(s))
    );
    // Its memberships are gone too (the Gone operation was ordered).
    assert_eq!(a.group_members(&g("g")), vec![]);
}

#[test]
fn a_stale_incarnation_is_ignored() {
    let t0 = Instant::now();
    let mut a = node("a", t0);
    let hb = |inc| {
        PeerMessage::Heartbeat(Heartbeat {
            incarnation: Incarnation(inc),
            view: vid(1, "b"),
            alive: vec![],
            max_counter: 1,
        })
    };
    a.handle_message(t0, &id("b"), hb(5));
    for step in [0, 100, 200, 300] {
        a.handle_timeout(ms(t0, step));
    }
    a.handle_message(ms(t0, 300), &id("b"), hb(4));
    // b#4 is older than b#5: it did not refresh b's liveness.
    assert!(!a.alive(
        ms(t0, 450),
        &NodeRef {
            id: id("b"),
            incarnation: Incarnation(5)
        }
    ));
    assert!(a.alive(
        ms(t0, 350),
        &NodeRef {
            id: id("b"),
            incarnation: Incarnation(5)
        }
    ));
}

/// Issue 16: a duplicate (a newer incarnation) was heard, then went away; the older
/// incarnation — the real node — must be taken again once the newer one is dead to this
/// node, not refused forever.
#[test]
fn an_older_incarnation_is_taken_again_once_the_newer_one_is_dead() {
    let t0 = Instant::now();
    let mut a = node("a", t0);
    let hb = |inc| {
        PeerMessage::Heartbeat(Heartbeat {
            incarnation: Incarnation(inc),
            view: vid(1, "b"),
            alive: vec![],
            max_counter: 1,
        })
    };
    let b = |inc| NodeRef {
        id: id("b"),
        incarnation: Incarnation(inc),
    };
    a.handle_message(t0, &id("b"), hb(5));
    // While b#5 is alive, b#4's frames are stale.
    a.handle_message(ms(t0, 100), &id("b"), hb(4));
    assert!(a.alive(ms(t0, 150), &b(5)));
    assert!(!a.alive(ms(t0, 150), &b(4)));
    // b#5 falls silent (its link went down): b#4 is the node again.
    a.handle_link_down(ms(t0, 200), &id("b"));
    a.handle_message(ms(t0, 250), &id("b"), hb(4));
    assert!(a.alive(ms(t0, 300), &b(4)));
    assert!(!a.alive(ms(t0, 300), &b(5)));
    // The same without a link-down report: after the failure timeout of silence.
    let mut a = node("a", t0);
    a.handle_message(t0, &id("b"), hb(5));
    for step in (0..=500).step_by(100) {
        a.handle_timeout(ms(t0, step));
    }
    a.handle_message(ms(t0, 500), &id("b"), hb(4));
    assert!(a.alive(ms(t0, 550), &b(4)));
}

/// Kinds of the messages `outs` sends, and whether it installs a view.
fn proposes_or_installs(outs: &[Output]) -> bool {
    outs.iter().any(|o| {
        matches!(
            o,
            Output::ViewInstalled(_)
                | Output::Send {
                    msg: PeerMessage::Propose(_),
                    ..
                }
        )
    })
}

#[test]
fn a_node_that_did_not_run_does_not_accuse_its_peers() {
    let t0 = Instant::now();
    let mut a = node("a", t0);
    let mut b = node("b", t0);
    merge(&mut a, &mut b, t0);
    for step in [200, 300, 400] {
        a.handle_timeout(ms(t0, step));
        b.handle_timeout(ms(t0, step));
        let (ra, rb) = shuttle(&mut a, &mut b, ms(t0, step));
        assert!(ra.is_empty() && rb.is_empty(), "{ra:?} {rb:?}");
    }
    // a's process is starved: due at 500 ms, it runs again only at 900 ms. b's heartbeats
    // of that time are still queued behind a's timer. a must not call b dead for it: its
    // heartbeat still lists b, and it wants no view without b.
    assert_eq!(a.poll_timeout(), Some(ms(t0, 500)));
    a.handle_timeout(ms(t0, 900));
    let outs = drain(&mut a);
    match sent_to(&outs, "b") {
        PeerMessage::Heartbeat(h) => assert_eq!(h.alive, vec![r("b")]),
        other => panic!("expected a heartbeat, got {other:?}"),
    }
    assert!(!proposes_or_installs(&outs), "{outs:?}");
    // Then a reads b's queued heartbeat: b had stopped listing a (a was silent). Until b
    // hears a again and says so, a does not propose a view of itself alone.
    let hb = |alive| {
        PeerMessage::Heartbeat(Heartbeat {
            incarnation: Incarnation(1),
            view: vid(2, "a"),
            alive,
            max_counter: 2,
        })
    };
    a.handle_message(ms(t0, 900), &id("b"), hb(vec![]));
    for step in [950, 1000] {
        a.handle_timeout(ms(t0, step));
        let outs = drain(&mut a);
        assert!(!proposes_or_installs(&outs), "at {step} ms: {outs:?}");
    }
    a.handle_message(ms(t0, 1000), &id("b"), hb(vec![r("a")]));
    a.handle_timeout(ms(t0, 1100));
    let outs = drain(&mut a);
    assert!(!proposes_or_installs(&outs), "{outs:?}");
    // If b really stays silent, a still drops it, one failure timeout of its own running
    // time after it last heard b.
    let mut dropped = None;
    for step in (1150..=1800).step_by(50) {
        a.handle_timeout(ms(t0, step));
        if drain(&mut a)
            .iter()
            .any(|o| matches!(o, Output::ViewInstalled(c) if c.members == vec![r("a")]))
        {
            dropped = Some(step);
            break;
        }
    }
    assert!(
        dropped.is_some_and(|s| (1400..=1600).contains(&s)),
        "{dropped:?}"
    );
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

/// Nodes `a` (the sequencer) and `b` with `config` in view 2.a, and a session of `b`
/// in group "g".
fn sender_in_view_of_two(config: CoreConfig, t0: Instant) -> (Node, Node, Instant, SessionId) {
    let mut a = Node::new(config.clone(), id("a"), Incarnation(1), vec![id("b")], t0);
    let mut b = Node::new(config, id("b"), Incarnation(1), vec![id("a")], t0);
    drain(&mut a);
    drain(&mut b);
    let t = merge(&mut a, &mut b, t0);
    let s = b.open_session(t);
    b.join(t, s, g("g")).unwrap();
    exchange(&mut a, &mut b, t);
    (a, b, t, s)
}

#[test]
fn the_send_window_bounds_messages_and_bytes_and_opens_on_delivery() {
    let t0 = Instant::now();
    let config = CoreConfig {
        max_pending: 3,
        max_pending_bytes: 250,
        ..CoreConfig::default()
    };
    let (mut a, mut b, t, s) = sender_in_view_of_two(config, t0);
    // b is not the sequencer: its multicasts stay in its window until delivered back.
    b.multicast(t, s, Service::Agreed, &[g("g")], vec![0; 100])
        .unwrap();
    b.multicast(t, s, Service::Agreed, &[g("g")], vec![0; 100])
        .unwrap();
    let full = b.multicast(t, s, Service::Agreed, &[g("g")], vec![0; 100]);
    assert!(
        matches!(
            full,
            Err(GcsError::Backpressure {
                pending: 2,
                pending_bytes: 200,
                ..
            })
        ),
        "bytes: {full:?}"
    );
    assert!(!b.window_has_room(100));
    // Small messages stop at the count.
    b.multicast(t, s, Service::Agreed, &[g("g")], vec![0; 10])
        .unwrap();
    let full = b.multicast(t, s, Service::Agreed, &[g("g")], vec![]);
    assert!(
        matches!(full, Err(GcsError::Backpressure { pending: 3, .. })),
        "count: {full:?}"
    );
    // Once ordered and delivered, the window is open again.
    let outs = exchange(&mut a, &mut b, t);
    let delivered = outs
        .iter()
        .filter(|o| {
            matches!(
                o,
                Output::Deliver {
                    event: Event::Message { .. },
                    ..
                }
            )
        })
        .count();
    assert_eq!(delivered, 3);
    assert_eq!(b.pending(), 0);
    assert!(b.window_has_room(250));
    b.multicast(t, s, Service::Agreed, &[g("g")], vec![0; 250])
        .unwrap();
    // One message always fits, however large (up to max_message_size).
    exchange(&mut a, &mut b, t);
    b.multicast(t, s, Service::Agreed, &[g("g")], vec![0; 4096])
        .unwrap();
}

#[test]
fn each_node_gets_its_share_of_the_group_window() {
    let t0 = Instant::now();
    let config = CoreConfig {
        max_pending: 100,
        group_window: 4,
        ..CoreConfig::default()
    };
    let (_a, mut b, t, s) = sender_in_view_of_two(config, t0);
    // Two members: 4 / 2 = 2 each, although max_pending allows 100.
    for _ in 0..2 {
        b.multicast(t, s, Service::Agreed, &[g("g")], vec![1])
            .unwrap();
    }
    let full = b.multicast(t, s, Service::Agreed, &[g("g")], vec![1]);
    assert!(
        matches!(
            full,
            Err(GcsError::Backpressure {
                pending: 2,
                limit: 2,
                ..
            })
        ),
        "{full:?}"
    );
}
