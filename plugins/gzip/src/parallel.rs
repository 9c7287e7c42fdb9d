//! A gzip member compressed by several threads (the technique of pigz),
//! or by the caller's thread alone with ISA-L (see `isal.rs`), which
//! compresses through this piece writer in either case.
//!
//! The input is cut into pieces of [`PIECE`] bytes. Each piece is
//! compressed as raw deflate by its own engine (zlib-rs or ISA-L), primed with the 32 KiB of
//! input just before it as the dictionary (so matches reach back across the
//! cut as in one serial stream), and ends with a sync flush: an empty stored
//! block that leaves the bit stream byte-aligned and not final. The pieces'
//! outputs are therefore ONE valid deflate stream when written one after the
//! other; only the last piece of the member is finished (final block). The
//! CRC-32 of every piece is combined in order for the trailer.
//!
//! What a reader sees is an ordinary single gzip member (10-byte header,
//! deflate data, CRC-32 + ISIZE), exactly what Java's `GZIPInputStream`,
//! Python's `zlib` (`wbits=31`) and `gzip -d` expect. The cost: priming
//! each piece with its dictionary (hashing 32 KiB per piece) and one
//! block boundary per piece, a fraction of a percent of the output.

use std::io::{self, Write};
use std::sync::mpsc;

use codec_api::EncodeWriter;
use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// Input bytes per compression job.
pub(crate) const PIECE: usize = 256 * 1024;

/// The deflate window: how far back a match may reach.
const WINDOW: usize = 32 * 1024;

/// The gzip header this codec writes: no name, mtime 0, XFL 0, OS 255
/// ("unknown"), the same bytes as the serial encoder.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// Which deflate implementation compresses the pieces, and at what level.
#[derive(Debug, Clone, Copy)]
pub(crate) enum EngineSpec {
    /// zlib-rs (flate2) at a zlib level 0..=9.
    Zlib(Compression),
    /// ISA-L at its level 1..=3 (see `isal.rs`).
    Isal(&'static crate::isal::Api, u32),
}

enum Deflate {
    Zlib(Box<Compress>),
    Isal(crate::isal::Deflater),
}

/// One compression engine and its output buffer.
struct Engine {
    deflate: Deflate,
    out: Vec<u8>,
    crc: Crc,
}

impl Engine {
    fn new(spec: EngineSpec) -> io::Result<Self> {
        Ok(Engine {
            deflate: match spec {
                EngineSpec::Zlib(level) => Deflate::Zlib(Box::new(Compress::new(level, false))),
                EngineSpec::Isal(api, level) => {
                    Deflate::Isal(crate::isal::Deflater::new(api, level)?)
                }
            },
            out: Vec::new(),
            crc: Crc::new(),
        })
    }

    /// Compresses `piece` (primed with `dict`) into `self.out`, ending with
    /// a sync flush, or with the final block when `last`.
    fn run(&mut self, dict: &[u8], piece: &[u8], last: bool) -> io::Result<()> {
        self.out.clear();
        self.crc.reset();
        self.crc.update(piece);
        match &mut self.deflate {
            Deflate::Isal(d) => d.run(dict, piece, last, &mut self.out),
            Deflate::Zlib(z) => zlib_run(z, dict, piece, last, &mut self.out),
        }
    }
}

/// [`Engine::run`] with zlib-rs.
fn zlib_run(
    deflate: &mut Compress,
    dict: &[u8],
    piece: &[u8],
    last: bool,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    deflate.reset();
    if !dict.is_empty() {
        deflate.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    // Room for incompressible data plus block overheads; grown below if
    // that is ever not enough.
    out.reserve(piece.len() + piece.len() / 64 + 1024);
    let start = deflate.total_in();
    loop {
        let used = (deflate.total_in() - start) as usize;
        let before = (deflate.total_in(), deflate.total_out());
        let status = deflate
            .compress_vec(&piece[used..], out, flush)
            .map_err(io::Error::other)?;
        let consumed = (deflate.total_in() - start) as usize == piece.len();
        let room_left = out.len() < out.capacity();
        let moved = before != (deflate.total_in(), deflate.total_out());
        match status {
            Status::StreamEnd => return Ok(()),
            // A sync flush is complete when all input is taken and the
            // engine stopped with output room to spare.
            Status::Ok | Status::BufError if !last && consumed && room_left => return Ok(()),
            _ if !moved && room_left => {
                return Err(io::Error::other("deflate engine made no progress"));
            }
            _ => out.reserve(64 * 1024),
        }
    }
}

/// One piece of work: the dictionary followed by the piece, and a buffer
/// for the output (recycled between jobs).
struct Job {
    input: Vec<u8>,
    dict_len: usize,
    last: bool,
    out: Vec<u8>,
}

/// A finished job: the compressed piece (in `job.out`) and its CRC-32.
struct Done {
    job: Job,
    crc: Crc,
}

impl Engine {
    fn run_job(&mut self, mut job: Job) -> io::Result<Done> {
        let (dict, piece) = job.input.split_at(job.dict_len);
        self.run(dict, piece, job.last)?;
        std::mem::swap(&mut job.out, &mut self.out);
        Ok(Done {
            job,
            crc: std::mem::replace(&mut self.crc, Crc::new()),
        })
    }
}

/// A compression thread with its own engine: takes jobs in order, answers
/// them in the same order.
struct Worker {
    jobs: mpsc::Sender<Job>,
    done: mpsc::Receiver<io::Result<Done>>,
}

impl Worker {
    fn spawn(spec: EngineSpec) -> Option<Worker> {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("uftp-gzip".into())
            .spawn(move || {
                let mut engine = Engine::new(spec);
                for job in job_rx {
                    let result = match engine.as_mut() {
                        Ok(e) => e.run_job(job),
                        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                    };
                    if done_tx.send(result).is_err() {
                        break;
                    }
                }
            })
            .ok()?;
        Some(Worker { jobs, done })
    }
}

/// The encoder: fills pieces, hands them round-robin to the worker threads
/// (at most one job queued per worker besides the one it runs) and writes
/// the results in order while the next pieces are being filled.
pub(crate) struct ParallelGzipWriter<'a> {
    inner: Box<dyn EncodeWriter + 'a>,
    workers: Vec<Worker>,
    /// Used when no worker thread could be started (or one was asked
    /// for: the stream's own thread compresses).
    local: Option<Engine>,
    spec: EngineSpec,
    /// The piece being filled: up to [`WINDOW`] bytes of dictionary, then
    /// new input.
    filling: Vec<u8>,
    dict_len: usize,
    /// Jobs handed out and not yet written, oldest first (job `k` went to
    /// worker `k % workers.len()`).
    in_flight: std::collections::VecDeque<usize>,
    next_job: usize,
    spare: Vec<Job>,
    crc: Crc,
    header_written: bool,
}

impl<'a> ParallelGzipWriter<'a> {
    /// A member over `inner`, compressed by `spec`'s engine in `threads`
    /// threads (1: in the caller's thread).
    pub(crate) fn new(
        inner: Box<dyn EncodeWriter + 'a>,
        spec: EngineSpec,
        threads: usize,
    ) -> io::Result<Self> {
        // A thread that cannot be started (RLIMIT_NPROC of the session
        // user, say) is not an error: the member is compressed by fewer.
        let workers: Vec<Worker> = if threads > 1 {
            (0..threads).map_while(|_| Worker::spawn(spec)).collect()
        } else {
            Vec::new()
        };
        let local = if workers.is_empty() {
            Some(Engine::new(spec)?)
        } else {
            None
        };
        Ok(ParallelGzipWriter {
            inner,
            workers,
            local,
            spec,
            filling: Vec::with_capacity(WINDOW + PIECE),
            dict_len: 0,
            in_flight: std::collections::VecDeque::new(),
            next_job: 0,
            spare: Vec::new(),
            crc: Crc::new(),
            header_written: false,
        })
    }

