//! The C-shaped boundary of dynamic storage plugins.
//!
//! Rust has no stable ABI: a `Box<dyn Storage>` made by one compiler (or
//! one build of this crate) cannot safely be used by another. A dynamic
//! storage plugin (a `cdylib` that uftpd loads at startup) therefore talks
//! to the daemon only through `#[repr(C)]` data and `extern "C"` function
//! pointers, and plugin authors never see any of it: they write an ordinary
//! [`StorageBackend`] and export it with [`export_storage_plugin!`], which
//! wraps it in the C vtable ([`StoragePluginV1`]). On the daemon side,
//! [`DynamicStoragePlugin`] turns the vtable back into a
//! `Box<dyn StorageBackend>`.
//!
//! # The header, and what must stay equal
//!
//! A plugin library exports exactly one symbol, [`HEADER_SYMBOL`]
//! (`uftpd_plugin_header`), an `extern "C" fn() -> *const PluginHeader`.
//! Before it touches anything else, the daemon checks, in this order:
//!
//! 1. the magic number ([`MAGIC`]): the library is a uftpd plugin at all;
//! 2. the role ([`ROLE_STORAGE`]);
//! 3. the plugin API version: the major number must be equal
//!    ([`ABI_MAJOR`]), the plugin's minor number not newer ([`ABI_MINOR`]);
//! 4. the fingerprint: a hash of the `rustc -V` line of the compiler that
//!    built this crate and this crate's version ([`RUSTC_VERSION`],
//!    [`API_CRATE_VERSION`], [`FINGERPRINT`]); both must be *exactly*
//!    those of the daemon.
//!
//! So a plugin author must build with the same Rust toolchain (the same
//! `rustc -V` line, e.g. via a `rust-toolchain.toml` naming the daemon's
//! version) and against the same `storage-api` version as the uftpd
//! binary that loads it. Anything else is refused with one line naming the
//! library and both versions. The layout of [`PluginHeader`] is frozen for
//! all API versions, so that any uftpd can read any plugin's versions and
//! say what is wrong.
//!
//! # Rules of the boundary
//!
//! * Past the header only `#[repr(C)]` data and `extern "C"` function
//!   pointers cross; no `String`, `Vec`, `Box<dyn _>` or `Result`.
//! * The side that allocates frees: objects made by the plugin (backend,
//!   session, file handles) are opaque pointers that only the plugin's own
//!   `drop_*` functions free; strings the daemon passes in are borrowed for
//!   the duration of one call; results the plugin hands back are written
//!   into caller-owned memory ([`FfiError`], [`FfiStat`]) or passed to a
//!   caller-supplied callback (directory entries, settings values).
//! * Every exported function body runs inside `catch_unwind` and reports a
//!   panic as an error ([`STATUS_PANIC`]), so a panicking plugin fails the
//!   one operation instead of unwinding through foreign frames. (This needs
//!   `panic = "unwind"`, the default; a plugin built with `panic = "abort"`
//!   takes its session process down on a panic.)
//! * Libraries are loaded once per process and never unloaded, so every
//!   pointer into a library is valid for the rest of the process.
//!
//! # Example
//!
//! A plugin crate (`crate-type = ["cdylib"]`) exports its backend like this;
//! the daemon side of the example then loads it the way uftpd does after
//! `dlopen` and `dlsym`:
//!
//! ```
//! use storage_api::{StorageBackend, StorageDescriptor};
//! # use storage_api::{Storage, StorageError, StorageSpec, ErrorKind};
//! # struct Nothing;
//! # impl StorageBackend for Nothing {
//! #     fn name(&self) -> &str { "nothing" }
//! #     fn open_session(&self, _: &StorageSpec<'_>) -> Result<Box<dyn Storage>, StorageError> {
//! #         Err(StorageError::new(ErrorKind::PermissionDenied, "nothing to see"))
//! #     }
//! # }
//!
//! fn construct(
//!     settings: &dyn Fn(&str) -> Option<String>,
//! ) -> Result<Box<dyn StorageBackend>, String> {
//!     match settings("NOTHING_ENABLED").as_deref() {
//!         Some("yes") => Ok(Box::new(Nothing)),
//!         _ => Err("set NOTHING_ENABLED=yes".into()),
//!     }
//! }
//!
//! storage_api::export_storage_plugin!(StorageDescriptor {
//!     name: "nothing",
//!     version: "0.1.0",
//!     description: "refuses every session",
//!     constructor: construct,
//! });
//!
//! // What the daemon does with the symbol:
//! // SAFETY: the header comes from this very program, which is never
//! // unloaded.
//! let plugin = unsafe { storage_api::ffi::DynamicStoragePlugin::from_header(uftpd_plugin_header()) }
//!     .expect("same toolchain, same API");
//! assert_eq!(plugin.name(), "nothing");
//! let err = plugin.construct(&|_| None).err().expect("refused");
//! assert_eq!(err, "set NOTHING_ENABLED=yes");
//! assert!(plugin.construct(&|_| Some("yes".into())).is_ok());
//! ```

use std::any::Any;
use std::ffi::c_void;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::ptr;
use std::time::{Duration, SystemTime};

use crate::{
    DirEntry, ErrorKind, FileStat, FileType, Identity, LayoutHints, ReadHandle, Storage,
    StorageBackend, StorageDescriptor, StorageError, StorageSpec, WriteHandle, WriteMode,
};

/// Name of the one symbol a plugin library exports: an
/// `extern "C" fn() -> *const PluginHeader`.
pub const HEADER_SYMBOL: &str = "uftpd_plugin_header";

/// [`HEADER_SYMBOL`] with its terminating NUL, for `dlsym`.
pub const HEADER_SYMBOL_NUL: &[u8] = b"uftpd_plugin_header\0";

/// First bytes of every plugin header.
pub const MAGIC: [u8; 8] = *b"UFTPDPLG";

/// Plugin API major version: bumped on every incompatible change of the
/// boundary (the vtable layout, the meaning of a field).
pub const ABI_MAJOR: u32 = 1;

/// Plugin API minor version: bumped when the boundary grows compatibly.
pub const ABI_MINOR: u32 = 0;

/// [`PluginHeader::role`] of a storage plugin.
pub const ROLE_STORAGE: u32 = 1;

/// The `rustc -V` line of the compiler that built this crate.
pub const RUSTC_VERSION: &str = env!("STORAGE_API_RUSTC_VERSION");

/// The version of this crate.
pub const API_CRATE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Hash of [`RUSTC_VERSION`] and [`API_CRATE_VERSION`]: what a plugin and
/// the daemon must share.
pub const FINGERPRINT: u64 = fingerprint(RUSTC_VERSION, API_CRATE_VERSION);

/// Size of [`PluginHeader::rustc_version`].
pub const RUSTC_VERSION_LEN: usize = 128;

/// Size of [`PluginHeader::api_version`].
pub const API_VERSION_LEN: usize = 32;

/// Maximum length of an error message crossing the boundary.
pub const ERROR_MESSAGE_LEN: usize = 1024;

/// FNV-1a over `rustc`, a NUL byte and `api`.
pub const fn fingerprint(rustc: &str, api: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let parts: [&[u8]; 3] = [rustc.as_bytes(), b"\0", api.as_bytes()];
    let mut p = 0;
    while p < parts.len() {
        let bytes = parts[p];
        let mut i = 0;
        while i < bytes.len() {
            h ^= bytes[i] as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
            i += 1;
        }
        p += 1;
    }
    h
}

