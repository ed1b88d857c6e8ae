//! Sans-IO reassembly of frames from the bytes of a stream.
//!
//! The reader pushes whatever a stream read returned and takes complete frame bodies
//! out. Each header is checked ([`codec::parse_frame_header`]: version, length limit)
//! before its body is waited for, and the buffer only grows while no complete frame is
//! in it, so it never holds more than one frame plus one read chunk.

use std::ops::Range;

use crate::codec::{self, FrameError, FRAME_HEADER_LEN};

/// Bytes received on one stream that are not yet whole frames.
#[derive(Debug)]
pub(crate) struct FrameBuffer {
    buf: Vec<u8>,
    start: usize,
    limit: usize,
}

impl FrameBuffer {
    /// A buffer accepting frame bodies of at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            limit,
        }
    }

    /// Appends bytes read from the stream.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The range of the next complete frame body, `None` if more bytes are needed, or the
    /// header's fault.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Range<usize>>, FrameError> {
        let avail = &self.buf[self.start..];
        let Some(header) = avail.first_chunk::<FRAME_HEADER_LEN>() else {
            return Ok(None);
        };
        let len = codec::parse_frame_header(*header, self.limit)?;
        if avail.len() < FRAME_HEADER_LEN + len {
            return Ok(None);
        }
        let body = self.start + FRAME_HEADER_LEN..self.start + FRAME_HEADER_LEN + len;
        self.start = body.end;
        Ok(Some(body))
    }

    /// The bytes of a range returned by [`FrameBuffer::next_frame`].
    pub(crate) fn body(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Drops consumed bytes; gives back memory a large frame left behind.
    pub(crate) fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        const KEEP: usize = 256 * 1024;
        if self.buf.capacity() > KEEP && self.buf.len() < KEEP / 4 {
            self.buf.shrink_to(KEEP / 4);
        }
    }

    /// Bytes held (consumed or not).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(values: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in values {
            codec::encode_frame(v, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn reassembles_frames_split_at_every_byte() {
        let bytes = frames(&["a", "bb", "ccc"]);
        let mut fb = FrameBuffer::new(100);
        let mut got = Vec::new();
        for b in &bytes {
            fb.push(std::slice::from_ref(b));
            while let Some(r) = fb.next_frame().unwrap() {
                got.push(codec::decode::<String>(fb.body(r)).unwrap());
            }
            fb.compact();
        }
        assert_eq!(got, ["a", "bb", "ccc"]);
        assert_eq!(fb.held(), 0);
    }

    #[test]
    fn refuses_an_oversize_header_before_its_body_arrives() {
        let mut fb = FrameBuffer::new(10);
        fb.push(&[codec::FRAME_VERSION, 0, 0, 0, 11]);
        assert_eq!(
            fb.next_frame(),
            Err(FrameError::TooLarge { len: 11, limit: 10 })
        );
    }

    #[test]
    fn waits_for_a_whole_body() {
        let bytes = frames(&["hello"]);
        let mut fb = FrameBuffer::new(100);
        fb.push(&bytes[..bytes.len() - 1]);
        assert_eq!(fb.next_frame(), Ok(None));
        fb.push(&bytes[bytes.len() - 1..]);
        assert!(fb.next_frame().unwrap().is_some());
    }
}
