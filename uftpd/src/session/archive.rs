//! Archive mode (PROTOCOL.md section 7): after `TYPE ARCHIVE` (or
//! `OPTS ARCHIVE true`), `STOR <dir>` reads a tar stream (ustar, GNU long
//! names, pax headers) from the data channel and unpacks it below `<dir>`,
//! creating directories as needed.
//!
//! The `tar` crate only parses; every file and directory is created
//! through the session's storage, as the session user, so the base
//! directory confinement applies to each of them. Each entry name passes
//! the same checks as a single STOR (base, includes/excludes,
//! UFTP_NOWRITE). What the server does not unpack, and what it changes,
//! is reported in the server log, one warning per entry (the 226 reply is
//! the plain one of a STOR, which clients may compare):
//!
//! * names that are absolute or contain `..`: skipped;
//! * symbolic links: skipped (the storage interface creates none; the
//!   reference servers wrote empty files for them);
//! * hard links: stored as a copy of their target when that is a file
//!   unpacked from the same archive below `<dir>`, else skipped; a hard
//!   link to itself (GNU `tar cf x.tar a a` stores the second `a` so) or
//!   to a file that is the destination itself leaves the file as it is;
//! * device nodes, fifos and other special entries: skipped;
//! * setuid, setgid and sticky bits: removed (files get the archive's
//!   `rwx` bits and modification time; directories keep the defaults).
//!
//! zip and compressed tar streams are refused with a clear message. A
//! stream that ends inside a member's data stops the unpacking: the
//! partial file is removed and the reply names the member; the files
//! unpacked before it stay.

use std::io::{self, Read};
use std::net::TcpStream;
use std::os::fd::{BorrowedFd, RawFd};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use storage_api::{ErrorKind, LayoutHints, StorageError, WriteMode};
use uftp_datachannel::{ChannelOptions, DataReader};

use super::transfer::RateLimiter;
use super::{CmdError, CmdResult, Flow, Session, paths};
use crate::logging::usage_rate;
use crate::request::AccessLevel;

/// What became of an archive.
#[derive(Debug, Default)]
struct Report {
    files: u64,
    dirs: u64,
    bytes: u64,
    /// Entries skipped or changed, with the reason.
    notes: Vec<String>,
}

impl Report {
    fn note(&mut self, name: &str, what: &str) {
        self.notes.push(format!("'{}' {what}", printable(name)));
    }

    /// One line for the log: what was unpacked and what was not.
    fn summary(&self) -> String {
        let mut s = format!("unpacked {} file(s), {} dir(s)", self.files, self.dirs);
        if !self.notes.is_empty() {
            s.push_str(&format!(
                "; {} entries skipped or changed (each logged above)",
                self.notes.len()
            ));
        }
        s
    }
}

/// An entry name for a reply line or the log: control characters escaped
/// (a name must never start a new reply line), at most 200 characters.
fn printable(name: &str) -> String {
    let mut out: String = name.chars().flat_map(char::escape_debug).collect();
    if out.chars().count() > 200 {
        out = out.chars().take(200).collect::<String>() + "...";
    }
    out
}

/// Why an archive could not be unpacked (the transfer ends with an error).
#[derive(Debug, thiserror::Error)]
enum ArchiveError {
    /// The data connection failed.
    #[error("data connection closed, transfer aborted: {0}")]
    Network(io::Error),
    /// The stream is not a tar archive we can read.
    #[error("not a readable tar stream: {0}")]
    Format(String),
    /// Writing failed in a way that stops everything (disk full).
    #[error("{0}")]
    Storage(StorageError),
    /// The stream ended inside the data of a member.
    #[error("archive ended inside '{name}' ({got} of {size} bytes)")]
    Truncated {
        /// The member's name as given in the archive.
        name: String,
        /// Bytes of its data that arrived.
        got: u64,
        /// Its size in the header.
        size: u64,
    },
}

