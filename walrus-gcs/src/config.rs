//! Tunables of the protocol core, with LAN defaults and a WAN profile.

use std::time::Duration;

/// Settings of one node's protocol core. [`CoreConfig::default`] is the LAN profile;
/// [`CoreConfig::wan`] is the same with timeouts ten times longer (one setting to change).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreConfig {
    /// How often a node sends a heartbeat (with its list of live peers) to every
    /// configured peer. Default 100 ms (LAN), 1 s (WAN).
    pub heartbeat_interval: Duration,
    /// A peer that has not been heard from for this long (or whose link the transport
    /// reported down) is dead to this node. Default 400 ms (LAN), 4 s (WAN). With the
    /// defaults a killed node leaves the view in about this time plus one flush round.
    pub failure_timeout: Duration,
    /// How long the would-be coordinator waits after noticing a membership change before
    /// proposing a view, so a burst of changes yields one view. Default 50 ms (LAN),
    /// 500 ms (WAN).
    pub settle: Duration,
    /// How long a proposer waits for every member's flush answer (and a member for the
    /// install) before giving up and proposing again. Default 500 ms (LAN), 5 s (WAN).
    pub flush_timeout: Duration,
    /// How long a node that is not the designated coordinator of the view it wants waits
    /// before proposing that view itself. Default 1 s (LAN), 10 s (WAN).
    pub view_change_timeout: Duration,
    /// Largest multicast payload in bytes; larger sends are refused with
    /// [`crate::GcsError::MessageTooLarge`]. Default 1 MiB. Must stay below
    /// [`crate::codec::MAX_FRAME`] minus headers.
    pub max_message_size: usize,
    /// How many delivered events a session may leave unread (see
    /// [`crate::Node::mark_read`]) before it is disconnected with
    /// [`crate::Event::Disconnected`]. Default 10 000.
    pub session_queue_limit: usize,
    /// The send window: how many of this node's multicasts may be on their way (taken
    /// by [`crate::Node::multicast`] but not yet delivered back here, in order) before it
    /// refuses more with [`crate::GcsError::Backpressure`] (the async
    /// [`crate::Session::multicast`] waits for room instead). Joins, leaves and closes are
    /// held back only at twice this. Default 256. In a group of more than one member the
    /// node's share of `group_window` is the smaller bound.
    pub max_pending: usize,
    /// The send window in bytes: multicasts are refused while this many bytes of this
    /// node's multicasts are on their way, each counting its payload plus 1 KiB for what
    /// a message costs apart from its bytes (one message is always let through, so a
    /// message up to `max_message_size` can be sent). Default 256 KiB; in a group, its
    /// share of `group_window_bytes` is the smaller bound.
    pub max_pending_bytes: usize,
    /// How many ordered but not yet stable messages the sequencer keeps before it stops
    /// ordering new ones (flow control; bounds every member's memory). Default 4096.
    pub max_unstable: u64,
    /// The same window in payload bytes. Default 16 MiB.
    pub max_unstable_bytes: usize,
    /// The group's send window: what all members together may have on their way. Each
    /// node's window is this divided by the number of members in its view, but at most
    /// `max_pending` (like Totem's `window_size` over its per-node `max_messages`), so
    /// the queue every message waits behind stays about this deep however many members
    /// send (Little's law: what is in flight is what every message waits behind).
    /// Default 576 messages; with small messages the byte window binds first.
    pub group_window: usize,
    /// The group's send window in bytes, counted as for `max_pending_bytes` (payload plus
    /// 1 KiB a message), divided the same way, at most `max_pending_bytes`. Default
    /// 576 KiB: 192 KiB each at three members, 96 messages of 1 KiB, 174 of 100 B, 11 of
    /// 16 KiB. It sets latency at saturation, and below about this much in flight
    /// throughput falls: 384 KiB (the default until 7 December 2026) held 100 B
    /// messages to 113–142k msg/s with p99 6–8 ms, 576 KiB gives 126–153k with p99
    /// 7–10 ms, 768 KiB p99 up to 14 ms at 1 KiB; PROTOCOL.md, "Flow control", has the
    /// measured trade-off.
    pub group_window_bytes: usize,
    /// How long an `Ack` that no member waits for may wait for one that some member does
    /// (PROTOCOL.md, "Normal operation"): it only moves the stable point, so entries are
    /// forgotten up to this much later. Not a timeout: the WAN profile keeps it. Default
    /// 10 ms.
    pub ack_delay: Duration,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            heartbeat_interval: Duration::from_millis(100),
            failure_timeout: Duration::from_millis(400),
            settle: Duration::from_millis(50),
            flush_timeout: Duration::from_millis(500),
            view_change_timeout: Duration::from_secs(1),
            max_message_size: 1024 * 1024,
            session_queue_limit: 10_000,
            max_pending: 256,
            max_pending_bytes: 256 * 1024,
            max_unstable: 4096,
            max_unstable_bytes: 16 * 1024 * 1024,
            group_window: 576,
            group_window_bytes: 576 * 1024,
            ack_delay: Duration::from_millis(10),
        }
    }
}

impl CoreConfig {
    /// The LAN profile (same as [`Default`]).
    pub fn lan() -> Self {
        Self::default()
    }

    /// The WAN profile: every timeout ten times the LAN one.
    pub fn wan() -> Self {
        Self::lan().scaled(10)
    }

    /// This configuration with every timeout (and the heartbeat interval) multiplied by
    /// `factor`; `ack_delay` stays.
    pub fn scaled(mut self, factor: u32) -> Self {
        self.heartbeat_interval *= factor;
        self.failure_timeout *= factor;
        self.settle *= factor;
        self.flush_timeout *= factor;
        self.view_change_timeout *= factor;
        self
    }
}
