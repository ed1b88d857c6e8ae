//! The Controller's shell: one group session, one [`RoundMachine`], one [`Notifier`].
//!
//! It only moves messages (see the table in [`super::round`]):
//!
//! ```text
//!  Membership of `Controllers` ─ first member == me? ─▶ handle_became_master / lost / merge
//!  Report on `Controllers`     ─▶ handle_report
//!  Decision on `Controllers`   ─▶ handle_decision (not our own)
//!  timer (poll_timeout)        ─▶ handle_timeout
//!  ControllerCommand::Reconfigure (SIGHUP) ─▶ handle_reconfigure, new Notifier
//!
//!  RequestReports ─▶ multicast RoundRequest on `Reporters` (Agreed)
//!  Multicast(d)   ─▶ multicast Decision on `Controllers` + `Directors` (Agreed)
//!  ApplyAnswers   ─▶ direct mode: each area's director driver; Directors mode: nothing
//!                    (each Director follows the multicast decision itself)
//!  Notify         ─▶ Notifier::notify (never blocks)
//!  Status         ─▶ status watch
//! ```
//!
//! A tokio task rather than an actix actor: it has exactly one input stream (the session)
//! plus one timer and a command channel, owns all its state, and must run inside the
//! same tokio runtime as walrus-gcs, the Director and the Reporter (which are tokio tasks);
//! an actix `System`/`LocalSet` around it would add a second scheduler and make every test
//! and the in-process launcher build one, for no message semantics we need.
//!
//! Outputs are performed right after the input that produced them, so a master that loses
//! its place (a membership event) has nothing pending: its next DNS change never happens.

use super::notify::{Notifier, NotifyConfig};
use super::round::{RoundConfig, RoundMachine, RoundStatus};
use crate::group::GroupSession;
use crate::model::{AreaName, Decision, Topology};
use crate::wire::{self, WalrusMessage, CONTROLLERS, DIRECTORS, REPORTERS};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Instant;
use tokio::sync::{mpsc, watch};
use walrus_gcs::{Event, Member, MembershipReason, Service};

/// What a Controller runs with; everything in it may change on a reload.
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    /// Round timings, assignment parameters, load formula.
    pub round: RoundConfig,
    /// Areas and clusters.
    pub topology: Topology,
    /// Notification channels.
    pub notify: NotifyConfig,
    /// The node of the site's Replicator primary, when replication is configured: only its
    /// `Generation` announcements count (group members are authenticated by their
    /// certificates, so another member cannot pass for it).
    pub replication_primary: Option<String>,
}

/// Whether a `Generation` announcement sent by node `sender` counts: only the configured
/// primary's do.
fn announcement_counts(primary: Option<&str>, sender: &str) -> bool {
    primary == Some(sender)
}

/// Requests to a running Controller.
#[derive(Debug)]
#[non_exhaustive]
pub enum ControllerCommand {
    /// A reloaded configuration: takes effect from the next round closed.
    Reconfigure(ControllerSettings),
}

/// What the status page shows about a Controller.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ControllerStatus {
    /// This Controller's member identity (once joined).
    pub me: Option<Member>,
    /// The `Controllers` membership list; its first member is master.
    pub members: Vec<Member>,
    /// True while this Controller is master.
    pub is_master: bool,
    /// The last decision made or adopted.
    pub last_decision: Option<Decision>,
    /// The last round this Controller closed as master.
    pub last_round: Option<RoundStatus>,
    /// Times this Controller became master.
    pub terms: u64,
}

