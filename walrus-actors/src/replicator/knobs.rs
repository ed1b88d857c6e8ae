//! The `[replicator]` section of the configuration file: content replication as an operator
//! sets it ([`ReplicatorKnobs`]). The file deserializes straight into this type (unknown
//! fields refused, optional ones at their defaults), [`ReplicatorKnobs::validate`] checks
//! the ranges and names the field. A knob lives here once: its field, its default and its
//! range. What needs the deployment's node table (is `primary` a node running the
//! replicator role? which nodes are the replicas, and their rsync daemons?) is checked
//! and assembled by the binary, which knows the nodes.

use super::store::StoreConfig;
pub use crate::knob::KnobError;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use walrus_gcs::NodeId;

/// The most old generations `keep` may ask for: each one is a whole tree on every replica
/// (hard links for unchanged files, copies of the changed ones), so a larger number is
/// taken for a typo rather than silently filling the disk.
pub const MAX_KEEP: usize = 100;

/// How the Replicator moves content (`[replicator] method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationMethod {
    /// Walrus's own transfer over the cluster's QUIC connections (the default).
    #[default]
    Walrus,
    /// `rsync -a --delete` from the primary to each replica.
    Rsync,
}

/// What Walrus's own transfer (method `walrus`) runs on (`[replicator] transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum TransferTransport {
    /// Point-to-point streams on the cluster's QUIC connections (the default: one UDP
    /// port per node).
    #[default]
    #[serde(rename = "quic")]
    Quic,
    /// TLS 1.3 over TCP with the same certificates, on each node's address and port
    /// number (TCP), for paths that drop or throttle UDP; needs that TCP port open. Moves
    /// bulk data about as fast as a QUIC stream (walrus-gcs
    /// `examples/transport_bench.rs --streams`: ~1 GB/s each on loopback).
    #[serde(rename = "tls-tcp")]
    TlsTcp,
}

/// Content replication (`[replicator]`), the same for every node of the deployment.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicatorKnobs {
    /// The node whose content root is the primary copy; every other node with the
    /// replicator role is a replica. Required.
    pub primary: NodeId,
    /// On the primary, the content root; on a replica, the directory holding generations
    /// and the `current` link the web server serves. A node may override it (its own
    /// `replicator_root`, see [`ReplicatorKnobs::root_of`]). Required, not empty.
    pub root: PathBuf,
    /// Old generations kept beside the current one (a replica can switch back to them
    /// and links unchanged files from them). Default 2; at most [`MAX_KEEP`].
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// Walrus's own transfer (replicas pull; the default) or rsync (the primary pushes).
    #[serde(default)]
    pub method: ReplicationMethod,
    /// What Walrus's own transfer runs on. Default QUIC.
    #[serde(default)]
    pub transport: TransferTransport,
}

fn default_keep() -> usize {
    2
}

impl ReplicatorKnobs {
    /// Knobs with `primary` and `root` and every other field at its default.
    pub fn new(primary: NodeId, root: PathBuf) -> Self {
        Self {
            primary,
            root,
            keep: default_keep(),
            method: ReplicationMethod::default(),
            transport: TransferTransport::default(),
        }
    }

    /// Checks the ranges: `root` not empty, `keep` at most [`MAX_KEEP`].
    pub fn validate(&self) -> Result<(), KnobError> {
        if self.root.as_os_str().is_empty() {
            return Err(KnobError::new(
                "root",
                "must name a directory (the primary's content root, the replicas' store)",
            ));
        }
        if self.keep > MAX_KEEP {
            return Err(KnobError::new(
                "keep",
                format!(
                    "must be at most {MAX_KEEP} (old generations kept beside the current one; \
                     each is a whole tree on every replica)"
                ),
            ));
        }
        Ok(())
    }

    /// A node's replication directory: its own `own` (a node's `replicator_root`), or
    /// `root`.
    pub fn root_of(&self, own: Option<&Path>) -> PathBuf {
        own.map_or_else(|| self.root.clone(), Path::to_path_buf)
    }

    /// A replica's store: `keep` old generations plus the current one; other settings at
    /// their defaults.
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            keep: self.keep + 1,
            ..StoreConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The section as serde hands it over (the binary reads TOML; JSON here, to need no
    /// second parser in this crate).
    fn parse(text: &str) -> Result<ReplicatorKnobs, serde_json::Error> {
        serde_json::from_str(text)
    }

    #[test]
    fn defaults_fill_what_the_file_leaves_out_and_ranges_name_the_field() {
        let k = parse(r#"{"primary": "eu-a", "root": "/srv/site"}"#).unwrap();
        assert_eq!(
            k,
            ReplicatorKnobs::new(NodeId::new("eu-a"), PathBuf::from("/srv/site"))
        );
        assert_eq!(k.validate(), Ok(()));
        assert_eq!(k.store_config().keep, 3, "two old ones and the current one");
        assert_eq!(k.root_of(None), PathBuf::from("/srv/site"));
        assert_eq!(
            k.root_of(Some(Path::new("/srv/other"))),
            PathBuf::from("/srv/other")
        );
        let many = ReplicatorKnobs {
            keep: MAX_KEEP + 1,
            ..k.clone()
        };
        assert_eq!(many.validate().unwrap_err().field(), "keep");
        let at_most = ReplicatorKnobs {
            keep: MAX_KEEP,
            ..k.clone()
        };
        assert_eq!(at_most.validate(), Ok(()));
        let empty = ReplicatorKnobs {
            root: PathBuf::new(),
            ..k
        };
        assert_eq!(empty.validate().unwrap_err().field(), "root");
        assert!(parse(r#"{"primary": "eu-a", "root": "/s", "keeep": 1}"#).is_err());
        assert!(parse(r#"{"root": "/s"}"#).is_err(), "primary is required");
    }
}