/// The data channel as a reader that remembers whether a read failed (so
/// that a network error is not mistaken for a corrupt archive), counts
/// bytes and keeps the first bytes for format detection.
struct Source<'a> {
    inner: Box<dyn Read + 'a>,
    failed: Option<io::ErrorKind>,
    count: u64,
    head: Vec<u8>,
    rate: Option<RateLimiter>,
}

impl Read for Source<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = match &self.rate {
            Some(r) => buf.len().min(r.chunk()),
            None => buf.len(),
        };
        match self.inner.read(&mut buf[..want]) {
            Ok(n) => {
                if self.head.len() < 8 {
                    let k = (8 - self.head.len()).min(n);
                    self.head.extend_from_slice(&buf[..k]);
                }
                self.count += n as u64;
                if let Some(r) = self.rate.as_mut() {
                    r.take(n);
                }
                Ok(n)
            }
            Err(e) => {
                self.failed = Some(e.kind());
                Err(e)
            }
        }
    }
}

/// A relative entry path without `.` components, or why it is refused.
fn entry_path(name: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err("skipped: '..' in the name"),
            Component::RootDir | Component::Prefix(_) => {
                return Err("skipped: absolute name");
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err("skipped: empty name");
    }
    if out.to_str().is_none() {
        return Err("skipped: name is not valid UTF-8");
    }
    Ok(out)
}

