//! Manifest diff: how a replica builds generation `new` from what it already has (`old`).
//!
//! Each entry of the new manifest gets one [`Action`]. Files whose content the replica
//! already holds are hard-linked from the old generation when their mode and mtime also
//! match (a hard link shares the inode, so the old generation must stay untouched), copied
//! locally otherwise. A file found under another path (a rename) is reused the same way.
//! A large file whose old version shares chunks with the new one is rebuilt from the old
//! chunks plus the missing ranges ([`Segment`]s). Everything else is fetched whole.

use super::manifest::{ContentHash, Entry, Kind, Manifest};
use super::path::RelPath;
use std::collections::HashMap;

/// What to do for one entry of the new manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the directory.
    Dir,
    /// Create the symlink.
    Symlink,
    /// Hard-link the file from the old generation (same content, mode and mtime).
    Link {
        /// Path of the file in the old generation.
        from: RelPath,
    },
    /// Copy the file from the old generation (same content, other mode or mtime).
    Copy {
        /// Path of the file in the old generation.
        from: RelPath,
    },
    /// Rebuild a large file from chunks of an old file and ranges fetched from the primary.
    Delta {
        /// Path of the old file whose chunks are reused.
        base: RelPath,
        /// The new file, in order.
        segments: Vec<Segment>,
    },
    /// Fetch the whole file from the primary.
    Fetch,
}

/// A piece of a file rebuilt by [`Action::Delta`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// `len` bytes at `offset` of the base file.
    Local {
        /// Offset in the base file.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
    /// `len` bytes at `offset` of the new file, fetched from the primary.
    Remote {
        /// Offset in the new file.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
}

/// The actions that turn `old` into `new`, in the new manifest's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// One action per entry of the new manifest, same index.
    pub actions: Vec<Action>,
    /// Paths present in `old` and absent from `new` (informational: a new generation is
    /// built from scratch, so they simply are not created).
    pub deleted: Vec<RelPath>,
    /// Bytes to fetch from the primary.
    pub fetch_bytes: u64,
}

impl Plan {
    /// Number of entries that need the primary (whole or delta).
    pub fn fetch_count(&self) -> usize {
        self.actions
            .iter()
            .filter(|a| matches!(a, Action::Fetch | Action::Delta { .. }))
            .count()
    }
}

/// Computes the plan that builds `new` from `old`.
pub fn diff(old: &Manifest, new: &Manifest) -> Plan {
    let by_hash: HashMap<ContentHash, &Entry> = old
        .entries
        .iter()
        .filter_map(|e| match &e.kind {
            Kind::File { hash, .. } => Some((*hash, e)),
            _ => None,
        })
        .collect();
    // Both manifests are sorted by path: one merge pass pairs each new entry with the old
    // entry at the same path and lists the old paths that are gone (no search per entry).
    let mut at_path: Vec<Option<&Entry>> = Vec::with_capacity(new.entries.len());
    let mut deleted = Vec::new();
    let mut olds = old.entries.iter().peekable();
    for e in &new.entries {
        while let Some(o) = olds.next_if(|o| o.path < e.path) {
            deleted.push(o.path.clone());
        }
        at_path.push(olds.next_if(|o| o.path == e.path));
    }
    deleted.extend(olds.map(|o| o.path.clone()));
    let mut fetch_bytes = 0;
    let actions = new
        .entries
        .iter()
        .zip(at_path)
        .map(|(e, at_path)| match &e.kind {
            Kind::Dir => Action::Dir,
            Kind::Symlink { .. } => Action::Symlink,
            Kind::File { hash, chunks, .. } => {
                // Prefer the same path (most files do not move), then any file with the hash.
                let same =
                    at_path.filter(|o| matches!(&o.kind, Kind::File { hash: h, .. } if h == hash));
                if let Some(o) = same.or_else(|| by_hash.get(hash).copied()) {
                    if o.mode == e.mode && o.mtime == e.mtime {
                        return Action::Link {
                            from: o.path.clone(),
                        };
                    }
                    return Action::Copy {
                        from: o.path.clone(),
                    };
                }
                if let Some(Entry {
                    kind:
                        Kind::File {
                            chunks: old_chunks, ..
                        },
                    ..
                }) = at_path
                {
                    if !chunks.is_empty() && !old_chunks.is_empty() {
                        let segments = delta_segments(old_chunks, chunks);
                        let remote: u64 = segments
                            .iter()
                            .map(|s| match s {
                                Segment::Remote { len, .. } => *len,
                                Segment::Local { .. } => 0,
                            })
                            .sum();
                        if remote < e.size {
                            fetch_bytes += remote;
                            return Action::Delta {
                                base: e.path.clone(),
                                segments,
                            };
                        }
                    }
                }
                fetch_bytes += e.size;
                Action::Fetch
            }
        })
        .collect();
    Plan {
        actions,
        deleted,
        fetch_bytes,
    }
}

