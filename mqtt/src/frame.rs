//! Frame sizing: the MQTT fixed header's Remaining Length (a variable-length integer of at most
//! four bytes) read once, here, for every reader in the workspace, and [`FrameBuffer`], the read
//! buffer that hands out whole frames (no I/O: the caller reads into it). A frame's size is
//! known, and checked against a maximum, before its body is buffered.

use thiserror::Error;

/// Why the bytes at the front of a buffer cannot be a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The Remaining Length runs over four bytes (MQTT 5.0 1.5.5).
    #[error("malformed remaining length (over 4 bytes)")]
    MalformedLength,
    /// The whole packet would be `size` bytes, over the allowed `max`.
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    TooLarge { size: usize, max: usize },
}

/// The fixed header of the frame at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// First byte: packet type and flags.
    pub first: u8,
    /// Bytes of the fixed header (1 + length of the Remaining Length field).
    pub header_len: usize,
    /// The Remaining Length: bytes after the fixed header.
    pub remaining: usize,
}

impl FixedHeader {
    /// Size of the whole frame.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.remaining
    }
}

/// Reads a variable-length integer at the start of `buf`: `Some((bytes used, value))`, `None`
/// when `buf` ends first or the integer runs over four bytes.
pub fn read_var_int(buf: &[u8]) -> Option<(usize, u32)> {
    let mut value: u32 = 0;
    for i in 0..4 {
        let b = *buf.get(i)?;
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((i + 1, value));
        }
    }
    None
}

/// Appends `v` as a variable-length integer (values up to 268,435,455 fit in four bytes).
pub fn write_var_int(mut v: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (v & 0x7f) as u8;
        v >>= 7;
        if v > 0 {
            b |= 0x80;
        }
        out.push(b);
        if v == 0 {
            break;
        }
    }
}

/// Parses the fixed header at the front of `buf`: `Ok(None)` until it is complete, an error when
/// it is malformed or the frame would exceed `max` bytes (checked before the body is read).
pub fn fixed_header(buf: &[u8], max: usize) -> Result<Option<FixedHeader>, FrameError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut remaining: usize = 0;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= ((b & 0x7f) as usize) << (7 * i);
        if b & 0x80 == 0 {
            let h = FixedHeader {
                first,
                header_len: 2 + i,
                remaining,
            };
            if h.frame_len() > max {
                return Err(FrameError::TooLarge {
                    size: h.frame_len(),
                    max,
                });
            }
            return Ok(Some(h));
        }
    }
    Err(FrameError::MalformedLength)
}

/// Length of the complete frame at the front of `buf`, or `None` while more bytes are needed.
pub fn complete_frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    Ok(fixed_header(buf, max)?
        .map(|h| h.frame_len())
        .filter(|n| buf.len() >= *n))
}

/// A read buffer that hands out whole frames, whatever the I/O around it: the caller reads into
/// [`FrameBuffer::spare`], commits with [`FrameBuffer::filled`] and takes frames with
/// [`FrameBuffer::next_frame`]. Invariants: bytes before `start` are consumed, `start..end` are
/// received and not yet handed out, and a frame over the maximum is refused from its header.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    chunk: usize,
}

impl FrameBuffer {
    /// An empty buffer (nothing allocated) that reads at least `chunk` bytes at a time.
    pub fn new(chunk: usize) -> Self {
        FrameBuffer {
            buf: Vec::new(),
            start: 0,
            end: 0,
            chunk: chunk.max(1),
        }
    }

    /// Bytes received and not handed out yet (a partial frame).
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The next whole frame (fixed header included); `Ok(None)` while more bytes are needed, in
    /// which case room for the whole frame is made. Frames over `max` bytes are an error.
    pub fn next_frame(&mut self, max: usize) -> Result<Option<&[u8]>, FrameError> {
        let Some(h) = fixed_header(&self.buf[self.start..self.end], max)? else {
            return Ok(None);
        };
        let total = h.frame_len();
        if self.buffered() < total {
            if self.buf.len() - self.start < total {
                self.compact();
                if self.buf.len() < total {
                    self.buf.resize(total.max(self.chunk), 0);
                }
            }
            return Ok(None);
        }
        let at = self.start;
        self.start += total;
        if self.start == self.end {
            // Everything handed out: the next read starts at the front again.
            self.start = 0;
            self.end = 0;
        }
        Ok(Some(&self.buf[at..at + total]))
    }

