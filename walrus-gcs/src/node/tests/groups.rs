//! Unit tests of the group table: joins, leaves, and a session's queue limit.

use super::*;

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
                members: vec![m("a", s)].into(),
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
        assert_eq!(members[..], [m("a", s2), m("a", s1)]);
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
                event: event(vec![m("a", s2)].into())
            },
            Output::Deliver {
                session: s1,
                event: event(vec![m("a", s2)].into())
            },
        ]
    );
}

/// One change, one list: every local session's event of a change shares the list the
/// core built once (issue 24: a change cost O(sessions × group) when each event got its
/// own copy; 1,000 hosted clients made a join wave take 82 s of a member's CPU).
#[test]
fn the_sessions_told_of_one_change_share_one_list() {
    let t0 = Instant::now();
    let mut a = node("a", t0);
    let sessions: Vec<SessionId> = (0..20).map(|_| a.open_session(t0)).collect();
    for s in &sessions {
        a.join(t0, *s, g("web")).unwrap();
    }
    drain(&mut a);
    let lists = |outs: Vec<Output>| -> Vec<Arc<[Member]>> {
        outs.into_iter()
            .filter_map(|o| match o {
                Output::Deliver {
                    event: Event::Membership { members, .. },
                    ..
                } => Some(members),
                _ => None,
            })
            .collect()
    };
    let newcomer = a.open_session(t0);
    a.join(t0, newcomer, g("web")).unwrap();
    let joined = lists(drain(&mut a));
    assert_eq!(joined.len(), 21, "every member, the joiner too");
    assert_eq!(joined[0].len(), 21);
    assert!(joined.iter().all(|l| Arc::ptr_eq(l, &joined[0])));
    // A leave: the sessions that stay and the leaver get the one list too.
    a.leave(t0, sessions[3], g("web")).unwrap();
    let left = lists(drain(&mut a));
    assert_eq!(left.len(), 21, "20 that stay and the leaver");
    assert_eq!(left[0].len(), 20);
    assert!(left.iter().all(|l| Arc::ptr_eq(l, &left[0])));
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
    // Another session sends (one that lags behind its own events is held back instead,
    // see `a_session_that_lags_behind_its_events_is_held_back_not_disconnected`).
    let w = a.open_session(t0);
    a.join(t0, s, g("g")).unwrap();
    assert_eq!(drain(&mut a).len(), 1, "the join");
    a.multicast(t0, w, Service::Reliable, &[g("g")], vec![1])
        .unwrap();
    a.multicast(t0, w, Service::Reliable, &[g("g")], vec![2])
        .unwrap();
    // `s` lags (its reader window is one event): the node holds the group back for at
    // most `flush_timeout` (see `a_slow_reader_slows_the_senders_instead_of_being_disconnected`)
    // (the multicasts are submitted as the outputs are drained)...
    assert_eq!(drain(&mut a), vec![]);
    assert!(a.holding_ack());
    // ...then lets it go on, and `s` runs into its limit.
    a.handle_timeout(t0 + CoreConfig::default().flush_timeout);
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