/// Segments of the new file: chunks found in the old file are local, the rest remote;
/// neighbours of the same kind are merged.
fn delta_segments(old: &[super::manifest::Chunk], new: &[super::manifest::Chunk]) -> Vec<Segment> {
    let have: HashMap<ContentHash, (u64, u32)> =
        old.iter().map(|c| (c.hash, (c.offset, c.len))).collect();
    let mut out: Vec<Segment> = Vec::new();
    for c in new {
        let len = u64::from(c.len);
        let seg = match have.get(&c.hash) {
            Some(&(offset, l)) if l == c.len => Segment::Local { offset, len },
            _ => Segment::Remote {
                offset: c.offset,
                len,
            },
        };
        match (out.last_mut(), seg) {
            (
                Some(Segment::Local {
                    offset: po,
                    len: pl,
                }),
                Segment::Local { offset, len },
            ) if *po + *pl == offset => *pl += len,
            (
                Some(Segment::Remote {
                    offset: po,
                    len: pl,
                }),
                Segment::Remote { offset, len },
            ) if *po + *pl == offset => *pl += len,
            _ => out.push(seg),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::manifest::{Chunk, Mtime, TransferCheck};
    use super::*;
    use crate::model::Generation;

    fn file(path: &str, content: &[u8], mode: u32) -> Entry {
        Entry {
            path: RelPath::new(path).unwrap(),
            kind: Kind::File {
                hash: ContentHash::of(content),
                check: TransferCheck::of(content),
                chunks: vec![],
            },
            mode,
            size: content.len() as u64,
            mtime: Mtime { secs: 1, nanos: 0 },
        }
    }

    fn m(g: u64, entries: Vec<Entry>) -> Manifest {
        Manifest {
            generation: Generation(g),
            entries,
        }
    }

    #[test]
    fn unchanged_files_are_linked_changed_fetched_deleted_listed() {
        let old = m(1, vec![file("a", b"A", 0o644), file("b", b"B", 0o644)]);
        let new = m(2, vec![file("a", b"A", 0o644), file("c", b"CC", 0o644)]);
        let p = diff(&old, &new);
        assert_eq!(
            p.actions,
            vec![
                Action::Link {
                    from: RelPath::new("a").unwrap()
                },
                Action::Fetch
            ]
        );
        assert_eq!(p.deleted, vec![RelPath::new("b").unwrap()]);
        assert_eq!(p.fetch_bytes, 2);
    }

    #[test]
    fn a_rename_reuses_content_and_a_chmod_copies() {
        let old = m(1, vec![file("a", b"A", 0o644)]);
        let new = m(2, vec![file("moved", b"A", 0o644), file("z", b"A", 0o600)]);
        let p = diff(&old, &new);
        let a = RelPath::new("a").unwrap();
        assert_eq!(
            p.actions,
            vec![Action::Link { from: a.clone() }, Action::Copy { from: a }]
        );
        assert_eq!(p.fetch_bytes, 0);
    }

    #[test]
    fn an_append_fetches_only_the_new_chunks() {
        let ch = |offset: u64, len: u32, tag: &[u8]| Chunk {
            offset,
            len,
            hash: ContentHash::of(tag),
        };
        let mut old_e = file("big", b"old", 0o644);
        old_e.size = 300;
        old_e.kind = Kind::File {
            hash: ContentHash::of(b"old"),
            check: TransferCheck::of(b"old"),
            chunks: vec![ch(0, 100, b"1"), ch(100, 100, b"2"), ch(200, 100, b"3")],
        };
        let mut new_e = file("big", b"new", 0o644);
        new_e.size = 350;
        new_e.kind = Kind::File {
            hash: ContentHash::of(b"new"),
            check: TransferCheck::of(b"new"),
            chunks: vec![
                ch(0, 100, b"1"),
                ch(100, 100, b"2"),
                ch(200, 120, b"3+"),
                ch(320, 30, b"4"),
            ],
        };
        let p = diff(&m(1, vec![old_e]), &m(2, vec![new_e]));
        assert_eq!(p.fetch_bytes, 150);
        assert_eq!(
            p.actions,
            vec![Action::Delta {
                base: RelPath::new("big").unwrap(),
                segments: vec![
                    Segment::Local {
                        offset: 0,
                        len: 200
                    },
                    Segment::Remote {
                        offset: 200,
                        len: 150
                    }
                ]
            }]
        );
    }
}
