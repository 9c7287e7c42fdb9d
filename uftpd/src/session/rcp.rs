//! Server-to-server copy (PROTOCOL.md section 9): SEND-FILE, RECEIVE-FILE,
//! RCP-STATUS and RCP-ABORT.
//!
//! `SEND-FILE '<local>' '<remote>' '<host:port>' '<secret>'` (and
//! RECEIVE-FILE) starts a background process, `uftpd __rcp` (see
//! [`crate::rcp_process`]), running as the session's user, that logs in to
//! the other server with the secret and copies the file, carrying over the
//! session's range (RANG/REST), number of streams, key and compression.
//! The reply is `299 OK transfer-process-ID=<id>`, where ids count per
//! session: only the session that started a copy can ask about it or
//! abort it. The copy outlives the session (clients typically quit right
//! after the 299).
//!
//! RCP-STATUS / RCP-ABORT answer `299 RUNNING`, `299 FINISHED`,
//! `299 ABORTED`, `299 FAILED: <reason>` or `299 UNKNOWN`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Stdio};

use storage_api::{ErrorKind, Storage};

use super::{CmdError, CmdResult, Session};
use crate::rcp_process::{RcpJob, one_line};
use crate::request::AccessLevel;

/// How a copy ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Finished,
    Aborted,
    Failed(String),
}

/// One copy started by this session.
#[derive(Debug)]
struct Copy {
    child: Child,
    status: Option<ChildStderr>,
    /// Temporary file of a whole-file receive (relative to the base).
    tmp: Option<PathBuf>,
    outcome: Option<Outcome>,
}

/// The copies of a session.
#[derive(Debug, Default)]
pub struct Copies {
    next: u64,
    copies: BTreeMap<u64, Copy>,
}

impl Copy {
    /// The outcome if the process has ended (it is reaped then).
    fn poll(&mut self, storage: &dyn Storage) -> Option<Outcome> {
        if let Some(o) = &self.outcome {
            return Some(o.clone());
        }
        let status = match self.child.try_wait() {
            Ok(Some(s)) => s,
            Ok(None) => return None,
            Err(e) => {
                let o = Outcome::Failed(format!("cannot query the copy process: {e}"));
                self.outcome = Some(o.clone());
                return Some(o);
            }
        };
        let mut text = String::new();
        if let Some(mut err) = self.status.take() {
            let _ = (&mut err).take(64 * 1024).read_to_string(&mut text);
        }
        let line = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let o = if status.success() && line.starts_with("OK") {
            Outcome::Finished
        } else if let Some(r) = line.strip_prefix("FAILED: ") {
            Outcome::Failed(r.to_string())
        } else {
            // Killed, or died without a word: its temporary file is ours
            // to remove.
            if let Some(tmp) = &self.tmp {
                let _ = storage.unlink(tmp);
            }
            Outcome::Failed(match status.signal() {
                Some(sig) => format!("copy process killed by signal {sig}"),
                None => format!(
                    "copy process ended with code {}{}",
                    status.code().unwrap_or(-1),
                    if line.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", one_line(line))
                    }
                ),
            })
        };
        self.outcome = Some(o.clone());
        Some(o)
    }
}

fn status_reply(o: Option<Outcome>) -> String {
    match o {
        None => "299 RUNNING".into(),
        Some(Outcome::Finished) => "299 FINISHED".into(),
        Some(Outcome::Aborted) => "299 ABORTED".into(),
        Some(Outcome::Failed(r)) => format!("299 FAILED: {}", one_line(&r)),
    }
}

/// Splits `host:port` at the last `:` (`[v6]:port` too).
fn host_port(spec: &str) -> Option<(String, u16)> {
    let (host, port) = spec.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port))
}

impl Session {
    pub(super) fn send_file(&mut self, arg: &str) -> CmdResult {
        self.start_copy("SEND-FILE", arg, true)
    }

    pub(super) fn receive_file(&mut self, arg: &str) -> CmdResult {
        self.start_copy("RECEIVE-FILE", arg, false)
    }

