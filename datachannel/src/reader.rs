//! The receiving side of a data channel.

use std::io::{self, BufRead, BufReader, Read};
use std::mem;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread;

use crate::frame::{FrameHeader, HEADER_LEN, MAX_ACCEPT_BLOCK, chunk_range};
use crate::shared::Shared;
use crate::stack::CodecStack;
use crate::stream::SourceStream;
use crate::writer::check_count;
use crate::{ChannelError, ChannelOptions};

enum Msg {
    /// A frame payload (framed) or a piece of the stream (single stream).
    Data {
        seq: u32,
        size: u32,
        buf: Vec<u8>,
        len: usize,
    },
    /// Verified end of this stream at a frame boundary.
    Eof,
}

/// The reading end of a data channel: `n` TCP streams with their codecs
/// in, ONE byte stream out.
///
/// Read it to the end: `Ok(0)` comes only at the verified end of the
/// transfer (every codec trailer checked, stream 0 ended at a frame
/// boundary and all other streams ended with it). Truncated or corrupt
/// input is an error (`UnexpectedEof` or `InvalidData`, with the stream
/// index in the message), never a silently short result. It also
/// implements [`BufRead`], which hands out the received buffers without a
/// copy.
///
/// With one stream and no codec it reads the socket in the caller's
/// thread. Otherwise one worker thread per TCP stream reads and decodes
/// that stream into recycled buffers, through bounded queues. Dropping the
/// reader before the end breaks all streams.
pub struct DataReader {
    imp: Imp,
}

impl std::fmt::Debug for DataReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.imp {
            Imp::Direct(_) => f.write_str("DataReader(direct)"),
            Imp::Piped(p) => write!(f, "DataReader({} streams, pipelined)", p.rxs.len()),
        }
    }
}

enum Imp {
    Direct(BufReader<Box<dyn Read + Send>>),
    Piped(Piped),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Eof,
    Failed,
}

struct Piped {
    rxs: Vec<Receiver<Msg>>,
    shared: Arc<Shared>,
    recycle: Vec<Sender<Vec<u8>>>,
    /// Current buffer, its stream, read position and end.
    cur: Vec<u8>,
    cur_stream: usize,
    pos: usize,
    end: usize,
    next: usize,
    block_seq: u32,
    block_size: u32,
    framed: bool,
    state: State,
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
        let buf_size = options.single_stream_buffer.max(HEADER_LEN);
        if n == 1 && stack.is_plain() {
            let Some(s) = streams.into_iter().next() else {
                return Err(ChannelError::NoStreams);
            };
            let b: Box<dyn Read + Send> = Box::new(s);
            return Ok(DataReader {
                imp: Imp::Direct(BufReader::with_capacity(buf_size, b)),
            });
        }
        let aborts = streams.iter().filter_map(|s| s.abort_handle()).collect();
        let shared = Arc::new(Shared::new(aborts));
        let mut decoders = Vec::with_capacity(n);
        for (i, s) in streams.into_iter().enumerate() {
            // Buffer the socket: frame headers and cipher blocks are small
            // reads, which would otherwise each be a system call.
            let buffered = BufReader::with_capacity(buf_size, s);
            decoders.push(stack.decoder(i, n, Box::new(buffered))?);
        }
        let mut rxs = Vec::with_capacity(n);
        let mut recycle = Vec::with_capacity(n);
        for (i, dec) in decoders.into_iter().enumerate() {
            let (tx, rx) = mpsc::sync_channel(options.queue_depth.max(1));
            let (rtx, rrx) = mpsc::channel();
            let sh = shared.clone();
            let spawned = thread::Builder::new()
                .name(format!("uftp-dc-r{i}"))
                .spawn(move || {
                    let r = if n > 1 {
                        framed_worker(i, n, dec, &tx, &rrx)
                    } else {
                        single_worker(dec, buf_size, &tx, &rrx)
                    };
                    if let Err(e) = r {
                        sh.fail(Some(i), &e);
                    }
                });
            if let Err(e) = spawned {
                shared.abort_all();
                return Err(ChannelError::Io(e));
            }
            rxs.push(rx);
            recycle.push(rtx);
        }
        Ok(DataReader {
            imp: Imp::Piped(Piped {
                rxs,
                shared,
                recycle,
                cur: Vec::new(),
                cur_stream: 0,
                pos: 0,
                end: 0,
                next: 0,
                block_seq: 0,
                block_size: 0,
                framed: n > 1,
                state: State::Running,
            }),
        })
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Reads a frame header; `Ok(false)` at a clean end of stream.
fn read_header(src: &mut dyn Read, h: &mut [u8; HEADER_LEN]) -> io::Result<bool> {
    let mut got = 0;
    while got < HEADER_LEN {
        match src.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("stream ended inside a frame header ({got} of {HEADER_LEN} bytes)"),
                ));
            }
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn take_buf(rrx: &Receiver<Vec<u8>>, min_len: usize) -> Vec<u8> {
    let mut b = rrx.try_recv().unwrap_or_default();
    if b.len() < min_len {
        b.resize(min_len, 0);
    }
    b
}

