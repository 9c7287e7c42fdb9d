//! The background process of a server-to-server copy (SEND-FILE,
//! RECEIVE-FILE; PROTOCOL.md section 9).
//!
//! A session starts it as `uftpd __rcp` (a fresh exec of its own binary,
//! already running as the session's user) and writes the [`RcpJob`] as
//! JSON to its stdin: nothing of it, the secret least of all, appears on
//! the command line or in the environment. The process opens the user's
//! storage the way the session did, logs in to the other server as a UFTP
//! client ([`uftp_client`]) and copies the file with the session's range,
//! streams, key and compression.
//!
//! A received whole file is written under a temporary name in the target
//! directory and renamed into place only when complete; on failure it is
//! deleted. (A ranged receive writes in place at its offset, as a ranged
//! STOR does.) The outcome goes to stderr, which the session reads, as
//! one line: `OK <bytes>` or `FAILED: <reason>`; the exit code is 0 or 1.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use storage_api::{Identity, LayoutHints, Storage, StorageError, StorageSpec, WriteMode};
use uftp_client::{Client, ClientError, ClientOptions};

use crate::logging::usage_rate;
use crate::session::transfer::RateLimiter;

/// Largest job message accepted on stdin.
const MAX_JOB_BYTES: u64 = 1 << 20;

/// Connect and read timeout towards the other server: a silent network
/// fails the copy after this long.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Everything the copy process is told by its session.
#[derive(Clone, Serialize, Deserialize)]
pub struct RcpJob {
    /// Id within the session (for log lines).
    pub id: u64,
    /// SEND-FILE (true) or RECEIVE-FILE.
    pub send: bool,
    /// The local file, relative to the base directory.
    pub local: PathBuf,
    /// The local file as the client named it (absolute), for log lines.
    pub local_abs: String,
    /// Temporary file (relative to the base) for a whole-file receive.
    pub tmp: Option<PathBuf>,
    /// The file on the other server.
    pub remote: String,
    /// The other server's host.
    pub host: String,
    /// The other server's FTP port.
    pub port: u16,
    /// The one-time secret for the other server.
    pub secret: String,
    /// Range start (RANG/REST).
    pub offset: u64,
    /// Range length (RANG), `None` = to the end of the file.
    pub length: Option<u64>,
    /// Data streams.
    pub streams: u32,
    /// Data-channel key (raw bytes).
    pub key: Option<Vec<u8>>,
    /// `BLOWFISH` or `AES`.
    pub algo: Option<String>,
    /// Compression of the data streams (as the session's request).
    pub compress: crate::request::Compression,
    /// zlib level of what this side compresses with gzip (GZIP_LEVEL).
    pub gzip_level: u32,
    /// zstd level of what this side compresses with zstd (ZSTD_LEVEL).
    pub zstd_level: i32,
    /// Bytes per second, 0 = unlimited.
    pub rate_limit: u64,
    /// Base directory of the session.
    pub base: String,
    /// Whether the storage is confined to the base.
    pub confined: bool,
    /// Who the process runs as.
    pub identity: Identity,
    /// Storage backend name.
    pub storage_backend: String,
    /// Dynamic plugin libraries.
    pub plugins: Vec<PathBuf>,
    /// Config variables from the file, for plugin settings.
    pub file_vars: BTreeMap<String, String>,
    /// LOG_SYSLOG.
    pub log_syslog: bool,
    /// LOG_VERBOSE.
    pub log_verbose: bool,
}

impl fmt::Debug for RcpJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RcpJob")
            .field("id", &self.id)
            .field("send", &self.send)
            .field("local", &self.local_abs)
            .field("remote", &self.remote)
            .field("server", &format_args!("{}:{}", self.host, self.port))
            .field("offset", &self.offset)
            .field("length", &self.length)
            .field("streams", &self.streams)
            .field("encrypted", &self.key.is_some())
            .field("compress", &self.compress)
            .finish_non_exhaustive()
    }
}

