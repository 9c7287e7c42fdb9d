//! The socket write of a codec stream on a thread of its own.
//!
//! A stream worker with codecs encrypts (or compresses) a buffer and then
//! writes it to the socket: both on one thread, one after the other, so a
//! single encrypted stream runs at the speed of the cipher plus the socket
//! write. [`OffloadSink`] sits at the bottom of the codec stack and writes
//! the socket on another thread, so that the cipher works on the next
//! buffer while the previous one is being sent (on a machine with a core
//! to spare for it).
//!
//! Buffers change hands, not bytes: a codec that hands its output buffer
//! over with [`EncodeWriter::write_owned`] gets back one the thread has
//! finished writing. Plain `write`s (a compressor's pieces, a record
//! header) are collected into such a buffer first. Order is kept: every
//! byte goes through one queue.

use std::io::{self, IoSlice, Write};
use std::mem;
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread;

use codec_api::EncodeWriter;

/// Size of the buffer that collects plain `write`s.
const STAGE: usize = 256 * 1024;

/// Buffers queued for the socket thread beyond the one it is writing: one
/// is enough to keep it busy while the codec fills the next.
const QUEUE: usize = 1;

/// Buffers this sink makes per stream (one being filled, the queue, one
/// being written; a codec that hands over its own buffer brings one more):
/// about 1 MiB per stream at most, however slowly the peer reads.
const MAX_BUFFERS: usize = QUEUE + 2;

enum Job {
    /// Write `buf[..len]`, then hand `buf` back.
    Data(Vec<u8>, usize),
    /// Flush the sink, then acknowledge.
    Flush,
    /// Finish the sink (shutting down the write side), then acknowledge.
    Finish,
}

/// What the socket thread failed with (an `io::Error` is not `Clone`, and
/// every later call of the codec's thread reports it again).
type Failure = Arc<Mutex<Option<(io::ErrorKind, String)>>>;

/// The bottom of a codec stack that writes its sink on a thread of its own.
pub(crate) struct OffloadSink {
    jobs: Option<SyncSender<Job>>,
    /// Buffers the thread has written (free for reuse).
    back: Receiver<Vec<u8>>,
    /// Acknowledgements of `Flush` and `Finish`.
    acks: Receiver<()>,
    failure: Failure,
    thread: Option<thread::JoinHandle<()>>,
    /// Collects plain `write`s; empty (no allocation) when nothing waits.
    stage: Vec<u8>,
    stage_len: usize,
    /// Buffers made so far (see [`MAX_BUFFERS`]).
    made: usize,
}

impl OffloadSink {
    /// Starts the socket thread (named `name`) over `sink`. Fails only if
    /// the thread cannot be started.
    pub(crate) fn spawn(sink: Box<dyn EncodeWriter>, name: String) -> io::Result<OffloadSink> {
        let (jobs, rx) = sync_channel(QUEUE);
        let (back_tx, back) = channel();
        let (ack_tx, acks) = channel();
        let failure = Failure::default();
        let f = failure.clone();
        let thread = thread::Builder::new()
            .name(name)
            .spawn(move || run(sink, rx, back_tx, ack_tx, f))?;
        Ok(OffloadSink {
            jobs: Some(jobs),
            back,
            acks,
            failure,
            thread: Some(thread),
            stage: Vec::new(),
            stage_len: 0,
            made: 0,
        })
    }

    /// The socket thread's error, or a generic one if it ended without
    /// saying why.
    fn error(&self) -> io::Error {
        match self.failure.lock() {
            Ok(g) => match &*g {
                Some((kind, msg)) => io::Error::new(*kind, msg.clone()),
                None => io::Error::other("the data stream's writer thread ended"),
            },
            Err(_) => io::Error::other("the data stream's writer thread failed"),
        }
    }

    fn send(&mut self, job: Job) -> io::Result<()> {
        match &self.jobs {
            Some(tx) if tx.send(job).is_ok() => Ok(()),
            _ => Err(self.error()),
        }
    }

