//! The sending side of a data channel.

use std::io::{self, IoSlice, Read, Write};
use std::mem;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::thread::{self, JoinHandle};

use codec_api::EncodeWriter;

use crate::frame::{FrameHeader, HEADER_LEN, chunk_range};
use crate::shared::Shared;
use crate::stack::{CodecStack, SinkAdapter};
use crate::stream::SinkStream;
use crate::{ChannelError, ChannelOptions};

/// A block of data shared by all stream workers; its buffer goes back to
/// the caller for reuse when the last worker is done with it.
struct Block {
    /// Always fully initialised (`len()` = capacity in use); `len` bytes
    /// of it are data.
    buf: Vec<u8>,
    len: usize,
    seq: u32,
    recycle: Sender<Vec<u8>>,
}

impl Drop for Block {
    fn drop(&mut self) {
        let _ = self.recycle.send(mem::take(&mut self.buf));
    }
}

enum Msg {
    Block(Arc<Block>),
    Flush,
    Finish,
}

/// The writing end of a data channel: ONE byte stream in, spread over `n`
/// TCP streams with their codecs.
///
/// Write to it (or use [`copy_from`](DataWriter::copy_from), which reads
/// straight into its buffers), then call [`finish`](DataWriter::finish):
/// it writes every codec trailer, shuts down the write sides and reports
/// any error of any stream. Dropping it without `finish` breaks the
/// streams without trailers, so an encrypting or compressing peer sees a
/// truncated transfer.
///
/// With one stream and no codec the bytes go straight to the socket in the
/// caller's thread. Otherwise one worker thread per TCP stream owns that
/// stream's codec stack and socket; blocks travel to the workers through
/// bounded queues (back-pressure, bounded memory) and their buffers are
/// recycled.
pub struct DataWriter {
    imp: Imp,
}

impl std::fmt::Debug for DataWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.imp {
            Imp::Direct(_) => f.write_str("DataWriter(direct)"),
            Imp::Piped(p) => write!(f, "DataWriter({} streams, pipelined)", p.txs.len()),
            Imp::Done => f.write_str("DataWriter(finished)"),
        }
    }
}

enum Imp {
    Direct(Box<dyn EncodeWriter>),
    Piped(Piped),
    Done,
}

struct Piped {
    txs: Vec<SyncSender<Msg>>,
    handles: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    recycle_tx: Sender<Vec<u8>>,
    recycle_rx: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    cur_len: usize,
    block_size: usize,
    seq: u32,
}

impl DataWriter {
    /// Builds the writer over `streams` (stream `i` of the channel at index
    /// `i`) with `stack` on each. An empty `streams` is an error.
    pub fn new<S: SinkStream>(
        streams: Vec<S>,
        stack: &CodecStack,
        options: &ChannelOptions,
    ) -> Result<DataWriter, ChannelError> {
        let n = streams.len();
        check_count(n)?;
        if n == 1 && stack.is_plain() {
            let Some(s) = streams.into_iter().next() else {
                return Err(ChannelError::NoStreams);
            };
            return Ok(DataWriter {
                imp: Imp::Direct(Box::new(SinkAdapter(s))),
            });
        }
        let aborts = streams.iter().filter_map(|s| s.abort_handle()).collect();
        let shared = Arc::new(Shared::new(aborts));
        let mut stacks = Vec::with_capacity(n);
        for (i, s) in streams.into_iter().enumerate() {
            let bottom: Box<dyn EncodeWriter> = if n == 1 {
                // One stream: give the socket its own thread, so that the
                // codec's core does nothing but the codec.
                Box::new(ThreadedSink::new(s, options, shared.clone())?)
            } else {
                // Frames are small (block / n): batch them into fewer
                // socket writes. Workers flush when their queue runs dry.
                Box::new(BufferedSink(io::BufWriter::with_capacity(
                    options.single_stream_buffer.max(4096),
                    SinkAdapter(s),
                )))
            };
            stacks.push(stack.encoder(i, n, bottom)?);
        }
        let block_size = if n == 1 {
            options.single_stream_buffer.max(1)
        } else {
            options.block_size.clamp(1, crate::frame::MAX_SEND_BLOCK)
        };
        let (recycle_tx, recycle_rx) = mpsc::channel();
        let mut txs = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for (i, enc) in stacks.into_iter().enumerate() {
            let (tx, rx) = mpsc::sync_channel(options.queue_depth.max(1));
            let sh = shared.clone();
            let h = thread::Builder::new()
                .name(format!("uftp-dc-w{i}"))
                .spawn(move || worker(i, n, rx, enc, sh));
            match h {
                Ok(h) => handles.push(h),
                Err(e) => {
                    shared.abort_all();
                    return Err(ChannelError::Io(e));
                }
            }
            txs.push(tx);
        }
        Ok(DataWriter {
            imp: Imp::Piped(Piped {
                txs,
                handles,
                shared,
                recycle_tx,
                recycle_rx,
                cur: Vec::new(),
                cur_len: 0,
                block_size,
                seq: 0,
            }),
        })
    }