    /// Free space to read into, never empty (the buffer is compacted or grown as needed).
    pub fn spare(&mut self) -> &mut [u8] {
        if self.end == self.buf.len() {
            self.compact();
        }
        if self.end == self.buf.len() {
            let grown = (self.buf.len() * 2).max(self.chunk);
            self.buf.resize(grown, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Commits `n` bytes read into [`FrameBuffer::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_headers_ask_for_more_bytes() {
        assert_eq!(fixed_header(&[], 100), Ok(None));
        assert_eq!(fixed_header(&[0x30], 100), Ok(None));
        assert_eq!(fixed_header(&[0x30, 0x80], 100), Ok(None));
        assert_eq!(fixed_header(&[0x30, 0x80, 0x80, 0x80], 100), Ok(None));
    }

    #[test]
    fn multibyte_lengths_are_read() {
        let h = fixed_header(&[0x30, 0xC1, 0x02], usize::MAX)
            .unwrap()
            .unwrap();
        assert_eq!((h.first, h.header_len, h.remaining), (0x30, 3, 321));
        let h = fixed_header(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F], usize::MAX)
            .unwrap()
            .unwrap();
        assert_eq!(h.remaining, 268_435_455);
    }

    #[test]
    fn a_fifth_length_byte_is_malformed() {
        assert_eq!(
            fixed_header(&[0x30, 0x80, 0x80, 0x80, 0x80, 0x01], 100),
            Err(FrameError::MalformedLength)
        );
    }

    #[test]
    fn oversized_frames_are_refused_from_the_header_alone() {
        assert_eq!(
            fixed_header(&[0x30, 0xC1, 0x02], 100),
            Err(FrameError::TooLarge {
                size: 324,
                max: 100
            })
        );
    }

    #[test]
    fn complete_frame_len_waits_for_the_body() {
        assert_eq!(complete_frame_len(&[0xC0, 0x00], 10), Ok(Some(2)));
        assert_eq!(complete_frame_len(&[0x30, 0x02, 0x00], 10), Ok(None));
        assert_eq!(
            complete_frame_len(&[0x30, 0x01, 0x00, 0xC0], 10),
            Ok(Some(3))
        );
    }

    #[test]
    fn var_int_round_trips_at_every_width() {
        for v in [
            0usize,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            268_435_455,
        ] {
            let mut out = Vec::new();
            write_var_int(v, &mut out);
            assert_eq!(read_var_int(&out), Some((out.len(), v as u32)));
        }
        assert_eq!(read_var_int(&[0x80, 0x80, 0x80, 0x80, 0x01]), None);
    }

    /// Feeds `bytes` in reads of `step` bytes and collects every frame handed out.
    fn frames(bytes: &[u8], step: usize, chunk: usize) -> Vec<Vec<u8>> {
        let mut b = FrameBuffer::new(chunk);
        let mut out = Vec::new();
        for piece in bytes.chunks(step) {
            let mut rest = piece;
            while !rest.is_empty() {
                let spare = b.spare();
                let n = spare.len().min(rest.len());
                spare[..n].copy_from_slice(&rest[..n]);
                b.filled(n);
                rest = &rest[n..];
                while let Some(f) = b.next_frame(1 << 20).unwrap() {
                    out.push(f.to_vec());
                }
            }
        }
        assert_eq!(b.buffered(), 0, "nothing left over");
        out
    }

    #[test]
    fn frames_come_out_whole_however_the_bytes_arrive() {
        let ping = vec![0xC0, 0x00];
        let mut publish = vec![0x30, 0xC8, 0x01];
        publish.extend(std::iter::repeat_n(7u8, 200));
        let mut stream = Vec::new();
        for _ in 0..3 {
            stream.extend_from_slice(&ping);
            stream.extend_from_slice(&publish);
        }
        let want = vec![
            ping.clone(),
            publish.clone(),
            ping.clone(),
            publish.clone(),
            ping,
            publish,
        ];
        for (step, chunk) in [(1, 1), (3, 8), (7, 64), (1000, 16), (1000, 4096)] {
            assert_eq!(
                frames(&stream, step, chunk),
                want,
                "step {step}, chunk {chunk}"
            );
        }
    }

    #[test]
    fn a_frame_over_the_maximum_is_refused_before_its_body() {
        let mut b = FrameBuffer::new(16);
        let spare = b.spare();
        spare[..3].copy_from_slice(&[0x30, 0xC8, 0x01]);
        b.filled(3);
        assert_eq!(
            b.next_frame(100),
            Err(FrameError::TooLarge {
                size: 203,
                max: 100
            })
        );
    }
}
