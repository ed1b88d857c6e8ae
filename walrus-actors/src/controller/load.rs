//! The load of one web server: one number computed from its Reporter's [`ServerStats`].
//!
//! `1.0` means "at capacity". The default formula is
//!
//! ```text
//! load = max( busy_workers / max_workers ,  1 - cpu_idle )
//! if free_virtual / total_virtual < low_virtual_fraction:
//!     load = max(load, threshold + low_virtual_excess)
//! ```
//!
//! - The worker fraction says how full the web server's own pool is (the paper's "busy
//!   servers / maximum servers"); it is left out when `max_workers` is 0 (the server did
//!   not say).
//! - The CPU busy fraction (user + system + everything not idle) says how full the host is.
//! - Nearly exhausted virtual memory is pushed above the threshold: such a host is about to
//!   swap itself to a halt, so it gets no new clients except in dire need (paper §2: an
//!   overloaded server is still better than none, so it is not declared dead).
//!
//! Each part can be switched off in [`LoadFormula`].
//!
//! # Figures a reader could not measure
//!
//! The formula uses only `cpu_idle`, the workers and virtual memory, which every OS reader
//! measures. The user/system split, the paging rate and the process counts are carried
//! for the operator and are not part of the load: where a reader could not measure them
//! (the portable reader on sysinfo) they are absent from the report, and the load is the
//! same formula over the same three inputs — nothing is filled in with a made-up zero.
//!
//! # Figures out of range
//!
//! Statistics come from the network and from web servers under stress, so [`sanitize`]
//! checks them first. A report comes from a live server, so its figures never make that
//! server "dead" (paper §2: overloaded service beats no service). Per field:
//!
//! | field | out of range | what happens |
//! |---|---|---|
//! | `web.busy_workers` | above `max_workers` (a flash crowd: nginx counts every connection reading or writing) | kept: the worker fraction is above 1.0, so the load is at least 1.0 ("over capacity: 700 busy of 512") |
//! | `cpu_user`, `cpu_system`, `cpu_idle` | finite but outside `0..=1` | clamped into `0..=1` |
//! | `cpu_user`, `cpu_system`, `cpu_idle` | NaN or infinite | meaningless: the report counts as TEMPFAIL (last round's load) |
//! | `cpu_user`, `cpu_system`, `pages_out_per_sec`, `procs_*` | absent | stay absent (not part of the load) |
//! | `pages_out_per_sec` | negative, NaN or infinite | set to 0 (not part of the load) |
//! | `free_virtual_bytes` | above `total_virtual_bytes` | set to the total (no low-memory push) |
//!
//! Each correction is returned with the sanitised figures, so the shell can log it.

use crate::model::ServerStats;

/// How a server's load is computed from its statistics. See the module doc for the formula.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadFormula {
    /// Count busy / maximum web-server workers. Default: true.
    pub use_workers: bool,
    /// Count the CPU busy fraction (`1 - cpu_idle`). Default: true.
    pub use_cpu: bool,
    /// Below this fraction of free virtual memory the server is pushed above the threshold.
    /// Unit: fraction of `total_virtual_bytes` (0.0–1.0). Default: 0.05. 0 switches it off.
    pub low_virtual_fraction: f64,
    /// How far above the threshold a server low on virtual memory is put. Default: 0.5.
    pub low_virtual_excess: f64,
}

impl Default for LoadFormula {
    fn default() -> Self {
        Self {
            use_workers: true,
            use_cpu: true,
            low_virtual_fraction: 0.05,
            low_virtual_excess: 0.5,
        }
    }
}

