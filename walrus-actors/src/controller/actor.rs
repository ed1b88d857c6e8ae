//! The Controller's shell: one group session, one [`RoundMachine`], one [`Notifier`].
//!
//! It only moves messages (see the table in [`super::round`]):
//!
//! ```text
//!  Membership of `Controllers` ─ first member == me? ─▶ handle_became_master / lost / merge
//!  Report on `Controllers`     ─▶ handle_report
//!  Urgent on `Controllers`     ─▶ handle_urgent (fast failover: may start an early round)
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
//! An actix actor under `actix::Supervisor` (see [`crate::supervision`]): group events
//! arrive as a stream (`StreamHandler`), the round timer is a `run_later` re-armed from
//! `poll_timeout` after every input, and the node talks to it with typed messages
//! ([`GetStatus`], [`Reconfigure`], [`Shutdown`]). A panic in a handler restarts it with
//! its state rebuilt: a new `RoundMachine` from its settings and a new session, so it
//! rejoins `Controllers` last, as a backup, and shadows history again.
//!
//! Outputs are performed right after the input that produced them (the multicasts under
//! `ctx.wait`, so no other input is handled before they are sent), so a master that loses
//! its place (a membership event) has nothing pending: its next DNS change never happens.

use super::notify::{Notifier, NotifyConfig};
use super::round::{ReportIgnored, RoundConfig, RoundMachine, RoundStatus};
use crate::group::GroupLayer;
use crate::messages::{self, WalrusMessage, CONTROLLERS, DIRECTORS, REPORTERS};
use crate::model::{AreaName, Decision, Topology};
#[cfg(feature = "testing")]
use crate::supervision::planted_panic;
use crate::supervision::{
    guard, leave_and_close, open_and_join, ActorHome, RoleAddr, RoleLife, SessionLink, Supervision,
};
use actix::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use walrus_gcs::{Event, Member, Service};

/// The role's name in logs and `/metrics`.
pub const ROLE: &str = "controller";

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
    pub replication_primary: Option<walrus_gcs::NodeId>,
}

/// Whether a `Generation` announcement sent by node `sender` counts: only the configured
/// primary's do.
fn announcement_counts(primary: Option<&walrus_gcs::NodeId>, sender: &walrus_gcs::NodeId) -> bool {
    primary == Some(sender)
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
    /// Operators' drains and pins in force.
    pub overrides: Vec<super::overrides::Override>,
}

/// Why a Controller could not start or refused a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControllerError {
    /// The group layer refused or stopped.
    #[error("controller: group communication: {0}")]
    Group(#[from] walrus_gcs::DriverError),
    /// The actor is gone (node stopped) or its mailbox is full.
    #[error("controller: not reachable ({0})")]
    Unreachable(&'static str),
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

/// Asks a Controller for its status.
#[derive(Debug, Clone, Copy)]
pub struct GetStatus;

impl Message for GetStatus {
    type Result = ControllerStatus;
}

/// A reloaded configuration (SIGHUP): takes effect from the next round closed.
#[derive(Debug)]
pub struct Reconfigure(pub ControllerSettings);

impl Message for Reconfigure {
    type Result = Result<(), ControllerError>;
}

/// An operator's drain, pin or end of one, to multicast (Agreed) on `Controllers`: every
/// Controller applies it on delivery, this one included (`super::overrides`). The sender
/// has already checked who may give it (the HTTP side's admin certificates).
#[derive(Debug, Clone)]
pub struct SendOverride(pub super::overrides::Command);

impl Message for SendOverride {
    type Result = Result<(), ControllerError>;
}

#[cfg(feature = "testing")]
pub use crate::supervision::Crash;
pub use crate::supervision::Shutdown;

/// A running Controller: its address (typed messages) and a watch of its status (for the
/// node's own wiring, e.g. the fallback Directors' writer flag).
#[derive(Debug, Clone)]
pub struct ControllerHandle {
    status_req: Recipient<GetStatus>,
    send_override: Recipient<SendOverride>,
    reconfigure: Recipient<Reconfigure>,
    role: RoleAddr,
    status: watch::Receiver<ControllerStatus>,
}

impl ControllerHandle {
    /// Hands the Controller a reloaded configuration.
    pub async fn reconfigure(&self, settings: ControllerSettings) -> Result<(), ControllerError> {
        self.reconfigure
            .send(Reconfigure(settings))
            .await
            .map_err(|e| ControllerError::Unreachable(mailbox_error(&e)))?
    }

    /// Multicasts an operator's override to every Controller ([`SendOverride`]).
    pub async fn send_override(
        &self,
        cmd: super::overrides::Command,
    ) -> Result<(), ControllerError> {
        self.send_override
            .send(SendOverride(cmd))
            .await
            .map_err(|e| ControllerError::Unreachable(mailbox_error(&e)))?
    }

    /// The status, asked of the actor ([`GetStatus`]).
    pub async fn get_status(&self) -> Result<ControllerStatus, ControllerError> {
        self.status_req
            .send(GetStatus)
            .await
            .map_err(|e| ControllerError::Unreachable(mailbox_error(&e)))
    }

    /// The status as last published (after the actor's last input).
    pub fn status(&self) -> ControllerStatus {
        self.status.borrow().clone()
    }

    /// A watch on the status (changes after every input).
    pub fn watch(&self) -> watch::Receiver<ControllerStatus> {
        self.status.clone()
    }

    /// Leaves `Controllers` and closes the session (the node is stopping).
    pub async fn shutdown(&self) {
        self.role.shutdown().await;
    }

    /// Test only: makes the actor panic (it is restarted by its supervisor).
    #[cfg(feature = "testing")]
    pub fn crash(&self) {
        self.role.crash();
    }
}

fn mailbox_error(e: &MailboxError) -> &'static str {
    match e {
        MailboxError::Closed => "actor stopped",
        MailboxError::Timeout => "no answer in time",
    }
}

/// Requests a Controller's mailbox holds.
pub const MAILBOX: usize = 16;

/// When a Controller joins `Controllers` (see [`crate::group::settle_state`]): once its
/// node's view holds every configured member peer, or once that view has not changed for
/// `grace` ([`crate::group::settle_on`]). A Controller outside
/// `Controllers` is never master, so until then it runs no round and pushes no answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinWait {
    /// How long the view must stay unchanged before the Controller joins without some
    /// peers (`walrus-node`: five gcs failure timeouts, see its `join_grace`).
    pub grace: Duration,
    /// The node's configured member peers (not itself, not clients).
    pub peers: Vec<walrus_gcs::NodeId>,
}