/// `s` as a NUL-padded byte array (cut to `N - 1` bytes, so that it always
/// ends with a NUL).
pub const fn padded<const N: usize>(s: &str) -> [u8; N] {
    let b = s.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < b.len() && i + 1 < N {
        out[i] = b[i];
        i += 1;
    }
    out
}

/// The text of a NUL-padded byte array, for messages.
fn unpadded(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// What the header symbol points to. Its layout is frozen for all plugin
/// API versions.
#[repr(C)]
#[derive(Debug)]
pub struct PluginHeader {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// `size_of::<PluginHeader>()` in the plugin.
    pub header_size: u32,
    /// What the plugin provides ([`ROLE_STORAGE`]).
    pub role: u32,
    /// [`ABI_MAJOR`] of the plugin.
    pub abi_major: u32,
    /// [`ABI_MINOR`] of the plugin.
    pub abi_minor: u32,
    /// [`FINGERPRINT`] of the plugin.
    pub fingerprint: u64,
    /// [`RUSTC_VERSION`] of the plugin, NUL-padded, for messages.
    pub rustc_version: [u8; RUSTC_VERSION_LEN],
    /// [`API_CRATE_VERSION`] of the plugin, NUL-padded, for messages.
    pub api_version: [u8; API_VERSION_LEN],
    /// The role's declaration, for storage a [`StoragePluginV1`]; only
    /// read after every check above passed.
    pub plugin: *const c_void,
}

// SAFETY: a header is immutable static data; the pointer in it refers to
// another immutable static (the vtable), so sharing it between threads is
// sound.
unsafe impl Sync for PluginHeader {}

impl PluginHeader {
    /// The header of a storage plugin built with this crate.
    pub const fn storage(plugin: &'static StoragePluginV1) -> Self {
        PluginHeader {
            magic: MAGIC,
            header_size: std::mem::size_of::<PluginHeader>() as u32,
            role: ROLE_STORAGE,
            abi_major: ABI_MAJOR,
            abi_minor: ABI_MINOR,
            fingerprint: FINGERPRINT,
            rustc_version: padded::<RUSTC_VERSION_LEN>(RUSTC_VERSION),
            api_version: padded::<API_VERSION_LEN>(API_CRATE_VERSION),
            plugin: plugin as *const StoragePluginV1 as *const c_void,
        }
    }
}

/// Why a plugin header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The declaration function returned a null pointer.
    #[error("{HEADER_SYMBOL}() returned a null pointer")]
    Null,
    /// The magic number is wrong: not a uftpd plugin.
    #[error("not a uftpd plugin (wrong magic number in its header)")]
    Magic,
    /// The header has an unexpected size.
    #[error("plugin header has {found} bytes, expected {expected}")]
    HeaderSize {
        /// Size in the plugin.
        found: u32,
        /// Size here.
        expected: u32,
    },
    /// The plugin provides another role.
    #[error("plugin has role {0}, not storage ({ROLE_STORAGE})")]
    Role(u32),
    /// The plugin API versions do not fit.
    #[error(
        "plugin API version {found_major}.{found_minor} does not fit this uftpd's plugin API {ABI_MAJOR}.{ABI_MINOR} (the major versions must be equal, the plugin's minor version not newer); rebuild the plugin against this uftpd's storage-api"
    )]
    Abi {
        /// Major version of the plugin.
        found_major: u32,
        /// Minor version of the plugin.
        found_minor: u32,
    },
    /// Toolchain or storage-api version differ.
    #[error(
        "plugin was built with '{plugin_rustc}' and storage-api {plugin_api}, but this uftpd with '{RUSTC_VERSION}' and storage-api {API_CRATE_VERSION}; rebuild the plugin with the same toolchain and storage-api version"
    )]
    Fingerprint {
        /// `rustc -V` of the plugin.
        plugin_rustc: String,
        /// storage-api version of the plugin.
        plugin_api: String,
    },
    /// The plugin's strings are unusable.
    #[error("plugin declaration is malformed: {0}")]
    Malformed(&'static str),
}

/// Status returned by every vtable function that can fail.
pub type FfiStatus = i32;
/// Success.
pub const STATUS_OK: FfiStatus = 0;
/// Failure; the [`FfiError`] says what.
pub const STATUS_ERROR: FfiStatus = 1;
/// The plugin panicked; the [`FfiError`] says where.
pub const STATUS_PANIC: FfiStatus = 2;

/// Borrowed bytes (UTF-8 text or a Unix path).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FfiStr {
    /// First byte (may be dangling when `len` is 0).
    pub ptr: *const u8,
    /// Number of bytes.
    pub len: usize,
}

// SAFETY: an FfiStr is a borrowed view of immutable bytes (static strings
// in a vtable, or call arguments that outlive the call).
unsafe impl Sync for FfiStr {}
// SAFETY: as above; the bytes are never written through it.
unsafe impl Send for FfiStr {}

