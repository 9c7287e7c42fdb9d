//! rsync-style delta transfer: the SYNC-TO-CLIENT / SYNC-TO-SERVER exchange
//! of PROTOCOL.md section 8, shared by the server and the client.
//!
//! Two sides hold a version of one file. The *follower* has the old copy,
//! the *leader* the new one:
//!
//! 1. the follower cuts its copy into blocks of `block_size` bytes (the last
//!    one may be short) and sends, big-endian, `u32 block_size`,
//!    `u32 nblocks`, then per block `u64 weak` and the 16-byte MD5 of the
//!    block ([`BlockSums`]);
//! 2. the leader slides a window over its file with the rolling checksum
//!    ([`Rolling`]) and answers with records `u32 index`, `u64 literal_len`
//!    and `literal_len` literal bytes ([`leader`]): the follower appends the
//!    literal bytes, then block `index` of its old copy. The record with
//!    index [`END_INDEX`] carries the last literal bytes and ends the
//!    exchange;
//! 3. the follower rebuilds the new version from its old copy and the
//!    records ([`follower`]).
//!
//! The weak checksum of bytes `X[k..=l]` is `a + (b << 16)` with
//! `a = sum(X) mod 2^16` and `b = sum((l - i + 1) * X[i]) mod 2^16`
//! (Tridgell's rolling checksum, see [`weak_checksum`]).
//!
//! Both algorithms work on any [`Read`]/[`Write`] channel; the old and new
//! files are [`Source`]s (something that can be read from an offset), so
//! the server plugs in its storage and the client plain files.
//!
//! ```
//! use uftp_client::sync::{BlockSums, follower, leader};
//!
//! let old = b"the quick brown fox jumps over the lazy dog".repeat(100);
//! let mut new = old.clone();
//! new[1000] = b'X';
//!
//! // follower -> leader: block checksums of the old copy
//! let sums = BlockSums::compute(&mut &old[..], 512)?;
//! let mut wire = Vec::new();
//! sums.write_to(&mut wire)?;
//!
//! // leader -> follower: records
//! let received = BlockSums::read_from(&mut &wire[..])?;
//! let mut records = Vec::new();
//! let sent = leader(&received, &new, &mut records)?;
//! assert_eq!(sent.literal_bytes, 512, "one changed block travels as literal data");
//!
//! // the follower rebuilds the new version
//! let mut rebuilt = Vec::new();
//! follower(&sums, &old, &mut &records[..], &mut rebuilt)?;
//! assert_eq!(rebuilt, new);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::io::{self, Read, Write};

use md5::{Digest, Md5};
use uftp_datachannel::read_full;

/// Block index of the last record.
pub const END_INDEX: u32 = 0xFFFF_FFFF;

/// Smallest default block size.
pub const MIN_BLOCK_SIZE: u32 = 512;

/// Largest block size [`default_block_size`] picks (files above 64 GiB get
/// more than 1000 blocks rather than huge blocks).
pub const MAX_DEFAULT_BLOCK_SIZE: u32 = 64 << 20;

/// Largest block size accepted from a peer (bounds the leader's memory
/// to about twice this).
pub const MAX_BLOCK_SIZE: u32 = MAX_DEFAULT_BLOCK_SIZE;

/// Bytes of one block checksum on the wire: `u64 weak` + 16-byte MD5.
pub const SUM_LEN: u64 = 24;

/// Errors of a sync exchange.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Reading from or writing to the peer failed.
    #[error("sync data channel: {0}")]
    Channel(io::Error),
    /// Reading or writing a local file failed.
    #[error("file: {0}")]
    File(io::Error),
    /// The peer sent something that is not a valid exchange.
    #[error("sync protocol error: {0}")]
    Protocol(String),
}

impl From<SyncError> for io::Error {
    fn from(e: SyncError) -> io::Error {
        match e {
            SyncError::Channel(e) | SyncError::File(e) => e,
            SyncError::Protocol(m) => io::Error::new(io::ErrorKind::InvalidData, m),
        }
    }
}

