//! Moving bytes between files and data connections: zero-copy `sendfile`
//! for plain downloads, large-buffer loops otherwise, and a token-bucket
//! rate limiter.

use std::io::{self, BufRead, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use storage_api::{ReadHandle, WriteHandle};
use uftp_datachannel::iobuf::IoBuf;
use uftp_datachannel::lowat::LowWater;
use uftp_datachannel::{DataReader, DataWriter, SendFileError};

/// Largest single sendfile call.
const SENDFILE_CHUNK: usize = 1 << 30;

/// A token bucket: on average `rate` bytes per second, bursts of at most
/// a tenth of a second's worth (and at least 16 KiB).
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A limiter for `rate` bytes per second.
    pub fn new(rate: u64) -> Self {
        let rate = rate.max(1) as f64;
        let capacity = (rate / 10.0).max(16384.0);
        RateLimiter {
            rate,
            capacity,
            tokens: capacity,
            last: Instant::now(),
        }
    }

    /// Largest chunk to move before asking again.
    pub fn chunk(&self) -> usize {
        self.capacity as usize
    }

    /// Accounts for `n` bytes, sleeping as long as needed to keep the rate.
    pub fn take(&mut self, n: usize) {
        let wait = self.account(n, Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
            self.last = Instant::now();
        }
    }

    /// Accounts for `n` bytes at time `now`; returns how long to wait.
    fn account(&mut self, n: usize, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.tokens -= n as f64;
        if self.tokens < 0.0 {
            let wait = -self.tokens / self.rate;
            self.tokens = 0.0;
            Duration::from_secs_f64(wait)
        } else {
            Duration::ZERO
        }
    }
}

/// Where a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The data connection failed (peer gone, reset, timeout).
    #[error("data connection: {0}")]
    Network(io::Error),
    /// Reading or writing the file failed.
    #[error("file: {0}")]
    File(io::Error),
}

/// Accounts `n` bytes with the rate limiter, if there is one (sleeping to
/// keep the rate).
fn pace(rate: &mut Option<&mut RateLimiter>, n: usize) {
    if let Some(r) = rate.as_deref_mut() {
        r.take(n);
    }
}

/// A reader or writer kept to a rate limit (when there is one): each
/// call moves at most one limiter chunk and is accounted, sleeping as
/// long as needed. For the transfers that are not a plain file copy
/// (sync exchanges).
pub struct Paced<'a, T> {
    inner: T,
    rate: Option<&'a mut RateLimiter>,
}

impl<'a, T> Paced<'a, T> {
    /// Wraps `inner`; `None` passes everything through unpaced.
    pub fn new(inner: T, rate: Option<&'a mut RateLimiter>) -> Self {
        Paced { inner, rate }
    }

    fn cap(&self, len: usize) -> usize {
        self.rate.as_deref().map_or(len, |r| len.min(r.chunk()))
    }
}

impl<T: Read> Read for Paced<'_, T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let len = self.cap(buf.len());
        let n = self.inner.read(&mut buf[..len])?;
        pace(&mut self.rate, n);
        Ok(n)
    }
}

impl<T: Write> Write for Paced<'_, T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let len = self.cap(buf.len());
        let n = self.inner.write(&buf[..len])?;
        pace(&mut self.rate, n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Transfer parameters.
#[derive(Debug)]
pub struct Params<'a> {
    /// Buffer size for copy loops.
    pub buffer_size: usize,
    /// Whether zero-copy calls may be used.
    pub zero_copy: bool,
    /// Rate limiter, if the session has a limit.
    pub rate: Option<&'a mut RateLimiter>,
}

