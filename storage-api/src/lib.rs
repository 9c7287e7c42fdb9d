//! Storage backends for uftpd sessions.
//!
//! A [`StorageBackend`] is chosen by the daemon configuration. In every
//! session process, after the process has taken on the identity of the
//! requested user, the daemon asks the backend for a per-session
//! [`Storage`] rooted at the session's base directory. All user paths then
//! go through that `Storage`:
//!
//! * paths handed to it are *relative to the base directory*, already
//!   normalised by the session (no `.`/`..` components, no leading `/`);
//!   the empty path is the base directory itself;
//! * a confined storage ([`StorageSpec::confined`]) must resolve every path
//!   *beneath* the base directory, so that a symlink pointing outside the
//!   base fails with [`ErrorKind::OutsideBase`] instead of being followed;
//! * errors carry a kind that maps onto an FTP reply code
//!   ([`StorageError::ftp_code`]) and keep the OS error as their source.
//!
//! Optional capabilities are default methods: a raw file descriptor for
//! zero-copy transfers ([`ReadHandle::raw_fd`], [`WriteHandle::raw_fd`]) and
//! layout hints when a file is created ([`LayoutHints`]).
//!
//! Backends are plugins: statically linked crates register a
//! [`StorageDescriptor`] with `inventory::submit!`; dynamic ones are
//! `cdylib`s that export their descriptor through the C-shaped boundary of
//! the [`ffi`] module. [`StorageBackend`] has a complete example.
//!
//! ```
//! use storage_api::{ErrorKind, StorageError};
//! let e = StorageError::new(ErrorKind::NotFound, "no such file: data.bin");
//! assert_eq!(e.ftp_code(), 550);
//! ```

pub mod ffi;

use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Version of this API; bumped on every incompatible change.
pub const STORAGE_API_VERSION: (u16, u16) = (1, 0);

/// The Unix identity a session runs as.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// Login name.
    pub user: String,
    /// Numeric user id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids (may include the primary group).
    pub groups: Vec<u32>,
    /// Home directory from the user database.
    pub home: PathBuf,
}

/// What a caller wants to do with a file, for permission checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read a file or list a directory.
    Read,
    /// Write a file or create entries in a directory.
    Write,
    /// Execute a file or enter a directory.
    Execute,
}

impl Identity {
    /// Whether this identity may access a file with the given status, by
    /// the classic owner/group/other mode bits (uid 0 may read and write
    /// everything). Used to show `r`/`w`/`x` in listings without one
    /// `access(2)` call per entry.
    pub fn may(&self, st: &FileStat, access: Access) -> bool {
        let (owner, group, other) = match access {
            Access::Read => (0o400, 0o040, 0o004),
            Access::Write => (0o200, 0o020, 0o002),
            Access::Execute => (0o100, 0o010, 0o001),
        };
        if self.uid == 0 {
            return match access {
                Access::Execute => st.mode & 0o111 != 0 || st.file_type == FileType::Dir,
                _ => true,
            };
        }
        if st.uid == self.uid {
            return st.mode & owner != 0;
        }
        if st.gid == self.gid || self.groups.contains(&st.gid) {
            return st.mode & group != 0;
        }
        st.mode & other != 0
    }
}

/// Kind of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (only reported for links that could not be followed).
    Symlink,
    /// Anything else (device, fifo, socket).
    Other,
}

/// Status of a file, as far as the FTP dialect needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStat {
    /// File type.
    pub file_type: FileType,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time.
    pub mtime: SystemTime,
    /// Full `st_mode` (type and permission bits).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl FileStat {
    /// True for directories.
    pub fn is_dir(&self) -> bool {
        self.file_type == FileType::Dir
    }
}

/// One entry of a directory listing.
#[derive(Debug, Clone)]
pub struct DirEntry {
    /// The entry's name (one path component).
    pub name: String,
    /// Its status (symlinks followed where possible).
    pub stat: FileStat,
}

/// Where a session's storage is rooted and for whom.
#[derive(Debug, Clone)]
pub struct StorageSpec<'a> {
    /// Absolute base directory of the session (`/` when unconfined).
    pub base: &'a Path,
    /// Whether paths must stay beneath `base` (symlinks included).
    pub confined: bool,
    /// Identity the session process already runs as.
    pub identity: &'a Identity,
}

/// Hints given when a file is opened for writing; backends may ignore them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayoutHints {
    /// Expected final size of the upload, when the client announced it.
    pub expected_size: Option<u64>,
    /// Number of parallel TCP streams feeding the file.
    pub streams: u32,
}

