//! The session process: one per logged-in FTP client, running as the user.
//!
//! Started by the daemon as `uftpd __session` (see [`crate::handover`]). It
//! takes on the user's identity before it opens any user path, opens the
//! user's storage rooted at the base directory, answers `230` and serves
//! commands until QUIT or the client goes away. The session is plain
//! blocking code on one thread: a session serves one client.
//!
//! Commands live in one file per family: [`cmd_fs`] (directories, rename,
//! delete, times), [`cmd_info`] (FEAT, OPTS, listings on the control
//! channel), [`cmd_xfer`] (data connections, ranges, RETR/STOR/APPE, LIST,
//! HASH), [`cmd_sync`] (SYNC-TO-CLIENT/SERVER), [`archive`] (STOR in
//! archive mode) and [`rcp`] (server-to-server copies).

mod archive;
mod cmd_fs;
mod cmd_info;
mod cmd_sync;
mod cmd_xfer;
pub mod control;
pub mod data;
pub mod listing;
mod pam;
pub mod paths;
pub mod privdrop;
mod rcp;
pub mod transfer;

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use storage_api::{Identity, Storage, StorageError, StorageSpec};
use uftp_datachannel::CodecStack;

use crate::handover::{SessionJob, SessionSettings, receive_session};
use crate::request::{AccessLevel, CodecSettings, TransferRequest};
use control::{Control, Line};
use data::DataChannel;
use paths::PatternSet;

/// An error reply: `<code> Error processing command '<CMD>': <msg>`.
#[derive(Debug)]
pub struct CmdError {
    /// FTP reply code.
    pub code: u16,
    /// Reason.
    pub msg: String,
}

impl CmdError {
    /// A new error reply.
    pub fn new(code: u16, msg: impl Into<String>) -> Self {
        CmdError {
            code,
            msg: msg.into(),
        }
    }
}

impl From<StorageError> for CmdError {
    fn from(e: StorageError) -> Self {
        CmdError::new(e.ftp_code(), e.to_string())
    }
}

impl From<data::DataError> for CmdError {
    fn from(e: data::DataError) -> Self {
        // PROTOCOL section 5: 500 for every error that is not a missing
        // file, a forbidden path or a syntax error (UFTPD 3.x does the same)
        CmdError::new(500, e.to_string())
    }
}

type CmdResult = Result<Flow, CmdError>;

/// What the loop does after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Next command.
    Continue,
    /// End the session.
    Quit,
}

/// Checksum algorithms of HASH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgo {
    /// MD5.
    Md5,
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl HashAlgo {
    /// All, in FEAT order.
    pub const ALL: [HashAlgo; 4] = [
        HashAlgo::Md5,
        HashAlgo::Sha1,
        HashAlgo::Sha256,
        HashAlgo::Sha512,
    ];

    /// Wire name.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Md5 => "MD5",
            HashAlgo::Sha1 => "SHA-1",
            HashAlgo::Sha256 => "SHA-256",
            HashAlgo::Sha512 => "SHA-512",
        }
    }

    /// Parses a wire name (any case).
    pub fn parse(s: &str) -> Option<HashAlgo> {
        let s = s.trim().to_ascii_uppercase();
        HashAlgo::ALL.into_iter().find(|a| a.name() == s)
    }
}

/// Options clients may change with OPTS.
#[derive(Debug)]
pub struct Options {
    /// Current rate limit (bytes/s, 0 = none).
    pub rate_limit: u64,
    /// The request's rate limit: OPTS may only lower it.
    pub initial_rate_limit: u64,
    /// FILE_READ_BUFFER_SIZE.
    pub file_read_buffer: usize,
    /// FILE_WRITE_BUFFER_SIZE.
    pub file_write_buffer: usize,
    /// BUFFER_SIZE (network copy loops).
    pub buffer_size: usize,
    /// SENDFILE_ENABLED.
    pub sendfile: bool,
    /// HASH algorithm.
    pub hash: HashAlgo,
    /// KEEP_ALIVE.
    pub keep_alive: bool,
    /// ARCHIVE (TYPE ARCHIVE).
    pub archive: bool,
}