    /// Copies everything from `src` until its end into the channel, reading
    /// straight into the channel's block buffers (no extra copy). Returns
    /// the number of bytes copied.
    pub fn copy_from(&mut self, src: &mut dyn Read) -> io::Result<u64> {
        match &mut self.imp {
            Imp::Direct(w) => io::copy(src, w),
            Imp::Piped(p) => p.copy_from(src),
            Imp::Done => Err(finished()),
        }
    }

    /// Ends the transfer: sends the last block, writes the codec trailers,
    /// shuts down the write sides, waits for all streams, and returns the
    /// first error of any of them.
    pub fn finish(mut self) -> io::Result<()> {
        match mem::replace(&mut self.imp, Imp::Done) {
            Imp::Direct(w) => w.finish(),
            Imp::Piped(p) => p.finish(),
            Imp::Done => Err(finished()),
        }
    }
}

fn finished() -> io::Error {
    io::Error::other("data channel writer already finished")
}

pub(crate) fn check_count(n: usize) -> Result<(), ChannelError> {
    if n == 0 {
        return Err(ChannelError::NoStreams);
    }
    if n > usize::from(u16::MAX) {
        return Err(ChannelError::TooManyStreams(n));
    }
    Ok(())
}

impl Write for DataWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match &mut self.imp {
            Imp::Direct(w) => w.write(data),
            Imp::Piped(p) => p.write(data),
            Imp::Done => Err(finished()),
        }
    }

    /// Sends any partial block and asks every stream to push out what its
    /// codecs hold (a gzip sync flush). Not needed before `finish`.
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.imp {
            Imp::Direct(w) => w.flush(),
            Imp::Piped(p) => p.flush(),
            Imp::Done => Err(finished()),
        }
    }
}

impl Drop for DataWriter {
    fn drop(&mut self) {
        if let Imp::Piped(p) = &self.imp {
            // Not finished: break the streams, write no trailers.
            p.shared.abort_all();
        }
    }
}

impl Piped {
    fn error(&self) -> io::Error {
        self.shared.error("data channel worker stopped")
    }

    fn ensure_buf(&mut self) {
        if self.cur.is_empty() {
            let mut b = self.recycle_rx.try_recv().unwrap_or_default();
            if b.len() != self.block_size {
                b.resize(self.block_size, 0);
            }
            self.cur = b;
            self.cur_len = 0;
        }
    }

    fn dispatch(&mut self) -> io::Result<()> {
        if self.cur_len == 0 {
            return Ok(());
        }
        let block = Arc::new(Block {
            buf: mem::take(&mut self.cur),
            len: mem::take(&mut self.cur_len),
            seq: self.seq,
            recycle: self.recycle_tx.clone(),
        });
        self.seq = self.seq.wrapping_add(1);
        for tx in &self.txs {
            if tx.send(Msg::Block(block.clone())).is_err() {
                return Err(self.error());
            }
        }
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.shared.has_failed() {
            return Err(self.error());
        }
        let mut rest = data;
        while !rest.is_empty() {
            self.ensure_buf();
            let n = (self.block_size - self.cur_len).min(rest.len());
            self.cur[self.cur_len..self.cur_len + n].copy_from_slice(&rest[..n]);
            self.cur_len += n;
            rest = &rest[n..];
            if self.cur_len == self.block_size {
                self.dispatch()?;
            }
        }
        Ok(data.len())
    }

