//! The Director: puts one area's answer into the DNS (paper §5, §7.2).
//!
//! The master Controller decides, each round, which addresses every area's name server
//! hands out for the site ([`Decision`], one [`AreaAnswer`] per area). The Director makes
//! one area's name server hold its area's answer, and nothing else:
//!
//! ```text
//!   Decision ──► AreaDirector::wanted(decision) ──► WwwRecords (own area only)
//!                                                        │
//!                     apply(name_server, wanted, retry policy)
//!                       1. held = query the server (A, AAAA, SOA of www.<area-zone>)
//!                       2. held == wanted? → done, no update (serial unchanged)
//!                       3. replace: delete A, delete AAAA, add new — one message
//!                       4. verify: query again, must equal wanted
//!                       (2–4 retried with backoff; a refusal is final)
//!                                                        │
//!                  ┌─────────────────────────────────────┴───────────────┐
//!          rfc2136::Rfc2136Updater                         embedded::EmbeddedServer
//!          TSIG-signed UPDATE to BIND/Knot/...             serves both zones itself, UDP+TCP,
//!          (any reachable address)                         answer persisted atomically
//! ```
//!
//! # Two ways to run it
//!
//! - **Director beside the name server** (our default). A `Director` actor runs in the
//!   `walrus-node` on (or next to) an area's name server and joins the `Directors` group.
//!   The master multicasts every decision there; each Director picks its own area's answer
//!   ([`AreaDirector`]) and applies it to its local server. The TSIG key never leaves the
//!   name server's host. *In a partition*, each connected component has its own master
//!   (the first member of `Controllers`); an area's Director follows the master of the
//!   component it is in, which is exactly the master that can reach that area's name server,
//!   so every reachable area keeps getting decisions from someone who can see it, and no
//!   two masters ever write one area's server (a Director is in exactly one component). A
//!   Director cut off from every Controller keeps its server's last answer (the embedded
//!   server even across restarts, see [`embedded`]): DNS keeps answering when every
//!   Controller is gone. When components merge, the single new master's next decision
//!   overwrites both sides' answers.
//! - **Direct mode** (the paper's own: "the Controller updates the name server"). For a site
//!   that runs no node beside a name server, the master itself holds an
//!   [`rfc2136::Rfc2136Updater`] per area and calls the same [`apply`]. The updater only
//!   needs the server's address and key: nothing assumes it runs on the server's host (no
//!   loopback, no local files, every call opens its own sockets). *In a partition*, an area's
//!   name server is only updated by a master whose component can reach it over IP; the master
//!   of another component fails to reach it (retries, then reports the area as unreachable)
//!   and the server keeps the last answer it got. Two masters in two components that can
//!   both reach one name server (a partition of the group, not of IP) would both update it;
//!   the last write wins until the components merge. The key must live on every Controller
//!   host.
//!
//! # Layers
//! - [`vocabulary`]: the errors and plain types the pure parts import (no I/O).
//! - [`AreaDirector`], [`core::DirectorCore`]: pure decision logic (which answer, when to
//!   apply, re-check, retry, abandon), time passed in, unit-tested.
//! - [`apply`]: one application with retries against a [`NameServer`].
//! - [`driver::run`]: the async shell (decisions from a channel, status on a watch).
//! - [`assembly`]: one area's Director from its [`DirectorSettings`] ([`start`]).
//! - [`actor`]: the shell that joins `Directors` on walrus-gcs and forwards each delivered
//!   `Decision` into the driver's channel. Every attempt and outcome is logged with
//!   `tracing` and kept in [`core::DirectorStatus`] for the status page.

pub mod actor;
pub mod answer;
mod answer_cache;
pub mod assembly;
pub mod bind_config;
pub mod core;
pub mod driver;
pub mod ecs;
pub mod embedded;
pub mod knot_config;
pub mod learned;
pub mod pdns_config;
pub mod proximity;
pub mod retry;
pub mod rfc2136;
pub mod sharing;
pub mod steering;
pub mod transport;
pub mod vocabulary;
pub mod zone;

