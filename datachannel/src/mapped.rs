//! Sending a file over a plain multi-stream channel without copying it
//! into user memory: the file is mapped in windows, and each stream worker
//! hands the kernel `writev` vectors of its frame headers and of payload
//! slices inside the mapping; the kernel copies page cache -> socket once
//! (a read into a buffer and a write from it copy every byte twice).
//!
//! For plain frames the mapping is NEVER read by this process, only by the
//! kernel as the source of `writev`, and no Rust reference to it is ever
//! made. That is what makes a file that shrinks under us harmless: a page
//! beyond the new end makes `writev` fail with `EFAULT` (a fault inside a
//! system call is reported as an error), where a read from user space
//! would raise SIGBUS. Codecs have to read their input: they get guarded
//! mappings (`map_guarded`, see the `sigbus` module), where such a read
//! returns zeros and marks the mapping damaged, which fails the transfer.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::ptr;

use crate::frame::{FramePart, HEADER_LEN, plan_frames};
use crate::sigbus::Guard;

/// A read-only shared mapping of part of a file.
pub(crate) struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
    /// Set for mappings that this process reads (see `map_guarded`).
    guard: Option<Guard>,
}

// SAFETY: the mapping is read-only and unmapped once, by whichever thread
// drops the last reference. A plain mapping is only an address range
// handed to the kernel (`writev` sources); a guarded one is also read
// through `guarded_slice`, whose borrows cannot outlive the mapping, and
// any thread may read shared read-only memory at the same time.
unsafe impl Send for Mapping {}
// SAFETY: as for `Send`: shared references only read the address or the
// read-only bytes.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // Unregister first: once unmapped, the addresses may be reused by
        // another mapping, whose faults are none of the guard's business.
        drop(self.guard.take());
        // SAFETY: `ptr`/`len` are a mapping made by `map` and not yet
        // unmapped; nothing refers into it any more (the last batch using
        // it is being dropped).
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

impl Mapping {
    /// Maps `len` bytes of `file` from `offset` (a multiple of the page
    /// size) for reading.
    pub(crate) fn map(file: BorrowedFd<'_>, offset: u64, len: usize) -> io::Result<Mapping> {
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset too large"))?;
        // SAFETY: a new shared read-only mapping chosen by the kernel; it
        // overlaps nothing of ours and is unmapped in `Drop`.
        let ptr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                off,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: advice on our own mapping; failure is harmless.
        unsafe { libc::madvise(ptr, len, libc::MADV_SEQUENTIAL) };
        Ok(Mapping {
            ptr,
            len,
            guard: None,
        })
    }

    /// Like [`map`](Self::map), for a mapping that this process reads
    /// (a codec's input): registered with the SIGBUS guard, so that a file
    /// that shrinks meanwhile reads as zeros and [`damaged`](Self::damaged)
    /// turns true instead of the process being killed. Fails where the
    /// guard is not available (the caller then reads the file instead).
    pub(crate) fn map_guarded(
        file: BorrowedFd<'_>,
        offset: u64,
        len: usize,
    ) -> io::Result<Mapping> {
        let mut m = Mapping::map(file, offset, len)?;
        match Guard::register(m.ptr as usize, len) {
            Some(g) => {
                m.guard = Some(g);
                Ok(m)
            }
            None => Err(io::Error::other("no SIGBUS guard for the mapping")),
        }
    }

    /// Bytes `[off, off + len)` of a guarded mapping (`None` for a mapping
    /// that is not guarded, or a range outside it).
    pub(crate) fn guarded_slice(&self, off: usize, len: usize) -> Option<&[u8]> {
        self.guard.as_ref()?;
        if off.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: the range lies inside a live read-only mapping (checked
        // above) that lives as long as `&self`. Reading it cannot fault
        // fatally: the mapping is guarded, a page past the end of a file
        // that shrank is replaced by zeros (see `sigbus`). Another process
        // writing the file may change the bytes while they are borrowed;
        // `u8` has no invalid values, and the codecs read each byte as
        // plain data (the same contract as sendfile: what the page cache
        // holds when it is read is sent).
        Some(unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>().add(off), len) })
    }

    /// Whether a guarded mapping lost pages to a shrinking file.
    pub(crate) fn damaged(&self) -> bool {
        self.guard.as_ref().is_some_and(Guard::hit)
    }

    /// Length of the mapping.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// Bytes `[off, off + len)` of a mapping, cut into blocks of `block`
