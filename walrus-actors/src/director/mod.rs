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
//! - [`AreaDirector`], [`core::DirectorCore`]: pure decision logic (which answer, when to
//!   apply, re-check, retry, abandon), time passed in, unit-tested.
//! - [`apply`]: one application with retries against a [`NameServer`].
//! - [`driver::run`]: the async shell (decisions from a channel, status on a watch).
//! - [`actor`]: the shell that joins `Directors` on walrus-gcs and forwards each delivered
//!   `Decision` into the driver's channel. Every attempt and outcome is logged with
//!   `tracing` and kept in [`core::DirectorStatus`] for the status page.

pub mod actor;
pub mod answer;
mod answer_cache;
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
pub mod zone;

use crate::model::{AreaAnswer, AreaName, ClusterName, Decision};
use rand::Rng;
use retry::RetryPolicy;
use std::future::Future;
use std::time::Duration;
use zone::{RecordTtl, WwwRecords};

/// Errors of the Director: configuration and decisions it cannot apply.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectorError {
    /// A TTL below one second, with a fraction, or too large.
    #[error("bad TTL {ttl:?}: must be whole seconds, at least 1 s")]
    BadTtl {
        /// The TTL given.
        ttl: Duration,
    },
    /// A DNS name that does not parse or does not fit the layout.
    #[error("bad DNS name {name:?}: {reason}")]
    BadName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The decision gives the area no address at all; the last answer stays.
    #[error("the answer for cluster {cluster} has no address; keeping the last answer")]
    EmptyAnswer {
        /// The cluster the area was assigned to.
        cluster: ClusterName,
    },
    /// A TSIG key that cannot be used.
    #[error("bad TSIG key {key}: {reason}")]
    BadKey {
        /// The key name, or where it came from.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Why a name server could not be read or brought to an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameServerError {
    /// No answer in time, or a socket error: the server may be down or unreachable. Retried.
    #[error("area {area}: name server {server} unreachable: {detail}")]
    Unreachable {
        /// The area the server belongs to.
        area: AreaName,
        /// The server (address, or "embedded at ADDR").
        server: String,
        /// What failed.
        detail: String,
    },
    /// The server answered, but not usefully (SERVFAIL, a malformed or unauthenticated
    /// reply, or the records seen after an update differ from those sent). Retried.
    #[error("area {area}: name server {server}: {detail}")]
    Failed {
        /// The area the server belongs to.
        area: AreaName,
        /// The server.
        server: String,
        /// What went wrong.
        detail: String,
    },
    /// The server refused the update (TSIG BADKEY/BADSIG/BADTIME, REFUSED by policy,
    /// NOTAUTH, NOTZONE, ...). Not retried: a human must fix the key or the policy.
    #[error(
        "area {area}: name server {server} refused the update signed with key {key}: {reason}"
    )]
    Refused {
        /// The area the server belongs to.
        area: AreaName,
        /// The server.
        server: String,
        /// The TSIG key name used.
        key: String,
        /// The rcode and TSIG error as the server gave them.
        reason: String,
    },
    /// The embedded server could not persist the answer (disk full, permissions). Retried.
    #[error("area {area}: cannot store the answer in {path}: {detail}")]
    Storage {
        /// The area the server belongs to.
        area: AreaName,
        /// The state file.
        path: String,
        /// The I/O error.
        detail: String,
    },
    /// The server holds an answer of a newer decision than the one being written: this
    /// writer is behind (deposed, or its decision arrived late). Never retried.
    #[error("area {area}: name server {server} holds the answer of a newer decision (epoch {held}); ours (epoch {ours}) is refused")]
    Stale {
        /// The area.
        area: AreaName,
        /// The server, as its updater describes it.
        server: String,
        /// The epoch the server holds.
        held: u64,
        /// The epoch of the decision we tried to write.
        ours: u64,
    },
}

impl NameServerError {
    /// Whether another attempt may succeed without a human.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            NameServerError::Refused { .. } | NameServerError::Stale { .. }
        )
    }
}

/// What a name server holds for `www.<area-zone>`, with the area zone's SOA serial (for
/// logs and for the test that an unchanged answer sends no update).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The A/AAAA records found.
    pub www: WwwRecords,
    /// The SOA serial of the area zone, when the server gave one.
    pub serial: Option<u32>,
    /// The epoch of the decision whose answer it holds ([`Decision::epoch`]), when it
    /// keeps one; `None` for a server never written with a fence.
    pub epoch: Option<u64>,
}