/// The follower's default block size for a file of `size` bytes:
/// max(size / 1000, 512), at most [`MAX_DEFAULT_BLOCK_SIZE`].
pub fn default_block_size(size: u64) -> u32 {
    let bs = (size / 1000).clamp(u64::from(MIN_BLOCK_SIZE), u64::from(MAX_DEFAULT_BLOCK_SIZE));
    u32::try_from(bs).unwrap_or(MAX_DEFAULT_BLOCK_SIZE)
}

/// The weak checksum of one block: `a + (b << 16)` (see the module
/// documentation); always below 2^32.
pub fn weak_checksum(block: &[u8]) -> u32 {
    Rolling::new(block).value()
}

/// The rolling checksum of a window of fixed length.
///
/// `a` and `b` are kept modulo 2^32 and reduced modulo 2^16 when the value
/// is taken, which gives the same result as reducing at every step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rolling {
    a: u32,
    b: u32,
    len: u32,
}

impl Rolling {
    /// The checksum of `window`.
    pub fn new(window: &[u8]) -> Rolling {
        let mut a = 0u32;
        let mut b = 0u32;
        // b = sum((len - i) * x_i): x_i is part of `a` for len - i steps.
        for &x in window {
            a = a.wrapping_add(u32::from(x));
            b = b.wrapping_add(a);
        }
        Rolling {
            a,
            b,
            len: window.len() as u32,
        }
    }

    /// `a + (b << 16)` with both reduced modulo 2^16.
    #[inline]
    pub fn value(&self) -> u32 {
        (self.a & 0xFFFF) | (self.b << 16)
    }

    /// Moves the window one byte on: `out` leaves at the front, `inb`
    /// enters at the back.
    #[inline]
    pub fn roll(&mut self, out: u8, inb: u8) {
        self.a = self
            .a
            .wrapping_sub(u32::from(out))
            .wrapping_add(u32::from(inb));
        self.b = self
            .b
            .wrapping_sub(self.len.wrapping_mul(u32::from(out)))
            .wrapping_add(self.a);
    }
}

/// Checksums of one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSum {
    /// Weak checksum as sent (`u64` on the wire; below 2^32 from a
    /// correct peer).
    pub weak: u64,
    /// MD5 of the block.
    pub strong: [u8; 16],
}

/// The follower's message: block size and the checksums of every block of
/// its old copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSums {
    /// Block size.
    pub block_size: u32,
    /// One entry per block, in file order.
    pub blocks: Vec<BlockSum>,
}

fn channel_eof(what: &str) -> SyncError {
    SyncError::Channel(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("sync data ended {what}"),
    ))
}

fn read_exact_channel(r: &mut dyn Read, buf: &mut [u8], what: &str) -> Result<(), SyncError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            channel_eof(what)
        } else {
            SyncError::Channel(e)
        }
    })
}

impl BlockSums {
    /// Checksums of everything `old` yields, in blocks of `block_size`
    /// bytes (the last one may be short).
    pub fn compute(old: &mut dyn Read, block_size: u32) -> Result<BlockSums, SyncError> {
        if block_size == 0 || block_size > MAX_BLOCK_SIZE {
            return Err(SyncError::Protocol(format!(
                "block size {block_size} out of range"
            )));
        }
        let mut buf = vec![0u8; block_size as usize];
        let mut blocks = Vec::new();
        loop {
            let n = read_full(old, &mut buf).map_err(SyncError::File)?;
            if n == 0 {
                break;
            }
            let block = &buf[..n];
            blocks.push(BlockSum {
                weak: u64::from(weak_checksum(block)),
                strong: Md5::digest(block).into(),
            });
            if n < buf.len() {
                break;
            }
        }
        if blocks.len() >= END_INDEX as usize {
            return Err(SyncError::Protocol(
                "file has too many blocks for one sync".into(),
            ));
        }
        Ok(BlockSums { block_size, blocks })
    }

    /// Bytes of this message on the wire.
    pub fn wire_len(&self) -> u64 {
        8 + SUM_LEN * self.blocks.len() as u64
    }

