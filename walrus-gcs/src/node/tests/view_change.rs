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

/// Two nodes, each alone, whose sessions joined `groups` groups each, with a frame budget
/// so small that their group records take several chunks.
fn alone_with_groups(name: &str, groups: usize, t0: Instant) -> Node {
    let config = CoreConfig {
        max_message_size: 512,
        ..CoreConfig::default()
    };
    let peers = vec![id("b"), id("c")];
    let mut n = Node::new(config, id(name), Incarnation(1), peers, t0);
    let s = n.open_session(t0);
    for i in 0..groups {
        n.join(t0, s, g(&format!("{name}-group-{i}"))).unwrap();
    }
    n.handle_timeout(t0);
    drain(&mut n);
    n
}

/// Runs `b` and `c` until they share a view, handing over every message but those
/// `drop` picks; returns how many messages of each kind went.
fn merge_counting(
    b: &mut Node,
    c: &mut Node,
    t0: Instant,
    mut drop: impl FnMut(&PeerMessage) -> bool,
) -> BTreeMap<&'static str, usize> {
    let mut kinds = BTreeMap::new();
    for step in 0..40 {
        let t = ms(t0, step * 50);
        b.handle_timeout(t);
        c.handle_timeout(t);
        while hand_over(b, c, t, &mut kinds, &mut drop) | hand_over(c, b, t, &mut kinds, &mut drop)
        {
        }
        if b.members().len() == 2 && c.members().len() == 2 && b.view() == c.view() {
            break;
        }
    }
    kinds
}

/// Hands every message `src` sends to `dst` but those `drop` picks, counting them by
/// kind; whether there was any.
fn hand_over(
    src: &mut Node,
    dst: &mut Node,
    t: Instant,
    kinds: &mut BTreeMap<&'static str, usize>,
    drop: &mut impl FnMut(&PeerMessage) -> bool,
) -> bool {
    let from = src.id().clone();
    let mut moved = false;
    for out in drain(src) {
        if let Output::Send { msg, .. } = out {
            *kinds.entry(msg.kind()).or_default() += 1;
            if !drop(&msg) {
                dst.handle_message(t, &from, msg);
            }
            moved = true;
        }
    }
    moved
}

/// Group records travel in chunks at a view change: a table many frames long (here a
/// 512-byte budget, 40 records) reaches every member whole, so a site with thousands of
/// clients can still change views (one `Install` with every record stopped at the
/// codec's frame limit, about 2,800 clients).
#[test]
fn group_records_larger_than_a_frame_travel_in_chunks() {
    let t0 = Instant::now();
    let mut b = alone_with_groups("b", 20, t0);
    let mut c = alone_with_groups("c", 20, t0);
    let kinds = merge_counting(&mut b, &mut c, t0, |_| false);
    assert_eq!(b.members(), &[r("b"), r("c")], "never merged: {kinds:?}");
    assert!(
        kinds.get("accept-groups").copied().unwrap_or(0) > 1,
        "{kinds:?}"
    );
    assert!(
        kinds.get("install-groups").copied().unwrap_or(0) > 1,
        "{kinds:?}"
    );
    let records = |n: &Node| -> Vec<GroupRecord> { n.groups.values().flatten().cloned().collect() };
    assert_eq!(records(&b).len(), 40);
    assert_eq!(records(&b), records(&c));
}

/// `b` and `c`, alone with 20 group records each, merged with the first message of kind
/// `kind` lost on the way; their group tables afterwards.
fn merge_losing_first(kind: &str) -> (Node, Vec<GroupRecord>, Vec<GroupRecord>) {
    let t0 = Instant::now();
    let mut b = alone_with_groups("b", 20, t0);
    let mut c = alone_with_groups("c", 20, t0);
    let mut dropped = false;
    merge_counting(&mut b, &mut c, t0, |m| {
        let first = m.kind() == kind && !dropped;
        dropped |= first;
        first
    });
    assert!(dropped, "no {kind} chunk was sent");
    let records = |n: &Node| -> Vec<GroupRecord> { n.groups.values().flatten().cloned().collect() };
    let (rb, rc) = (records(&b), records(&c));
    (c, rb, rc)
}

