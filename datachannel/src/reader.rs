//! The receiving side of a data channel.
//!
//! One worker per TCP stream reads its stream (through the codecs) in
//! large pieces, cuts them into frames where the stream is framed, and
//! hands over every frame of a read in ONE message (a buffer plus the
//! positions of its frames). The caller's `read` copies payloads from
//! those buffers straight into its own buffer, across frames and streams,
//! until the buffer is full or nothing more has arrived; `fill_buf` of a
//! single-stream codec channel hands out the received buffers themselves.

use std::io::{self, BufRead, IoSlice, Read, Write};
use std::mem;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::thread;

use crate::frame::{FrameHeader, HEADER_LEN, MAX_ACCEPT_BLOCK, chunk_range};
use crate::iobuf::AlignedReader;
use crate::shared::{Shared, write_all_vectored};
use crate::stack::CodecStack;
use crate::stream::SourceStream;
use crate::writer::check_count;
use crate::{ChannelError, ChannelOptions};

/// Where a frame's payload lies in a chunk's buffer.
#[derive(Debug, Clone, Copy)]
struct FrameRef {
    off: usize,
    len: usize,
    seq: u32,
    size: u32,
}

/// What a worker hands over: a buffer and either the frames in it
/// (framed) or `len` bytes of the stream (single stream). Recycled.
#[derive(Default)]
struct Chunk {
    buf: Vec<u8>,
    frames: Vec<FrameRef>,
    len: usize,
}

enum Msg {
    Data(Chunk),
    /// Verified end of this stream (at a frame boundary when framed).
    Eof,
}

/// Buffer under a codec stack, for codecs that make small reads; reads of
/// at least this size pass straight through to the socket.
const CODEC_SOURCE_BUFFER: usize = 8 * 1024;

/// The reading end of a data channel: `n` TCP streams with their codecs
/// in, ONE byte stream out.
///
/// Read it to the end: `Ok(0)` comes only at the verified end of the
/// transfer (every codec trailer checked, stream 0 ended at a frame
/// boundary and all other streams ended with it). Truncated or corrupt
/// input is an error (`UnexpectedEof` or `InvalidData`, with the stream
/// index in the message), never a silently short result. It also
/// implements [`BufRead`]; with one stream and codecs, `fill_buf` hands out
/// the received buffers without a copy.
///
/// With one stream and no codec it reads the socket in the caller's
/// thread. Otherwise one worker thread per TCP stream reads and decodes
/// that stream into recycled buffers, through bounded queues. A `read`
/// fills as much of the caller's buffer as has arrived (blocking only
/// while nothing has), so large reads mean few calls. Dropping the
/// reader before the end breaks all streams.
pub struct DataReader {
    imp: Imp,
}

impl std::fmt::Debug for DataReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.imp {
            Imp::Direct(_) => f.write_str("DataReader(direct)"),
            Imp::Piped(p) => write!(f, "DataReader({} streams, pipelined)", p.lanes.len()),
        }
    }
}

enum Imp {
    Direct(AlignedReader<Box<dyn Read + Send>>),
    Piped(Piped),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Eof,
    Failed,
}

/// The caller's end of one stream's worker.
struct Lane {
    rx: Receiver<Msg>,
    recycle: Sender<Chunk>,
    /// Chunk being consumed.
    cur: Option<Chunk>,
    /// Index of the current frame in `cur` (framed).
    frame: usize,
    /// Bytes of the current frame (framed) or of `cur` (single) consumed.
    pos: usize,
}

impl Lane {
    /// Gives the current chunk up: to `retire`, which returns it if it is
    /// to be recycled now (or keeps it while something still refers to it).
    fn release(&mut self, i: usize, retire: &mut Retire<'_>) {
        if let Some(c) = self.cur.take()
            && let Some(mut c) = retire(i, c)
        {
            c.frames.clear();
            c.len = 0;
            let _ = self.recycle.send(c);
        }
        self.frame = 0;
        self.pos = 0;
    }
}

/// What happens to a consumed chunk of stream `i`: `Some` = recycle it.
type Retire<'a> = dyn FnMut(usize, Chunk) -> Option<Chunk> + 'a;

/// Recycle consumed chunks at once.
fn recycle_now(_: usize, c: Chunk) -> Option<Chunk> {
    Some(c)
}

/// Where a slice gathered by `write_to` lies: in the current chunk of a
/// stream, or in a consumed chunk kept until the write is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Src {
    Lane(usize),
    Held(usize),
}