    /// Sends the message (big-endian). Does not flush.
    pub fn write_to(&self, w: &mut dyn Write) -> io::Result<u64> {
        let mut out = io::BufWriter::with_capacity(64 * 1024, w);
        out.write_all(&self.block_size.to_be_bytes())?;
        out.write_all(&(self.blocks.len() as u32).to_be_bytes())?;
        for b in &self.blocks {
            out.write_all(&b.weak.to_be_bytes())?;
            out.write_all(&b.strong)?;
        }
        out.flush()?;
        Ok(self.wire_len())
    }

    /// Reads the message. Rejects a block size of 0 or above
    /// [`MAX_BLOCK_SIZE`] and the reserved block count [`END_INDEX`].
    pub fn read_from(r: &mut dyn Read) -> Result<BlockSums, SyncError> {
        let mut head = [0u8; 8];
        read_exact_channel(r, &mut head, "before the block checksums")?;
        let block_size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let n = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if block_size == 0 || block_size > MAX_BLOCK_SIZE {
            return Err(SyncError::Protocol(format!(
                "block size {block_size} out of range (1..={MAX_BLOCK_SIZE})"
            )));
        }
        if n == END_INDEX {
            return Err(SyncError::Protocol("invalid block count".into()));
        }
        // Grows with what actually arrives: a bogus count costs the sender
        // the bytes, not us the memory.
        let mut blocks = Vec::with_capacity((n as usize).min(1 << 16));
        let mut rd = io::BufReader::with_capacity(64 * 1024, r);
        let mut rec = [0u8; SUM_LEN as usize];
        for _ in 0..n {
            read_exact_channel(&mut rd, &mut rec, "in the block checksums")?;
            let mut weak = [0u8; 8];
            weak.copy_from_slice(&rec[..8]);
            let mut strong = [0u8; 16];
            strong.copy_from_slice(&rec[8..]);
            blocks.push(BlockSum {
                weak: u64::from_be_bytes(weak),
                strong,
            });
        }
        if !rd.buffer().is_empty() {
            return Err(SyncError::Protocol(
                "unexpected data after the block checksums".into(),
            ));
        }
        Ok(BlockSums { block_size, blocks })
    }
}

/// A file that can be read from any offset, by opening a reader there.
pub trait Source {
    /// Size in bytes.
    fn size(&self) -> io::Result<u64>;
    /// A reader positioned at `offset`.
    fn open_at(&self, offset: u64) -> io::Result<Box<dyn Read + '_>>;
}

impl Source for &[u8] {
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }

    fn open_at(&self, offset: u64) -> io::Result<Box<dyn Read + '_>> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        Ok(Box::new(&self[start..]))
    }
}

impl Source for Vec<u8> {
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }

    fn open_at(&self, offset: u64) -> io::Result<Box<dyn Read + '_>> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        Ok(Box::new(&self[start..]))
    }
}

/// Positional reads of a shared file (`pread`): readers do not disturb
/// each other's offsets.
struct PositionalReader<'a> {
    file: &'a std::fs::File,
    pos: u64,
}

impl Read for PositionalReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Source for std::fs::File {
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn open_at(&self, offset: u64) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(PositionalReader {
            file: self,
            pos: offset,
        }))
    }
}

/// What one side did in a sync exchange.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Block size the follower chose.
    pub block_size: u32,
    /// Blocks of the follower's old copy.
    pub blocks: u64,
    /// Records sent (leader) or received (follower), the end record
    /// included.
    pub records: u64,
    /// Block references among them.
    pub matched_blocks: u64,
    /// Literal data bytes among them.
    pub literal_bytes: u64,
    /// Size of the new version.
    pub file_size: u64,
    /// Sync protocol bytes this side wrote to the channel.
    pub bytes_sent: u64,
    /// Sync protocol bytes this side read from the channel.
    pub bytes_received: u64,
}

impl std::fmt::Display for SyncStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes, block size {}, {} old blocks, {} matched, {} literal bytes, {} records, sent {} bytes, received {} bytes",
            self.file_size,
            self.block_size,
            self.blocks,
            self.matched_blocks,
            self.literal_bytes,
            self.records,
            self.bytes_sent,
            self.bytes_received
        )
    }
}

/// A forward-only reader over a [`Source`] that reopens it only when asked
/// for an offset other than where it stands.
struct Cursor<'a> {
    src: &'a dyn Source,
    reader: Option<Box<dyn Read + 'a>>,
    pos: u64,
}

