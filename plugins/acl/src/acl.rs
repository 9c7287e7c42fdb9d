//! The ACL file: which certificate subjects may use the command port.
//!
//! One RFC 2253 DN per line, `#` starts a comment line, blank lines are
//! ignored. A line that cannot be parsed is reported with its number and
//! skipped; the other entries stay in force. The file is checked for
//! changes (modification time, size, inode) at most once per interval
//! (10 s by default) when a peer connects, and re-read when it changed; a
//! file that disappears or cannot be read lets nobody in until it is
//! readable again (fail closed).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::dn::{Dn, DnError};

/// Default interval between checks of the ACL file.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// One usable ACL entry.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Line number (1-based).
    pub line: usize,
    /// The line as written (trimmed).
    pub text: String,
    /// The parsed DN.
    pub dn: Dn,
}

/// A line that could not be used.
#[derive(Debug, Clone)]
pub struct LineError {
    /// Line number (1-based).
    pub line: usize,
    /// The line as written (trimmed).
    pub text: String,
    /// Why.
    pub reason: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}: cannot parse '{}': {} (line skipped)",
            self.line, self.text, self.reason
        )
    }
}

/// The parsed ACL.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    /// Usable entries, in file order.
    pub entries: Vec<Entry>,
    /// Lines that were skipped.
    pub errors: Vec<LineError>,
    /// Why the file could not be read, if it could not (nobody matches).
    pub unreadable: Option<String>,
}

/// Longest line considered; longer ones are reported and skipped.
const MAX_LINE: usize = 8192;

impl Acl {
    /// Parses the contents of an ACL file.
    pub fn parse(bytes: &[u8]) -> Acl {
        let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
        let mut acl = Acl::default();
        for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
            let line = i + 1;
            let Ok(text) = std::str::from_utf8(raw) else {
                acl.errors.push(LineError {
                    line,
                    text: String::from_utf8_lossy(raw).trim().to_string(),
                    reason: "not valid UTF-8".into(),
                });
                continue;
            };
            let text = text.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            if text.len() > MAX_LINE {
                acl.errors.push(LineError {
                    line,
                    text: format!("{}...", text.chars().take(40).collect::<String>()),
                    reason: format!("longer than {MAX_LINE} bytes"),
                });
                continue;
            }
            match Dn::parse(text) {
                Ok(dn) => acl.entries.push(Entry {
                    line,
                    text: text.to_string(),
                    dn,
                }),
                Err(e) => acl.errors.push(LineError {
                    line,
                    text: text.to_string(),
                    reason: e.to_string(),
                }),
            }
        }
        acl
    }

    /// Reads and parses an ACL file.
    pub fn load(path: &Path) -> std::io::Result<Acl> {
        Ok(Acl::parse(&std::fs::read(path)?))
    }

    /// The first entry matching `subject`.
    pub fn find(&self, subject: &Dn) -> Option<&Entry> {
        self.entries.iter().find(|e| e.dn.matches(subject))
    }
}

/// Parses one DN (for tools and tests).
pub fn parse_dn(s: &str) -> Result<Dn, DnError> {
    Dn::parse(s)
}

/// What identifies a version of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    dev: u64,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
        dev: m.dev(),
    })
}

#[derive(Debug)]
struct State {
    acl: Arc<Acl>,
    stamp: Option<Stamp>,
    last_check: Instant,
}

/// The ACL file, re-read when it changes.
#[derive(Debug)]
pub struct AclWatcher {
    path: PathBuf,
    interval: Duration,
    state: Mutex<State>,
    /// A reload runs (at most one at a time, even if the file system hangs).
    busy: AtomicBool,
}

/// How long a connecting peer waits for a reload before the current ACL
/// is used (a hung file system must not stall the command port).
const RELOAD_WAIT: Duration = Duration::from_secs(5);

impl AclWatcher {
    /// Reads the file now. A missing or unreadable file is an error here
    /// (at startup); later it makes the ACL deny everybody.
    pub fn open(path: &Path, interval: Duration) -> std::io::Result<AclWatcher> {
        let st = stamp(path)?;
        let acl = Acl::load(path)?;
        Ok(AclWatcher {
            path: path.to_path_buf(),
            interval,
            state: Mutex::new(State {
                acl: Arc::new(acl),
                stamp: Some(st),
                last_check: Instant::now(),
            }),
            busy: AtomicBool::new(false),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The interval between checks.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The ACL as last loaded, without checking the file.
    pub fn snapshot(&self) -> Arc<Acl> {
        self.lock().acl.clone()
    }

    /// The current ACL: checks the file first if the interval has passed
    /// (on a blocking thread, waiting at most a few seconds).
    pub async fn current(self: &Arc<Self>) -> Arc<Acl> {
        let due = self.lock().last_check.elapsed() >= self.interval;
        if due
            && self
                .busy
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            let me = self.clone();
            let task = tokio::task::spawn_blocking(move || {
                struct Done<'a>(&'a AtomicBool);
                impl Drop for Done<'_> {
                    fn drop(&mut self) {
                        self.0.store(false, Ordering::Release);
                    }
                }
                let _done = Done(&me.busy);
                me.refresh();
            });
            if tokio::time::timeout(RELOAD_WAIT, task).await.is_err() {
                tracing::warn!(
                    "ACL file {}: still reading after {RELOAD_WAIT:?}, using the entries loaded before",
                    self.path.display()
                );
            }
        }
        self.snapshot()
    }