/// Largest number of slices one `write_to` gathers (IOV_MAX).
const MAX_SLICES: usize = 1024;

struct Piped {
    lanes: Vec<Lane>,
    shared: Arc<Shared>,
    /// Stream whose frame comes next.
    next: usize,
    /// Whether the current frame of `next` was checked against stream 0.
    checked: bool,
    block_seq: u32,
    block_size: u32,
    framed: bool,
    state: State,
    /// `fill_buf` of a framed channel: frames put together here.
    asm: Vec<u8>,
    asm_pos: usize,
    asm_end: usize,
    asm_size: usize,
}

impl DataReader {
    /// Builds the reader over `streams` (stream `i` of the channel at index
    /// `i`) with `stack` on each. An empty `streams` is an error.
    pub fn new<S: SourceStream>(
        streams: Vec<S>,
        stack: &CodecStack,
        options: &ChannelOptions,
    ) -> Result<DataReader, ChannelError> {
        let n = streams.len();
        check_count(n)?;
        if n == 1 && stack.is_plain() {
            let Some(s) = streams.into_iter().next() else {
                return Err(ChannelError::NoStreams);
            };
            let b: Box<dyn Read + Send> = Box::new(s);
            return Ok(DataReader {
                imp: Imp::Direct(AlignedReader::with_capacity(
                    options.single_stream_buffer.max(HEADER_LEN),
                    b,
                )),
            });
        }
        let aborts = streams.iter().filter_map(|s| s.abort_handle()).collect();
        let shared = Arc::new(Shared::new(aborts));
        let mut decoders = Vec::with_capacity(n);
        // the socket of a single codec stream, polled (never read) to see
        // whether more has arrived for the same hand-off
        let ready_fd = if n == 1 {
            streams.first().and_then(SourceStream::raw_fd)
        } else {
            None
        };
        for (i, s) in streams.into_iter().enumerate() {
            let src: Box<dyn Read + Send> = if stack.is_plain() {
                // The framed worker reads large pieces itself.
                Box::new(s)
            } else {
                Box::new(AlignedReader::with_capacity(CODEC_SOURCE_BUFFER, s))
            };
            decoders.push(stack.decoder(i, n, src)?);
        }
        // Each worker reads up to a batch at a time: with several streams,
        // larger reads mean fewer hand-offs to the caller and longer
        // `writev`s of the arrived frames (1 MiB instead of 256 KiB: ~20 %
        // less CPU per GiB for 2-4 stream uploads).
        let buf_size = options.batch_size.max(4096);
        let mut lanes = Vec::with_capacity(n);
        for (i, dec) in decoders.into_iter().enumerate() {
            let (tx, rx) = mpsc::sync_channel(options.queue_depth.max(1));
            let (rtx, rrx) = mpsc::channel();
            let sh = shared.clone();
            let spawned = thread::Builder::new()
                .name(format!("uftp-dc-r{i}"))
                .spawn(move || {
                    let r = if n > 1 {
                        framed_worker(i, n, dec, buf_size, &tx, &rrx)
                    } else {
                        single_worker(dec, ready_fd, buf_size, &tx, &rrx)
                    };
                    if let Err(e) = r {
                        sh.fail(Some(i), &e);
                    }
                });
            if let Err(e) = spawned {
                shared.abort_all();
                return Err(ChannelError::Io(e));
            }
            lanes.push(Lane {
                rx,
                recycle: rtx,
                cur: None,
                frame: 0,
                pos: 0,
            });
        }
        Ok(DataReader {
            imp: Imp::Piped(Piped {
                lanes,
                shared,
                next: 0,
                checked: false,
                block_seq: 0,
                block_size: 0,
                framed: n > 1,
                state: State::Running,
                asm: Vec::new(),
                asm_pos: 0,
                asm_end: 0,
                asm_size: options.batch_size.max(4096),
            }),
        })
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn take_chunk(rrx: &Receiver<Chunk>, min_len: usize) -> Chunk {
    let mut c = rrx.try_recv().unwrap_or_default();
    if c.buf.is_empty() {
        // Zeroed by the allocator (fresh pages), not by a fill loop.
        c.buf = vec![0; min_len];
    } else if c.buf.len() < min_len {
        c.buf.resize(min_len, 0);
    }
    c
}

fn read_some(src: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match src.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// Checks a frame header of stream `i` of `n` where block `seq` is due.
pub(crate) fn check_header(h: &[u8], i: usize, n: usize, seq: u32) -> io::Result<FrameHeader> {
    let mut a = [0u8; HEADER_LEN];
    a.copy_from_slice(&h[..HEADER_LEN]);
    let f = FrameHeader::decode(&a)?;
    if usize::from(f.stream) != i {
        return Err(invalid(format!(
            "frame for stream {} arrived on stream {i}",
            f.stream
        )));
    }
    if f.seq != seq {
        return Err(invalid(format!(
            "frame sequence number {} where {seq} was expected",
            f.seq
        )));
    }
    let size = f.size as usize;
    if size > MAX_ACCEPT_BLOCK {
        return Err(invalid(format!(
            "block size {size} exceeds the limit of {MAX_ACCEPT_BLOCK}"
        )));
    }
    let (_, len) = chunk_range(size, n, i);
    if f.len as usize != len {
        return Err(invalid(format!(
            "frame length {} does not match block size {size} over {n} streams (expected {len})",
            f.len
        )));
    }
    Ok(f)
}

/// Worker of stream `i` of `n` (framed): reads large pieces, hands over
/// the complete frames of each read in one message and carries a partial
/// frame over to the next buffer.
fn framed_worker(
    i: usize,
    n: usize,
    mut src: Box<dyn Read + Send>,
    buf_size: usize,
    tx: &SyncSender<Msg>,
    rrx: &Receiver<Chunk>,
) -> io::Result<()> {
    let mut seq: u32 = 0;
    let mut chunk = take_chunk(rrx, buf_size);
    // chunk.buf[parsed..filled]: bytes read but not yet cut into frames.
    let mut filled = 0;
    let mut parsed = 0;
    // Length and block size of the frame whose header has been checked
    // but whose payload is incomplete.
    let mut pending: Option<(usize, u32)> = None;
    loop {
        // Cut complete frames.
        let need = loop {
            let avail = filled - parsed;
            let (len, size) = match pending {
                Some(p) => p,
                None => {
                    if avail < HEADER_LEN {
                        break HEADER_LEN;
                    }
                    let f = check_header(&chunk.buf[parsed..], i, n, seq)?;
                    let p = (f.len as usize, f.size);
                    pending = Some(p);
                    p
                }
            };
            if avail < HEADER_LEN + len {
                break HEADER_LEN + len;
            }
            chunk.frames.push(FrameRef {
                off: parsed + HEADER_LEN,
                len,
                seq,
                size,
            });
            pending = None;
            parsed += HEADER_LEN + len;
            seq = seq.wrapping_add(1);
        };
        if !chunk.frames.is_empty() {
            // Hand over; the partial frame (if any) starts the next buffer.
            let tail = filled - parsed;
            let mut next = take_chunk(rrx, buf_size.max(need));
            next.buf[..tail].copy_from_slice(&chunk.buf[parsed..filled]);
            if tx.send(Msg::Data(mem::replace(&mut chunk, next))).is_err() {
                return Ok(()); // reader gone
            }
            filled = tail;
            parsed = 0;
        } else if chunk.buf.len() - parsed < need {
            // One frame larger than the buffer (a peer's big blocks).
            chunk.buf.resize(parsed + need, 0);
        }
        let r = read_some(&mut *src, &mut chunk.buf[filled..])?;
        if r == 0 {
            let left = filled - parsed;
            if left == 0 {
                let _ = tx.send(Msg::Eof);
                return Ok(());
            }
            return Err(match pending {
                None => io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("stream ended inside a frame header ({left} of {HEADER_LEN} bytes)"),
                ),
                Some((len, _)) => io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("stream ended inside block {seq} (frame of {len} bytes)"),
                ),
            });
        }
        filled += r;
    }
}

/// Room left in a chunk below which a worker hands it over rather than
/// reading more into it (one codec record or gzip output buffer).
const MORE_ROOM: usize = 64 * 1024 + 64;

/// Whether `fd` has something to read right now.
fn readable_now(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one initialised pollfd on the stack and a count of 1; poll
    // only writes its `revents`. A zero timeout never blocks. The
    // descriptor belongs to the stream under the decoder, which the worker
    // owns for as long as this is called (and poll on a stale descriptor
    // would only report POLLNVAL, not touch memory).
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r > 0 && p.revents & libc::POLLIN != 0
}

/// Worker of a single-stream codec channel: a decoder read per message,
/// plus further reads into the same message while the socket already has
/// more (fewer hand-offs and larger writes on the other side; it never
/// waits for data that has not arrived, which a request/response exchange
/// over the channel, like sync, would stall on).
fn single_worker(
    mut src: Box<dyn Read + Send>,
    ready_fd: Option<RawFd>,
    buf_size: usize,
    tx: &SyncSender<Msg>,
    rrx: &Receiver<Chunk>,
) -> io::Result<()> {
    loop {
        let mut c = take_chunk(rrx, buf_size);
        let mut len = read_some(&mut *src, &mut c.buf)?;
        if let Some(fd) = ready_fd {
            while len > 0 && c.buf.len() - len >= MORE_ROOM && readable_now(fd) {
                match read_some(&mut *src, &mut c.buf[len..])? {
                    0 => break, // the end: reported by the next read
                    k => len += k,
                }
            }
        }
        let msg = if len == 0 {
            Msg::Eof
        } else {
            c.len = len;
            Msg::Data(c)
        };
        let eof = matches!(msg, Msg::Eof);
        if tx.send(msg).is_err() || eof {
            return Ok(());
        }
    }
}

impl Piped {
    fn fail(&mut self, e: io::Error) -> io::Error {
        self.state = State::Failed;
        self.shared.fail(None, &e);
        self.shared.error("")
    }

