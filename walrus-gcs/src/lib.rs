//! walrus-gcs: Walrus's group-communication layer, replacing the C Spread toolkit.
//!
//! What it owns: membership views of the configured nodes, named process groups that
//! local sessions join and leave, and multicast with Reliable and Agreed (totally
//! ordered) service, with partitions and merges (Extended Virtual Synchrony).
//!
//! What it does not own: sockets, clocks and randomness. The protocol core is a
//! sans-IO state machine; the QUIC transport drives it.
//!
//! ```text
//!  session ──multicast──▶ core (sans-IO) ──Output::Send──▶ transport ──▶ peer core
//!     ▲                                                                    │
//!     └────────────── Output::Deliver / membership events ◀────────────────┘
//! ```
#![warn(missing_docs)]

pub mod codec;
pub mod transport;
