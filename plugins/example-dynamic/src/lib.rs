//! `audit-posix`: an example dynamic storage plugin for uftpd.
//!
//! It serves files exactly like the built-in `posix` backend (it *is* the
//! `posix` backend, used as a library) and additionally appends one line
//! to an audit log for every file a session writes, and for every
//! directory created or removed, file removed or renamed:
//!
//! ```text
//! ts=1767225600 user="alice" uid=1000 event=write size=1048576 mode=truncate path="/data/alice/run1/out.h5"
//! ```
//!
//! Build it with `cargo build --release -p uftpd-example-dynamic` and
//! enable it in `uftpd.conf`:
//!
//! ```text
//! export PLUGINS=/usr/lib/uftpd/plugins/libuftpd_example_dynamic.so
//! export STORAGE_BACKEND=audit-posix
//! export AUDIT_LOG=/var/log/uftpd/audit.log
//! ```
//!
//! The book's chapter "Writing a storage plugin" walks through this file.

// ANCHOR: imports
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::RawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use storage_api::{
    DirEntry, ErrorKind, FileStat, LayoutHints, ReadHandle, Storage, StorageBackend,
    StorageDescriptor, StorageError, StorageSpec, WriteHandle, WriteMode,
};
use uftpd_posix::PosixStorage;
// ANCHOR_END: imports

// ANCHOR: export
storage_api::export_storage_plugin!(StorageDescriptor {
    name: "audit-posix",
    version: env!("CARGO_PKG_VERSION"),
    description: "POSIX files, plus an audit log (AUDIT_LOG) of files written, made, removed and renamed",
    constructor: construct,
});
// ANCHOR_END: export

// ANCHOR: constructor
/// The configuration variable naming the audit log file.
pub const AUDIT_LOG: &str = "AUDIT_LOG";

/// Builds the backend from the configuration. uftpd calls this once in the
/// daemon at startup (so that a bad setting stops startup) and once in
/// every session process, *before* that process takes on the user's
/// identity: the log file is opened here, with the daemon's privileges,
/// and written through the open descriptor later on.
fn construct(settings: &dyn Fn(&str) -> Option<String>) -> Result<Box<dyn StorageBackend>, String> {
    let path = settings(AUDIT_LOG)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("{AUDIT_LOG} is not set (the file to append audit records to)"))?;
    let path = PathBuf::from(path);
    if !path.is_absolute() {
        return Err(format!(
            "{AUDIT_LOG}={}: must be an absolute path",
            path.display()
        ));
    }
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(&path)
        .map_err(|e| format!("cannot open {AUDIT_LOG} {}: {e}", path.display()))?;
    Ok(Box::new(AuditBackend {
        log: Arc::new(AuditLog { file, path }),
    }))
}
// ANCHOR_END: constructor

// ANCHOR: log
/// The open audit log, shared by a backend and its sessions and writers.
#[derive(Debug)]
struct AuditLog {
    file: File,
    path: PathBuf,
}

impl AuditLog {
    /// Appends one record. The line is written with a single `write(2)` on
    /// a file opened with `O_APPEND`, so records of concurrent sessions do
    /// not interleave. Names are written quoted and escaped (`{:?}`), so a
    /// file name with a newline in it cannot forge a record.
    fn record(&self, user: &str, uid: u32, event: &str, detail: &str) -> Result<(), StorageError> {
        let ts = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let line = format!("ts={ts} user={user:?} uid={uid} event={event} {detail}\n");
        match (&self.file).write(line.as_bytes()) {
            Ok(n) if n == line.len() => Ok(()),
            Ok(_) => Err(StorageError::new(
                ErrorKind::Other,
                format!("audit log {}: short write", self.path.display()),
            )),
            Err(e) => Err(StorageError::io(
                format_args!("audit log {}", self.path.display()),
                e,
            )),
        }
    }
}
// ANCHOR_END: log

// ANCHOR: backend
/// The backend: a factory of audited POSIX sessions.
#[derive(Debug)]
pub struct AuditBackend {
    log: Arc<AuditLog>,
}

impl StorageBackend for AuditBackend {
    fn name(&self) -> &str {
        "audit-posix"
    }

