//! Operators' overrides of the assignment: **drain** a web server (it gets no clients, as
//! if it answered BYPASS, whatever its Reporter says) and **pin** an area to a cluster
//! (phase 0: the area goes there while the cluster has a working server, before the
//! paper's phases 2–4). Each has who asked, why, and an end: it expires by itself.
//!
//! Commands reach every Controller as Agreed multicasts on `Controllers`
//! ([`crate::messages::WalrusMessage::Override`]), so master and backups hold the same set and
//! a new master goes on honouring it; a master re-announces its whole set when a Controller
//! joins ([`crate::messages::WalrusMessage::Overrides`]), so a restarted one catches up. Who
//! may send a command is the HTTP side's business (an admin certificate, see walrus-node).
//!
//! Pure state, no I/O: ends are wall-clock milliseconds (the same on every Controller,
//! give or take NTP); the caller passes the wall clock in.

use crate::model::{AreaName, ClusterName, ServerName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What an override does.
// Externally tagged (serde's default) and without `flatten`: these travel in bincode.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Target {
    /// The server gets no clients.
    Drain {
        /// The server.
        server: ServerName,
    },
    /// The area goes to this cluster while it has a working server.
    Pin {
        /// The area.
        area: AreaName,
        /// The cluster.
        cluster: ClusterName,
    },
}

impl Target {
    /// What identifies it: one drain per server, one pin per area.
    fn key(&self) -> Key {
        match self {
            Target::Drain { server } => Key::Drain(server.clone()),
            Target::Pin { area, .. } => Key::Pin(area.clone()),
        }
    }
}

/// One drain or pin, with who asked, why and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    /// What it does.
    pub target: Target,
    /// Who asked (the admin certificate's name).
    pub by: String,
    /// Why (free text, may be empty).
    pub reason: String,
    /// When it ends, wall clock, milliseconds since the Unix epoch.
    pub until_ms: u64,
}

impl Override {
    /// How decisions and logs name it: `drained by alice for 29m 58s more: kernel upgrade`.
    pub fn describe(&self, now_ms: u64) -> String {
        let verb = match &self.target {
            Target::Drain { .. } => "drained",
            Target::Pin { .. } => "pinned",
        };
        let left = self.until_ms.saturating_sub(now_ms) / 1000;
        let mut s = format!(
            "{verb} by {} for {}m {}s more",
            self.by,
            left / 60,
            left % 60
        );
        if !self.reason.is_empty() {
            s.push_str(": ");
            s.push_str(&self.reason);
        }
        s
    }
}

/// A command to the Controllers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Adds the override (replacing one for the same server or area).
    Set(Override),
    /// Ends the drain of `server` now.
    Undrain {
        /// The server.
        server: ServerName,
        /// Who asked.
        by: String,
    },
    /// Ends the pin of `area` now.
    Unpin {
        /// The area.
        area: AreaName,
        /// Who asked.
        by: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Drain(ServerName),
    Pin(AreaName),
}

/// The overrides in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    active: BTreeMap<Key, Override>,
}

/// Longest override: a week. A forgotten pin must not outlive anyone's memory of it.
pub const MAX_OVERRIDE_MS: u64 = 7 * 24 * 3600 * 1000;

impl Overrides {
    /// Applies `cmd` at `now_ms`; returns what changed, for the log (None: nothing did).
    pub fn apply(&mut self, cmd: Command, now_ms: u64) -> Option<String> {
        match cmd {
            Command::Set(o) if o.until_ms <= now_ms => None,
            Command::Set(mut o) => {
                o.until_ms = o.until_ms.min(now_ms.saturating_add(MAX_OVERRIDE_MS));
                let line = format!("{:?} {}", o.target, o.describe(now_ms));
                self.active.insert(o.target.key(), o);
                Some(line)
            }
            Command::Undrain { server, by } => self
                .active
                .remove(&Key::Drain(server.clone()))
                .map(|_| format!("{server} undrained by {by}")),
            Command::Unpin { area, by } => self
                .active
                .remove(&Key::Pin(area.clone()))
                .map(|_| format!("area {area} unpinned by {by}")),
        }
    }