impl FfiStr {
    /// Borrows a static string.
    pub const fn from_static(s: &'static str) -> Self {
        FfiStr {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// Borrows bytes for the duration of a call.
    pub fn new(bytes: &[u8]) -> Self {
        FfiStr {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// Borrows a path for the duration of a call.
    pub fn path(p: &Path) -> Self {
        Self::new(p.as_os_str().as_bytes())
    }

    /// The bytes.
    ///
    /// # Safety
    /// `ptr` must point to `len` initialised bytes that stay valid and
    /// unchanged for `'a` (or `len` must be 0).
    pub unsafe fn as_bytes<'a>(self) -> &'a [u8] {
        if self.len == 0 || self.ptr.is_null() {
            return &[];
        }
        // SAFETY: the caller guarantees ptr/len describe live bytes.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The bytes as a path.
    ///
    /// # Safety
    /// As for [`FfiStr::as_bytes`].
    pub unsafe fn as_path<'a>(self) -> &'a Path {
        // SAFETY: forwarded to the caller.
        Path::new(std::ffi::OsStr::from_bytes(unsafe { self.as_bytes() }))
    }
}

/// An error written by the plugin into memory owned by the caller.
#[repr(C)]
#[derive(Clone)]
pub struct FfiError {
    /// The [`ErrorKind`] as a number ([`kind_to_code`]).
    pub kind: u32,
    /// The OS error number, or 0.
    pub os_error: i32,
    /// Bytes used in `message`.
    pub len: u32,
    /// UTF-8 message.
    pub message: [u8; ERROR_MESSAGE_LEN],
}

impl fmt::Debug for FfiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FfiError")
            .field("kind", &self.kind)
            .field("os_error", &self.os_error)
            .field("message", &self.text())
            .finish()
    }
}

impl Default for FfiError {
    fn default() -> Self {
        FfiError {
            kind: kind_to_code(ErrorKind::Other),
            os_error: 0,
            len: 0,
            message: [0; ERROR_MESSAGE_LEN],
        }
    }
}

impl FfiError {
    /// Sets the message (cut at a character boundary if too long).
    fn set(&mut self, kind: ErrorKind, os_error: i32, msg: &str) {
        let mut end = msg.len().min(ERROR_MESSAGE_LEN);
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        self.kind = kind_to_code(kind);
        self.os_error = os_error;
        self.message[..end].copy_from_slice(&msg.as_bytes()[..end]);
        self.len = end as u32;
    }

    fn text(&self) -> String {
        let len = (self.len as usize).min(ERROR_MESSAGE_LEN);
        String::from_utf8_lossy(&self.message[..len]).into_owned()
    }

    fn fill_storage(&mut self, e: &StorageError) {
        let os = std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<io::Error>())
            .and_then(io::Error::raw_os_error)
            .unwrap_or(0);
        self.set(e.kind(), os, &e.to_string());
    }

    /// The error as a [`StorageError`] (daemon side).
    fn to_storage(&self) -> StorageError {
        let kind = kind_from_code(self.kind);
        if self.os_error != 0 {
            StorageError::with_source(
                kind,
                self.text(),
                io::Error::from_raw_os_error(self.os_error),
            )
        } else {
            StorageError::new(kind, self.text())
        }
    }

    /// The error as an [`io::Error`] (daemon side, for `Read`/`Write`).
    fn to_io(&self) -> io::Error {
        if self.os_error != 0 {
            io::Error::from_raw_os_error(self.os_error)
        } else {
            let kind = match kind_from_code(self.kind) {
                ErrorKind::NotFound => io::ErrorKind::NotFound,
                ErrorKind::PermissionDenied | ErrorKind::OutsideBase => {
                    io::ErrorKind::PermissionDenied
                }
                ErrorKind::AlreadyExists => io::ErrorKind::AlreadyExists,
                ErrorKind::InvalidInput => io::ErrorKind::InvalidInput,
                _ => io::ErrorKind::Other,
            };
            io::Error::new(kind, self.text())
        }
    }
}

/// The stable number of an [`ErrorKind`].
pub const fn kind_to_code(kind: ErrorKind) -> u32 {
    match kind {
        ErrorKind::NotFound => 1,
        ErrorKind::PermissionDenied => 2,
        ErrorKind::OutsideBase => 3,
        ErrorKind::AlreadyExists => 4,
        ErrorKind::NotADirectory => 5,
        ErrorKind::IsADirectory => 6,
        ErrorKind::InvalidInput => 7,
        ErrorKind::NoSpace => 8,
        ErrorKind::Other => 9,
    }
}

/// The [`ErrorKind`] of a number ([`ErrorKind::Other`] if unknown).
pub const fn kind_from_code(code: u32) -> ErrorKind {
    match code {
        1 => ErrorKind::NotFound,
        2 => ErrorKind::PermissionDenied,
        3 => ErrorKind::OutsideBase,
        4 => ErrorKind::AlreadyExists,
        5 => ErrorKind::NotADirectory,
        6 => ErrorKind::IsADirectory,
        7 => ErrorKind::InvalidInput,
        8 => ErrorKind::NoSpace,
        _ => ErrorKind::Other,
    }
}

/// [`FfiStat::file_type`] of a regular file.
pub const FILE_TYPE_FILE: u32 = 1;
/// [`FfiStat::file_type`] of a directory.
pub const FILE_TYPE_DIR: u32 = 2;
/// [`FfiStat::file_type`] of a symlink.
pub const FILE_TYPE_SYMLINK: u32 = 3;
/// [`FfiStat::file_type`] of anything else.
pub const FILE_TYPE_OTHER: u32 = 4;

/// A [`FileStat`] in C layout.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct FfiStat {
    /// `FILE_TYPE_*`.
    pub file_type: u32,
    /// Full `st_mode`.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the epoch (may be negative).
    pub mtime_secs: i64,
    /// Nanoseconds to add to `mtime_secs` (0..1e9).
    pub mtime_nanos: u32,
}

/// Seconds and nanoseconds since the epoch, nanoseconds always positive.
fn time_to_parts(t: SystemTime) -> (i64, u32) {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            if d.subsec_nanos() == 0 {
                (-secs, 0)
            } else {
                (-secs - 1, 1_000_000_000 - d.subsec_nanos())
            }
        }
    }
}

fn time_from_parts(secs: i64, nanos: u32) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(nanos.min(999_999_999)));
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs()) + nanos
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + nanos
    }
}

impl From<&FileStat> for FfiStat {
    fn from(s: &FileStat) -> Self {
        let (mtime_secs, mtime_nanos) = time_to_parts(s.mtime);
        FfiStat {
            file_type: match s.file_type {
                FileType::File => FILE_TYPE_FILE,
                FileType::Dir => FILE_TYPE_DIR,
                FileType::Symlink => FILE_TYPE_SYMLINK,
                FileType::Other => FILE_TYPE_OTHER,
            },
            mode: s.mode,
            uid: s.uid,
            gid: s.gid,
            size: s.size,
            mtime_secs,
            mtime_nanos,
        }
    }
}

impl From<&FfiStat> for FileStat {
    fn from(s: &FfiStat) -> Self {
        FileStat {
            file_type: match s.file_type {
                FILE_TYPE_FILE => FileType::File,
                FILE_TYPE_DIR => FileType::Dir,
                FILE_TYPE_SYMLINK => FileType::Symlink,
                _ => FileType::Other,
            },
            size: s.size,
            mtime: time_from_parts(s.mtime_secs, s.mtime_nanos),
            mode: s.mode,
            uid: s.uid,
            gid: s.gid,
        }
    }
}

/// [`FfiWriteMode::kind`]: truncate.
pub const WRITE_TRUNCATE: u32 = 0;
/// [`FfiWriteMode::kind`]: write at `offset`.
pub const WRITE_AT: u32 = 1;
/// [`FfiWriteMode::kind`]: append.
pub const WRITE_APPEND: u32 = 2;

/// A [`WriteMode`] in C layout.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FfiWriteMode {
    /// `WRITE_*`.
    pub kind: u32,
    /// Offset for [`WRITE_AT`].
    pub offset: u64,
}

/// [`LayoutHints`] in C layout.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FfiLayoutHints {
    /// 1 if `expected_size` is set.
    pub has_expected_size: u8,
    /// Expected final size.
    pub expected_size: u64,
    /// Parallel streams.
    pub streams: u32,
}

/// A [`StorageSpec`] in C layout, borrowed for one call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FfiSpec {
    /// Base directory.
    pub base: FfiStr,
    /// 1 if confined beneath `base`.
    pub confined: u8,
    /// Login name.
    pub user: FfiStr,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: *const u32,
    /// Number of supplementary groups.
    pub ngroups: usize,
    /// Home directory.
    pub home: FfiStr,
}

/// Receives a setting's value, borrowed for the call.
pub type FfiValueSink = unsafe extern "C" fn(sink: *mut c_void, value: FfiStr);

/// Read access to the daemon configuration, borrowed for one call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FfiSettings {
    /// Daemon-private context.
    pub ctx: *const c_void,
    /// Looks up `name`; when set, calls `sink(sink_ctx, value)` once and
    /// returns 1, else returns 0.
    pub get: unsafe extern "C" fn(
        ctx: *const c_void,
        name: FfiStr,
        sink_ctx: *mut c_void,
        sink: FfiValueSink,
    ) -> i32,
}

/// Receives one directory entry, borrowed for the call.
pub type FfiListSink = unsafe extern "C" fn(sink: *mut c_void, name: FfiStr, stat: *const FfiStat);

