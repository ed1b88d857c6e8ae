//! The async shell around [`DirectorCore`]: decisions from a channel, applications as
//! tasks, one timer, status published on a watch channel, stop on a shutdown future.
//!
//! The Director actor only has to forward each `Decision` delivered on the `Directors`
//! group into the channel (and read the status from the watch); everything else is here.

use super::core::{Command, DirectorCore, DirectorStatus};
use super::retry::RetryPolicy;
use super::{apply_fenced, ApplyReport, NameServer};
use crate::model::Decision;
use rand::SeedableRng;
use std::collections::HashMap;
use std::future::Future;
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

/// Runs one area's Director until `shutdown` completes. `decisions` may close (the
/// node left the group): the Director then keeps re-checking the last answer.
pub async fn run<N>(
    ns: N,
    core: DirectorCore,
    policy: RetryPolicy,
    decisions: mpsc::Receiver<Decision>,
    status: watch::Sender<DirectorStatus>,
    shutdown: impl Future<Output = ()>,
) where
    N: NameServer + Clone + 'static,
{
    run_with_writer(ns, core, policy, decisions, None, status, shutdown).await
}

/// [`run`], writing only while `writer` says so (when given): the area's writer election
/// (several Directors of one area, or the master standing in for them) lives outside.
pub async fn run_with_writer<N>(
    ns: N,
    mut core: DirectorCore,
    policy: RetryPolicy,
    decisions: mpsc::Receiver<Decision>,
    mut writer: Option<watch::Receiver<bool>>,
    status: watch::Sender<DirectorStatus>,
    shutdown: impl Future<Output = ()>,
) where
    N: NameServer + Clone + 'static,
{
    tokio::pin!(shutdown);
    let mut pending: Vec<super::core::Command> = match &writer {
        Some(w) => {
            let now = *w.borrow();
            core.handle_writer(Instant::now().into_std(), now)
        }
        None => vec![],
    };
    let mut decisions = Some(decisions);
    let mut tasks: JoinSet<(u64, ApplyReport)> = JoinSet::new();
    let mut handles: HashMap<u64, AbortHandle> = HashMap::new();
    loop {
        let timer = core.poll_timeout().map(Instant::from_std);
        let mut commands = std::mem::take(&mut pending);
        commands.extend(tokio::select! {
            _ = &mut shutdown => break,
            changed = changed(&mut writer) => match changed {
                Some(w) => core.handle_writer(Instant::now().into_std(), w),
                None => { writer = None; vec![] }
            },
            d = recv(&mut decisions) => match d {
                Some(d) => core.handle_decision(Instant::now().into_std(), &d),
                None => { decisions = None; vec![] }
            },
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok((id, report)) = done {
                    handles.remove(&id);
                    core.handle_applied(Instant::now().into_std(), id, &report);
                }
                vec![]
            }
            _ = sleep_until(timer) => core.handle_timeout(Instant::now().into_std()),
        });
        for c in commands {
            match c {
                Command::Apply { id, want, fence } => {
                    let ns = ns.clone();
                    let policy = policy.clone();
                    let h = tasks.spawn(async move {
                        let mut rng = rand::rngs::StdRng::from_os_rng();
                        (
                            id,
                            apply_fenced(&ns, &want, &fence, &policy, &mut rng).await,
                        )
                    });
                    handles.insert(id, h);
                }
                Command::Abandon { id } => {
                    if let Some(h) = handles.remove(&id) {
                        h.abort();
                    }
                }
            }
        }
        status.send_replace(core.status().clone());
    }
    tasks.shutdown().await;
}

async fn recv(rx: &mut Option<mpsc::Receiver<Decision>>) -> Option<Decision> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The writer flag's next value; `None` when its sender is gone (keep the last one).
async fn changed(w: &mut Option<watch::Receiver<bool>>) -> Option<bool> {
    match w {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(*rx.borrow_and_update()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