/// Why a report's statistics cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StatsError {
    /// A fraction is NaN, infinite, or outside `0..=1` (with a small rounding slack).
    #[error("{field} = {value} is not a fraction in 0..=1")]
    BadFraction {
        /// The field's name in [`ServerStats`].
        field: &'static str,
        /// The value received.
        value: f64,
    },
    /// A rate is NaN, infinite or negative.
    #[error("{field} = {value} is not a finite non-negative number")]
    BadRate {
        /// The field's name in [`ServerStats`].
        field: &'static str,
        /// The value received.
        value: f64,
    },
    /// More virtual memory free than exists.
    #[error("free virtual memory {free} B exceeds total {total} B")]
    VirtualMemory {
        /// `free_virtual_bytes`.
        free: u64,
        /// `total_virtual_bytes`.
        total: u64,
    },
    /// More busy workers than the maximum the server said it has: over capacity.
    #[error("over capacity: {busy} busy of {max}")]
    Workers {
        /// `busy_workers`.
        busy: u32,
        /// `max_workers`.
        max: u32,
    },
}

/// Slack for fractions computed from counters (a sum of parts may round to 1.0000001).
const FRACTION_SLACK: f64 = 1e-6;

/// The figures of a report made usable, with every correction made (empty when none).
/// `Err` when a figure the load depends on is meaningless (NaN or infinite CPU fractions):
/// the report then counts as TEMPFAIL. See the module doc for the rule per field.
pub fn sanitize(stats: &ServerStats) -> Result<(ServerStats, Vec<StatsError>), StatsError> {
    let mut out = stats.clone();
    let mut fixed = Vec::new();
    for (field, value) in [
        ("cpu_user", out.cpu_user.as_mut()),
        ("cpu_system", out.cpu_system.as_mut()),
        ("cpu_idle", Some(&mut out.cpu_idle)),
    ] {
        let Some(value) = value else { continue };
        if !value.is_finite() {
            return Err(StatsError::BadFraction {
                field,
                value: *value,
            });
        }
        if !(-FRACTION_SLACK..=1.0 + FRACTION_SLACK).contains(value) {
            fixed.push(StatsError::BadFraction {
                field,
                value: *value,
            });
        }
        *value = value.clamp(0.0, 1.0);
    }
    if let Some(rate) = out.pages_out_per_sec {
        if !rate.is_finite() || rate < 0.0 {
            fixed.push(StatsError::BadRate {
                field: "pages_out_per_sec",
                value: rate,
            });
            out.pages_out_per_sec = Some(0.0);
        }
    }
    if out.free_virtual_bytes > out.total_virtual_bytes {
        fixed.push(StatsError::VirtualMemory {
            free: out.free_virtual_bytes,
            total: out.total_virtual_bytes,
        });
        out.free_virtual_bytes = out.total_virtual_bytes;
    }
    let web = &out.web;
    if web.max_workers > 0 && web.busy_workers > web.max_workers {
        // Kept as it is: the load formula turns it into a load above 1.0.
        fixed.push(StatsError::Workers {
            busy: web.busy_workers,
            max: web.max_workers,
        });
    }
    Ok((out, fixed))
}