    fn stopped(&mut self) -> io::Error {
        self.state = State::Failed;
        self.shared.error("data channel worker stopped")
    }

    /// Lane `i`'s current frame, its header checked once.
    fn current_frame(&mut self, i: usize) -> io::Result<Option<FrameRef>> {
        let Some(f) = self.lanes[i]
            .cur
            .as_ref()
            .map(|c| c.frames[self.lanes[i].frame])
        else {
            return Ok(None);
        };
        if !self.checked {
            self.check_frame(f)?;
        }
        Ok(Some(f))
    }

    /// `k` more bytes of lane `i`'s current frame (of `len` payload bytes)
    /// were handed out; at its end, moves on to the next stream's frame
    /// (and the next block after the last stream).
    fn consumed(&mut self, i: usize, k: usize, len: usize) {
        let lane = &mut self.lanes[i];
        lane.pos += k;
        if lane.pos == len {
            lane.frame += 1;
            lane.pos = 0;
            self.checked = false;
            self.next = (i + 1) % self.lanes.len();
            if self.next == 0 {
                self.block_seq = self.block_seq.wrapping_add(1);
            }
        }
    }

    /// Makes the current frame (framed) or chunk (single) of stream `i`
    /// available. `Ok(false)`: nothing has arrived and `block` is false,
    /// or the verified end was reached (`state` is then `Eof`).
    fn ready(&mut self, i: usize, block: bool) -> io::Result<bool> {
        self.ready_with(i, block, &mut recycle_now)
    }

