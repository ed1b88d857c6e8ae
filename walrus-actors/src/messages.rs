//! What the actors say to each other over walrus-gcs, and on which groups.
//!
//! Group names follow the paper: Controllers ask on `Reporters` and Reporters answer on
//! `Controllers`; the master's decision goes to `Controllers` (backups keep the state) and
//! `Directors` (each applies its own area's answer); the Replicator primary announces
//! generations on `Replicators`. Every payload is one [`WalrusMessage`], encoded by
//! `walrus_gcs::codec` (bincode with a size limit, behind one module). (The GCS's own
//! frames between nodes are `walrus_gcs`'s wire format; these messages are payloads
//! inside them.)

use crate::model::{Decision, Generation, Report, Round};
use serde::{Deserialize, Serialize};
use walrus_gcs::NodeId;

/// The group every Controller joins; its first member is master. Reports arrive here.
pub const CONTROLLERS: &str = "Controllers";
/// The group every Reporter joins; round requests arrive here.
pub const REPORTERS: &str = "Reporters";
/// The group every Director joins; decisions arrive here.
pub const DIRECTORS: &str = "Directors";
/// The group every Replicator joins; generation announcements arrive here.
pub const REPLICATORS: &str = "Replicators";
/// The group every node joins with one session, whatever its roles: configuration
/// digests are announced here (see [`crate::digests`]).
pub const NODES: &str = "Nodes";
/// The group every area's embedded name server joins when learned steering is on: the
/// round trips each area measured arrive here (see `director::sharing`).
pub const STEERING: &str = "Steering";

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
    /// Fast failover (issue 23): a Reporter's PANIC sent at once when its web server went
    /// down, outside the round (on `Controllers`). `round` is the last round the Reporter
    /// answered; the master counts it for the round it is gathering, or starts an early
    /// one (see `controller::round`).
    Urgent(Report),
    /// A round's outcome (sent on `Controllers` and `Directors`).
    Decision(Decision),
    /// The Replicator primary has a new content generation (sent on `Replicators`, so
    /// replicas pull it, and on `Controllers`, so the Controller knows the newest one).
    Generation {
        /// The new generation.
        generation: Generation,
        /// The node of the primary (replicas open their transfer stream to it).
        #[serde(deserialize_with = "node_name")]
        primary: NodeId,
    },
    /// rsync method: the primary pushed `generation` into `replica`'s `incoming`; that
    /// replica switches to it (sent on `Replicators`).
    Pushed {
        /// The generation now complete in the replica's `incoming`.
        generation: Generation,
        /// The replica's node.
        #[serde(deserialize_with = "node_name")]
        replica: NodeId,
    },
    /// An operator's drain or pin, or its end (sent on `Controllers`, Agreed, by the
    /// Controller node whose HTTP side took the admin's request); every Controller applies
    /// it (`controller::overrides`).
    Override(crate::controller::overrides::Command),
    /// The master's whole set of overrides in force, re-sent when a Controller joins (on
    /// `Controllers`), so a restarted or new one holds the same set.
    Overrides(Vec<crate::controller::overrides::Override>),
    /// rsync method: a replica serves `generation` (sent on `Replicators` when it joins,
    /// when the membership changes and after every switch), so the primary knows what to
    /// push and which generation to link unchanged files from.
    ReplicaAt {
        /// The replica's node.
        #[serde(deserialize_with = "node_name")]
        replica: NodeId,
        /// The generation it serves.
        generation: Generation,
    },
    /// The digest of the configuration file the sending node runs (sent on `Nodes` when
    /// it joins, when a node joins, and after a reload; see [`crate::digests`]). The
    /// sender is the gcs sender (authenticated by its certificate).
    ConfigDigest {
        /// `Config::digest` of the node's file.
        digest: String,
    },
}

impl WalrusMessage {
    /// The bytes of this message on the wire (bincode through `walrus_gcs::codec`).
    pub fn encode(&self) -> Result<Vec<u8>, walrus_gcs::codec::CodecError> {
        walrus_gcs::codec::encode(self)
    }

    /// Decodes one message from a multicast payload (size-limited; trailing bytes refused).
    pub fn decode(bytes: &[u8]) -> Result<Self, walrus_gcs::codec::CodecError> {
        walrus_gcs::codec::decode(bytes)
    }
}

/// A node's name from the wire, checked like the names in the configuration file and
/// in certificates (`walrus_gcs::transport::certs::check_node_name`: a DNS name of
/// letters, digits, '-' and '.'): `NodeId` itself takes any string, and these bytes come
/// from a peer. A message naming no valid node does not decode at all. (The receivers
/// also compare the name with the configured primary or the authenticated sender before
/// acting on it.)
fn node_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<NodeId, D::Error> {
    let name = String::deserialize(d)?;
    walrus_gcs::transport::certs::check_node_name(&name)
        .map_err(|_| serde::de::Error::custom("a node name must be a DNS name"))?;
    Ok(NodeId::new(name))
}

/// A group name of the actors' protocol (one of the constants above).
pub fn group(name: &str) -> walrus_gcs::GroupName {
    walrus_gcs::GroupName::new(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ReportBody, Round};

    fn report(body: ReportBody) -> Report {
        Report {
            server: "w1".into(),
            round: Round(7),
            body,
            generation: None,
        }
    }

    #[test]
    fn messages_round_trip_and_garbage_is_an_error() {
        let m = WalrusMessage::Report(report(ReportBody::TempFail {
            reason: "starting".into(),
        }));
        let bytes = m.encode().unwrap();
        assert_eq!(WalrusMessage::decode(&bytes).unwrap(), m);
        assert!(WalrusMessage::decode(&[0xff, 0xff, 0xff]).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(WalrusMessage::decode(&long).is_err());
        // The urgent report (fast failover) is encoded like the others.
        let u = WalrusMessage::Urgent(report(ReportBody::Panic {
            reason: "connection refused".into(),
        }));
        let bytes = u.encode().unwrap();
        assert_eq!(WalrusMessage::decode(&bytes).unwrap(), u);
        assert!(WalrusMessage::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn a_node_name_from_the_wire_is_checked_like_a_configured_one() {
        let good = WalrusMessage::Generation {
            generation: Generation(3),
            primary: NodeId::new("eu-a.example"),
        };
        let bytes = good.encode().unwrap();
        assert_eq!(WalrusMessage::decode(&bytes).unwrap(), good);
        // `NodeId` itself holds any string; the same messages with names no node can
        // have (empty, a path, a terminal escape, a '_') do not decode.
        for bad in ["", "../../etc", "n1\u{1b}[2J", "a_b", &"x".repeat(300)] {
            let msgs = [
                WalrusMessage::Generation {
                    generation: Generation(3),
                    primary: NodeId::new(bad),
                },
                WalrusMessage::Pushed {
                    generation: Generation(3),
                    replica: NodeId::new(bad),
                },
                WalrusMessage::ReplicaAt {
                    replica: NodeId::new(bad),
                    generation: Generation(3),
                },
            ];
            for m in msgs {
                let bytes = m.encode().unwrap();
                let err = WalrusMessage::decode(&bytes).unwrap_err();
                assert!(err.to_string().contains("node name"), "{bad:?}: {err}");
            }
        }
    }
}
