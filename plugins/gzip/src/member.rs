//! A gzip decoder over ISA-L's raw inflate: the member framing (RFC 1952
//! header, CRC-32 and ISIZE trailer, concatenated members) is parsed here,
//! the deflate data decoded by [`crate::isal::Inflater`].
//!
//! It keeps the promises of the zlib-rs decoder it stands in for: every
//! header flag is accepted (FEXTRA, FNAME, FCOMMENT, FHCRC), members may
//! follow each other, each member's trailer is required and checked (CRC-32
//! computed here over every byte handed out), a stream that ends anywhere
//! before a trailer is complete is [`UnexpectedEof`](io::ErrorKind::UnexpectedEof),
//! an empty stream too, and corrupt data, a bad checksum or bytes after a
//! member that are not another member are [`InvalidData`](io::ErrorKind::InvalidData).

use std::io::{self, Read};

use flate2::Crc;

use crate::isal::Inflater;

/// Input read from the inner reader at a time.
const IN_BUF: usize = 256 * 1024;

/// Consumed input kept before the unconsumed part when the buffer is
/// compacted: where a member's deflate data ends, ISA-L may have taken a
/// few bytes beyond it into its own buffers (it looks ahead when input
/// comes in small pieces), so the trailer is searched from where it says
/// it stopped back to this far.
const KEEP: usize = 4096;

/// Longest member header accepted (FEXTRA is at most 64 KiB; a name or
/// comment that never ends must not grow the buffer without limit).
const MAX_HEADER: usize = 1 << 20;

const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Header,
    Body,
    Trailer,
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
    crc: Crc,
    /// Complete members so far.
    members: u64,
    /// Where ISA-L said the current member's deflate data ended (the
    /// trailer starts there or a little before, see [`KEEP`]).
    end_hint: usize,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("gzip stream: {msg}"))
}

fn eof(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, format!("gzip stream: {msg}"))
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
            crc: Crc::new(),
            members: 0,
            end_hint: 0,
        }
    }

    /// Reads more input after what is unconsumed (moved to the front);
    /// `false` at the end of the inner stream.
    fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.pos > KEEP {
            let from = self.pos - KEEP;
            self.buf.copy_within(from..self.len, 0);
            self.len -= from;
            self.pos = KEEP;
        }
        if self.len == self.buf.len() {
            // a header longer than the buffer (a huge FEXTRA or name)
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
                            self.crc.reset();
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
                        // The deflate data may still have output buffered
                        // inside ISA-L; ask once more without input.
                        let s = self.inflater.run(&[], out)?;
                        if s.produced > 0 || s.finished {
                            return self.took(s.produced, s.finished, out);
                        }
                        return Err(eof("stream ended inside the deflate data"));
                    }
                    let (pos, len) = (self.pos, self.len);
                    let s = self.inflater.run(&self.buf[pos..len], out)?;
                    // Negative at the end of a stream: bytes given back
                    // from ISA-L's bit buffer, at most 8, which KEEP holds.
                    self.pos = pos
                        .checked_add_signed(s.consumed)
                        .filter(|&p| p <= len)
                        .ok_or_else(|| invalid("ISA-L gave back more input than it took".into()))?;
                    if s.produced > 0 || s.finished {
                        return self.took(s.produced, s.finished, out);
                    }
                    // Nothing moved: ISA-L needs more input than there is.
                    if s.consumed <= 0 && !self.fill()? {
                        return Err(eof("stream ended inside the deflate data"));
                    }
                }
                Phase::Trailer => {
                    // Wait for the 8 trailer bytes after the hint (or the
                    // end of the stream), then look for the trailer there
                    // and up to KEEP bytes before (see KEEP).
                    while self.len < self.pos + 8 {
                        let before = self.pos;
                        let more = self.fill()?;
                        // `fill` may have moved the buffer
                        self.end_hint -= before - self.pos;
                        if !more {
                            break;
                        }
                    }
                    let want = {
                        let mut t = [0u8; 8];
                        t[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
                        t[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
                        t
                    };
                    let lo = self.end_hint.saturating_sub(KEEP);
                    let have = &self.buf[..self.len];
                    let found = (lo..=self.end_hint)
                        .rev()
                        .find(|&p| have.get(p..p + 8) == Some(&want[..]));
                    match found {
                        Some(p) => {
                            self.pos = p + 8;
                            self.members += 1;
                            self.phase = Phase::Header;
                        }
                        // the length matches where the CRC does not: a
                        // complete trailer with a bad checksum
                        None if (lo..=self.end_hint)
                            .any(|p| have.get(p + 4..p + 8) == Some(&want[4..])) =>
                        {
                            return Err(invalid("CRC-32 mismatch (corrupt data)".into()));
                        }
                        None if self.len < self.end_hint + 8 => {
                            return Err(eof("stream ended inside a member trailer"));
                        }
                        None => {
                            return Err(invalid(
                                "CRC-32 or length mismatch in the trailer (corrupt data)".into(),
                            ));
                        }
                    }
                }
            }
        }
    }

    /// Accounts for `n` bytes produced into `out`; `Ok(0)` is never
    /// returned for a member that is not over (the caller loops).
    fn took(&mut self, n: usize, finished: bool, out: &mut [u8]) -> io::Result<usize> {
        self.crc.update(&out[..n]);
        if finished {
            self.phase = Phase::Trailer;
            self.end_hint = self.pos;
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