/// The vtable of a storage plugin, plugin API 1.x. Every function pointer
/// is implemented by this crate (plugin side) on top of the plugin's
/// [`StorageBackend`]; see the module documentation for the rules.
#[repr(C)]
#[derive(Debug)]
pub struct StoragePluginV1 {
    /// Configuration name (UTF-8, static).
    pub name: FfiStr,
    /// Plugin version (UTF-8, static).
    pub version: FfiStr,
    /// One line for `--list-plugins` (UTF-8, static).
    pub description: FfiStr,
    /// Plugin-private: its [`StorageDescriptor`].
    pub ctx: *const c_void,
    /// Builds a backend; `*out` receives it.
    pub new_backend: unsafe extern "C" fn(
        ctx: *const c_void,
        settings: *const FfiSettings,
        out: *mut *mut c_void,
        err: *mut FfiError,
    ) -> FfiStatus,
    /// Frees a backend.
    pub drop_backend: unsafe extern "C" fn(backend: *mut c_void),
    /// Opens a session; `*out` receives it.
    pub open_session: unsafe extern "C" fn(
        backend: *const c_void,
        spec: *const FfiSpec,
        out: *mut *mut c_void,
        err: *mut FfiError,
    ) -> FfiStatus,
    /// Frees a session.
    pub drop_session: unsafe extern "C" fn(session: *mut c_void),
    /// [`Storage::stat`].
    pub stat: unsafe extern "C" fn(
        session: *const c_void,
        path: FfiStr,
        out: *mut FfiStat,
        err: *mut FfiError,
    ) -> FfiStatus,
    /// [`Storage::list`]: calls `add` once per entry.
    pub list: unsafe extern "C" fn(
        session: *const c_void,
        dir: FfiStr,
        sink: *mut c_void,
        add: FfiListSink,
        err: *mut FfiError,
    ) -> FfiStatus,
    /// [`Storage::open_read`]; `*out` receives the reader.
    pub open_read: unsafe extern "C" fn(
        session: *const c_void,
        path: FfiStr,
        offset: u64,
        out: *mut *mut c_void,
        err: *mut FfiError,
    ) -> FfiStatus,
    /// `Read::read` into `buf[..len]`; `*n` receives the count.
    pub read: unsafe extern "C" fn(
        reader: *mut c_void,
        buf: *mut u8,
        len: usize,
        n: *mut usize,
        err: *mut FfiError,
    ) -> FfiStatus,
    /// [`ReadHandle::raw_fd`], -1 for none.
    pub reader_fd: unsafe extern "C" fn(reader: *const c_void) -> i32,
    /// Frees a reader.
    pub drop_reader: unsafe extern "C" fn(reader: *mut c_void),
    /// [`Storage::open_write`]; `*out` receives the writer.
    pub open_write: unsafe extern "C" fn(
        session: *const c_void,
        path: FfiStr,
        mode: *const FfiWriteMode,
        hints: *const FfiLayoutHints,
        out: *mut *mut c_void,
        err: *mut FfiError,
    ) -> FfiStatus,
    /// `Write::write` of `buf[..len]`; `*n` receives the count.
    pub write: unsafe extern "C" fn(
        writer: *mut c_void,
        buf: *const u8,
        len: usize,
        n: *mut usize,
        err: *mut FfiError,
    ) -> FfiStatus,
    /// `Write::flush`.
    pub flush: unsafe extern "C" fn(writer: *mut c_void, err: *mut FfiError) -> FfiStatus,
    /// [`WriteHandle::raw_fd`], -1 for none.
    pub writer_fd: unsafe extern "C" fn(writer: *const c_void) -> i32,
    /// [`WriteHandle::finish`]; consumes (frees) the writer.
    pub finish_writer: unsafe extern "C" fn(writer: *mut c_void, err: *mut FfiError) -> FfiStatus,
    /// Frees a writer that was not finished.
    pub drop_writer: unsafe extern "C" fn(writer: *mut c_void),
    /// [`Storage::mkdir`].
    pub mkdir:
        unsafe extern "C" fn(session: *const c_void, path: FfiStr, err: *mut FfiError) -> FfiStatus,
    /// [`Storage::rmdir`].
    pub rmdir:
        unsafe extern "C" fn(session: *const c_void, path: FfiStr, err: *mut FfiError) -> FfiStatus,
    /// [`Storage::unlink`].
    pub unlink:
        unsafe extern "C" fn(session: *const c_void, path: FfiStr, err: *mut FfiError) -> FfiStatus,
    /// [`Storage::rename`].
    pub rename: unsafe extern "C" fn(
        session: *const c_void,
        from: FfiStr,
        to: FfiStr,
        err: *mut FfiError,
    ) -> FfiStatus,
    /// [`Storage::set_mtime`].
    pub set_mtime: unsafe extern "C" fn(
        session: *const c_void,
        path: FfiStr,
        secs: i64,
        nanos: u32,
        err: *mut FfiError,
    ) -> FfiStatus,
    /// [`Storage::set_mode`].
    pub set_mode: unsafe extern "C" fn(
        session: *const c_void,
        path: FfiStr,
        mode: u32,
        err: *mut FfiError,
    ) -> FfiStatus,
}

// SAFETY: the vtable is immutable static data: function pointers, static
// strings and a pointer to the plugin's static descriptor.
unsafe impl Sync for StoragePluginV1 {}

impl StoragePluginV1 {
    /// The vtable wrapping a [`StorageDescriptor`] (plugin side; used by
    /// [`export_storage_plugin!`]).
    pub const fn new(descriptor: &'static StorageDescriptor) -> Self {
        StoragePluginV1 {
            name: FfiStr::from_static(descriptor.name),
            version: FfiStr::from_static(descriptor.version),
            description: FfiStr::from_static(descriptor.description),
            ctx: descriptor as *const StorageDescriptor as *const c_void,
            new_backend: plugin::new_backend,
            drop_backend: plugin::drop_backend,
            open_session: plugin::open_session,
            drop_session: plugin::drop_session,
            stat: plugin::stat,
            list: plugin::list,
            open_read: plugin::open_read,
            read: plugin::read,
            reader_fd: plugin::reader_fd,
            drop_reader: plugin::drop_reader,
            open_write: plugin::open_write,
            write: plugin::write,
            flush: plugin::flush,
            writer_fd: plugin::writer_fd,
            finish_writer: plugin::finish_writer,
            drop_writer: plugin::drop_writer,
            mkdir: plugin::mkdir,
            rmdir: plugin::rmdir,
            unlink: plugin::unlink,
            rename: plugin::rename,
            set_mtime: plugin::set_mtime,
            set_mode: plugin::set_mode,
        }
    }
}

/// Exports a [`StorageDescriptor`] from a `cdylib` as a dynamic storage
/// plugin: defines the `uftpd_plugin_header` symbol (see the [module
/// documentation](crate::ffi)). Use it once, at the root of the plugin
/// crate.
#[macro_export]
macro_rules! export_storage_plugin {
    ($descriptor:expr $(,)?) => {
        /// The plugin header that uftpd looks up and checks before
        /// anything else (generated by `export_storage_plugin!`).
        // SAFETY (no_mangle): the symbol name is reserved for this purpose;
        // a library defines it once, through this macro.
        #[unsafe(no_mangle)]
        pub extern "C" fn uftpd_plugin_header() -> *const $crate::ffi::PluginHeader {
            static DESCRIPTOR: $crate::StorageDescriptor = $descriptor;
            static PLUGIN: $crate::ffi::StoragePluginV1 =
                $crate::ffi::StoragePluginV1::new(&DESCRIPTOR);
            static HEADER: $crate::ffi::PluginHeader = $crate::ffi::PluginHeader::storage(&PLUGIN);
            &HEADER
        }
    };
}

/// Message of a panic payload.
fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

/// The plugin side: `extern "C"` functions on top of the Rust traits.
/// Compiled into every plugin (as part of its copy of this crate).
mod plugin {
    use super::*;

    type Backend = Box<dyn StorageBackend>;
    type Session = Box<dyn Storage>;
    type Reader = Box<dyn ReadHandle>;
    type Writer = Box<dyn WriteHandle>;

