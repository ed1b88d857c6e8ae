//! Unit tests of ordering: the sequencer, commit, and the send window.

use super::*;

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
fn agreed_message_goes_through_the_sequencer_and_commits_when_the_sender_holds_it() {
    let t0 = Instant::now();
    let (mut a, mut b, t, sa, sb) = both_in_g(t0);

    b.multicast(t, sb, Service::Agreed, &[g("g")], b"hi".to_vec())
        .unwrap();
    let op = Op {
        counter: 2,
        session: sb,
        kind: OpKind::Message {
            service: Service::Agreed,
            groups: vec![g("g")],
            payload: b"hi".to_vec().into(),
            client: None,
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
        first: 3,
        runs: vec![Run {
            origin: r("b"),
            ops: vec![op],
        }],
    });
    let ack = ack_in_2a;
    // Not delivered yet: the sender does not hold its sequence number yet. The
    // sequencer holds it but its `Ack` waits: no member needs it to deliver (b needs
    // its own holding, a b's).
    assert_eq!(
        drain(&mut a),
        vec![Output::Send {
            to: id("b"),
            msg: ordered.clone()
        }]
    );
    let message = Event::Message {
        sender: (id("b"), sb),
        service: Service::Agreed,
        groups: vec![g("g")],
        payload: b"hi".to_vec().into(),
        client: None,
    };
    // The sender holds it now: it commits there at once (two hops for the sender), and
    // its `Ack` goes at once (every other member waits for it).
    b.handle_message(t, &id("a"), ordered);
    assert_eq!(
        drain(&mut b),
        vec![
            Output::Deliver {
                session: sb,
                event: message.clone()
            },
            Output::Send {
                to: id("a"),
                msg: ack(3, 3)
            }
        ]
    );
    // Every other member commits it on the sender's `Ack` (three hops).
    a.handle_message(t, &id("b"), ack(3, 3));
    assert_eq!(
        drain(&mut a),
        vec![Output::Deliver {
            session: sa,
            event: message
        }]
    );
    // The sequencer's own `Ack` goes `ack_delay` after it was owed (for the stable
    // point), with what it holds and has delivered by then.
    let owed_at = a.poll_timeout().unwrap();
    assert_eq!(owed_at, t + CoreConfig::default().ack_delay);
    a.handle_timeout(owed_at);
    assert_eq!(sends_to(&drain(&mut a), "b"), vec![ack(3, 3)]);
    b.handle_message(owed_at, &id("a"), ack(3, 3));
    assert_eq!(drain(&mut b), vec![]);
}