pub use assembly::{
    start, start_direct, AreaSteerRule, DirectorSettings, EmbeddedSettings, NameServerSettings,
    RunningDirector, SettingsError, Writes,
};
pub use vocabulary::*;

use rand::Rng;
use retry::RetryPolicy;
use zone::WwwRecords;

/// One attempt: read, compare, replace if different, verify. Unfenced (see
/// [`apply_once_fenced`]).
pub async fn apply_once<N: NameServer>(
    ns: &N,
    want: &WwwRecords,
) -> Result<Applied, NameServerError> {
    apply_once_fenced(ns, want, &Fence::NONE).await
}

/// One fenced attempt: read; refuse if the server holds a newer epoch than `fence.epoch`;
/// leave it alone if it holds `want` (and, with `fence.stamp`, an epoch at least ours);
/// else replace with a compare-and-swap on the epoch read; verify.
pub async fn apply_once_fenced<N: NameServer>(
    ns: &N,
    want: &WwwRecords,
    fence: &Fence,
) -> Result<Applied, NameServerError> {
    let before = ns.held().await?;
    let held_epoch = before.epoch.unwrap_or(0);
    if fence.epoch > 0 && held_epoch > fence.epoch {
        let ahead = held_epoch.saturating_sub(crate::controller::actor::wall_clock_ms());
        if ahead <= MAX_EPOCH_AHEAD_MS {
            return Err(NameServerError::Stale {
                area: ns.area().clone(),
                server: ns.describe(),
                held: held_epoch,
                ours: fence.epoch,
            });
        }
        tracing::warn!(area = %ns.area(), held = held_epoch, ahead_ms = ahead, "the server's epoch is far ahead of our clock: not trusted to fence; writing");
    }
    let stamp_due = fence.stamp && fence.epoch > held_epoch;
    if before.www.same_as(want) && !stamp_due {
        return Ok(Applied::Unchanged {
            serial: before.serial,
        });
    }
    let cas = Fence {
        expect: before.epoch.or(Some(0)).filter(|_| fence.epoch > 0),
        ..*fence
    };
    ns.replace(want, &cas).await?;
    let after = ns.held().await?;
    if !after.www.same_as(want) {
        return Err(verify_mismatch(ns, want, &after.www));
    }
    Ok(Applied::Updated {
        before: before.serial,
        after: after.serial,
    })
}

fn verify_mismatch<N: NameServer>(ns: &N, want: &WwwRecords, seen: &WwwRecords) -> NameServerError {
    NameServerError::Failed {
        area: ns.area().clone(),
        server: ns.describe(),
        detail: format!("after the update the server holds {seen:?}, not {want:?}"),
    }
}

/// Brings `ns` to `want`, retrying per `policy` (waits with `tokio::time`, jitter from
/// `rng`). Stops at the first success, at a refusal, or when attempts run out; logs every
/// attempt. The caller drops the future to abandon it when a newer decision arrives.
pub async fn apply<N: NameServer, R: Rng + Send>(
    ns: &N,
    want: &WwwRecords,
    policy: &RetryPolicy,
    rng: &mut R,
) -> ApplyReport {
    apply_fenced(ns, want, &Fence::NONE, policy, rng).await
}

