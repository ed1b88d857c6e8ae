//! The one place that encodes and decodes bytes with bincode.
//!
//! bincode is pinned at `=2.0.1` (3.0.0 is a tombstone; the crate is unmaintained,
//! RUSTSEC-2025-0141), so every use of it stays here and can be swapped in one place.
//! Untrusted input is decoded with a size limit checked before any allocation.

use serde::{de::DeserializeOwned, Serialize};

/// Largest frame [`decode`] accepts, in bytes (the default message limit, 1 MiB, plus headers).
pub const MAX_FRAME: usize = 1024 * 1024 + 64 * 1024;

/// Why bytes could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The value could not be encoded.
    #[error("encode: {0}")]
    Encode(String),
    /// The bytes are not a valid value (malformed, truncated or over the limit).
    #[error("decode: {0}")]
    Decode(String),
    /// Bytes were left over after the value.
    #[error("decode: {extra} trailing bytes after the value")]
    Trailing {
        /// How many bytes were not consumed.
        extra: usize,
    },
    /// The input is larger than [`MAX_FRAME`].
    #[error("frame of {len} bytes is over the limit of {limit}")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// The limit it broke.
        limit: usize,
    },
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME>()
}

/// Encodes `value` into a new buffer.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes exactly one `T` from `bytes`, refusing oversize input and trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() > MAX_FRAME {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            limit: MAX_FRAME,
        });
    }
    let (value, read) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if read != bytes.len() {
        return Err(CodecError::Trailing {
            extra: bytes.len() - read,
        });
    }
    Ok(value)
}

/// Serde helpers for byte payloads: `#[serde(with = "crate::codec::bytes")]` on a
/// `Vec<u8>` makes it one length-prefixed blob on the wire instead of a sequence of
/// separately encoded `u8`s (same bytes in bincode, much less work per byte).
pub mod bytes {
    use serde::de::{Deserializer, Error, SeqAccess, Visitor};
    use serde::Serializer;
    use std::fmt;

    /// Serializes as bytes.
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    /// Deserializes from bytes (or, for formats without bytes, a sequence of `u8`), into a
    /// `Vec<u8>` or a shared `bytes::Bytes`.
    pub fn deserialize<'de, D: Deserializer<'de>, T: From<Vec<u8>>>(d: D) -> Result<T, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                // Bounded by what the input holds: the codec's size limit applies.
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(V).map(T::from)
    }
}

/// Version byte at the start of every frame on a transport stream.
pub const FRAME_VERSION: u8 = 1;

/// Length of a frame header: the version byte and a big-endian `u32` body length.
pub const FRAME_HEADER_LEN: usize = 5;

/// Why a frame header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The version byte is not [`FRAME_VERSION`].
    #[error("frame version {got}, expected {expected}")]
    Version {
        /// The version byte received.
        got: u8,
        /// The one this build speaks.
        expected: u8,
    },
    /// The announced body length is over the limit (checked before allocating).
    #[error("frame body of {len} bytes is over the limit of {limit}")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The limit it broke.
        limit: usize,
    },
    /// A body of zero bytes, which no value encodes to.
    #[error("empty frame body")]
    Empty,
}

/// Appends one frame (header + encoded `value`) to `out`.
pub fn encode_frame<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let start = out.len();
    out.extend_from_slice(&[FRAME_VERSION, 0, 0, 0, 0]);
    let body = bincode::serde::encode_into_std_write(value, out, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    if body > MAX_FRAME {
        out.truncate(start);
        return Err(CodecError::TooLarge {
            len: body,
            limit: MAX_FRAME,
        });
    }
    let len = u32::try_from(body).map_err(|_| CodecError::TooLarge {
        len: body,
        limit: MAX_FRAME,
    })?;
    out[start + 1..start + FRAME_HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Checks a frame header and returns the body length that follows it. `limit` is the
/// receiver's largest accepted body (at most [`MAX_FRAME`]); nothing is allocated before
/// this check passes.
pub fn parse_frame_header(
    header: [u8; FRAME_HEADER_LEN],
    limit: usize,
) -> Result<usize, FrameError> {
    if header[0] != FRAME_VERSION {
        return Err(FrameError::Version {
            got: header[0],
            expected: FRAME_VERSION,
        });
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let limit = limit.min(MAX_FRAME);
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_trailing_bytes() {
        let v = (7u64, String::from("area-1"));
        let mut bytes = encode(&v).unwrap();
        assert_eq!(decode::<(u64, String)>(&bytes).unwrap(), v);
        bytes.push(0);
        assert!(matches!(
            decode::<(u64, String)>(&bytes),
            Err(CodecError::Trailing { extra: 1 })
        ));
    }

    #[test]
    fn refuses_a_length_prefix_over_the_limit() {
        // A varint length prefix claiming 2^32 bytes must fail before allocating.
        let bytes = [0xFC, 0, 0, 0, 1];
        assert!(decode::<Vec<u8>>(&bytes).is_err());
    }

    #[test]
    fn frames_carry_version_and_length() {
        let mut out = vec![9u8];
        encode_frame(&(1u8, String::from("x")), &mut out).unwrap();
        let header: [u8; FRAME_HEADER_LEN] = out[1..6].try_into().unwrap();
        let len = parse_frame_header(header, MAX_FRAME).unwrap();
        assert_eq!(len, out.len() - 6);
        assert_eq!(decode::<(u8, String)>(&out[6..]).unwrap(), (1, "x".into()));
    }

    #[test]
    fn frame_headers_are_checked_before_allocation() {
        assert_eq!(
            parse_frame_header([2, 0, 0, 0, 1], 100),
            Err(FrameError::Version {
                got: 2,
                expected: 1
            })
        );
        assert_eq!(
            parse_frame_header([1, 0, 0, 0, 101], 100),
            Err(FrameError::TooLarge {
                len: 101,
                limit: 100
            })
        );
        assert_eq!(
            parse_frame_header([1, 0xFF, 0xFF, 0xFF, 0xFF], usize::MAX),
            Err(FrameError::TooLarge {
                len: u32::MAX as usize,
                limit: MAX_FRAME
            })
        );
        assert_eq!(
            parse_frame_header([1, 0, 0, 0, 0], 100),
            Err(FrameError::Empty)
        );
    }
}
