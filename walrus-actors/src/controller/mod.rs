//! The Controller: rounds, the four-phase assignment of areas to clusters, and
//! notifications (paper §6).
//!
//! What lives here is the logic, with no runtime, and [`actor`]: the thin shell that joins
//! the `Controllers` group over walrus-gcs and moves messages for [`round::RoundMachine`].
//!
//! ```text
//!            Reports (on `Controllers`)                      Decision (to backups)
//!                  │                                               ▲
//!                  ▼                                               │
//!   load::LoadFormula ──► round::RoundMachine ──► assign::assign ──┤
//!   (stats → one load)   (master/backup, rounds,  (pure: phases    ├─► ApplyAnswers ─► Director
//!                         timeouts, ignore bad    1–4, record      │   (changed areas only)
//!                         reports)                 sets, reasons)  └─► Notify ─► notify::Notifier
//!                                                                       (command, webhook)
//! ```
//!
//! - [`load`]: the documented, configurable load formula, and what a report's figure out of
//!   range does, per field (its module doc has the table). In short: a report comes from a
//!   live server, so no figure makes it dead — busy workers above `max_workers` (a flash
//!   crowd) is over capacity (load above 1.0), fractions out of `0..=1` are clamped, a NaN
//!   CPU figure makes the report TEMPFAIL (last round's load).
//! - [`assign`]: the assignment as one pure function, with per-change reasons.
//! - [`round`]: the sans-IO round state machine for master and backups.
//! - [`notify`]: notification events and their two channels (command, HTTP webhook).
//!
//! # Partitions (paper §6.3)
//!
//! walrus-gcs gives each connected component its own membership of `Controllers`, and the
//! first member of that list is master: one master per component, never two in one.
//!
//! - **What a master considers.** Reports travel only inside a component, so a master hears
//!   only the Reporters it can reach; every other server is "no answer", hence dead for the
//!   round. A server can be in one component only at a time, so no server is counted by two
//!   masters.
//! - **An area's DNS in each component.** Each master computes answers for every area, but
//!   an answer reaches an area's name server only from within the master's component: in
//!   the `Directors` mode the master multicasts each decision and the area's Director
//!   (beside its name server) applies its own area's answer when it differs from what DNS
//!   holds (`director` module); in the direct mode the master sends the changed answers
//!   itself (`Output::ApplyAnswers`).
//!   - Area, its Director and its home cluster all on one side: that side's master sees
//!     the home cluster working and keeps the area home (phase 2). The other side's master
//!     sees that cluster dead and moves the area in its own view (phase 3), but no Director
//!     hears it: the area's DNS does not change.
//!   - Area's Director on one side, its home cluster's servers on the other: the Director's
//!     side sees the cluster dead and moves the area once (phase 3) to one of its working
//!     clusters; clients keep being served.
//!   - Director alone in a component with no Controller: the name server keeps its last
//!     answer (fail static).
//!   - Paper's direct mode (the master sends RFC 2136 updates itself): an update may cross
//!     the partition when IP routing works where the group does not. Each master still
//!     writes only its own changes, so there is no round-after-round alternation, but the
//!     last writer wins on an area both can reach; the `Directors` mode avoids that.
//! - **No flapping between two masters.** An area's Director is in one component at a
//!   time, so at most one master's decisions reach it, and that master's answer for the
//!   area changes only when its own computation does: two masters cannot alternate on one
//!   area round after round. (Direct mode across a partition is the exception named
//!   above: last writer wins, but each master writes only its own changes.) Within one master, phase 4 moves at most one
//!   area into a cluster per round and only for a gain of `margin` (more for an area it
//!   moved recently: ping-pong damping), an area returns home only below
//!   `threshold - return_margin` (its margin doubling if it flaps), and a server already in
//!   an answer stays until `threshold + record_hysteresis` (see [`assign`]).
//! - **Heal.** The first member of the merged list is master (the other stops at once). It
//!   restarts any round in progress — that round's request reached only its old component,
//!   so closing it would count the newly reachable servers as dead and move an area for one
//!   round — and re-sends every area's answer once with the first round computed from all
//!   servers ([`round::RoundMachine::handle_merge`]). The answers converge in that round.
//!
//! Tested at the logic level in `tests/controller_rounds.rs` (a deterministic harness in
//! place of walrus-gcs, both Director modes): kill the master, a newcomer joins, two
//! partition layouts and their heal.
//!
//! What the actor must do is listed in the [`round`] module doc.

pub mod actor;
pub mod assign;
pub mod event;
pub mod knobs;
pub mod load;
pub mod notify;
pub mod overrides;
pub mod round;

pub use actor::start;

#[cfg(test)]
mod oscillation_tests;
