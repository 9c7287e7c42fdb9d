//! The JPARSS multi-stream block format (PROTOCOL.md section 6).
//!
//! A block of `size` bytes with sequence number `seq` is cut into `n`
//! chunks: `chunk = size / n`, stream `i` carries bytes
//! `[i * chunk, i * chunk + len)` where `len = chunk`, except that the last
//! stream takes the remainder. Each chunk is preceded by a 16-byte
//! big-endian header `u16 0xCEBF, u16 i, u32 seq, u32 size, u32 len`.

use std::io;

/// Magic number at the start of every frame header.
pub const MAGIC: u16 = 0xCEBF;

/// Length of a frame header in bytes.
pub const HEADER_LEN: usize = 16;

/// Largest block this implementation SENDS. The Java reader rejects a block
/// larger than its read buffer, which is 16384 bytes (or less, for the rest
/// of a transfer of known length).
pub const MAX_SEND_BLOCK: usize = 16384;

/// Largest block this implementation ACCEPTS. UFTPD 3.x sends blocks of
/// its `BUFFER_SIZE` option; anything bigger than this is treated as
/// corrupt input (it bounds the memory a peer can make us allocate).
pub const MAX_ACCEPT_BLOCK: usize = 1 << 20;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Index of the stream the frame travels on.
    pub stream: u16,
    /// Block sequence number, from 0.
    pub seq: u32,
    /// Size of the whole block (all streams together).
    pub size: u32,
    /// Bytes of payload in this frame.
    pub len: u32,
}

impl FrameHeader {
    /// Serialises the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..2].copy_from_slice(&MAGIC.to_be_bytes());
        h[2..4].copy_from_slice(&self.stream.to_be_bytes());
        h[4..8].copy_from_slice(&self.seq.to_be_bytes());
        h[8..12].copy_from_slice(&self.size.to_be_bytes());
        h[12..16].copy_from_slice(&self.len.to_be_bytes());
        h
    }

    /// Parses a header; a wrong magic number is `InvalidData`.
    pub fn decode(h: &[u8; HEADER_LEN]) -> io::Result<Self> {
        let magic = u16::from_be_bytes([h[0], h[1]]);
        if magic != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad frame magic {magic:#06x} (expected {MAGIC:#06x})"),
            ));
        }
        Ok(FrameHeader {
            stream: u16::from_be_bytes([h[2], h[3]]),
            seq: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            size: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
            len: u32::from_be_bytes([h[12], h[13], h[14], h[15]]),
        })
    }
}

/// Offset and length of stream `i`'s chunk of a block of `size` bytes cut
/// for `n` streams.
///
/// ```
/// use uftp_datachannel::frame::chunk_range;
/// assert_eq!(chunk_range(10, 3, 0), (0, 3));
/// assert_eq!(chunk_range(10, 3, 2), (6, 4)); // the last stream takes the rest
/// assert_eq!(chunk_range(2, 4, 1), (0, 0));
/// assert_eq!(chunk_range(2, 4, 3), (0, 2));
/// ```
pub fn chunk_range(size: usize, n: usize, i: usize) -> (usize, usize) {
    let chunk = size / n;
    let off = i * chunk;
    let len = if i + 1 == n { size - off } else { chunk };
    (off, len)
}

/// One frame of one stream, planned by [`plan_frames`]: its encoded
/// header and where its payload lies in the data being sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramePart {
    /// The encoded 16-byte header.
    pub header: [u8; HEADER_LEN],
    /// Offset of the payload from the start of the data.
    pub off: usize,
    /// Payload length (0 for a stream that gets nothing of a tiny block).
    pub len: usize,
}

/// Plans stream `i` of `n`'s frames for `len` bytes cut into blocks of
/// `block` bytes numbered from `seq` (wrapping): `out` is cleared and gets
/// one [`FramePart`] per block.
///
/// ```
/// use uftp_datachannel::frame::{plan_frames, FrameHeader};
/// let mut parts = Vec::new();
/// plan_frames(&mut parts, 1, 2, 7, 10, 4); // blocks 4 + 4 + 2, stream 1 of 2
/// let spans: Vec<(usize, usize)> = parts.iter().map(|p| (p.off, p.len)).collect();
/// assert_eq!(spans, [(2, 2), (6, 2), (9, 1)]);
/// let h = FrameHeader::decode(&parts[2].header).unwrap();
/// assert_eq!((h.stream, h.seq, h.size, h.len), (1, 9, 2, 1));
/// ```
pub fn plan_frames(
    out: &mut Vec<FramePart>,
    i: usize,
    n: usize,
    seq: u32,
    len: usize,
    block: usize,
) {
    out.clear();
    let mut off = 0;
    let mut seq = seq;
    while off < len {
        let size = block.min(len - off);
        let (coff, plen) = chunk_range(size, n, i);
        out.push(FramePart {
            header: FrameHeader {
                stream: i as u16,
                seq,
                size: size as u32,
                len: plen as u32,
            }
            .encode(),
            off: off + coff,
            len: plen,
        });
        off += size;
        seq = seq.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_and_layout() {
        let h = FrameHeader {
            stream: 3,
            seq: 0x01020304,
            size: 16384,
            len: 4097,
        };
        let b = h.encode();
        assert_eq!(
            b,
            [
                0xCE, 0xBF, 0, 3, 1, 2, 3, 4, 0, 0, 0x40, 0, 0, 0, 0x10, 0x01
            ]
        );
        assert_eq!(FrameHeader::decode(&b).expect("decode"), h);
        let mut bad = b;
        bad[1] = 0xBE;
        assert_eq!(
            FrameHeader::decode(&bad).expect_err("magic").kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn chunks_cover_the_block() {
        for size in 0..100 {
            for n in 1..9 {
                let mut next = 0;
                for i in 0..n {
                    let (off, len) = chunk_range(size, n, i);
                    if len > 0 {
                        assert_eq!(off, next);
                    }
                    next = off + len;
                }
                assert_eq!(next, size);
            }
        }
    }
}
