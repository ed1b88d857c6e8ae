//! Admission of a new connection that claims a node name which already has a link: the
//! rule that keeps one incarnation per name in the cluster (sans-IO: time is passed in).
//!
//! A certificate proves a *name*, not a *process*: a cloned VM, a configuration copied to
//! a second host or a stolen key gives two processes the same valid certificate. If every
//! new connection replaced the link to its name (the rule before issue 16), the two
//! processes would take the link from each other at every re-dial — thousands of times a
//! second — and peers would see two incarnations of one node alternate (two masters,
//! flapping answers). So a newcomer must *prove itself* before it replaces a link:
//!
//! 1. **No link, or a link that is silent.** Nothing to protect: the newcomer is admitted.
//! 2. **Same address as the link.** One UDP socket per address: the process behind the
//!    link is gone (it restarted): replaced at once — a restart is not delayed.
//! 3. **From the peer's configured address, while the link comes from elsewhere.** The
//!    configuration says where the node lives: the newcomer is admitted, and if the link
//!    was still live it was a **duplicate**: it is closed with [`super::close_code::DUPLICATE`]
//!    (the duplicate process stops, see below).
//! 4. **From elsewhere, while a link is up.** The newcomer is **held** (not read) for one
//!    probe window ([`AdmissionConfig::probe`], longer than two heartbeats of the core).
//!    If the link delivers a frame in the second half of that window, its process is live
//!    and the newcomer is a duplicate: refused with `DUPLICATE`. If the link stays silent,
//!    its process is dead (SIGKILLed, no close reached us): the newcomer replaces it.
//!
//! Every replacement of an existing link (2, 3, and 4 when silent) is **rate-limited**: after
//! one, the next waits `backoff`, which doubles per replacement (from `backoff_min` to
//! `backoff_max`) and falls back to `backoff_min` once a link has lasted twice `backoff_max`.
//! A replacement that must wait is held like rule 4.
//!
//! Resolution is deterministic: the incarnation at the configured address wins; between
//! two elsewhere, the one whose link came first wins. The loser learns it from the close
//! code, logs one error naming both addresses, and **exits** (the GCS driver stops with
//! [`crate::gcs::DriverError::Duplicate`]): it never joins, so there are never two
//! incarnations of one name in the views, hence never two masters. When it is gone, the
//! remaining incarnation's link is simply the only one (nothing remembers the duplicate's
//! incarnation as "newer": the core accepts an older incarnation again once the newer one
//! is no longer alive), so it is a full member again within a merge.
//!
//! A process that presents X's certificate while calling itself Y is the same case seen
//! from the peers (a second connection proving X) and gets the same answer; if X has no
//! live link, its first frame (sender Y, certificate X) closes it before anything reaches
//! the core.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Timing of the admission rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// How long a newcomer from another address is held while the link proves it is live.
    /// Must exceed twice the core's heartbeat interval (every live link carries a frame in
    /// each half). Default 1 s (LAN), 4 s (WAN).
    pub probe: Duration,
    /// First wait between two replacements of one peer's link. Default 50 ms.
    pub backoff_min: Duration,
    /// Longest wait between two replacements. Default 2 s.
    pub backoff_max: Duration,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            probe: Duration::from_secs(1),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
        }
    }
}

/// Two processes proving the same name, both live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duplicate {
    /// Where the incarnation that keeps the name is.
    pub kept: SocketAddr,
    /// Where the refused one is.
    pub refused: SocketAddr,
}

/// What to do with a newcomer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It becomes the link. `evict` says why the old link (if any) is closed.
    Admit {
        /// `Some` if the old link was live at another address: it is a duplicate.
        duplicate: Option<Duplicate>,
    },
    /// Keep it unread; ask again ([`Admission::check`]) at `until` or when the link ends.
    Hold {
        /// When to decide.
        until: Instant,
    },
    /// Close it with `DUPLICATE`: the link's process is live elsewhere.
    Refuse(Duplicate),
}

#[derive(Clone, Copy, Debug)]
struct Current {
    addr: SocketAddr,
    since: Instant,
    heard: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
struct Held {
    addr: SocketAddr,
    arrived: Instant,
}

/// The admission state of one peer name (sans-IO).
#[derive(Clone, Debug)]
pub struct Admission {
    cfg: AdmissionConfig,
    configured: SocketAddr,
    current: Option<Current>,
    held: Option<Held>,
    backoff: Duration,
    last_replace: Option<Instant>,
}

impl Admission {
    /// The rule for a peer configured at `configured`.
    pub fn new(cfg: AdmissionConfig, configured: SocketAddr) -> Self {
        Self {
            cfg,
            configured,
            current: None,
            held: None,
            backoff: cfg.backoff_min,
            last_replace: None,
        }
    }

    /// Where the current link comes from, if there is one.
    pub fn current(&self) -> Option<SocketAddr> {
        self.current.map(|c| c.addr)
    }

    /// The link delivered a frame.
    pub fn heard(&mut self, now: Instant) {
        if let Some(c) = self.current.as_mut() {
            c.heard = Some(now);
        }
    }

    /// A link came up that no rule here had to decide (e.g. this node dialed it).
    pub fn link_started(&mut self, now: Instant, addr: SocketAddr) {
        self.current = Some(Current {
            addr,
            since: now,
            heard: None,
        });
    }

    /// The link ended (for any reason).
    pub fn link_ended(&mut self) {
        self.current = None;
    }

    /// A newcomer authenticated as this peer arrived from `addr`. A newcomer already held
    /// is superseded (the caller closes it).
    pub fn offer(&mut self, now: Instant, addr: SocketAddr) -> Verdict {
        self.held = Some(Held { addr, arrived: now });
        self.decide(now)
    }

