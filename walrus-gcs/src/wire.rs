//! [`PeerMessage`]: the one message type that crosses the wire between protocol cores.
//!
//! Every variant carries the sender's [`Incarnation`], and every variant that belongs to a
//! view or a proposal carries its [`ViewId`], so the transport and the core can drop stale
//! frames (an old incarnation, an old view) without understanding the rest. Encoding goes
//! through [`crate::codec`] only.

use crate::types::{
    ClientMsgId, GroupName, Incarnation, NodeRef, Service, SessionId, Stamp, ViewId,
};
use serde::{Deserialize, Serialize};

/// A message from one node's core to another's. See `PROTOCOL.md` for the flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// Failure detector: "I am alive, in this view, and I hear these nodes".
    Heartbeat(Heartbeat),
    /// Member → sequencer: operations of mine to put in the view's order.
    Submit(Submit),
    /// Sequencer → members: operations with their sequence numbers.
    Ordered(Ordered),
    /// Member → every member: "I hold every ordered entry up to `held` and delivered
    /// every one up to `delivered`" (each member works out from these what may be
    /// delivered and what may be forgotten).
    Ack(Ack),
    /// Coordinator → proposed members: start a view change to this view.
    Propose(Propose),
    /// Member → coordinator: a chunk of the entries of my old view I still hold.
    AcceptData(AcceptData),
    /// Member → coordinator: a chunk of the group records of my own sessions and clients
    /// (sent before the `Accept`, whose report counts them).
    AcceptGroups(AcceptGroups),
    /// Member → coordinator: I accept, here is what I hold of my old view (after the
    /// `AcceptData` and `AcceptGroups` chunks).
    Accept(Accept),
    /// Member → coordinator: I refuse this proposal.
    Reject(Reject),
    /// Coordinator → members: a chunk of entries every member of an old view must
    /// deliver before installing (sent before the `Install`).
    InstallData(InstallData),
    /// Coordinator → members: a chunk of the new view's group table (sent before the
    /// `Install`, which counts them).
    InstallGroups(InstallGroups),
    /// Coordinator → members: install the new view.
    Install(Install),
}

impl PeerMessage {
    /// The sender's incarnation.
    pub fn incarnation(&self) -> Incarnation {
        match self {
            PeerMessage::Heartbeat(m) => m.incarnation,
            PeerMessage::Submit(m) => m.incarnation,
            PeerMessage::Ordered(m) => m.incarnation,
            PeerMessage::Ack(m) => m.incarnation,
            PeerMessage::Propose(m) => m.incarnation,
            PeerMessage::AcceptData(m) => m.incarnation,
            PeerMessage::AcceptGroups(m) => m.incarnation,
            PeerMessage::Accept(m) => m.incarnation,
            PeerMessage::Reject(m) => m.incarnation,
            PeerMessage::InstallData(m) => m.incarnation,
            PeerMessage::InstallGroups(m) => m.incarnation,
            PeerMessage::Install(m) => m.incarnation,
        }
    }

    /// The view or proposal this message belongs to (the current view for a heartbeat).
    pub fn view(&self) -> Option<&ViewId> {
        match self {
            PeerMessage::Heartbeat(m) => Some(&m.view),
            PeerMessage::Submit(m) => Some(&m.view),
            PeerMessage::Ordered(m) => Some(&m.view),
            PeerMessage::Ack(m) => Some(&m.view),
            PeerMessage::Propose(m) => Some(&m.proposal),
            PeerMessage::AcceptData(m) => Some(&m.proposal),
            PeerMessage::AcceptGroups(m) => Some(&m.proposal),
            PeerMessage::Accept(m) => Some(&m.proposal),
            PeerMessage::Reject(m) => Some(&m.proposal),
            PeerMessage::InstallData(m) => Some(&m.view),
            PeerMessage::InstallGroups(m) => Some(&m.view),
            PeerMessage::Install(m) => Some(&m.view),
        }
    }