    /// A free buffer of `len` bytes: one the thread is done with, a new
    /// one while fewer than [`MAX_BUFFERS`] exist, else the next one the
    /// thread finishes.
    fn free_buffer(&mut self, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = match self.back.try_recv() {
            Ok(b) => b,
            Err(TryRecvError::Empty) if self.made < MAX_BUFFERS => {
                self.made += 1;
                Vec::new()
            }
            Err(_) => match self.back.recv() {
                Ok(b) => b,
                Err(_) => return Err(self.error()),
            },
        };
        buf.resize(len, 0);
        Ok(buf)
    }

    /// Queues what the stage holds.
    fn ship_stage(&mut self) -> io::Result<()> {
        if self.stage_len > 0 {
            let buf = mem::take(&mut self.stage);
            let len = mem::replace(&mut self.stage_len, 0);
            self.send(Job::Data(buf, len))?;
        }
        Ok(())
    }

    /// Sends `job` (Flush or Finish) after everything queued before it, and
    /// waits until the thread has done it.
    fn round_trip(&mut self, job: Job) -> io::Result<()> {
        self.ship_stage()?;
        self.send(job)?;
        match self.acks.recv() {
            Ok(()) if self.failed() => Err(self.error()),
            Ok(()) => Ok(()),
            Err(_) => Err(self.error()),
        }
    }

    fn failed(&self) -> bool {
        self.failure.lock().map_or(true, |g| g.is_some())
    }
}

impl Write for OffloadSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        if self.stage.is_empty() {
            self.stage = self.free_buffer(STAGE)?;
        }
        let n = (self.stage.len() - self.stage_len).min(data.len());
        self.stage[self.stage_len..self.stage_len + n].copy_from_slice(&data[..n]);
        self.stage_len += n;
        if self.stage_len == self.stage.len() {
            self.ship_stage()?;
        }
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut total = 0;
        for b in bufs {
            let mut rest: &[u8] = b;
            while !rest.is_empty() {
                match self.write(rest) {
                    Ok(n) => {
                        total += n;
                        rest = &rest[n..];
                    }
                    Err(e) if total == 0 => return Err(e),
                    Err(_) => return Ok(total),
                }
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.round_trip(Job::Flush)
    }
}

impl EncodeWriter for OffloadSink {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        let r = self.round_trip(Job::Finish);
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            // It has acknowledged (or failed): it is about to return.
            let _ = t.join();
        }
        r
    }

    fn write_owned(&mut self, buf: Vec<u8>, len: usize) -> io::Result<Vec<u8>> {
        let size = buf.len();
        if len > size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "write_owned: len beyond the buffer",
            ));
        }
        // Bytes collected before go first.
        self.ship_stage()?;
        if len > 0 {
            self.send(Job::Data(buf, len))?;
            self.free_buffer(size)
        } else {
            Ok(buf)
        }
    }
}

impl Drop for OffloadSink {
    /// Without `finish` (an aborted transfer): the thread drops the sink
    /// once the queue is empty, without trailer or shutdown; it is not
    /// waited for (a stalled peer must not hold the caller).
    fn drop(&mut self) {
        self.jobs = None;
    }
}

