//! The Controller: rounds, the four-phase assignment of areas to clusters, and
//! notifications (paper §6).
//!
//! What lives here is the logic, with no runtime: the actor that joins the `Controllers`
//! group and moves messages is a thin shell over [`round::RoundMachine`] (it needs
//! walrus-gcs and is not written yet).
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
//! - [`load`]: the documented, configurable load formula and the sanity check of reports.
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
//! - **An area's DNS in each component.** In component A, an area whose home cluster is
//!   reachable and has a server below threshold stays home (phase 2). An area whose
//!   cluster is entirely in another component looks dead to A's master, which moves it to
//!   A's best working cluster (phase 3). Whether that move reaches the area's name server
//!   depends on where the Director is: with a Director beside the name server (the
//!   `Directors` group), only the master of the component that holds that Director
//!   changes the area, so each area's DNS follows exactly one master — the one on its
//!   side, which sees the area's home cluster as working and keeps it home. An area
//!   whose name server sits alone in a component with no Controller keeps its last answer
//!   (the Director serves it; fail static). In the paper's direct mode (the master sends
//!   RFC 2136 updates itself) the update crosses the partition only if IP routing still
//!   works where the group cannot; then two masters could write the same name server,
//!   which is why the `Directors` mode is the default.
//! - **No flapping between two masters.** An area's answer is written only by the master
//!   of the component that can reach its Director, and a Director is in one component at a
//!   time, so two masters never alternate on one area round after round. Within a master,
//!   phase 4 moves at most one area into a cluster per round and only for a gain of
//!   `margin`, and an area returns home only below `threshold - return_margin` (with its
//!   own margin doubling if it flaps), so one master does not flap either. When the
//!   partition heals, the first member of the merged list stays master (or the merged
//!   list's first member takes over); it re-sends every area's answer once
//!   ([`round::RoundMachine::handle_merge`]), then changes only what its round computes,
//!   now from every server's report: the answers converge in one round.
//!
//! What the actor must do is listed in the [`round`] module doc.

pub mod assign;
pub mod load;
pub mod notify;
pub mod round;

#[cfg(test)]
mod oscillation_tests;
