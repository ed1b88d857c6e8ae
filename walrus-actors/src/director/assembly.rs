//! The Director's assembly: from one area's [`DirectorSettings`] to a running Director —
//! its name server (the [`EmbeddedServer`] bound on the area's address, or an
//! [`Rfc2136Updater`]), the [`DirectorCore`] and its [`RetryPolicy`] in the driver
//! ([`super::driver`]), the writer flag (who writes an RFC 2136 server, see
//! [`super::actor`]), and the supervised shell that joins `Directors`.
//!
//! ```text
//!  DirectorSettings ─┬─ name_server: Embedded ─▶ EmbeddedServer::open_or + bind (zone layout,
//!                    │                           state file, first answer, steering)
//!                    │                Rfc2136  ─▶ Rfc2136Updater
//!                    ├─ ttl, core ─────────────▶ DirectorCore
//!                    ├─ retry ─────────────────▶ driver::run_with_writer
//!  Writes ───────────┴─ Always | Elected | Fallback ─▶ writer flag + actor::Election
//! ```
//!
//! [`start`] is the area's Director (actor and driver); [`start_direct`] is one of the
//! master's direct-mode updaters (a driver the Controller feeds, no actor).

use super::actor::{self, fallback_may_write, DirectorActor, Election};
use super::core::{CoreConfig, DirectorCore, DirectorStatus};
use super::driver;
use super::embedded::EmbeddedServer;
use super::learned::{AreaZones, LearnedConfig};
use super::retry::RetryPolicy;
use super::rfc2136::{Rfc2136Config, Rfc2136Updater};
use super::steering::{SourcePrefix, Steering};
use super::zone::{RecordTtl, WwwRecords, ZoneLayout};
use super::{AreaDirector, NameServer};
use crate::controller::actor::ControllerStatus;
use crate::group::GroupLayer;
use crate::knob::KnobError;
use crate::model::{AreaName, Decision, ServerName};
use crate::supervision::{ActorHome, Supervision};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Everything one area's Director runs with.
#[derive(Debug, Clone)]
pub struct DirectorSettings {
    /// The area.
    pub area: AreaName,
    /// The TTL of the www answer.
    pub ttl: RecordTtl,
    /// The area's name server.
    pub name_server: NameServerSettings,
    /// When to apply, re-check and retry after a failure.
    pub core: CoreConfig,
    /// The attempts of one application.
    pub retry: RetryPolicy,
    /// Learned steering of the embedded server ([`super::learned`]; `None`: off) and every
    /// area's zone, what a learned answer points at. With it the server joins the
    /// `Steering` group ([`super::sharing`]). An RFC 2136 name server has no use for it.
    pub learned: Option<(LearnedConfig, AreaZones)>,
}

/// The name server a Director writes.
#[derive(Debug, Clone)]
pub enum NameServerSettings {
    /// The embedded server, serving the area's zones itself.
    Embedded(EmbeddedSettings),
    /// A name server updated by RFC 2136 with TSIG (BIND, Knot, ...).
    Rfc2136(Rfc2136Config),
}

/// The embedded name server of one area.
#[derive(Debug, Clone)]
pub struct EmbeddedSettings {
    /// The zones served (§7.2).
    pub layout: ZoneLayout,
    /// Where the answer is kept across restarts.
    pub state_file: PathBuf,
    /// What is answered before the first decision when there is no state file.
    pub initial: WwwRecords,
    /// Source steering (empty: the paper's §7.2 answer).
    pub steering: Steering,
    /// The address to serve on (UDP and TCP).
    pub listen: SocketAddr,
}

