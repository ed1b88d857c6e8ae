//! What the actors say to each other over walrus-gcs, and on which groups.
//!
//! Group names follow the paper: Controllers ask on `Reporters` and Reporters answer on
//! `Controllers`; the master's decision goes to `Controllers` (backups keep the state) and
//! `Directors` (each applies its own area's answer); the Replicator primary announces
//! generations on `Replicators`. Every payload is one [`WalrusMessage`], encoded by
//! `walrus_gcs::codec` (bincode with a size limit, behind one module).

use crate::model::{Decision, Report, Round};
use serde::{Deserialize, Serialize};

/// The group every Controller joins; its first member is master. Reports arrive here.
pub const CONTROLLERS: &str = "Controllers";
/// The group every Reporter joins; round requests arrive here.
pub const REPORTERS: &str = "Reporters";
/// The group every Director joins; decisions arrive here.
pub const DIRECTORS: &str = "Directors";
/// The group every Replicator joins; generation announcements arrive here.
pub const REPLICATORS: &str = "Replicators";

/// One message between actors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum WalrusMessage {
    /// The master asks every Reporter for its latest report (sent on `Reporters`).
    RoundRequest {
        /// The round being run.
        round: Round,
    },
    /// A Reporter's answer (sent on `Controllers`).
    Report(Report),
    /// A round's outcome (sent on `Controllers` and `Directors`).
    Decision(Decision),
}
