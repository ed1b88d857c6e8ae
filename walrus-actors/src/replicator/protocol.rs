//! The transfer protocol between a replica and the primary: messages and framing.
//!
//! The replica asks, the primary answers; requests may be pipelined (the primary answers
//! them in order). Every frame is `tag: u8, len: u32 LE, payload`:
//! tag 0 is a message ([`Request`] or [`Response`], encoded with `walrus_gcs::codec`, at most
//! `codec::MAX_FRAME` bytes), tag 1 is raw file data (at most [`DATA_FRAME_MAX`] bytes),
//! sent only after a [`Response::File`] that announced how many data bytes follow.
//!
//! ```text
//!   replica                                   primary
//!     Latest                       ──▶
//!                                  ◀──  Latest { generation }
//!     Manifest { generation }      ──▶
//!                                  ◀──  ManifestPage { .., last: false } ... { last: true }
//!     Files { generation, [path+ranges; ≤ 1024] } (several, pipelined)  ──▶
//!                                  ◀──  File { size } data* | FileUnavailable, ..., FilesEnd
//! ```
//!
//! The same bytes run over a QUIC stream (later), TCP or an in-memory duplex.

use super::manifest::{Entry, Manifest};
use super::path::RelPath;
use crate::model::Generation;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use walrus_gcs::codec::{self, CodecError, MAX_FRAME};

/// Largest data frame, in bytes.
pub const DATA_FRAME_MAX: usize = 1024 * 1024;
/// Most files in one [`Request::Files`].
pub const MAX_FILES_PER_REQUEST: usize = 1024;
/// Most ranges for one file in a [`FileRequest`].
pub const MAX_RANGES_PER_FILE: usize = super::manifest::MAX_CHUNKS;
/// Target size of one manifest page (well under `MAX_FRAME`).
const PAGE_BYTES: usize = 512 * 1024;

/// A replica's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Which generation is the newest?
    Latest,
    /// Send the manifest of `generation`.
    Manifest {
        /// The generation wanted.
        generation: Generation,
    },
    /// Send the content of these files of `generation`.
    Files {
        /// The generation the paths are taken from.
        generation: Generation,
        /// The files, answered in this order.
        files: Vec<FileRequest>,
    },
}

/// One file of a [`Request::Files`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRequest {
    /// The file.
    pub path: RelPath,
    /// `(offset, len)` ranges wanted, in order; empty means the whole file.
    pub ranges: Vec<(u64, u64)>,
}

/// The primary's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The newest generation, if the primary has scanned its root yet.
    Latest {
        /// The newest generation.
        generation: Option<Generation>,
    },
    /// Part of a manifest.
    ManifestPage {
        /// The generation described.
        generation: Generation,
        /// The next entries, in order.
        entries: Vec<Entry>,
        /// Whether this is the last page.
        last: bool,
    },
    /// One requested file: `size` data bytes follow in data frames.
    File {
        /// Number of data bytes that follow (the file, or the sum of the ranges).
        size: u64,
    },
    /// One requested file cannot be sent (vanished, changed kind, outside the manifest).
    FileUnavailable {
        /// Why.
        reason: String,
    },
    /// End of the answer to one [`Request::Files`].
    FilesEnd,
    /// The request was refused (unknown generation, bad request); the connection stays up.
    Refused {
        /// Why.
        reason: String,
    },
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The stream failed or ended mid-frame.
    #[error("stream: {0}")]
    Io(#[from] io::Error),
    /// A message did not decode.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// A frame header announced more than its kind allows.
    #[error("frame of {len} bytes (tag {tag}) is over the limit")]
    TooLarge {
        /// The frame's tag.
        tag: u8,
        /// Its announced length.
        len: usize,
    },
    /// An unknown tag.
    #[error("unknown frame tag {0}")]
    BadTag(u8),
    /// A message came where data was expected, or the other way round.
    #[error("unexpected {0}")]
    Unexpected(&'static str),
}

const TAG_MESSAGE: u8 = 0;
const TAG_DATA: u8 = 1;

/// A frame read by [`read_frame`].
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<T> {
    /// A decoded message.
    Message(T),
    /// Raw data; the bytes are in the caller's buffer.
    Data,
    /// The stream ended cleanly between frames.
    Eof,
}

/// Reads one frame. Data payloads are left in `buf` (cleared first).
pub async fn read_frame<T: DeserializeOwned, R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Frame<T>, FrameError> {
    match read_head(r, buf).await? {
        Head::Message(m) => Ok(Frame::Message(m)),
        Head::Eof => Ok(Frame::Eof),
        Head::Data { len } => {
            read_payload(r, buf, len).await?;
            Ok(Frame::Data)
        }
    }
}

/// A frame as [`read_head`] leaves it.
#[derive(Debug, PartialEq, Eq)]
pub enum Head<T> {
    /// A decoded message.
    Message(T),
    /// A data frame of `len` bytes (at most [`DATA_FRAME_MAX`]), still in the stream: the
    /// caller reads exactly `len` bytes next (from a buffered reader, in place).
    Data {
        /// The payload's length.
        len: usize,
    },
    /// The stream ended cleanly between frames.
    Eof,
}

/// Reads one frame's header, and a message's payload (decoded, with `buf` as scratch); a
/// data frame's payload is left in the stream.
pub async fn read_head<T: DeserializeOwned, R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Head<T>, FrameError> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Head::Eof),
        Err(e) => return Err(e.into()),
    }
    r.read_exact(&mut head[1..]).await?;
    let tag = head[0];
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let limit = match tag {
        TAG_MESSAGE => MAX_FRAME,
        TAG_DATA => DATA_FRAME_MAX,
        t => return Err(FrameError::BadTag(t)),
    };
    if len > limit {
        return Err(FrameError::TooLarge { tag, len });
    }
    if tag == TAG_DATA {
        return Ok(Head::Data { len });
    }
    read_payload(r, buf, len).await?;
    Ok(Head::Message(codec::decode(buf)?))
}

