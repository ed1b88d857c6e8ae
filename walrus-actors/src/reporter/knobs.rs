//! The `[reporter]` section of the configuration file: the Reporter's knobs an operator
//! sets ([`ReporterKnobs`]). The file deserializes straight into this type (unknown fields
//! refused, missing ones at their defaults), [`ReporterKnobs::validate`] checks the ranges
//! and names the field, [`ReporterKnobs::apply`] puts it into a [`ReporterConfig`]. A knob
//! lives here once: its field, its default, its range and one line in `apply`.

use super::os::OsSource;
use super::ReporterConfig;
pub use crate::knob::KnobError;
use serde::Deserialize;
use std::path::PathBuf;

/// The Reporter's knobs (`[reporter]`), shared by every reporting node.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReporterKnobs {
    /// The operator's bypass file on each reporting host (`walrus-node bypass on|off`
    /// writes it; while it exists the Reporter answers BYPASS). Default
    /// `/var/lib/walrus/bypass`.
    pub bypass_file: PathBuf,
    /// Web readings failing in a row before PANIC (connection refused is PANIC at once).
    /// Default 3; at least 1.
    pub panic_after: u32,
    /// The OS reader: `"auto"` (procfs on Linux, sysinfo elsewhere; the default),
    /// `"procfs"` or `"portable"` (sysinfo on any OS). Either way, on Linux a cgroup v2
    /// `cpu.max`/`memory.max` limit on the process replaces the host's CPU and memory
    /// figures with figures against that limit.
    pub os_stats: OsSource,
}

impl Default for ReporterKnobs {
    fn default() -> Self {
        Self {
            bypass_file: PathBuf::from("/var/lib/walrus/bypass"),
            panic_after: 3,
            os_stats: OsSource::Auto,
        }
    }
}

impl ReporterKnobs {
    /// Checks the ranges: `panic_after` at least 1.
    pub fn validate(&self) -> Result<(), KnobError> {
        if self.panic_after == 0 {
            return Err(KnobError::new(
                "panic_after",
                "must be at least 1 (failed readings in a row before PANIC)",
            ));
        }
        Ok(())
    }

    /// Puts the knobs into a Reporter's configuration.
    pub fn apply(&self, config: &mut ReporterConfig) {
        config.bypass_file = self.bypass_file.clone();
        config.panic_after = self.panic_after;
        config.os_stats = self.os_stats;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reporter::WebSource;

    #[test]
    fn defaults_are_the_reporters_and_valid() {
        let k = ReporterKnobs::default();
        assert_eq!(k.validate(), Ok(()));
        let fresh = ReporterConfig::new(
            "s1".into(),
            WebSource::Nginx {
                url: "http://127.0.0.1/status".into(),
                max_workers: 8,
            },
        );
        let mut applied = fresh.clone();
        k.apply(&mut applied);
        assert_eq!(
            (applied.bypass_file, applied.panic_after, applied.os_stats),
            (fresh.bypass_file, fresh.panic_after, fresh.os_stats)
        );
        let zero = ReporterKnobs {
            panic_after: 0,
            ..ReporterKnobs::default()
        };
        assert_eq!(zero.validate().unwrap_err().field(), "panic_after");
    }
}
