//! The topology and statistics fixtures, which live in walrus-actors (feature `testing`)
//! so that its unit tests share them.

pub use walrus_actors::fixtures::{stats, topology, topology_of};
