//! The async shell around [`DirectorCore`]: decisions from a channel, applications as
//! tasks, one timer, status published on a watch channel, stop on a shutdown future.
//!
//! The Director actor only has to forward each `Decision` delivered on the `Directors`
//! group into the channel (and read the status from the watch); everything else is here.

use super::core::{Command, DirectorCore, DirectorStatus};
use super::retry::RetryPolicy;
use super::{apply, ApplyReport, NameServer};
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
    mut core: DirectorCore,
    policy: RetryPolicy,
    decisions: mpsc::Receiver<Decision>,
    status: watch::Sender<DirectorStatus>,
    shutdown: impl Future<Output = ()>,
) where
    N: NameServer + Clone + 'static,
{
    tokio::pin!(shutdown);
    let mut decisions = Some(decisions);
    let mut tasks: JoinSet<(u64, ApplyReport)> = JoinSet::new();
    let mut handles: HashMap<u64, AbortHandle> = HashMap::new();
    loop {
        let timer = core.poll_timeout().map(Instant::from_std);
        let commands = tokio::select! {
            _ = &mut shutdown => break,
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
        };
        for c in commands {
            match c {
                Command::Apply { id, want } => {
                    let ns = ns.clone();
                    let policy = policy.clone();
                    let h = tasks.spawn(async move {
                        let mut rng = rand::rngs::StdRng::from_os_rng();
                        (id, apply(&ns, &want, &policy, &mut rng).await)
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

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