    fn open_session(&self, spec: &StorageSpec<'_>) -> Result<Box<dyn Storage>, StorageError> {
        Ok(Box::new(AuditStorage {
            posix: Arc::new(PosixStorage::open(spec.base, spec.confined)?),
            base: spec.base.to_path_buf(),
            user: spec.identity.user.clone(),
            uid: spec.identity.uid,
            log: self.log.clone(),
        }))
    }
}
// ANCHOR_END: backend

// ANCHOR: session
/// One session's storage: POSIX underneath, a record for every change.
#[derive(Debug)]
struct AuditStorage {
    posix: Arc<PosixStorage>,
    base: PathBuf,
    user: String,
    uid: u32,
    log: Arc<AuditLog>,
}

impl AuditStorage {
    /// The absolute path of a session path, for the record.
    fn shown(&self, path: &Path) -> PathBuf {
        self.base.join(path)
    }

    fn record(&self, event: &str, detail: String) -> Result<(), StorageError> {
        self.log.record(&self.user, self.uid, event, &detail)
    }
}

impl Storage for AuditStorage {
    // Reading changes nothing: straight through to POSIX.
    fn stat(&self, path: &Path) -> Result<FileStat, StorageError> {
        self.posix.stat(path)
    }

    fn list(&self, dir: &Path) -> Result<Vec<DirEntry>, StorageError> {
        self.posix.list(dir)
    }

    fn open_read(&self, path: &Path, offset: u64) -> Result<Box<dyn ReadHandle>, StorageError> {
        self.posix.open_read(path, offset)
    }

    fn open_write(
        &self,
        path: &Path,
        mode: WriteMode,
        hints: &LayoutHints,
    ) -> Result<Box<dyn WriteHandle>, StorageError> {
        let inner = self.posix.open_write(path, mode, hints)?;
        Ok(Box::new(AuditWriter {
            inner,
            posix: self.posix.clone(),
            path: path.to_path_buf(),
            shown: self.shown(path),
            mode,
            user: self.user.clone(),
            uid: self.uid,
            log: self.log.clone(),
        }))
    }

    fn mkdir(&self, path: &Path) -> Result<(), StorageError> {
        self.posix.mkdir(path)?;
        self.record("mkdir", format!("path={:?}", self.shown(path)))
    }

    fn rmdir(&self, path: &Path) -> Result<(), StorageError> {
        self.posix.rmdir(path)?;
        self.record("rmdir", format!("path={:?}", self.shown(path)))
    }

    fn unlink(&self, path: &Path) -> Result<(), StorageError> {
        self.posix.unlink(path)?;
        self.record("unlink", format!("path={:?}", self.shown(path)))
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<(), StorageError> {
        self.posix.rename(from, to)?;
        self.record(
            "rename",
            format!("path={:?} to={:?}", self.shown(from), self.shown(to)),
        )
    }

    fn set_mtime(&self, path: &Path, mtime: SystemTime) -> Result<(), StorageError> {
        self.posix.set_mtime(path, mtime)
    }

    fn set_mode(&self, path: &Path, mode: u32) -> Result<(), StorageError> {
        self.posix.set_mode(path, mode)
    }
}
// ANCHOR_END: session

// ANCHOR: writer
/// A file being written. The record is made when the upload is complete
/// (`finish`), with the file's size at that moment.
struct AuditWriter {
    inner: Box<dyn WriteHandle>,
    posix: Arc<PosixStorage>,
    path: PathBuf,
    shown: PathBuf,
    mode: WriteMode,
    user: String,
    uid: u32,
    log: Arc<AuditLog>,
}

impl Write for AuditWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl WriteHandle for AuditWriter {
    // Keep the zero-copy fast path: uftpd may splice(2) straight into the
    // file's descriptor instead of calling write(). The size in the record
    // comes from stat, so it is right either way.
    fn raw_fd(&self) -> Option<RawFd> {
        self.inner.raw_fd()
    }