impl Session {
    /// `mkdir -p` through the storage, for a path relative to the base.
    fn make_dirs(&self, rel: &Path) -> Result<(), StorageError> {
        let mut cur = PathBuf::new();
        for c in rel.components() {
            cur.push(c);
            match self.storage.stat(&cur) {
                Ok(st) if st.is_dir() => continue,
                Ok(_) => {
                    return Err(StorageError::new(
                        ErrorKind::NotADirectory,
                        format!("{}: not a directory", cur.display()),
                    ));
                }
                Err(e) if e.kind() == ErrorKind::NotFound => match self.storage.mkdir(&cur) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                },
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// STOR in archive mode: unpack a tar stream below `arg`.
    pub(super) fn stor_archive(&mut self, arg: &str) -> CmdResult {
        self.require(AccessLevel::Write)?;
        if arg.trim().is_empty() {
            return Err(CmdError::new(501, "Argument syntax error: missing path"));
        }
        let target = self.target(arg, true)?;
        // ALLO gives the length of the stream; offsets mean nothing here.
        let limit = self.range.length;
        if let Err(e) = self.make_dirs(&target.rel) {
            self.range = super::Range::default();
            return Err(e.into());
        }
        if let Err(e) = self.data.connections() {
            self.range = super::Range::default();
            return Err(e.into());
        }
        if self.ctl.reply("150 OK").is_err() {
            return Ok(Flow::Quit);
        }
        let direct = self.data.streams == 1 && self.stack.is_plain();
        let inner: Box<dyn Read> = if direct {
            let sock: Option<TcpStream> = self
                .data
                .connections()
                .ok()
                .and_then(|c| c.first().and_then(|s| s.try_clone().ok()));
            match sock {
                Some(s) => match limit {
                    Some(l) => Box::new(s.take(l)),
                    None => Box::new(s),
                },
                None => {
                    self.range = super::Range::default();
                    self.data.close();
                    return Err(CmdError::new(500, "No data connection"));
                }
            }
        } else {
            let conns = self.data.take();
            match DataReader::new(conns, &self.stack, &ChannelOptions::default()) {
                Ok(r) => Box::new(r),
                Err(e) => {
                    self.range = super::Range::default();
                    return Err(CmdError::new(500, format!("Cannot open data channel: {e}")));
                }
            }
        };
        let mut src = Source {
            inner,
            failed: None,
            count: 0,
            head: Vec::new(),
            rate: (self.opts.rate_limit > 0).then(|| RateLimiter::new(self.opts.rate_limit)),
        };
        let started = Instant::now();
        let mut report = Report::default();
        let result = self.unpack(&mut src, &target.abs, &mut report);
        // Whatever follows the end of the archive (tar pads to 10 KiB
        // records) is read, so that the client's data reaches us cleanly.
        let drained = match &result {
            Ok(_) => io::copy(&mut src, &mut io::sink()).map_err(ArchiveError::Network),
            Err(_) => Ok(0),
        };
        let complete = limit.is_none_or(|l| src.count >= l);
        drop(src);
        self.range = super::Range::default();
        if !(direct && limit.is_some() && complete && result.is_ok() && self.opts.keep_alive) {
            self.data.close();
        }
        let result = drained.and(result);
        match result {
            Ok(_) => {
                if let Some(l) = limit
                    && !complete
                {
                    return Err(CmdError::new(
                        500,
                        format!("data connection closed before {l} bytes arrived"),
                    ));
                }
                for n in &report.notes {
                    tracing::warn!("Archive into {}: {n}", target.abs);
                }
                tracing::info!(
                    "USAGE [Received {} file(s)] [{} bytes] [{}] [{}]",
                    report.files,
                    report.bytes,
                    usage_rate(report.bytes, started.elapsed().as_secs_f64()),
                    self.identity.user
                );
                // The reply is exactly what the contract gives for STOR
                // (clients may compare it); the details are in the log.
                tracing::info!("Archive into {}: {}", target.abs, report.summary());
                self.ok_reply("226 File transfer successful")
            }
            Err(e) => {
                for n in &report.notes {
                    tracing::warn!("Archive into {}: {n}", target.abs);
                }
                tracing::info!(
                    "Archive into {} by '{}' failed after {} file(s): {e}",
                    target.abs,
                    self.identity.user,
                    report.files
                );
                let code = match &e {
                    ArchiveError::Storage(s) if s.kind() == ErrorKind::NoSpace => 552,
                    ArchiveError::Network(_)
                    | ArchiveError::Format(_)
                    | ArchiveError::Storage(_)
                    | ArchiveError::Truncated { .. } => 500,
                };
                let msg = match &e {
                    ArchiveError::Truncated { .. } => {
                        format!("{e}; {} file(s) unpacked before", report.files)
                    }
                    _ => format!("{e} (after unpacking {} file(s))", report.files),
                };
                Err(CmdError::new(code, msg))
            }
        }
    }

    /// Reads the archive and creates its entries below `dir` (absolute).
    /// On failure the report holds what was unpacked before.
    fn unpack(
        &self,
        src: &mut Source<'_>,
        dir: &str,
        report: &mut Report,
    ) -> Result<(), ArchiveError> {
        match self.unpack_entries(src, dir, report) {
            Ok(()) => Ok(()),
            Err(Failure::Stop(e)) => Err(e),
            Err(Failure::Read(e)) => Err(classify(e, src.failed, &src.head)),
        }
    }

    fn unpack_entries(
        &self,
        src: &mut Source<'_>,
        dir: &str,
        report: &mut Report,
    ) -> Result<(), Failure> {
        let mut ar = tar::Archive::new(src);
        let entries = ar.entries().map_err(Failure::Read)?;
        // Files unpacked so far (relative to the base): hard link targets.
        let mut unpacked: Vec<PathBuf> = Vec::new();
        for entry in entries {
            let mut entry = entry.map_err(Failure::Read)?;
            let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let kind = entry.header().entry_type();
            if kind.is_pax_global_extensions()
                || kind.is_pax_local_extensions()
                || kind.is_gnu_longname()
                || kind.is_gnu_longlink()
            {
                continue;
            }
            let name = match entry.path() {
                Ok(p) => p.into_owned(),
                Err(_) => {
                    report.note(&raw_name, "skipped: unreadable name");
                    continue;
                }
            };
            let rel_name = match entry_path(&name) {
                Ok(p) => p,
                Err(why) => {
                    report.note(&raw_name, why);
                    continue;
                }
            };
            let abs = paths::normalize(dir, &rel_name.to_string_lossy());
            let resolved = match self.target(&abs, true) {
                Ok(r) => r,
                Err(e) => {
                    report.note(&raw_name, &format!("skipped: {}", e.msg));
                    continue;
                }
            };
            if kind.is_dir() {
                match self.make_dirs(&resolved.rel) {
                    Ok(()) => report.dirs += 1,
                    Err(e) => report.note(&raw_name, &format!("skipped: {e}")),
                }
                continue;
            }
            if kind.is_symlink() {
                report.note(&raw_name, "skipped: symbolic link");
                continue;
            }
            if kind.is_character_special() || kind.is_block_special() {
                report.note(&raw_name, "skipped: device node");
                continue;
            }
            if kind.is_fifo() {
                report.note(&raw_name, "skipped: fifo");
                continue;
            }
            let link_source = if kind.is_hard_link() {
                match self.hard_link_source(&entry, dir, &unpacked) {
                    Ok(p) => Some(p),
                    Err(why) => {
                        report.note(&raw_name, why);
                        continue;
                    }
                }
            } else if kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse() {
                None
            } else {
                report.note(&raw_name, "skipped: unsupported entry type");
                continue;
            };
            if let Some(parent) = resolved.rel.parent()
                && let Err(e) = self.make_dirs(parent)
            {
                report.note(&raw_name, &format!("skipped: {e}"));
                continue;
            }
            let mode = entry.header().mode().unwrap_or(0o644);
            let mtime = entry.header().mtime().ok();
            let size = entry.size();
            let written = match &link_source {
                None => self.write_entry(&resolved.rel, &mut entry, Some(size)),
                Some(from) if *from == resolved.rel => Err(EntryError::Skip(
                    "hard link to itself, file left as it is".into(),
                )),
                Some(from) => match self.storage.open_read(from, 0) {
                    Ok(r) if self.is_same_file(&*r, &resolved.rel) => Err(EntryError::Skip(
                        "hard link to the file it replaces, file left as it is".into(),
                    )),
                    Ok(mut r) => self.write_entry(&resolved.rel, &mut r, None),
                    Err(e) => Err(EntryError::Skip(e.to_string())),
                },
            };
            match written {
                Ok(n) => {
                    report.files += 1;
                    report.bytes += n;
                    unpacked.push(resolved.rel.clone());
                }
                Err(EntryError::Skip(why)) => {
                    report.note(&raw_name, &format!("skipped: {why}"));
                    continue;
                }
                Err(EntryError::Short(got)) => {
                    return Err(Failure::Stop(ArchiveError::Truncated {
                        name: printable(&raw_name),
                        got,
                        size,
                    }));
                }
                Err(EntryError::Stop(e)) => return Err(e),
            }
            if mode & 0o7000 != 0 {
                report.note(&raw_name, "setuid/setgid/sticky bits removed");
            }
            let _ = self.storage.set_mode(&resolved.rel, mode & 0o777);
            if let Some(t) = mtime {
                let _ = self.storage.set_mtime(
                    &resolved.rel,
                    SystemTime::UNIX_EPOCH + Duration::from_secs(t),
                );
            }
        }
        Ok(())
    }

    /// The file a hard link entry points to: a file unpacked from this
    /// archive below `dir`.
    fn hard_link_source<R: Read>(
        &self,
        entry: &tar::Entry<'_, R>,
        dir: &str,
        unpacked: &[PathBuf],
    ) -> Result<PathBuf, &'static str> {
        let target = match entry.link_name() {
            Ok(Some(t)) => t.into_owned(),
            _ => return Err("skipped: hard link without a target"),
        };
        let rel =
            entry_path(&target).map_err(|_| "skipped: hard link to a file outside the archive")?;
        let abs = paths::normalize(dir, &rel.to_string_lossy());
        let resolved = self
            .target(&abs, false)
            .map_err(|_| "skipped: hard link to a file outside the archive")?;
        if !unpacked.contains(&resolved.rel) {
            return Err("skipped: hard link to a file outside the archive");
        }
        Ok(resolved.rel)
    }

    /// Whether the file open in `source` is the file at `dest` (the same
    /// device and inode), which truncating `dest` would destroy. Opens
    /// `dest` without truncating it; false when that or a check fails, or
    /// when the backend has no descriptors (then only equal paths are
    /// caught, by the caller).
    fn is_same_file(&self, source: &dyn storage_api::ReadHandle, dest: &Path) -> bool {
        let Some(src_fd) = source.raw_fd() else {
            return false;
        };
        let hints = LayoutHints {
            expected_size: None,
            streams: 1,
        };
        let Ok(w) = self.storage.open_write(dest, WriteMode::At(0), &hints) else {
            return false;
        };
        match (file_id(src_fd), w.raw_fd().and_then(file_id)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }

    /// Creates (truncates) `rel` and copies `data` into it. With
    /// `expected` (a member's size), data that ends early removes the
    /// file again and gives [`EntryError::Short`].
    fn write_entry(
        &self,
        rel: &Path,
        data: &mut dyn Read,
        expected: Option<u64>,
    ) -> Result<u64, EntryError> {
        let hints = LayoutHints {
            expected_size: Some(expected.unwrap_or(0)),
            streams: 1,
        };
        let mut w = match self.storage.open_write(rel, WriteMode::Truncate, &hints) {
            Ok(w) => w,
            Err(e) if e.kind() == ErrorKind::NoSpace => {
                return Err(EntryError::Stop(Failure::Stop(ArchiveError::Storage(e))));
            }
            Err(e) => return Err(EntryError::Skip(e.to_string())),
        };
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(EntryError::Stop(Failure::Read(e))),
            };
            if let Err(e) = io::Write::write_all(&mut w, &buf[..n]) {
                let e = StorageError::io(rel.display(), e);
                drop(w);
                let _ = self.storage.unlink(rel);
                return Err(EntryError::Stop(Failure::Stop(ArchiveError::Storage(e))));
            }
            total += n as u64;
        }
        if let Some(size) = expected
            && total < size
        {
            drop(w);
            let _ = self.storage.unlink(rel);
            return Err(EntryError::Short(total));
        }
        if let Err(e) = w.finish() {
            let _ = self.storage.unlink(rel);
            return Err(EntryError::Stop(Failure::Stop(ArchiveError::Storage(e))));
        }
        Ok(total)
    }
}

