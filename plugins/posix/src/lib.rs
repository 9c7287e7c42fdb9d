//! POSIX storage backend: plain files on a local or parallel file system.
//!
//! A confined session (non-empty base directory) resolves every path
//! beneath an open handle of the base directory with `cap-std`, which uses
//! `openat2(RESOLVE_BENEATH)` where the kernel has it and a component-wise
//! `O_NOFOLLOW` walk otherwise. A symlink that points outside the base, an
//! absolute symlink, or a `..` that climbs above the base fails with
//! [`ErrorKind::OutsideBase`] (FTP 534) instead of being followed.
//!
//! An unconfined session (no base directory, start in `$HOME`) uses the
//! ordinary path-based calls.
//!
//! Files for data transfer are opened with `O_NONBLOCK`, so that a FIFO or
//! a device node never blocks the open; the opened descriptor is then
//! checked with `fstat` and anything that is not a regular file is refused
//! ([`ErrorKind::IsADirectory`], FTP 550, "not a regular file") before the
//! flag is cleared again.
//!
//! Privileges are not handled here: the daemon drops to the user's identity
//! before it opens the session storage, so every call runs with the user's
//! uid, gid and groups and files are created owned by the user.

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{MetadataExt as StdMetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use cap_fs_ext::{DirExt, OpenOptionsSyncExt, SystemTimeSpec};
use cap_std::fs::{Dir, MetadataExt as CapMetadataExt};
use storage_api::{
    DirEntry, ErrorKind, FileStat, FileType, LayoutHints, ReadHandle, Storage, StorageBackend,
    StorageError, StorageSpec, WriteHandle, WriteMode,
};

/// The POSIX backend (configuration name `posix`).
#[derive(Debug, Default, Clone)]
pub struct PosixBackend;

impl StorageBackend for PosixBackend {
    fn name(&self) -> &str {
        "posix"
    }

    fn open_session(&self, spec: &StorageSpec<'_>) -> Result<Box<dyn Storage>, StorageError> {
        Ok(Box::new(PosixStorage::open(spec.base, spec.confined)?))
    }
}

fn construct(
    _settings: &dyn Fn(&str) -> Option<String>,
) -> Result<Box<dyn StorageBackend>, String> {
    Ok(Box::new(PosixBackend))
}

inventory::submit! {
    storage_api::StorageDescriptor {
        name: "posix",
        version: env!("CARGO_PKG_VERSION"),
        description: "POSIX files, paths resolved beneath the base directory (openat2 RESOLVE_BENEATH)",
        constructor: construct,
    }
}

/// How paths are resolved.
#[derive(Debug)]
enum Root {
    /// Beneath an open directory handle.
    Confined { dir: Dir, base: PathBuf },
    /// Plain paths below `base` (usually `/`).
    Open { base: PathBuf },
}

/// Per-session POSIX storage.
#[derive(Debug)]
pub struct PosixStorage {
    root: Root,
}

impl PosixStorage {
    /// Opens the storage rooted at `base` (an absolute directory path).
    pub fn open(base: &Path, confined: bool) -> Result<Self, StorageError> {
        let root = if confined {
            let dir = Dir::open_ambient_dir(base, cap_std::ambient_authority())
                .map_err(|e| StorageError::io(base.display(), e))?;
            Root::Confined {
                dir,
                base: base.to_path_buf(),
            }
        } else {
            Root::Open {
                base: base.to_path_buf(),
            }
        };
        Ok(PosixStorage { root })
    }

    fn shown(&self, path: &Path) -> PathBuf {
        match &self.root {
            Root::Confined { base, .. } | Root::Open { base } => base.join(path),
        }
    }

    fn err(&self, path: &Path, e: io::Error) -> StorageError {
        StorageError::io(self.shown(path).display(), e)
    }

    /// `.` for the base itself, so that cap-std gets a non-empty path.
    fn rel(path: &Path) -> &Path {
        if path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            path
        }
    }
}

fn file_type_of(ft: fs::FileType) -> FileType {
    if ft.is_dir() {
        FileType::Dir
    } else if ft.is_file() {
        FileType::File
    } else if ft.is_symlink() {
        FileType::Symlink
    } else {
        FileType::Other
    }
}

