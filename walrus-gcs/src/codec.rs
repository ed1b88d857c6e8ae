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
}