/// How a write is fenced, so a name server never goes back to an older decision,
/// whoever writes it: the server refuses a write whose `epoch` is older than the one it
/// holds, and applies it only if it still holds `expect` (compare-and-swap against the
/// epoch read just before: another writer in between makes this one re-read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// The decision's epoch; 0: unfenced (tests and tools that write by hand).
    pub epoch: u64,
    /// The epoch the writer read before writing; `None`: do not compare.
    pub expect: Option<u64>,
    /// Write the epoch even when the server already holds the records: the first write
    /// of a writer that just took over, so a deposed writer's late update of an older
    /// decision is refused afterwards.
    pub stamp: bool,
}

impl Fence {
    /// No fence: the write always applies and leaves the held epoch as it is.
    pub const NONE: Fence = Fence {
        epoch: 0,
        expect: None,
        stamp: false,
    };

    /// A fence for a decision of `epoch`.
    pub fn of(epoch: u64) -> Fence {
        Fence {
            epoch,
            ..Fence::NONE
        }
    }
}

/// An epoch more than this far ahead of our own clock is not trusted to fence: a writer
/// with a clock gone wrong must not lock every other writer out for that long.
pub const MAX_EPOCH_AHEAD_MS: u64 = 10 * 60 * 1000;

/// "The area's name server": read what it holds, replace the www records. Implemented by
/// [`rfc2136::Rfc2136Updater`] (any RFC 2136 server, reached over the network) and
/// [`embedded::EmbeddedServer`] (our own); unit tests use an in-memory one.
pub trait NameServer: Send + Sync {
    /// The area whose answer this server carries.
    fn area(&self) -> &AreaName;

    /// For logs and status: kind, address, key name.
    fn describe(&self) -> String;

    /// What the server holds now.
    fn held(&self) -> impl Future<Output = Result<Held, NameServerError>> + Send;

    /// Replaces the A and AAAA rrsets of `www.<area-zone>` by `want`, atomically, under
    /// `fence` (see [`Fence`]): refused as [`NameServerError::Stale`] when the server holds
    /// a newer epoch, failed (retryable) when it no longer holds `fence.expect`.
    fn replace(
        &self,
        want: &WwwRecords,
        fence: &Fence,
    ) -> impl Future<Output = Result<(), NameServerError>> + Send;
}

/// The pure part of one area's Director: which records a decision asks of its server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AreaDirector {
    /// The one area whose answer this Director applies; others are ignored.
    pub area: AreaName,
    /// TTL of the records it writes.
    pub ttl: RecordTtl,
}

impl AreaDirector {
    /// The records this area's server should hold after `decision`: `Ok(None)` when the
    /// decision says nothing about this area (keep what is there), an error when it gives
    /// the area an empty answer (also: keep what is there).
    pub fn wanted(&self, decision: &Decision) -> Result<Option<WwwRecords>, DirectorError> {
        match decision.answers.get(&self.area) {
            None => Ok(None),
            Some(answer) => self.wanted_for(answer).map(Some),
        }
    }

    /// The records for one answer.
    pub fn wanted_for(&self, answer: &AreaAnswer) -> Result<WwwRecords, DirectorError> {
        WwwRecords::from_answer(answer, self.ttl)
    }
}

/// How an application of an answer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The server already held the answer: no update was sent.
    Unchanged {
        /// The area zone's serial seen.
        serial: Option<u32>,
    },
    /// An update was sent and a query afterwards saw it.
    Updated {
        /// Serial before the update.
        before: Option<u32>,
        /// Serial seen by the verifying query.
        after: Option<u32>,
    },
}

/// One attempt, for logs and the status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// 1-based attempt number.
    pub number: u32,
    /// The wait before it.
    pub waited: Duration,
    /// Its outcome.
    pub outcome: Result<Applied, NameServerError>,
}

/// Every attempt of one [`apply`] and the final outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// The server, as [`NameServer::describe`] gives it.
    pub server: String,
    /// Each attempt in order.
    pub attempts: Vec<Attempt>,
}

impl ApplyReport {
    /// The last attempt's outcome. [`apply`] always makes at least one attempt; a report
    /// built by hand without any reads as a `Failed` error with empty fields.
    pub fn outcome(&self) -> Result<&Applied, &NameServerError> {
        match self.attempts.last() {
            Some(a) => a.outcome.as_ref(),
            None => Err(&NO_ATTEMPT),
        }
    }
}

static NO_ATTEMPT: NameServerError = NameServerError::Failed {
    area: AreaName(String::new()),
    server: String::new(),
    detail: String::new(),
};

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
    use crate::model::Round;
    use rand::SeedableRng;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

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