fn stat_of_std(md: &fs::Metadata) -> FileStat {
    FileStat {
        file_type: file_type_of(md.file_type()),
        size: md.len(),
        mtime: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
    }
}

fn stat_of_cap(md: &cap_std::fs::Metadata) -> FileStat {
    let ft = md.file_type();
    let file_type = if ft.is_dir() {
        FileType::Dir
    } else if ft.is_file() {
        FileType::File
    } else if ft.is_symlink() {
        FileType::Symlink
    } else {
        FileType::Other
    };
    FileStat {
        file_type,
        size: md.len(),
        mtime: md
            .modified()
            .map(|t| t.into_std())
            .unwrap_or(SystemTime::UNIX_EPOCH),
        mode: CapMetadataExt::mode(md),
        uid: CapMetadataExt::uid(md),
        gid: CapMetadataExt::gid(md),
    }
}

/// A file opened for reading.
#[derive(Debug)]
struct PosixReader {
    file: fs::File,
}

impl Read for PosixReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl ReadHandle for PosixReader {
    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.file.as_raw_fd())
    }
}

/// A file opened for writing.
#[derive(Debug)]
struct PosixWriter {
    file: fs::File,
    shown: PathBuf,
}

impl Write for PosixWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl WriteHandle for PosixWriter {
    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.file.as_raw_fd())
    }
    fn finish(self: Box<Self>) -> Result<(), StorageError> {
        // Surface delayed write errors (NFS, quota) instead of losing them
        // in close(2).
        self.file
            .sync_data()
            .or_else(|e| match e.raw_os_error() {
                // Not every file system supports fdatasync; that is no error.
                Some(libc::EINVAL) | Some(libc::EROFS) => Ok(()),
                _ => Err(e),
            })
            .map_err(|e| StorageError::io(self.shown.display(), e))
    }
}

fn seek_to(file: &mut fs::File, offset: u64) -> io::Result<()> {
    use std::io::Seek;
    if offset > 0 {
        file.seek(io::SeekFrom::Start(offset))?;
    }
    Ok(())
}

/// Why an opened descriptor cannot be used for a data transfer.
#[derive(Debug)]
enum NotTransferable {
    /// A directory.
    Dir,
    /// A FIFO, socket or device node.
    Special,
    /// `fstat` or `fcntl` failed.
    Io(io::Error),
}

/// Checks that `file` (opened with `O_NONBLOCK`) is a regular file and
/// makes it blocking again, as the transfer code expects ordinary reads
/// and writes.
fn ensure_regular(file: &fs::File) -> Result<(), NotTransferable> {
    let md = file.metadata().map_err(NotTransferable::Io)?;
    let ft = md.file_type();
    if ft.is_dir() {
        return Err(NotTransferable::Dir);
    }
    if !ft.is_file() {
        return Err(NotTransferable::Special);
    }
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is the open descriptor owned by `file`, which lives for
    // the whole call; F_GETFL takes no further argument and only reads the
    // descriptor's status flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(NotTransferable::Io(io::Error::last_os_error()));
    }
    if flags & libc::O_NONBLOCK != 0 {
        // SAFETY: as above; F_SETFL with an int argument only changes the
        // status flags of this descriptor, here clearing O_NONBLOCK.
        let rc = unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) };
        if rc < 0 {
            return Err(NotTransferable::Io(io::Error::last_os_error()));
        }
    }
    Ok(())
}

impl PosixStorage {
    /// The error for a file that was opened but cannot be transferred.
    fn not_transferable(&self, path: &Path, why: NotTransferable) -> StorageError {
        match why {
            NotTransferable::Dir => StorageError::new(
                ErrorKind::IsADirectory,
                format!("{}: is a directory", self.shown(path).display()),
            ),
            NotTransferable::Special => self.not_regular(path),
            NotTransferable::Io(e) => self.err(path, e),
        }
    }

    /// The error for a FIFO, socket or device node (FTP 550).
    fn not_regular(&self, path: &Path) -> StorageError {
        StorageError::new(
            ErrorKind::IsADirectory,
            format!("{}: not a regular file", self.shown(path).display()),
        )
    }