impl DirectorSettings {
    /// Checks the ranges: a re-check and a retry after failure of at least 10 ms, a retry
    /// ceiling not below its first delay, and for RFC 2136 a reply timeout of at least
    /// 10 ms. Everything else is checked where it is built (TTLs, names, keys).
    pub fn validate(&self) -> Result<(), SettingsError> {
        let floor = Duration::from_millis(10);
        let checks = [
            (
                self.core.recheck < floor,
                "core.recheck",
                "must be at least 10 ms",
            ),
            (
                self.core.retry_after_failure < floor,
                "core.retry_after_failure",
                "must be at least 10 ms",
            ),
            (
                self.retry.max < self.retry.initial,
                "retry.max",
                "must not be below retry.initial",
            ),
            (
                matches!(&self.name_server, NameServerSettings::Rfc2136(c) if c.timeout < floor),
                "rfc2136.timeout",
                "must be at least 10 ms",
            ),
        ];
        match checks.iter().find(|(bad, _, _)| *bad) {
            Some((_, field, why)) => Err(SettingsError {
                area: self.area.clone(),
                detail: format!("{field} {why}"),
            }),
            None => Ok(()),
        }
    }
}

/// One `[[dns.steering]]` rule as the configuration gives it: resolvers whose address is
/// in `source` are sent to `area`'s zone (the embedded servers' [`Steering`] maps the
/// prefix to that area's zone).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AreaSteerRule {
    /// An address prefix, e.g. `10.1.0.0/16` (a bare address is a host prefix).
    pub source: String,
    /// The area (normally the one nearest to those resolvers).
    pub area: AreaName,
}

impl AreaSteerRule {
    /// Checks the source prefix and trims it. Whether `area` exists is the
    /// configuration's to check (it knows the areas).
    pub fn validate(mut self) -> Result<Self, KnobError> {
        SourcePrefix::parse(&self.source)
            .map_err(|e| KnobError::new("source", format!("{e}; write e.g. \"10.1.0.0/16\"")))?;
        self.source = self.source.trim().to_owned();
        Ok(self)
    }
}

/// Why a Director could not start: invalid settings, or its name server could not be set
/// up (state directory, state file, listening address).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("area {area}: {detail}")]
pub struct SettingsError {
    /// The area.
    pub area: AreaName,
    /// What failed.
    pub detail: String,
}

/// Who decides when a Director writes its name server.
pub enum Writes {
    /// Always: an embedded server is its own Director's alone.
    Always,
    /// While this node is the first configured Director in the area's writer group
    /// (an RFC 2136 server with several Directors, see [`super::actor`]).
    Elected {
        /// This node.
        me: String,
        /// The nodes configured as the area's Directors.
        directors: BTreeSet<String>,
    },
    /// The master's stand-in: while no Director of the area is in the view, this node's
    /// Controller is master and it hears from the area ([`fallback_may_write`]).
    Fallback {
        /// The nodes configured as the area's Directors.
        directors: BTreeSet<String>,
        /// This node's Controller.
        master: watch::Receiver<ControllerStatus>,
        /// The area's home servers now (a reload may change them).
        home: Box<dyn Fn() -> Vec<ServerName> + Send + Sync>,
    },
}

