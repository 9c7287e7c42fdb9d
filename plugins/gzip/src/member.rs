//! A gzip decoder over ISA-L's inflate: the member headers (RFC 1952) are
//! parsed here, the deflate data and each member's trailer (CRC-32 and
//! length, both checked) by [`crate::isal::Inflater`], which stops exactly
//! at the end of the member.
//!
//! It keeps the promises of the zlib-rs decoder it stands in for: every
//! header flag is accepted (FEXTRA, FNAME, FCOMMENT, FHCRC, whose CRC is
//! checked), members may follow each other, each member's trailer is
//! required, a stream that ends anywhere before a trailer is complete is
//! [`UnexpectedEof`](io::ErrorKind::UnexpectedEof), an empty stream too,
//! and corrupt data, a bad checksum or bytes after a member that are not
//! another member are [`InvalidData`](io::ErrorKind::InvalidData).

use std::io::{self, Read};

use flate2::Crc;

use crate::isal::Inflater;

/// Input read from the inner reader at a time.
const IN_BUF: usize = 256 * 1024;

/// Longest member header accepted (FEXTRA is at most 64 KiB; a name or
/// comment that never ends must not grow the buffer without limit).
const MAX_HEADER: usize = 1 << 20;

const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before a member header (or at the end of the stream).
    Header,
    /// In a member's deflate data or trailer, both ISA-L's.
    Body,
    Done,
    Failed,
}

/// The decoder.
pub(crate) struct IsalGzipReader<'a> {
    inner: Box<dyn Read + Send + 'a>,
    inflater: Inflater,
    buf: Vec<u8>,
    /// Unconsumed input is `buf[pos..len]`.
    pos: usize,
    len: usize,
    /// The inner reader has ended.
    eof: bool,
    phase: Phase,
    /// Complete members so far.
    members: u64,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("gzip stream: {msg}"))
}

fn eof(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, format!("gzip stream: {msg}"))
}

/// An error of the inflater, said as the zlib-rs decoder says its own.
fn prefixed(e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("gzip stream: {e}"))
}

/// Length of the gzip header at the start of `b`: `Ok(None)` if more bytes
/// are needed to tell.
fn header_len(b: &[u8]) -> io::Result<Option<usize>> {
    if b.len() >= 2 && (b[0], b[1]) != (0x1f, 0x8b) {
        return Err(invalid("not a gzip member (bad magic bytes)".into()));
    }
    if b.len() >= 3 && b[2] != 8 {
        return Err(invalid(format!("unsupported compression method {}", b[2])));
    }
    if b.len() < 10 {
        return Ok(None);
    }
    let flags = b[3];
    if flags & 0xe0 != 0 {
        return Err(invalid(format!("reserved header flags set ({flags:#04x})")));
    }
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let Some(x) = b.get(at..at + 2) else {
            return Ok(None);
        };
        at += 2 + usize::from(u16::from_le_bytes([x[0], x[1]]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let Some(rest) = b.get(at..) else {
                return Ok(None);
            };
            match rest.iter().position(|&c| c == 0) {
                Some(i) => at += i + 1,
                None => return Ok(None),
            }
        }
    }
    if flags & FHCRC != 0 {
        let Some(x) = b.get(at..at + 2) else {
            return Ok(None);
        };
        let mut c = Crc::new();
        c.update(&b[..at]);
        if c.sum() as u16 != u16::from_le_bytes([x[0], x[1]]) {
            return Err(invalid("header CRC mismatch".into()));
        }
        at += 2;
    }
    Ok((at <= b.len()).then_some(at))
}

impl<'a> IsalGzipReader<'a> {
    pub(crate) fn new(inner: Box<dyn Read + Send + 'a>, inflater: Inflater) -> Self {
        IsalGzipReader {
            inner,
            inflater,
            buf: vec![0; IN_BUF],
            pos: 0,
            len: 0,
            eof: false,
            phase: Phase::Header,
            members: 0,
        }
    }

    /// Reads more input after what is unconsumed (moved to the front);
    /// `false` at the end of the inner stream.
    fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.len, 0);
            self.len -= self.pos;
            self.pos = 0;
        }
        if self.len == self.buf.len() {
            // a header longer than the buffer (a large FEXTRA or name)
            self.buf.resize(self.buf.len() * 2, 0);
        }
        loop {
            match self.inner.read(&mut self.buf[self.len..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.len += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.pos..self.len]
    }

    fn step(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.phase {
                Phase::Done => return Ok(0),
                Phase::Failed => return Err(invalid("unusable after an earlier error".into())),
                Phase::Header => {
                    if self.pending().is_empty() && !self.fill()? {
                        if self.members == 0 {
                            return Err(eof("no data (missing header and trailer)"));
                        }
                        self.phase = Phase::Done;
                        return Ok(0);
                    }
                    match header_len(self.pending())? {
                        Some(n) => {
                            self.pos += n;
                            self.inflater.reset();
                            self.phase = Phase::Body;
                        }
                        None if self.pending().len() > MAX_HEADER => {
                            return Err(invalid(format!(
                                "member header longer than {MAX_HEADER} bytes (name or comment without end)"
                            )));
                        }
                        None => {
                            if !self.fill()? {
                                return Err(eof("stream ended inside a member header"));
                            }
                        }
                    }
                }
                Phase::Body => {
                    if self.pending().is_empty() && !self.fill()? {
                        // Output may still be buffered inside ISA-L; ask
                        // once more without input.
                        let s = self.inflater.run(&[], out).map_err(prefixed)?;
                        if s.produced > 0 || s.finished {
                            return self.took(s.produced, s.finished, out);
                        }
                        return Err(eof("stream ended inside a member (data or trailer)"));
                    }
                    let (pos, len) = (self.pos, self.len);
                    let s = self
                        .inflater
                        .run(&self.buf[pos..len], out)
                        .map_err(prefixed)?;
                    self.pos += s.consumed;
                    if s.produced > 0 || s.finished {
                        return self.took(s.produced, s.finished, out);
                    }
                    if s.consumed == 0 {
                        // Input there, room for output, and nothing taken
                        // or given: ISA-L should never do this; stop
                        // rather than spin.
                        return Err(io::Error::other("gzip stream: ISA-L made no progress"));
                    }
                }
            }
        }
    }

    /// Accounts for `n` bytes produced into `out`; `Ok(0)` is never
    /// returned for a member that is not over (the caller loops).
    fn took(&mut self, n: usize, finished: bool, out: &mut [u8]) -> io::Result<usize> {
        if finished {
            self.members += 1;
            self.phase = Phase::Header;
        }
        if n > 0 { Ok(n) } else { self.step(out) }
    }
}

impl Read for IsalGzipReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let r = self.step(out);
        if r.is_err() {
            self.phase = Phase::Failed;
        }
        r
    }
}

impl std::fmt::Debug for IsalGzipReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IsalGzipReader")
            .field("phase", &self.phase)
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}
