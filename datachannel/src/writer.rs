//! The sending side of a data channel.
//!
//! The caller's bytes are collected into large batches (a batch is many
//! frame blocks: [`ChannelOptions::batch_size`]); one message per batch
//! goes to every stream worker, which writes all of its frames of the
//! batch with ONE vectored write (header and payload slices straight from
//! the shared batch buffer, no copy). So a gibibyte costs about a thousand
//! hand-offs and a few thousand system calls per stream, not one of each
//! per 16 KiB block.

use std::io::{self, IoSlice, Read, Write};
use std::mem;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::thread::{self, JoinHandle};

use codec_api::EncodeWriter;

use crate::frame::{FramePart, plan_frames};
use crate::mapped::{self, MappedBatch, Mapping};
use crate::offload::OffloadSink;
use crate::shared::{Shared, write_all_vectored};
use crate::stack::{CodecStack, SinkAdapter};
use crate::stream::SinkStream;
use crate::{ChannelError, ChannelOptions};

/// A batch of data shared by all stream workers: `len` bytes cut into
/// blocks of `block` bytes (the last one may be shorter), numbered from
/// `seq`. Its buffer goes back to the caller for reuse when the last
/// worker is done with it.
struct Batch {
    /// Always fully initialised; `len` bytes of it are data.
    buf: Vec<u8>,
    len: usize,
    seq: u32,
    block: usize,
    recycle: Sender<Vec<u8>>,
}

impl Drop for Batch {
    fn drop(&mut self) {
        let _ = self.recycle.send(mem::take(&mut self.buf));
    }
}

enum Msg {
    Batch(Arc<Batch>),
    /// A batch of a mapped file (plain multi-stream channels only).
    Mapped(Arc<MappedBatch>),
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
/// stream's codec stack and socket (with fewer streams than cores, a
/// second thread per codec stream writes the socket:
/// [`ChannelOptions::socket_threads`]); batches of blocks travel to the
/// workers through bounded queues (back-pressure, bounded memory) and
/// their buffers are recycled. Bytes are held until a batch is full; use
/// [`send_blocks`](DataWriter::send_blocks) to send the complete blocks
/// collected so far (a rate-limited sender), or `flush`.
pub struct DataWriter {
    imp: Imp,
}

impl std::fmt::Debug for DataWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.imp {
            Imp::Direct(..) => f.write_str("DataWriter(direct)"),
            Imp::Piped(p) => write!(f, "DataWriter({} streams, pipelined)", p.txs.len()),
            Imp::Done => f.write_str("DataWriter(finished)"),
        }
    }
}

enum Imp {
    /// The socket itself, and the buffer size of `copy_from`.
    Direct(Box<dyn EncodeWriter>, usize),
    Piped(Piped),
    Done,
}

struct Piped {
    txs: Vec<SyncSender<Msg>>,
    handles: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    recycle_tx: Sender<Vec<u8>>,
    recycle_rx: Receiver<Vec<u8>>,
    /// The batch being filled (empty `Vec` when none is).
    cur: Vec<u8>,
    cur_len: usize,
    /// Bytes per batch (a multiple of `block_size` when framed).
    batch_size: usize,
    /// Framing block size (framed); equal to `batch_size` otherwise.
    block_size: usize,
    framed: bool,
    /// `send_file` may map files: plain multi-stream over descriptors, or
    /// codecs with guarded mappings.
    mappable: bool,
    /// Codecs read the mapped file (guarded mappings).
    guarded_map: bool,
    /// Sequence number of the next block.
    seq: u32,
}

/// A batch of a mapped file is this many ordinary batches: it costs no
/// buffer, and larger `writev`s mean fewer wake-ups per byte.
const MAP_BATCH_SCALE: usize = 4;

/// Mapped batches per mapping of [`DataWriter::send_file`].
const MAP_BATCHES: usize = 4;