/// An `Ack` no member waits for (the sequencer's, of `b`'s entries) waits for
/// `ack_delay`, unless `max_unstable / 64` entries are held unacknowledged: then it goes
/// at once, so the stable point (and the sequencer's window) never lags by more.
#[test]
fn an_ack_no_one_waits_for_goes_after_ack_delay_or_after_a_window_share_of_entries() {
    for (max_unstable, at_once) in [(4096, false), (128, true)] {
        let t0 = Instant::now();
        let config = CoreConfig {
            max_unstable,
            ..CoreConfig::default()
        };
        let (mut a, mut b, t, s) = sender_in_view_of_two(config, t0);
        // Two entries of b, ordered in one turn (the threshold at 128 is 2).
        for p in [b"1", b"2"] {
            b.multicast(t, s, Service::Agreed, &[g("g")], p.to_vec())
                .unwrap();
        }
        let submit = sent_to(&drain(&mut b), "a");
        a.handle_message(t, &id("b"), submit);
        let to_b = sends_to(&drain(&mut a), "b");
        let acks = to_b
            .iter()
            .filter(|m| matches!(m, PeerMessage::Ack(_)))
            .count();
        assert_eq!(
            acks,
            usize::from(at_once),
            "max_unstable {max_unstable}: {to_b:?}"
        );
        if !at_once {
            let due = t + CoreConfig::default().ack_delay;
            assert!(a.poll_timeout().unwrap() <= due);
            a.handle_timeout(due);
            let to_b = sends_to(&drain(&mut a), "b");
            let acks: Vec<_> = to_b
                .iter()
                .filter(|m| matches!(m, PeerMessage::Ack(_)))
                .collect();
            assert_eq!(acks.len(), 1, "the owed Ack goes at its deadline: {to_b:?}");
        }
    }
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
    // A message counts its payload plus MESSAGE_CHARGE against the bytes: two of 500 B
    // fill 3,048 of 4,100, a third does not fit, a message of 10 B still does.
    let charge = crate::node::MESSAGE_CHARGE;
    let limit = 2 * (500 + charge) + 10 + charge + 8;
    let config = CoreConfig {
        max_pending: 3,
        max_pending_bytes: limit,
        ..CoreConfig::default()
    };
    let (mut a, mut b, t, s) = sender_in_view_of_two(config, t0);
    // b is not the sequencer: its multicasts stay in its window until delivered back.
    b.multicast(t, s, Service::Agreed, &[g("g")], vec![0; 500])
        .unwrap();
    b.multicast(t, s, Service::Agreed, &[g("g")], vec![0; 500])
        .unwrap();
    let full = b.multicast(t, s, Service::Agreed, &[g("g")], vec![0; 500]);
    let held = 2 * (500 + charge);
    assert!(
        matches!(
            full,
            Err(GcsError::Backpressure {
                pending: 2,
                pending_bytes,
                ..
            }) if pending_bytes == held
        ),
        "bytes: {full:?}"
    );
    assert!(!b.window_has_room(500));
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
    assert!(b.window_has_room(limit - charge));
    b.multicast(t, s, Service::Agreed, &[g("g")], vec![0; limit - charge])
        .unwrap();
    // One message always fits, however large (up to max_message_size).
    exchange(&mut a, &mut b, t);
    b.multicast(t, s, Service::Agreed, &[g("g")], vec![0; 2 * limit])
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

/// Batching (issue 24): what one turn sends to a peer goes in as few frames as the
/// protocol allows. Three multicasts of `b` in one turn make one `Submit`; the sequencer
/// taking those three ops, each in its own `Submit`, in one turn, sends one `Ordered`
/// numbering all three (one run of origin `b`), and `b`'s acknowledgements of two batches
/// in one turn make one `Ack`.
#[test]
fn one_turn_sends_one_frame_per_peer_for_a_run_of_messages() {
    let t0 = Instant::now();
    let (mut a, mut b, t, _sa, sb) = both_in_g(t0);

    for p in [b"1", b"2", b"3"] {
        b.multicast(t, sb, Service::Agreed, &[g("g")], p.to_vec())
            .unwrap();
    }
    let PeerMessage::Submit(submit) = sent_to(&drain(&mut b), "a") else {
        panic!("expected a Submit");
    };
    let counters: Vec<u64> = submit.ops.iter().map(|o| o.counter).collect();
    assert_eq!(counters, [2, 3, 4]);

    // The same ops as three Submits (three turns of `b`), taken by `a` in one turn.
    for op in &submit.ops {
        let one = PeerMessage::Submit(Submit {
            ops: vec![op.clone()],
            ..submit.clone()
        });
        a.handle_message(t, &id("b"), one);
    }
    // One `Ordered` (the sequencer's own `Ack` of b's entries waits: no member needs it
    // to deliver).
    let to_b = sends_to(&drain(&mut a), "b");
    let [PeerMessage::Ordered(ordered)] = &to_b[..] else {
        panic!("expected one Ordered: {to_b:?}");
    };
    let ordered = ordered.clone();
    assert_eq!((ordered.len(), ordered.runs.len()), (3, 1));
    assert_eq!(ordered.runs[0].origin, r("b"));
    assert_eq!(ordered.runs[0].ops, submit.ops);

    // Two batches of it (split) reach `b` in one turn: one Ack, for the last entry (b
    // delivered them meanwhile: it is their origin).
    let last = ordered.last().unwrap();
    let mut entries = ordered.clone().into_entries().unwrap();
    let tail = entries.split_off(1);
    for part in [entries, tail] {
        let batch = Ordered::from_entries(Incarnation(1), vid(2, "a"), part).unwrap();
        b.handle_message(t, &id("a"), PeerMessage::Ordered(batch));
    }
    assert_eq!(
        sent_to(&drain(&mut b), "a"),
        PeerMessage::Ack(Ack {
            incarnation: Incarnation(1),
            view: vid(2, "a"),
            held: last,
            delivered: last,
        })
    );
}

/// A session that multicasts faster than it reads its own events is held back (at a
/// quarter of `session_queue_limit` unread) instead of running into the limit and
/// being disconnected; once it reads, it may send again.
#[test]
fn a_session_that_lags_behind_its_events_is_held_back_not_disconnected() {
    let t0 = Instant::now();
    let config = CoreConfig {
        session_queue_limit: 8,
        ..CoreConfig::default()
    };
    let mut a = Node::new(config, id("a"), Incarnation(1), vec![], t0);
    let s = a.open_session(t0);
    a.join(t0, s, g("g")).unwrap();
    drain(&mut a);
    a.mark_read(s, 1);
    for _ in 0..2 {
        a.multicast(t0, s, Service::Agreed, &[g("g")], b"x".to_vec())
            .unwrap();
    }
    assert_eq!(
        drain(&mut a).len(),
        2,
        "both delivered to the sender itself"
    );
    assert!(!a.reader_keeps_up(s));
    assert!(matches!(
        a.multicast(t0, s, Service::Agreed, &[g("g")], b"x".to_vec()),
        Err(GcsError::Backpressure { .. })
    ));
    a.mark_read(s, 2);
    assert!(a.reader_keeps_up(s));
    a.multicast(t0, s, Service::Agreed, &[g("g")], b"x".to_vec())
        .unwrap();
}

/// Nodes `a` (the sequencer) and `b` in view 2.a, each with one session in group "g"
/// whose membership events are read; small windows: reader window 25 events (of a
/// `session_queue_limit` of 100), ordering window 8, send window 4.
fn two_in_g(t0: Instant) -> ([Node; 2], Instant, [SessionId; 2]) {
    let config = CoreConfig {
        session_queue_limit: 100,
        max_unstable: 8,
        max_pending: 4,
        ..CoreConfig::default()
    };
    let mut a = Node::new(config.clone(), id("a"), Incarnation(1), vec![id("b")], t0);
    let mut b = Node::new(config, id("b"), Incarnation(1), vec![id("a")], t0);
    drain(&mut a);
    drain(&mut b);
    let t = merge(&mut a, &mut b, t0);
    let (sa, sb) = (a.open_session(t), b.open_session(t));
    a.join(t, sa, g("g")).unwrap();
    b.join(t, sb, g("g")).unwrap();
    // `a` sees both joins, `b` its own (it joined after `a`).
    assert_eq!(exchange(&mut a, &mut b, t).len(), 3);
    a.mark_read(sa, 2);
    b.mark_read(sb, 1);
    (nodes_of(a, b), t, [sa, sb])
}

fn nodes_of(a: Node, b: Node) -> [Node; 2] {
    [a, b]
}

/// What [`flood`] saw of the lagging node's session.
struct Flooded {
    /// Events delivered to it and not read.
    unread: usize,
    /// Whether it was disconnected.
    disconnected: bool,
    /// Messages the sender's last round got into the core.
    last_round: usize,
}

/// `rounds` times: node `sender` multicasts until refused, then the two nodes exchange
/// messages at `t`. The sender's session reads everything; the other's reads nothing.
fn flood(
    nodes: &mut [Node; 2],
    sender: usize,
    sessions: [SessionId; 2],
    t: Instant,
    rounds: usize,
) -> Flooded {
    let mut seen = Flooded {
        unread: 0,
        disconnected: false,
        last_round: 0,
    };
    for _ in 0..rounds {
        seen.last_round = 0;
        while seen.last_round < 1000
            && nodes[sender]
                .multicast(t, sessions[sender], Service::Agreed, &[g("g")], vec![7; 10])
                .is_ok()
        {
            seen.last_round += 1;
        }
        // Until quiet: each node's outputs, told apart (session ids are per node).
        loop {
            let mut outs = [Vec::new(), Vec::new()];
            let (x, y) = nodes.split_at_mut(1);
            let moved = forward(&mut x[0], &mut y[0], t, &mut outs[0])
                | forward(&mut y[0], &mut x[0], t, &mut outs[1]);
            for out in std::mem::take(&mut outs[sender]) {
                if let Output::Deliver { session, .. } = out {
                    nodes[sender].mark_read(session, 1);
                }
            }
            for out in std::mem::take(&mut outs[1 - sender]) {
                match out {
                    Output::Deliver {
                        event: Event::Disconnected { .. },
                        ..
                    } => seen.disconnected = true,
                    Output::Deliver { .. } => seen.unread += 1,
                    _ => {}
                }
            }
            // Reads release held acknowledgements: go on while anything moves.
            if !moved && nodes.iter().all(|n| n.outputs.is_empty()) {
                break;
            }
        }
    }
    seen
}

/// Flow control to the slowest reader (issue 24): a session that falls behind its events
/// makes its node hold back its acknowledgement, so the sequencer's window of unstable
/// entries fills and the other node's multicasts are refused, instead of the session
/// running into `session_queue_limit` and being disconnected; once it reads, the group
/// moves again. Both for a lagging member and a lagging sequencer.
#[test]
fn a_slow_reader_slows_the_senders_instead_of_being_disconnected() {
    for lagging in [0, 1] {
        let (mut nodes, t, sessions) = two_in_g(Instant::now());
        let sender = 1 - lagging;
        let seen = flood(&mut nodes, sender, sessions, t, 60);
        assert!(!seen.disconnected, "lagging {lagging}");
        assert_eq!(seen.last_round, 0, "the sender waits (lagging {lagging})");
        assert!(nodes[lagging].holding_ack());
        assert!(
            (25..100).contains(&seen.unread),
            "held at the reader window plus the unstable window: {} (lagging {lagging})",
            seen.unread
        );
        assert!(matches!(
            nodes[sender].multicast(t, sessions[sender], Service::Agreed, &[g("g")], vec![1]),
            Err(GcsError::Backpressure { .. })
        ));
        // The slow reader reads: its acknowledgement goes out and the senders go on.
        nodes[lagging].mark_read(sessions[lagging], seen.unread);
        assert!(!nodes[lagging].holding_ack());
        // (its first round finds the window still full: the acknowledgement is yet to go)
        let more = flood(&mut nodes, sender, sessions, t, 2);
        assert!(more.last_round > 0, "lagging {lagging}");
        assert!(!more.disconnected);
    }
}

/// The hold is bounded by `flush_timeout`: a session that never reads does not stop
/// the group for longer; it is then disconnected at `session_queue_limit` as before.
#[test]
fn a_session_that_never_reads_is_still_disconnected() {
    for lagging in [0, 1] {
        let flush_timeout = CoreConfig::default().flush_timeout;
        let (mut nodes, t, sessions) = two_in_g(Instant::now());
        let sender = 1 - lagging;
        let held = flood(&mut nodes, sender, sessions, t, 60);
        assert!(!held.disconnected && held.last_round == 0);
        let deadline = nodes[lagging].poll_timeout().unwrap();
        assert!(deadline <= t + flush_timeout, "the bound is a deadline");
        let t = t + flush_timeout;
        nodes[lagging].handle_timeout(t);
        nodes[sender].handle_timeout(t);
        let after = flood(&mut nodes, sender, sessions, t, 60);
        assert!(after.disconnected, "lagging {lagging}");
        assert!(
            after.last_round > 0,
            "the sender goes on (lagging {lagging})"
        );
    }
}

/// Clients: a member confirms a client's message once every member of the view has
/// delivered it (every member's `Ack` carries its delivered point), not when the
/// message becomes committed and stable: a member that missed the origin's `Ack` would
/// flush without it (PROTOCOL.md, "Clients"). With the rule before (planted
/// `confirm_when_stable`) the member confirms as soon as it is stable.
#[test]
fn a_client_message_is_confirmed_once_every_member_delivered_it() {
    for planted in [false, true] {
        let t0 = Instant::now();
        let (mut a, mut b, t, _sa, sb) = both_in_g(t0);
        b.plant_bugs(PlantedBugs {
            confirm_when_stable: planted,
            ..PlantedBugs::default()
        });
        let cid = ClientMsgId {
            client: id("client.x"),
            incarnation: Incarnation(1),
            counter: 1,
        };
        let ack = ack_in_2a;
        let confirmed = |outs: &[Output]| {
            outs.iter()
                .any(|o| matches!(o, Output::Confirmed { id, .. } if *id == cid))
        };
        b.multicast_for_client(t, sb, cid.clone(), Service::Agreed, &[g("g")], vec![7])
            .unwrap();
        let mut others = Vec::new();
        assert!(forward(&mut b, &mut a, t, &mut others)); // Submit
        assert!(forward(&mut a, &mut b, t, &mut others)); // Ordered
                                                          // b holds and delivers it, and acknowledges both points at once (it is the
                                                          // origin); the sequencer's `Ack` (it holds it, has not delivered it) comes
                                                          // `ack_delay` later: then both hold it, so it is stable.
        let b_outs = drain(&mut b);
        assert!(!confirmed(&b_outs), "{b_outs:?}");
        let t = t + CoreConfig::default().ack_delay;
        a.handle_timeout(t);
        let [a_ack] = &sends_to(&drain(&mut a), "b")[..] else {
            panic!("expected the sequencer's Ack");
        };
        assert_eq!(*a_ack, ack(3, 2));
        b.handle_message(t, &id("a"), a_ack.clone());
        let outs = drain(&mut b);
        assert_eq!(confirmed(&outs), planted, "{outs:?}");
        if planted {
            continue;
        }
        let outs = b_outs;
        assert_eq!(sent_to(&outs, "a"), ack(3, 3));
        a.handle_message(t, &id("b"), ack(3, 3));
        // a delivers it on b's `Ack` and reports that it did.
        let outs = drain(&mut a);
        assert_eq!(sent_to(&outs, "b"), ack(3, 3));
        b.handle_message(t, &id("a"), ack(3, 3));
        let outs = drain(&mut b);
        assert_eq!(
            outs,
            vec![Output::Confirmed {
                session: sb,
                id: cid.clone(),
                view: vid(2, "a"),
            }]
        );
        // Nothing more: the exchange is over.
        assert_eq!(exchange(&mut a, &mut b, t), vec![]);
    }
}