/// How to open a file for writing. The file is created if missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Truncate to zero length, then write from the start.
    Truncate,
    /// Keep the contents and write from the given offset.
    At(u64),
    /// Keep the contents and write at the current end of the file.
    Append,
}

/// An open file being read.
pub trait ReadHandle: Read + Send {
    /// A file descriptor positioned where reading continues, if the backend
    /// offers one, so that the daemon can use `sendfile(2)`. A caller that
    /// uses it reads through the descriptor only.
    fn raw_fd(&self) -> Option<RawFd> {
        None
    }
}

/// An open file being written.
pub trait WriteHandle: Write + Send {
    /// A file descriptor positioned where writing continues, if the backend
    /// offers one, so that the daemon can use `splice(2)`.
    fn raw_fd(&self) -> Option<RawFd> {
        None
    }
    /// Called once after the last byte was written successfully.
    fn finish(self: Box<Self>) -> Result<(), StorageError> {
        Ok(())
    }
}

/// Per-session view of the storage, rooted at the session's base directory.
///
/// All paths are relative to the base (see the crate documentation). See
/// [`StorageBackend`] for a complete example of both traits.
pub trait Storage: Send {
    /// Status of a path, following symlinks.
    fn stat(&self, path: &Path) -> Result<FileStat, StorageError>;
    /// Entries of a directory (without `.` and `..`), in any order.
    fn list(&self, dir: &Path) -> Result<Vec<DirEntry>, StorageError>;
    /// Open a regular file for reading, positioned at `offset`.
    ///
    /// Anything that is not a regular file (a FIFO, socket or device node)
    /// must be refused, and without blocking: opening a FIFO that has no
    /// writer would otherwise hang the session. The POSIX backend opens
    /// with `O_NONBLOCK` and checks the opened descriptor with `fstat`;
    /// it refuses with [`ErrorKind::IsADirectory`] ("not a regular file").
    fn open_read(&self, path: &Path, offset: u64) -> Result<Box<dyn ReadHandle>, StorageError>;
    /// Open (and create if missing) a regular file for writing. As for
    /// [`Storage::open_read`], anything but a regular file is refused
    /// without blocking.
    fn open_write(
        &self,
        path: &Path,
        mode: WriteMode,
        hints: &LayoutHints,
    ) -> Result<Box<dyn WriteHandle>, StorageError>;
    /// Create a directory.
    fn mkdir(&self, path: &Path) -> Result<(), StorageError>;
    /// Remove an empty directory.
    fn rmdir(&self, path: &Path) -> Result<(), StorageError>;
    /// Remove a file.
    fn unlink(&self, path: &Path) -> Result<(), StorageError>;
    /// Rename a file or directory.
    fn rename(&self, from: &Path, to: &Path) -> Result<(), StorageError>;
    /// Set the modification (and access) time.
    fn set_mtime(&self, path: &Path, mtime: SystemTime) -> Result<(), StorageError>;
    /// Set the permission bits (`chmod`).
    fn set_mode(&self, path: &Path, mode: u32) -> Result<(), StorageError>;
}