/// A grace with no peers to wait for: joins as soon as the node has a view or `grace` ends
/// (unit tests over the in-process bus).
impl From<Duration> for JoinWait {
    fn from(grace: Duration) -> Self {
        Self {
            grace,
            peers: Vec::new(),
        }
    }
}

/// Starts a supervised Controller in `home` over `layer`: it joins `Controllers` once
/// `layer.settled(..)` completes for `join` (see [`JoinWait`], [`GroupLayer::settled`]),
/// and runs until the node stops (send [`Shutdown`] first for a clean leave).
pub fn start<L: GroupLayer>(
    home: &ActorHome,
    supervision: &Supervision,
    layer: Arc<L>,
    settings: ControllerSettings,
    direct: DirectDrivers,
    join: impl Into<JoinWait>,
) -> Result<ControllerHandle, ControllerError> {
    let join = join.into();
    settings.round.validate()?;
    let notifier = Notifier::start(&settings.notify)?;
    let (published, status) = watch::channel(ControllerStatus::default());
    let life = RoleLife::new(ROLE, supervision.clone());
    let addr = crate::supervision::start_in(home, MAILBOX, move |_| Controller {
        machine: RoundMachine::new(settings.round.clone(), settings.topology.clone()),
        settings,
        layer,
        life,
        direct,
        notifier: Some(notifier),
        link: None,
        status: ControllerStatus::default(),
        published,
        timer: None,
        join,
        view: None,
        view_id: None,
        unknown: BTreeSet::new(),
    });
    Ok(ControllerHandle {
        status_req: addr.clone().recipient(),
        send_override: addr.clone().recipient(),
        reconfigure: addr.clone().recipient(),
        role: RoleAddr::of(&addr),
        status,
    })
}

/// The Controller actor: a thin shell over [`RoundMachine`] and the [`Notifier`].
pub struct Controller<L: GroupLayer> {
    settings: ControllerSettings,
    layer: Arc<L>,
    life: RoleLife,
    machine: RoundMachine,
    notifier: Option<Notifier>,
    direct: DirectDrivers,
    link: Option<SessionLink>,
    status: ControllerStatus,
    published: watch::Sender<ControllerStatus>,
    timer: Option<SpawnHandle>,
    join: JoinWait,
    /// This node's view, watched once joined: a new view makes the master gather its
    /// round again ([`RoundMachine::handle_view_change`]).
    view: Option<watch::Receiver<Option<walrus_gcs::ViewChange>>>,
    /// The id of the last view seen.
    view_id: Option<walrus_gcs::ViewId>,
    /// Servers heard of (reports) that the configuration does not know: logged once each,
    /// forgotten when a reload adds them.
    unknown: BTreeSet<crate::model::ServerName>,
}

