//! Planted protocol bugs (feature `testing` only): switches that break one rule of the
//! core each, so a test can show that the simulator's checkers catch the break. A build
//! without `testing` has neither this type nor the field in [`Node`] that holds it.

use super::Node;

/// Test-only switches that plant protocol bugs, to show the simulator's checkers catch them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// Install new views without delivering the old view's cut (skips the flush).
    pub skip_flush: bool,
    /// Refuse an older incarnation forever once a newer one was heard (the rule before
    /// issue 16: the real node stays alone after its duplicate went away).
    pub refuse_older_incarnations: bool,
    /// Merge group lists by join stamp only (the rule before issue 16: a node that
    /// joined alone in a young view goes first after the heal).
    pub merge_by_stamp_only: bool,
    /// Batching (issue 24): merging two `Ordered` batches repeats the first one's last
    /// operation, so the order ranges of the merged batch overlap by one.
    pub batch_overlap: bool,
    /// Clients: deliver a client's message again when the client sent it again through
    /// another member (no drop of a copy by its id).
    pub client_no_dedup: bool,
    /// Clients: a membership delta sent to a client leaves out who joined (the client
    /// rebuilds a wrong list).
    pub client_delta_skip: bool,
    /// Clients: confirm a client's message once it is stable (every member holds it),
    /// the rule before every member reported its delivered point: a member that learned
    /// "committed" and "stable" from the `Ack`s it got confirms what another member,
    /// which missed the submitter's `Ack`, may flush without. Also sends no extra `Ack`
    /// for the delivered points (so it behaves as the core did before).
    pub confirm_when_stable: bool,
    /// A node that accepts a proposal or installs a view keeps the heartbeat rows of the
    /// coordinator and the members as they were (the rule before 7 December 2026): a row
    /// sent before its node heard a newcomer says they are not connected, so a member
    /// proposes a smaller view just after installing the whole one (a split right after
    /// the group formed).
    pub stale_member_rows: bool,
}

impl Node {
    /// Plants protocol bugs (only for showing that the simulator's checkers catch them;
    /// exists only with the `testing` feature).
    pub fn plant_bugs(&mut self, bugs: PlantedBugs) {
        self.bugs = bugs;
    }

    /// The planted bugs (for the parts beside the core, e.g. the client host).
    pub fn planted_bugs(&self) -> PlantedBugs {
        self.bugs
    }
}