/// Reads exactly `len` bytes into `buf` (cleared first).
async fn read_payload<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    len: usize,
) -> Result<(), FrameError> {
    buf.clear();
    buf.reserve(len);
    // `take` + `read_to_end` fills the buffer without zeroing it first.
    let got = (&mut *r).take(len as u64).read_to_end(buf).await?;
    if got != len {
        return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(())
}

/// Reads one message frame; data or end of stream is an error.
pub async fn read_message<T: DeserializeOwned, R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<T, FrameError> {
    match read_frame(r, buf).await? {
        Frame::Message(m) => Ok(m),
        Frame::Data => Err(FrameError::Unexpected("data frame")),
        Frame::Eof => Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into())),
    }
}

/// Writes one message frame (not flushed).
pub async fn write_message<T: Serialize, W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &T,
) -> Result<(), FrameError> {
    let bytes = codec::encode(msg)?;
    if bytes.len() > MAX_FRAME {
        return Err(FrameError::TooLarge {
            tag: TAG_MESSAGE,
            len: bytes.len(),
        });
    }
    write_raw(w, TAG_MESSAGE, &bytes).await
}

/// Writes one data frame of at most [`DATA_FRAME_MAX`] bytes (not flushed).
pub async fn write_data<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) -> Result<(), FrameError> {
    if data.len() > DATA_FRAME_MAX {
        return Err(FrameError::TooLarge {
            tag: TAG_DATA,
            len: data.len(),
        });
    }
    write_raw(w, TAG_DATA, data).await
}

async fn write_raw<W: AsyncWrite + Unpin>(
    w: &mut W,
    tag: u8,
    payload: &[u8],
) -> Result<(), FrameError> {
    let mut head = [tag, 0, 0, 0, 0];
    head[1..].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    w.write_all(&head).await?;
    w.write_all(payload).await?;
    Ok(())
}