    /// Checks the file and re-reads it if it changed (blocking). Returns
    /// true when the ACL was replaced.
    pub fn refresh(&self) -> bool {
        let old = {
            let mut s = self.lock();
            s.last_check = Instant::now();
            s.stamp.clone()
        };
        let path = self.path.display();
        let new_stamp = match stamp(&self.path) {
            Ok(st) => st,
            Err(e) => {
                let mut s = self.lock();
                if s.stamp.is_some() || s.acl.unreadable.is_none() {
                    tracing::error!(
                        "ACL file {path} cannot be read ({e}): refusing all command-port peers until it is readable again"
                    );
                    s.acl = Arc::new(Acl {
                        unreadable: Some(e.to_string()),
                        ..Acl::default()
                    });
                    s.stamp = None;
                    return true;
                }
                return false;
            }
        };
        if old.as_ref() == Some(&new_stamp) {
            return false;
        }
        let acl = match Acl::load(&self.path) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(
                    "ACL file {path} cannot be read ({e}): refusing all command-port peers until it is readable again"
                );
                let mut s = self.lock();
                s.acl = Arc::new(Acl {
                    unreadable: Some(e.to_string()),
                    ..Acl::default()
                });
                s.stamp = None;
                return true;
            }
        };
        tracing::info!(
            "ACL file {path} modified: reloaded, {} entries",
            acl.entries.len()
        );
        for e in &acl.entries {
            tracing::info!("ACL: allowing access for <{}>", e.text);
        }
        for e in &acl.errors {
            tracing::error!("ACL file {path} {e}");
        }
        if acl.entries.is_empty() {
            tracing::warn!(
                "ACL file {path} has no usable entry: every command-port peer is refused"
            );
        }
        let mut s = self.lock();
        s.acl = Arc::new(acl);
        s.stamp = Some(new_stamp);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_syntax() {
        let text = "\u{feff}# comment\n\n  CN=Auth,O=UNICORE,C=EU  \r\n\
                    CN=UNICORE/X\nnot a dn\n   # indented comment\nO=x,XY=1\n\
                    CN=x\\q\n";
        let acl = Acl::parse(text.as_bytes());
        let lines: Vec<usize> = acl.entries.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 4]);
        assert_eq!(acl.entries[0].text, "CN=Auth,O=UNICORE,C=EU");
        let bad: Vec<usize> = acl.errors.iter().map(|e| e.line).collect();
        assert_eq!(bad, vec![5, 7, 8]);
        assert!(
            acl.errors[0]
                .to_string()
                .starts_with("line 5: cannot parse 'not a dn'")
        );
        assert!(acl.errors[1].reason.contains("unknown attribute type 'XY'"));
    }

    #[test]
    fn bad_bytes_and_huge_lines_are_skipped() {
        let mut text = b"CN=a\n\xff\xfe\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', 100_000));
        text.extend(b"\nCN=b\n");
        let acl = Acl::parse(&text);
        assert_eq!(acl.entries.len(), 2);
        assert_eq!(acl.errors.len(), 2);
        assert_eq!(acl.errors[0].line, 2);
        assert!(acl.errors[1].reason.contains("longer than"));
    }

    #[test]
    fn find() {
        let acl = Acl::parse(b"CN=a,O=x\nO=y\n");
        let subject = |s: &str| Dn::parse(s).unwrap_or_default();
        assert_eq!(acl.find(&subject("CN=a,O=x,C=EU")).map(|e| e.line), Some(1));
        assert_eq!(acl.find(&subject("CN=z,O=Y")).map(|e| e.line), Some(2));
        assert!(acl.find(&subject("CN=a,O=z")).is_none());
    }

    fn tmp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("uftpd-acl-unit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join("uftpd.acl")
    }

    #[test]
    fn reload_on_change_and_fail_closed() {
        let path = tmp("reload");
        std::fs::write(&path, "CN=a\n").expect("write");
        let w = AclWatcher::open(&path, Duration::ZERO).expect("open");
        assert_eq!(w.snapshot().entries.len(), 1);
        assert!(!w.refresh(), "unchanged file is not re-read");
        std::fs::write(&path, "CN=a\nCN=b\n").expect("write");
        assert!(w.refresh());
        assert_eq!(w.snapshot().entries.len(), 2);
        std::fs::remove_file(&path).expect("rm");
        assert!(w.refresh());
        assert!(w.snapshot().unreadable.is_some());
        assert!(w.snapshot().entries.is_empty());
        assert!(!w.refresh(), "still missing: no new state");
        std::fs::write(&path, "CN=c\n").expect("write");
        assert!(w.refresh());
        assert_eq!(w.snapshot().entries[0].text, "CN=c");
        assert!(AclWatcher::open(&path.with_extension("missing"), Duration::ZERO).is_err());
    }

    #[tokio::test]
    async fn interval_is_respected() {
        let path = tmp("interval");
        std::fs::write(&path, "CN=a\n").expect("write");
        let w = Arc::new(AclWatcher::open(&path, Duration::from_secs(3600)).expect("open"));
        std::fs::write(&path, "CN=a\nCN=b\n").expect("write");
        assert_eq!(
            w.current().await.entries.len(),
            1,
            "not checked before the interval"
        );
        let w = Arc::new(AclWatcher::open(&path, Duration::ZERO).expect("open"));
        std::fs::write(&path, "CN=x\n").expect("write");
        assert_eq!(w.current().await.entries[0].text, "CN=x");
    }
}