    /// `ready`, handing consumed chunks to `retire`.
    fn ready_with(&mut self, i: usize, block: bool, retire: &mut Retire<'_>) -> io::Result<bool> {
        match self.state {
            State::Eof => return Ok(false),
            State::Failed => return Err(self.shared.error("data channel failed")),
            State::Running => {}
        }
        loop {
            let framed = self.framed;
            let lane = &mut self.lanes[i];
            if let Some(c) = &lane.cur {
                let more = if framed {
                    lane.frame < c.frames.len()
                } else {
                    lane.pos < c.len
                };
                if more {
                    return Ok(true);
                }
                lane.release(i, retire);
            }
            let msg = if block {
                match lane.rx.recv() {
                    Ok(m) => m,
                    Err(_) => return Err(self.stopped()),
                }
            } else {
                match lane.rx.try_recv() {
                    Ok(m) => m,
                    Err(TryRecvError::Empty) => return Ok(false),
                    Err(TryRecvError::Disconnected) => return Err(self.stopped()),
                }
            };
            match msg {
                Msg::Data(c) => {
                    lane.cur = Some(c);
                    lane.frame = 0;
                    lane.pos = 0;
                }
                Msg::Eof => {
                    self.at_eof(i, retire)?;
                    return Ok(false);
                }
            }
        }
    }

