//! Page-aligned I/O buffers.
//!
//! The kernel copies between the page cache (or pages that `sendfile`
//! put into socket buffers) and user buffers with `rep movsb` on CPUs
//! with fast string moves. On the AMD Zen cores of the benchmark machine
//! that copy is much slower when the destination starts a few bytes after
//! the source within a page: reading a tmpfs file into a buffer at page
//! offset 8 costs 3x, at 16 or 24 about 1.3x what it costs at offset 0 or
//! 32 and beyond (BENCHMARKS.md, "Plain single stream on loopback").
//! glibc places every large allocation (`mmap`ed, from 128 KiB) 16 bytes
//! into its first page, so a plain `vec![0; 1 << 20]` sits at exactly
//! such an offset. An [`IoBuf`] starts on a page boundary instead; file
//! data at page-aligned offsets then lands at the same offset in the
//! buffer.

use std::io::{self, BufRead, Read};
use std::ops::{Deref, DerefMut};

/// Alignment of an [`IoBuf`]: the page size of the common platforms.
pub const PAGE: usize = 4096;

/// A zeroed byte buffer of fixed length whose first byte is page-aligned.
pub struct IoBuf {
    raw: Vec<u8>,
    off: usize,
    len: usize,
}

impl IoBuf {
    /// A buffer of `len` zero bytes starting on a page boundary.
    pub fn new(len: usize) -> IoBuf {
        // `vec![0; n]` asks for zeroed memory (calloc): untouched pages of
        // a large buffer cost nothing until used.
        let raw = vec![0u8; len + PAGE - 1];
        let addr = raw.as_ptr() as usize;
        let off = (PAGE - addr % PAGE) % PAGE;
        IoBuf { raw, off, len }
    }
}

impl Deref for IoBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.raw[self.off..self.off + self.len]
    }
}

impl DerefMut for IoBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.off..self.off + self.len]
    }
}

impl std::fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IoBuf({} bytes)", self.len)
    }
}

impl<R> std::fmt::Debug for AlignedReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AlignedReader({} of {} bytes buffered)",
            self.end - self.pos,
            self.capacity()
        )
    }
}

/// `BufReader` over an [`IoBuf`] that keeps the stream's page phase: byte
/// `k` of the stream is received at page offset `k % PAGE` of the buffer.
/// A `sendfile` sender on the same host (loopback) hands the receiver the
/// page-cache pages themselves, where byte `k` of a file sent from offset
/// 0 sits at that offset; a receive buffer out of phase with them pays
/// the slow copy described above on every read, and with a fixed buffer
/// the phase is fixed by the first short read of the connection, so that
/// whole transfers were fast or slow by chance. Elsewhere the phase
/// costs nothing. Reads at least as large as the buffer bypass it.
pub struct AlignedReader<R> {
    inner: R,
    /// The capacity plus [`PAGE`] bytes: a refill starts at the stream's
    /// page phase.
    buf: IoBuf,
    pos: usize,
    end: usize,
    /// Bytes taken from `inner` so far, modulo [`PAGE`].
    phase: usize,
}

impl<R: Read> AlignedReader<R> {
    /// A reader with a buffer of `capacity` bytes (at least 1).
    pub fn with_capacity(capacity: usize, inner: R) -> AlignedReader<R> {
        AlignedReader {
            inner,
            buf: IoBuf::new(capacity.max(1) + PAGE),
            pos: 0,
            end: 0,
            phase: 0,
        }
    }
}

impl<R> AlignedReader<R> {
    /// Bytes one refill can take.
    fn capacity(&self) -> usize {
        self.buf.len() - PAGE
    }
}

impl<R: Read> Read for AlignedReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.end && out.len() >= self.capacity() {
            let n = self.inner.read(out)?;
            self.phase = (self.phase + n) % PAGE;
            return Ok(n);
        }
        let have = self.fill_buf()?;
        let k = have.len().min(out.len());
        out[..k].copy_from_slice(&have[..k]);
        self.consume(k);
        Ok(k)
    }
}

impl<R: Read> BufRead for AlignedReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.end {
            // Byte k of the stream lands at page offset k % PAGE, where a
            // sender's `sendfile` pages hold it too (see the module doc).
            let (start, capacity) = (self.phase, self.capacity());
            self.pos = start;
            self.end = start;
            loop {
                match self.inner.read(&mut self.buf[start..start + capacity]) {
                    Ok(n) => {
                        self.end = start + n;
                        self.phase = (start + n) % PAGE;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(&self.buf[self.pos..self.end])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed_at_every_size() {
        for len in [0, 1, 15, 4095, 4096, 4097, 100_000, 1 << 20, (1 << 20) + 3] {
            let b = IoBuf::new(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_ptr() as usize % PAGE, 0, "len {len}");
            assert!(b.iter().all(|&x| x == 0));
        }
    }

    #[test]
    fn writes_stay_inside() {
        let mut b = IoBuf::new(5000);
        b.fill(7);
        b[4999] = 9;
        assert_eq!(b.iter().filter(|&&x| x == 7).count(), 4999);
        assert_eq!(b[4999], 9);
    }

    /// A reader handing out at most `max` bytes per read.
    struct Pieces<'a>(&'a [u8], usize);
    impl Read for Pieces<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let k = self.0.len().min(out.len()).min(self.1);
            out[..k].copy_from_slice(&self.0[..k]);
            self.0 = &self.0[k..];
            Ok(k)
        }
    }

    #[test]
    fn reader_returns_the_same_bytes_for_every_mix_of_reads() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for cap in [1, 7, 4096, 10_000, 1 << 16] {
            for piece in [1, 13, 4096, 1 << 20] {
                for want in [1, 100, 4096, 70_000] {
                    let mut r = AlignedReader::with_capacity(cap, Pieces(&data, piece));
                    let mut got = Vec::new();
                    let mut out = vec![0u8; want];
                    let mut step = 0;
                    loop {
                        // alternate read() and fill_buf()/consume()
                        let n = if step % 2 == 0 {
                            r.read(&mut out).expect("read")
                        } else {
                            let b = r.fill_buf().expect("fill");
                            let k = b.len().min(want);
                            got.extend_from_slice(&b[..k]);
                            r.consume(k);
                            step += 1;
                            if k == 0 {
                                break;
                            }
                            continue;
                        };
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&out[..n]);
                        step += 1;
                    }
                    assert_eq!(got, data, "cap {cap} piece {piece} want {want}");
                }
            }
        }
    }
}