/// [`apply`] under `fence`: a [`NameServerError::Stale`] refusal ends it at once (this
/// writer is behind; logged as such).
pub async fn apply_fenced<N: NameServer, R: Rng + Send>(
    ns: &N,
    want: &WwwRecords,
    fence: &Fence,
    policy: &RetryPolicy,
    rng: &mut R,
) -> ApplyReport {
    let server = ns.describe();
    let mut attempts = Vec::new();
    let mut number = 1;
    while let Some(waited) = policy.delay_before(number, rng.random::<f64>()) {
        if !waited.is_zero() {
            tokio::time::sleep(waited).await;
        }
        let outcome = apply_once_fenced(ns, want, fence).await;
        match &outcome {
            Ok(Applied::Unchanged { serial }) => {
                tracing::debug!(%server, attempt = number, ?serial, "answer already held")
            }
            Ok(Applied::Updated { before, after }) => {
                tracing::info!(%server, attempt = number, ?before, ?after, v4 = ?want.v4, v6 = ?want.v6, ttl = want.ttl, "answer updated")
            }
            Err(e) if e.is_retryable() => {
                tracing::warn!(%server, attempt = number, error = %e, "attempt failed")
            }
            Err(e @ NameServerError::Stale { .. }) => {
                tracing::warn!(%server, attempt = number, error = %e, "late update of an older decision refused by the fence")
            }
            Err(e) => tracing::error!(%server, attempt = number, error = %e, "update refused"),
        }
        let stop = match &outcome {
            Ok(_) => true,
            Err(e) => !e.is_retryable(),
        };
        attempts.push(Attempt {
            number,
            waited,
            outcome,
        });
        if stop {
            break;
        }
        number += 1;
    }
    ApplyReport { server, attempts }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AreaAnswer, AreaName, ClusterName, Decision, Round};
    use rand::SeedableRng;
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::time::Duration;
    use zone::RecordTtl;

    /// In-memory name server: a script of failures, then a store.
    struct Fake {
        held: Mutex<Held>,
        fail_reads: Mutex<u32>,
        refuse: bool,
        /// Stores something else than asked (a planted fault the verify step must catch).
        corrupt: bool,
        updates: Mutex<u32>,
        area: AreaName,
    }

    impl Fake {
        fn new() -> Self {
            Self {
                held: Mutex::new(Held {
                    www: WwwRecords::default(),
                    serial: Some(1),
                    epoch: None,
                }),
                fail_reads: Mutex::new(0),
                refuse: false,
                corrupt: false,
                updates: Mutex::new(0),
                area: Fake::area(),
            }
        }
        fn area() -> AreaName {
            AreaName::from("a1")
        }
    }

    impl NameServer for Fake {
        fn area(&self) -> &AreaName {
            &self.area
        }
        fn describe(&self) -> String {
            "fake".into()
        }
        async fn held(&self) -> Result<Held, NameServerError> {
            let mut f = self.fail_reads.lock().unwrap();
            if *f > 0 {
                *f -= 1;
                return Err(NameServerError::Unreachable {
                    area: Fake::area(),
                    server: "fake".into(),
                    detail: "timeout".into(),
                });
            }
            Ok(self.held.lock().unwrap().clone())
        }
        async fn replace(&self, want: &WwwRecords, fence: &Fence) -> Result<(), NameServerError> {
            if self.refuse {
                return Err(NameServerError::Refused {
                    area: Fake::area(),
                    server: "fake".into(),
                    key: "k".into(),
                    reason: "NOTAUTH (TSIG BADSIG)".into(),
                });
            }
            *self.updates.lock().unwrap() += 1;
            let mut h = self.held.lock().unwrap();
            h.www = want.clone();
            if self.corrupt {
                h.www.v4.clear();
            }
            h.serial = h.serial.map(|s| s + 1);
            if fence.epoch > 0 {
                h.epoch = Some(fence.epoch);
            }
            Ok(())
        }
    }

    fn want(addrs: &[&str]) -> WwwRecords {
        WwwRecords::from_addrs(addrs.iter().map(|a| a.parse().unwrap()), RecordTtl::DEFAULT)
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(4),
            max_attempts: 4,
        }
    }

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    #[tokio::test]
    async fn applies_then_leaves_unchanged_alone() {
        let ns = Fake::new();
        let w = want(&["10.0.0.1", "2001:db8::1"]);
        let r = apply(&ns, &w, &fast(), &mut rng()).await;
        assert_eq!(
            r.outcome(),
            Ok(&Applied::Updated {
                before: Some(1),
                after: Some(2)
            })
        );
        let r = apply(&ns, &w, &fast(), &mut rng()).await;
        assert_eq!(r.outcome(), Ok(&Applied::Unchanged { serial: Some(2) }));
        assert_eq!(*ns.updates.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn retries_transient_failures() {
        let ns = Fake::new();
        *ns.fail_reads.lock().unwrap() = 2;
        let r = apply(&ns, &want(&["10.0.0.1"]), &fast(), &mut rng()).await;
        assert_eq!(r.attempts.len(), 3);
        assert!(r.outcome().is_ok());
        assert!(r.attempts[1].waited > Duration::ZERO);
    }

    #[tokio::test]
    async fn gives_up_after_policy_attempts() {
        let ns = Fake::new();
        *ns.fail_reads.lock().unwrap() = 100;
        let r = apply(&ns, &want(&["10.0.0.1"]), &fast(), &mut rng()).await;
        assert_eq!(r.attempts.len(), 4);
        assert!(matches!(
            r.outcome(),
            Err(NameServerError::Unreachable { .. })
        ));
    }

    #[tokio::test]
    async fn refusal_is_not_retried() {
        let mut ns = Fake::new();
        ns.refuse = true;
        let r = apply(&ns, &want(&["10.0.0.1"]), &fast(), &mut rng()).await;
        assert_eq!(r.attempts.len(), 1);
        let e = r.outcome().unwrap_err();
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("a1") && e.to_string().contains("key k"));
    }

    #[tokio::test]
    async fn verify_catches_a_server_that_stores_something_else() {
        let mut ns = Fake::new();
        ns.corrupt = true;
        let r = apply(&ns, &want(&["10.0.0.1"]), &fast(), &mut rng()).await;
        assert_eq!(r.attempts.len(), 4, "a mismatch is retried");
        assert!(matches!(r.outcome(), Err(NameServerError::Failed { .. })));
    }

    #[test]
    fn area_director_takes_only_its_own_area() {
        let d = AreaDirector {
            area: AreaName::from("a1"),
            ttl: RecordTtl::DEFAULT,
        };
        let mut answers = BTreeMap::new();
        answers.insert(
            AreaName::from("a2"),
            AreaAnswer {
                cluster: ClusterName::from("c2"),
                records: vec!["10.0.0.2".parse().unwrap()],
            },
        );
        let mut dec = Decision {
            round: Round(1),
            epoch: 1,
            answers,
            changes: vec![],
        };
        assert_eq!(d.wanted(&dec).unwrap(), None);
        dec.answers.insert(
            AreaName::from("a1"),
            AreaAnswer {
                cluster: ClusterName::from("c1"),
                records: vec!["10.0.0.1".parse().unwrap()],
            },
        );
        assert_eq!(d.wanted(&dec).unwrap(), Some(want(&["10.0.0.1"])));
    }

    #[tokio::test]
    async fn a_fenced_write_of_an_older_decision_is_refused_and_not_retried() {
        let ns = Fake::new();
        let r = apply_fenced(
            &ns,
            &want(&["10.0.0.2"]),
            &Fence::of(200),
            &fast(),
            &mut rng(),
        )
        .await;
        assert!(matches!(r.outcome(), Ok(Applied::Updated { .. })), "{r:?}");
        assert_eq!(ns.held.lock().unwrap().epoch, Some(200));
        // A deposed writer's late update of an older decision (epoch 150).
        let r = apply_fenced(
            &ns,
            &want(&["10.0.0.1"]),
            &Fence::of(150),
            &fast(),
            &mut rng(),
        )
        .await;
        assert!(
            matches!(
                r.outcome(),
                Err(NameServerError::Stale {
                    held: 200,
                    ours: 150,
                    ..
                })
            ),
            "{r:?}"
        );
        assert_eq!(r.attempts.len(), 1, "never retried");
        assert_eq!(ns.held.lock().unwrap().www, want(&["10.0.0.2"]));
        // A takeover with the same records stamps its newer epoch once.
        let stamp = Fence {
            stamp: true,
            ..Fence::of(300)
        };
        let r = apply_fenced(&ns, &want(&["10.0.0.2"]), &stamp, &fast(), &mut rng()).await;
        assert!(matches!(r.outcome(), Ok(Applied::Updated { .. })), "{r:?}");
        assert_eq!(ns.held.lock().unwrap().epoch, Some(300));
        let r = apply_fenced(
            &ns,
            &want(&["10.0.0.2"]),
            &Fence::of(300),
            &fast(),
            &mut rng(),
        )
        .await;
        assert!(
            matches!(r.outcome(), Ok(Applied::Unchanged { .. })),
            "{r:?}"
        );
    }
}