    /// Writes the oldest job's output.
    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(k) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let done = self.workers[k % self.workers.len()]
            .done
            .recv()
            .map_err(|_| io::Error::other("gzip worker thread stopped"))??;
        self.write_done(done)
    }

    /// Writes a finished piece, handing its output buffer down (a socket
    /// thread sends it without a copy; see `EncodeWriter::write_owned`);
    /// the buffer that comes back serves a later job.
    fn write_done(&mut self, done: Done) -> io::Result<()> {
        let Done { mut job, crc } = done;
        let len = job.out.len();
        job.out = self.inner.write_owned(std::mem::take(&mut job.out), len)?;
        self.crc.combine(&crc);
        self.spare.push(job);
        Ok(())
    }

    /// Hands the piece being filled to a worker (ending with a sync flush,
    /// or the final block if `last`) and starts the next piece with its
    /// dictionary.
    fn submit(&mut self, last: bool) -> io::Result<()> {
        if !self.header_written {
            self.inner.write_all(&HEADER)?;
            self.header_written = true;
        }
        let mut job = self.spare.pop().unwrap_or_else(|| Job {
            input: Vec::with_capacity(WINDOW + PIECE),
            dict_len: 0,
            last: false,
            out: Vec::new(),
        });
        // The next piece's dictionary: the last WINDOW bytes of this one.
        job.input.clear();
        let keep = self.filling.len().min(WINDOW);
        job.input
            .extend_from_slice(&self.filling[self.filling.len() - keep..]);
        std::mem::swap(&mut job.input, &mut self.filling);
        job.dict_len = self.dict_len;
        job.last = last;
        self.dict_len = keep;
        if let Some(engine) = self.local.as_mut() {
            let done = engine.run_job(job)?;
            return self.write_done(done);
        }
        // At most one job waiting per worker besides the one it runs.
        while self.in_flight.len() >= 2 * self.workers.len() {
            self.write_oldest()?;
        }
        let k = self.next_job;
        self.next_job += 1;
        self.workers[k % self.workers.len()]
            .jobs
            .send(job)
            .map_err(|_| io::Error::other("gzip worker thread stopped"))?;
        self.in_flight.push_back(k);
        Ok(())
    }

    fn drain(&mut self) -> io::Result<()> {
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        Ok(())
    }
}

impl Write for ParallelGzipWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.dict_len + PIECE - self.filling.len();
        let n = buf.len().min(room);
        self.filling.extend_from_slice(&buf[..n]);
        if self.filling.len() - self.dict_len == PIECE {
            self.submit(false)?;
        }
        Ok(n)
    }

    /// A sync flush: everything written so far goes out, byte-aligned.
    fn flush(&mut self) -> io::Result<()> {
        if self.filling.len() > self.dict_len {
            self.submit(false)?;
        }
        self.drain()?;
        self.inner.flush()
    }
}

impl EncodeWriter for ParallelGzipWriter<'_> {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.submit(true)?;
        self.drain()?;
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        trailer[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
        self.inner.write_all(&trailer)?;
        let ParallelGzipWriter { inner, .. } = *self;
        inner.finish()
    }
}

impl std::fmt::Debug for ParallelGzipWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParallelGzipWriter")
            .field("threads", &self.workers.len())
            .field("engine", &self.spec)
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}
