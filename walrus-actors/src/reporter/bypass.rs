//! The operator's bypass file: while it exists (and has not expired) the Reporter answers
//! BYPASS, so the Controller leaves this server out of every round (paper §4).
//!
//! `walrus-node bypass on [--for 30m]` calls [`write_bypass`], `bypass off` calls
//! [`clear_bypass`]; the gatherer calls [`read_bypass`] every interval. The file is small
//! text, so an operator can also create it by hand (`touch` is enough: no `until` means no
//! expiry):
//!
//! ```text
//! # walrus bypass: this server is left out of rounds while this file exists.
//! reason = kernel upgrade
//! until = 1764172800
//! ```
//!
//! `until` is a Unix time in seconds (wall clock, so it survives restarts of the node).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest bypass file we read.
pub const MAX_BYPASS_FILE_BYTES: u64 = 16 * 1024;

/// Why reading or writing the bypass file failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BypassError {
    /// The file could not be read, written, renamed or removed.
    #[error("bypass file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_BYPASS_FILE_BYTES`].
    #[error("bypass file {path} is larger than {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit, bytes.
        limit: u64,
    },
    /// A line is not `key = value`, or a value is wrong.
    #[error("bypass file line {line}: {reason}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// An operator's request to leave this server out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bypass {
    /// Why, as the operator said (shown in the report and the status page).
    pub reason: String,
    /// When it ends by itself; None: until cleared.
    pub until: Option<SystemTime>,
}

impl Bypass {
    /// A bypass from `now` for `duration` (None: until cleared).
    pub fn new(reason: impl Into<String>, duration: Option<Duration>, now: SystemTime) -> Self {
        Self {
            reason: reason.into(),
            until: duration.map(|d| now + d),
        }
    }

    /// Whether it is in force at `now`.
    pub fn is_active(&self, now: SystemTime) -> bool {
        self.until.is_none_or(|until| now < until)
    }

    /// The reason given in a BYPASS report.
    pub fn describe(&self, now: SystemTime) -> String {
        let reason = if self.reason.is_empty() {
            "operator bypass"
        } else {
            self.reason.as_str()
        };
        match self.until.and_then(|u| u.duration_since(now).ok()) {
            Some(left) => format!("{reason} (bypass ends in {}s)", left.as_secs()),
            None => format!("{reason} (bypass until cleared)"),
        }
    }
}

/// The file's text for `bypass`.
pub fn render_bypass(bypass: &Bypass) -> String {
    let mut text = String::from(
        "# walrus bypass: this server is left out of rounds while this file exists.\n",
    );
    // One line: a newline in the reason would end the value.
    let reason: String = bypass
        .reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    text.push_str(&format!("reason = {}\n", reason.trim()));
    if let Some(until) = bypass.until {
        let secs = until
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        text.push_str(&format!("until = {secs}\n"));
    }
    text
}

/// Parses the file's text. An empty file is a bypass without reason or expiry.
pub fn parse_bypass(text: &str) -> Result<Bypass, BypassError> {
    let mut bypass = Bypass {
        reason: String::new(),
        until: None,
    };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let syntax = |reason: String| BypassError::Syntax {
            line: i + 1,
            reason,
        };
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| syntax("expected `key = value`".to_owned()))?;
        let value = value.trim();
        match key.trim() {
            "reason" => bypass.reason = value.to_owned(),
            "until" => {
                let secs: u64 = value.parse().map_err(|_| {
                    syntax(format!(
                        "`until` must be Unix seconds, found {:?}",
                        value.chars().take(40).collect::<String>()
                    ))
                })?;
                bypass.until = Some(UNIX_EPOCH + Duration::from_secs(secs));
            }
            other => {
                return Err(syntax(format!(
                    "unknown key {:?}; known: reason, until",
                    other.chars().take(40).collect::<String>()
                )))
            }
        }
    }
    Ok(bypass)
}

/// Reads the bypass file: None when there is none.
pub fn read_bypass(path: &Path) -> Result<Option<Bypass>, BypassError> {
    let io = |source| BypassError::Io {
        path: path.to_owned(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_BYPASS_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_BYPASS_FILE_BYTES {
        return Err(BypassError::TooLarge {
            path: path.to_owned(),
            limit: MAX_BYPASS_FILE_BYTES,
        });
    }
    parse_bypass(&String::from_utf8_lossy(&bytes)).map(Some)
}

/// Writes the bypass file atomically: a reader sees the old file or the new one, never a
/// half-written one (write a temporary file beside it, flush it to disk, rename).
pub fn write_bypass(path: &Path, bypass: &Bypass) -> Result<(), BypassError> {
    let io = |source| BypassError::Io {
        path: path.to_owned(),
        source,
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(render_bypass(bypass).as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// Removes the bypass file. Returns whether there was one.
pub fn clear_bypass(path: &Path) -> Result<bool, BypassError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(BypassError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn round_trips_and_expires() {
        let b = Bypass::new("kernel\nupgrade", Some(Duration::from_secs(1800)), t(1000));
        let parsed = parse_bypass(&render_bypass(&b)).unwrap();
        assert_eq!(parsed.reason, "kernel upgrade");
        assert_eq!(parsed.until, Some(t(2800)));
        assert!(parsed.is_active(t(2799)));
        assert!(!parsed.is_active(t(2800)));
        assert_eq!(
            parsed.describe(t(1000)),
            "kernel upgrade (bypass ends in 1800s)"
        );
    }

    #[test]
    fn empty_file_is_a_bypass_without_expiry() {
        let b = parse_bypass("").unwrap();
        assert!(b.is_active(t(u32::MAX as u64)));
        assert_eq!(b.describe(t(0)), "operator bypass (bypass until cleared)");
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let e = parse_bypass("reason = x\nuntil = tomorrow\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "bypass file line 2: `until` must be Unix seconds, found \"tomorrow\""
        );
        let e = parse_bypass("for 30m").unwrap_err();
        assert_eq!(e.to_string(), "bypass file line 1: expected `key = value`");
        let e = parse_bypass("colour = red").unwrap_err();
        assert!(e.to_string().contains("unknown key \"colour\""), "{e}");
    }

    #[test]
    fn write_read_clear_on_disk() {
        let dir = std::env::temp_dir().join(format!("walrus-bypass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bypass");
        assert_eq!(read_bypass(&path).unwrap(), None);
        let b = Bypass::new("maintenance", None, t(5));
        write_bypass(&path, &b).unwrap();
        assert_eq!(read_bypass(&path).unwrap(), Some(b));
        // No temporary file left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        assert!(clear_bypass(&path).unwrap());
        assert!(!clear_bypass(&path).unwrap());
        assert_eq!(read_bypass(&path).unwrap(), None);
        std::fs::write(&path, vec![b'#'; MAX_BYPASS_FILE_BYTES as usize + 1]).unwrap();
        assert!(matches!(
            read_bypass(&path),
            Err(BypassError::TooLarge { .. })
        ));
        let missing_dir = dir.join("nope").join("bypass");
        assert!(write_bypass(&missing_dir, &Bypass::new("x", None, t(0))).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
