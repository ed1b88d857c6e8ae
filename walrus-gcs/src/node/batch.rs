//! Batching of ordering messages within one turn of the driver (issue 24).
//!
//! Everything a node sends waits in its output queue until the driver drains it, which
//! it does once per turn (after a run of inputs). A new ordering message to a peer whose
//! last queued message is of the same kind and view is merged into that one instead of
//! queued behind it: [`Ordered`] batches whose numbering continues it and [`Submit`]s whose
//! counters continue it are appended (up to `max_message_size` of operations), and an
//! [`Ack`] replaces the queued one with the higher points. Only the *last*
//! message queued to that peer is ever merged into, so what the peer receives, and in
//! which order, is what it would have received message by message, only in fewer frames:
//! the per-link FIFO order the protocol relies on is untouched, and nothing waits for a
//! timer (at light load a turn holds one input, and its message leaves at once).

use super::*;

/// What merging a message into the last one queued to the same peer did.
pub(super) enum Merged {
    /// The message is now part of the queued one.
    Yes,
    /// It must be queued on its own (given back).
    No(PeerMessage),
}

/// Summed [`op_size`] of a batch's operations.
fn ops_size<'a>(ops: impl Iterator<Item = &'a Op>) -> usize {
    ops.map(op_size).sum()
}

/// Merges `next` into `prev` (the last message queued to the same peer) if they are
/// ordering messages of the same kind and view and `next` continues `prev`; a merged
/// batch stays within `limit` bytes of operations. `overlap` is the planted bug
/// `batch_overlap` (feature `testing`): the merged batch repeats `prev`'s last operation.
pub(super) fn merge(
    prev: &mut PeerMessage,
    next: PeerMessage,
    limit: usize,
    overlap: bool,
) -> Merged {
    match (prev, next) {
        (PeerMessage::Ordered(p), PeerMessage::Ordered(n))
            if p.view == n.view
                && p.incarnation == n.incarnation
                && p.last().and_then(|l| l.checked_add(1)) == Some(n.first)
                && ops_size(p.runs.iter().chain(&n.runs).flat_map(|r| &r.ops)) <= limit =>
        {
            if overlap {
                if let Some(run) = p.runs.last_mut() {
                    if let Some(op) = run.ops.last().cloned() {
                        run.ops.push(op);
                    }
                }
            }
            for run in n.runs {
                match p.runs.last_mut() {
                    Some(last) if last.origin == run.origin => last.ops.extend(run.ops),
                    _ => p.runs.push(run),
                }
            }
            Merged::Yes
        }
        (PeerMessage::Submit(p), PeerMessage::Submit(n))
            if p.view == n.view
                && p.incarnation == n.incarnation
                && p.base == n.base
                && p.ops.last().map(|o| o.counter + 1) == n.ops.first().map(|o| o.counter)
                && ops_size(p.ops.iter().chain(&n.ops)) <= limit =>
        {
            p.ops.extend(n.ops);
            Merged::Yes
        }
        (PeerMessage::Ack(p), PeerMessage::Ack(n))
            if p.view == n.view && p.incarnation == n.incarnation =>
        {
            p.held = p.held.max(n.held);
            p.delivered = p.delivered.max(n.delivered);
            Merged::Yes
        }
        (_, next) => Merged::No(next),
    }
}

impl Node {
    /// Queues `msg` for `to`, merged into the last message queued to `to` when it can be.
    pub(super) fn queue_send(&mut self, to: NodeId, msg: PeerMessage) {
        let limit = self.config.max_message_size;
        let overlap = planted!(self, batch_overlap);
        let msg = match self.last_send.get(&to) {
            Some(&at) if at >= self.popped => {
                let i = usize::try_from(at - self.popped).unwrap_or(usize::MAX);
                match self.outputs.get_mut(i) {
                    Some(Output::Send { to: t, msg: prev }) if *t == to => {
                        match merge(prev, msg, limit, overlap) {
                            Merged::Yes => return,
                            Merged::No(msg) => msg,
                        }
                    }
                    _ => msg,
                }
            }
            _ => msg,
        };
        self.last_send
            .insert(to.clone(), self.popped + self.outputs.len() as u64);
        self.outputs.push_back(Output::Send { to, msg });
    }
}
