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