fn sendfile_loop(
    sock: BorrowedFd<'_>,
    file: RawFd,
    len: u64,
    mut rate: Option<&mut RateLimiter>,
) -> Result<u64, TransferError> {
    // SAFETY: the file descriptor belongs to the ReadHandle, which the
    // caller keeps alive (borrowed) for the whole call.
    let file = unsafe { BorrowedFd::borrow_raw(file) };
    let mut sent = 0u64;
    while sent < len {
        let mut want = usize::try_from(len - sent)
            .unwrap_or(SENDFILE_CHUNK)
            .min(SENDFILE_CHUNK);
        if let Some(r) = rate.as_deref() {
            want = want.min(r.chunk());
        }
        match nix::sys::sendfile::sendfile(sock, file, None, want) {
            Ok(0) => break,
            Ok(n) => {
                sent += n as u64;
                pace(&mut rate, n);
            }
            Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => continue,
            Err(e @ (nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS)) if sent == 0 => {
                // File system without sendfile support: caller falls back.
                return Err(TransferError::File(e.into()));
            }
            Err(e) => {
                let e = io::Error::from(e);
                return Err(match e.kind() {
                    io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::WouldBlock
                    | io::ErrorKind::TimedOut => TransferError::Network(e),
                    _ if e.raw_os_error() == Some(libc::EIO) => TransferError::File(e),
                    _ => TransferError::Network(e),
                });
            }
        }
    }
    Ok(sent)
}

/// Sends up to `len` bytes of `file` (already positioned) to `sock`.
/// Returns the bytes sent; fewer than `len` means the file ended early.
pub fn send_file(
    file: &mut dyn ReadHandle,
    len: u64,
    sock: &mut TcpStream,
    p: Params<'_>,
) -> Result<u64, TransferError> {
    let Params {
        buffer_size,
        zero_copy,
        mut rate,
    } = p;
    if zero_copy && let Some(fd) = file.raw_fd() {
        match sendfile_loop(sock.as_fd(), fd, len, rate.as_deref_mut()) {
            Err(TransferError::File(e))
                if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) => {}
            other => return other,
        }
    }
    let mut buf = IoBuf::new(buffer_size.max(4096));
    let mut sent = 0u64;
    while sent < len {
        let mut want = usize::try_from(len - sent)
            .unwrap_or(buf.len())
            .min(buf.len());
        if let Some(r) = rate.as_deref() {
            want = want.min(r.chunk());
        }
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(TransferError::File(e)),
        };
        sock.write_all(&buf[..n]).map_err(TransferError::Network)?;
        sent += n as u64;
        pace(&mut rate, n);
    }
    Ok(sent)
}

/// Bytes moved per splice call (also the pipe size asked for).
const SPLICE_CHUNK: usize = 1 << 20;

/// How a zero-copy receive ended.
enum Spliced {
    /// All data arrived (end of stream or limit).
    Done(u64),
    /// The file cannot be spliced to (e.g. opened for appending); `0`
    /// bytes so far went through, continue with read/write.
    Unsupported(u64),
}

/// Moves data from the socket to the file through a pipe with splice(2):
/// the bytes never enter user space.
fn splice_loop(
    sock: &TcpStream,
    file: RawFd,
    limit: Option<u64>,
    mut rate: Option<&mut RateLimiter>,
) -> Result<Spliced, TransferError> {
    use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
    // SAFETY: the descriptor belongs to the WriteHandle, which the caller
    // keeps borrowed for the whole call.
    let file = unsafe { BorrowedFd::borrow_raw(file) };
    let (pipe_r, pipe_w) = match nix::unistd::pipe2(OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(_) => return Ok(Spliced::Unsupported(0)),
    };
    // A bigger pipe means fewer calls; the default (64 KiB) still works.
    let _ = fcntl(&pipe_w, FcntlArg::F_SETPIPE_SZ(SPLICE_CHUNK as i32));
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_MORE;
    let mut total = 0u64;
    let mut low_water = rate.is_none().then(|| LowWater::new(sock, limit));
    loop {
        let mut want = SPLICE_CHUNK;
        if let Some(l) = limit {
            if total >= l {
                break;
            }
            want = want.min(usize::try_from(l - total).unwrap_or(want));
        }
        if let Some(lw) = &mut low_water {
            lw.fit(limit.map(|l| l.saturating_sub(total)));
        }
        if let Some(r) = rate.as_deref() {
            want = want.min(r.chunk());
        }
        let n = match splice(sock.as_fd(), None, &pipe_w, None, want, flags) {
            Ok(0) => break,
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EINVAL) if total == 0 => return Ok(Spliced::Unsupported(0)),
            Err(e) => return Err(TransferError::Network(e.into())),
        };
        let mut left = n;
        while left > 0 {
            match splice(&pipe_r, None, file, None, left, flags) {
                Ok(0) => {
                    return Err(TransferError::File(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "file accepted no data",
                    )));
                }
                Ok(m) => left -= m,
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EINVAL) if total == 0 && left == n => {
                    // The file cannot take spliced data: copy what is in
                    // the pipe, and the caller goes on with read/write.
                    copy_pipe(&pipe_r, file, left)?;
                    return Ok(Spliced::Unsupported(n as u64));
                }
                Err(e) => return Err(TransferError::File(e.into())),
            }
        }
        total += n as u64;
        pace(&mut rate, n);
    }
    Ok(Spliced::Done(total))
}