    fn finish(self: Box<Self>) -> Result<(), StorageError> {
        let AuditWriter {
            inner,
            posix,
            path,
            shown,
            mode,
            user,
            uid,
            log,
        } = *self;
        inner.finish()?;
        let size = posix.stat(&path)?.size;
        let mode = match mode {
            WriteMode::Truncate => "truncate".to_string(),
            WriteMode::Append => "append".to_string(),
            WriteMode::At(offset) => format!("at:{offset}"),
        };
        log.record(
            &user,
            uid,
            "write",
            &format!("size={size} mode={mode} path={shown:?}"),
        )
    }
}
// ANCHOR_END: writer

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Read;
    use storage_api::Identity;
    use storage_api::ffi::DynamicStoragePlugin;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("uftpd-audit-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("base")).expect("tmpdir");
        d
    }

    fn identity() -> Identity {
        Identity {
            user: "alice".into(),
            uid: 4242,
            gid: 100,
            groups: vec![100],
            home: "/home/alice".into(),
        }
    }

    // ANCHOR: test
    /// Everything through the C boundary, as uftpd uses the library.
    #[test]
    fn records_writes_and_changes_through_the_c_boundary() {
        let d = tmpdir("ffi");
        let log = d.join("audit.log");
        // SAFETY: the header is a static of this test binary.
        let plugin = unsafe { DynamicStoragePlugin::from_header(uftpd_plugin_header()) }
            .expect("header accepted");
        assert_eq!(plugin.name(), "audit-posix");
        let log_setting = log.display().to_string();
        let backend = plugin
            .construct(&|n| (n == AUDIT_LOG).then(|| log_setting.clone()))
            .expect("backend");
        let id = identity();
        let base = d.join("base");
        let s = backend
            .open_session(&StorageSpec {
                base: &base,
                confined: true,
                identity: &id,
            })
            .expect("session");
        let mut w = s
            .open_write(
                Path::new("data.bin"),
                WriteMode::Truncate,
                &LayoutHints::default(),
            )
            .expect("open");
        w.write_all(&[7u8; 1000]).expect("write");
        w.finish().expect("finish");
        s.mkdir(Path::new("sub")).expect("mkdir");
        s.rename(Path::new("data.bin"), Path::new("sub/data.bin"))
            .expect("rename");
        let mut back = Vec::new();
        s.open_read(Path::new("sub/data.bin"), 990)
            .expect("read")
            .read_to_end(&mut back)
            .expect("read");
        assert_eq!(back, vec![7u8; 10]);
        assert!(s.unlink(Path::new("missing")).is_err());

        let text = fs::read_to_string(&log).expect("log");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let file = base.join("data.bin");
        assert!(
            lines[0].ends_with(&format!(
                "user=\"alice\" uid=4242 event=write size=1000 mode=truncate path={file:?}"
            )),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains("event=mkdir"), "{}", lines[1]);
        assert!(lines[2].contains("event=rename"), "{}", lines[2]);
        assert!(lines[2].ends_with(&format!("to={:?}", base.join("sub/data.bin"))));
        let _ = fs::remove_dir_all(&d);
    }
    // ANCHOR_END: test

    #[test]
    fn settings_are_checked() {
        let e = construct(&|_| None).err().expect("unset");
        assert!(e.starts_with("AUDIT_LOG is not set"), "{e}");
        let e = construct(&|_| Some("relative.log".into()))
            .err()
            .expect("relative");
        assert!(e.contains("must be an absolute path"), "{e}");
        let e = construct(&|_| Some("/nonexistent-dir/x/audit.log".into()))
            .err()
            .expect("no dir");
        assert!(
            e.starts_with("cannot open AUDIT_LOG /nonexistent-dir/x/audit.log"),
            "{e}"
        );
    }

    #[test]
    fn a_name_with_a_newline_cannot_forge_a_record() {
        let d = tmpdir("forge");
        let log = d.join("audit.log");
        let l = log.display().to_string();
        let backend = construct(&|_| Some(l.clone())).expect("backend");
        let id = identity();
        let base = d.join("base");
        let s = backend
            .open_session(&StorageSpec {
                base: &base,
                confined: true,
                identity: &id,
            })
            .expect("session");
        s.mkdir(Path::new(
            "x\nts=0 user=\"root\" uid=0 event=unlink path=\"passwd\"",
        ))
        .expect("mkdir");
        let text = fs::read_to_string(&log).expect("log");
        assert_eq!(text.lines().count(), 1, "{text}");
        let _ = fs::remove_dir_all(&d);
    }
}
