//! Unit tests of the failure detector: timeouts, link reports, incarnations, stalls.

use super::*;

#[test]
fn a_silent_peer_is_dropped_from_the_view_after_the_failure_timeout() {
    let t0 = Instant::now();
    let (mut a, _b, _t, sa, sb) = both_in_g(t0);
    // b falls silent. Before the failure timeout nothing changes (a ticks at each of
    // its heartbeats: a node that runs late does not count the time against b; the
    // `Ack` a owed for the stable point goes too)...
    let mut outs = Vec::new();
    for step in [200, 300, 400, 500] {
        a.handle_timeout(ms(t0, step));
        outs.extend(drain(&mut a));
    }
    assert!(outs.iter().all(|o| matches!(
        o,
        Output::Send {
            msg: PeerMessage::Heartbeat(_) | PeerMessage::Ack(_),
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
                    members: vec![m("a", sa)].into(),
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

/// Issue 24 (the freeze with 1,000 reporters): under load a QUIC connection timed out and
/// was dialed again at once. What was on it was lost (the transport also drops what it
/// still held of a link it reports down) — here b's `Ack` of its own message. The link
/// was back before anyone proposed, so every node still wanted the view it had; and
/// nothing came after the lost frame to show a gap. The entry never committed, nothing
/// after it was delivered, and the group stood still for good while heartbeats flowed.
/// A link that went down must change the view: its flush recovers what the link lost.
#[test]
fn a_link_that_drops_and_comes_back_at_once_still_changes_the_view() {
    let t0 = Instant::now();
    let (mut a, mut b, t, sa, sb) = both_in_g(t0);
    let m = b"m".to_vec();
    b.multicast(t, sb, Service::Agreed, &[g("g")], m.clone())
        .unwrap();
    let submit = sent_to(&drain(&mut b), "a");
    a.handle_message(t, &id("b"), submit);
    let to_b = sends_to(&drain(&mut a), "b");
    assert!(matches!(to_b[0], PeerMessage::Ordered(_)), "{to_b:?}");
    for msg in to_b {
        b.handle_message(t, &id("a"), msg);
    }
    // b, the origin, holds it and delivers it at once; its `Ack` is lost.
    let outs = drain(&mut b);
    let lost = sent_to(&outs, "a");
    assert!(matches!(lost, PeerMessage::Ack(_)), "{lost:?}");
    let mut got: Vec<_> = outs
        .into_iter()
        .filter_map(|o| match o {
            Output::Deliver {
                session,
                event: Event::Message { payload, .. },
            } => Some(("b", session, payload)),
            _ => None,
        })
        .collect();
    // The link goes down with the Ack on it; each end hears it down, then up again, and
    // the new connection's first frames are heartbeats: each is alive to the other and
    // lists it, before anyone's `settle` is over.
    flap(&mut a, "b", t);
    flap(&mut b, "a", t);
    a.send_heartbeats(t);
    b.send_heartbeats(t);
    shuttle(&mut a, &mut b, t);
    // Both run on for 5 s, every frame delivered from now on.
    let mut views = Vec::new();
    for step in 1..=500 {
        let now = t + Duration::from_millis(10 * step);
        for n in [&mut a, &mut b] {
            if n.poll_timeout().is_some_and(|d| d <= now) {
                n.handle_timeout(now);
            }
        }
        let (oa, ob) = shuttle(&mut a, &mut b, now);
        for (at, o) in oa
            .into_iter()
            .map(|o| ("a", o))
            .chain(ob.into_iter().map(|o| ("b", o)))
        {
            match o {
                Output::Deliver {
                    session,
                    event: Event::Message { payload, .. },
                } => got.push((at, session, payload)),
                Output::ViewInstalled(v) => views.push((at, v.view, v.members)),
                _ => {}
            }
        }
    }
    // The view changed once, with both in it, and the flush delivered b's message to a
    // (and not again to b).
    got.sort();
    assert_eq!(
        got,
        vec![("a", sa, m.clone().into()), ("b", sb, m.into())],
        "views installed meanwhile: {views:?}"
    );
    assert!(
        views
            .iter()
            .all(|(_, _, members)| *members == vec![r("a"), r("b")]),
        "{views:?}"
    );
}

/// The other half of the rule above: a node that accepted a view and then lost its link
/// to one of the view's members installs that view broken (the member may have
/// installed it first and sent frames of it on the lost link), so it changes again.
#[test]
fn a_link_lost_while_a_view_is_accepted_breaks_that_view_once_installed() {
    let t0 = Instant::now();
    let (mut a, mut b) = (node("a", t0), node("b", t0));
    let t = merge(&mut a, &mut b, t0);
    // a proposes view 3 (its link to b dropped and came back); b accepts it.
    flap(&mut a, "b", t);
    b.send_heartbeats(t);
    shuttle(&mut a, &mut b, t);
    let t1 = t + CoreConfig::default().settle;
    a.handle_timeout(t1);
    let propose = drain(&mut a)
        .into_iter()
        .find_map(|o| match o {
            Output::Send {
                msg: msg @ PeerMessage::Propose(_),
                ..
            } => Some(msg),
            _ => None,
        })
        .expect("a proposes");
    b.handle_message(t1, &id("a"), propose);
    let accept = sent_to(&drain(&mut b), "a");
    // Now b's link to a drops and comes back, before the install reaches b.
    flap(&mut b, "a", t1);
    a.handle_message(t1, &id("b"), accept);
    let install = sent_to(&drain(&mut a), "b");
    b.handle_message(t1, &id("a"), install);
    assert!(
        drain(&mut b)
            .iter()
            .any(|o| matches!(o, Output::ViewInstalled(c) if c.view == vid(3, "a"))),
        "b installs view 3"
    );
    assert!(b.broken, "{}", b.summary());
    assert!(!a.broken, "{}", a.summary());
}

/// The transport reports `n`'s link to `peer` down and, at once, up again (a new
/// connection).
fn flap(n: &mut Node, peer: &str, t: Instant) {
    n.handle_link_down(t, &id(peer));
    n.handle_link_up(t, &id(peer));
}

#[test]
fn the_reason_a_member_is_left_out_names_what_the_detector_saw() {
    let t0 = Instant::now();
    let mut a = node("a", t0);
    let mut b = node("b", t0);
    let t = merge(&mut a, &mut b, t0);
    let who = r("b");
    assert_eq!(
        a.why_left_out(t + Duration::from_millis(450), &who, &[r("a")]),
        format!(
            "not heard for {} ms",
            (t + Duration::from_millis(450))
                .saturating_duration_since(a.peers[&id("b")].last_heard.unwrap())
                .as_millis()
        )
    );
    assert_eq!(
        a.why_left_out(t, &who, &[r("a")]),
        "connected now (its last row lists [a])"
    );
    // b's next heartbeat says it lost a: the rows disagree.
    a.handle_message(
        t,
        &id("b"),
        PeerMessage::Heartbeat(Heartbeat {
            incarnation: Incarnation(1),
            view: vid(2, "a"),
            alive: vec![],
            max_counter: 2,
        }),
    );
    assert_eq!(
        a.why_left_out(t, &who, &[r("a")]),
        "not mutually connected with a (its last row lists [])"
    );
    a.handle_link_down(t, &id("b"));
    assert_eq!(a.why_left_out(t, &who, &[r("a")]), "its link is down");
}