/// A running Director (or direct-mode updater) of one area.
pub struct RunningDirector {
    /// The area.
    pub area: AreaName,
    /// The shell in `Directors` ([`None`] for a direct-mode updater).
    pub actor: Option<DirectorActor>,
    /// Its status (last application, attempts, in sync).
    pub status: watch::Receiver<DirectorStatus>,
    /// The embedded server and the address it serves on, when the backend is embedded.
    pub embedded: Option<(EmbeddedServer, SocketAddr)>,
    /// Its tasks (driver, name server, writer flag), which end when `stop` says so.
    pub tasks: Vec<(&'static str, JoinHandle<()>)>,
}

/// Starts the Director of `settings.area` in `home` over `layer`: its name server, its
/// driver (writing as `writes` says) and its supervised shell in `Directors` (and in the
/// area's writer group unless it always writes). Its tasks end once `stop` is `true`.
pub async fn start<L: GroupLayer>(
    home: &ActorHome,
    supervision: &Supervision,
    layer: Arc<L>,
    settings: DirectorSettings,
    writes: Writes,
    stop: watch::Receiver<bool>,
) -> Result<RunningDirector, SettingsError> {
    settings.validate()?;
    let mut tasks = Vec::new();
    let (election, writer) = match writes {
        Writes::Always => (None, None),
        Writes::Elected { me, directors } => {
            let (election, rx) = election(&settings.area, directors);
            let flag = writer_flag(
                rx,
                move |w, _| w.as_deref() == Some(me.as_str()),
                None,
                stop.clone(),
                &mut tasks,
            );
            (Some(election), Some(flag))
        }
        Writes::Fallback {
            directors,
            master,
            home,
        } => {
            let (election, rx) = election(&settings.area, directors);
            let flag = writer_flag(
                rx,
                move |w, master| {
                    w.is_none()
                        && master.is_some_and(|m| {
                            m.is_master && fallback_may_write(&home(), m.last_round.as_ref())
                        })
                },
                Some(master),
                stop.clone(),
                &mut tasks,
            );
            (Some(election), Some(flag))
        }
    };
    let learned = settings.learned.as_ref().map(|l| l.0.share_interval);
    let (decisions, mut running) = start_driver(settings, writer, stop.clone()).await?;
    running.tasks.extend(tasks);
    if let (Some(interval), Some((server, _))) = (learned, &running.embedded) {
        let share = super::sharing::run(layer.clone(), server.clone(), interval, stopped(stop));
        running.tasks.push(("steering group", tokio::spawn(share)));
    }
    running.actor = Some(actor::start(home, supervision, layer, decisions, election));
    Ok(running)
}

/// Starts one of the master's direct-mode updaters of `settings.area` (no actor: the
/// Controller sends it the answers that changed). Returns where to send them.
pub async fn start_direct(
    mut settings: DirectorSettings,
    stop: watch::Receiver<bool>,
) -> Result<(mpsc::Sender<Decision>, RunningDirector), SettingsError> {
    // Fed only the answers that changed: each must be applied at once (a Director fed
    // every decision confirms first).
    settings.core.confirm_after_start = 0;
    settings.validate()?;
    start_driver(settings, None, stop).await
}

/// The name server and the driver over it.
async fn start_driver(
    settings: DirectorSettings,
    writer: Option<watch::Receiver<bool>>,
    stop: watch::Receiver<bool>,
) -> Result<(mpsc::Sender<Decision>, RunningDirector), SettingsError> {
    let area = settings.area.clone();
    let err = |detail: String| SettingsError {
        area: area.clone(),
        detail,
    };
    match settings.name_server.clone() {
        NameServerSettings::Embedded(e) => {
            if let Some(dir) = e.state_file.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|x| err(format!("state dir {}: {x}", dir.display())))?;
            }
            let server = EmbeddedServer::open_or(area.clone(), e.layout, e.state_file, e.initial)
                .map_err(|x| err(x.to_string()))?;
            server.set_steering(e.steering);
            if let Some((config, zones)) = settings.learned.clone() {
                server.enable_learning(config, zones);
            }
            let listening = server
                .bind(e.listen)
                .await
                .map_err(|x| err(x.to_string()))?;
            let addr = listening.local_addr();
            tracing::info!(%area, %addr, "embedded name server listening");
            let dns = tokio::spawn(listening.run(stopped(stop.clone())));
            let (tx, mut running) = spawn_driver(settings, server.clone(), writer, stop);
            running.embedded = Some((server, addr));
            running.tasks.push(("embedded dns", dns));
            Ok((tx, running))
        }
        NameServerSettings::Rfc2136(c) => {
            let ns = Rfc2136Updater::new(c).map_err(|x| err(x.to_string()))?;
            Ok(spawn_driver(settings, ns, writer, stop))
        }
    }
}