impl<'a> Cursor<'a> {
    fn new(src: &'a dyn Source) -> Self {
        Cursor {
            src,
            reader: None,
            pos: 0,
        }
    }

    /// Copies exactly `len` bytes from `offset` to `out` (a channel when
    /// `out_is_channel`, else a file: that decides the error kind).
    fn copy(
        &mut self,
        offset: u64,
        len: u64,
        out: &mut dyn Write,
        buf: &mut [u8],
        out_is_channel: bool,
    ) -> Result<(), SyncError> {
        if len == 0 {
            return Ok(());
        }
        if self.reader.is_none() || self.pos != offset {
            self.reader = Some(self.src.open_at(offset).map_err(SyncError::File)?);
            self.pos = offset;
        }
        let Some(r) = self.reader.as_mut() else {
            return Err(SyncError::File(io::Error::other("no reader")));
        };
        let mut left = len;
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(buf.len()).min(buf.len());
            let n = match r.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(SyncError::File(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "file ended at {} while reading {len} bytes from {offset}",
                            offset + len - left
                        ),
                    )));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SyncError::File(e)),
            };
            out.write_all(&buf[..n]).map_err(|e| {
                if out_is_channel {
                    SyncError::Channel(e)
                } else {
                    SyncError::File(e)
                }
            })?;
            left -= n as u64;
            self.pos += n as u64;
        }
        Ok(())
    }
}

/// A bit set over weak checksums: most windows that match no block are
/// rejected without a hash map lookup.
struct Filter {
    bits: Vec<u64>,
}

impl Filter {
    const SHIFT: u32 = 32 - 21;

    fn new() -> Self {
        Filter {
            bits: vec![0u64; (1 << 21) / 64],
        }
    }

    #[inline]
    fn slot(weak: u32) -> usize {
        (weak.wrapping_mul(0x9E37_79B1) >> Self::SHIFT) as usize
    }

    fn insert(&mut self, weak: u32) {
        let s = Self::slot(weak);
        self.bits[s >> 6] |= 1 << (s & 63);
    }

    #[inline]
    fn may_contain(&self, weak: u32) -> bool {
        let s = Self::slot(weak);
        self.bits[s >> 6] & (1 << (s & 63)) != 0
    }
}

