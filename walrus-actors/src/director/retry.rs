//! The retry policy of the Director: how long to wait before the next attempt to bring a
//! name server to the wanted answer, and when to give up for now.
//!
//! Pure logic (the jitter is passed in), so the schedule is unit-tested exactly. The
//! driver in [`super::apply`] sleeps for what [`RetryPolicy::delay_before`] says.

use std::time::Duration;

/// Exponential backoff with a cap and "equal jitter": the delay before attempt `n` (n ≥ 2)
/// is half the capped exponential step plus a jittered half, so retries of several
/// Directors against one recovering name server spread out instead of arriving together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the second attempt (before jitter). Default 200 ms.
    pub initial: Duration,
    /// Ceiling of any delay. Default 10 s.
    pub max: Duration,
    /// Attempts in one application of an answer, the first included (there is always at
    /// least one, whatever this says); then the Director
    /// reports the failure and waits for the next decision or its own periodic re-check.
    /// Default 8 (about 20 s of trying with the defaults).
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(10),
            max_attempts: 8,
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt number `attempt` (1-based), or `None` when no such attempt
    /// is allowed. The first attempt has no wait. `jitter` is a uniform draw in `[0, 1)`
    /// (values outside are clamped), supplied by the caller so tests are deterministic.
    pub fn delay_before(&self, attempt: u32, jitter: f64) -> Option<Duration> {
        if attempt == 1 {
            return Some(Duration::ZERO);
        }
        if attempt == 0 || attempt > self.max_attempts {
            return None;
        }
        // Step k = initial * 2^(attempt-2), capped; shift is bounded so it cannot overflow.
        let shift = (attempt - 2).min(30);
        let step = self
            .initial
            .checked_mul(1u32 << shift)
            .unwrap_or(self.max)
            .min(self.max);
        let half = step / 2;
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Some(half + half.mul_f64(jitter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn first_attempt_is_immediate() {
        assert_eq!(RetryPolicy::default().delay_before(1, 0.7), Some(ms(0)));
    }

    #[test]
    fn delays_double_then_cap() {
        let p = RetryPolicy {
            initial: ms(100),
            max: ms(1000),
            max_attempts: 10,
        };
        let no_jitter: Vec<_> = (2..=7).map(|n| p.delay_before(n, 0.0)).collect();
        assert_eq!(
            no_jitter,
            vec![
                Some(ms(50)),
                Some(ms(100)),
                Some(ms(200)),
                Some(ms(400)),
                Some(ms(500)),
                Some(ms(500))
            ]
        );
        // Full jitter doubles the half-step: the upper end of the range is the step.
        assert_eq!(p.delay_before(4, 1.0), Some(ms(400)));
        assert_eq!(p.delay_before(4, 0.5), Some(ms(300)));
    }

    #[test]
    fn gives_up_after_max_attempts() {
        let p = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        assert!(p.delay_before(3, 0.0).is_some());
        assert_eq!(p.delay_before(4, 0.0), None);
        assert_eq!(p.delay_before(0, 0.0), None);
        let none = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        };
        assert_eq!(
            none.delay_before(1, 0.0),
            Some(Duration::ZERO),
            "always one attempt"
        );
        assert_eq!(none.delay_before(2, 0.0), None);
    }

    #[test]
    fn huge_attempt_numbers_and_bad_jitter_do_not_panic() {
        let p = RetryPolicy {
            max_attempts: u32::MAX,
            ..RetryPolicy::default()
        };
        assert_eq!(p.delay_before(u32::MAX, f64::NAN), Some(p.max / 2));
        assert_eq!(p.delay_before(40, 7.0), Some(p.max));
    }
}