    /// Failure detection: heartbeats travel on the transport's control lane, never
    /// behind application data. Only heartbeats: order is kept within a lane, not across
    /// the two, and a heartbeat overtaking data changes nothing the safety argument
    /// relies on (it feeds only the failure detector). View-change messages stay FIFO
    /// with the ordering messages: with them on the control lane too, the simulator
    /// found a self-delivery violation (seed 10803, issue 24), so their reordering is not
    /// safe as the protocol stands.
    pub fn is_control(&self) -> bool {
        matches!(self, PeerMessage::Heartbeat(_))
    }

    /// A short name of the variant, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerMessage::Heartbeat(_) => "heartbeat",
            PeerMessage::Submit(_) => "submit",
            PeerMessage::Ordered(_) => "ordered",
            PeerMessage::Ack(_) => "ack",
            PeerMessage::Propose(_) => "propose",
            PeerMessage::AcceptData(_) => "accept-data",
            PeerMessage::AcceptGroups(_) => "accept-groups",
            PeerMessage::Accept(_) => "accept",
            PeerMessage::Reject(_) => "reject",
            PeerMessage::InstallData(_) => "install-data",
            PeerMessage::InstallGroups(_) => "install-groups",
            PeerMessage::Install(_) => "install",
        }
    }
}

/// See [`PeerMessage::Heartbeat`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Sender's incarnation.
    pub incarnation: Incarnation,
    /// The sender's current view.
    pub view: ViewId,
    /// The nodes the sender currently considers alive (its row of the connectivity
    /// matrix), sorted.
    pub alive: Vec<NodeRef>,
    /// The largest view counter the sender has seen, so proposals everywhere go higher.
    pub max_counter: u64,
}

/// An operation of one session, put into the total order by the sequencer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Numbers the operations of one node incarnation: 1, 2, 3, … (FIFO per node).
    pub counter: u64,
    /// The session that asked for it.
    pub session: SessionId,
    /// What to do.
    pub kind: OpKind,
}

/// What an [`Op`] does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpKind {
    /// The session joins the group.
    Join(GroupName),
    /// The session leaves the group.
    Leave(GroupName),
    /// The session is gone (closed, or disconnected for not reading): it leaves every group.
    Gone,
    /// A multicast.
    Message {
        /// Requested service.
        service: Service,
        /// Destination groups (sorted, without duplicates).
        groups: Vec<GroupName>,
        /// Application bytes.
        #[serde(with = "crate::codec::bytes")]
        payload: bytes::Bytes,
        /// Set when a member sends it for a client (see `PROTOCOL.md`, "Clients"): the
        /// id under which the client may send it again through another member.
        client: Option<ClientMsgId>,
    },
}

/// An operation with its place in the order of a view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Sequence number in the view (1, 2, 3, …).
    pub seq: u64,
    /// The node incarnation that submitted it.
    pub origin: NodeRef,
    /// The operation.
    pub op: Op,
}

/// See [`PeerMessage::Submit`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submit {
    /// Sender's incarnation.
    pub incarnation: Incarnation,
    /// The view the sender is in.
    pub view: ViewId,
    /// Counter of the first operation the sender submits in this view, so the sequencer
    /// can tell a lost submission (a gap) from a first one.
    pub base: u64,
    /// Operations, in counter order.
    pub ops: Vec<Op>,
}

/// See [`PeerMessage::Ordered`]: one ordering frame for a run of sequence numbers.
///
/// The entries are numbered `first`, `first + 1`, … in the order of `runs`, and each
/// run lists consecutive operations of one origin, so neither a sequence number nor an
/// origin is repeated per message (a batch of 100-byte messages from one sender costs
/// a few bytes per message besides the payload). Decoding is bounded by the codec's
/// frame limit; the receiver checks the numbering with [`Ordered::last`] (no overflow).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ordered {
    /// Sender's (the sequencer's) incarnation.
    pub incarnation: Incarnation,
    /// The view.
    pub view: ViewId,
    /// Sequence number of the first operation of the first run.
    pub first: u64,
    /// Operations in sequence order, grouped by origin.
    pub runs: Vec<Run>,
}

/// Consecutive operations of one origin in an [`Ordered`] batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// The node incarnation that submitted them.
    pub origin: NodeRef,
    /// The operations, in sequence order.
    pub ops: Vec<Op>,
}

