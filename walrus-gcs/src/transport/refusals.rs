//! Refused handshakes: counted, explained in an operator's words, and logged without
//! flooding. A QUIC Initial costs a sender one datagram and its source can be spoofed, so
//! one WARN line per refusal would let anyone fill the logs (≈50 lines/s from one
//! sender): the first refusal is logged at once, later ones at most once per interval as
//! one line with their count and the last reason. The total is a counter for `/metrics`.
//!
//! Sans-IO: the caller passes the time in.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a burst of refusals is summarised in the log.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Counts refusals and decides when to log them.
#[derive(Debug, Default)]
pub struct RefusalLog {
    total: AtomicU64,
    pending: Mutex<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    /// When the last line was logged.
    logged_at: Option<Instant>,
    /// Refusals since then that were not logged.
    unlogged: u64,
}

impl RefusalLog {
    /// Records one refusal at `now`. Returns how many refusals the line to log now stands
    /// for (1 for the first, or the burst since the last line), or `None`: stay quiet.
    pub fn record(&self, now: Instant) -> Option<u64> {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut p = match self.pending.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        p.unlogged += 1;
        let due = p
            .logged_at
            .is_none_or(|t| now.saturating_duration_since(t) >= LOG_INTERVAL);
        if !due {
            return None;
        }
        p.logged_at = Some(now);
        Some(std::mem::take(&mut p.unlogged))
    }

    /// Refusals since the transport started.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// A TLS handshake failure in an operator's words: rustls names a certificate signed by
/// another CA after the check that failed ("BadSignature" when the issuer's name matches
/// ours, "UnknownIssuer" when it does not); both mean a certificate this cluster's CA did
/// not issue.
pub fn explain(raw: &str) -> String {
    if raw.contains("BadSignature") || raw.contains("UnknownIssuer") {
        format!("certificate not issued by this cluster's CA ({raw})")
    } else {
        raw.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_refusal_is_logged_then_one_line_per_interval_with_the_count() {
        let log = RefusalLog::default();
        let t0 = Instant::now();
        assert_eq!(log.record(t0), Some(1));
        // A flood of 50 a second for 25 s: one line per 10 s, each with its count.
        let mut lines = vec![];
        for i in 1..=1250u64 {
            let now = t0 + Duration::from_millis(20 * i);
            if let Some(n) = log.record(now) {
                lines.push(n);
            }
        }
        assert_eq!(lines, vec![500, 500]);
        assert_eq!(log.total(), 1251);
        // Quiet for a while: the next one is logged at once.
        assert_eq!(log.record(t0 + Duration::from_secs(60)), Some(251));
    }

    #[test]
    fn another_cas_certificate_is_named_as_such() {
        for raw in [
            "the cryptographic handshake failed: error 42: invalid peer certificate: BadSignature",
            "invalid peer certificate: UnknownIssuer",
        ] {
            let e = explain(raw);
            assert!(
                e.starts_with("certificate not issued by this cluster's CA"),
                "{e}"
            );
            assert!(e.contains(raw));
        }
        assert_eq!(explain("timed out"), "timed out");
    }
}