/// bytes numbered from `seq`: one batch of a mapped file.
pub(crate) struct MappedBatch {
    pub(crate) map: std::sync::Arc<Mapping>,
    pub(crate) off: usize,
    pub(crate) len: usize,
    pub(crate) seq: u32,
    pub(crate) block: usize,
}

/// Size of a page (mapping offsets are multiples of it).
pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}

/// Size and current position of a regular file; `None` for anything else
/// (or when the descriptor cannot tell).
pub(crate) fn size_and_position(file: BorrowedFd<'_>) -> Option<(u64, u64)> {
    let fd = file.as_raw_fd();
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open (borrowed); `st` is a writable stat buffer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return None;
    }
    // SAFETY: lseek on an open descriptor; SEEK_CUR by 0 only reads the
    // position.
    let pos = unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) };
    Some((u64::try_from(st.st_size).ok()?, u64::try_from(pos).ok()?))
}

/// Moves the file position to `to`.
pub(crate) fn seek_to(file: BorrowedFd<'_>, to: u64) {
    if let Ok(to) = libc::off_t::try_from(to) {
        // SAFETY: lseek on an open (borrowed) descriptor.
        unsafe { libc::lseek(file.as_raw_fd(), to, libc::SEEK_SET) };
    }
}

/// Largest vector one `writev` takes (IOV_MAX on Linux).
const IOV_MAX: usize = 1024;

/// Writes stream `i`'s frames of every block of `b` to the socket `fd`:
/// headers from `parts` (scratch space), payloads from the mapping.
pub(crate) fn write_mapped(
    fd: RawFd,
    i: usize,
    n: usize,
    b: &MappedBatch,
    parts: &mut Vec<FramePart>,
) -> io::Result<()> {
    plan_frames(parts, i, n, b.seq, b.len, b.block);
    let base = b.map.ptr.cast::<u8>();
    let mut iov = Vec::with_capacity(2 * parts.len());
    for p in parts.iter() {
        iov.push(libc::iovec {
            iov_base: p.header.as_ptr().cast_mut().cast(),
            iov_len: HEADER_LEN,
        });
        if p.len > 0 {
            // Address arithmetic only: within the mapping, never read here.
            let at = b.off + p.off;
            debug_assert!(at + p.len <= b.map.len());
            iov.push(libc::iovec {
                iov_base: base.wrapping_add(at).cast(),
                iov_len: p.len,
            });
        }
    }
    let mut k = 0;
    while k < iov.len() {
        let cnt = (iov.len() - k).min(IOV_MAX) as libc::c_int;
        // SAFETY: `iov[k..k + cnt]` describe the headers in `parts` (alive,
        // not moved during the call) and ranges inside a live mapping (the
        // batch holds it); the kernel only reads them. A mapped page past
        // the end of a file that shrank makes the call fail with EFAULT.
        let r = unsafe { libc::writev(fd, iov[k..].as_ptr(), cnt) };
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EFAULT) => {
                    return Err(io::Error::other(
                        "the file shrank while it was being sent (EFAULT)",
                    ));
                }
                _ => return Err(e),
            }
        }
        if r == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "failed to write frame",
            ));
        }
        let mut r = r as usize;
        while k < iov.len() && r >= iov[k].iov_len {
            r -= iov[k].iov_len;
            k += 1;
        }
        if r > 0 {
            let v = &mut iov[k];
            v.iov_base = v.iov_base.cast::<u8>().wrapping_add(r).cast();
            v.iov_len -= r;
        }
    }
    Ok(())
}