/// A member that misses one chunk of the install's group records does not install the
/// view with part of the table: the install's count does not match, and the next view
/// change brings the whole table.
#[test]
fn a_lost_group_chunk_keeps_the_view_from_installing() {
    let (c, b_table, c_table) = merge_losing_first("install-groups");
    // b coordinated view 2 (first by name); c missed a chunk of it, so it installed
    // nothing until the next view change brought the whole table.
    assert_eq!(
        c_table.len(),
        40,
        "c installed {} with part of the table",
        c.view()
    );
    assert_eq!(b_table, c_table);
    assert!(
        c.view().counter > 2,
        "c installed view 2, whose chunk it missed"
    );
}

/// A coordinator that misses one chunk of a member's flush answer does not install a
/// table without that member's records: the answer's count does not match, the proposal
/// times out, and the next one carries everything.
#[test]
fn a_lost_flush_chunk_keeps_the_records_of_its_member() {
    let (c, b_table, c_table) = merge_losing_first("accept-groups");
    assert_eq!(
        b_table.len(),
        40,
        "b installed {} without some of c's records",
        c.view()
    );
    assert_eq!(b_table, c_table);
}

#[test]
fn a_proposal_refreshes_its_coordinators_row_so_a_stale_heartbeat_does_not_split_the_view() {
    let t0 = Instant::now();
    let mut b = b_of_three(t0);
    // a's last heartbeat went out before a heard b; c's lists both.
    b.handle_message(t0, &id("a"), heartbeat(vid(1, "a"), vec![r("c")]));
    b.handle_message(t0, &id("c"), heartbeat(vid(1, "c"), vec![r("a"), r("b")]));
    assert_eq!(b.candidate(t0), vec![r("b"), r("c")]);
    // a has heard b since, and proposes all three: b now knows a sees it.
    b.handle_message(
        t0,
        &id("a"),
        PeerMessage::Propose(Propose {
            incarnation: Incarnation(1),
            proposal: vid(2, "a"),
            members: vec![r("a"), r("b"), r("c")],
        }),
    );
    assert!(matches!(
        sent_to(&drain(&mut b), "a"),
        PeerMessage::Accept(_)
    ));
    assert_eq!(b.candidate(t0), vec![r("a"), r("b"), r("c")]);
}

/// Installing a view is every member's word that all members were alive to it: their
/// rows list the view's members, a heartbeat sent before the member installed the view
/// only adds to its row, and no member stays a suspect. Before, `b` wanted {a, b} after
/// installing {a, b, c} (a's row older than a's hearing `c`; `c` suspected since it
/// missed an earlier proposal's deadline) and proposed it one `settle` later.
#[test]
fn installing_a_view_refreshes_its_members_rows_and_clears_their_suspicion() {
    let t0 = Instant::now();
    let mut b = b_of_three(t0);
    let everyone = vec![r("a"), r("b"), r("c")];
    b.handle_message(t0, &id("a"), heartbeat(vid(1, "a"), vec![r("b")]));
    b.handle_message(t0, &id("c"), heartbeat(vid(1, "c"), vec![r("a"), r("b")]));
    b.suspects.insert(r("c"), ms(t0, 10_000));
    assert_eq!(b.candidate(t0), vec![r("a"), r("b")]);

    b.note_view_rows(&vid(5, "c"), &everyone);
    assert_eq!(b.candidate(t0), everyone);
    // Sent before `a` installed view 5: it only adds.
    b.handle_message(t0, &id("a"), heartbeat(vid(1, "a"), vec![r("b")]));
    assert_eq!(b.candidate(t0), everyone);
    // Sent in view 5: `a` does not hear `c` any more, and that counts.
    b.handle_message(t0, &id("a"), heartbeat(vid(5, "c"), vec![r("b")]));
    assert_eq!(b.candidate(t0), vec![r("a"), r("b")]);
}

/// Node `b` of `a`, `b`, `c`, alone in its first view.
fn b_of_three(t0: Instant) -> Node {
    let mut b = Node::new(
        CoreConfig::default(),
        id("b"),
        Incarnation(1),
        vec![id("a"), id("b"), id("c")],
        t0,
    );
    let _ = drain(&mut b);
    b
}

/// A heartbeat of incarnation 1 sent in `view`, listing `alive`.
fn heartbeat(view: ViewId, alive: Vec<NodeRef>) -> PeerMessage {
    PeerMessage::Heartbeat(Heartbeat {
        incarnation: Incarnation(1),
        view,
        alive,
        max_counter: 1,
    })
}