/// RANG/REST/ALLO state for the next transfer.
#[derive(Debug, Default, Clone, Copy)]
pub struct Range {
    /// Start offset.
    pub offset: u64,
    /// Length (RANG end - start, or ALLO).
    pub length: Option<u64>,
    /// Set by RANG: ranged read/write, no truncation.
    pub have_range: bool,
}

impl Range {
    /// (offset, length) of a read from a file of `size` bytes.
    pub fn for_read(&self, size: u64) -> (u64, u64) {
        let start = self.offset.min(size);
        let end = match (self.have_range, self.length) {
            (true, Some(l)) => self.offset.saturating_add(l).min(size),
            _ => size,
        };
        (start, end.saturating_sub(start))
    }
}

/// A path argument resolved against cwd and base.
#[derive(Debug)]
pub struct Resolved {
    /// Normalised absolute path.
    pub abs: String,
    /// Path relative to the base directory, for the storage.
    pub rel: PathBuf,
}

/// Everything of a session but its control connection.
struct Parts {
    storage: Box<dyn Storage>,
    identity: Identity,
    request: TransferRequest,
    settings: SessionSettings,
    base: String,
    cwd: String,
    access: AccessLevel,
    includes: PatternSet,
    excludes: PatternSet,
    nowrite: PatternSet,
    opts: Options,
    range: Range,
    data: DataChannel,
    stack: CodecStack,
    peer: SocketAddr,
}

impl Parts {
    fn into_session(self, ctl: Control) -> Session {
        Session {
            // once per session, as the session user
            base_real: std::fs::canonicalize(&self.base).ok(),
            ctl,
            storage: self.storage,
            identity: self.identity,
            request: self.request,
            settings: self.settings,
            base: self.base,
            cwd: self.cwd,
            access: self.access,
            includes: self.includes,
            excludes: self.excludes,
            nowrite: self.nowrite,
            opts: self.opts,
            range: self.range,
            data: self.data,
            stack: self.stack,
            rename_from: None,
            peer: self.peer,
            rcp: rcp::Copies::default(),
        }
    }
}

/// A running session.
pub struct Session {
    ctl: Control,
    storage: Box<dyn Storage>,
    identity: Identity,
    request: TransferRequest,
    settings: SessionSettings,
    base: String,
    /// The base with symbolic links resolved, where it is a local path.
    base_real: Option<PathBuf>,
    cwd: String,
    access: AccessLevel,
    includes: PatternSet,
    excludes: PatternSet,
    nowrite: PatternSet,
    opts: Options,
    range: Range,
    data: DataChannel,
    /// Codecs of every data stream (from the request's key/compress).
    stack: CodecStack,
    rename_from: Option<Resolved>,
    peer: SocketAddr,
    /// Server-to-server copies started by this session.
    rcp: rcp::Copies,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.identity.user)
            .field("base", &self.base)
            .field("cwd", &self.cwd)
            .finish_non_exhaustive()
    }
}

/// Entry point of `uftpd __session`.
pub fn run_process() -> ExitCode {
    let (stream, job) = match receive_session() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("uftpd __session: {e}");
            return ExitCode::from(2);
        }
    };
    crate::logging::init(
        if job.settings.log_syslog {
            crate::logging::Target::Syslog
        } else {
            crate::logging::Target::Stdout
        },
        job.settings.log_verbose,
    );
    let ctl = Control::new(stream, &job.pending_input);

    if job.settings.open_user_sessions && job.settings.switch_user {
        return run_with_pam(ctl, job);
    }
    serve(ctl, job)
}