fn spawn_driver<N: NameServer + Clone + 'static>(
    settings: DirectorSettings,
    ns: N,
    writer: Option<watch::Receiver<bool>>,
    stop: watch::Receiver<bool>,
) -> (mpsc::Sender<Decision>, RunningDirector) {
    let area = settings.area.clone();
    let core = DirectorCore::new(
        AreaDirector {
            area: settings.area,
            ttl: settings.ttl,
        },
        ns.describe(),
        settings.core,
    );
    let (tx, rx) = mpsc::channel(16);
    let (status_tx, status_rx) = watch::channel(core.status().clone());
    let task = tokio::spawn(driver::run_with_writer(
        ns,
        core,
        settings.retry,
        rx,
        writer,
        status_tx,
        stopped(stop),
    ));
    (
        tx,
        RunningDirector {
            area,
            actor: None,
            status: status_rx,
            embedded: None,
            tasks: vec![("director driver", task)],
        },
    )
}

/// `area`'s writer election among `directors`, and the watch of its writer.
fn election(
    area: &AreaName,
    directors: BTreeSet<String>,
) -> (Election, watch::Receiver<Option<String>>) {
    let (tx, rx) = watch::channel(None);
    (
        Election {
            area: area.clone(),
            directors,
            writer: tx,
        },
        rx,
    )
}

/// A driver's writer flag: `decide(writer, master status)` recomputed whenever the area's
/// writer changes or (with `master`) this node's Controller gains or loses mastership.
fn writer_flag(
    mut writer: watch::Receiver<Option<String>>,
    decide: impl Fn(&Option<String>, Option<&ControllerStatus>) -> bool + Send + 'static,
    mut master: Option<watch::Receiver<ControllerStatus>>,
    mut stop: watch::Receiver<bool>,
    tasks: &mut Vec<(&'static str, JoinHandle<()>)>,
) -> watch::Receiver<bool> {
    let now = move |w: &watch::Receiver<Option<String>>,
                    m: &Option<watch::Receiver<ControllerStatus>>| {
        let status = m.as_ref().map(|m| m.borrow().clone());
        decide(&w.borrow(), status.as_ref())
    };
    let (tx, rx) = watch::channel(now(&writer, &master));
    let task = tokio::spawn(async move {
        loop {
            let new = now(&writer, &master);
            tx.send_if_modified(|v| std::mem::replace(v, new) != new);
            let master_changed = async {
                match master.as_mut() {
                    Some(m) => {
                        if m.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                r = writer.changed() => if r.is_err() { return },
                _ = master_changed => {}
            }
        }
    });
    tasks.push(("director writer flag", task));
    rx
}

/// Completes once `stop` is `true` (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DirectorSettings {
        DirectorSettings {
            area: AreaName::from("eu"),
            ttl: RecordTtl::default(),
            name_server: NameServerSettings::Embedded(EmbeddedSettings {
                layout: ZoneLayout::new(
                    "example.com",
                    "eu.example.com",
                    None,
                    vec![],
                    RecordTtl::default(),
                )
                .expect("layout"),
                state_file: PathBuf::from("eu.state"),
                initial: WwwRecords::from_addrs(vec![], RecordTtl::default()),
                steering: Steering::default(),
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            }),
            core: CoreConfig::default(),
            retry: RetryPolicy::default(),
            learned: None,
        }
    }

    #[test]
    fn the_defaults_are_valid_and_the_ranges_are_checked_by_field() {
        assert_eq!(settings().validate(), Ok(()));
        let mut s = settings();
        s.core.recheck = Duration::ZERO;
        let e = s.validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "area eu: core.recheck must be at least 10 ms"
        );
        let mut s = settings();
        s.retry.max = Duration::from_millis(1);
        assert!(s.validate().unwrap_err().detail.starts_with("retry.max"));
    }

    #[test]
    fn a_steering_rule_checks_and_trims_its_source() {
        let rule = |source: &str| AreaSteerRule {
            source: source.into(),
            area: AreaName::from("us"),
        };
        assert_eq!(rule(" 10.1.0.0/16 ").validate(), Ok(rule("10.1.0.0/16")));
        assert_eq!(
            rule("10.1.0.0/99").validate().unwrap_err().field(),
            "source"
        );
    }
}
