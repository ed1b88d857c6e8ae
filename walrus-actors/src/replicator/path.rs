//! Path validation: every path that crosses the wire or names a file in a generation.
//!
//! A [`RelPath`] is relative, made only of normal components (no `.`, no `..`, no empty
//! component, no NUL), and bounded in length, so joining it to a root can never leave the
//! root. Symlink targets are checked with [`check_symlink_target`]: they must be relative
//! and, resolved lexically from the link's directory, stay inside the tree.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// Longest path accepted, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest path component accepted, in bytes (Linux `NAME_MAX`).
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Deepest nesting accepted, in components.
pub const MAX_DEPTH: usize = 64;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path is empty.
    #[error("empty path")]
    Empty,
    /// The path starts with `/`.
    #[error("absolute path {0:?}")]
    Absolute(String),
    /// A component is `..`.
    #[error("path {0:?} has a `..` component")]
    ParentDir(String),
    /// A component is `.` or empty (`a//b`, trailing `/`).
    #[error("path {0:?} has an empty or `.` component")]
    NotNormal(String),
    /// The path has a NUL byte.
    #[error("path {0:?} contains NUL")]
    Nul(String),
    /// The path is not valid UTF-8 (only UTF-8 names are replicated).
    #[error("path {0:?} is not UTF-8")]
    NotUtf8(String),
    /// The path or a component is too long, or it is nested too deep.
    #[error("path of {len} bytes is over a limit (path {MAX_PATH_BYTES}, component {MAX_COMPONENT_BYTES}, depth {MAX_DEPTH})")]
    TooLong {
        /// Length of the path in bytes.
        len: usize,
    },
    /// A symlink target is absolute or resolves outside the tree.
    #[error("symlink {link:?} -> {target:?} escapes the tree")]
    EscapingSymlink {
        /// The link's path.
        link: String,
        /// Its target.
        target: String,
    },
}

/// A validated path relative to a content root (see the module doc for the rules).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelPath(String);