/// Why [`DataWriter::send_file`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendFileError {
    /// The file could not be mapped after part of it was sent.
    #[error("file: {0}")]
    File(io::Error),
    /// The data channel failed.
    #[error("{0}")]
    Channel(io::Error),
}

/// Size of one batch for blocks of `block` bytes: a whole number of blocks
/// close to `want` bytes, at least one block.
fn batch_bytes(want: usize, block: usize) -> usize {
    (want / block).max(1) * block
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
                imp: Imp::Direct(Box::new(SinkAdapter(s)), options.batch_size.max(4096)),
            });
        }
        let aborts = streams.iter().filter_map(|s| s.abort_handle()).collect();
        let shared = Arc::new(Shared::new(aborts));
        // Plain frames can go out of a mapped file with writev(2) when every
        // stream has a descriptor.
        let fds: Option<Vec<RawFd>> = if n > 1 && stack.is_plain() {
            streams.iter().map(|s| s.raw_fd()).collect()
        } else {
            None
        };
        // Codecs read mapped files only where a SIGBUS guard is in place.
        let guarded_map = !stack.is_plain() && crate::sigbus::install();
        let mappable = fds.is_some() || guarded_map;
        let offload = !stack.is_plain()
            && options
                .socket_threads
                .unwrap_or_else(|| n < codec_api::available_cores());
        let mut stacks = Vec::with_capacity(n);
        for (i, s) in streams.into_iter().enumerate() {
            let bottom: Box<dyn EncodeWriter> = if stack.is_plain() {
                // Plain frames go out with one vectored write per batch.
                Box::new(SinkAdapter(s))
            } else if offload {
                // Fewer streams than cores: the socket is written on a
                // thread of its own, so that the codecs work on the next
                // buffer meanwhile (buffers change hands, see `offload`).
                let adapter = Box::new(SinkAdapter(s));
                let name = format!("uftp-dc-s{i}");
                match OffloadSink::spawn(adapter, name) {
                    Ok(o) => Box::new(o),
                    Err(e) => {
                        shared.abort_all();
                        return Err(ChannelError::Io(e));
                    }
                }
            } else {
                // As many streams as cores: each worker writes its socket
                // itself. Codecs may write small pieces (a compressor):
                // collect them; writes of at least the capacity (a
                // cipher's output buffer) pass straight through.
                Box::new(BufferedSink(io::BufWriter::with_capacity(
                    CODEC_SINK_BUFFER,
                    SinkAdapter(s),
                )))
            };
            stacks.push(stack.encoder(i, n, bottom)?);
        }
        let (block_size, batch_size) = if n == 1 {
            let b = options.batch_size.max(4096);
            (b, b)
        } else {
            let block = options.block_size.clamp(1, crate::frame::MAX_SEND_BLOCK);
            (block, batch_bytes(options.batch_size, block))
        };
        let (recycle_tx, recycle_rx) = mpsc::channel();
        let mut txs = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for (i, enc) in stacks.into_iter().enumerate() {
            let (tx, rx) = mpsc::sync_channel(options.queue_depth.max(1));
            let sh = shared.clone();
            let fd = fds.as_ref().and_then(|f| f.get(i).copied());
            let h = thread::Builder::new()
                .name(format!("uftp-dc-w{i}"))
                .spawn(move || worker(i, n, rx, enc, fd, sh));
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
                batch_size,
                block_size,
                framed: n > 1,
                mappable,
                guarded_map,
                seq: 0,
            }),
        })
    }

    /// Copies everything from `src` until its end into the channel, reading
    /// straight into the channel's batch buffers (no extra copy; reads of
    /// up to [`ChannelOptions::batch_size`] bytes). Returns the number of
    /// bytes copied.
    pub fn copy_from(&mut self, src: &mut dyn Read) -> io::Result<u64> {
        match &mut self.imp {
            Imp::Direct(w, size) => copy_direct(src, w, *size),
            Imp::Piped(p) => p.copy_from(src),
            Imp::Done => Err(finished()),
        }
    }

    /// Sends up to `len` bytes of `file` from its current position (and
    /// moves the position past them), like [`copy_from`](Self::copy_from)
    /// over the file, but without reading the file into a buffer first:
    /// the file is mapped in windows of a few batches. On a plain
    /// multi-stream channel each stream worker hands the kernel its frames
    /// with `writev` vectors pointing into the mapping (one copy, page
    /// cache to socket, instead of two); with codecs, each worker's codecs
    /// read their input straight from the mapping (no copy before the
    /// cipher or compressor). The bytes on the wire are the same.
    ///
    /// Returns `Ok(None)`, having sent nothing of the file, where this
    /// does not apply (one plain stream, a plain stream without a
    /// descriptor, no SIGBUS guard for codecs, not a regular file, a file
    /// that cannot be mapped): use `copy_from`. Otherwise the bytes sent,
    /// fewer than `len` if the file is shorter.
    ///
    /// A file truncated meanwhile fails the transfer with an error, never
    /// a SIGBUS: plain mappings are only read by the kernel (EFAULT), and
    /// the mappings codecs read are guarded (module `sigbus`). Like
    /// `sendfile`, a file changed meanwhile sends what the page cache holds
    /// when it is read. The descriptor is not used after this returns (the
    /// mappings are).
    pub fn send_file(
        &mut self,
        file: BorrowedFd<'_>,
        len: u64,
    ) -> Result<Option<u64>, SendFileError> {
        match &mut self.imp {
            Imp::Piped(p) if p.mappable => p.send_file(file, len),
            Imp::Done => Err(SendFileError::Channel(finished())),
            _ => Ok(None),
        }
    }

    /// Sends the complete blocks collected so far now, without waiting for
    /// a full batch and without flushing the codecs (a partial block stays
    /// until it is complete). For senders that pace their writes, such as
    /// a rate-limited transfer. The blocks on the wire are the same as
    /// without it.
    pub fn send_blocks(&mut self) -> io::Result<()> {
        match &mut self.imp {
            Imp::Direct(..) => Ok(()),
            Imp::Piped(p) => p.send_blocks(),
            Imp::Done => Err(finished()),
        }
    }

    /// Ends the transfer: sends the last block, writes the codec trailers,
    /// shuts down the write sides, waits for all streams, and returns the
    /// first error of any of them.
    pub fn finish(mut self) -> io::Result<()> {
        match mem::replace(&mut self.imp, Imp::Done) {
            Imp::Direct(w, _) => w.finish(),
            Imp::Piped(p) => p.finish(),
            Imp::Done => Err(finished()),
        }
    }
}