    /// Stream `i` ended where its next frame (or data) was due.
    fn at_eof(&mut self, i: usize, retire: &mut Retire<'_>) -> io::Result<()> {
        if i != 0 {
            let e = io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "data stream {i}: ended in block {} that stream 0 had sent",
                    self.block_seq
                ),
            );
            return Err(self.fail(e));
        }
        for j in 1..self.lanes.len() {
            let leftover = self.lanes[j]
                .cur
                .as_ref()
                .is_some_and(|c| self.lanes[j].frame < c.frames.len());
            let msg = if leftover {
                Ok(Msg::Data(Chunk::default()))
            } else {
                self.lanes[j].release(j, retire);
                self.lanes[j].rx.recv()
            };
            match msg {
                Ok(Msg::Eof) => {}
                Ok(Msg::Data(_)) => {
                    let e = invalid(format!("data stream {j}: more data after stream 0 ended"));
                    return Err(self.fail(e));
                }
                Err(_) => return Err(self.stopped()),
            }
        }
        if self.shared.has_failed() {
            self.state = State::Failed;
            return Err(self.shared.error("data channel failed"));
        }
        self.state = State::Eof;
        Ok(())
    }

    /// Checks the current frame of stream `next` against stream 0's.
    fn check_frame(&mut self, f: FrameRef) -> io::Result<()> {
        let i = self.next;
        if i == 0 {
            self.block_size = f.size;
        } else if f.size != self.block_size || f.seq != self.block_seq {
            let e = invalid(format!(
                "data stream {i}: block {} of {} bytes where stream 0 \
                 sent block {} of {} bytes",
                f.seq, f.size, self.block_seq, self.block_size
            ));
            return Err(self.fail(e));
        }
        self.checked = true;
        Ok(())
    }

    /// Copies as much data as has arrived into `out`, blocking only while
    /// nothing has. `Ok(0)` only at the verified end (or for an empty
    /// `out`).
    fn copy_out(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < out.len() {
            match self.state {
                State::Eof => break,
                State::Failed => return Err(self.shared.error("data channel failed")),
                State::Running => {}
            }
            let i = self.next;
            if !self.ready(i, done == 0)? {
                break;
            }
            if self.framed {
                let Some(f) = self.current_frame(i)? else {
                    break;
                };
                let lane = &mut self.lanes[i];
                let k = (f.len - lane.pos).min(out.len() - done);
                if let Some(c) = &lane.cur {
                    let from = f.off + lane.pos;
                    out[done..done + k].copy_from_slice(&c.buf[from..from + k]);
                }
                done += k;
                self.consumed(i, k, f.len);
            } else {
                let lane = &mut self.lanes[0];
                if let Some(c) = &lane.cur {
                    let k = (c.len - lane.pos).min(out.len() - done);
                    out[done..done + k].copy_from_slice(&c.buf[lane.pos..lane.pos + k]);
                    lane.pos += k;
                    done += k;
                }
            }
        }
        Ok(done)
    }

    /// Writes what has arrived (blocking while nothing has) to `out`, at
    /// most `max` bytes, with vectored writes straight from the received
    /// buffers. Everything gathered is written before it returns.
    fn write_to(&mut self, out: &mut dyn Write, max: usize) -> io::Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        if self.asm_pos < self.asm_end {
            // Left over from fill_buf.
            let k = (self.asm_end - self.asm_pos).min(max);
            out.write_all(&self.asm[self.asm_pos..self.asm_pos + k])?;
            self.asm_pos += k;
            return Ok(k);
        }
        if !self.framed {
            if !self.ready(0, true)? {
                return Ok(0);
            }
            let lane = &mut self.lanes[0];
            let Some(c) = &lane.cur else {
                return Ok(0);
            };
            let k = (c.len - lane.pos).min(max);
            out.write_all(&c.buf[lane.pos..lane.pos + k])?;
            lane.pos += k;
            return Ok(k);
        }
        let mut recs: Vec<(Src, usize, usize)> = Vec::new();
        let mut held: Vec<(usize, Chunk)> = Vec::new();
        let gathered = self.gather(max, &mut recs, &mut held);
        let written = gathered.and_then(|total| {
            let mut slices = Vec::with_capacity(recs.len());
            for &(src, off, len) in &recs {
                let buf = match src {
                    Src::Lane(i) => self.lanes[i].cur.as_ref().map(|c| &c.buf),
                    Src::Held(k) => held.get(k).map(|h| &h.1.buf),
                };
                let Some(buf) = buf else {
                    return Err(io::Error::other("data channel reader lost a buffer"));
                };
                slices.push(IoSlice::new(&buf[off..off + len]));
            }
            write_all_vectored(out, &mut slices, "the received data")?;
            Ok(total)
        });
        for (i, mut c) in held {
            c.frames.clear();
            c.len = 0;
            let _ = self.lanes[i].recycle.send(c);
        }
        written
    }

    /// Consumes up to `max` bytes of frames, recording where they lie;
    /// chunks used up meanwhile go to `held`.
    fn gather(
        &mut self,
        max: usize,
        recs: &mut Vec<(Src, usize, usize)>,
        held: &mut Vec<(usize, Chunk)>,
    ) -> io::Result<usize> {
        let mut total = 0;
        while total < max && recs.len() < MAX_SLICES {
            match self.state {
                State::Eof => break,
                State::Failed => return Err(self.shared.error("data channel failed")),
                State::Running => {}
            }
            let i = self.next;
            let block = recs.is_empty();
            let mut keep = |j: usize, c: Chunk| {
                if !recs.iter().any(|r| r.0 == Src::Lane(j)) {
                    return Some(c);
                }
                let k = held.len();
                held.push((j, c));
                for r in recs.iter_mut().filter(|r| r.0 == Src::Lane(j)) {
                    r.0 = Src::Held(k);
                }
                None
            };
            if !self.ready_with(i, block, &mut keep)? {
                break;
            }
            let Some(f) = self.current_frame(i)? else {
                break;
            };
            let lane = &mut self.lanes[i];
            let k = (f.len - lane.pos).min(max - total);
            if k > 0 {
                recs.push((Src::Lane(i), f.off + lane.pos, k));
            }
            total += k;
            self.consumed(i, k, f.len);
        }
        Ok(total)
    }
}