/// Empties `len` bytes of a pipe into the file with read/write.
fn copy_pipe(
    pipe: &std::os::fd::OwnedFd,
    file: BorrowedFd<'_>,
    len: usize,
) -> Result<(), TransferError> {
    let mut buf = IoBuf::new(len);
    let mut got = 0;
    while got < len {
        match nix::unistd::read(pipe, &mut buf[got..]) {
            Ok(0) => break,
            Ok(m) => got += m,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(TransferError::File(e.into())),
        }
    }
    let mut done = 0;
    while done < got {
        match nix::unistd::write(file, &buf[done..got]) {
            Ok(m) => done += m,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(TransferError::File(e.into())),
        }
    }
    Ok(())
}

/// Receives from `sock` into `file` until `limit` bytes or end of stream.
/// Returns the bytes written.
pub fn receive_file(
    sock: &TcpStream,
    file: &mut dyn WriteHandle,
    limit: Option<u64>,
    p: Params<'_>,
) -> Result<u64, TransferError> {
    let Params {
        buffer_size,
        zero_copy,
        mut rate,
    } = p;
    let mut total = 0u64;
    if zero_copy && let Some(fd) = file.raw_fd() {
        match splice_loop(sock, fd, limit, rate.as_deref_mut())? {
            Spliced::Done(n) => return Ok(n),
            Spliced::Unsupported(n) => total = n,
        }
    }
    let mut buf = IoBuf::new(buffer_size.max(4096));
    let mut low_water = rate
        .is_none()
        .then(|| LowWater::new(sock, limit.map(|l| l.saturating_sub(total))));
    loop {
        let mut want = buf.len();
        if let Some(l) = limit {
            if total >= l {
                break;
            }
            want = want.min(usize::try_from(l - total).unwrap_or(want));
        }
        if let Some(lw) = &mut low_water {
            lw.fit(limit.map(|l| l.saturating_sub(total)));
        }
        if let Some(r) = rate.as_deref() {
            want = want.min(r.chunk());
        }
        let n = match (&mut &*sock).read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(TransferError::Network(e)),
        };
        file.write_all(&buf[..n]).map_err(TransferError::File)?;
        total += n as u64;
        pace(&mut rate, n);
    }
    Ok(total)
}

/// Remembers a file read error so that it can be told apart from a
/// failure of the data channel that consumes the reader.
struct FileReader<'a> {
    inner: &'a mut dyn ReadHandle,
    left: u64,
    error: Option<io::Error>,
}

impl Read for FileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = usize::try_from(self.left)
            .unwrap_or(buf.len())
            .min(buf.len());
        loop {
            match self.inner.read(&mut buf[..want]) {
                Ok(n) => {
                    self.left -= n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let copy = io::Error::new(e.kind(), e.to_string());
                    self.error = Some(e);
                    return Err(copy);
                }
            }
        }
    }
}

/// Remembers the file's own error, so that a transfer mixing file and
/// network I/O in one call can tell which side failed.
struct FileSide<'a, F: ?Sized> {
    file: &'a mut F,
    failed: Option<io::Error>,
}