impl Ordered {
    /// A batch of `entries`, which must have consecutive sequence numbers (`None` if
    /// they do not, or if there are none).
    pub fn from_entries(
        incarnation: Incarnation,
        view: ViewId,
        entries: Vec<Entry>,
    ) -> Option<Self> {
        let first = entries.first()?.seq;
        let mut runs: Vec<Run> = Vec::new();
        for (i, e) in entries.into_iter().enumerate() {
            if Some(e.seq) != first.checked_add(i as u64) {
                return None;
            }
            match runs.last_mut() {
                Some(run) if run.origin == e.origin => run.ops.push(e.op),
                _ => runs.push(Run {
                    origin: e.origin,
                    ops: vec![e.op],
                }),
            }
        }
        Some(Ordered {
            incarnation,
            view,
            first,
            runs,
        })
    }

    /// How many operations the batch orders.
    pub fn len(&self) -> u64 {
        self.runs.iter().map(|r| r.ops.len() as u64).sum()
    }

    /// Whether the batch orders nothing.
    pub fn is_empty(&self) -> bool {
        self.runs.iter().all(|r| r.ops.is_empty())
    }

    /// The sequence number of the last operation; `None` for an empty batch or one whose
    /// numbering would pass `u64::MAX` (a malformed frame).
    pub fn last(&self) -> Option<u64> {
        self.len()
            .checked_sub(1)
            .and_then(|n| self.first.checked_add(n))
    }

    /// The batch as entries with their sequence numbers (`None` if malformed, see
    /// [`Ordered::last`]).
    pub fn into_entries(self) -> Option<Vec<Entry>> {
        self.last()?;
        let mut seq = self.first;
        let mut out = Vec::new();
        for run in self.runs {
            for op in run.ops {
                out.push(Entry {
                    seq,
                    origin: run.origin.clone(),
                    op,
                });
                seq += 1;
            }
        }
        Some(out)
    }
}

/// See [`PeerMessage::Ack`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Sender's incarnation.
    pub incarnation: Incarnation,
    /// The view.
    pub view: ViewId,
    /// The sender holds every entry with a sequence number up to this.
    pub held: u64,
    /// The sender has delivered every entry up to this one (clients: a member confirms
    /// a client's message once every member has delivered it; PROTOCOL.md, "Clients").
    pub delivered: u64,
}

/// See [`PeerMessage::Propose`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Propose {
    /// Sender's (the coordinator's) incarnation.
    pub incarnation: Incarnation,
    /// The id of the proposed view.
    pub proposal: ViewId,
    /// Its members, sorted.
    pub members: Vec<NodeRef>,
}

/// The part of a member's flush answer that is not entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushReport {
    /// The view the member is leaving.
    pub old_view: ViewId,
    /// It delivered every entry of the old view up to this one.
    pub delivered: u64,
    /// The highest commit point of the old view it knows.
    pub commit: u64,
    /// How many group records it sent in `AcceptGroups` chunks before this: the group
    /// memberships of its own sessions (and its clients') as they stand once its held
    /// entries are delivered, with their join stamps.
    pub group_count: u64,
    /// How many entries it sent in `AcceptData` chunks before this.
    pub held_count: u64,
    /// The largest view counter it has seen.
    pub max_counter: u64,
}

/// One session's membership of one group, with the stamp of its join.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupRecord {
    /// The group.
    pub group: GroupName,
    /// When the join was ordered; members of a group are listed in stamp order.
    pub stamp: Stamp,
    /// The member.
    pub member: crate::types::Member,
    /// The join was ordered in a view of one node (e.g. a node that started cut off). Such
    /// a stamp is not comparable with those of a running cluster (its view counter knows
    /// nothing of theirs), so at the first install of a view of several nodes the record
    /// is stamped anew at that view's start: it comes after the members the others had.
    pub alone: bool,
}

/// See [`PeerMessage::AcceptData`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptData {
    /// Sender's incarnation.
    pub incarnation: Incarnation,
    /// The proposal being answered.
    pub proposal: ViewId,
    /// Entries of the sender's old view it still holds.
    pub entries: Vec<Entry>,
}