    /// Runs `f`, turning an error or a panic into a status and `*err`.
    fn guard(
        what: &str,
        err: *mut FfiError,
        f: impl FnOnce() -> Result<(), StorageError>,
    ) -> FfiStatus {
        let mut local = FfiError::default();
        let status = match catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(())) => return STATUS_OK,
            Ok(Err(e)) => {
                local.fill_storage(&e);
                STATUS_ERROR
            }
            Err(p) => {
                local.set(
                    ErrorKind::Other,
                    0,
                    &format!("storage plugin panicked in {what}: {}", panic_message(&*p)),
                );
                STATUS_PANIC
            }
        };
        if !err.is_null() {
            // SAFETY: the daemon passes a pointer to an FfiError it owns
            // for the duration of the call (checked non-null above).
            unsafe { *err = local };
        }
        status
    }

    /// An I/O error of a handle, keeping its OS error number.
    fn io_to_storage(e: io::Error) -> StorageError {
        StorageError::with_source(crate::kind_of(&e), e.to_string(), e)
    }

    /// Writes `value` to `*out`.
    fn put<T>(out: *mut T, value: T) -> Result<(), StorageError> {
        if out.is_null() {
            return Err(StorageError::new(ErrorKind::InvalidInput, "null output"));
        }
        // SAFETY: the daemon passes a pointer to memory it owns for the
        // call (checked non-null above).
        unsafe { out.write(value) };
        Ok(())
    }

    /// Frees a boxed object, ignoring a panic in its `Drop`.
    fn free<T>(p: *mut c_void) {
        if p.is_null() {
            return;
        }
        let _ = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: p was made by Box::into_raw of a Box<T> in this
            // module and the daemon frees every object once.
            drop(unsafe { Box::from_raw(p as *mut T) });
        }));
    }

    /// The object behind an opaque pointer.
    ///
    /// # Safety
    /// `p` must come from `Box::into_raw(Box<T>)` in this module and not
    /// be freed.
    unsafe fn obj<'a, T>(p: *const c_void) -> Result<&'a T, StorageError> {
        if p.is_null() {
            return Err(StorageError::new(ErrorKind::InvalidInput, "null handle"));
        }
        // SAFETY: forwarded to the caller.
        Ok(unsafe { &*(p as *const T) })
    }

    /// As [`obj`], mutable.
    ///
    /// # Safety
    /// As for [`obj`], and no other reference to the object may exist.
    unsafe fn obj_mut<'a, T>(p: *mut c_void) -> Result<&'a mut T, StorageError> {
        if p.is_null() {
            return Err(StorageError::new(ErrorKind::InvalidInput, "null handle"));
        }
        // SAFETY: forwarded to the caller.
        Ok(unsafe { &mut *(p as *mut T) })
    }

    unsafe extern "C" fn value_sink(sink: *mut c_void, value: FfiStr) {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: sink is the `Option<String>` passed to `get` below,
            // live for that call; value is borrowed for this call.
            let slot = unsafe { &mut *(sink as *mut Option<String>) };
            // SAFETY: the daemon passes bytes valid for this call.
            *slot = Some(String::from_utf8_lossy(unsafe { value.as_bytes() }).into_owned());
        }));
    }

    pub(super) unsafe extern "C" fn new_backend(
        ctx: *const c_void,
        settings: *const FfiSettings,
        out: *mut *mut c_void,
        err: *mut FfiError,
    ) -> FfiStatus {
        guard("new_backend", err, || {
            // SAFETY: ctx is the descriptor this vtable was built from
            // (StoragePluginV1::new), a static.
            let d = unsafe { obj::<StorageDescriptor>(ctx)? };
            // SAFETY: the daemon passes settings valid for the call.
            let s = unsafe { *obj::<FfiSettings>(settings as *const c_void)? };
            let lookup = move |name: &str| -> Option<String> {
                let mut slot: Option<String> = None;
                // SAFETY: s.get is the daemon's function for s.ctx; slot
                // outlives the call and value_sink expects an Option<String>.
                let found = unsafe {
                    (s.get)(
                        s.ctx,
                        FfiStr::new(name.as_bytes()),
                        &mut slot as *mut Option<String> as *mut c_void,
                        value_sink,
                    )
                };
                if found == 1 { slot } else { None }
            };
            let backend: Backend = (d.constructor)(&lookup)
                .map_err(|m| StorageError::new(ErrorKind::InvalidInput, m))?;
            put(out, Box::into_raw(Box::new(backend)) as *mut c_void)
        })
    }

    pub(super) unsafe extern "C" fn drop_backend(backend: *mut c_void) {
        free::<Backend>(backend)
    }

    pub(super) unsafe extern "C" fn open_session(
        backend: *const c_void,
        spec: *const FfiSpec,
        out: *mut *mut c_void,
        err: *mut FfiError,
    ) -> FfiStatus {
        guard("open_session", err, || {
            // SAFETY: backend comes from new_backend and is live.
            let b = unsafe { obj::<Backend>(backend)? };
            // SAFETY: the daemon passes a spec valid for the call.
            let s = unsafe { *obj::<FfiSpec>(spec as *const c_void)? };
            let groups = if s.ngroups == 0 || s.groups.is_null() {
                Vec::new()
            } else {
                // SAFETY: groups/ngroups describe the daemon's slice,
                // valid for the call.
                unsafe { std::slice::from_raw_parts(s.groups, s.ngroups) }.to_vec()
            };
            // SAFETY: the strings of the spec are borrowed for the call
            // and copied here.
            let (user, home, base) = unsafe {
                (
                    String::from_utf8_lossy(s.user.as_bytes()).into_owned(),
                    PathBuf::from(s.home.as_path()),
                    PathBuf::from(s.base.as_path()),
                )
            };
            let identity = Identity {
                user,
                uid: s.uid,
                gid: s.gid,
                groups,
                home,
            };
            let session: Session = b.open_session(&StorageSpec {
                base: &base,
                confined: s.confined != 0,
                identity: &identity,
            })?;
            put(out, Box::into_raw(Box::new(session)) as *mut c_void)
        })
    }

    pub(super) unsafe extern "C" fn drop_session(session: *mut c_void) {
        free::<Session>(session)
    }

    pub(super) unsafe extern "C" fn stat(
        session: *const c_void,
        path: FfiStr,
        out: *mut FfiStat,
        err: *mut FfiError,
    ) -> FfiStatus {
        guard("stat", err, || {
            // SAFETY: session comes from open_session; path is borrowed
            // for the call.
            let (s, p) = unsafe { (obj::<Session>(session)?, path.as_path()) };
            let st = s.stat(p)?;
            put(out, FfiStat::from(&st))
        })
    }

    pub(super) unsafe extern "C" fn list(
        session: *const c_void,
        dir: FfiStr,
        sink: *mut c_void,
        add: FfiListSink,
        err: *mut FfiError,
    ) -> FfiStatus {
        guard("list", err, || {
            // SAFETY: session comes from open_session; dir is borrowed for
            // the call.
            let (s, p) = unsafe { (obj::<Session>(session)?, dir.as_path()) };
            for e in s.list(p)? {
                let st = FfiStat::from(&e.stat);
                // SAFETY: add/sink are the daemon's callback and context,
                // valid for this call; name and st outlive the callback.
                unsafe { add(sink, FfiStr::new(e.name.as_bytes()), &st) };
            }
            Ok(())
        })
    }

    pub(super) unsafe extern "C" fn open_read(
        session: *const c_void,
        path: FfiStr,
        offset: u64,
        out: *mut *mut c_void,
        err: *mut FfiError,
    ) -> FfiStatus {
        guard("open_read", err, || {
            // SAFETY: session comes from open_session; path is borrowed
            // for the call.
            let (s, p) = unsafe { (obj::<Session>(session)?, path.as_path()) };
            let r: Reader = s.open_read(p, offset)?;
            put(out, Box::into_raw(Box::new(r)) as *mut c_void)
        })
    }

    pub(super) unsafe extern "C" fn read(
        reader: *mut c_void,
        buf: *mut u8,
        len: usize,
        n: *mut usize,
        err: *mut FfiError,
    ) -> FfiStatus {
        guard("read", err, || {
            // SAFETY: reader comes from open_read; the daemon uses a
            // handle from one thread at a time.
            let r = unsafe { obj_mut::<Reader>(reader)? };
            let slice: &mut [u8] = if len == 0 || buf.is_null() {
                &mut []
            } else {
                // SAFETY: buf/len describe the daemon's buffer, valid and
                // exclusively ours for the call.
                unsafe { std::slice::from_raw_parts_mut(buf, len) }
            };
            match r.read(slice) {
                Ok(count) => put(n, count),
                Err(e) => Err(io_to_storage(e)),
            }
        })
    }

    pub(super) unsafe extern "C" fn reader_fd(reader: *const c_void) -> i32 {
        catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: reader comes from open_read.
            unsafe { obj::<Reader>(reader) }
                .ok()
                .and_then(|r| r.raw_fd())
                .unwrap_or(-1)
        }))
        .unwrap_or(-1)
    }

    pub(super) unsafe extern "C" fn drop_reader(reader: *mut c_void) {
        free::<Reader>(reader)
    }

    pub(super) unsafe extern "C" fn open_write(
        session: *const c_void,
        path: FfiStr,
        mode: *const FfiWriteMode,
        hints: *const FfiLayoutHints,
        out: *mut *mut c_void,
        err: *mut FfiError,
    ) -> FfiStatus {
        guard("open_write", err, || {
            // SAFETY: session comes from open_session; path, mode and
            // hints are borrowed for the call.
            let (s, p, m, h) = unsafe {
                (
                    obj::<Session>(session)?,
                    path.as_path(),
                    *obj::<FfiWriteMode>(mode as *const c_void)?,
                    *obj::<FfiLayoutHints>(hints as *const c_void)?,
                )
            };
            let mode = match m.kind {
                WRITE_TRUNCATE => WriteMode::Truncate,
                WRITE_AT => WriteMode::At(m.offset),
                WRITE_APPEND => WriteMode::Append,
                k => {
                    return Err(StorageError::new(
                        ErrorKind::InvalidInput,
                        format!("unknown write mode {k}"),
                    ));
                }
            };
            let hints = LayoutHints {
                expected_size: (h.has_expected_size != 0).then_some(h.expected_size),
                streams: h.streams,
            };
            let w: Writer = s.open_write(p, mode, &hints)?;
            put(out, Box::into_raw(Box::new(w)) as *mut c_void)
        })
    }

    pub(super) unsafe extern "C" fn write(
        writer: *mut c_void,
        buf: *const u8,
        len: usize,
        n: *mut usize,
        err: *mut FfiError,
    ) -> FfiStatus {
        guard("write", err, || {
            // SAFETY: writer comes from open_write; one thread at a time.
            let w = unsafe { obj_mut::<Writer>(writer)? };
            // SAFETY: buf/len describe the daemon's bytes for the call.
            let data = unsafe { FfiStr { ptr: buf, len }.as_bytes() };
            match w.write(data) {
                Ok(count) => put(n, count),
                Err(e) => Err(io_to_storage(e)),
            }
        })
    }

    pub(super) unsafe extern "C" fn flush(writer: *mut c_void, err: *mut FfiError) -> FfiStatus {
        guard("flush", err, || {
            // SAFETY: writer comes from open_write; one thread at a time.
            let w = unsafe { obj_mut::<Writer>(writer)? };
            w.flush().map_err(io_to_storage)
        })
    }

    pub(super) unsafe extern "C" fn writer_fd(writer: *const c_void) -> i32 {
        catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: writer comes from open_write.
            unsafe { obj::<Writer>(writer) }
                .ok()
                .and_then(|w| w.raw_fd())
                .unwrap_or(-1)
        }))
        .unwrap_or(-1)
    }

    pub(super) unsafe extern "C" fn finish_writer(
        writer: *mut c_void,
        err: *mut FfiError,
    ) -> FfiStatus {
        guard("finish", err, || {
            if writer.is_null() {
                return Err(StorageError::new(ErrorKind::InvalidInput, "null handle"));
            }
            // SAFETY: writer comes from open_write; the daemon hands it
            // over here and never uses it again.
            let w: Box<Writer> = unsafe { Box::from_raw(writer as *mut Writer) };
            (*w).finish()
        })
    }

    pub(super) unsafe extern "C" fn drop_writer(writer: *mut c_void) {
        free::<Writer>(writer)
    }

    /// A path operation on a session.
    fn path_op(
        what: &str,
        session: *const c_void,
        path: FfiStr,
        err: *mut FfiError,
        op: impl FnOnce(&dyn Storage, &Path) -> Result<(), StorageError>,
    ) -> FfiStatus {
        guard(what, err, || {
            // SAFETY: session comes from open_session; path is borrowed
            // for the call.
            let (s, p) = unsafe { (obj::<Session>(session)?, path.as_path()) };
            op(s.as_ref(), p)
        })
    }

    pub(super) unsafe extern "C" fn mkdir(
        session: *const c_void,
        path: FfiStr,
        err: *mut FfiError,
    ) -> FfiStatus {
        path_op("mkdir", session, path, err, |s, p| s.mkdir(p))
    }

    pub(super) unsafe extern "C" fn rmdir(
        session: *const c_void,
        path: FfiStr,
        err: *mut FfiError,
    ) -> FfiStatus {
        path_op("rmdir", session, path, err, |s, p| s.rmdir(p))
    }

    pub(super) unsafe extern "C" fn unlink(
        session: *const c_void,
        path: FfiStr,
        err: *mut FfiError,
    ) -> FfiStatus {
        path_op("unlink", session, path, err, |s, p| s.unlink(p))
    }

    pub(super) unsafe extern "C" fn rename(
        session: *const c_void,
        from: FfiStr,
        to: FfiStr,
        err: *mut FfiError,
    ) -> FfiStatus {
        // SAFETY: `to` is borrowed for the call.
        let to = unsafe { to.as_path() };
        path_op("rename", session, from, err, |s, p| s.rename(p, to))
    }

    pub(super) unsafe extern "C" fn set_mtime(
        session: *const c_void,
        path: FfiStr,
        secs: i64,
        nanos: u32,
        err: *mut FfiError,
    ) -> FfiStatus {
        path_op("set_mtime", session, path, err, |s, p| {
            s.set_mtime(p, time_from_parts(secs, nanos))
        })
    }

    pub(super) unsafe extern "C" fn set_mode(
        session: *const c_void,
        path: FfiStr,
        mode: u32,
        err: *mut FfiError,
    ) -> FfiStatus {
        path_op("set_mode", session, path, err, |s, p| s.set_mode(p, mode))
    }
}