/// OPEN_USER_SESSIONS: open a PAM session as root, serve the FTP session
/// in a forked child that drops privileges, close the PAM session when the
/// child is done.
fn run_with_pam(mut ctl: Control, job: SessionJob) -> ExitCode {
    let pam = match pam::PamSession::open(&job.settings.pam_module, &job.identity.user) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!("PAM session for '{}' not opened: {e}", job.identity.user);
            None
        }
    };
    // SAFETY: this process is single-threaded (no runtime, no threads were
    // started), so the child may continue running arbitrary code.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let code = serve(ctl, job);
            std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 1 });
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(ctl);
            let status = nix::sys::wait::waitpid(child, None);
            if let Some(p) = pam
                && let Err(e) = p.close()
            {
                tracing::warn!("{e}");
            }
            match status {
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => ExitCode::SUCCESS,
                _ => ExitCode::FAILURE,
            }
        }
        Err(e) => {
            let _ = ctl.reply(&format!("530 Not logged in: cannot start session: {e}"));
            ExitCode::FAILURE
        }
    }
}

fn serve(ctl: Control, job: SessionJob) -> ExitCode {
    let user = job.identity.user.clone();
    match Session::setup(ctl, job) {
        Ok(mut session) => {
            if session.ctl.reply("230 Login successful").is_err() {
                return ExitCode::FAILURE;
            }
            session.run();
            ExitCode::SUCCESS
        }
        Err((mut ctl, msg)) => {
            tracing::error!("Session for '{user}' not started: {msg}");
            let _ = ctl.reply(&format!("530 Not logged in: {msg}"));
            ExitCode::FAILURE
        }
    }
}

/// The base directory and start directory for a request.
fn base_and_start(request: &TransferRequest, identity: &Identity) -> (String, String, bool) {
    let home = crate::users::start_home(identity);
    let home = home.to_string_lossy().into_owned();
    match request.base_dir() {
        None => ("/".to_string(), paths::normalize("/", &home), false),
        Some(d) => {
            let base = paths::normalize(&home, d);
            let confined = base != "/";
            (base.clone(), base, confined)
        }
    }
}

impl Session {
    fn setup(ctl: Control, job: SessionJob) -> Result<Session, (Control, String)> {
        match Self::prepare(&ctl, job) {
            Ok(parts) => Ok(parts.into_session(ctl)),
            Err(msg) => Err((ctl, msg)),
        }
    }

    fn prepare(ctl: &Control, job: SessionJob) -> Result<Parts, String> {
        let SessionJob {
            request,
            identity,
            settings,
            ..
        } = job;
        // The backend (a dynamic plugin's library included) is set up while
        // still privileged, from admin-owned paths; nothing of the user's is
        // touched before the identity switch below.
        let file_vars = settings.file_vars.clone();
        let lookup = move |n: &str| file_vars.get(n).cloned();
        crate::plugins::load_dynamic(&settings.plugins).map_err(|e| e.to_string())?;
        let backend = crate::plugins::storage_backend(&settings.storage_backend, &lookup)
            .map_err(|e| e.to_string())?;
        if settings.switch_user {
            privdrop::become_user(&identity).map_err(|e| e.to_string())?;
        } else {
            privdrop::no_new_privs().map_err(|e| e.to_string())?;
        }
        let (base, cwd, confined) = base_and_start(&request, &identity);
        let base_path = PathBuf::from(&base);
        let storage = backend
            .open_session(&StorageSpec {
                base: &base_path,
                confined,
                identity: &identity,
            })
            .map_err(|e| format!("cannot open base directory: {e}"))?;
        let st = storage
            .stat(&paths::relative(&base, &cwd))
            .map_err(|e| format!("no such directory: {e}"))?;
        if !st.is_dir() {
            return Err(format!("not a directory: {cwd}"));
        }
        let home = identity.home.to_string_lossy().into_owned();
        let includes = PatternSet::new(&request.includes, &cwd);
        let excludes = PatternSet::new(&request.excludes, &cwd);
        let nowrite = PatternSet::new(&settings.nowrite, &home);
        // A client that stops reading its replies cannot pin the session
        // forever (reads have no timeout: idle sessions are legitimate, and
        // TCP keepalive notices dead peers).
        let _ = ctl.stream().set_write_timeout(Some(data::DATA_IO_TIMEOUT));
        let local = ctl
            .stream()
            .local_addr()
            .map_err(|e| format!("control connection: {e}"))?;
        let peer = ctl
            .stream()
            .peer_addr()
            .map_err(|e| format!("control connection: {e}"))?;
        let stack = request.codec_stack(&CodecSettings {
            gzip_level: settings.gzip_level,
            zstd_level: settings.zstd_level,
            compress_threads: settings.compress_threads,
            gzip_engine: &settings.gzip_engine,
            chacha_engine: &settings.chacha_engine,
        })?;
        let mut data = DataChannel::new(local, peer, settings.port_range);
        data.streams = (request.streams.min(settings.max_streams) as usize).max(1);
        let opts = Options {
            rate_limit: request.rate_limit,
            initial_rate_limit: request.rate_limit,
            file_read_buffer: 1 << 20,
            file_write_buffer: 1 << 20,
            buffer_size: 1 << 20,
            sendfile: settings.use_sendfile,
            hash: HashAlgo::Md5,
            keep_alive: false,
            archive: false,
        };
        tracing::info!(
            "Processing UFTP session for <{} : {} : {}>, initial_dir='{}', base='{}', encrypted={}, compress={}, ratelimit={}, persistent={}",
            identity.user,
            identity.gid,
            peer.ip(),
            cwd,
            base,
            request.key.is_some(),
            request.compress,
            request.rate_limit,
            request.persistent
        );
        Ok(Parts {
            storage,
            access: request.access,
            identity,
            request,
            settings,
            base,
            cwd,
            includes,
            excludes,
            nowrite,
            opts,
            range: Range::default(),
            data,
            stack,
            peer,
        })
    }