/// See [`PeerMessage::AcceptGroups`]. Group records travel in chunks of at most
/// `max_message_size` bytes, not in the `Accept`: a member serving a few thousand clients
/// holds more than one frame's worth (about 376 bytes a record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptGroups {
    /// Sender's incarnation.
    pub incarnation: Incarnation,
    /// The proposal being answered.
    pub proposal: ViewId,
    /// Group records of the sender's own sessions, in order.
    pub groups: Vec<GroupRecord>,
}

/// See [`PeerMessage::Accept`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accept {
    /// Sender's incarnation.
    pub incarnation: Incarnation,
    /// The proposal being accepted.
    pub proposal: ViewId,
    /// What the sender holds of its old view.
    pub report: FlushReport,
}

/// See [`PeerMessage::Reject`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// Sender's incarnation.
    pub incarnation: Incarnation,
    /// The proposal being refused.
    pub proposal: ViewId,
    /// The highest view or proposal id the sender has accepted (propose above it).
    pub highest: ViewId,
}

/// See [`PeerMessage::InstallData`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallData {
    /// Sender's (the coordinator's) incarnation.
    pub incarnation: Incarnation,
    /// The view being installed.
    pub view: ViewId,
    /// The old view these entries belong to.
    pub old_view: ViewId,
    /// Entries of `old_view` that its members moving to `view` deliver.
    pub entries: Vec<Entry>,
}

/// What the members of one old view deliver before installing the new view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cut {
    /// The old view.
    pub old_view: ViewId,
    /// Entries above this sequence number that belong to the cut were all sent in
    /// `InstallData` chunks (members already delivered the ones at or below it).
    pub above: u64,
    /// The sequence numbers the members deliver above `above`, ascending.
    pub seqs: Vec<u64>,
}

/// See [`PeerMessage::InstallGroups`]; chunked for the reason [`AcceptGroups`] is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallGroups {
    /// Sender's (the coordinator's) incarnation.
    pub incarnation: Incarnation,
    /// The view being installed.
    pub view: ViewId,
    /// The next records of the new view's group table, in the table's order.
    pub groups: Vec<GroupRecord>,
}