    /// Drops what has ended by `now_ms`; returns them.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Override> {
        let ended: Vec<Key> = self
            .active
            .iter()
            .filter(|(_, o)| o.until_ms <= now_ms)
            .map(|(k, _)| k.clone())
            .collect();
        ended
            .into_iter()
            .filter_map(|k| self.active.remove(&k))
            .collect()
    }

    /// The drain of `server`, if any.
    pub fn drain_of(&self, server: &ServerName) -> Option<&Override> {
        self.active.get(&Key::Drain(server.clone()))
    }

    /// Every pin: area → (cluster, the override).
    pub fn pins(&self) -> impl Iterator<Item = (&AreaName, &ClusterName, &Override)> {
        self.active.values().filter_map(|o| match &o.target {
            Target::Pin { area, cluster } => Some((area, cluster, o)),
            Target::Drain { .. } => None,
        })
    }

    /// Every override in force.
    pub fn all(&self) -> Vec<Override> {
        self.active.values().cloned().collect()
    }

    /// Replaces the whole set with `list` (a master's announcement), dropping what ended.
    pub fn replace(&mut self, list: Vec<Override>, now_ms: u64) {
        self.active = list
            .into_iter()
            .filter(|o| o.until_ms > now_ms)
            .map(|o| (o.target.key(), o))
            .collect();
    }

    /// True when none is in force.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(server: &str, until_ms: u64) -> Command {
        Command::Set(Override {
            target: Target::Drain {
                server: ServerName::from(server),
            },
            by: "alice".into(),
            reason: "kernel upgrade".into(),
            until_ms,
        })
    }

    #[test]
    fn set_replace_expire_and_end_early() {
        let mut o = Overrides::default();
        assert!(o.apply(drain("eu-1", 60_000), 0).is_some());
        assert!(o.apply(drain("eu-1", 120_000), 0).is_some(), "replaces");
        assert_eq!(o.all().len(), 1);
        assert_eq!(
            o.drain_of(&ServerName::from("eu-1"))
                .unwrap()
                .describe(1_000),
            "drained by alice for 1m 59s more: kernel upgrade"
        );
        assert!(o.expire(119_999).is_empty());
        assert_eq!(o.expire(120_000).len(), 1);
        assert!(o.is_empty());
        o.apply(drain("eu-1", 60_000), 0);
        let undrain = Command::Undrain {
            server: ServerName::from("eu-1"),
            by: "bob".into(),
        };
        assert_eq!(
            o.apply(undrain.clone(), 1).as_deref(),
            Some("eu-1 undrained by bob")
        );
        assert_eq!(o.apply(undrain, 1), None, "nothing left to end");
    }

    #[test]
    fn a_past_end_is_ignored_and_a_far_one_capped_at_a_week() {
        let mut o = Overrides::default();
        assert_eq!(o.apply(drain("eu-1", 5), 10), None);
        o.apply(drain("eu-1", u64::MAX), 10);
        assert_eq!(o.all()[0].until_ms, 10 + MAX_OVERRIDE_MS);
    }

    #[test]
    fn commands_travel_in_the_wire_format() {
        use crate::messages::WalrusMessage;
        let cmd = Command::Set(Override {
            target: Target::Pin {
                area: AreaName::from("eu"),
                cluster: ClusterName::from("c-us"),
            },
            by: "alice".into(),
            reason: "tests".into(),
            until_ms: 7,
        });
        let msg = WalrusMessage::Override(cmd);
        let back = WalrusMessage::decode(&msg.encode().unwrap()).unwrap();
        assert_eq!(back, msg);
        let set = WalrusMessage::Overrides(vec![Override {
            target: Target::Drain {
                server: ServerName::from("eu-1"),
            },
            by: "bob".into(),
            reason: String::new(),
            until_ms: 9,
        }]);
        assert_eq!(WalrusMessage::decode(&set.encode().unwrap()).unwrap(), set);
    }
}