impl RcpJob {
    /// `host:port`, with brackets around an IPv6 address.
    pub fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Why a copy failed; the text is the status reason.
#[derive(Debug, thiserror::Error)]
pub enum RcpError {
    /// The job could not be read.
    #[error("bad job: {0}")]
    Job(String),
    /// The local storage.
    #[error("{0}")]
    Storage(#[from] StorageError),
    /// The other server or the network.
    #[error("{0}")]
    Remote(#[from] ClientError),
    /// Fewer bytes than expected.
    #[error("{0}")]
    Incomplete(String),
}

/// Entry point of `uftpd __rcp`.
pub fn run_process() -> ExitCode {
    let mut buf = Vec::new();
    if let Err(e) = io::stdin().take(MAX_JOB_BYTES).read_to_end(&mut buf) {
        report(&format!("FAILED: cannot read the job: {e}"));
        return ExitCode::FAILURE;
    }
    let job: RcpJob = match serde_json::from_slice(&buf) {
        Ok(j) => j,
        Err(e) => {
            report(&format!("FAILED: bad job: {e}"));
            return ExitCode::FAILURE;
        }
    };
    buf.iter_mut().for_each(|b| *b = 0);
    crate::logging::init(
        if job.log_syslog {
            crate::logging::Target::Syslog
        } else {
            crate::logging::Target::Stdout
        },
        job.log_verbose,
    );
    let started = Instant::now();
    let what = if job.send {
        format!(
            "SEND-FILE {} -> {}:{}",
            job.local_abs,
            job.server(),
            job.remote
        )
    } else {
        format!(
            "RECEIVE-FILE {} <- {}:{}",
            job.local_abs,
            job.server(),
            job.remote
        )
    };
    tracing::info!(
        "Server-server copy {} for '{}' started: {what} (pid {})",
        job.id,
        job.identity.user,
        std::process::id()
    );
    match run(&job) {
        Ok(n) => {
            tracing::info!(
                "USAGE [{} 1 file(s)] [{n} bytes] [{}] [{}]",
                if job.send { "Sent" } else { "Received" },
                usage_rate(n, started.elapsed().as_secs_f64()),
                job.identity.user
            );
            tracing::info!("Server-server copy {} FINISHED: {what}", job.id);
            report(&format!("OK {n}"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            let reason = one_line(&e.to_string());
            tracing::warn!("Server-server copy {} FAILED: {what}: {reason}", job.id);
            report(&format!("FAILED: {reason}"));
            ExitCode::FAILURE
        }
    }
}

/// The status line for the session (it may be gone: errors are ignored).
fn report(line: &str) {
    let mut e = io::stderr().lock();
    let _ = writeln!(e, "{line}");
    let _ = e.flush();
}

/// A reason as one reply-safe line.
pub fn one_line(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 400 {
        s.chars().take(400).collect::<String>() + "..."
    } else {
        s
    }
}

fn open_storage(job: &RcpJob) -> Result<Box<dyn Storage>, RcpError> {
    if !job.plugins.is_empty() {
        crate::plugins::load_dynamic(&job.plugins).map_err(|e| RcpError::Job(e.to_string()))?;
    }
    let vars = job.file_vars.clone();
    let lookup = move |n: &str| vars.get(n).cloned();
    let backend = crate::plugins::storage_backend(&job.storage_backend, &lookup)
        .map_err(|e| RcpError::Job(e.to_string()))?;
    let base = PathBuf::from(&job.base);
    Ok(backend.open_session(&StorageSpec {
        base: &base,
        confined: job.confined,
        identity: &job.identity,
    })?)
}

fn run(job: &RcpJob) -> Result<u64, RcpError> {
    let storage = open_storage(job)?;
    let opts = ClientOptions {
        streams: job.streams.max(1) as usize,
        key: job.key.clone(),
        algo: job.algo.clone(),
        compress: job.compress.into(),
        gzip_level: job.gzip_level,
        zstd_level: job.zstd_level,
        timeout: TIMEOUT,
        epsv: false,
    };
    let server = job.server();
    let mut client = Client::connect(&server, &job.secret, opts).map_err(|e| match e {
        ClientError::Server { reply, .. } => {
            RcpError::Incomplete(format!("login to {server} refused: {reply}"))
        }
        other => RcpError::Incomplete(format!("cannot connect to {server}: {}", short(&other))),
    })?;
    let n = if job.send {
        send(job, storage.as_ref(), &mut client)?
    } else {
        receive(job, storage.as_ref(), &mut client)?
    };
    let _ = client.quit();
    Ok(n)
}

fn send(job: &RcpJob, storage: &dyn Storage, client: &mut Client) -> Result<u64, RcpError> {
    let size = storage.stat(&job.local)?.size;
    let start = job.offset.min(size);
    let len = match job.length {
        Some(l) => l.min(size - start),
        None => size - start,
    };
    let ranged = job.offset > 0 || job.length.is_some();
    let file = storage.open_read(&job.local, start)?;
    let mut src = Throttled::new(file.take(len), job.rate_limit);
    let n = client
        .put(&job.remote, &mut src, Some(len), ranged.then_some(start))
        .map_err(|e| {
            if src.failed {
                RcpError::Incomplete(format!("reading {}: {}", job.local_abs, short(&e)))
            } else {
                RcpError::Incomplete(format!("sending to {}: {}", job.server(), short(&e)))
            }
        })?;
    if n != len {
        return Err(RcpError::Incomplete(format!(
            "{}: sent {n} of {len} bytes (file shrank?)",
            job.local_abs
        )));
    }
    Ok(n)
}

fn receive(job: &RcpJob, storage: &dyn Storage, client: &mut Client) -> Result<u64, RcpError> {
    let ranged = job.offset > 0 || job.length.is_some();
    let (dest, mode) = match (&job.tmp, ranged) {
        (Some(tmp), false) => (tmp.clone(), WriteMode::Truncate),
        _ => (job.local.clone(), WriteMode::At(job.offset)),
    };
    let range = if ranged {
        let len = match job.length {
            Some(l) => l,
            None => client.size(&job.remote)?.saturating_sub(job.offset),
        };
        Some((job.offset, len))
    } else {
        None
    };
    let hints = LayoutHints {
        expected_size: range.map(|(_, l)| l),
        streams: job.streams,
    };
    let result = (|| {
        let out = storage.open_write(&dest, mode, &hints)?;
        let mut out = Throttled::new(out, job.rate_limit);
        let n = client.get(&job.remote, range, &mut out).map_err(|e| {
            if out.failed {
                RcpError::Incomplete(format!("writing {}: {}", job.local_abs, short(&e)))
            } else {
                RcpError::Incomplete(format!("receiving from {}: {}", job.server(), short(&e)))
            }
        })?;
        out.inner
            .flush()
            .map_err(|e| StorageError::io(&job.local_abs, e))?;
        out.inner.finish()?;
        if let Some((_, len)) = range
            && n != len
        {
            return Err(RcpError::Incomplete(format!("received {n} of {len} bytes")));
        }
        if mode == WriteMode::Truncate {
            storage.rename(&dest, &job.local)?;
        }
        Ok(n)
    })();
    if result.is_err() && mode == WriteMode::Truncate {
        let _ = storage.unlink(&dest);
    }
    result
}

/// An error text without Rust's ` (os error N)` suffix.
fn short(e: &dyn fmt::Display) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// A local reader or writer held to the session's rate limit; remembers
/// whether it failed (so that a local error is not blamed on the network).
struct Throttled<T> {
    inner: T,
    rate: Option<RateLimiter>,
    failed: bool,
}

impl<T> Throttled<T> {
    fn new(inner: T, rate: u64) -> Self {
        Throttled {
            inner,
            rate: (rate > 0).then(|| RateLimiter::new(rate)),
            failed: false,
        }
    }

    fn limit(&self, n: usize) -> usize {
        match &self.rate {
            Some(r) => n.min(r.chunk()),
            None => n,
        }
    }

    fn account(&mut self, n: usize) {
        if let Some(r) = self.rate.as_mut() {
            r.take(n);
        }
    }
}

impl<T: Read> Read for Throttled<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = self.limit(buf.len());
        let n = self.inner.read(&mut buf[..want]).inspect_err(|e| {
            self.failed |= e.kind() != io::ErrorKind::Interrupted;
        })?;
        self.account(n);
        Ok(n)
    }
}

impl<T: Write> Write for Throttled<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let want = self.limit(buf.len());
        let n = self.inner.write(&buf[..want]).inspect_err(|e| {
            self.failed |= e.kind() != io::ErrorKind::Interrupted;
        })?;
        self.account(n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().inspect_err(|_| self.failed = true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_one_line() {
        assert_eq!(one_line("a\r\nb\tc  d"), "a b c d");
        assert_eq!(one_line(&"x".repeat(500)).len(), 403);
    }

    #[test]
    fn debug_hides_the_secret() {
        let job = RcpJob {
            id: 1,
            send: true,
            local: "f".into(),
            local_abs: "/b/f".into(),
            tmp: None,
            remote: "r".into(),
            host: "::1".into(),
            port: 2000,
            secret: "s3cr3t-value".into(),
            offset: 0,
            length: None,
            streams: 1,
            key: Some(vec![7; 16]),
            algo: Some("BLOWFISH".into()),
            compress: crate::request::Compression::None,
            gzip_level: 1,
            zstd_level: 1,
            rate_limit: 0,
            base: "/b".into(),
            confined: true,
            identity: Identity {
                user: "u".into(),
                uid: 1,
                gid: 1,
                groups: vec![],
                home: "/h".into(),
            },
            storage_backend: "posix".into(),
            plugins: vec![],
            file_vars: BTreeMap::new(),
            log_syslog: false,
            log_verbose: false,
        };
        let d = format!("{job:?}");
        assert!(!d.contains("s3cr3t") && !d.contains("7, 7"), "{d}");
        assert_eq!(job.server(), "[::1]:2000");
    }
}