/// An entry that could not be written.
enum EntryError {
    /// Skip this entry, go on with the next.
    Skip(String),
    /// The archive ended after this many bytes of the entry's data; the
    /// partial file was removed.
    Short(u64),
    /// Stop unpacking.
    Stop(Failure),
}

/// Why unpacking stopped.
enum Failure {
    /// Reading the stream failed (network, or not a tar stream).
    Read(io::Error),
    /// Anything else.
    Stop(ArchiveError),
}

/// Device and inode of an open descriptor.
fn file_id(fd: RawFd) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: `fd` belongs to a storage handle that the caller keeps open
    // (borrowed) for the whole call; it is only duplicated here.
    let owned = unsafe { BorrowedFd::borrow_raw(fd) }
        .try_clone_to_owned()
        .ok()?;
    let md = std::fs::File::from(owned).metadata().ok()?;
    Some((md.dev(), md.ino()))
}

/// A read error: the data connection's, or a stream we cannot read.
fn classify(e: io::Error, failed: Option<io::ErrorKind>, head: &[u8]) -> ArchiveError {
    if let Some(kind) = failed {
        return ArchiveError::Network(io::Error::new(kind, e.to_string()));
    }
    if head.starts_with(b"PK\x03\x04") {
        return ArchiveError::Format("zip archives are not supported, send a tar stream".into());
    }
    if head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(b"BZh")
        || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z'])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
    {
        return ArchiveError::Format(
            "compressed archives are not supported, send an uncompressed tar stream".into(),
        );
    }
    ArchiveError::Format(e.to_string())
}
