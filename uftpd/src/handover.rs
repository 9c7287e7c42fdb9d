//! Handing a logged-in FTP control connection to a fresh session process.
//!
//! The daemon execs its own binary with the hidden `__session` subcommand.
//! The control socket becomes the child's file descriptor 3; the job (user,
//! groups, base directory, options and key) is written as JSON to the
//! child's stdin pipe, which only the two processes can read. Nothing
//! secret goes on the command line or into the environment.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use storage_api::Identity;
use tokio::io::AsyncWriteExt;

use crate::config::{Config, PortRange};
use crate::request::TransferRequest;

/// The descriptor number of the control socket in the session process.
pub const CONTROL_FD: RawFd = 3;

/// Largest job message accepted on stdin.
const MAX_JOB_BYTES: u64 = 1 << 20;

/// Server settings a session needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionSettings {
    /// MAX_STREAMS.
    pub max_streams: u32,
    /// PORT_RANGE.
    pub port_range: Option<PortRange>,
    /// ADVERTISE_HOST, resolved.
    pub advertise_host: Option<std::net::Ipv4Addr>,
    /// UFTP_USE_SENDFILE.
    pub use_sendfile: bool,
    /// UFTP_NOWRITE patterns (relative to $HOME).
    pub nowrite: Vec<String>,
    /// LOG_VERBOSE.
    pub log_verbose: bool,
    /// LOG_SYSLOG.
    pub log_syslog: bool,
    /// OPEN_USER_SESSIONS.
    pub open_user_sessions: bool,
    /// PAM_MODULE.
    pub pam_module: String,
    /// Whether to switch to the job's identity (daemon runs as root).
    pub switch_user: bool,
    /// gzip level for compressed data channels.
    pub gzip_level: u32,
    /// zstd level for zstd-compressed data channels (ZSTD_LEVEL).
    #[serde(default = "default_zstd_level")]
    pub zstd_level: i32,
    /// Threads per compressed stream, gzip and zstd (COMPRESS_THREADS; `None`: the codec's default).
    #[serde(default)]
    pub compress_threads: Option<u32>,
    /// gzip engine (GZIP_ENGINE: auto, zlib, isal).
    #[serde(default = "auto_engine")]
    pub gzip_engine: String,
    /// ChaCha20-Poly1305 engine (CHACHA20_ENGINE: auto, ring, libcrypto).
    #[serde(default = "auto_engine")]
    pub chacha_engine: String,
    /// Storage backend plugin name.
    pub storage_backend: String,
    /// Dynamic plugin libraries (PLUGINS), loaded by the session process
    /// before it takes on the user's identity.
    #[serde(default)]
    pub plugins: Vec<std::path::PathBuf>,
    /// Config variables from the file, for plugin settings.
    pub file_vars: std::collections::BTreeMap<String, String>,
}

fn default_zstd_level() -> i32 {
    crate::config::DEFAULT_ZSTD_LEVEL
}

fn auto_engine() -> String {
    "auto".to_string()
}

impl SessionSettings {
    /// Extracts the session settings from the daemon configuration.
    pub fn from_config(c: &Config, switch_user: bool) -> Self {
        SessionSettings {
            max_streams: c.max_streams,
            port_range: c.port_range,
            advertise_host: c.advertise_host,
            use_sendfile: c.use_sendfile,
            nowrite: c.nowrite.clone(),
            log_verbose: c.log_verbose,
            log_syslog: c.log_syslog,
            open_user_sessions: c.open_user_sessions,
            pam_module: c.pam_module.clone(),
            switch_user,
            gzip_level: c.gzip_level,
            zstd_level: c.zstd_level,
            compress_threads: c.compress_threads,
            gzip_engine: c.gzip_engine.to_string(),
            chacha_engine: c.chacha_engine.to_string(),
            storage_backend: c.storage_backend.clone(),
            plugins: c.plugins.clone(),
            file_vars: c.effective_file_vars(),
        }
    }
}

/// Everything a session process is told by the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionJob {
    /// The transfer request.
    pub request: TransferRequest,
    /// Who to run as.
    pub identity: Identity,
    /// Server settings.
    pub settings: SessionSettings,
    /// Bytes the daemon read from the client after the login line.
    pub pending_input: Vec<u8>,
}

/// Starts a session process for `control`. Returns the child; the caller
/// drops its copy of the control socket afterwards.
pub async fn spawn_session(
    exe: &Path,
    control: &std::net::TcpStream,
    job: &SessionJob,
) -> io::Result<tokio::process::Child> {
    let json = serde_json::to_vec(job).map_err(io::Error::other)?;
    let fd = control.as_raw_fd();
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg0("uftpd")
        .arg("__session")
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(false);
    for var in ["PATH", "TZ", "LANG", "LC_ALL", "LC_TIME"] {
        if let Ok(v) = std::env::var(var) {
            cmd.env(var, v);
        }
    }
    // SAFETY: the closure runs in the forked child before exec and only
    // calls setsid/dup2/fcntl, which are async-signal-safe; it touches no
    // memory shared with other threads and does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            // Own session: a Ctrl-C on the daemon's terminal does not reach
            // the users' sessions.
            libc::setsid();
            if fd == CONTROL_FD {
                // dup2 onto itself keeps FD_CLOEXEC: clear it explicitly.
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(fd, CONTROL_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // The child reads the whole message before doing anything else; a
        // failure here means it died early, which the caller sees on wait.
        let _ = stdin.write_all(&json).await;
        let _ = stdin.shutdown().await;
    }
    Ok(child)
}

/// In the session process: takes the control socket from fd 3 and reads
/// the job from stdin.
pub fn receive_session() -> io::Result<(std::net::TcpStream, SessionJob)> {
    // SAFETY: the daemon placed the control socket at CONTROL_FD for this
    // process (see spawn_session) and nothing else in this process owns or
    // closes that descriptor; fstat below checks it really is a socket.
    let owned = unsafe { OwnedFd::from_raw_fd(CONTROL_FD) };
    let st = nix::sys::stat::fstat(&owned).map_err(io::Error::from)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "file descriptor 3 is not a socket: __session is started by the uftpd daemon only",
        ));
    }
    // Re-apply close-on-exec so the descriptor does not leak into anything
    // the session might start.
    nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(io::Error::from)?;
    let mut buf = Vec::new();
    io::stdin().take(MAX_JOB_BYTES).read_to_end(&mut buf)?;
    let job: SessionJob = serde_json::from_slice(&buf).map_err(io::Error::other)?;
    let stream = std::net::TcpStream::from(owned);
    stream.set_nonblocking(false)?;
    Ok((stream, job))
}