    /// While PASV/EPSV listeners wait and no command is buffered, accepts
    /// data connections as they arrive and closes the listeners whose 30 s
    /// pass (PROTOCOL section 6), until the control connection has
    /// something to read.
    fn accept_while_idle(&mut self) {
        while self.data.has_pending() && !self.ctl.has_line() {
            let ctl_ready = {
                let (listeners, first) = self.data.pending_listeners();
                let wait = first
                    .map(|d| d.saturating_duration_since(Instant::now()))
                    .unwrap_or_default();
                // at most 10 s per poll (PollTimeout is u16 milliseconds);
                // at least 1 ms, so that an expired listener is seen
                let ms = wait.as_millis().clamp(1, 10_000) as u16;
                let mut fds = vec![PollFd::new(self.ctl.stream().as_fd(), PollFlags::POLLIN)];
                fds.extend(
                    listeners
                        .into_iter()
                        .map(|l| PollFd::new(l, PollFlags::POLLIN)),
                );
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => {
                        tracing::debug!("poll on the control connection: {e}");
                        return;
                    }
                }
                fds[0].revents().is_some_and(|r| !r.is_empty())
            };
            self.data.accept_ready();
            if ctl_ready {
                return;
            }
        }
    }

    /// Serves commands until QUIT or end of stream.
    pub fn run(&mut self) {
        loop {
            self.accept_while_idle();
            let line = match self.ctl.read_line() {
                Ok(Some(l)) => l,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("control connection: {e}");
                    break;
                }
            };
            let line = match line {
                Line::Text(t) => t,
                Line::TooLong => {
                    if self.reply("500 Error: command line too long").is_err() {
                        break;
                    }
                    continue;
                }
                Line::NotUtf8 => {
                    if self
                        .reply("500 Error: command line is not valid UTF-8")
                        .is_err()
                    {
                        break;
                    }
                    continue;
                }
            };
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (verb, arg) = match line.split_once(' ') {
                Some((v, a)) => (v.to_ascii_uppercase(), a),
                None => (line.to_ascii_uppercase(), ""),
            };
            tracing::debug!("--> {verb}");
            // A bare CR or a NUL inside the line (LF ends it) is refused
            // for every command: no name with a line break can be created
            // or addressed, quoted back or passed on to another server.
            let result = match control::check_argument(arg) {
                Ok(()) => self.dispatch(&verb, arg),
                Err(e) => Err(CmdError::new(501, e.to_string())),
            };
            let ok = match result {
                Ok(Flow::Continue) => true,
                Ok(Flow::Quit) => false,
                Err(e) => self
                    .reply(&format!(
                        "{} Error processing command '{}': {}",
                        e.code, verb, e.msg
                    ))
                    .is_ok(),
            };
            if !ok {
                break;
            }
        }
        self.data.close();
        tracing::info!(
            "Session for '{}' from {} ended",
            self.identity.user,
            self.peer.ip()
        );
    }

    fn dispatch(&mut self, verb: &str, arg: &str) -> CmdResult {
        match verb {
            "QUIT" | "BYE" => {
                let _ = self.reply("221 Goodbye");
                Ok(Flow::Quit)
            }
            "NOOP" => self.noop(arg),
            "SYST" => self.ok_reply("215 Unix Type: L8"),
            "FEAT" => self.feat(),
            "OPTS" => self.opts(arg),
            "PWD" | "XPWD" => self.pwd(),
            "CWD" | "XCWD" => self.cwd(arg),
            "CDUP" | "XCUP" => self.cdup(),
            "MKD" | "XMKD" => self.mkd(arg),
            "RMD" | "XRMD" => self.rmd(arg),
            "DELE" => self.dele(arg),
            "RNFR" => self.rnfr(arg),
            "RNTO" => self.rnto(arg),
            "SIZE" => self.size(arg),
            "MLST" => self.mlst(arg),
            "STAT" => self.stat(arg),
            "MFMT" => self.mfmt(arg),
            "MFF" => self.mff(arg),
            "TYPE" => self.type_(arg),
            "KEEP-ALIVE" => self.keep_alive(arg),
            "PASV" => self.pasv(),
            "EPSV" => self.epsv(arg),
            "RANG" => self.rang(arg),
            "REST" => self.rest(arg),
            "ALLO" => self.allo(arg),
            "RETR" => self.retr(arg),
            "STOR" if self.opts.archive => self.stor_archive(arg),
            "STOR" => self.stor(arg, false),
            "APPE" => self.stor(arg, true),
            "LIST" => self.list(arg, cmd_xfer::ListStyle::Ls),
            "NLST" => self.list(arg, cmd_xfer::ListStyle::Names),
            "MLSD" => self.list(arg, cmd_xfer::ListStyle::Mlsd),
            "HASH" => self.hash(arg),
            "SYNC-TO-CLIENT" => self.sync_to_client(arg),
            "SYNC-TO-SERVER" => self.sync_to_server(arg),
            "SEND-FILE" => self.send_file(arg),
            "RECEIVE-FILE" => self.receive_file(arg),
            "RCP-STATUS" => self.rcp_status(arg),
            "RCP-ABORT" => self.rcp_abort(arg),
            _ => self.ok_reply("502 Command not implemented."),
        }
    }

    fn reply(&mut self, line: &str) -> std::io::Result<()> {
        tracing::debug!("<-- {}", control::escape_line_breaks(line));
        self.ctl.reply(line)
    }

    /// Sends a reply and continues; a dead control connection ends the
    /// session.
    fn ok_reply(&mut self, line: &str) -> CmdResult {
        match self.reply(line) {
            Ok(()) => Ok(Flow::Continue),
            Err(_) => Ok(Flow::Quit),
        }
    }

    fn lines_reply<S: AsRef<str>>(&mut self, lines: &[S]) -> CmdResult {
        match self.ctl.reply_lines(lines) {
            Ok(()) => Ok(Flow::Continue),
            Err(_) => Ok(Flow::Quit),
        }
    }

    fn require(&self, level: AccessLevel) -> Result<(), CmdError> {
        if self.access < level {
            return Err(CmdError::new(534, "Access denied"));
        }
        Ok(())
    }

    /// Normalises a path argument and checks it is inside the base.
    fn resolve(&self, arg: &str) -> Result<Resolved, CmdError> {
        let abs = paths::normalize(&self.cwd, arg);
        if !paths::within(&self.base, &abs) {
            return Err(CmdError::new(
                534,
                format!("Forbidden: {abs} not in {}", self.base),
            ));
        }
        let rel = paths::relative(&self.base, &abs);
        Ok(Resolved { abs, rel })
    }

    /// includes/excludes.
    fn check_access(&self, abs: &str) -> Result<(), CmdError> {
        if let Some(p) = self.excludes.matching(abs) {
            return Err(CmdError::new(
                534,
                format!("Forbidden: {abs} excluded via {p}"),
            ));
        }
        if !self.includes.is_empty() && self.includes.matching(abs).is_none() {
            return Err(CmdError::new(534, format!("Forbidden: {abs} not included")));
        }
        Ok(())
    }

    /// UFTP_NOWRITE.
    fn check_writable(&self, abs: &str) -> Result<(), CmdError> {
        if let Some(p) = self.nowrite.matching(abs) {
            return Err(CmdError::new(
                534,
                format!("Forbidden: {abs} is write-protected ({p})"),
            ));
        }
        Ok(())
    }

    /// The path `r` really names when symbolic links inside the base make
    /// it another one ([`paths::real_within`]); `None` when it is the same
    /// or cannot be resolved.
    fn real_path(&self, r: &Resolved) -> Option<String> {
        self.base_real
            .as_deref()
            .and_then(|b| paths::real_within(&self.base, b, &r.rel))
            .filter(|real| *real != r.abs)
    }

    /// For renaming the directory `r`: no excluded or write-protected
    /// path may lie below it (as given, or as its symbolic links inside
    /// the base make it), or the rename would move such paths to names
    /// the patterns do not match (`RNFR .ssh`, `RNTO keys`), or, as the
    /// target, move other files to protected names.
    fn check_subtree(&self, r: &Resolved) -> Result<(), CmdError> {
        let real = self.real_path(r);
        for abs in std::iter::once(&r.abs).chain(real.as_ref()) {
            if let Some(p) = self.excludes.matching_below(abs) {
                return Err(CmdError::new(
                    534,
                    format!("Forbidden: {abs} may hold paths excluded via {p}"),
                ));
            }
            if let Some(p) = self.nowrite.matching_below(abs) {
                return Err(CmdError::new(
                    534,
                    format!("Forbidden: {abs} may hold write-protected paths ({p})"),
                ));
            }
        }
        Ok(())
    }

    /// Resolve + includes/excludes (+ UFTP_NOWRITE when writing), on the
    /// path as given and, when symbolic links inside the base make it
    /// another file, on the path it really names: a link `keys ->
    /// .ssh/authorized_keys` must not open a write-protected or excluded
    /// file under an innocent name.
    fn target(&self, arg: &str, write: bool) -> Result<Resolved, CmdError> {
        let r = self.resolve(arg)?;
        self.check_access(&r.abs)?;
        if write {
            self.check_writable(&r.abs)?;
        }
        if let Some(real) = self.real_path(&r) {
            self.check_access(&real)?;
            if write {
                self.check_writable(&real)?;
            }
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_ranges() {
        let r = Range::default();
        assert_eq!(r.for_read(100), (0, 100));
        let r = Range {
            offset: 10,
            length: None,
            have_range: false,
        };
        assert_eq!(r.for_read(100), (10, 90));
        assert_eq!(r.for_read(5), (5, 0));
        let r = Range {
            offset: 10,
            length: Some(20),
            have_range: true,
        };
        assert_eq!(r.for_read(100), (10, 20));
        assert_eq!(r.for_read(25), (10, 15), "clamped to the file");
        let r = Range {
            offset: 10,
            length: Some(20),
            have_range: false,
        };
        assert_eq!(r.for_read(100), (10, 90), "ALLO does not limit reads");
    }

    #[test]
    fn hash_names() {
        assert_eq!(HashAlgo::parse("sha-256"), Some(HashAlgo::Sha256));
        assert_eq!(HashAlgo::parse("SHA256"), None);
    }
}