/// A storage backend: a factory of per-session [`Storage`]s.
///
/// A backend is built once per process from the configuration (see
/// [`StorageConstructor`]) and registered statically with a
/// [`StorageDescriptor`], or exported from a `cdylib` with
/// [`export_storage_plugin!`] (see [`ffi`]).
///
/// # Example
///
/// A backend that serves one read-only file, `motd`, from memory:
///
/// ```
/// use std::io::{Cursor, Read};
/// use std::path::Path;
/// use std::time::SystemTime;
/// use storage_api::*;
///
/// struct Motd(&'static str);
///
/// impl StorageBackend for Motd {
///     fn name(&self) -> &str { "motd" }
///     fn open_session(&self, _spec: &StorageSpec<'_>) -> Result<Box<dyn Storage>, StorageError> {
///         Ok(Box::new(MotdSession(self.0)))
///     }
/// }
///
/// struct MotdSession(&'static str);
/// struct Reader(Cursor<&'static [u8]>);
/// impl Read for Reader {
///     fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> { self.0.read(buf) }
/// }
/// impl ReadHandle for Reader {}
///
/// fn read_only(path: &Path) -> StorageError {
///     StorageError::new(ErrorKind::PermissionDenied, format!("{}: read-only", path.display()))
/// }
///
/// impl Storage for MotdSession {
///     fn stat(&self, path: &Path) -> Result<FileStat, StorageError> {
///         let (file_type, size, mode) = match path.to_str() {
///             Some("") => (FileType::Dir, 0, 0o40555),
///             Some("motd") => (FileType::File, self.0.len() as u64, 0o100444),
///             _ => return Err(StorageError::new(ErrorKind::NotFound, "no such file")),
///         };
///         Ok(FileStat { file_type, size, mtime: SystemTime::UNIX_EPOCH, mode, uid: 0, gid: 0 })
///     }
///     fn list(&self, dir: &Path) -> Result<Vec<DirEntry>, StorageError> {
///         self.stat(dir)?;
///         Ok(vec![DirEntry { name: "motd".into(), stat: self.stat(Path::new("motd"))? }])
///     }
///     fn open_read(&self, path: &Path, offset: u64) -> Result<Box<dyn ReadHandle>, StorageError> {
///         if self.stat(path)?.is_dir() {
///             return Err(StorageError::new(ErrorKind::IsADirectory, "is a directory"));
///         }
///         let mut c = Cursor::new(self.0.as_bytes());
///         c.set_position(offset);
///         Ok(Box::new(Reader(c)))
///     }
///     fn open_write(&self, p: &Path, _: WriteMode, _: &LayoutHints)
///         -> Result<Box<dyn WriteHandle>, StorageError> { Err(read_only(p)) }
///     fn mkdir(&self, p: &Path) -> Result<(), StorageError> { Err(read_only(p)) }
///     fn rmdir(&self, p: &Path) -> Result<(), StorageError> { Err(read_only(p)) }
///     fn unlink(&self, p: &Path) -> Result<(), StorageError> { Err(read_only(p)) }
///     fn rename(&self, p: &Path, _: &Path) -> Result<(), StorageError> { Err(read_only(p)) }
///     fn set_mtime(&self, p: &Path, _: SystemTime) -> Result<(), StorageError> { Err(read_only(p)) }
///     fn set_mode(&self, p: &Path, _: u32) -> Result<(), StorageError> { Err(read_only(p)) }
/// }
///
/// // How the daemon uses it in a session:
/// let identity = Identity { user: "alice".into(), uid: 1000, gid: 100, groups: vec![],
///                           home: "/home/alice".into() };
/// let storage = Motd("hello\n").open_session(&StorageSpec {
///     base: Path::new("/"), confined: true, identity: &identity,
/// })?;
/// let mut text = String::new();
/// storage.open_read(Path::new("motd"), 1)?.read_to_string(&mut text).map_err(|e| StorageError::io("motd", e))?;
/// assert_eq!(text, "ello\n");
/// let err = storage.mkdir(Path::new("new")).unwrap_err();
/// assert_eq!(err.ftp_code(), 550);
/// # Ok::<(), StorageError>(())
/// ```
pub trait StorageBackend: Send + Sync {
    /// Short name used in the configuration (`posix`, `lustre`, ...).
    fn name(&self) -> &str;
    /// Open the storage of one session. Called in the session process after
    /// it took on the user's identity and before any user path is touched.
    fn open_session(&self, spec: &StorageSpec<'_>) -> Result<Box<dyn Storage>, StorageError>;
}

/// Builds a backend from the daemon configuration; the argument looks up a
/// configuration variable (environment first, then the config file).
pub type StorageConstructor =
    fn(&dyn Fn(&str) -> Option<String>) -> Result<Box<dyn StorageBackend>, String>;

/// Static registration of a storage backend plugin: each backend crate
/// submits one with `inventory::submit!`.
#[derive(Debug)]
pub struct StorageDescriptor {
    /// Configuration name (matched case-insensitively).
    pub name: &'static str,
    /// Plugin version.
    pub version: &'static str,
    /// One line for `--list-plugins`.
    pub description: &'static str,
    /// Constructor.
    pub constructor: StorageConstructor,
}

inventory::collect!(StorageDescriptor);

/// All statically registered storage backends.
pub fn registered() -> impl Iterator<Item = &'static StorageDescriptor> {
    inventory::iter::<StorageDescriptor>.into_iter()
}

/// Finds a statically registered backend by name (case-insensitive).
pub fn lookup(name: &str) -> Option<&'static StorageDescriptor> {
    registered().find(|d| d.name.eq_ignore_ascii_case(name))
}

/// What went wrong, coarse enough to choose an FTP reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The path does not exist (550).
    NotFound,
    /// The OS refused access (550).
    PermissionDenied,
    /// The path would leave the session's base directory (534).
    OutsideBase,
    /// The target exists already (550).
    AlreadyExists,
    /// A directory was expected (550).
    NotADirectory,
    /// A regular file was expected: a directory, FIFO, socket or device
    /// node was found (550).
    IsADirectory,
    /// The request itself is malformed (501).
    InvalidInput,
    /// Disk full or quota exceeded (552).
    NoSpace,
    /// Anything else (500).
    Other,
}