impl<F: Read + ?Sized> Read for FileSide<'_, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf).inspect_err(|e| {
            self.failed = Some(io::Error::new(e.kind(), e.to_string()));
        })
    }
}

impl<F: Write + ?Sized> Write for FileSide<'_, F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf).inspect_err(|e| {
            self.failed = Some(io::Error::new(e.kind(), e.to_string()));
        })
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl<F: ?Sized> FileSide<'_, F> {
    fn error(self, e: io::Error) -> TransferError {
        match self.failed {
            Some(f) => TransferError::File(f),
            None => TransferError::Network(e),
        }
    }
}

/// Sends up to `len` bytes of `file` over the plain multi-stream
/// connections `conns` and leaves them open (KEEP-ALIVE).
pub fn send_kept(
    file: &mut dyn ReadHandle,
    len: u64,
    conns: &mut [TcpStream],
    mut rate: Option<&mut RateLimiter>,
) -> Result<u64, TransferError> {
    let mut src = FileSide { file, failed: None };
    let mut each_block = |n: usize| pace(&mut rate, n);
    match uftp_datachannel::kept::send_kept(&mut src, len, conns, &mut each_block) {
        Ok(n) => Ok(n),
        Err(e) => Err(src.error(e)),
    }
}

/// Receives exactly `len` bytes over the plain multi-stream connections
/// `conns` into `file` and leaves the connections open (KEEP-ALIVE).
pub fn receive_kept(
    conns: &mut [TcpStream],
    file: &mut dyn WriteHandle,
    len: u64,
    mut rate: Option<&mut RateLimiter>,
) -> Result<u64, TransferError> {
    let mut dst = FileSide { file, failed: None };
    let mut each_block = |n: usize| pace(&mut rate, n);
    match uftp_datachannel::kept::receive_kept(conns, &mut dst, len, &mut each_block) {
        Ok(n) => Ok(n),
        Err(e) => Err(dst.error(e)),
    }
}

/// Sends up to `len` bytes of `file` through a codec / multi-stream
/// channel (the caller finishes the channel). Returns the bytes sent.
pub fn send_to_channel(
    file: &mut dyn ReadHandle,
    len: u64,
    w: &mut DataWriter,
    p: Params<'_>,
) -> Result<u64, TransferError> {
    let Params {
        buffer_size,
        zero_copy,
        rate,
    } = p;
    if zero_copy
        && rate.is_none()
        && let Some(fd) = file.raw_fd()
    {
        // SAFETY: the descriptor belongs to the ReadHandle, which the
        // caller keeps alive (borrowed) for the whole call.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        // Plain multi-stream: frames straight out of the mapped file.
        match w.send_file(fd, len) {
            Ok(Some(n)) => return Ok(n),
            Ok(None) => {}
            Err(SendFileError::File(e)) => return Err(TransferError::File(e)),
            Err(SendFileError::Channel(e)) => return Err(TransferError::Network(e)),
            Err(e) => return Err(TransferError::Network(io::Error::other(e))),
        }
    }
    let mut src = FileReader {
        inner: file,
        left: len,
        error: None,
    };
    let Some(r) = rate else {
        // Reads straight into the channel's block buffers.
        return w.copy_from(&mut src).map_err(|e| match src.error.take() {
            Some(fe) => TransferError::File(fe),
            None => TransferError::Network(e),
        });
    };
    let mut buf = IoBuf::new(buffer_size.max(4096).min(r.chunk().max(4096)));
    let mut sent = 0u64;
    loop {
        let want = buf.len().min(r.chunk());
        let n = match src.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return Err(TransferError::File(src.error.take().unwrap_or(e))),
        };
        w.write_all(&buf[..n]).map_err(TransferError::Network)?;
        // Paced: send the complete blocks now rather than a batch later.
        w.send_blocks().map_err(TransferError::Network)?;
        sent += n as u64;
        r.take(n);
    }
    Ok(sent)
}

