//! What needs walrus-actors' types (feature `actors`): the topology and statistics
//! fixtures, the Director's authority servers, the Reporter's scenarios, the Replicator's
//! helpers, real walrus-gcs members in the test's process. Only for walrus-actors' integration tests and the crates above it: a unit
//! test inside walrus-actors sees another copy of these types.

pub mod deployment;
pub mod director;
pub mod fixtures;
pub mod group;
pub mod replicator;
pub mod reporter;