    fn copy_from(&mut self, src: &mut dyn Read) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            if self.shared.has_failed() {
                return Err(self.error());
            }
            self.ensure_buf();
            let start = self.cur_len;
            let n = match src.read(&mut self.cur[start..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(total);
            }
            self.cur_len += n;
            total += n as u64;
            if self.cur_len == self.block_size {
                self.dispatch()?;
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.dispatch()?;
        for tx in &self.txs {
            if tx.send(Msg::Flush).is_err() {
                return Err(self.error());
            }
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<()> {
        let sent = self.dispatch().and_then(|()| {
            for tx in &self.txs {
                if tx.send(Msg::Finish).is_err() {
                    return Err(self.error());
                }
            }
            Ok(())
        });
        self.txs.clear();
        for h in self.handles.drain(..) {
            if h.join().is_err() {
                self.shared
                    .fail(None, &io::Error::other("data channel worker panicked"));
            }
        }
        sent?;
        if self.shared.has_failed() {
            return Err(self.error());
        }
        Ok(())
    }
}

/// Writes all of `bufs` (header + payload: one `writev` on a plain socket).
fn write_all_vectored(w: &mut dyn Write, mut a: &[u8], mut b: &[u8]) -> io::Result<()> {
    while !a.is_empty() || !b.is_empty() {
        let n = match w.write_vectored(&[IoSlice::new(a), IoSlice::new(b)]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "failed to write frame",
                ));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n <= a.len() {
            a = &a[n..];
        } else {
            b = &b[n - a.len()..];
            a = &[];
        }
    }
    Ok(())
}

/// Worker of stream `i` of `n`: owns that stream's codec stack and socket.
fn worker(
    i: usize,
    n: usize,
    rx: Receiver<Msg>,
    mut enc: Box<dyn EncodeWriter>,
    shared: Arc<Shared>,
) {
    let framed = n > 1;
    let run = |enc: &mut Box<dyn EncodeWriter>| -> io::Result<bool> {
        loop {
            let msg = match rx.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Disconnected) => return Ok(false),
                Err(TryRecvError::Empty) => {
                    if framed {
                        // Nothing queued: push out what the codecs hold, so
                        // that a reader waiting for this stream's part of a
                        // block is never stuck behind our compressor while
                        // the other streams fill up (a deadlock otherwise
                        // possible with round-robin readers).
                        enc.flush()?;
                    }
                    match rx.recv() {
                        Ok(m) => m,
                        Err(_) => return Ok(false),
                    }
                }
            };
            match msg {
                Msg::Block(b) => {
                    let data = &b.buf[..b.len];
                    if framed {
                        let (off, len) = chunk_range(b.len, n, i);
                        let h = FrameHeader {
                            stream: i as u16,
                            seq: b.seq,
                            size: b.len as u32,
                            len: len as u32,
                        }
                        .encode();
                        debug_assert_eq!(h.len(), HEADER_LEN);
                        write_all_vectored(&mut **enc, &h, &data[off..off + len])?;
                    } else {
                        enc.write_all(data)?;
                    }
                }
                Msg::Flush => enc.flush()?,
                Msg::Finish => return Ok(true),
            }
        }
    };
    match run(&mut enc) {
        Ok(true) => {
            if let Err(e) = enc.finish() {
                // A reader knows the data ended when stream 0 ends at a frame
                // boundary; by then it has read every frame of every other
                // stream, and JPARSS readers (pyuftp, Java) close the other
                // streams without waiting for their codec trailers. A peer
                // that closed stream i > 0 while only its trailer or
                // shutdown was left is therefore no failed transfer; a
                // reader that gave up earlier fails on stream 0 as well,
                // or while the data was still being written.
                if !(framed && i > 0 && peer_closed(&e)) {
                    shared.fail(Some(i), &e);
                }
            }
        }
        Ok(false) => {
            // Caller went away without finish: no trailer.
            drop(enc);
        }
        Err(e) => shared.fail(Some(i), &e),
    }
}

