//! Receive low-water marks for bulk receivers.
//!
//! A TCP receiver blocked in `recv` or `splice` is woken for every
//! segment that arrives (64 KiB on loopback). When it keeps up with the
//! sender, that is one wakeup, and one short read, per segment; the
//! sender pays for the wakeups too, as on loopback the receive side runs
//! in its context. `SO_RCVLOWAT` makes the kernel wake the receiver only
//! once that many bytes are queued (or at end of stream, an error, or the
//! receive timeout). A uftpc download of 2 GiB from uftpd on the
//! benchmark machine: 3.2-4.5 GB/s at 0.23-0.31 server CPU s/GiB with a
//! 256 KiB mark, 2.3-2.8 GB/s at 0.36-0.44 without (BENCHMARKS.md,
//! "Plain single stream on loopback").
//!
//! The mark must never exceed the bytes still expected on a connection
//! that the peer keeps open afterwards, or the last read would wait for
//! the receive timeout: [`LowWater::fit`] lowers it as the end nears. And
//! it must not outlive the transfer: a connection kept open (KEEP-ALIVE)
//! may carry a sync exchange or a rate-limited upload next, whose small
//! reads would otherwise wait for bytes that never come. Dropping the
//! [`LowWater`] puts the mark back to 1 byte.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;

/// The mark for bulk transfers.
pub const BULK_LOW_WATER: usize = 256 * 1024;

/// Sets `SO_RCVLOWAT` of `sock` (Linux caps it at half the largest
/// receive buffer).
pub fn set_receive_low_water(sock: &TcpStream, bytes: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes.max(1)).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is borrowed from a live TcpStream for the
    // call; the option value points to a c_int on our stack and its
    // length is given as its size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The low-water mark of one receiving connection for one transfer:
/// [`BULK_LOW_WATER`], or the bytes still expected when fewer; back to 1
/// byte (the kernel's default) when dropped. Best effort: a kernel that
/// refuses the option leaves the default.
#[derive(Debug)]
pub struct LowWater<'a> {
    sock: &'a TcpStream,
    current: usize,
}

impl<'a> LowWater<'a> {
    /// Sets the mark of `sock` for `remaining` expected bytes (`None`:
    /// unknown, the peer ends the stream by closing it).
    pub fn new(sock: &'a TcpStream, remaining: Option<u64>) -> LowWater<'a> {
        let want = Self::want(remaining);
        let current = match set_receive_low_water(sock, want) {
            Ok(()) => want,
            Err(_) => 1,
        };
        LowWater { sock, current }
    }

    /// Lowers the mark when fewer bytes than it are still expected.
    pub fn fit(&mut self, remaining: Option<u64>) {
        let want = Self::want(remaining);
        if want < self.current {
            self.current = match set_receive_low_water(self.sock, want) {
                Ok(()) => want,
                // A mark above what is still to come must not stay: fall
                // back to 1 byte if the kernel takes that.
                Err(_) => set_receive_low_water(self.sock, 1).map_or(self.current, |()| 1),
            };
        }
    }

    fn want(remaining: Option<u64>) -> usize {
        match remaining {
            Some(r) => usize::try_from(r)
                .unwrap_or(usize::MAX)
                .clamp(1, BULK_LOW_WATER),
            None => BULK_LOW_WATER,
        }
    }
}

impl Drop for LowWater<'_> {
    /// The transfer is over (done or failed): whatever reads the
    /// connection next must be woken by its first byte again.
    fn drop(&mut self) {
        if self.current > 1 {
            let _ = set_receive_low_water(self.sock, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (b, _) = l.accept().expect("accept");
        (a, b)
    }

    fn mark(s: &TcpStream) -> i32 {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: valid descriptor, value and length point to our locals.
        let rc = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        v
    }

    #[test]
    fn the_mark_follows_what_is_left() {
        let (_a, b) = pair();
        let mut lw = LowWater::new(&b, None);
        assert_eq!(mark(&b), BULK_LOW_WATER as i32);
        lw.fit(Some(10_000_000));
        assert_eq!(mark(&b), BULK_LOW_WATER as i32);
        lw.fit(Some(5000));
        assert_eq!(mark(&b), 5000);
        lw.fit(Some(6000)); // never raised again
        assert_eq!(mark(&b), 5000);
        lw.fit(Some(0));
        assert_eq!(mark(&b), 1);
        let (_c, d) = pair();
        let lw = LowWater::new(&d, Some(3));
        assert_eq!(mark(&d), 3);
        drop(lw);
        assert_eq!(mark(&d), 1);
    }

    /// A transfer whose last read took everything leaves the mark at the
    /// bulk size until the LowWater goes; then a small read on the kept
    /// connection (the next transfer, a sync exchange) is not held back.
    #[test]
    fn the_mark_goes_with_the_transfer() {
        let (mut a, b) = pair();
        b.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        {
            let mut lw = LowWater::new(&b, Some(1 << 20));
            a.write_all(&vec![3u8; 1 << 20]).expect("write");
            let mut got = 0usize;
            let mut buf = vec![0u8; 1 << 20];
            while got < 1 << 20 {
                lw.fit(Some(((1 << 20) - got) as u64));
                got += (&b).read(&mut buf[..(1 << 20) - got]).expect("read");
            }
        }
        assert_eq!(mark(&b), 1);
        a.write_all(b"next").expect("write");
        let t = Instant::now();
        let mut buf = [0u8; 64];
        let n = (&b).read(&mut buf).expect("read");
        assert_eq!(&buf[..n], b"next");
        assert!(
            t.elapsed() < Duration::from_secs(4),
            "waited {:?}",
            t.elapsed()
        );
    }

    /// The last bytes of a connection that stays open arrive at once when
    /// the mark was fitted, not after the receive timeout.
    #[test]
    fn a_fitted_mark_does_not_wait_for_the_timeout() {
        let (mut a, b) = pair();
        b.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut lw = LowWater::new(&b, Some(100_000));
        a.write_all(&[7u8; 100_000]).expect("write");
        let mut got = 0usize;
        let mut buf = vec![0u8; 300_000];
        let t = Instant::now();
        while got < 100_000 {
            lw.fit(Some((100_000 - got) as u64));
            got += (&b).read(&mut buf).expect("read");
        }
        assert_eq!(got, 100_000);
        assert!(
            t.elapsed() < Duration::from_secs(4),
            "waited {:?}",
            t.elapsed()
        );
    }

    /// The kernel honours the mark: with fewer bytes queued on an open
    /// connection, a read returns them only at the receive timeout (what
    /// `fit` is there to avoid).
    #[test]
    fn an_unfitted_mark_waits_for_the_timeout() {
        let (mut a, b) = pair();
        b.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let _lw = LowWater::new(&b, None);
        a.write_all(&[1u8; 5000]).expect("write");
        let t = Instant::now();
        let mut buf = vec![0u8; 300_000];
        let n = (&b).read(&mut buf).expect("read");
        assert_eq!(n, 5000);
        assert!(
            t.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
    }

    /// With the bulk mark and fewer bytes queued, end of stream still ends
    /// the read.
    #[test]
    fn end_of_stream_wakes_the_reader() {
        let (mut a, b) = pair();
        b.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let _lw = LowWater::new(&b, None);
        a.write_all(b"short").expect("write");
        drop(a);
        let t = Instant::now();
        let mut out = Vec::new();
        (&b).read_to_end(&mut out).expect("read");
        assert_eq!(out, b"short");
        assert!(
            t.elapsed() < Duration::from_secs(4),
            "waited {:?}",
            t.elapsed()
        );
    }
}