/// The leader's side of the exchange: writes to `out` the records that
/// turn the follower's old copy (described by `sums`) into `src`. Flushes
/// `out` at the end; finishing the channel is the caller's business.
pub fn leader(
    sums: &BlockSums,
    src: &dyn Source,
    out: &mut dyn Write,
) -> Result<SyncStats, SyncError> {
    if sums.block_size == 0 || sums.block_size > MAX_BLOCK_SIZE {
        return Err(SyncError::Protocol(format!(
            "block size {} out of range",
            sums.block_size
        )));
    }
    let size = src.size().map_err(SyncError::File)?;
    let mut stats = SyncStats {
        block_size: sums.block_size,
        blocks: sums.blocks.len() as u64,
        file_size: size,
        bytes_received: sums.wire_len(),
        ..SyncStats::default()
    };
    let mut out = io::BufWriter::with_capacity(256 * 1024, out);
    let mut emitter = Emitter {
        lit: Cursor::new(src),
        buf: vec![0u8; 256 * 1024],
        stats: &mut stats,
    };
    let bs = sums.block_size as usize;
    let bs64 = u64::from(sums.block_size);

    let mut map: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut filter = Filter::new();
    for (i, b) in sums.blocks.iter().enumerate() {
        // A weak sum of 2^32 or more cannot come from a correct peer and
        // matches nothing.
        if let Ok(w) = u32::try_from(b.weak) {
            map.entry(w).or_default().push(i as u32);
            filter.insert(w);
        }
    }

    let mut lit_start = 0u64;
    if !sums.blocks.is_empty() && size >= bs64 {
        let cap = bs + bs.max(1 << 20);
        let mut buf = vec![0u8; cap];
        let mut scan = src.open_at(0).map_err(SyncError::File)?.take(size);
        // buf[w..filled] holds file bytes from offset k on.
        let mut w = 0usize;
        let mut filled = 0usize;
        let mut k = 0u64;
        let mut fill =
            |buf: &mut Vec<u8>, w: &mut usize, filled: &mut usize| -> Result<(), SyncError> {
                buf.copy_within(*w..*filled, 0);
                *filled -= *w;
                *w = 0;
                *filled += read_full(&mut scan, &mut buf[*filled..]).map_err(SyncError::File)?;
                Ok(())
            };
        fill(&mut buf, &mut w, &mut filled)?;
        if filled < bs {
            return Err(SyncError::File(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while reading",
            )));
        }
        let mut roll = Rolling::new(&buf[..bs]);
        loop {
            let weak = roll.value();
            if filter.may_contain(weak)
                && let Some(cands) = map.get(&weak)
            {
                let strong: [u8; 16] = Md5::digest(&buf[w..w + bs]).into();
                let hint = k / bs64;
                let mut found: Option<u32> = None;
                for &c in cands {
                    if sums.blocks[c as usize].strong == strong {
                        if u64::from(c) == hint {
                            found = Some(c);
                            break;
                        }
                        found.get_or_insert(c);
                    }
                }
                if let Some(index) = found {
                    emitter.record(&mut out, lit_start, k, index)?;
                    k += bs64;
                    w += bs;
                    lit_start = k;
                    if k + bs64 > size {
                        break;
                    }
                    if w + bs > filled {
                        fill(&mut buf, &mut w, &mut filled)?;
                        if filled < bs {
                            return Err(SyncError::File(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "file shrank while reading",
                            )));
                        }
                    }
                    roll = Rolling::new(&buf[w..w + bs]);
                    continue;
                }
            }
            if k + bs64 >= size {
                break;
            }
            if w + bs >= filled {
                fill(&mut buf, &mut w, &mut filled)?;
                if w + bs >= filled {
                    return Err(SyncError::File(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while reading",
                    )));
                }
            }
            roll.roll(buf[w], buf[w + bs]);
            w += 1;
            k += 1;
        }
    }

    // The follower's last block may be short: look for it at the end of
    // what is left. A file shorter than one block goes as one record
    // (PROTOCOL.md section 8), so only behind whole blocks.
    let tail = size - lit_start;
    if let Some(last) = sums.blocks.last()
        && tail > 0
        && size >= bs64
        && let Ok(last_weak) = u32::try_from(last.weak)
    {
        let m = tail.min(bs64.saturating_sub(1));
        if m > 0 {
            let mut suffix = vec![0u8; m as usize];
            let mut r = src.open_at(size - m).map_err(SyncError::File)?;
            if read_full(&mut r, &mut suffix).map_err(SyncError::File)? != suffix.len() {
                return Err(SyncError::File(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while reading",
                )));
            }
            drop(r);
            // Checksums of ever longer suffixes: prepending x to a window
            // of length len - 1 adds x to a and len * x to b.
            let (mut a, mut b) = (0u32, 0u32);
            let mut matched = None;
            for (len, &x) in suffix.iter().rev().enumerate() {
                let len = len as u32 + 1;
                a = a.wrapping_add(u32::from(x));
                b = b.wrapping_add(len.wrapping_mul(u32::from(x)));
                if (a & 0xFFFF) | (b << 16) == last_weak {
                    let start = suffix.len() - len as usize;
                    let strong: [u8; 16] = Md5::digest(&suffix[start..]).into();
                    if strong == last.strong {
                        matched = Some(u64::from(len));
                        break;
                    }
                }
            }
            if let Some(len) = matched {
                let index = (sums.blocks.len() - 1) as u32;
                emitter.record(&mut out, lit_start, size - len, index)?;
                lit_start = size;
            }
        }
    }
    emitter.record(&mut out, lit_start, size, END_INDEX)?;
    out.flush().map_err(SyncError::Channel)?;
    drop(emitter);
    Ok(stats)
}

/// Writes the leader's records.
struct Emitter<'a, 's> {
    lit: Cursor<'a>,
    buf: Vec<u8>,
    stats: &'s mut SyncStats,
}