// ------------------------------------------------------------------ daemon side

/// A checked storage plugin declaration (daemon side): what `--list-plugins`
/// shows, and a constructor of backends that go through the vtable.
#[derive(Debug, Clone, Copy)]
pub struct DynamicStoragePlugin {
    vtable: &'static StoragePluginV1,
    name: &'static str,
    version: &'static str,
    description: &'static str,
}

/// A static UTF-8 string from the vtable.
///
/// # Safety
/// `s` must describe bytes that live for the rest of the process.
unsafe fn static_str(s: FfiStr, what: &'static str) -> Result<&'static str, HeaderError> {
    // SAFETY: forwarded to the caller.
    let bytes: &'static [u8] = unsafe { s.as_bytes() };
    std::str::from_utf8(bytes).map_err(|_| HeaderError::Malformed(what))
}

impl DynamicStoragePlugin {
    /// Checks a header (see the module documentation for the order of the
    /// checks) and, when everything matches, returns the plugin.
    ///
    /// # Safety
    /// `header` must be what the plugin's [`HEADER_SYMBOL`] returned (or
    /// null), and the library must stay loaded for the rest of the process.
    /// The magic number is read first; only a header that passes all checks
    /// is read further.
    pub unsafe fn from_header(header: *const PluginHeader) -> Result<Self, HeaderError> {
        if header.is_null() {
            return Err(HeaderError::Null);
        }
        // SAFETY: the caller guarantees a non-null header pointer is the
        // plugin's static header; its first field is 8 bytes in any
        // version.
        let magic = unsafe { ptr::addr_of!((*header).magic).read_unaligned() };
        if magic != MAGIC {
            return Err(HeaderError::Magic);
        }
        // SAFETY: with the right magic, the layout of PluginHeader is
        // frozen, so the whole struct can be read.
        let h: &'static PluginHeader = unsafe { &*header };
        let expected = std::mem::size_of::<PluginHeader>() as u32;
        if h.header_size != expected {
            return Err(HeaderError::HeaderSize {
                found: h.header_size,
                expected,
            });
        }
        if h.role != ROLE_STORAGE {
            return Err(HeaderError::Role(h.role));
        }
        if h.abi_major != ABI_MAJOR || h.abi_minor > ABI_MINOR {
            return Err(HeaderError::Abi {
                found_major: h.abi_major,
                found_minor: h.abi_minor,
            });
        }
        if h.fingerprint != FINGERPRINT {
            return Err(HeaderError::Fingerprint {
                plugin_rustc: unpadded(&h.rustc_version),
                plugin_api: unpadded(&h.api_version),
            });
        }
        if h.plugin.is_null() {
            return Err(HeaderError::Malformed("no storage declaration"));
        }
        // SAFETY: same toolchain and storage-api version, so the plugin
        // built its StoragePluginV1 with exactly this layout; it is a
        // static of a library that stays loaded.
        let vtable: &'static StoragePluginV1 = unsafe { &*(h.plugin as *const StoragePluginV1) };
        // SAFETY: the strings are statics of the library, which stays
        // loaded.
        let (name, version, description) = unsafe {
            (
                static_str(vtable.name, "name is not UTF-8")?,
                static_str(vtable.version, "version is not UTF-8")?,
                static_str(vtable.description, "description is not UTF-8")?,
            )
        };
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(HeaderError::Malformed("name is empty or has blanks"));
        }
        Ok(DynamicStoragePlugin {
            vtable,
            name,
            version,
            description,
        })
    }

    /// Configuration name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Plugin version.
    pub fn version(&self) -> &'static str {
        self.version
    }

    /// One-line description.
    pub fn description(&self) -> &'static str {
        self.description
    }

    /// Builds a backend; `settings` looks up configuration variables.
    pub fn construct(
        &self,
        settings: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Box<dyn StorageBackend>, String> {
        let ctx: &&dyn Fn(&str) -> Option<String> = &settings;
        let ffi_settings = FfiSettings {
            ctx: ctx as *const &dyn Fn(&str) -> Option<String> as *const c_void,
            get: daemon_get_setting,
        };
        let mut out: *mut c_void = ptr::null_mut();
        let mut err = FfiError::default();
        // SAFETY: vtable functions follow the contract of this module;
        // ffi_settings, out and err outlive the call.
        let status = unsafe {
            (self.vtable.new_backend)(self.vtable.ctx, &ffi_settings, &mut out, &mut err)
        };
        if status != STATUS_OK || out.is_null() {
            return Err(err.text());
        }
        Ok(Box::new(FfiBackend {
            vtable: self.vtable,
            name: self.name,
            ptr: out,
        }))
    }
}