/// The peer closed or reset the connection.
fn peer_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::NotConnected
    )
}

enum IoMsg {
    Data(Vec<u8>, usize),
    Flush,
    Finish,
}

/// Bottom of a single-stream encoder stack: collects the encoded bytes
/// into buffers that a separate thread writes to the socket.
struct ThreadedSink {
    tx: Option<SyncSender<IoMsg>>,
    recycle_rx: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    cur_len: usize,
    size: usize,
    handle: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl ThreadedSink {
    fn new<S: SinkStream>(
        mut sink: S,
        options: &ChannelOptions,
        shared: Arc<Shared>,
    ) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<IoMsg>(options.queue_depth.max(1));
        let (recycle_tx, recycle_rx) = mpsc::channel::<Vec<u8>>();
        let sh = shared.clone();
        let handle = thread::Builder::new()
            .name("uftp-dc-io".into())
            .spawn(move || {
                let r = (|| -> io::Result<()> {
                    while let Ok(m) = rx.recv() {
                        match m {
                            IoMsg::Data(b, len) => {
                                sink.write_all(&b[..len])?;
                                let _ = recycle_tx.send(b);
                            }
                            IoMsg::Flush => sink.flush()?,
                            IoMsg::Finish => return sink.finish_write(),
                        }
                    }
                    Ok(()) // encoder dropped without finish: no trailer
                })();
                if let Err(e) = r {
                    sh.fail(Some(0), &e);
                }
            })?;
        Ok(ThreadedSink {
            tx: Some(tx),
            recycle_rx,
            cur: Vec::new(),
            cur_len: 0,
            size: options.single_stream_buffer.max(4096),
            handle: Some(handle),
            shared,
        })
    }

    fn send(&mut self, m: IoMsg) -> io::Result<()> {
        match &self.tx {
            Some(tx) if tx.send(m).is_ok() => Ok(()),
            _ => Err(self.shared.error("socket writer stopped")),
        }
    }

    fn send_cur(&mut self) -> io::Result<()> {
        if self.cur_len > 0 {
            let b = mem::take(&mut self.cur);
            let len = mem::take(&mut self.cur_len);
            self.send(IoMsg::Data(b, len))?;
        }
        Ok(())
    }
}

impl Write for ThreadedSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.cur.is_empty() {
            let mut b = self.recycle_rx.try_recv().unwrap_or_default();
            b.resize(self.size, 0);
            self.cur = b;
            self.cur_len = 0;
        }
        let n = (self.size - self.cur_len).min(data.len());
        self.cur[self.cur_len..self.cur_len + n].copy_from_slice(&data[..n]);
        self.cur_len += n;
        if self.cur_len == self.size {
            self.send_cur()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_cur()?;
        self.send(IoMsg::Flush)
    }
}

impl EncodeWriter for ThreadedSink {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        let sent = self.send_cur().and_then(|()| self.send(IoMsg::Finish));
        self.tx = None;
        if let Some(h) = self.handle.take()
            && h.join().is_err()
        {
            self.shared
                .fail(Some(0), &io::Error::other("socket writer panicked"));
        }
        sent?;
        if self.shared.has_failed() {
            return Err(self.shared.error("socket writer failed"));
        }
        Ok(())
    }
}

/// Bottom of a multi-stream encoder stack: a buffered socket.
struct BufferedSink<S: SinkStream>(io::BufWriter<SinkAdapter<S>>);

impl<S: SinkStream> Write for BufferedSink<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<S: SinkStream> EncodeWriter for BufferedSink<S> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        let inner = self.0.into_inner().map_err(|e| e.into_error())?;
        Box::new(inner).finish()
    }
}
