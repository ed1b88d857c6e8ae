//! Unit tests of the failure detector: timeouts, link reports, incarnations, stalls.

use super::*;

#[test]
fn a_silent_peer_is_dropped_from_the_view_after_the_failure_timeout() {
    let t0 = Instant::now();
    let (mut a, _b, _t, sa, sb) = both_in_g(t0);
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
