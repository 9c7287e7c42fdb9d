//! A bounded in-memory byte pipe with TCP-like semantics, for tests and
//! for wiring a data channel to something in the same process.
//!
//! The writer blocks while the pipe is full; the reader blocks while it is
//! empty and reads end of file once the writer is finished or dropped.
//! Writing after the reader is gone is `BrokenPipe`; an aborted pipe fails
//! both sides with `ConnectionAborted`.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::stream::{Abort, SinkStream, SourceStream};

#[derive(Debug)]
struct State {
    buf: VecDeque<u8>,
    cap: usize,
    write_closed: bool,
    read_closed: bool,
    aborted: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    cond: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the byte queue in a
        // state worse than "some bytes", so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, g: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.cond.wait(g).unwrap_or_else(|p| p.into_inner())
    }
}

/// Write end of a [`pipe`].
#[derive(Debug)]
pub struct PipeWriter(Arc<Shared>);

/// Read end of a [`pipe`].
#[derive(Debug)]
pub struct PipeReader(Arc<Shared>);

/// Makes a pipe holding at most `capacity` bytes (at least 1).
pub fn pipe(capacity: usize) -> (PipeWriter, PipeReader) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            buf: VecDeque::with_capacity(capacity.max(1)),
            cap: capacity.max(1),
            write_closed: false,
            read_closed: false,
            aborted: false,
        }),
        cond: Condvar::new(),
    });
    (PipeWriter(shared.clone()), PipeReader(shared))
}

fn aborted() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "pipe aborted")
}

impl PipeWriter {
    /// Ends the stream: the reader reads end of file after the buffered
    /// bytes.
    pub fn close(&mut self) {
        let mut g = self.0.lock();
        g.write_closed = true;
        self.0.cond.notify_all();
    }
}

impl Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let mut g = self.0.lock();
        loop {
            if g.aborted {
                return Err(aborted());
            }
            if g.read_closed {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "pipe reader is gone",
                ));
            }
            if g.write_closed {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "pipe writer is closed",
                ));
            }
            let room = g.cap - g.buf.len();
            if room > 0 {
                let n = room.min(data.len());
                g.buf.extend(&data[..n]);
                self.0.cond.notify_all();
                return Ok(n);
            }
            g = self.0.wait(g);
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        self.close();
    }
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut g = self.0.lock();
        loop {
            if g.aborted {
                return Err(aborted());
            }
            if !g.buf.is_empty() {
                let n = g.buf.len().min(buf.len());
                for (d, s) in buf.iter_mut().zip(g.buf.drain(..n)) {
                    *d = s;
                }
                self.0.cond.notify_all();
                return Ok(n);
            }
            if g.write_closed {
                return Ok(0);
            }
            g = self.0.wait(g);
        }
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        let mut g = self.0.lock();
        g.read_closed = true;
        self.0.cond.notify_all();
    }
}

struct PipeAbort(Arc<Shared>);

impl Abort for PipeAbort {
    fn abort(&self) {
        let mut g = self.0.lock();
        g.aborted = true;
        self.0.cond.notify_all();
    }
}

impl SinkStream for PipeWriter {
    fn finish_write(&mut self) -> io::Result<()> {
        self.close();
        Ok(())
    }

    fn abort_handle(&self) -> Option<Arc<dyn Abort>> {
        Some(Arc::new(PipeAbort(self.0.clone())))
    }
}

impl SourceStream for PipeReader {
    fn abort_handle(&self) -> Option<Arc<dyn Abort>> {
        Some(Arc::new(PipeAbort(self.0.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_flow_and_eof() {
        let (mut w, mut r) = pipe(4);
        let t = std::thread::spawn(move || {
            w.write_all(b"hello world").expect("write");
        });
        let mut out = Vec::new();
        r.read_to_end(&mut out).expect("read");
        t.join().expect("join");
        assert_eq!(out, b"hello world");
    }

    #[test]
    fn abort_unblocks_both_sides() {
        let (mut w, mut r) = pipe(1);
        let h = SinkStream::abort_handle(&w).expect("handle");
        w.write_all(b"x").expect("fits");
        let t = std::thread::spawn(move || w.write_all(b"blocked"));
        h.abort();
        let e = t.join().expect("join").expect_err("aborted");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
        assert_eq!(
            r.read(&mut [0; 4]).expect_err("aborted").kind(),
            io::ErrorKind::ConnectionAborted
        );
    }

    #[test]
    fn reader_gone_is_broken_pipe() {
        let (mut w, r) = pipe(8);
        drop(r);
        assert_eq!(
            w.write(b"x").expect_err("gone").kind(),
            io::ErrorKind::BrokenPipe
        );
    }
}