/// The daemon's settings lookup, called by the plugin.
unsafe extern "C" fn daemon_get_setting(
    ctx: *const c_void,
    name: FfiStr,
    sink_ctx: *mut c_void,
    sink: FfiValueSink,
) -> i32 {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: ctx is the `&&dyn Fn` made in construct(), live during
        // the new_backend call that calls us.
        let lookup = unsafe { *(ctx as *const &dyn Fn(&str) -> Option<String>) };
        // SAFETY: the plugin passes the name borrowed for this call.
        let Ok(name) = std::str::from_utf8(unsafe { name.as_bytes() }) else {
            return 0;
        };
        match lookup(name) {
            Some(v) => {
                // SAFETY: sink/sink_ctx are the plugin's, valid for this
                // call; v outlives it.
                unsafe { sink(sink_ctx, FfiStr::new(v.as_bytes())) };
                1
            }
            None => 0,
        }
    }))
    .unwrap_or(0)
}

/// A backend living in a plugin.
struct FfiBackend {
    vtable: &'static StoragePluginV1,
    name: &'static str,
    ptr: *mut c_void,
}

// SAFETY: the object behind ptr is a Box<dyn StorageBackend>, which is
// Send + Sync; the vtable functions only take shared references to it.
unsafe impl Send for FfiBackend {}
// SAFETY: as above.
unsafe impl Sync for FfiBackend {}

impl fmt::Debug for FfiBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FfiBackend")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Drop for FfiBackend {
    fn drop(&mut self) {
        // SAFETY: ptr came from new_backend and is freed once, here.
        unsafe { (self.vtable.drop_backend)(self.ptr) }
    }
}

/// Calls a vtable function that fills an FfiError.
fn call(f: impl FnOnce(*mut FfiError) -> FfiStatus) -> Result<(), StorageError> {
    let mut err = FfiError::default();
    if f(&mut err) == STATUS_OK {
        Ok(())
    } else {
        Err(err.to_storage())
    }
}

impl StorageBackend for FfiBackend {
    fn name(&self) -> &str {
        self.name
    }

    fn open_session(&self, spec: &StorageSpec<'_>) -> Result<Box<dyn Storage>, StorageError> {
        let id = spec.identity;
        let home = id.home.as_os_str().as_bytes();
        let ffi_spec = FfiSpec {
            base: FfiStr::path(spec.base),
            confined: u8::from(spec.confined),
            user: FfiStr::new(id.user.as_bytes()),
            uid: id.uid,
            gid: id.gid,
            groups: id.groups.as_ptr(),
            ngroups: id.groups.len(),
            home: FfiStr::new(home),
        };
        let mut out: *mut c_void = ptr::null_mut();
        // SAFETY: ptr is our live backend; ffi_spec and the data it borrows,
        // out and err outlive the call.
        call(|err| unsafe { (self.vtable.open_session)(self.ptr, &ffi_spec, &mut out, err) })?;
        Ok(Box::new(FfiSession {
            vtable: self.vtable,
            ptr: out,
        }))
    }
}

/// A session living in a plugin.
struct FfiSession {
    vtable: &'static StoragePluginV1,
    ptr: *mut c_void,
}

// SAFETY: the object behind ptr is a Box<dyn Storage>, which is Send.
// FfiSession is not Sync (raw pointer), like the trait requires.
unsafe impl Send for FfiSession {}

impl Drop for FfiSession {
    fn drop(&mut self) {
        // SAFETY: ptr came from open_session and is freed once, here.
        unsafe { (self.vtable.drop_session)(self.ptr) }
    }
}

unsafe extern "C" fn daemon_list_sink(sink: *mut c_void, name: FfiStr, stat: *const FfiStat) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if stat.is_null() {
            return;
        }
        // SAFETY: sink is the Vec passed to `list` below, live during the
        // call; name and stat are borrowed for this call.
        let (entries, name, stat) =
            unsafe { (&mut *(sink as *mut Vec<DirEntry>), name.as_bytes(), &*stat) };
        entries.push(DirEntry {
            name: String::from_utf8_lossy(name).into_owned(),
            stat: FileStat::from(stat),
        });
    }));
}