/// Receives everything a codec / multi-stream channel delivers into
/// `file`; at most `limit` bytes are written, more is an error. Returns the
/// bytes written.
///
/// Writes straight from the channel's buffers ([`DataReader::write_to`]):
/// a multi-stream channel's frame payloads go to the file in one `writev`
/// per call (through a duplicate of the handle's descriptor, as the
/// handle's own `write_vectored` may write one slice per call), a single
/// codec stream's decoded buffers in one `write` each.
pub fn receive_from_channel(
    r: &mut DataReader,
    file: &mut dyn WriteHandle,
    limit: Option<u64>,
    p: Params<'_>,
) -> Result<u64, TransferError> {
    let Params { mut rate, .. } = p;
    let mut direct: Option<std::fs::File> = match file.raw_fd() {
        // SAFETY: the descriptor belongs to the WriteHandle, which the
        // caller keeps alive (borrowed) for the whole call.
        Some(fd) => unsafe { BorrowedFd::borrow_raw(fd) }
            .try_clone_to_owned()
            .ok()
            .map(std::fs::File::from),
        None => None,
    };
    let mut total = 0u64;
    loop {
        let mut max = usize::MAX;
        if let Some(l) = rate.as_deref() {
            max = l.chunk().max(1);
        }
        if let Some(l) = limit {
            let left = usize::try_from(l - total).unwrap_or(usize::MAX);
            if left == 0 {
                // All announced bytes are in: anything more is an error.
                match r.fill_buf() {
                    Ok([]) => break,
                    Ok(_) => {
                        return Err(TransferError::Network(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("client sent more than the announced {l} bytes"),
                        )));
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(TransferError::Network(e)),
                }
            }
            max = max.min(left);
        }
        let mut out = FileWriter {
            inner: match direct.as_mut() {
                Some(f) => f,
                None => &mut *file,
            },
            error: None,
        };
        let n = match r.write_to(&mut out, max) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted && out.error.is_none() => continue,
            Err(e) => {
                return Err(match out.error.take() {
                    Some(fe) => TransferError::File(fe),
                    None => TransferError::Network(e),
                });
            }
        };
        total += n as u64;
        pace(&mut rate, n);
    }
    Ok(total)
}

/// Remembers a file write error so that it can be told apart from a
/// failure of the data channel that feeds the writer.
struct FileWriter<'a> {
    inner: &'a mut dyn Write,
    error: Option<io::Error>,
}

impl FileWriter<'_> {
    fn note<T>(&mut self, r: io::Result<T>) -> io::Result<T> {
        r.map_err(|e| {
            let copy = io::Error::new(e.kind(), e.to_string());
            if e.kind() != io::ErrorKind::Interrupted {
                self.error = Some(e);
            }
            copy
        })
    }
}

impl Write for FileWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.inner.write(buf);
        self.note(r)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let r = self.inner.write_vectored(bufs);
        self.note(r)
    }

    fn flush(&mut self) -> io::Result<()> {
        let r = self.inner.flush();
        self.note(r)
    }
}

/// Writes a whole buffer to the data connection (listings).
pub fn send_bytes(
    sock: &mut TcpStream,
    data: &[u8],
    rate: Option<&mut RateLimiter>,
) -> Result<(), TransferError> {
    match rate {
        None => sock.write_all(data).map_err(TransferError::Network),
        Some(r) => {
            for chunk in data.chunks(r.chunk().max(1)) {
                sock.write_all(chunk).map_err(TransferError::Network)?;
                r.take(chunk.len());
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_accounts_tokens() {
        let mut r = RateLimiter::new(1_000_000);
        let t0 = r.last;
        assert_eq!(r.chunk(), 100_000);
        // the burst allowance is free
        assert_eq!(r.account(100_000, t0), Duration::ZERO);
        // 50 kB more at 1 MB/s: wait 50 ms
        assert_eq!(r.account(50_000, t0), Duration::from_millis(50));
        // after a full second the bucket is full again, not more
        let later = t0 + Duration::from_secs(5);
        assert_eq!(r.account(100_000, later), Duration::ZERO);
        assert_eq!(r.account(1_000, later), Duration::from_millis(1));
    }
}