impl DataReader {
    /// Writes the data that has arrived to `out`, at most `max` bytes,
    /// blocking only while nothing has; returns the bytes written, `Ok(0)`
    /// only at the verified end (or for `max == 0`).
    ///
    /// No copy on the way: a multi-stream channel hands `out` ONE vectored
    /// write (`writev` for a file) of the frame payloads in the received
    /// buffers, in order, across frames and streams (up to 1024 slices); a
    /// single codec stream writes its decoded buffer. Whatever was taken
    /// from the channel is written before this returns, so an error comes
    /// either from the channel or from `out` (tell them apart by wrapping
    /// `out`).
    pub fn write_to(&mut self, out: &mut dyn Write, max: usize) -> io::Result<usize> {
        match &mut self.imp {
            Imp::Direct(r) => {
                let b = r.fill_buf()?;
                let k = b.len().min(max);
                out.write_all(&b[..k])?;
                r.consume(k);
                Ok(k)
            }
            Imp::Piped(p) => p.write_to(out, max),
        }
    }
}

impl Read for DataReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.imp {
            Imp::Direct(r) => r.read(buf),
            Imp::Piped(p) => {
                if buf.is_empty() {
                    return Ok(0);
                }
                if p.asm_pos < p.asm_end {
                    // Left over from fill_buf.
                    let k = (p.asm_end - p.asm_pos).min(buf.len());
                    buf[..k].copy_from_slice(&p.asm[p.asm_pos..p.asm_pos + k]);
                    p.asm_pos += k;
                    return Ok(k);
                }
                p.copy_out(buf)
            }
        }
    }
}

impl BufRead for DataReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        match &mut self.imp {
            Imp::Direct(r) => r.fill_buf(),
            Imp::Piped(p) => {
                if !p.framed {
                    // Hand out the received buffer itself.
                    if !p.ready(0, true)? {
                        return Ok(&[]);
                    }
                    let lane = &p.lanes[0];
                    return Ok(match &lane.cur {
                        Some(c) => &c.buf[lane.pos..c.len],
                        None => &[],
                    });
                }
                if p.asm_pos == p.asm_end {
                    let mut asm = mem::take(&mut p.asm);
                    if asm.len() < p.asm_size {
                        asm.resize(p.asm_size, 0);
                    }
                    let r = p.copy_out(&mut asm);
                    p.asm = asm;
                    p.asm_pos = 0;
                    p.asm_end = r?;
                }
                Ok(&p.asm[p.asm_pos..p.asm_end])
            }
        }
    }

    fn consume(&mut self, amt: usize) {
        match &mut self.imp {
            Imp::Direct(r) => r.consume(amt),
            Imp::Piped(p) => {
                if p.framed {
                    p.asm_pos = (p.asm_pos + amt).min(p.asm_end);
                } else {
                    let lane = &mut p.lanes[0];
                    if let Some(c) = &lane.cur {
                        lane.pos = (lane.pos + amt).min(c.len);
                    }
                }
            }
        }
    }
}

impl Drop for DataReader {
    fn drop(&mut self) {
        if let Imp::Piped(p) = &self.imp
            && p.state != State::Eof
        {
            p.shared.abort_all();
        }
    }
}