impl Storage for FfiSession {
    fn stat(&self, path: &Path) -> Result<FileStat, StorageError> {
        let mut st = FfiStat::default();
        // SAFETY: ptr is our live session; path and st outlive the call.
        call(|err| unsafe { (self.vtable.stat)(self.ptr, FfiStr::path(path), &mut st, err) })?;
        Ok(FileStat::from(&st))
    }

    fn list(&self, dir: &Path) -> Result<Vec<DirEntry>, StorageError> {
        let mut entries: Vec<DirEntry> = Vec::new();
        let sink = &mut entries as *mut Vec<DirEntry> as *mut c_void;
        // SAFETY: ptr is our live session; entries outlives the call and
        // daemon_list_sink expects a Vec<DirEntry>.
        call(|err| unsafe {
            (self.vtable.list)(self.ptr, FfiStr::path(dir), sink, daemon_list_sink, err)
        })?;
        Ok(entries)
    }

    fn open_read(&self, path: &Path, offset: u64) -> Result<Box<dyn ReadHandle>, StorageError> {
        let mut out: *mut c_void = ptr::null_mut();
        // SAFETY: ptr is our live session; path and out outlive the call.
        call(|err| unsafe {
            (self.vtable.open_read)(self.ptr, FfiStr::path(path), offset, &mut out, err)
        })?;
        Ok(Box::new(FfiReader {
            vtable: self.vtable,
            ptr: out,
        }))
    }

    fn open_write(
        &self,
        path: &Path,
        mode: WriteMode,
        hints: &LayoutHints,
    ) -> Result<Box<dyn WriteHandle>, StorageError> {
        let m = match mode {
            WriteMode::Truncate => FfiWriteMode {
                kind: WRITE_TRUNCATE,
                offset: 0,
            },
            WriteMode::At(offset) => FfiWriteMode {
                kind: WRITE_AT,
                offset,
            },
            WriteMode::Append => FfiWriteMode {
                kind: WRITE_APPEND,
                offset: 0,
            },
        };
        let h = FfiLayoutHints {
            has_expected_size: u8::from(hints.expected_size.is_some()),
            expected_size: hints.expected_size.unwrap_or(0),
            streams: hints.streams,
        };
        let mut out: *mut c_void = ptr::null_mut();
        // SAFETY: ptr is our live session; path, m, h and out outlive the
        // call.
        call(|err| unsafe {
            (self.vtable.open_write)(self.ptr, FfiStr::path(path), &m, &h, &mut out, err)
        })?;
        Ok(Box::new(FfiWriter {
            vtable: self.vtable,
            ptr: out,
        }))
    }

    fn mkdir(&self, path: &Path) -> Result<(), StorageError> {
        // SAFETY: ptr is our live session; path outlives the call.
        call(|err| unsafe { (self.vtable.mkdir)(self.ptr, FfiStr::path(path), err) })
    }

    fn rmdir(&self, path: &Path) -> Result<(), StorageError> {
        // SAFETY: ptr is our live session; path outlives the call.
        call(|err| unsafe { (self.vtable.rmdir)(self.ptr, FfiStr::path(path), err) })
    }

    fn unlink(&self, path: &Path) -> Result<(), StorageError> {
        // SAFETY: ptr is our live session; path outlives the call.
        call(|err| unsafe { (self.vtable.unlink)(self.ptr, FfiStr::path(path), err) })
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<(), StorageError> {
        // SAFETY: ptr is our live session; both paths outlive the call.
        call(|err| unsafe {
            (self.vtable.rename)(self.ptr, FfiStr::path(from), FfiStr::path(to), err)
        })
    }

    fn set_mtime(&self, path: &Path, mtime: SystemTime) -> Result<(), StorageError> {
        let (secs, nanos) = time_to_parts(mtime);
        // SAFETY: ptr is our live session; path outlives the call.
        call(|err| unsafe {
            (self.vtable.set_mtime)(self.ptr, FfiStr::path(path), secs, nanos, err)
        })
    }

    fn set_mode(&self, path: &Path, mode: u32) -> Result<(), StorageError> {
        // SAFETY: ptr is our live session; path outlives the call.
        call(|err| unsafe { (self.vtable.set_mode)(self.ptr, FfiStr::path(path), mode, err) })
    }
}

/// A reader living in a plugin.
struct FfiReader {
    vtable: &'static StoragePluginV1,
    ptr: *mut c_void,
}

// SAFETY: the object behind ptr is a Box<dyn ReadHandle>, which is Send.
unsafe impl Send for FfiReader {}

impl Drop for FfiReader {
    fn drop(&mut self) {
        // SAFETY: ptr came from open_read and is freed once, here.
        unsafe { (self.vtable.drop_reader)(self.ptr) }
    }
}

impl Read for FfiReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0usize;
        let mut err = FfiError::default();
        // SAFETY: ptr is our live reader, used through &mut self only;
        // buf, n and err outlive the call.
        let status =
            unsafe { (self.vtable.read)(self.ptr, buf.as_mut_ptr(), buf.len(), &mut n, &mut err) };
        if status == STATUS_OK {
            Ok(n.min(buf.len()))
        } else {
            Err(err.to_io())
        }
    }
}

impl ReadHandle for FfiReader {
    fn raw_fd(&self) -> Option<RawFd> {
        // SAFETY: ptr is our live reader.
        let fd = unsafe { (self.vtable.reader_fd)(self.ptr) };
        (fd >= 0).then_some(fd)
    }
}

/// A writer living in a plugin.
struct FfiWriter {
    vtable: &'static StoragePluginV1,
    /// Null once handed to `finish_writer`.
    ptr: *mut c_void,
}

// SAFETY: the object behind ptr is a Box<dyn WriteHandle>, which is Send.
unsafe impl Send for FfiWriter {}

impl Drop for FfiWriter {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: ptr came from open_write, was not finished, and is
            // freed once, here.
            unsafe { (self.vtable.drop_writer)(self.ptr) }
        }
    }
}

impl Write for FfiWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut n = 0usize;
        let mut err = FfiError::default();
        // SAFETY: ptr is our live writer, used through &mut self only;
        // buf, n and err outlive the call.
        let status =
            unsafe { (self.vtable.write)(self.ptr, buf.as_ptr(), buf.len(), &mut n, &mut err) };
        if status == STATUS_OK {
            Ok(n.min(buf.len()))
        } else {
            Err(err.to_io())
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut err = FfiError::default();
        // SAFETY: ptr is our live writer; err outlives the call.
        let status = unsafe { (self.vtable.flush)(self.ptr, &mut err) };
        if status == STATUS_OK {
            Ok(())
        } else {
            Err(err.to_io())
        }
    }
}

impl WriteHandle for FfiWriter {
    fn raw_fd(&self) -> Option<RawFd> {
        // SAFETY: ptr is our live writer.
        let fd = unsafe { (self.vtable.writer_fd)(self.ptr) };
        (fd >= 0).then_some(fd)
    }

    fn finish(mut self: Box<Self>) -> Result<(), StorageError> {
        let p = std::mem::replace(&mut self.ptr, ptr::null_mut());
        // SAFETY: p is our live writer, handed over to the plugin, which
        // frees it; Drop skips the now-null pointer.
        call(|err| unsafe { (self.vtable.finish_writer)(p, err) })
    }
}

#[cfg(test)]
mod tests;