fn framed_worker(
    i: usize,
    n: usize,
    mut src: Box<dyn Read + Send>,
    tx: &SyncSender<Msg>,
    rrx: &Receiver<Vec<u8>>,
) -> io::Result<()> {
    let mut seq: u32 = 0;
    let mut h = [0u8; HEADER_LEN];
    loop {
        if !read_header(&mut *src, &mut h)? {
            let _ = tx.send(Msg::Eof);
            return Ok(());
        }
        let f = FrameHeader::decode(&h)?;
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
        let mut buf = take_buf(rrx, len);
        if let Err(e) = src.read_exact(&mut buf[..len]) {
            return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("stream ended inside block {seq} (frame of {len} bytes)"),
                )
            } else {
                e
            });
        }
        let msg = Msg::Data {
            seq,
            size: f.size,
            buf,
            len,
        };
        if tx.send(msg).is_err() {
            return Ok(()); // reader gone
        }
        seq = seq.wrapping_add(1);
    }
}

fn single_worker(
    mut src: Box<dyn Read + Send>,
    buf_size: usize,
    tx: &SyncSender<Msg>,
    rrx: &Receiver<Vec<u8>>,
) -> io::Result<()> {
    loop {
        let mut buf = take_buf(rrx, buf_size);
        let len = loop {
            match src.read(&mut buf) {
                Ok(k) => break k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        let msg = if len == 0 {
            Msg::Eof
        } else {
            Msg::Data {
                seq: 0,
                size: 0,
                buf,
                len,
            }
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

    fn recycle_cur(&mut self) {
        let b = mem::take(&mut self.cur);
        if !b.is_empty() {
            let _ = self.recycle[self.cur_stream].send(b);
        }
        self.pos = 0;
        self.end = 0;
    }

    /// Makes `cur[pos..end]` non-empty; `Ok(false)` at the verified end.
    fn fill(&mut self) -> io::Result<bool> {
        loop {
            if self.pos < self.end {
                return Ok(true);
            }
            match self.state {
                State::Eof => return Ok(false),
                State::Failed => return Err(self.shared.error("data channel failed")),
                State::Running => {}
            }
            self.recycle_cur();
            let i = self.next;
            let n = self.rxs.len();
            let msg = match self.rxs[i].recv() {
                Ok(m) => m,
                Err(_) => {
                    self.state = State::Failed;
                    return Err(self.shared.error("data channel worker stopped"));
                }
            };
            match msg {
                Msg::Data {
                    seq,
                    size,
                    buf,
                    len,
                } => {
                    if self.framed {
                        if i == 0 {
                            self.block_size = size;
                        } else if size != self.block_size || seq != self.block_seq {
                            let e = invalid(format!(
                                "data stream {i}: block {seq} of {size} bytes where stream 0 \
                                 sent block {} of {} bytes",
                                self.block_seq, self.block_size
                            ));
                            return Err(self.fail(e));
                        }
                        self.next = (i + 1) % n;
                        if self.next == 0 {
                            self.block_seq = self.block_seq.wrapping_add(1);
                        }
                    }
                    self.cur = buf;
                    self.cur_stream = i;
                    self.pos = 0;
                    self.end = len;
                }
                Msg::Eof => {
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
                    for j in 1..n {
                        match self.rxs[j].recv() {
                            Ok(Msg::Eof) => {}
                            Ok(Msg::Data { .. }) => {
                                let e = invalid(format!(
                                    "data stream {j}: more data after stream 0 ended"
                                ));
                                return Err(self.fail(e));
                            }
                            Err(_) => {
                                self.state = State::Failed;
                                return Err(self.shared.error("data channel worker stopped"));
                            }
                        }
                    }
                    if self.shared.has_failed() {
                        self.state = State::Failed;
                        return Err(self.shared.error("data channel failed"));
                    }
                    self.state = State::Eof;
                    return Ok(false);
                }
            }
        }
    }
}

impl Read for DataReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.imp {
            Imp::Direct(r) => r.read(buf),
            Imp::Piped(p) => {
                if buf.is_empty() || !p.fill()? {
                    return Ok(0);
                }
                let k = (p.end - p.pos).min(buf.len());
                buf[..k].copy_from_slice(&p.cur[p.pos..p.pos + k]);
                p.pos += k;
                Ok(k)
            }
        }
    }
}

impl BufRead for DataReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        match &mut self.imp {
            Imp::Direct(r) => r.fill_buf(),
            Imp::Piped(p) => {
                if !p.fill()? {
                    return Ok(&[]);
                }
                Ok(&p.cur[p.pos..p.end])
            }
        }
    }

    fn consume(&mut self, amt: usize) {
        match &mut self.imp {
            Imp::Direct(r) => r.consume(amt),
            Imp::Piped(p) => p.pos = (p.pos + amt).min(p.end),
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