impl<L: GroupLayer> Actor for Controller<L> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.life.halted() {
            return;
        }
        let layer = self.layer.clone();
        let sup = self.life.sup.clone();
        let join = self.join.clone();
        // Spawned, not waited for: joining waits for the group to settle (seconds), and
        // status requests are answered meanwhile.
        ctx.spawn(
            async move {
                layer.settled(join.grace, &join.peers).await;
                open_and_join(layer, sup, ROLE, vec![messages::group(CONTROLLERS)]).await
            }
            .into_actor(self)
            .map(|r, act, ctx| match r {
                Ok((link, _)) if act.life.halted() => {
                    // Shut down while joining: leave at once.
                    tokio::spawn(leave_and_close(
                        Some(link),
                        vec![messages::group(CONTROLLERS)],
                    ));
                }
                Ok((link, events)) => {
                    tracing::info!(me = %link.member(), "controller joined Controllers");
                    act.status.me = Some(link.member().clone());
                    act.link = Some(link);
                    let view = act.layer.watch_view();
                    act.view_id = view.borrow().as_ref().map(|v| v.view.clone());
                    act.view = Some(view);
                    ctx.add_stream(events);
                    act.publish();
                }
                Err(e) => act.life.fail(ctx, format!("joining Controllers: {e}")),
            }),
        );
    }
}

impl<L: GroupLayer> Supervised for Controller<L> {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        // Dropping the link closes the old session: its groups see it leave.
        self.link = None;
        self.timer = None;
        self.view = None;
        self.machine =
            RoundMachine::new(self.settings.round.clone(), self.settings.topology.clone());
        self.status = ControllerStatus::default();
        self.publish();
        self.life.restarting();
    }
}

impl<L: GroupLayer> StreamHandler<Event> for Controller<L> {
    fn handle(&mut self, ev: Event, ctx: &mut Context<Self>) {
        match guard(self, |act| {
            act.note_view();
            act.on_event(ev);
        }) {
            Ok(()) => self.perform(ctx),
            Err(cause) => self.life.fail(ctx, cause),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        if let Some(cause) = self.life.session_ended() {
            self.life.fail(ctx, cause);
        }
    }
}

impl<L: GroupLayer> Handler<GetStatus> for Controller<L> {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.status.clone())
    }
}

impl<L: GroupLayer> Handler<Reconfigure> for Controller<L> {
    type Result = Result<(), ControllerError>;

    fn handle(&mut self, Reconfigure(s): Reconfigure, ctx: &mut Context<Self>) -> Self::Result {
        s.round.validate()?;
        match guard(self, |act| act.reconfigure(s)) {
            Ok(()) => self.perform(ctx),
            Err(cause) => self.life.fail(ctx, cause),
        }
        Ok(())
    }
}

impl<L: GroupLayer> Handler<SendOverride> for Controller<L> {
    type Result = ResponseFuture<Result<(), ControllerError>>;

    fn handle(&mut self, SendOverride(cmd): SendOverride, _: &mut Context<Self>) -> Self::Result {
        let link = self.link.clone();
        let payload = WalrusMessage::Override(cmd).encode();
        Box::pin(async move {
            let link = link.ok_or(ControllerError::Unreachable(
                "not in the Controllers group yet",
            ))?;
            let payload = payload.map_err(|_| ControllerError::Unreachable("cannot encode"))?;
            link.multicast(Service::Agreed, vec![messages::group(CONTROLLERS)], payload)
                .await?;
            Ok(())
        })
    }
}

impl<L: GroupLayer> Handler<Shutdown> for Controller<L> {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        self.life.halt();
        if let Some(t) = self.timer.take() {
            ctx.cancel_future(t);
        }
        let link = self.link.take();
        let notifier = self.notifier.take();
        Box::pin(
            async move {
                leave_and_close(link, vec![messages::group(CONTROLLERS)]).await;
                if let Some(n) = notifier {
                    n.close().await;
                }
            }
            .into_actor(self),
        )
    }
}

#[cfg(feature = "testing")]
impl<L: GroupLayer> Handler<Crash> for Controller<L> {
    type Result = ();

    fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
        self.life.fail(ctx, planted_panic(ROLE));
    }
}

impl<L: GroupLayer> Controller<L> {
    fn publish(&self) {
        self.published.send_replace(self.status.clone());
    }

    fn me(&self) -> Option<&Member> {
        self.link.as_ref().map(SessionLink::member)
    }