/// A storage error: a kind, a message for the client and the OS cause.
#[derive(Debug, thiserror::Error)]
pub struct StorageError {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<io::Error>,
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StorageError {
    /// A new error without an OS cause.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        StorageError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An error with an explicit kind and message that keeps `source` as
    /// its cause (for example an OS error reported by a plugin).
    pub fn with_source(kind: ErrorKind, message: impl Into<String>, source: io::Error) -> Self {
        StorageError {
            kind,
            message: message.into(),
            source: Some(source),
        }
    }

    /// An error for an OS error on `what` (a path or an action), with the
    /// kind derived from the OS error.
    pub fn io(what: impl fmt::Display, err: io::Error) -> Self {
        let kind = kind_of(&err);
        let message = match kind {
            ErrorKind::OutsideBase => format!("{what}: path leads outside the base directory"),
            _ => format!("{what}: {}", short_io_message(&err)),
        };
        StorageError {
            kind,
            message,
            source: Some(err),
        }
    }

    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The FTP reply code for this error.
    pub fn ftp_code(&self) -> u16 {
        match self.kind {
            ErrorKind::NotFound
            | ErrorKind::PermissionDenied
            | ErrorKind::AlreadyExists
            | ErrorKind::NotADirectory
            | ErrorKind::IsADirectory => 550,
            ErrorKind::OutsideBase => 534,
            ErrorKind::InvalidInput => 501,
            ErrorKind::NoSpace => 552,
            ErrorKind::Other => 500,
        }
    }
}

/// Maps an OS error onto an [`ErrorKind`].
pub fn kind_of(err: &io::Error) -> ErrorKind {
    match err.raw_os_error() {
        Some(libc::ENOENT) => ErrorKind::NotFound,
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => ErrorKind::PermissionDenied,
        Some(libc::EXDEV) => ErrorKind::OutsideBase,
        Some(libc::ELOOP) => ErrorKind::PermissionDenied,
        Some(libc::EEXIST) | Some(libc::ENOTEMPTY) => ErrorKind::AlreadyExists,
        Some(libc::ENOTDIR) => ErrorKind::NotADirectory,
        Some(libc::EISDIR) => ErrorKind::IsADirectory,
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => ErrorKind::NoSpace,
        Some(libc::EINVAL) | Some(libc::ENAMETOOLONG) => ErrorKind::InvalidInput,
        _ => match err.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            io::ErrorKind::PermissionDenied => {
                // cap-std reports an escape attempt as PermissionDenied with
                // a message naming the sandbox.
                if err.to_string().contains("outside of the filesystem") {
                    ErrorKind::OutsideBase
                } else {
                    ErrorKind::PermissionDenied
                }
            }
            io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
            io::ErrorKind::InvalidInput => ErrorKind::InvalidInput,
            _ => ErrorKind::Other,
        },
    }
}

/// The OS error text without Rust's ` (os error N)` suffix.
fn short_io_message(err: &io::Error) -> String {
    let s = err.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(mode: u32, uid: u32, gid: u32) -> FileStat {
        FileStat {
            file_type: FileType::File,
            size: 0,
            mtime: SystemTime::UNIX_EPOCH,
            mode: 0o100000 | mode,
            uid,
            gid,
        }
    }

    fn ident() -> Identity {
        Identity {
            user: "u".into(),
            uid: 1000,
            gid: 100,
            groups: vec![100, 200],
            home: "/home/u".into(),
        }
    }

    #[test]
    fn owner_group_other_bits() {
        let id = ident();
        assert!(id.may(&stat(0o600, 1000, 1), Access::Read));
        assert!(
            !id.may(&stat(0o060, 1000, 100), Access::Read),
            "owner bits win"
        );
        assert!(
            id.may(&stat(0o040, 1, 200), Access::Read),
            "supplementary group"
        );
        assert!(!id.may(&stat(0o600, 1, 1), Access::Read));
        assert!(id.may(&stat(0o004, 1, 1), Access::Read));
        assert!(!id.may(&stat(0o644, 1, 1), Access::Write));
    }

    #[test]
    fn io_errors_map_to_codes() {
        let e = StorageError::io("x", io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(e.ftp_code(), 550);
        assert_eq!(e.to_string(), "x: No such file or directory");
        let e = StorageError::io("x", io::Error::from_raw_os_error(libc::EXDEV));
        assert_eq!(e.ftp_code(), 534);
        let e = StorageError::io("x", io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.ftp_code(), 552);
    }
}