/// `copy_from` for a plain single stream: large reads, each written out
/// whole.
fn copy_direct(src: &mut dyn Read, w: &mut dyn Write, size: usize) -> io::Result<u64> {
    let mut buf = crate::iobuf::IoBuf::new(size);
    let mut total = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Buffer under the codecs.
const CODEC_SINK_BUFFER: usize = 64 * 1024;

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
            Imp::Direct(w, _) => w.write(data),
            Imp::Piped(p) => p.write(data),
            Imp::Done => Err(finished()),
        }
    }

    /// Sends any partial block and asks every stream to push out what its
    /// codecs hold (a gzip sync flush). Not needed before `finish`.
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.imp {
            Imp::Direct(w, _) => w.flush(),
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

    /// A batch buffer: a recycled one if any came back, else a new one.
    fn new_buf(&self) -> Vec<u8> {
        let mut b = self.recycle_rx.try_recv().unwrap_or_default();
        if b.len() != self.batch_size {
            b.resize(self.batch_size, 0);
        }
        b
    }

    fn ensure_buf(&mut self) {
        if self.cur.is_empty() {
            self.cur = self.new_buf();
            self.cur_len = 0;
        }
    }

    /// Hands the current batch to every worker.
    fn dispatch(&mut self) -> io::Result<()> {
        if self.cur_len == 0 {
            return Ok(());
        }
        let len = mem::take(&mut self.cur_len);
        let blocks = len.div_ceil(self.block_size);
        let batch = Arc::new(Batch {
            buf: mem::take(&mut self.cur),
            len,
            seq: self.seq,
            block: self.block_size,
            recycle: self.recycle_tx.clone(),
        });
        self.seq = self.seq.wrapping_add(blocks as u32);
        for tx in &self.txs {
            if tx.send(Msg::Batch(batch.clone())).is_err() {
                return Err(self.error());
            }
        }
        Ok(())
    }

    fn send_blocks(&mut self) -> io::Result<()> {
        if self.shared.has_failed() {
            return Err(self.error());
        }
        if !self.framed {
            return self.dispatch();
        }
        let whole = self.cur_len / self.block_size * self.block_size;
        if whole == 0 {
            return Ok(());
        }
        if whole == self.cur_len {
            return self.dispatch();
        }
        // Keep the partial block: it moves to the next batch.
        let tail = self.cur_len - whole;
        let mut next = self.new_buf();
        next[..tail].copy_from_slice(&self.cur[whole..self.cur_len]);
        self.cur_len = whole;
        self.dispatch()?;
        self.cur = next;
        self.cur_len = tail;
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.shared.has_failed() {
            return Err(self.error());
        }
        let mut rest = data;
        while !rest.is_empty() {
            self.ensure_buf();
            let n = (self.batch_size - self.cur_len).min(rest.len());
            self.cur[self.cur_len..self.cur_len + n].copy_from_slice(&rest[..n]);
            self.cur_len += n;
            rest = &rest[n..];
            if self.cur_len == self.batch_size {
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
            if self.cur_len == self.batch_size {
                self.dispatch()?;
            }
        }
    }

    fn send_file(&mut self, file: BorrowedFd<'_>, len: u64) -> Result<Option<u64>, SendFileError> {
        use SendFileError::{Channel, File};
        if self.shared.has_failed() {
            return Err(Channel(self.error()));
        }
        let Some((size, pos)) = mapped::size_and_position(file) else {
            return Ok(None);
        };
        let end = size.min(pos.saturating_add(len)).max(pos);
        let page = mapped::page_size();
        let batch = MAP_BATCH_SCALE * self.batch_size;
        let window = (MAP_BATCHES * batch) as u64;
        let mut at = pos;
        while at < end {
            if self.shared.has_failed() {
                return Err(Channel(self.error()));
            }
            let base = at - at % page;
            let take = (end - at).min(window);
            let map_len = usize::try_from(at - base + take)
                .map_err(|_| File(io::Error::other("mapping too large")))?;
            let mapped = if self.guarded_map {
                Mapping::map_guarded(file, base, map_len)
            } else {
                Mapping::map(file, base, map_len)
            };
            let map = match mapped {
                Ok(m) => Arc::new(m),
                // Nothing of the file sent yet: the caller reads instead.
                Err(_) if at == pos => return Ok(None),
                Err(e) => return Err(File(e)),
            };
            if at == pos {
                // Bytes written before go first.
                self.dispatch().map_err(Channel)?;
            }
            let mut off = (at - base) as usize;
            while off < map_len {
                let blen = (map_len - off).min(batch);
                let batch = Arc::new(MappedBatch {
                    map: map.clone(),
                    off,
                    len: blen,
                    seq: self.seq,
                    block: self.block_size,
                });
                self.seq = self.seq.wrapping_add(blen.div_ceil(self.block_size) as u32);
                for tx in &self.txs {
                    if tx.send(Msg::Mapped(batch.clone())).is_err() {
                        return Err(Channel(self.error()));
                    }
                }
                off += blen;
            }
            at += take;
        }
        mapped::seek_to(file, end);
        Ok(Some(end - pos))
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

/// Writes stream `i`'s frames of every block of `data`, blocks of `block`
/// bytes numbered from `seq`: headers from `parts` (scratch space),
/// payloads straight from `data` (a batch buffer or a mapping).
fn write_frames(
    w: &mut dyn Write,
    i: usize,
    n: usize,
    (seq, block): (u32, usize),
    data: &[u8],
    parts: &mut Vec<FramePart>,
) -> io::Result<()> {
    plan_frames(parts, i, n, seq, data.len(), block);
    let mut slices = Vec::with_capacity(2 * parts.len());
    for p in parts.iter() {
        slices.push(IoSlice::new(&p.header));
        if p.len > 0 {
            slices.push(IoSlice::new(&data[p.off..p.off + p.len]));
        }
    }
    write_all_vectored(w, &mut slices, "a frame")
}

/// Writes stream `i`'s part of `data` (blocks of `block` bytes numbered
/// from `seq`): its frames when there are several streams, else all of it.
fn write_part(
    w: &mut dyn Write,
    i: usize,
    n: usize,
    seq_block: (u32, usize),
    data: &[u8],
    parts: &mut Vec<FramePart>,
) -> io::Result<()> {
    if n > 1 {
        write_frames(w, i, n, seq_block, data, parts)
    } else {
        w.write_all(data)
    }
}

/// Writes stream `i`'s part of a mapped batch through its codecs, which
/// read the guarded mapping (framed: headers from `parts`, payloads from
/// the mapping). A file that shrank under the mapping fails the stream.
fn write_mapped_codec(
    w: &mut dyn Write,
    i: usize,
    n: usize,
    b: &MappedBatch,
    parts: &mut Vec<FramePart>,
) -> io::Result<()> {
    let data = b
        .map
        .guarded_slice(b.off, b.len)
        .ok_or_else(|| io::Error::other("mapped data for a codec without a guarded mapping"))?;
    write_part(w, i, n, (b.seq, b.block), data, parts)?;
    if b.map.damaged() {
        return Err(io::Error::other(
            "the file shrank, or part of it could not be read, while it was being sent",
        ));
    }
    Ok(())
}

/// Worker of stream `i` of `n`: owns that stream's codec stack and socket.
fn worker(
    i: usize,
    n: usize,
    rx: Receiver<Msg>,
    mut enc: Box<dyn EncodeWriter>,
    fd: Option<RawFd>,
    shared: Arc<Shared>,
) {
    let framed = n > 1;
    let mut parts = Vec::new();
    let mut run = |enc: &mut Box<dyn EncodeWriter>| -> io::Result<bool> {
        // Written since the last flush.
        let mut dirty = false;
        loop {
            let msg = match rx.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Disconnected) => return Ok(false),
                Err(TryRecvError::Empty) => {
                    if framed && dirty {
                        // Nothing queued: push out what the codecs hold, so
                        // that a reader waiting for this stream's part of a
                        // block is never stuck behind our compressor while
                        // the other streams fill up (a deadlock otherwise
                        // possible with round-robin readers). Once per
                        // idle spell, not per frame (every message that
                        // follows sets `dirty` anew).
                        enc.flush()?;
                    }
                    match rx.recv() {
                        Ok(m) => m,
                        Err(_) => return Ok(false),
                    }
                }
            };
            match msg {
                Msg::Batch(b) => {
                    write_part(
                        &mut **enc,
                        i,
                        n,
                        (b.seq, b.block),
                        &b.buf[..b.len],
                        &mut parts,
                    )?;
                    dirty = true;
                }
                Msg::Mapped(b) => {
                    match fd {
                        // Plain stack: `enc` is the socket itself and holds
                        // nothing back, so writing its descriptor keeps order.
                        Some(fd) => mapped::write_mapped(fd, i, n, &b, &mut parts)?,
                        // Codecs: they read the (guarded) mapping.
                        None => write_mapped_codec(&mut **enc, i, n, &b, &mut parts)?,
                    }
                    dirty = true;
                }
                Msg::Flush => {
                    enc.flush()?;
                    dirty = false;
                }
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

/// Bottom of a codec stack: a buffered socket.
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