/// The socket thread: writes what it is given, in order, until `Finish`,
/// a failure, or the end of the queue.
fn run(
    mut sink: Box<dyn EncodeWriter>,
    jobs: Receiver<Job>,
    back: Sender<Vec<u8>>,
    acks: Sender<()>,
    failure: Failure,
) {
    let fail = |e: io::Error| {
        if let Ok(mut g) = failure.lock() {
            g.get_or_insert((e.kind(), e.to_string()));
        }
    };
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Data(buf, len) => {
                if let Err(e) = sink.write_all(&buf[..len.min(buf.len())]) {
                    fail(e);
                    return;
                }
                // The codec may be gone already (an aborted transfer).
                let _ = back.send(buf);
            }
            Job::Flush => {
                let r = sink.flush();
                let stop = r.is_err();
                if let Err(e) = r {
                    fail(e);
                }
                let _ = acks.send(());
                if stop {
                    return;
                }
            }
            Job::Finish => {
                if let Err(e) = sink.finish() {
                    fail(e);
                }
                let _ = acks.send(());
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec_api::PlainSink;
    use std::sync::mpsc;

    /// A sink that records what reaches it, on any thread.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<u8>>>, Arc<Mutex<Vec<&'static str>>>);

    impl Write for Recorder {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            self.1.lock().expect("lock").push("flush");
            Ok(())
        }
    }

    impl EncodeWriter for Recorder {
        fn finish(self: Box<Self>) -> io::Result<()> {
            self.1.lock().expect("lock").push("finish");
            Ok(())
        }
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn mixed_writes_arrive_in_order() {
        let rec = Recorder::default();
        let mut s = OffloadSink::spawn(Box::new(rec.clone()), "t".into()).expect("must work");
        let data = pattern(3 * STAGE + 12345);
        let mut expect = Vec::new();
        let mut owned = vec![0u8; 100_000];
        let mut at = 0;
        let mut round = 0;
        while at < data.len() {
            let take = [1, 17, 70_000, STAGE + 1, 99_999][round % 5].min(data.len() - at);
            let piece = &data[at..at + take];
            if round % 2 == 0 {
                s.write_all(piece).expect("must work");
            } else {
                let k = take.min(owned.len());
                owned[..k].copy_from_slice(&piece[..k]);
                owned = s.write_owned(owned, k).expect("must work");
                assert_eq!(owned.len(), 100_000);
                s.write_all(&piece[k..]).expect("must work");
            }
            expect.extend_from_slice(piece);
            at += take;
            round += 1;
        }
        s.flush().expect("must work");
        assert_eq!(*rec.0.lock().expect("lock"), expect);
        s.write_all(b"tail").expect("must work");
        Box::new(s).finish().expect("must work");
        expect.extend_from_slice(b"tail");
        assert_eq!(*rec.0.lock().expect("lock"), expect);
        assert_eq!(*rec.1.lock().expect("lock"), ["flush", "finish"]);
    }

    #[test]
    fn owned_buffers_are_bounded_and_reused() {
        let (tx, rx) = mpsc::channel::<usize>();
        struct Slow(mpsc::Sender<usize>);
        impl Write for Slow {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                std::thread::sleep(std::time::Duration::from_millis(1));
                let _ = self.0.send(b.len());
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut s =
            OffloadSink::spawn(Box::new(PlainSink::new(Slow(tx))), "t".into()).expect("must work");
        let mut buf = vec![1u8; 4096];
        for _ in 0..50 {
            buf = s.write_owned(buf, 4096).expect("must work");
        }
        assert!(s.made <= MAX_BUFFERS, "{} buffers", s.made);
        Box::new(s).finish().expect("must work");
        assert_eq!(rx.try_iter().sum::<usize>(), 50 * 4096);
    }

    #[test]
    fn a_failed_sink_fails_later_calls_with_its_error() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::BrokenPipe, "peer went away"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut s =
            OffloadSink::spawn(Box::new(PlainSink::new(Broken)), "t".into()).expect("must work");
        let mut err = None;
        for _ in 0..10 {
            if let Err(e) = s.write_owned(vec![0u8; 1024], 1024) {
                err = Some(e);
                break;
            }
        }
        let e = match err {
            Some(e) => e,
            None => s.flush().expect_err("must fail"),
        };
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert!(e.to_string().contains("peer went away"), "{e}");
        let e = Box::new(s).finish().expect_err("must fail");
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn len_beyond_the_buffer_is_refused() {
        let mut s =
            OffloadSink::spawn(Box::new(Recorder::default()), "t".into()).expect("must work");
        let e = s.write_owned(vec![0; 10], 11).expect_err("must fail");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
