//! walrus-gcs: Walrus's group-communication layer, replacing the C Spread toolkit.
//!
//! What it owns: membership views of the configured nodes, named process groups that
//! local sessions join and leave, and multicast with Reliable and Agreed (totally
//! ordered) service, with partitions and merges (Extended Virtual Synchrony).
//!
//! What it does not own: sockets, clocks and randomness. The protocol core ([`Node`]) is
//! a sans-IO state machine; the QUIC transport drives it. `PROTOCOL.md` (beside this
//! crate's `Cargo.toml`) describes the protocol and justifies it.
//!
//! ```text
//!  session ──multicast──▶ Node (sans-IO) ──Output::Send──▶ transport ──▶ peer Node
//!     ▲                                                                    │
//!     └────────────── Output::Deliver / membership events ◀────────────────┘
//! ```
//!
//! Following one message: [`Node::multicast`] appends an [`Op`] to the node's
//! pending list and sends it in a [`Submit`] to the view's sequencer (its first
//! member). The sequencer numbers it and sends an [`Ordered`] entry to every member;
//! each acknowledges to every member with [`Ack`]. Once a member hears that the sender
//! itself holds the entry, the entry is committed there, and the member delivers the
//! entries up to the commit point, in sequence order, as [`Event::Message`] to each local session in a
//! destination group. If the view changes first, the flush delivers or drops the entry
//! consistently, and the sender submits it again in the next view if it was dropped.
//!
//! What a driver (the QUIC transport) owes the core:
//! * create it with `Node::new(config, me, incarnation, peers, now)`, where a restarted
//!   process passes a larger [`Incarnation`] (for example its start time in ms);
//! * feed every frame from a peer to [`Node::handle_message`] after checking the sender's
//!   certificate names `from`, and report connections with [`Node::handle_link_up`] /
//!   [`Node::handle_link_down`]; link at most one process per name at a time (the QUIC
//!   transport's [`transport::admission`] rule: a second process proving a linked name is
//!   refused as a duplicate and stops);
//! * after every input drain [`Node::poll_output`] (send [`Output::Send`] on the link to
//!   its peer, in order; hand [`Output::Deliver`] to the session), then arm one timer at
//!   [`Node::poll_timeout`] and call [`Node::handle_timeout`] when it fires;
//! * call [`Node::mark_read`] when a session's application takes events off its queue:
//!   a session that leaves more than `CoreConfig::session_queue_limit` unread is
//!   disconnected ([`Event::Disconnected`], delivered past the limit: close its stream).
//!
//! Clients ([`tier`]): a process with no place in views attaches to one member
//! ([`tier::Client::attach`], the member listening with [`Gcs::serve_clients`]) and uses
//! sessions ([`tier::ClientSession`]) hosted by that member; it fails over to the next
//! member of its list. See `PROTOCOL.md`, "Clients".
//!
//! The deterministic simulator (`walrus_gcs::sim`, feature `testing`) drives many cores this way on
//! a virtual clock and checks the guarantees listed in `PROTOCOL.md`.
//!
//! The public API is what this file re-exports: the driver ([`Gcs`], [`Session`]), the
//! core ([`Node`]) with its inputs and outputs ([`Output`], [`Event`], [`PeerMessage`] and
//! the payloads of its variants), the identities, and the modules [`codec`], [`gcs`] (the
//! driver) and [`transport`]. The core's own modules (`node`, `wire`, `event`, …) are
//! private.
#![warn(missing_docs)]

pub mod codec;
mod config;
mod error;
mod event;
pub mod gcs;
pub mod loopback;
mod node;
mod own_thread;
pub mod tier;
pub mod transport;
mod types;
mod wire;

#[cfg(any(test, feature = "testing"))]
pub mod sim;

// The unit tests run hundreds of simulator seeds, which allocate and free many small
// values; mimalloc (a dev-dependency) takes a good part of glibc's share of their time.
#[cfg(test)]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The shared buffer a delivered message's payload comes in ([`Event::Message`]): cloning an
/// event does not copy it, and it derefs to `&[u8]`.
pub use bytes::Bytes;
pub use config::CoreConfig;
pub use error::GcsError;
pub use event::{DisconnectReason, Event, MembershipReason, Output, ViewChange};
pub use gcs::{DriverError, Gcs, GcsConfig, GcsStats, GcsThread, Session, SessionSender};
pub use node::Node;
#[cfg(any(test, feature = "testing"))]
pub use node::PlantedBugs;
pub use types::{
    ClientMsgId, GroupName, Incarnation, Member, NodeId, NodeRef, Service, SessionId, Stamp, ViewId,
};
// The one message type between cores, and the payloads of its variants (a transport
// moves them opaquely; tests and tools build them).
pub use wire::{
    Accept, AcceptData, AcceptGroups, Ack, Cut, Entry, FlushReport, GroupRecord, Heartbeat,
    Install, InstallData, InstallGroups, Op, OpKind, Ordered, PeerMessage, Propose, Reject, Run,
    Submit,
};
