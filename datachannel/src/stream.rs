//! What a data channel runs over: one connected byte stream per TCP
//! connection, split into a write side ([`SinkStream`]) and a read side
//! ([`SourceStream`]).
//!
//! Implemented for [`TcpStream`], [`UnixStream`], [`File`] and the
//! in-memory [`pipe`](crate::pipe). For a `TcpStream`, pass the stream
//! itself (or a `try_clone` of it).

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

/// Something that can break a stream from another thread, so that a thread
/// blocked reading or writing it returns (with an error or end of file).
pub trait Abort: Send + Sync {
    /// Breaks the stream. Must be idempotent.
    fn abort(&self);
}

/// The write side of one data stream.
pub trait SinkStream: Write + Send + 'static {
    /// Ends the stream after the last byte (a TCP stream shuts down its
    /// write side, so that the peer reads end of file). The default flushes.
    fn finish_write(&mut self) -> io::Result<()> {
        self.flush()
    }

    /// A handle that breaks this stream from another thread, if the stream
    /// supports it. Used to stop the other streams of a channel when one
    /// fails, so that no thread stays blocked on a dead transfer.
    fn abort_handle(&self) -> Option<Arc<dyn Abort>> {
        None
    }

    /// The descriptor to write to directly, if this is a socket or file:
    /// lets a plain multi-stream writer send file pages with `writev`
    /// (see [`DataWriter::send_file`](crate::DataWriter::send_file)).
    /// Writes through it must be equivalent to `write`s on the stream.
    fn raw_fd(&self) -> Option<RawFd> {
        None
    }
}

/// The read side of one data stream.
pub trait SourceStream: Read + Send + 'static {
    /// As [`SinkStream::abort_handle`].
    fn abort_handle(&self) -> Option<Arc<dyn Abort>> {
        None
    }

    /// The descriptor the stream reads from, if it is a socket or file: a
    /// reader polls it to see whether more has arrived already (never
    /// reads through it).
    fn raw_fd(&self) -> Option<RawFd> {
        None
    }
}

struct TcpAbort(TcpStream);

impl Abort for TcpAbort {
    fn abort(&self) {
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

impl SinkStream for TcpStream {
    fn finish_write(&mut self) -> io::Result<()> {
        self.flush()?;
        self.shutdown(Shutdown::Write)
    }

    fn abort_handle(&self) -> Option<Arc<dyn Abort>> {
        self.try_clone()
            .ok()
            .map(|s| Arc::new(TcpAbort(s)) as Arc<dyn Abort>)
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }
}

impl SourceStream for TcpStream {
    fn abort_handle(&self) -> Option<Arc<dyn Abort>> {
        SinkStream::abort_handle(self)
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }
}

struct UnixAbort(UnixStream);

impl Abort for UnixAbort {
    fn abort(&self) {
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

impl SinkStream for UnixStream {
    fn finish_write(&mut self) -> io::Result<()> {
        self.flush()?;
        self.shutdown(Shutdown::Write)
    }

    fn abort_handle(&self) -> Option<Arc<dyn Abort>> {
        self.try_clone()
            .ok()
            .map(|s| Arc::new(UnixAbort(s)) as Arc<dyn Abort>)
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }
}

impl SourceStream for UnixStream {
    fn abort_handle(&self) -> Option<Arc<dyn Abort>> {
        SinkStream::abort_handle(self)
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }
}

impl SinkStream for File {
    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }
}
impl SourceStream for File {}

impl SinkStream for Box<dyn SinkStream> {
    fn finish_write(&mut self) -> io::Result<()> {
        (**self).finish_write()
    }

    fn abort_handle(&self) -> Option<Arc<dyn Abort>> {
        (**self).abort_handle()
    }

    fn raw_fd(&self) -> Option<RawFd> {
        (**self).raw_fd()
    }
}

impl SourceStream for Box<dyn SourceStream> {
    fn abort_handle(&self) -> Option<Arc<dyn Abort>> {
        (**self).abort_handle()
    }

    fn raw_fd(&self) -> Option<RawFd> {
        (**self).raw_fd()
    }
}

impl SourceStream for io::Cursor<Vec<u8>> {}
impl SourceStream for io::Empty {}
impl SinkStream for io::Sink {}