impl LoadFormula {
    /// The server's load (1.0 = at capacity, more when over capacity) from statistics that
    /// went through [`sanitize`].
    /// `threshold` is the assignment's threshold, used only by the low-memory rule.
    pub fn load(&self, stats: &ServerStats, threshold: f64) -> f64 {
        let mut load: f64 = 0.0;
        if self.use_workers && stats.web.max_workers > 0 {
            load = load.max(f64::from(stats.web.busy_workers) / f64::from(stats.web.max_workers));
        }
        if self.use_cpu {
            load = load.max((1.0 - stats.cpu_idle).clamp(0.0, 1.0));
        }
        if self.low_virtual_fraction > 0.0 && stats.total_virtual_bytes > 0 {
            // u64 -> f64 loses precision only beyond 2^53 bytes, irrelevant for a fraction.
            let free = stats.free_virtual_bytes as f64 / stats.total_virtual_bytes as f64;
            if free < self.low_virtual_fraction {
                load = load.max(threshold + self.low_virtual_excess);
            }
        }
        load
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::WebStats;
    use std::time::Duration;

    fn stats(busy: u32, max: u32, idle: f64, free_virt: u64) -> ServerStats {
        ServerStats {
            period: Duration::from_secs(1),
            cpu_user: Some((1.0 - idle) / 2.0),
            cpu_system: Some((1.0 - idle) / 2.0),
            cpu_idle: idle,
            mem_free_bytes: 1 << 30,
            swap_used_bytes: 0,
            pages_out_per_sec: Some(0.0),
            free_virtual_bytes: free_virt,
            total_virtual_bytes: 1000,
            procs_running: Some(1),
            procs_blocked: Some(0),
            web: WebStats {
                hits: 10,
                busy_workers: busy,
                max_workers: max,
            },
        }
    }

    #[test]
    fn load_is_the_larger_of_workers_and_cpu() {
        let f = LoadFormula::default();
        assert!((f.load(&stats(30, 100, 0.9, 500), 0.8) - 0.3).abs() < 1e-9);
        assert!((f.load(&stats(10, 100, 0.4, 500), 0.8) - 0.6).abs() < 1e-9);
    }

    #[test]
    fn unknown_max_workers_uses_cpu_only() {
        let f = LoadFormula::default();
        assert!((f.load(&stats(50, 0, 0.75, 500), 0.8) - 0.25).abs() < 1e-9);
    }

    #[test]
    fn low_virtual_memory_pushes_above_threshold() {
        let f = LoadFormula::default();
        let l = f.load(&stats(1, 100, 0.99, 10), 0.8);
        assert!((l - 1.3).abs() < 1e-9, "{l}");
        let off = LoadFormula {
            low_virtual_fraction: 0.0,
            ..LoadFormula::default()
        };
        assert!(off.load(&stats(1, 100, 0.99, 10), 0.8) < 0.8);
    }

    #[test]
    fn parts_can_be_switched_off() {
        let f = LoadFormula {
            use_cpu: false,
            ..LoadFormula::default()
        };
        assert!((f.load(&stats(20, 100, 0.0, 500), 0.8) - 0.2).abs() < 1e-9);
    }

    #[test]
    fn sanitize_clamps_what_it_can_and_never_refuses_a_live_server() {
        let (s, fixed) = sanitize(&stats(1, 2, 0.5, 10)).unwrap();
        assert_eq!((s, fixed), (stats(1, 2, 0.5, 10), vec![]));
        // NaN CPU: meaningless, TEMPFAIL.
        let mut s = stats(1, 2, 0.5, 10);
        s.cpu_idle = f64::NAN;
        assert!(matches!(
            sanitize(&s),
            Err(StatsError::BadFraction {
                field: "cpu_idle",
                ..
            })
        ));
        // A fraction out of range is clamped.
        let mut s = stats(1, 2, 0.5, 10);
        s.cpu_user = Some(1.5);
        let (got, fixed) = sanitize(&s).unwrap();
        assert_eq!(got.cpu_user, Some(1.0));
        assert!(matches!(
            fixed[..],
            [StatsError::BadFraction {
                field: "cpu_user",
                ..
            }]
        ));
        // A flash crowd: more busy than the maximum is over capacity, load above 1.0.
        let (got, fixed) = sanitize(&stats(700, 512, 0.5, 10)).unwrap();
        assert_eq!(
            fixed,
            vec![StatsError::Workers {
                busy: 700,
                max: 512
            }]
        );
        assert_eq!(fixed[0].to_string(), "over capacity: 700 busy of 512");
        let load = LoadFormula::default().load(&got, 0.8);
        assert!(load >= 1.0 && (load - 700.0 / 512.0).abs() < 1e-9, "{load}");
        // More free virtual memory than exists: set to the total, no low-memory push.
        let (got, fixed) = sanitize(&stats(1, 2, 0.5, 2000)).unwrap();
        assert_eq!(got.free_virtual_bytes, 1000);
        assert!(matches!(fixed[..], [StatsError::VirtualMemory { .. }]));
        assert!(LoadFormula::default().load(&got, 0.8) < 0.8);
        // A bad paging rate is zeroed.
        for rate in [-1.0, f64::NAN, f64::INFINITY] {
            let mut s = stats(1, 2, 0.5, 10);
            s.pages_out_per_sec = Some(rate);
            let (got, fixed) = sanitize(&s).unwrap();
            assert_eq!(got.pages_out_per_sec, Some(0.0));
            assert!(matches!(fixed[..], [StatsError::BadRate { .. }]));
        }
    }
}