impl Emitter<'_, '_> {
    /// One record: literal bytes `[from, to)` of the file, then block
    /// `index` (or the end).
    fn record(
        &mut self,
        out: &mut dyn Write,
        from: u64,
        to: u64,
        index: u32,
    ) -> Result<(), SyncError> {
        let len = to - from;
        let mut head = [0u8; 12];
        head[..4].copy_from_slice(&index.to_be_bytes());
        head[4..].copy_from_slice(&len.to_be_bytes());
        out.write_all(&head).map_err(SyncError::Channel)?;
        self.lit.copy(from, len, out, &mut self.buf, true)?;
        self.stats.records += 1;
        self.stats.literal_bytes += len;
        self.stats.bytes_sent += 12 + len;
        if index != END_INDEX {
            self.stats.matched_blocks += 1;
        }
        Ok(())
    }
}

/// The follower's side after it sent `sums`: reads the leader's records
/// from `input` until the end record and writes the new version to `out`,
/// taking referenced blocks from `old` (the copy `sums` was computed
/// from). Flushes `out`; the caller commits it (renames a temporary file)
/// only when this returns `Ok`.
pub fn follower(
    sums: &BlockSums,
    old: &dyn Source,
    input: &mut dyn Read,
    out: &mut dyn Write,
) -> Result<SyncStats, SyncError> {
    let bs = u64::from(sums.block_size);
    let old_size = old.size().map_err(SyncError::File)?;
    let nblocks = sums.blocks.len() as u64;
    let mut stats = SyncStats {
        block_size: sums.block_size,
        blocks: nblocks,
        bytes_sent: sums.wire_len(),
        ..SyncStats::default()
    };
    let mut out = io::BufWriter::with_capacity(256 * 1024, out);
    let mut blocks = Cursor::new(old);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let mut head = [0u8; 12];
        read_exact_channel(input, &mut head, "before the end record")?;
        let index = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let mut l = [0u8; 8];
        l.copy_from_slice(&head[4..]);
        let len = u64::from_be_bytes(l);
        stats.records += 1;
        stats.bytes_received += 12 + len;
        stats.literal_bytes += len;
        // literal bytes
        let mut left = len;
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(buf.len()).min(buf.len());
            let n = match input.read(&mut buf[..want]) {
                Ok(0) => return Err(channel_eof("in the middle of literal data")),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SyncError::Channel(e)),
            };
            out.write_all(&buf[..n]).map_err(SyncError::File)?;
            left -= n as u64;
        }
        stats.file_size += len;
        if index == END_INDEX {
            break;
        }
        if u64::from(index) >= nblocks {
            return Err(SyncError::Protocol(format!(
                "block {index} referenced, but there are only {nblocks}"
            )));
        }
        let off = u64::from(index) * bs;
        let blen = bs.min(old_size.saturating_sub(off));
        blocks.copy(off, blen, &mut out, &mut buf, false)?;
        stats.matched_blocks += 1;
        stats.file_size += blen;
    }
    out.flush().map_err(SyncError::File)?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The formula of PROTOCOL.md section 8, written out the long way.
    fn reference_weak(x: &[u8], k: u64, l: u64) -> u64 {
        let mut a: u64 = 0;
        let mut b: u64 = 0;
        for i in k..=l {
            let xi = u64::from(x[i as usize]);
            a += xi;
            b += (l - i + 1) * xi;
        }
        (a % 65536) + ((b % 65536) << 16)
    }

    /// xorshift: deterministic test data without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn weak_checksum_matches_the_formula() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        // 0xFF bytes make a and b overflow 16 bits quickly.
        let mut data = vec![0xFFu8; 5000];
        data.extend(rng.bytes(5000));
        for &len in &[1usize, 2, 3, 511, 512, 513, 4096] {
            let mut r = Rolling::new(&data[..len]);
            for k in 0..(data.len() - len) {
                let l = k + len - 1;
                let want = reference_weak(&data, k as u64, l as u64);
                assert_eq!(u64::from(r.value()), want, "len {len} at {k}");
                assert_eq!(u64::from(weak_checksum(&data[k..=l])), want);
                r.roll(data[k], data[k + len]);
            }
        }
    }

    #[test]
    fn known_values() {
        assert_eq!(weak_checksum(b""), 0);
        // a = 97+98+99 = 294, b = 3*97 + 2*98 + 1*99 = 586
        assert_eq!(weak_checksum(b"abc"), 294 + (586 << 16));
        // sums wrap at 2^16
        let ff = [0xFFu8; 1000];
        let a = (255 * 1000) % 65536;
        let b = (255 * 1000 * 1001 / 2) % 65536;
        assert_eq!(u64::from(weak_checksum(&ff)), a + (b << 16));
        assert_eq!(default_block_size(0), 512);
        assert_eq!(default_block_size(1 << 30), 1_073_741);
        assert_eq!(default_block_size(u64::MAX), MAX_DEFAULT_BLOCK_SIZE);
    }

    #[test]
    fn wire_format_is_big_endian() {
        let sums = BlockSums::compute(&mut &b"abcdef"[..], 4).expect("sums");
        let mut wire = Vec::new();
        sums.write_to(&mut wire).expect("write");
        assert_eq!(wire.len(), 8 + 2 * 24);
        assert_eq!(&wire[..8], &[0, 0, 0, 4, 0, 0, 0, 2]);
        let w0 = u64::from(weak_checksum(b"abcd"));
        assert_eq!(&wire[8..16], &w0.to_be_bytes());
        assert_eq!(&wire[16..32], &<[u8; 16]>::from(Md5::digest(b"abcd")));
        let w1 = u64::from(weak_checksum(b"ef"));
        assert_eq!(&wire[32..40], &w1.to_be_bytes(), "short last block");
        assert_eq!(BlockSums::read_from(&mut &wire[..]).expect("read"), sums);
        // truncated, trailing garbage, bad sizes
        assert!(matches!(
            BlockSums::read_from(&mut &wire[..40]),
            Err(SyncError::Channel(_))
        ));
        let mut extra = wire.clone();
        extra.push(0);
        assert!(matches!(
            BlockSums::read_from(&mut &extra[..]),
            Err(SyncError::Protocol(_))
        ));
        assert!(matches!(
            BlockSums::read_from(&mut &[0u8, 0, 0, 0, 0, 0, 0, 0][..]),
            Err(SyncError::Protocol(_))
        ));
        let mut huge = (MAX_BLOCK_SIZE + 1).to_be_bytes().to_vec();
        huge.extend_from_slice(&[0, 0, 0, 0]);
        assert!(
            matches!(
                BlockSums::read_from(&mut &huge[..]),
                Err(SyncError::Protocol(_))
            ),
            "a block size that would cost the leader too much memory"
        );
    }

    fn roundtrip(old: &[u8], new: &[u8], bs: u32) -> (SyncStats, SyncStats) {
        let sums = BlockSums::compute(&mut &old[..], bs).expect("sums");
        let mut wire = Vec::new();
        sums.write_to(&mut wire).expect("write sums");
        let got = BlockSums::read_from(&mut &wire[..]).expect("read sums");
        let mut records = Vec::new();
        let ls = leader(&got, &new, &mut records).expect("leader");
        assert_eq!(ls.bytes_sent, records.len() as u64);
        let mut rebuilt = Vec::new();
        let fs = follower(&sums, &old, &mut &records[..], &mut rebuilt).expect("follower");
        assert!(
            rebuilt == new,
            "rebuilt file differs (old {} new {} bs {bs})",
            old.len(),
            new.len()
        );
        assert_eq!(fs.file_size, new.len() as u64);
        assert_eq!(fs.literal_bytes, ls.literal_bytes);
        assert_eq!(fs.matched_blocks, ls.matched_blocks);
        assert_eq!(fs.bytes_received, ls.bytes_sent);
        (ls, fs)
    }

    #[test]
    fn identical_files_send_no_literal_data() {
        let mut rng = Rng(7);
        for &n in &[0usize, 512, 513, 1024, 5000, 100_000] {
            let data = rng.bytes(n);
            let (ls, _) = roundtrip(&data, &data, 512);
            assert_eq!(ls.literal_bytes, 0, "size {n}");
            assert_eq!(ls.matched_blocks, n.div_ceil(512) as u64, "size {n}");
        }
        // shorter than one block: the file itself, as the one end record
        for &n in &[1usize, 511] {
            let data = rng.bytes(n);
            let (ls, _) = roundtrip(&data, &data, 512);
            assert_eq!(ls.literal_bytes, n as u64, "size {n}");
            assert_eq!(ls.matched_blocks, 0, "size {n}");
        }
    }

    #[test]
    fn edge_cases() {
        let mut rng = Rng(99);
        let data = rng.bytes(3000);
        // empty old copy: everything is literal, in the one end record
        let (ls, _) = roundtrip(&[], &data, 512);
        assert_eq!((ls.records, ls.literal_bytes), (1, 3000));
        // empty new version
        let (ls, _) = roundtrip(&data, &[], 512);
        assert_eq!((ls.records, ls.literal_bytes), (1, 0));
        // new version shorter than a block
        let (ls, _) = roundtrip(&data, &data[..100], 512);
        assert_eq!(ls.literal_bytes, 100);
        // a short last block that still matches after an inserted prefix
        let mut shifted = b"prefix".to_vec();
        shifted.extend_from_slice(&data);
        let (ls, _) = roundtrip(&data, &shifted, 512);
        assert_eq!(ls.literal_bytes, 6);
        // block size 1
        roundtrip(&data[..50], &data[10..70], 1);
    }

    #[test]
    fn scattered_changes_cost_one_block_each() {
        let mut rng = Rng(42);
        let bs = 4096u32;
        let old = rng.bytes(8 << 20);
        let mut new = old.clone();
        let blocks = old.len() / bs as usize;
        for i in [3usize, 500, 1501, blocks - 2] {
            new[i * bs as usize + 100] ^= 0x55;
        }
        let (ls, _) = roundtrip(&old, &new, bs);
        assert_eq!(ls.literal_bytes, 4 * u64::from(bs));
        // an inserted and a deleted byte cost about a block each
        let mut new = old.clone();
        new.insert(1000 * bs as usize + 7, 0xAA);
        new.remove(1800 * bs as usize);
        let (ls, _) = roundtrip(&old, &new, bs);
        assert!(ls.literal_bytes <= 2 * u64::from(bs) + 1, "{ls:?}");
    }

    #[test]
    fn random_edits_roundtrip() {
        let mut rng = Rng(0xdead_beef);
        for round in 0..60 {
            let n = rng.below(20_000);
            let old = if round % 5 == 0 {
                vec![0u8; n] // runs of equal blocks
            } else {
                rng.bytes(n)
            };
            let mut new = old.clone();
            for _ in 0..rng.below(6) {
                match rng.below(3) {
                    0 if !new.is_empty() => {
                        let i = rng.below(new.len());
                        new[i] = new[i].wrapping_add(1);
                    }
                    1 => {
                        let i = rng.below(new.len() + 1);
                        let k = rng.below(700);
                        let ins = rng.bytes(k);
                        new.splice(i..i, ins);
                    }
                    _ if !new.is_empty() => {
                        let i = rng.below(new.len());
                        let j = (i + rng.below(700)).min(new.len());
                        new.drain(i..j);
                    }
                    _ => {}
                }
            }
            let bs = [1u32, 7, 64, 512][rng.below(4)];
            roundtrip(&old, &new, bs);
        }
    }

    #[test]
    fn follower_rejects_bad_records() {
        let old = vec![1u8; 2048];
        let sums = BlockSums::compute(&mut &old[..], 512).expect("sums");
        let mut out = Vec::new();
        // block 4 of 4 blocks
        let mut rec = Vec::new();
        rec.extend_from_slice(&4u32.to_be_bytes());
        rec.extend_from_slice(&0u64.to_be_bytes());
        assert!(matches!(
            follower(&sums, &old, &mut &rec[..], &mut out),
            Err(SyncError::Protocol(_))
        ));
        // ends without the end record
        let mut rec = Vec::new();
        rec.extend_from_slice(&0u32.to_be_bytes());
        rec.extend_from_slice(&3u64.to_be_bytes());
        rec.extend_from_slice(b"abc");
        assert!(matches!(
            follower(&sums, &old, &mut &rec[..], &mut out),
            Err(SyncError::Channel(_))
        ));
    }
}