impl RelPath {
    /// Validates `s` as a relative path.
    pub fn new(s: impl Into<String>) -> Result<Self, PathError> {
        let s = s.into();
        if s.is_empty() {
            return Err(PathError::Empty);
        }
        if s.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong { len: s.len() });
        }
        if s.contains('\0') {
            return Err(PathError::Nul(s));
        }
        if s.starts_with('/') {
            return Err(PathError::Absolute(s));
        }
        let mut depth = 0;
        for c in s.split('/') {
            match c {
                ".." => return Err(PathError::ParentDir(s)),
                "" | "." => return Err(PathError::NotNormal(s)),
                c if c.len() > MAX_COMPONENT_BYTES => {
                    return Err(PathError::TooLong { len: s.len() })
                }
                _ => depth += 1,
            }
        }
        if depth > MAX_DEPTH {
            return Err(PathError::TooLong { len: s.len() });
        }
        Ok(Self(s))
    }

    /// Builds a path from a file-system path relative to a root (as found by a scan).
    pub fn from_fs(p: &Path) -> Result<Self, PathError> {
        let s = p
            .to_str()
            .ok_or_else(|| PathError::NotUtf8(p.to_string_lossy().into_owned()))?;
        Self::new(s)
    }

    /// The path as a string (components joined by `/`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parent directory, or `None` for a top-level entry.
    pub fn parent(&self) -> Option<RelPath> {
        self.0.rfind('/').map(|i| RelPath(self.0[..i].to_owned()))
    }

    /// `root` joined with this path; stays under `root` by construction.
    pub fn under(&self, root: &Path) -> PathBuf {
        root.join(&self.0)
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RelPath {
    type Error = PathError;
    fn try_from(s: String) -> Result<Self, PathError> {
        Self::new(s)
    }
}

impl From<RelPath> for String {
    fn from(p: RelPath) -> String {
        p.0
    }
}

/// Checks that the symlink at `link` pointing at `target` stays inside the tree: the target
/// is relative and, resolved lexically from the link's directory, never climbs above the
/// root. `..` is allowed only before the first normal component: `s/../x` is refused
/// because `s` may itself be a symlink (to `.`, say), which would make lexical and real
/// resolution differ. The leading `..` climb through the link's own ancestors, which are
/// real directories (the manifest check refuses entries under a symlink), so for the
/// accepted forms lexical resolution is the real one.
pub fn check_symlink_target(link: &RelPath, target: &str) -> Result<(), PathError> {
    let escaping = || PathError::EscapingSymlink {
        link: link.0.clone(),
        target: target.to_owned(),
    };
    if target.is_empty()
        || target.starts_with('/')
        || target.contains('\0')
        || target.len() > MAX_PATH_BYTES
    {
        return Err(escaping());
    }
    // Depth of the link's directory below the root.
    let mut depth: i64 = link.0.matches('/').count() as i64;
    let mut descended = false;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if descended {
                    return Err(escaping());
                }
                if depth < 0 {
                    return Err(escaping());
                }
            }
            _ => {
                descended = true;
                depth += 1
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_normal_relative_paths() {
        for ok in [
            "a",
            "a/b",
            "dir/file.html",
            ".hidden",
            "a/..b",
            "a/b..",
            "x y/é",
        ] {
            assert_eq!(RelPath::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_escaping_and_odd_paths() {
        assert_eq!(RelPath::new(""), Err(PathError::Empty));
        assert!(matches!(
            RelPath::new("/etc/passwd"),
            Err(PathError::Absolute(_))
        ));
        assert!(matches!(RelPath::new("../x"), Err(PathError::ParentDir(_))));
        assert!(matches!(
            RelPath::new("a/../../x"),
            Err(PathError::ParentDir(_))
        ));
        assert!(matches!(RelPath::new("a//b"), Err(PathError::NotNormal(_))));
        assert!(matches!(RelPath::new("a/"), Err(PathError::NotNormal(_))));
        assert!(matches!(RelPath::new("./a"), Err(PathError::NotNormal(_))));
        assert!(matches!(RelPath::new("a\0b"), Err(PathError::Nul(_))));
        assert!(matches!(
            RelPath::new("x".repeat(256)),
            Err(PathError::TooLong { .. })
        ));
        assert!(matches!(
            RelPath::new(vec!["d"; 65].join("/")),
            Err(PathError::TooLong { .. })
        ));
        assert!(matches!(
            RelPath::new("a/".repeat(2100) + "b"),
            Err(PathError::TooLong { .. })
        ));
    }

    #[test]
    fn deserializing_validates() {
        let bad = walrus_gcs::codec::encode(&String::from("../../etc/shadow")).unwrap();
        assert!(walrus_gcs::codec::decode::<RelPath>(&bad).is_err());
        let good = walrus_gcs::codec::encode(&String::from("a/b")).unwrap();
        assert_eq!(
            walrus_gcs::codec::decode::<RelPath>(&good).unwrap(),
            RelPath::new("a/b").unwrap()
        );
    }

    #[test]
    fn parent_of_nested_and_top_level() {
        assert_eq!(
            RelPath::new("a/b/c").unwrap().parent(),
            Some(RelPath::new("a/b").unwrap())
        );
        assert_eq!(RelPath::new("a").unwrap().parent(), None);
    }

    #[test]
    fn symlink_targets_must_stay_inside() {
        let top = RelPath::new("link").unwrap();
        let deep = RelPath::new("a/b/link").unwrap();
        assert!(check_symlink_target(&top, "file").is_ok());
        assert!(check_symlink_target(&top, "./d/file").is_ok());
        assert!(check_symlink_target(&deep, "../../file").is_ok());
        // `..` after a normal component is refused: `s` may be a link to `.`.
        assert!(check_symlink_target(&deep, "../x/../y").is_err());
        assert!(check_symlink_target(&top, "s/../etc").is_err());
        assert!(check_symlink_target(&top, "../file").is_err());
        assert!(check_symlink_target(&deep, "../../../file").is_err());
        assert!(check_symlink_target(&deep, "x/../../../../y").is_err());
        assert!(check_symlink_target(&top, "/etc/passwd").is_err());
        assert!(check_symlink_target(&top, "").is_err());
    }
}