    /// Decides about the held newcomer (at its `Hold` deadline, or after the link ended).
    pub fn check(&mut self, now: Instant) -> Option<Verdict> {
        self.held?;
        Some(self.decide(now))
    }

    fn decide(&mut self, now: Instant) -> Verdict {
        let Some(held) = self.held else {
            // Only called with a held newcomer.
            return Verdict::Hold { until: now };
        };
        let Some(cur) = self.current else {
            return self.admit(now, held, None, false);
        };
        let live = |since: Instant| cur.heard.is_some_and(|t| t > since);
        if held.addr == cur.addr {
            return self.replace(now, held, None);
        }
        if held.addr == self.configured && cur.addr != self.configured {
            let recent = now.checked_sub(self.cfg.probe).unwrap_or(now);
            let duplicate = live(recent).then_some(Duplicate {
                kept: held.addr,
                refused: cur.addr,
            });
            return self.replace(now, held, duplicate);
        }
        let half = held.arrived + self.cfg.probe / 2;
        if live(half) {
            self.held = None;
            return Verdict::Refuse(Duplicate {
                kept: cur.addr,
                refused: held.addr,
            });
        }
        if now < held.arrived + self.cfg.probe {
            return Verdict::Hold {
                until: held.arrived + self.cfg.probe,
            };
        }
        self.replace(now, held, None)
    }

    /// Replaces the current link, if the rate limit allows it now.
    fn replace(&mut self, now: Instant, held: Held, duplicate: Option<Duplicate>) -> Verdict {
        if let Some(last) = self.last_replace {
            if now < last + self.backoff {
                return Verdict::Hold {
                    until: last + self.backoff,
                };
            }
        }
        self.admit(now, held, duplicate, true)
    }

    fn admit(
        &mut self,
        now: Instant,
        held: Held,
        duplicate: Option<Duplicate>,
        replacing: bool,
    ) -> Verdict {
        if replacing {
            let lasted = self
                .current
                .map_or(Duration::MAX, |c| now.saturating_duration_since(c.since));
            self.backoff = if lasted >= self.cfg.backoff_max * 2 || self.last_replace.is_none() {
                self.cfg.backoff_min
            } else {
                (self.backoff * 2).min(self.cfg.backoff_max)
            };
            self.last_replace = Some(now);
        }
        self.held = None;
        self.current = Some(Current {
            addr: held.addr,
            since: now,
            heard: None,
        });
        Verdict::Admit { duplicate }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 7000))
    }

    fn setup() -> (Admission, Instant) {
        let t0 = Instant::now();
        let mut a = Admission::new(AdmissionConfig::default(), addr(1));
        assert_eq!(a.offer(t0, addr(1)), Verdict::Admit { duplicate: None });
        (a, t0)
    }

    #[test]
    fn a_restart_from_the_same_address_replaces_at_once() {
        let (mut a, t0) = setup();
        a.heard(t0 + Duration::from_millis(100));
        let t = t0 + Duration::from_secs(5);
        assert_eq!(a.offer(t, addr(1)), Verdict::Admit { duplicate: None });
    }

    #[test]
    fn a_live_link_refuses_a_newcomer_from_elsewhere_after_the_probe() {
        let (mut a, t0) = setup();
        let t = t0 + Duration::from_secs(5);
        assert_eq!(
            a.offer(t, addr(2)),
            Verdict::Hold {
                until: t + Duration::from_secs(1)
            }
        );
        for ms in (100..=1000).step_by(100) {
            a.heard(t + Duration::from_millis(ms));
        }
        assert_eq!(
            a.check(t + Duration::from_secs(1)),
            Some(Verdict::Refuse(Duplicate {
                kept: addr(1),
                refused: addr(2)
            }))
        );
        assert_eq!(a.current(), Some(addr(1)));
        assert_eq!(a.check(t + Duration::from_secs(2)), None);
    }

    #[test]
    fn a_silent_link_is_replaced_after_the_probe() {
        let (mut a, t0) = setup();
        let t = t0 + Duration::from_secs(5);
        a.heard(t);
        assert!(matches!(a.offer(t, addr(2)), Verdict::Hold { .. }));
        assert_eq!(
            a.check(t + Duration::from_secs(1)),
            Some(Verdict::Admit { duplicate: None })
        );
        assert_eq!(a.current(), Some(addr(2)));
    }

    #[test]
    fn the_configured_address_evicts_a_live_duplicate() {
        let t0 = Instant::now();
        let mut a = Admission::new(AdmissionConfig::default(), addr(1));
        assert_eq!(a.offer(t0, addr(2)), Verdict::Admit { duplicate: None });
        a.heard(t0 + Duration::from_secs(3));
        assert_eq!(
            a.offer(t0 + Duration::from_secs(3), addr(1)),
            Verdict::Admit {
                duplicate: Some(Duplicate {
                    kept: addr(1),
                    refused: addr(2)
                })
            }
        );
    }

    #[test]
    fn replacements_back_off() {
        let (mut a, t0) = setup();
        let mut t = t0 + Duration::from_secs(10);
        assert_eq!(a.offer(t, addr(1)), Verdict::Admit { duplicate: None });
        let mut waits = Vec::new();
        for _ in 0..8 {
            match a.offer(t, addr(1)) {
                Verdict::Hold { until } => {
                    waits.push(until - t);
                    t = until;
                    assert_eq!(a.check(t), Some(Verdict::Admit { duplicate: None }));
                }
                v => panic!("expected a hold, got {v:?}"),
            }
        }
        let ms: Vec<u128> = waits.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![50, 100, 200, 400, 800, 1600, 2000, 2000]);
    }
}