    /// The error for a failed open for writing: a non-blocking open of a
    /// FIFO without a reader fails with `ENXIO`, which means "not a
    /// regular file" here, as does `ENODEV` for a device without a driver.
    fn open_write_err(&self, path: &Path, e: io::Error) -> StorageError {
        match e.raw_os_error() {
            Some(libc::ENXIO) | Some(libc::ENODEV) => StorageError::with_source(
                ErrorKind::IsADirectory,
                self.not_regular(path).to_string(),
                e,
            ),
            _ => self.err(path, e),
        }
    }
}

impl Storage for PosixStorage {
    fn stat(&self, path: &Path) -> Result<FileStat, StorageError> {
        match &self.root {
            Root::Confined { dir, .. } => dir
                .metadata(Self::rel(path))
                .map(|m| stat_of_cap(&m))
                .map_err(|e| self.err(path, e)),
            Root::Open { base } => fs::metadata(base.join(path))
                .map(|m| stat_of_std(&m))
                .map_err(|e| self.err(path, e)),
        }
    }

    fn list(&self, dir_path: &Path) -> Result<Vec<DirEntry>, StorageError> {
        let mut out = Vec::new();
        match &self.root {
            Root::Confined { dir, .. } => {
                let sub = dir
                    .open_dir(Self::rel(dir_path))
                    .map_err(|e| self.err(dir_path, e))?;
                for entry in sub.entries().map_err(|e| self.err(dir_path, e))? {
                    let Ok(entry) = entry else { continue };
                    let name = entry.file_name().to_string_lossy().into_owned();
                    // Follow symlinks that stay inside; show the link itself
                    // for those that dangle or lead outside.
                    let md = sub.metadata(&name).or_else(|_| entry.metadata());
                    if let Ok(md) = md {
                        out.push(DirEntry {
                            name,
                            stat: stat_of_cap(&md),
                        });
                    }
                }
            }
            Root::Open { base } => {
                let full = base.join(dir_path);
                for entry in fs::read_dir(&full).map_err(|e| self.err(dir_path, e))? {
                    let Ok(entry) = entry else { continue };
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let md = fs::metadata(entry.path()).or_else(|_| entry.metadata());
                    if let Ok(md) = md {
                        out.push(DirEntry {
                            name,
                            stat: stat_of_std(&md),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    fn open_read(&self, path: &Path, offset: u64) -> Result<Box<dyn ReadHandle>, StorageError> {
        let mut file = match &self.root {
            Root::Confined { dir, .. } => {
                let mut o = cap_std::fs::OpenOptions::new();
                o.read(true).nonblock(true);
                dir.open_with(Self::rel(path), &o)
                    .map(|f| f.into_std())
                    .map_err(|e| self.err(path, e))?
            }
            Root::Open { base } => fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(base.join(path))
                .map_err(|e| self.err(path, e))?,
        };
        ensure_regular(&file).map_err(|w| self.not_transferable(path, w))?;
        seek_to(&mut file, offset).map_err(|e| self.err(path, e))?;
        Ok(Box::new(PosixReader { file }))
    }

    fn open_write(
        &self,
        path: &Path,
        mode: WriteMode,
        _hints: &LayoutHints,
    ) -> Result<Box<dyn WriteHandle>, StorageError> {
        let mut file = match &self.root {
            Root::Confined { dir, .. } => {
                let mut o = cap_std::fs::OpenOptions::new();
                o.write(true).create(true).nonblock(true);
                match mode {
                    WriteMode::Truncate => {
                        o.truncate(true);
                    }
                    WriteMode::Append => {
                        o.append(true);
                    }
                    WriteMode::At(_) => {}
                }
                dir.open_with(Self::rel(path), &o)
                    .map(|f| f.into_std())
                    .map_err(|e| self.open_write_err(path, e))?
            }
            Root::Open { base } => {
                let mut o = fs::OpenOptions::new();
                o.write(true)
                    .create(true)
                    .mode(0o666)
                    .custom_flags(libc::O_NONBLOCK);
                match mode {
                    WriteMode::Truncate => {
                        o.truncate(true);
                    }
                    WriteMode::Append => {
                        o.append(true);
                    }
                    WriteMode::At(_) => {}
                }
                o.open(base.join(path))
                    .map_err(|e| self.open_write_err(path, e))?
            }
        };
        ensure_regular(&file).map_err(|w| self.not_transferable(path, w))?;
        if let WriteMode::At(offset) = mode {
            seek_to(&mut file, offset).map_err(|e| self.err(path, e))?;
        }
        Ok(Box::new(PosixWriter {
            file,
            shown: self.shown(path),
        }))
    }

    fn mkdir(&self, path: &Path) -> Result<(), StorageError> {
        match &self.root {
            Root::Confined { dir, .. } => dir.create_dir(Self::rel(path)),
            Root::Open { base } => fs::create_dir(base.join(path)),
        }
        .map_err(|e| self.err(path, e))
    }

    fn rmdir(&self, path: &Path) -> Result<(), StorageError> {
        if path.as_os_str().is_empty() {
            return Err(StorageError::new(
                ErrorKind::PermissionDenied,
                "cannot remove the base directory",
            ));
        }
        match &self.root {
            Root::Confined { dir, .. } => dir.remove_dir(path),
            Root::Open { base } => fs::remove_dir(base.join(path)),
        }
        .map_err(|e| self.err(path, e))
    }

    fn unlink(&self, path: &Path) -> Result<(), StorageError> {
        match &self.root {
            Root::Confined { dir, .. } => dir.remove_file(Self::rel(path)),
            Root::Open { base } => fs::remove_file(base.join(path)),
        }
        .map_err(|e| self.err(path, e))
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<(), StorageError> {
        if from.as_os_str().is_empty() || to.as_os_str().is_empty() {
            return Err(StorageError::new(
                ErrorKind::PermissionDenied,
                "cannot rename the base directory",
            ));
        }
        match &self.root {
            Root::Confined { dir, .. } => dir.rename(from, dir, to),
            Root::Open { base } => fs::rename(base.join(from), base.join(to)),
        }
        .map_err(|e| self.err(from, e))
    }

    fn set_mtime(&self, path: &Path, mtime: SystemTime) -> Result<(), StorageError> {
        match &self.root {
            Root::Confined { dir, .. } => {
                let t = cap_std::time::SystemTime::from_std(mtime);
                dir.set_times(
                    Self::rel(path),
                    Some(SystemTimeSpec::Absolute(t)),
                    Some(SystemTimeSpec::Absolute(t)),
                )
            }
            // O_NONBLOCK: opening a FIFO must not wait for a writer.
            Root::Open { base } => fs::File::options()
                .write(false)
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(base.join(path))
                .and_then(|f| {
                    f.set_times(fs::FileTimes::new().set_accessed(mtime).set_modified(mtime))
                }),
        }
        .map_err(|e| self.err(path, e))
    }

    fn set_mode(&self, path: &Path, mode: u32) -> Result<(), StorageError> {
        match &self.root {
            Root::Confined { dir, .. } => dir.set_permissions(
                Self::rel(path),
                cap_std::fs::Permissions::from_std(fs::Permissions::from_mode(mode)),
            ),
            Root::Open { base } => {
                fs::set_permissions(base.join(path), fs::Permissions::from_mode(mode))
            }
        }
        .map_err(|e| self.err(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("uftpd-posix-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("tmpdir");
        d
    }

    #[test]
    fn confined_refuses_symlink_out() {
        let d = tmpdir("sym");
        let base = d.join("base");
        fs::create_dir(&base).expect("mkdir");
        fs::write(d.join("secret"), b"s").expect("write");
        symlink(d.join("secret"), base.join("abs")).expect("symlink");
        symlink("../secret", base.join("rel")).expect("symlink");
        fs::write(base.join("ok"), b"hello").expect("write");
        symlink("ok", base.join("inner")).expect("symlink");
        let st = PosixStorage::open(&base, true).expect("open");
        for p in ["abs", "rel"] {
            let e = st.open_read(Path::new(p), 0).err().expect("must fail");
            assert_eq!(e.kind(), ErrorKind::OutsideBase, "{p}: {e}");
            let e = st
                .open_write(Path::new(p), WriteMode::Truncate, &LayoutHints::default())
                .err()
                .expect("must fail");
            assert_eq!(e.kind(), ErrorKind::OutsideBase, "{p}: {e}");
        }
        let mut s = String::new();
        st.open_read(Path::new("inner"), 1)
            .expect("inner link")
            .read_to_string(&mut s)
            .expect("read");
        assert_eq!(s, "ello");
        assert_eq!(fs::read(d.join("secret")).expect("read"), b"s");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn write_modes() {
        let d = tmpdir("modes");
        let st = PosixStorage::open(&d, true).expect("open");
        let h = LayoutHints::default();
        let p = Path::new("f");
        st.open_write(p, WriteMode::Truncate, &h)
            .expect("w")
            .write_all(b"0123456789")
            .expect("w");
        st.open_write(p, WriteMode::At(2), &h)
            .expect("w")
            .write_all(b"ab")
            .expect("w");
        st.open_write(p, WriteMode::Append, &h)
            .expect("w")
            .write_all(b"Z")
            .expect("w");
        assert_eq!(fs::read(d.join("f")).expect("read"), b"01ab456789Z");
        let names: Vec<_> = st
            .list(Path::new(""))
            .expect("list")
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, vec!["f".to_string()]);
        let _ = fs::remove_dir_all(&d);
    }

    /// Creates a FIFO at `path`.
    fn mkfifo(path: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("no NUL");
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert_eq!(rc, 0, "mkfifo: {}", io::Error::last_os_error());
    }

    /// Runs `f` on a thread and fails the test if it does not return
    /// within five seconds (a blocking open would hang forever).
    fn within_5s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("storage call blocked")
    }

    #[test]
    fn fifo_refused_without_blocking() {
        let d = tmpdir("fifo");
        mkfifo(&d.join("pipe"));
        for confined in [true, false] {
            let base = d.clone();
            let (r, w, a) = within_5s(move || {
                let st = PosixStorage::open(&base, confined).expect("open");
                let h = LayoutHints::default();
                let p = Path::new("pipe");
                let r = st
                    .open_read(p, 0)
                    .err()
                    .map(|e| (e.ftp_code(), e.to_string()));
                let w = st
                    .open_write(p, WriteMode::Truncate, &h)
                    .err()
                    .map(|e| (e.ftp_code(), e.to_string()));
                let a = st
                    .open_write(p, WriteMode::Append, &h)
                    .err()
                    .map(|e| (e.ftp_code(), e.to_string()));
                (r, w, a)
            });
            for (what, e) in [("read", r), ("truncate", w), ("append", a)] {
                let (code, msg) = e.unwrap_or_else(|| panic!("{what} of a FIFO must fail"));
                assert_eq!(code, 550, "{what}: {msg}");
                assert!(msg.ends_with("pipe: not a regular file"), "{what}: {msg}");
            }
        }
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn fifo_with_reader_refused_for_write() {
        let d = tmpdir("fifo-rd");
        mkfifo(&d.join("pipe"));
        // A reader is present, so the non-blocking open for writing
        // succeeds; the fstat check must still refuse it.
        let _reader = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(d.join("pipe"))
            .expect("reader");
        let st = PosixStorage::open(&d, true).expect("open");
        let e = st
            .open_write(
                Path::new("pipe"),
                WriteMode::Truncate,
                &LayoutHints::default(),
            )
            .err()
            .expect("must fail");
        assert_eq!(e.ftp_code(), 550);
        assert!(e.to_string().ends_with("pipe: not a regular file"), "{e}");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn regular_file_is_blocking_after_open() {
        let d = tmpdir("blocking");
        fs::write(d.join("f"), b"x").expect("write");
        let st = PosixStorage::open(&d, true).expect("open");
        let r = st.open_read(Path::new("f"), 0).expect("read");
        let w = st
            .open_write(Path::new("f"), WriteMode::Append, &LayoutHints::default())
            .expect("write");
        for fd in [r.raw_fd(), w.raw_fd()] {
            let fd = fd.expect("posix handles have a descriptor");
            // SAFETY: `fd` belongs to a handle that is alive here.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
            assert!(flags >= 0);
            assert_eq!(flags & libc::O_NONBLOCK, 0);
        }
        let e = st.open_read(Path::new(""), 0).err().expect("dir must fail");
        assert_eq!(e.kind(), ErrorKind::IsADirectory);
        assert!(e.to_string().ends_with(": is a directory"), "{e}");
        let _ = fs::remove_dir_all(&d);
    }
}