/// Why a Controller stopped on its own.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControllerError {
    /// The group layer refused or stopped.
    #[error("controller: group communication: {0}")]
    Group(#[from] walrus_gcs::DriverError),
    /// The session ended (node stopped, or dropped for not reading).
    #[error("controller: the group session ended")]
    SessionEnded,
    /// The notification channels could not be set up.
    #[error("controller: notifications: {0}")]
    Notify(#[from] super::notify::NotifyError),
    /// The round configuration is invalid.
    #[error("controller: {0}")]
    Config(#[from] super::round::RoundConfigError),
}

/// Where the master's changed answers go in the paper's direct mode: one director driver
/// per area (see [`crate::director::driver`]). Empty: Directors mode.
pub type DirectDrivers = BTreeMap<AreaName, mpsc::Sender<Decision>>;

/// A running Controller's handle.
#[derive(Debug, Clone)]
pub struct ControllerHandle {
    commands: mpsc::Sender<ControllerCommand>,
    status: watch::Receiver<ControllerStatus>,
}

impl ControllerHandle {
    /// Hands the Controller a reloaded configuration.
    pub async fn reconfigure(&self, settings: ControllerSettings) -> Result<(), ControllerError> {
        self.commands
            .send(ControllerCommand::Reconfigure(settings))
            .await
            .map_err(|_| ControllerError::SessionEnded)
    }

    /// The current status.
    pub fn status(&self) -> ControllerStatus {
        self.status.borrow().clone()
    }

    /// A watch on the status (changes after every input).
    pub fn watch(&self) -> watch::Receiver<ControllerStatus> {
        self.status.clone()
    }
}

/// Starts a Controller on `session` as a tokio task: it joins `Controllers` once
/// `before_join` completes (see [`crate::group::GroupLayer::settled`]), and runs until
/// `shutdown` completes, then leaves `Controllers` and closes the session.
pub fn spawn<S: GroupSession>(
    session: S,
    settings: ControllerSettings,
    direct: DirectDrivers,
    before_join: impl Future<Output = ()> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<
    (
        ControllerHandle,
        tokio::task::JoinHandle<Result<(), ControllerError>>,
    ),
    ControllerError,
> {
    settings.round.validate()?;
    let (cmd_tx, cmd_rx) = mpsc::channel(8);
    let (status_tx, status_rx) = watch::channel(ControllerStatus::default());
    let task = tokio::spawn(async move {
        tokio::pin!(shutdown);
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = before_join => {}
        }
        run(session, settings, direct, cmd_rx, status_tx, shutdown).await
    });
    Ok((
        ControllerHandle {
            commands: cmd_tx,
            status: status_rx,
        },
        task,
    ))
}

struct Shell<S> {
    session: S,
    machine: RoundMachine,
    notifier: Notifier,
    notify_config: NotifyConfig,
    direct: DirectDrivers,
    status: ControllerStatus,
    replication_primary: Option<String>,
}

async fn run<S: GroupSession>(
    session: S,
    settings: ControllerSettings,
    direct: DirectDrivers,
    mut commands: mpsc::Receiver<ControllerCommand>,
    status: watch::Sender<ControllerStatus>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ControllerError> {
    let notifier = Notifier::start(&settings.notify)?;
    let mut shell = Shell {
        status: ControllerStatus {
            me: Some(session.member().clone()),
            ..ControllerStatus::default()
        },
        session,
        machine: RoundMachine::new(settings.round, settings.topology),
        notifier,
        notify_config: settings.notify,
        direct,
        replication_primary: settings.replication_primary,
    };
    shell
        .session
        .join(wire::group(CONTROLLERS))
        .await
        .map_err(ControllerError::from)?;
    tracing::info!(me = %shell.session.member(), "controller joined Controllers");
    tokio::pin!(shutdown);
    let mut commands_open = true;
    let result = loop {
        let deadline = shell.machine.poll_timeout();
        tokio::select! {
            biased;
            _ = &mut shutdown => break Ok(()),
            ev = shell.session.recv() => match ev {
                Some(ev) => shell.on_event(ev),
                None => break Err(ControllerError::SessionEnded),
            },
            cmd = commands.recv(), if commands_open => match cmd {
                Some(ControllerCommand::Reconfigure(s)) => shell.reconfigure(s),
                None => commands_open = false,
            },
            _ = sleep_until(deadline) => shell.machine.handle_timeout(now()),
        }
        if let Err(e) = shell.perform().await {
            break Err(e);
        }
        status.send_replace(shell.status.clone());
    };
    let Shell {
        session, notifier, ..
    } = shell;
    if result.is_ok() {
        let _ = session.leave(wire::group(CONTROLLERS)).await;
        session.close().await;
    }
    notifier.close().await;
    result
}

impl<S: GroupSession> Shell<S> {
    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Membership {
                group,
                members,
                reason,
                ..
            } if group.as_str() == CONTROLLERS => self.on_membership(members, reason),
            Event::Membership { .. } => {}
            Event::Message {
                sender, payload, ..
            } => {
                let own = sender.0 == self.session.member().node
                    && sender.1 == self.session.member().session;
                match WalrusMessage::decode(&payload) {
                    Ok(WalrusMessage::Report(r)) => {
                        let server = r.server.clone();
                        match self.machine.handle_report(now(), r) {
                            Ok(fixed) if !fixed.is_empty() => {
                                let fixed: Vec<String> =
                                    fixed.iter().map(ToString::to_string).collect();
                                tracing::debug!(%server, corrections = ?fixed, "report figures corrected");
                            }
                            Ok(_) => {}
                            Err(e) => tracing::debug!(error = %e, "report ignored"),
                        }
                    }
                    Ok(WalrusMessage::Generation { generation, .. }) => {
                        if announcement_counts(
                            self.replication_primary.as_deref(),
                            sender.0.as_str(),
                        ) {
                            self.machine.handle_generation(now(), generation);
                        } else {
                            tracing::warn!(
                                from = %sender.0,
                                generation = generation.0,
                                primary = ?self.replication_primary,
                                "generation announcement from a node that is not the Replicator primary ignored"
                            );
                        }
                    }
                    Ok(WalrusMessage::Decision(d)) if !own => {
                        let round = d.round;
                        match self.machine.handle_decision(now(), d) {
                            Ok(()) => tracing::debug!(%round, "decision adopted"),
                            Err(e) => tracing::info!(error = %e, "decision not adopted"),
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(from = %sender.0, error = %e, "malformed message ignored")
                    }
                }
            }
            Event::Disconnected { reason } => {
                tracing::error!(?reason, "controller session disconnected");
            }
        }
    }

    fn on_membership(&mut self, members: Vec<Member>, reason: MembershipReason) {
        let me = self.session.member();
        let first_is_me = members.first() == Some(me);
        let newcomers = members.iter().any(|m| !self.status.members.contains(m));
        let t = now();
        if first_is_me && !self.machine.is_master() {
            tracing::info!(%me, members = members.len(), "this controller is master");
            self.machine.handle_became_master(t);
            self.status.terms += 1;
        } else if !first_is_me && self.machine.is_master() {
            tracing::warn!(%me, master = ?members.first().map(|m| m.to_string()), "lost mastership: stopping at once");
            self.machine.handle_lost_mastership(t);
        }
        // A view change that brings members we did not have is a merge of components
        // (a plain join says `Join`): the other side's master may have changed answers.
        // Backups need it too: the merged master may number its rounds below theirs.
        if reason == MembershipReason::Network && newcomers {
            self.machine.handle_merge(t);
        }
        self.status.members = members;
    }

    fn reconfigure(&mut self, s: ControllerSettings) {
        self.machine.handle_reconfigure(now(), s.round, s.topology);
        self.replication_primary = s.replication_primary;
        if s.notify != self.notify_config {
            match Notifier::start(&s.notify) {
                Ok(n) => {
                    // The old one finishes its queue in the background.
                    let old = std::mem::replace(&mut self.notifier, n);
                    tokio::spawn(old.close());
                    self.notify_config = s.notify;
                }
                Err(e) => {
                    tracing::error!(error = %e, "new notification settings refused; keeping the old ones")
                }
            }
        }
        tracing::info!("controller reconfigured");
    }

    async fn perform(&mut self) -> Result<(), ControllerError> {
        use super::round::Output;
        while let Some(out) = self.machine.poll_output() {
            match out {
                Output::RequestReports { round } => {
                    self.send(&[REPORTERS], &WalrusMessage::RoundRequest { round })
                        .await?;
                }
                Output::Multicast(mut decision) => {
                    decision.epoch = wall_clock_ms();
                    for c in &decision.changes {
                        tracing::info!(round = %decision.round, area = %c.area, from = ?c.from.as_ref().map(|f| f.0.as_str()), to = %c.to, phase = c.phase, reason = %c.reason, "area answer changed");
                    }
                    self.status.last_decision = Some(decision.clone());
                    self.send(
                        &[CONTROLLERS, DIRECTORS],
                        &WalrusMessage::Decision(decision),
                    )
                    .await?;
                }
                Output::ApplyAnswers(answers) => {
                    if self.direct.is_empty() {
                        continue;
                    }
                    let round = self
                        .machine
                        .last_decision()
                        .map(|d| d.round)
                        .unwrap_or(crate::model::Round(0));
                    for (area, answer) in answers {
                        let Some(tx) = self.direct.get(&area) else {
                            tracing::warn!(%area, "no direct-mode updater for this area");
                            continue;
                        };
                        let d = Decision {
                            round,
                            answers: [(area.clone(), answer)].into(),
                            changes: vec![],
                            epoch: wall_clock_ms(),
                        };
                        if tx.try_send(d).is_err() {
                            tracing::warn!(%area, "director driver busy or gone; the next round re-sends");
                        }
                    }
                }
                Output::Notify(event) => {
                    if let Err(e) = self.notifier.notify(event) {
                        tracing::warn!(error = %e, "notification not queued");
                    }
                }
                Output::Status(s) => self.status.last_round = Some(s),
            }
        }
        self.status.is_master = self.machine.is_master();
        if !self.status.is_master {
            if let Some(d) = self.machine.last_decision() {
                if self.status.last_decision.as_ref().map(|x| x.round) != Some(d.round) {
                    self.status.last_decision = Some(d.clone());
                }
            }
        }
        Ok(())
    }

    async fn send(&self, groups: &[&str], msg: &WalrusMessage) -> Result<(), ControllerError> {
        let payload = match msg.encode() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a message; not sent");
                return Ok(());
            }
        };
        let groups: Vec<_> = groups.iter().map(|g| wire::group(g)).collect();
        self.session
            .multicast(Service::Agreed, &groups, payload)
            .await?;
        Ok(())
    }
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// The wall clock in milliseconds since the Unix epoch: a decision's epoch (see
/// [`Decision::epoch`]). Masters' clocks are assumed kept by NTP; a takeover takes far
/// longer than their skew, so a newer master's decisions carry larger epochs.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::announcement_counts;

    #[test]
    fn only_the_configured_primary_announces_generations() {
        assert!(announcement_counts(Some("origin"), "origin"));
        assert!(!announcement_counts(Some("origin"), "intruder"));
        assert!(!announcement_counts(None, "origin"));
    }
}