/// See [`PeerMessage::Install`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Install {
    /// Sender's (the coordinator's) incarnation.
    pub incarnation: Incarnation,
    /// The new view's id.
    pub view: ViewId,
    /// Its members, sorted; the first is the sequencer.
    pub members: Vec<NodeRef>,
    /// For each old view a member comes from, what it delivers first.
    pub cuts: Vec<Cut>,
    /// How many records the new view's group table has: every group membership in the
    /// view, sorted by group then stamp, sent before this in `InstallGroups` chunks.
    pub group_count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Member, NodeId};

    #[test]
    fn a_largest_message_fits_in_one_frame() {
        let max = crate::CoreConfig::default().max_message_size;
        let msg = PeerMessage::Ordered(Ordered {
            incarnation: Incarnation(u64::MAX),
            view: ViewId {
                counter: u64::MAX,
                coordinator: NodeId::new("a-rather-long-node-name.example.com"),
                incarnation: Incarnation(u64::MAX),
            },
            first: u64::MAX,
            runs: vec![Run {
                origin: NodeRef {
                    id: NodeId::new("a-rather-long-node-name.example.com"),
                    incarnation: Incarnation(u64::MAX),
                },
                ops: vec![Op {
                    counter: u64::MAX,
                    session: SessionId(u64::MAX),
                    kind: OpKind::Message {
                        service: Service::Agreed,
                        groups: vec![GroupName::new("Controllers"), GroupName::new("Reporters")],
                        payload: vec![0xAB; max].into(),
                        client: None,
                    },
                }],
            }],
        });
        let bytes = crate::codec::encode(&msg).unwrap();
        assert!(bytes.len() <= crate::codec::MAX_FRAME);
        assert_eq!(crate::codec::decode::<PeerMessage>(&bytes).unwrap(), msg);
    }

    #[test]
    fn every_message_round_trips_through_the_codec() {
        let view = ViewId {
            counter: 3,
            coordinator: NodeId::new("a"),
            incarnation: Incarnation(1),
        };
        let me = NodeRef {
            id: NodeId::new("a"),
            incarnation: Incarnation(1),
        };
        let op = Op {
            counter: 1,
            session: SessionId(1),
            kind: OpKind::Message {
                service: Service::Agreed,
                groups: vec![GroupName::new("g")],
                payload: vec![1, 2, 3].into(),
                client: None,
            },
        };
        let entry = Entry {
            seq: 1,
            origin: me.clone(),
            op: op.clone(),
        };
        let record = GroupRecord {
            group: GroupName::new("g"),
            stamp: Stamp {
                view: view.clone(),
                seq: 1,
            },
            alone: false,
            member: Member {
                node: NodeId::new("a"),
                incarnation: Incarnation(1),
                session: SessionId(1),
            },
        };
        let msgs = vec![
            PeerMessage::Heartbeat(Heartbeat {
                incarnation: Incarnation(1),
                view: view.clone(),
                alive: vec![me.clone()],
                max_counter: 3,
            }),
            PeerMessage::Submit(Submit {
                incarnation: Incarnation(1),
                view: view.clone(),
                base: 1,
                ops: vec![op],
            }),
            PeerMessage::Ordered(
                Ordered::from_entries(Incarnation(1), view.clone(), vec![entry.clone()]).unwrap(),
            ),
            PeerMessage::InstallGroups(InstallGroups {
                incarnation: Incarnation(1),
                view: view.clone(),
                groups: vec![record.clone()],
            }),
            PeerMessage::AcceptGroups(AcceptGroups {
                incarnation: Incarnation(1),
                proposal: view.clone(),
                groups: vec![record],
            }),
            PeerMessage::Install(Install {
                incarnation: Incarnation(1),
                view: view.clone(),
                members: vec![me.clone()],
                cuts: vec![Cut {
                    old_view: view.clone(),
                    above: 0,
                    seqs: vec![1],
                }],
                group_count: 1,
            }),
        ];
        for m in msgs {
            let bytes = crate::codec::encode(&m).unwrap();
            let back: PeerMessage = crate::codec::decode(&bytes).unwrap();
            assert_eq!(back, m);
        }
    }

    fn entry(seq: u64, origin: &str, counter: u64) -> Entry {
        Entry {
            seq,
            origin: NodeRef {
                id: NodeId::new(origin),
                incarnation: Incarnation(1),
            },
            op: Op {
                counter,
                session: SessionId(1),
                kind: OpKind::Gone,
            },
        }
    }

    fn view() -> ViewId {
        ViewId {
            counter: 2,
            coordinator: NodeId::new("a"),
            incarnation: Incarnation(1),
        }
    }

    #[test]
    fn a_batch_groups_runs_by_origin_and_numbers_them_from_first() {
        let entries = vec![
            entry(7, "a", 1),
            entry(8, "a", 2),
            entry(9, "b", 1),
            entry(10, "a", 3),
        ];
        let o = Ordered::from_entries(Incarnation(1), view(), entries.clone()).unwrap();
        assert_eq!(
            (o.first, o.runs.len(), o.len(), o.last()),
            (7, 3, 4, Some(10))
        );
        assert_eq!(o.into_entries().unwrap(), entries);
    }

    #[test]
    fn a_batch_refuses_numbering_that_skips_overlaps_or_overflows() {
        let skip = vec![entry(7, "a", 1), entry(9, "a", 2)];
        assert!(Ordered::from_entries(Incarnation(1), view(), skip).is_none());
        let overlap = vec![entry(7, "a", 1), entry(7, "b", 1)];
        assert!(Ordered::from_entries(Incarnation(1), view(), overlap).is_none());
        assert!(Ordered::from_entries(Incarnation(1), view(), vec![]).is_none());
        // A peer's frame numbering past u64::MAX is malformed, not a panic or a wrap.
        let mut o = Ordered::from_entries(Incarnation(1), view(), vec![entry(1, "a", 1)]).unwrap();
        o.first = u64::MAX;
        assert_eq!(o.last(), Some(u64::MAX));
        let again = o.runs[0].ops[0].clone();
        o.runs[0].ops.push(again);
        assert_eq!(o.last(), None);
        assert!(o.into_entries().is_none());
    }
}
