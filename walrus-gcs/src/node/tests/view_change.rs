//! Unit tests of view change: a node alone, two singletons merging.

use super::*;

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
fn two_singletons_merge_into_one_view() {
    let t0 = Instant::now();
    let mut a = node("a", t0);
    let mut b = node("b", t0);
    merge(&mut a, &mut b, t0);
    assert_eq!(a.members(), b.members());
    assert_eq!(a.view(), &vid(2, "a"));
}

/// A restarted node `a` hears `b` first; `b` reports `c` alive, whom `a` has not heard
/// yet. `a` would be the coordinator of {a, b} after `settle`, but proposing it would pull
/// `b` out of its view with `c`: it waits for `c` (at most `view_change_timeout`). When
/// `b` does not report `c`, `a` proposes after `settle` as before.
#[test]
fn a_starting_node_waits_for_a_node_its_peers_report_alive() {
    for b_reports_c in [true, false] {
        let t0 = Instant::now();
        let config = CoreConfig::default();
        let mut a = Node::new(
            config.clone(),
            id("a"),
            Incarnation(1),
            vec![id("a"), id("b"), id("c")],
            t0,
        );
        drain(&mut a);
        let mut alive = vec![r("a")];
        if b_reports_c {
            alive.push(r("c"));
        }
        let heartbeat = |t: Instant, a: &mut Node| {
            a.handle_message(
                t,
                &id("b"),
                PeerMessage::Heartbeat(Heartbeat {
                    incarnation: Incarnation(1),
                    view: vid(7, "b"),
                    alive: alive.clone(),
                    max_counter: 0,
                }),
            );
        };
        let proposes = |outs: &[Output]| {
            outs.iter().any(|o| {
                matches!(
                    o,
                    Output::Send {
                        msg: PeerMessage::Propose(_),
                        ..
                    }
                )
            })
        };
        let mut proposed_at = None;
        for step in 0..=12 {
            let t = ms(t0, step * 100);
            heartbeat(t, &mut a);
            a.handle_timeout(t);
            if proposes(&drain(&mut a)) {
                proposed_at = Some(step * 100);
                break;
            }
        }
        let at = proposed_at.expect("never proposed");
        if b_reports_c {
            assert!(
                at >= config.view_change_timeout.as_millis() as u64,
                "proposed {{a, b}} after {at} ms while b reports c alive"
            );
        } else {
            assert!(at <= 200, "proposed only after {at} ms");
        }
    }
}

/// `b` and `c` share a view; `a`, outside it, proposes {a, b}. While `c` is alive to `b`,
/// `b` refuses (accepting would split its view); once `c` is dead to `b`, it accepts.
#[test]
fn a_proposal_from_outside_does_not_split_a_view_whose_members_are_alive() {
    let t0 = Instant::now();
    let peers = vec![id("a"), id("b"), id("c")];
    let mut b = Node::new(
        CoreConfig::default(),
        id("b"),
        Incarnation(1),
        peers.clone(),
        t0,
    );
    let mut c = Node::new(CoreConfig::default(), id("c"), Incarnation(1), peers, t0);
    let mut t = t0;
    for step in 0..20 {
        t = ms(t0, step * 50);
        b.handle_timeout(t);
        c.handle_timeout(t);
        exchange(&mut b, &mut c, t);
        if b.members().len() == 2 && c.members().len() == 2 {
            break;
        }
    }
    assert_eq!(b.members(), &[r("b"), r("c")], "b and c never merged");
    let heartbeat_of_a = |t: Instant, b: &mut Node| {
        b.handle_message(
            t,
            &id("a"),
            PeerMessage::Heartbeat(Heartbeat {
                incarnation: Incarnation(1),
                view: vid(1, "a"),
                alive: vec![r("b")],
                max_counter: 0,
            }),
        );
    };
    let propose = |t: Instant, counter: u64, b: &mut Node| -> Vec<PeerMessage> {
        heartbeat_of_a(t, b);
        drain(b);
        b.handle_message(
            t,
            &id("a"),
            PeerMessage::Propose(Propose {
                incarnation: Incarnation(1),
                proposal: vid(counter, "a"),
                members: vec![r("a"), r("b")],
            }),
        );
        sends_to(&drain(b), "a")
    };
    let answer = propose(t, 50, &mut b);
    assert!(
        matches!(answer.as_slice(), [PeerMessage::Reject(_)]),
        "b left c, alive, for a's proposal: {answer:?}"
    );
    // c goes silent; once it is dead to b, a's next proposal is accepted.
    let mut later = t;
    while later < t + CoreConfig::default().failure_timeout + Duration::from_millis(50) {
        later += Duration::from_millis(50);
        heartbeat_of_a(later, &mut b);
        b.handle_timeout(later);
        drain(&mut b);
    }
    let answer = propose(later, 60, &mut b);
    assert!(
        answer.iter().any(|m| matches!(m, PeerMessage::Accept(_))),
        "b refused a's proposal with c dead: {answer:?}"
    );
}