    fn start_copy(&mut self, verb: &str, arg: &str, send: bool) -> CmdResult {
        self.require(if send {
            AccessLevel::Read
        } else {
            AccessLevel::Write
        })?;
        let usage = || {
            CmdError::new(
                501,
                format!(
                    "Argument syntax error: {verb} '<local>' '<remote>' '<host:port>' '<secret>'"
                ),
            )
        };
        let words = shlex::split(arg).ok_or_else(usage)?;
        let [local, remote, server, secret] =
            <[String; 4]>::try_from(words).map_err(|_| usage())?;
        let (host, port) = host_port(&server).ok_or_else(|| {
            CmdError::new(
                501,
                format!("Argument syntax error: '{server}' is not host:port"),
            )
        })?;
        let r = self.target(&local, !send)?;
        let mut tmp = None;
        if send {
            let st = self.storage.stat(&r.rel)?;
            if st.is_dir() {
                return Err(CmdError::new(550, format!("{}: is a directory", r.abs)));
            }
            drop(self.storage.open_read(&r.rel, 0)?);
        } else {
            match self.storage.stat(&r.rel) {
                Ok(st) if st.is_dir() => {
                    return Err(CmdError::new(550, format!("{}: is a directory", r.abs)));
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            let parent = r.rel.parent().map(PathBuf::from).unwrap_or_default();
            if !self.storage.stat(&parent)?.is_dir() {
                return Err(CmdError::new(
                    550,
                    format!("{}: no such directory", parent.display()),
                ));
            }
        }
        let range = std::mem::take(&mut self.range);
        let length = range.have_range.then_some(range.length).flatten();
        if !send && range.offset == 0 && length.is_none() {
            tmp = Some(super::cmd_sync::temp_name(&r.rel, "rcp"));
        }
        self.rcp.next += 1;
        let id = self.rcp.next;
        let job = RcpJob {
            id,
            send,
            local: r.rel.clone(),
            local_abs: r.abs.clone(),
            tmp: tmp.clone(),
            remote,
            host,
            port,
            secret,
            offset: range.offset,
            length,
            streams: self.data.streams as u32,
            key: self.request.key.as_ref().map(|k| k.bytes.clone()),
            algo: self.request.key.as_ref().map(|k| k.algo.to_string()),
            compress: self.request.compress,
            gzip_level: self.settings.gzip_level,
            zstd_level: self.settings.zstd_level,
            rate_limit: self.opts.rate_limit,
            base: self.base.clone(),
            confined: self.base != "/",
            identity: self.identity.clone(),
            storage_backend: self.settings.storage_backend.clone(),
            plugins: self.settings.plugins.clone(),
            file_vars: self.settings.file_vars.clone(),
            log_syslog: self.settings.log_syslog,
            log_verbose: self.settings.log_verbose,
        };
        let child = spawn(&job)
            .map_err(|e| CmdError::new(500, format!("cannot start the copy process: {e}")))?;
        tracing::info!(
            "{verb} by '{}': copy {id} started (pid {}): {job:?}",
            self.identity.user,
            child.0.id()
        );
        self.reap();
        self.rcp.copies.insert(
            id,
            Copy {
                child: child.0,
                status: child.1,
                tmp,
                outcome: None,
            },
        );
        self.ok_reply(&format!("299 OK transfer-process-ID={id}"))
    }

    /// Collects copies that have ended (no zombies while the session runs).
    fn reap(&mut self) {
        let storage = self.storage.as_ref();
        for c in self.rcp.copies.values_mut() {
            c.poll(storage);
        }
    }

    fn copy_id(arg: &str) -> Option<u64> {
        arg.trim().parse().ok()
    }

    pub(super) fn rcp_status(&mut self, arg: &str) -> CmdResult {
        self.require(AccessLevel::Info)?;
        let storage = self.storage.as_ref();
        let line = match Self::copy_id(arg).and_then(|id| self.rcp.copies.get_mut(&id)) {
            Some(c) => status_reply(c.poll(storage)),
            None => "299 UNKNOWN".into(),
        };
        self.ok_reply(&line)
    }

    pub(super) fn rcp_abort(&mut self, arg: &str) -> CmdResult {
        self.require(AccessLevel::Info)?;
        let storage = self.storage.as_ref();
        let id = Self::copy_id(arg);
        let line = match id.and_then(|id| self.rcp.copies.get_mut(&id)) {
            None => "299 UNKNOWN".into(),
            Some(c) => match c.poll(storage) {
                Some(o) => status_reply(Some(o)),
                None => {
                    let _ = c.child.kill();
                    let _ = c.child.wait();
                    if let Some(tmp) = &c.tmp {
                        let _ = storage.unlink(tmp);
                    }
                    c.outcome = Some(Outcome::Aborted);
                    tracing::info!(
                        "Server-server copy {} ABORTED by '{}'",
                        id.unwrap_or(0),
                        self.identity.user
                    );
                    status_reply(Some(Outcome::Aborted))
                }
            },
        };
        self.ok_reply(&line)
    }
}

/// Starts `uftpd __rcp` and hands it the job on stdin.
fn spawn(job: &RcpJob) -> std::io::Result<(Child, Option<ChildStderr>)> {
    let json = serde_json::to_vec(job).map_err(std::io::Error::other)?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("uftpd")
        .arg("__rcp")
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        // Its own process group: it outlives the session and signals
        // meant for the session do not reach it.
        .process_group(0);
    for var in ["PATH", "TZ", "LANG", "LC_ALL", "LC_TIME"] {
        if let Ok(v) = std::env::var(var) {
            cmd.env(var, v);
        }
    }
    let mut child = cmd.spawn()?;
    let written = match child.stdin.take() {
        Some(mut stdin) => stdin.write_all(&json),
        None => Err(std::io::Error::other("no stdin pipe")),
    };
    if let Err(e) = written {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    let status = child.stderr.take();
    Ok((child, status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port() {
        assert_eq!(
            host_port("example.org:64434"),
            Some(("example.org".into(), 64434))
        );
        assert_eq!(host_port("[::1]:2000"), Some(("::1".into(), 2000)));
        assert_eq!(
            host_port("::1:2000"),
            Some(("::1".into(), 2000)),
            "split at the last ':'"
        );
        assert_eq!(host_port("host"), None);
        assert_eq!(host_port("host:0"), None);
        assert_eq!(host_port(":5"), None);
        assert_eq!(host_port("host:99999"), None);
    }

    #[test]
    fn replies() {
        assert_eq!(status_reply(None), "299 RUNNING");
        assert_eq!(
            status_reply(Some(Outcome::Failed("a\nb".into()))),
            "299 FAILED: a b"
        );
    }

    #[test]
    fn quoting_like_the_clients() {
        let w = shlex::split("'/a b/f' 'r' 'h:1' 'se cret'").unwrap_or_default();
        assert_eq!(w, ["/a b/f", "r", "h:1", "se cret"]);
        assert!(shlex::split("'unterminated").is_none());
    }
}