/// Splits a manifest's entries into pages of about [`PAGE_BYTES`] encoded bytes.
pub fn pages(m: &Manifest) -> Vec<&[Entry]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, e) in m.entries.iter().enumerate() {
        let est = 96 + e.path.as_str().len() + entry_chunks(e) * 48;
        if bytes + est > PAGE_BYTES && i > start {
            out.push(&m.entries[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += est;
    }
    out.push(&m.entries[start..]);
    out
}

fn entry_chunks(e: &Entry) -> usize {
    match &e.kind {
        super::manifest::Kind::File { chunks, .. } => chunks.len(),
        _ => 0,
    }
}

/// `Response::ManifestPage` with borrowed entries: the same variant index and fields, so
/// the same bytes (tested), without cloning every entry to encode a page.
#[derive(Serialize)]
enum PageRef<'a> {
    #[allow(dead_code)]
    Latest { generation: Option<Generation> },
    ManifestPage {
        generation: Generation,
        entries: &'a [Entry],
        last: bool,
    },
}

/// Encodes one manifest page (a [`Response::ManifestPage`]) without copying its entries.
pub fn encode_page(
    generation: Generation,
    entries: &[Entry],
    last: bool,
) -> Result<Vec<u8>, CodecError> {
    codec::encode(&PageRef::ManifestPage {
        generation,
        entries,
        last,
    })
}

/// Writes one manifest page as a message frame (see [`encode_page`]).
pub async fn write_page<W: AsyncWrite + Unpin>(
    w: &mut W,
    generation: Generation,
    entries: &[Entry],
    last: bool,
) -> Result<(), FrameError> {
    let bytes = encode_page(generation, entries, last)?;
    if bytes.len() > MAX_FRAME {
        return Err(FrameError::TooLarge {
            tag: TAG_MESSAGE,
            len: bytes.len(),
        });
    }
    write_raw(w, TAG_MESSAGE, &bytes).await
}

/// Saves a manifest to a file as a sequence of message frames (pages), like on the wire.
pub fn save_manifest(m: &Manifest, path: &std::path::Path) -> Result<(), FrameError> {
    let mut out = Vec::new();
    let ps = pages(m);
    let n = ps.len();
    for (i, p) in ps.into_iter().enumerate() {
        let bytes = encode_page(m.generation, p, i + 1 == n)?;
        out.push(TAG_MESSAGE);
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    std::fs::write(path, out)?;
    Ok(())
}

/// Loads a manifest saved by [`save_manifest`]. The caller checks it.
pub fn load_manifest(path: &std::path::Path, max_entries: usize) -> Result<Manifest, FrameError> {
    let bytes = std::fs::read(path)?;
    let mut at = 0;
    let mut m: Option<Manifest> = None;
    while at < bytes.len() {
        let head = bytes
            .get(at..at + 5)
            .ok_or(FrameError::Unexpected("truncated manifest file"))?;
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if head[0] != TAG_MESSAGE || len > MAX_FRAME {
            return Err(FrameError::TooLarge { tag: head[0], len });
        }
        let body = bytes
            .get(at + 5..at + 5 + len)
            .ok_or(FrameError::Unexpected("truncated manifest file"))?;
        at += 5 + len;
        match codec::decode::<Response>(body)? {
            Response::ManifestPage {
                generation,
                entries,
                last,
            } => {
                let m = m.get_or_insert_with(|| Manifest::empty(generation));
                if m.entries.len() + entries.len() > max_entries {
                    return Err(FrameError::Unexpected("too many entries"));
                }
                m.entries.extend(entries);
                if last {
                    break;
                }
            }
            _ => return Err(FrameError::Unexpected("message in manifest file")),
        }
    }
    m.ok_or(FrameError::Unexpected("empty manifest file"))
}

#[cfg(test)]
mod tests {
    use super::super::manifest::{ContentHash, Kind, Mtime, TransferCheck};
    use super::*;

    fn many(n: usize) -> Manifest {
        Manifest {
            generation: Generation(9),
            entries: (0..n)
                .map(|i| Entry {
                    path: RelPath::new(format!("f{i:06}")).unwrap(),
                    kind: Kind::File {
                        hash: ContentHash::of(&i.to_le_bytes()),
                        check: TransferCheck::of(&i.to_le_bytes()),
                        chunks: vec![],
                    },
                    mode: 0o644,
                    size: i as u64,
                    mtime: Mtime { secs: 5, nanos: 6 },
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn frames_round_trip_and_oversize_headers_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        write_message(&mut a, &Request::Latest).await.unwrap();
        write_data(&mut a, b"abc").await.unwrap();
        a.write_all(&[1, 0xff, 0xff, 0xff, 0x7f]).await.unwrap();
        let mut buf = Vec::new();
        assert_eq!(
            read_frame::<Request, _>(&mut b, &mut buf).await.unwrap(),
            Frame::Message(Request::Latest)
        );
        assert_eq!(
            read_frame::<Request, _>(&mut b, &mut buf).await.unwrap(),
            Frame::Data
        );
        assert_eq!(buf, b"abc");
        assert!(matches!(
            read_frame::<Request, _>(&mut b, &mut buf).await,
            Err(FrameError::TooLarge { .. })
        ));
        drop(a);
        assert!(matches!(
            read_frame::<Request, _>(&mut b, &mut buf).await.unwrap(),
            Frame::Eof
        ));
    }

    #[test]
    fn a_big_manifest_is_paged_under_the_frame_limit_and_saved() {
        let m = many(30_000);
        let ps = pages(&m);
        assert!(ps.len() > 1);
        for p in &ps {
            let bytes = codec::encode(&Response::ManifestPage {
                generation: m.generation,
                entries: p.to_vec(),
                last: false,
            })
            .unwrap();
            assert!(bytes.len() <= MAX_FRAME);
            assert_eq!(encode_page(m.generation, p, false).unwrap(), bytes);
        }
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("m");
        save_manifest(&m, &f).unwrap();
        assert_eq!(load_manifest(&f, 1_000_000).unwrap(), m);
        assert!(load_manifest(&f, 100).is_err());
    }
}