    /// Looks at this node's view before every input: if a new view was installed since the
    /// last look, the master gathers its round in progress again (within one round period
    /// of its first request; see [`RoundMachine::handle_view_change`]).
    fn note_view(&mut self) {
        let Some(view) = self.view.as_mut() else {
            return;
        };
        if !view.has_changed().unwrap_or(false) {
            return;
        }
        let id = view.borrow_and_update().as_ref().map(|v| v.view.clone());
        if id != self.view_id && self.machine.handle_view_change(now()) {
            tracing::info!(
                view = ?id.as_ref().map(ToString::to_string),
                "view changed while gathering reports: gathering this round again (reports \
                 held by the flush, or sent in a view without this master, missed it)"
            );
        }
        self.view_id = id;
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Membership {
                group,
                members,
                reason,
                ..
            } if group.as_str() == CONTROLLERS => {
                let Some(me) = self.me().cloned() else { return };
                let change = self.machine.handle_membership(now(), &members, &me, reason);
                if change.became_master {
                    tracing::info!(%me, members = members.len(), "this controller is master");
                    self.status.terms += 1;
                } else if !self.machine.is_master()
                    && members.first() != self.status.members.first()
                {
                    tracing::info!(%me, master = ?members.first().map(|m| m.to_string()), "backup: not master, another Controller is first in Controllers");
                }
                if change.lost_mastership {
                    tracing::warn!(%me, master = ?members.first().map(|m| m.to_string()), "lost mastership: stopping at once");
                }
                self.status.members = members.to_vec();
            }
            Event::Membership { .. } => {}
            Event::Message {
                sender, payload, ..
            } => {
                let own = self
                    .me()
                    .is_some_and(|me| sender.0 == me.node && sender.1 == me.session);
                self.on_message(own, &sender.0, &payload);
            }
            Event::Disconnected { reason } => {
                tracing::error!(?reason, "controller session disconnected");
            }
        }
    }

    fn on_message(&mut self, own: bool, sender: &walrus_gcs::NodeId, payload: &[u8]) {
        match WalrusMessage::decode(payload) {
            Ok(WalrusMessage::Report(r)) => {
                let server = r.server.clone();
                match self.machine.handle_report(now(), r) {
                    Ok(fixed) if !fixed.is_empty() => {
                        let fixed: Vec<String> = fixed.iter().map(ToString::to_string).collect();
                        tracing::debug!(%server, corrections = ?fixed, "report figures corrected");
                    }
                    Ok(_) => {}
                    Err(ReportIgnored::UnknownServer { server }) => {
                        if self.unknown.insert(server.clone()) {
                            tracing::warn!(%server, from = %sender, "report from a server this Controller's configuration does not know: ignored (logged once per server; the files differ, see the config digests in /status)");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "report ignored"),
                }
            }
            Ok(WalrusMessage::Urgent(r)) => {
                let server = r.server.clone();
                match self.machine.handle_urgent(now(), r) {
                    Ok(taken) => tracing::info!(%server, ?taken, "urgent report"),
                    Err(e) => tracing::debug!(error = %e, "urgent report ignored"),
                }
            }
            Ok(WalrusMessage::Generation { generation, .. }) => {
                let primary = self.settings.replication_primary.as_ref();
                if announcement_counts(primary, sender) {
                    self.machine.handle_generation(now(), generation);
                } else {
                    tracing::warn!(
                        from = %sender,
                        generation = generation.0,
                        primary = ?primary.map(walrus_gcs::NodeId::as_str),
                        "generation announcement from a node that is not the Replicator primary ignored"
                    );
                }
            }
            Ok(WalrusMessage::Override(cmd)) => {
                self.machine.handle_override(now(), wall_clock_ms(), cmd);
            }
            Ok(WalrusMessage::Overrides(list)) if !own => {
                self.machine.handle_overrides(now(), wall_clock_ms(), list);
            }
            Ok(WalrusMessage::Decision(d)) if !own => {
                let round = d.round;
                match self.machine.handle_decision(now(), d) {
                    Ok(()) => tracing::debug!(%round, "decision adopted"),
                    Err(e) => tracing::info!(error = %e, "decision not adopted"),
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(from = %sender, error = %e, "malformed message ignored"),
        }
    }

    fn reconfigure(&mut self, s: ControllerSettings) {
        let known = |srv: &crate::model::ServerName| {
            s.topology
                .clusters
                .values()
                .any(|c| c.servers.contains_key(srv))
        };
        self.unknown.retain(|srv| !known(srv));
        self.machine
            .handle_reconfigure(now(), s.round.clone(), s.topology.clone());
        if s.notify != self.settings.notify {
            match Notifier::start(&s.notify) {
                Ok(n) => {
                    // The old one finishes its queue in the background.
                    if let Some(old) = self.notifier.replace(n) {
                        tokio::spawn(old.close());
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "new notification settings refused; keeping the old ones");
                    let mut s = s;
                    s.notify = self.settings.notify.clone();
                    self.settings = s;
                    tracing::info!("controller reconfigured");
                    return;
                }
            }
        }
        self.settings = s;
        tracing::info!("controller reconfigured");
    }

    /// Performs the machine's outputs (multicasts under `ctx.wait`), publishes the status
    /// and re-arms the round timer.
    fn perform(&mut self, ctx: &mut Context<Self>) {
        use super::round::Output;
        let mut sends: Vec<(Vec<walrus_gcs::GroupName>, Vec<u8>)> = Vec::new();
        let mut queue = |groups: &[&str], msg: &WalrusMessage| match msg.encode() {
            Ok(p) => sends.push((groups.iter().map(|g| messages::group(g)).collect(), p)),
            Err(e) => tracing::error!(error = %e, "cannot encode a message; not sent"),
        };
        while let Some(out) = self.machine.poll_output() {
            match out {
                Output::RequestReports { round } => {
                    queue(&[REPORTERS], &WalrusMessage::RoundRequest { round });
                }
                Output::Multicast(mut decision) => {
                    decision.epoch = wall_clock_ms();
                    for c in &decision.changes {
                        tracing::info!(round = %decision.round, area = %c.area, from = ?c.from.as_ref().map(|f| f.0.as_str()), to = %c.to, phase = c.phase, reason = %c.reason, "area answer changed");
                    }
                    self.status.last_decision = Some(decision.clone());
                    queue(
                        &[CONTROLLERS, DIRECTORS],
                        &WalrusMessage::Decision(decision),
                    );
                }
                Output::ApplyAnswers(answers) => self.apply_direct(answers),
                Output::Notify(event) => {
                    if let Some(Err(e)) = self.notifier.as_ref().map(|n| n.notify(event)) {
                        tracing::warn!(error = %e, "notification not queued");
                    }
                }
                Output::Status(s) => self.status.last_round = Some(s),
                Output::AnnounceOverrides(list) => {
                    queue(&[CONTROLLERS], &WalrusMessage::Overrides(list));
                }
                Output::OverrideLog(line) => tracing::info!(override = %line, "operator override"),
            }
        }
        self.status.is_master = self.machine.is_master();
        self.status.overrides = self.machine.overrides();
        if !self.status.is_master {
            if let Some(d) = self.machine.last_decision() {
                if self.status.last_decision.as_ref().map(|x| x.round) != Some(d.round) {
                    self.status.last_decision = Some(d.clone());
                }
            }
        }
        self.publish();
        if !sends.is_empty() {
            if let Some(link) = self.link.clone() {
                ctx.wait(
                    async move {
                        for (groups, payload) in sends {
                            link.multicast(Service::Agreed, groups, payload).await?;
                        }
                        Ok::<_, walrus_gcs::DriverError>(())
                    }
                    .into_actor(self)
                    .map(|r, act, ctx| {
                        if let Err(e) = r {
                            act.life.fail(ctx, format!("multicast: {e}"));
                        }
                    }),
                );
            }
        }
        self.arm_timer(ctx);
    }

    fn apply_direct(&mut self, answers: BTreeMap<AreaName, crate::model::AreaAnswer>) {
        if self.direct.is_empty() {
            return;
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

    fn arm_timer(&mut self, ctx: &mut Context<Self>) {
        if let Some(t) = self.timer.take() {
            ctx.cancel_future(t);
        }
        if self.life.halted() {
            return;
        }
        if let Some(at) = self.machine.poll_timeout() {
            let after = at.saturating_duration_since(now());
            self.timer = Some(ctx.run_later(after, |act, ctx| {
                act.timer = None;
                match guard(act, |act| {
                    act.note_view();
                    act.machine.handle_timeout(now());
                }) {
                    Ok(()) => act.perform(ctx),
                    Err(cause) => act.life.fail(ctx, cause),
                }
            }));
        }
    }
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
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
    use walrus_gcs::NodeId;

    #[test]
    fn only_the_configured_primary_announces_generations() {
        let (origin, intruder) = (NodeId::new("origin"), NodeId::new("intruder"));
        assert!(announcement_counts(Some(&origin), &origin));
        assert!(!announcement_counts(Some(&origin), &intruder));
        assert!(!announcement_counts(None, &origin));
    }
}
