//! A UFTP client: the dialect of the UFTPD servers (PROTOCOL.md).
//!
//! Log in with the one-time secret an Auth server handed out, then list,
//! download and upload over passive data connections with optional
//! multiple TCP streams (`NOOP n`), legacy encryption (BLOWFISH/AES) and
//! gzip compression, and uftpd's extension codecs (CHACHA20-POLY1305, zstd),
//! which it uses only with a server whose FEAT offers them for the session.
//! Used by uftpd's tests, its benchmarks and its server-to-server copy.
//!
//! ```no_run
//! use uftp_client::{Client, ClientOptions};
//! # fn main() -> Result<(), uftp_client::ClientError> {
//! let opts = ClientOptions { streams: 4, ..ClientOptions::default() };
//! let mut c = Client::connect("127.0.0.1:64434", "the-secret", opts)?;
//! let mut out = Vec::new();
//! let n = c.get("data.bin", None, &mut out)?;
//! assert_eq!(n as usize, out.len());
//! c.quit()?;
//! # Ok(()) }
//! ```

pub mod sync;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use std::sync::Arc;

use uftp_datachannel::lowat::{BULK_LOW_WATER, LowWater, set_receive_low_water};
use uftp_datachannel::{ChannelOptions, CodecParams, CodecStack, DataReader, DataWriter};

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Network or local file error.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The server answered with an unexpected reply.
    #[error("server replied to '{command}': {reply}")]
    Server {
        /// The command sent (secrets masked).
        command: String,
        /// The reply (all lines).
        reply: Reply,
    },
    /// The server's reply could not be understood.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server closed the control connection.
    #[error("control connection closed by the server")]
    Closed,
    /// A codec could not be set up (bad key, unknown algorithm).
    #[error("codec: {0}")]
    Codec(String),
    /// A sync exchange failed.
    #[error("sync: {0}")]
    Sync(#[from] sync::SyncError),
}

/// A server reply: the code and every line (the last one included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Three-digit code.
    pub code: u16,
    /// All lines, without line ends.
    pub lines: Vec<String>,
}

impl Reply {
    /// The text of the last line after the code.
    pub fn text(&self) -> &str {
        self.lines
            .last()
            .map(|l| l.get(4..).unwrap_or(""))
            .unwrap_or("")
    }

    /// Lines between the first and the last (the body of a multi-line reply).
    pub fn body(&self) -> &[String] {
        if self.lines.len() > 2 {
            &self.lines[1..self.lines.len() - 1]
        } else {
            &[]
        }
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.lines.join(" | "))
    }
}

/// Compression of the data streams, as the transfer request asked for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    /// No compression (`compress=false`).
    #[default]
    None,
    /// gzip (`compress=true`), as every UFTPD.
    Gzip,
    /// zstd (`compress=zstd`), uftpd's extension: used only when the
    /// server's FEAT lists `COMPRESS zstd`.
    Zstd,
}

impl From<bool> for Compression {
    /// `true` is gzip, as in a UFTPD 3.x transfer request.
    fn from(gzip: bool) -> Self {
        if gzip {
            Compression::Gzip
        } else {
            Compression::None
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    /// `gzip`/`true`, `zstd`, `none`/`false` (any case).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "gzip" | "true" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "none" | "false" => Ok(Compression::None),
            _ => Err(format!("unknown compression '{s}' (gzip, zstd or none)")),
        }
    }
}

/// The `algo` of uftpd's authenticated encryption extension.
pub const CHACHA20_POLY1305: &str = uftpd_chacha20poly1305::NAME;

/// The FEAT line of a session compressed with zstd.
pub const FEAT_COMPRESS_ZSTD: &str = "COMPRESS zstd";

/// The zlib level the client compresses gzip streams with unless told
/// otherwise, the same as the server's GZIP_LEVEL default.
pub use uftp_datachannel::DEFAULT_GZIP_LEVEL;

/// The zstd level the client compresses zstd streams with unless told
/// otherwise, the same as the server's ZSTD_LEVEL default.
pub const DEFAULT_ZSTD_LEVEL: i32 = uftpd_zstd::DEFAULT_LEVEL;

/// Client settings for one session. `Debug` shows the key's length only.
#[derive(Clone)]
pub struct ClientOptions {
    /// Parallel TCP streams per data channel (1 = plain FTP).
    pub streams: usize,
    /// Data-channel key (raw bytes) as sent in the transfer request.
    pub key: Option<Vec<u8>>,
    /// `BLOWFISH`, `AES` (default by key length) or `CHACHA20-POLY1305`
    /// (32-byte key).
    pub algo: Option<String>,
    /// Compression of the data streams.
    pub compress: Compression,
    /// zlib level (0-9) of what this client compresses with gzip (uploads;
    /// downloads are compressed by the server at its GZIP_LEVEL).
    pub gzip_level: u32,
    /// zstd level (-7..=19; negative: zstd's fast modes) of what this
    /// client compresses with zstd (uploads; downloads are compressed by
    /// the server at its ZSTD_LEVEL).
    pub zstd_level: i32,
    /// Timeout for connects and reads.
    pub timeout: Duration,
    /// Use EPSV instead of PASV.
    pub epsv: bool,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("streams", &self.streams)
            .field(
                "key",
                &self
                    .key
                    .as_ref()
                    .map(|k| format!("{} bytes, redacted", k.len())),
            )
            .field("algo", &self.algo)
            .field("compress", &self.compress)
            .field("gzip_level", &self.gzip_level)
            .field("zstd_level", &self.zstd_level)
            .field("timeout", &self.timeout)
            .field("epsv", &self.epsv)
            .finish()
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            streams: 1,
            key: None,
            algo: None,
            compress: Compression::None,
            gzip_level: DEFAULT_GZIP_LEVEL,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            timeout: Duration::from_secs(60),
            epsv: false,
        }
    }
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Name.
    pub name: String,
    /// Directory?
    pub is_dir: bool,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ms since the epoch (STAT) or 0.
    pub mtime_ms: u64,
    /// Permission letters (`rwx` or with `-`).
    pub perm: String,
}

impl FileInfo {
    /// Parses a STAT line `<d|-><r|-><w|-><x|-> <size> <mtime ms> <name>`.
    pub fn parse_stat_line(line: &str) -> Option<FileInfo> {
        let line = line.trim_start();
        let mut it = line.splitn(4, ' ');
        let flags = it.next()?;
        let size = it.next()?.parse().ok()?;
        let mtime_ms = it.next()?.parse().ok()?;
        let name = it.next()?.to_string();
        Some(FileInfo {
            name,
            is_dir: flags.starts_with('d'),
            size,
            mtime_ms,
            perm: flags.get(1..).unwrap_or("").to_string(),
        })
    }
}

/// A logged-in UFTP session.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    opts: ClientOptions,
    stack: CodecStack,
    channel: ChannelOptions,
    /// Lines of the FEAT reply (trimmed).
    pub features: Vec<String>,
    /// The greeting line.
    pub greeting: String,
    peer: SocketAddr,
    /// Streams granted by the server for the next data channel.
    granted: usize,
}

fn mask(cmd: &str) -> String {
    if cmd.to_ascii_uppercase().starts_with("PASS ") {
        "PASS ***".to_string()
    } else {
        cmd.to_string()
    }
}

/// Whether `opts` selects the ChaCha20-Poly1305 extension.
fn uses_chacha(opts: &ClientOptions) -> bool {
    opts.key.is_some()
        && opts
            .algo
            .as_deref()
            .is_some_and(|a| a.eq_ignore_ascii_case(CHACHA20_POLY1305))
}

/// The codec stack for `opts`: the legacy codecs exactly as before, or the
/// extension codecs.
fn codec_stack(opts: &ClientOptions) -> Result<CodecStack, uftp_datachannel::CodecError> {
    let stack = if uses_chacha(opts) {
        let key = opts.key.clone().unwrap_or_default();
        CodecStack::plain().with_codec(
            Arc::from(uftpd_chacha20poly1305::DESCRIPTOR.instantiate()),
            CodecParams::new().with_key(key),
        )?
    } else {
        CodecStack::legacy(opts.key.as_deref(), opts.algo.as_deref(), false)?
    };
    // Each layer goes to its wire position by its kind (compression inside
    // the encryption), whatever the order of these calls.
    match opts.compress {
        Compression::None => Ok(stack),
        Compression::Gzip => stack.with(
            "gzip",
            CodecParams::new().with_option("level", opts.gzip_level.to_string()),
        ),
        Compression::Zstd => stack.with_codec(
            Arc::from(uftpd_zstd::DESCRIPTOR.instantiate()),
            CodecParams::new().with_option("level", opts.zstd_level.to_string()),
        ),
    }
}

/// An extension codec of `opts` that the session's FEAT does not offer:
/// the server is older than the extension, or the transfer request did not
/// ask for it. Using it anyway would garble or fail every transfer.
fn missing_extension(opts: &ClientOptions, features: &[String]) -> Option<String> {
    let has = |f: &str| features.iter().any(|l| l == f);
    let crypted = format!("CRYPTED-{CHACHA20_POLY1305}");
    if uses_chacha(opts) && !has(&crypted) {
        return Some(format!(
            "the server does not offer {CHACHA20_POLY1305} for this session (no '{crypted}' in FEAT)"
        ));
    }
    if opts.compress == Compression::Zstd && !has(FEAT_COMPRESS_ZSTD) {
        return Some(format!(
            "the server does not offer zstd for this session (no '{FEAT_COMPRESS_ZSTD}' in FEAT): \
             an older server runs a compress=zstd session uncompressed"
        ));
    }
    None
}

impl Client {
    /// Connects, logs in with `secret`, reads FEAT. With an extension codec
    /// (zstd, CHACHA20-POLY1305) FEAT must list it for the session, else
    /// [`ClientError::Codec`].
    pub fn connect(addr: &str, secret: &str, opts: ClientOptions) -> Result<Client, ClientError> {
        let stack = codec_stack(&opts).map_err(|e| ClientError::Codec(e.to_string()))?;
        let sa = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| ClientError::Protocol(format!("cannot resolve {addr}")))?;
        let s = TcpStream::connect_timeout(&sa, opts.timeout)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(opts.timeout))?;
        let peer = s.peer_addr()?;
        let mut c = Client {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
            opts,
            stack,
            channel: ChannelOptions::default(),
            features: Vec::new(),
            greeting: String::new(),
            peer,
            granted: 1,
        };
        let greeting = c.read_reply()?;
        if greeting.code != 220 {
            return Err(ClientError::Server {
                command: "(connect)".into(),
                reply: greeting,
            });
        }
        c.greeting = greeting.lines.join("\n");
        c.expect("USER anonymous", 331)?;
        c.expect(&format!("PASS {secret}"), 230)?;
        let feat = c.expect("FEAT", 211)?;
        c.features = feat.body().iter().map(|l| l.trim().to_string()).collect();
        if let Some(why) = missing_extension(&c.opts, &c.features) {
            let _ = c.command("QUIT");
            return Err(ClientError::Codec(why));
        }
        if c.features.iter().any(|f| f == "EPSV") && peer.is_ipv6() {
            c.opts.epsv = true;
        }
        Ok(c)
    }

    /// Reads one (possibly multi-line) reply.
    pub fn read_reply(&mut self) -> Result<Reply, ClientError> {
        let mut lines = Vec::new();
        let mut code: Option<u16> = None;
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line)?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            let c = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|_| line.len() == 3 || matches!(line.as_bytes()[3], b' ' | b'-'));
            match (code, c) {
                (None, Some(c)) => {
                    let last = line.len() == 3 || line.as_bytes()[3] == b' ';
                    lines.push(line);
                    if last {
                        return Ok(Reply { code: c, lines });
                    }
                    code = Some(c);
                }
                (None, None) => {
                    return Err(ClientError::Protocol(format!("malformed reply '{line}'")));
                }
                (Some(first), Some(c)) if c == first && line.as_bytes().get(3) == Some(&b' ') => {
                    lines.push(line);
                    return Ok(Reply { code: first, lines });
                }
                (Some(first), Some(c)) if c == first && line.len() == 3 => {
                    lines.push(line);
                    return Ok(Reply { code: first, lines });
                }
                _ => lines.push(line),
            }
        }
    }

    /// Sends one command line and reads the reply (skipping bare `213-`
    /// keep-alive lines of HASH).
    pub fn command(&mut self, cmd: &str) -> Result<Reply, ClientError> {
        self.writer.write_all(format!("{cmd}\r\n").as_bytes())?;
        loop {
            let r = self.read_reply()?;
            // HASH progress lines: "213-" alone.
            if r.lines.len() == 1 && r.lines[0] == "213-" {
                continue;
            }
            return Ok(r);
        }
    }

    /// Sends a command and requires the reply code.
    pub fn expect(&mut self, cmd: &str, code: u16) -> Result<Reply, ClientError> {
        let r = self.command(cmd)?;
        if r.code != code {
            return Err(ClientError::Server {
                command: mask(cmd),
                reply: r,
            });
        }
        Ok(r)
    }

    /// The server's working directory.
    pub fn pwd(&mut self) -> Result<String, ClientError> {
        let r = self.expect("PWD", 257)?;
        let t = r.text();
        Ok(t.trim().trim_matches('"').to_string())
    }

    /// Changes directory.
    pub fn cwd(&mut self, path: &str) -> Result<(), ClientError> {
        self.expect(&format!("CWD {path}"), 200).map(|_| ())
    }

    /// Creates a directory.
    pub fn mkdir(&mut self, path: &str) -> Result<(), ClientError> {
        self.expect(&format!("MKD {path}"), 257).map(|_| ())
    }

    /// Removes a file.
    pub fn rm(&mut self, path: &str) -> Result<(), ClientError> {
        self.expect(&format!("DELE {path}"), 200).map(|_| ())
    }

    /// Removes an empty directory.
    pub fn rmdir(&mut self, path: &str) -> Result<(), ClientError> {
        self.expect(&format!("RMD {path}"), 200).map(|_| ())
    }

    /// Renames.
    pub fn rename(&mut self, from: &str, to: &str) -> Result<(), ClientError> {
        self.expect(&format!("RNFR {from}"), 350)?;
        self.expect(&format!("RNTO {to}"), 200).map(|_| ())
    }

    /// Size of a file.
    pub fn size(&mut self, path: &str) -> Result<u64, ClientError> {
        let r = self.expect(&format!("SIZE {path}"), 213)?;
        r.text()
            .trim()
            .parse()
            .map_err(|_| ClientError::Protocol(format!("bad SIZE reply '{r}'")))
    }

    /// Directory contents (STAT N on the control channel).
    pub fn list(&mut self, dir: &str) -> Result<Vec<FileInfo>, ClientError> {
        let r = self.expect(&format!("STAT N {dir}"), 211)?;
        Ok(r.body()
            .iter()
            .filter_map(|l| FileInfo::parse_stat_line(l))
            .collect())
    }

    /// Checksum of a file (or of `range` = (offset, length) of it):
    /// returns the hex digest.
    pub fn hash(
        &mut self,
        path: &str,
        algo: &str,
        range: Option<(u64, u64)>,
    ) -> Result<String, ClientError> {
        self.expect(&format!("OPTS HASH {algo}"), 200)?;
        if let Some((off, len)) = range {
            self.expect(&self.rang_command(off, len), 350)?;
        }
        let r = self.expect(&format!("HASH {path}"), 213)?;
        let text = r.text().to_string();
        let mut it = text.split(' ');
        let (_algo, _range, digest) = (it.next(), it.next(), it.next());
        digest
            .map(String::from)
            .ok_or_else(|| ClientError::Protocol(format!("bad HASH reply '{text}'")))
    }

    /// Negotiates streams and opens the data connections.
    fn open_data(&mut self) -> Result<Vec<TcpStream>, ClientError> {
        let want = self.opts.streams.max(1);
        self.granted = want;
        if want > 1 {
            let r = self.command(&format!("NOOP {want}"))?;
            match r.code {
                222 => {}
                223 => {
                    let m = r
                        .lines
                        .last()
                        .and_then(|l| l.split(' ').nth(2))
                        .and_then(|m| m.parse::<usize>().ok())
                        .ok_or_else(|| ClientError::Protocol(format!("bad NOOP reply '{r}'")))?;
                    self.granted = m.max(1);
                }
                _ => {
                    return Err(ClientError::Server {
                        command: format!("NOOP {want}"),
                        reply: r,
                    });
                }
            }
        }
        let mut conns = Vec::with_capacity(self.granted);
        for _ in 0..self.granted {
            let addr = if self.opts.epsv {
                let r = self.expect("EPSV", 229)?;
                let port = parse_epsv(r.text())
                    .ok_or_else(|| ClientError::Protocol(format!("bad EPSV reply '{r}'")))?;
                SocketAddr::new(self.peer.ip(), port)
            } else {
                let r = self.expect("PASV", 227)?;
                let (ip, port) = parse_pasv(r.text())
                    .ok_or_else(|| ClientError::Protocol(format!("bad PASV reply '{r}'")))?;
                // Like ftplib: trust the control connection's peer address
                // over the one in the reply (NAT).
                let _ = ip;
                SocketAddr::new(self.peer.ip(), port)
            };
            let s = TcpStream::connect_timeout(&addr, self.opts.timeout)?;
            s.set_read_timeout(Some(self.opts.timeout))?;
            s.set_write_timeout(Some(self.opts.timeout))?;
            conns.push(s);
        }
        Ok(conns)
    }

    /// Downloads `path` (or `range` = (offset, length) of it) into `out`;
    /// returns the bytes received.
    pub fn get(
        &mut self,
        path: &str,
        range: Option<(u64, u64)>,
        out: &mut dyn Write,
    ) -> Result<u64, ClientError> {
        if let Some((off, len)) = range {
            self.expect(&self.rang_command(off, len), 350)?;
        }
        let conns = self.open_data()?;
        let r = self.expect(&format!("RETR {path}"), 150)?;
        let announced: u64 = r
            .lines
            .last()
            .and_then(|l| l.split(' ').nth(2))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| ClientError::Protocol(format!("bad RETR reply '{r}'")))?;
        let single = self.stack.is_plain() && self.granted == 1;
        // Plain single stream: wake up for 256 KiB at a time, never for
        // more than is still to come (the server may keep the connection).
        let marked_sock = match conns.first() {
            Some(s) if single => s.try_clone().ok(),
            _ => None,
        };
        let mut marked = marked_sock
            .as_ref()
            .map(|s| LowWater::new(s, Some(announced)));
        if !single {
            // Codec and multi-stream downloads end with the end of every
            // stream (the server closes them; this client never keeps data
            // connections open), so the bulk mark never delays a last read.
            for s in &conns {
                let _ = set_receive_low_water(s, BULK_LOW_WATER);
            }
        }
        let mut reader = DataReader::new(conns, &self.stack, &self.channel)
            .map_err(|e| ClientError::Io(e.into()))?;
        let mut total = 0u64;
        if single {
            // Exactly the announced bytes, written straight from the
            // channel's page-aligned receive buffer.
            while total < announced {
                if let Some(lw) = &mut marked {
                    lw.fit(Some(announced - total));
                }
                let max = usize::try_from(announced - total).unwrap_or(usize::MAX);
                let n = reader.write_to(out, max)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
        } else {
            // Codecs and framing end at their verified end of stream.
            // Written straight from the channel's buffers (one vectored
            // write of the frames that have arrived, or a decoded buffer).
            loop {
                let n = reader.write_to(out, usize::MAX)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
        }
        drop(reader);
        let done = self.read_reply()?;
        if done.code != 226 {
            return Err(ClientError::Server {
                command: format!("RETR {path}"),
                reply: done,
            });
        }
        if total != announced {
            return Err(ClientError::Protocol(format!(
                "server announced {announced} bytes but sent {total}"
            )));
        }
        Ok(total)
    }

    /// Uploads from `src` to `path`. `len` (when known) is sent as ALLO;
    /// `offset` writes in place at that offset (RANG/REST, no truncation);
    /// returns the bytes sent.
    pub fn put(
        &mut self,
        path: &str,
        src: &mut dyn Read,
        len: Option<u64>,
        offset: Option<u64>,
    ) -> Result<u64, ClientError> {
        self.store("STOR", path, src, len, offset)
    }

    /// Uploads the whole of `file` to `path` (ALLO with its size; `offset`
    /// as for [`put`](Client::put)). With codecs or several streams the
    /// file is mapped and the codecs read it in place
    /// ([`DataWriter::send_file`]) instead of copying it into buffers
    /// first; anything else reads it like `put`. Returns the bytes sent.
    pub fn put_file(
        &mut self,
        path: &str,
        file: &std::fs::File,
        offset: Option<u64>,
    ) -> Result<u64, ClientError> {
        let len = file.metadata()?.len();
        self.store_reply("STOR", path, Upload::File(file), Some(len), offset)
            .map(|(n, _)| n)
    }

    /// Appends `src` to `path`.
    pub fn append(&mut self, path: &str, src: &mut dyn Read) -> Result<u64, ClientError> {
        self.store("APPE", path, src, None, None)
    }

    /// Uploads a tar stream that the server unpacks below the directory
    /// `dir` (`TYPE ARCHIVE`, PROTOCOL.md section 7), then returns to
    /// normal mode. Returns the bytes sent and the server's final reply,
    /// whose text reports entries the server skipped or changed.
    pub fn put_archive(
        &mut self,
        dir: &str,
        src: &mut dyn Read,
        len: Option<u64>,
    ) -> Result<(u64, Reply), ClientError> {
        self.expect("TYPE ARCHIVE", 200)?;
        let result = self.store_reply("STOR", dir, Upload::Read(src), len, None);
        self.expect("TYPE NORMAL", 200)?;
        result
    }

    fn store(
        &mut self,
        verb: &str,
        path: &str,
        src: &mut dyn Read,
        len: Option<u64>,
        offset: Option<u64>,
    ) -> Result<u64, ClientError> {
        self.store_reply(verb, path, Upload::Read(src), len, offset)
            .map(|(n, _)| n)
    }

    fn store_reply(
        &mut self,
        verb: &str,
        path: &str,
        src: Upload<'_>,
        len: Option<u64>,
        offset: Option<u64>,
    ) -> Result<(u64, Reply), ClientError> {
        match (offset, len) {
            (Some(off), Some(l)) => {
                self.expect(&self.rang_command(off, l), 350)?;
            }
            (Some(off), None) => {
                self.expect(&format!("REST {off}"), 350)?;
            }
            (None, Some(l)) => {
                self.expect(&format!("ALLO {l}"), 200)?;
            }
            (None, None) => {}
        }
        let conns = self.open_data()?;
        self.expect(&format!("{verb} {path}"), 150)?;
        let mut w = DataWriter::new(conns, &self.stack, &self.channel)
            .map_err(|e| ClientError::Io(e.into()))?;
        let total = match src {
            // Reads straight into the channel's buffers.
            Upload::Read(r) => w.copy_from(r)?,
            Upload::File(f) => send_whole_file(&mut w, f)?,
        };
        w.finish()?;
        let done = self.read_reply()?;
        if done.code != 226 {
            return Err(ClientError::Server {
                command: format!("{verb} {path}"),
                reply: done,
            });
        }
        Ok((total, done))
    }

    /// The RANG command for `len` bytes from `offset`: an exclusive end
    /// (UFTP legacy), or an inclusive one when the server's FEAT lists
    /// `RFC_RANG`.
    pub fn rang_command(&self, offset: u64, len: u64) -> String {
        if self.features.iter().any(|f| f == "RFC_RANG") {
            format!("RANG {offset} {}", (offset + len).saturating_sub(1))
        } else {
            format!("RANG {offset} {}", offset + len)
        }
    }

    /// Whether a sync exchange runs raw on the one data connection (one
    /// stream, whatever codecs the session has: what the Java client does,
    /// PROTOCOL.md section 8) or as one complete data-channel message per
    /// direction (several streams: each side ends its message with the
    /// codec trailers and a half-close, and the data channel is used up
    /// afterwards).
    fn sync_is_raw(&self) -> bool {
        self.granted == 1
    }

    /// Opens the data channel and sends a SYNC command; sync exchanges can
    /// wait long for the other side (checksums of a big file, long runs
    /// without a match), so the data connections get no read timeout.
    fn start_sync(&mut self, cmd: &str) -> Result<Vec<TcpStream>, ClientError> {
        let conns = self.open_data()?;
        for c in &conns {
            c.set_read_timeout(None)?;
        }
        self.expect(cmd, 200)?;
        Ok(conns)
    }

    /// SYNC-TO-SERVER: makes the server's file `remote` equal to the local
    /// file `local` (this side is the leader). The server writes the new
    /// version aside and renames it over the old one when the exchange is
    /// complete; it sends no reply afterwards (PROTOCOL.md section 8), so
    /// check the result with [`hash`](Client::hash) where it matters.
    pub fn sync_to_server(
        &mut self,
        local: &Path,
        remote: &str,
    ) -> Result<sync::SyncStats, ClientError> {
        let f = std::fs::File::open(local)?;
        self.sync_to_server_from(&f, remote)
    }

    /// [`sync_to_server`](Client::sync_to_server) from any [`sync::Source`].
    pub fn sync_to_server_from(
        &mut self,
        src: &dyn sync::Source,
        remote: &str,
    ) -> Result<sync::SyncStats, ClientError> {
        let conns = self.start_sync(&format!("SYNC-TO-SERVER {remote}"))?;
        if self.sync_is_raw() {
            let sock = conns
                .first()
                .ok_or_else(|| ClientError::Protocol("no data connection".into()))?;
            let sums = sync::BlockSums::read_from(&mut &*sock)?;
            return Ok(sync::leader(&sums, src, &mut &*sock)?);
        }
        let clones = conns
            .iter()
            .map(|c| c.try_clone())
            .collect::<io::Result<Vec<_>>>()?;
        let mut reader = DataReader::new(conns, &self.stack, &self.channel)
            .map_err(|e| ClientError::Io(e.into()))?;
        let sums = sync::BlockSums::read_from(&mut reader)?;
        if !self.stack.is_plain() {
            expect_end(&mut reader, "block checksums")?;
        }
        let mut writer = DataWriter::new(clones, &self.stack, &self.channel)
            .map_err(|e| ClientError::Io(e.into()))?;
        let stats = sync::leader(&sums, src, &mut writer)?;
        writer.finish()?;
        // Only now: dropping a reader before its end breaks the streams.
        drop(reader);
        Ok(stats)
    }

    /// SYNC-TO-CLIENT: makes the local file `local` equal to the server's
    /// file `remote` (this side is the follower). The new version is
    /// written to a temporary file in the same directory and renamed over
    /// `local` only when the exchange completed; a missing `local` counts
    /// as empty.
    pub fn sync_to_client(
        &mut self,
        remote: &str,
        local: &Path,
    ) -> Result<sync::SyncStats, ClientError> {
        let old = match std::fs::File::open(local) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let dir = match local.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = local.file_name().ok_or_else(|| {
            ClientError::Protocol(format!("{}: not a file name", local.display()))
        })?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let tmp = dir.join(format!(
            ".{}.uftp-sync-{}-{nanos}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        let result = match &old {
            Some(f) => self.sync_to_client_into(remote, f, &mut out),
            None => self.sync_to_client_into(remote, &Vec::new(), &mut out),
        };
        let result = result.and_then(|stats| {
            out.sync_all()?;
            if let Some(f) = &old {
                out.set_permissions(f.metadata()?.permissions())?;
            }
            std::fs::rename(&tmp, local)?;
            Ok(stats)
        });
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// [`sync_to_client`](Client::sync_to_client) with the old copy from
    /// any [`sync::Source`] and the new version written to `out`.
    pub fn sync_to_client_into(
        &mut self,
        remote: &str,
        old: &dyn sync::Source,
        out: &mut dyn Write,
    ) -> Result<sync::SyncStats, ClientError> {
        let size = old.size()?;
        let sums = sync::BlockSums::compute(&mut *old.open_at(0)?, sync::default_block_size(size))?;
        let conns = self.start_sync(&format!("SYNC-TO-CLIENT {remote}"))?;
        if self.sync_is_raw() {
            let sock = conns
                .first()
                .ok_or_else(|| ClientError::Protocol("no data connection".into()))?;
            sums.write_to(&mut &*sock)?;
            let mut input = BufReader::with_capacity(256 * 1024, sock);
            return Ok(sync::follower(&sums, old, &mut input, out)?);
        }
        let clones = conns
            .iter()
            .map(|c| c.try_clone())
            .collect::<io::Result<Vec<_>>>()?;
        let mut writer = DataWriter::new(clones, &self.stack, &self.channel)
            .map_err(|e| ClientError::Io(e.into()))?;
        sums.write_to(&mut writer)?;
        writer.finish()?;
        let mut reader = DataReader::new(conns, &self.stack, &self.channel)
            .map_err(|e| ClientError::Io(e.into()))?;
        let stats = sync::follower(&sums, old, &mut reader, out)?;
        if !self.stack.is_plain() {
            expect_end(&mut reader, "sync records")?;
        }
        Ok(stats)
    }

    /// Ends the session.
    pub fn quit(mut self) -> Result<(), ClientError> {
        match self.command("QUIT") {
            Ok(r) if r.code == 221 => Ok(()),
            Ok(r) => Err(ClientError::Server {
                command: "QUIT".into(),
                reply: r,
            }),
            // UFTPD 3.x closes the connection on QUIT without a reply.
            Err(ClientError::Closed) => Ok(()),
            Err(ClientError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// Reads a data channel to its verified end, which must come right after
/// the message just read.
fn expect_end(reader: &mut DataReader, what: &str) -> Result<(), ClientError> {
    let mut b = [0u8; 1];
    match reader.read(&mut b)? {
        0 => Ok(()),
        _ => Err(ClientError::Protocol(format!(
            "unexpected data after the {what}"
        ))),
    }
}

/// Parses `Entering Passive Mode (h1,h2,h3,h4,p1,p2)`.
pub fn parse_pasv(text: &str) -> Option<(IpAddr, u16)> {
    let start = text.find('(')? + 1;
    let end = text[start..].find(')')? + start;
    let nums: Vec<u8> = text[start..end]
        .split(',')
        .map(|s| s.trim().parse::<u8>())
        .collect::<Result<_, _>>()
        .ok()?;
    if nums.len() != 6 {
        return None;
    }
    let ip = IpAddr::from([nums[0], nums[1], nums[2], nums[3]]);
    Some((ip, u16::from(nums[4]) << 8 | u16::from(nums[5])))
}

/// Parses `Entering Extended Passive Mode (|||port|)`.
pub fn parse_epsv(text: &str) -> Option<u16> {
    let start = text.find("(|||")? + 4;
    let end = text[start..].find('|')? + start;
    text[start..end].parse().ok()
}

/// What an upload reads: any reader, or a file that may be mapped.
enum Upload<'a> {
    Read(&'a mut dyn Read),
    File(&'a std::fs::File),
}

/// Sends `file` from its current position to its end: mapped where the
/// channel can ([`DataWriter::send_file`]), read otherwise; anything
/// appended to the file meanwhile is read after the mapped part.
fn send_whole_file(w: &mut DataWriter, file: &std::fs::File) -> io::Result<u64> {
    use std::os::fd::AsFd;
    let mapped = match w.send_file(file.as_fd(), u64::MAX) {
        Ok(n) => n.unwrap_or(0),
        Err(uftp_datachannel::SendFileError::Channel(e)) => return Err(e),
        // The file could not be mapped after part of it was sent.
        Err(uftp_datachannel::SendFileError::File(e)) => {
            return Err(io::Error::new(
                e.kind(),
                format!("reading the local file: {e}"),
            ));
        }
        Err(e) => return Err(io::Error::other(e)),
    };
    Ok(mapped + w.copy_from(&mut &*file)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_parsers() {
        assert_eq!(
            parse_pasv("Entering Passive Mode (127,0,0,1,4,1)"),
            Some((IpAddr::from([127, 0, 0, 1]), 1025))
        );
        assert_eq!(parse_pasv("Entering Passive Mode (1,2,3)"), None);
        assert_eq!(
            parse_epsv("Entering Extended Passive Mode (|||5000|)"),
            Some(5000)
        );
        let f = FileInfo::parse_stat_line(" -rw- 42 1700000000000 a file.txt").expect("line");
        assert_eq!(f.name, "a file.txt");
        assert_eq!(f.size, 42);
        assert!(!f.is_dir);
        assert!(FileInfo::parse_stat_line("garbage").is_none());
    }

    /// A server that greets, accepts any login and lists `features`.
    fn fake_server(features: &'static [&'static str]) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        std::thread::spawn(move || {
            let Ok((s, _)) = l.accept() else { return };
            let mut w = s.try_clone().expect("clone");
            let mut r = BufReader::new(s);
            let _ = w.write_all(b"220 UFTPD 3.5.0, fake\r\n");
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                let reply = match line.split(' ').next().unwrap_or("").trim() {
                    "USER" => "331 Please specify the password\r\n".to_string(),
                    "PASS" => "230 Login successful\r\n".to_string(),
                    "FEAT" => {
                        let mut f = String::from("211-Features:\r\n");
                        for x in features {
                            f.push_str(&format!(" {x}\r\n"));
                        }
                        f + "211 END\r\n"
                    }
                    _ => "221 Goodbye\r\n".to_string(),
                };
                let _ = w.write_all(reply.as_bytes());
                line.clear();
            }
        });
        addr
    }

    #[test]
    fn rang_ends_follow_feat() {
        let legacy = fake_server(&["PASV", "RANG STREAM"]);
        let c = Client::connect(&legacy, "s", ClientOptions::default()).expect("login");
        assert_eq!(c.rang_command(10, 90), "RANG 10 100", "exclusive end");
        let rfc = fake_server(&["PASV", "RFC_RANG"]);
        let c = Client::connect(&rfc, "s", ClientOptions::default()).expect("login");
        assert_eq!(c.rang_command(10, 90), "RANG 10 99", "inclusive end");
    }

    fn ext_opts(algo: Option<&str>, key: usize, compress: Compression) -> ClientOptions {
        ClientOptions {
            key: (key > 0).then(|| vec![3u8; key]),
            algo: algo.map(String::from),
            compress,
            ..ClientOptions::default()
        }
    }

    /// What stream 0 of `opts`'s codec stack puts on the wire for `data`.
    fn encoded(opts: &ClientOptions, data: &[u8]) -> Vec<u8> {
        let stack = codec_stack(opts).expect("codec stack");
        let mut wire = Vec::new();
        {
            let sink = Box::new(codec_api::PlainSink::new(&mut wire));
            let mut enc = stack.encoder(0, 1, sink).expect("encoder");
            enc.write_all(data).expect("write");
            enc.finish().expect("finish");
        }
        wire
    }

    #[test]
    fn gzip_level_reaches_the_encoder() {
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("line {} of {} ", i % 97, i % 13).into_bytes())
            .collect();
        let at = |level: u32, key: usize| {
            let opts = ClientOptions {
                gzip_level: level,
                ..ext_opts(None, key, Compression::Gzip)
            };
            encoded(&opts, &text).len()
        };
        assert_eq!(ClientOptions::default().gzip_level, DEFAULT_GZIP_LEVEL);
        // Level 0 stores, 1 and 9 compress, 9 at least as well as 1.
        assert!(at(0, 0) > text.len(), "level 0 stores");
        assert!(at(9, 0) <= at(1, 0), "level 9 vs 1");
        assert!(at(1, 0) < text.len() / 2, "level 1 compresses");
        // Inside AES (32-byte key: IV + AES-128), the level still applies.
        assert!(at(0, 32) > text.len() && at(1, 32) < text.len() / 2);
        let bad = ClientOptions {
            gzip_level: 10,
            ..ext_opts(None, 0, Compression::Gzip)
        };
        assert!(codec_stack(&bad).is_err(), "level 10 accepted");
    }

    #[test]
    fn zstd_level_reaches_the_encoder() {
        // words drawn by an LCG: text with matches near and far, where
        // the levels differ
        let mut x = 1u32;
        let text: Vec<u8> = (0..150_000)
            .flat_map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                format!("w{} ", (x >> 16) % 3000).into_bytes()
            })
            .collect();
        let at = |level: i32, key: usize| {
            let opts = ClientOptions {
                zstd_level: level,
                ..ext_opts(None, key, Compression::Zstd)
            };
            encoded(&opts, &text).len()
        };
        assert_eq!(ClientOptions::default().zstd_level, DEFAULT_ZSTD_LEVEL);
        // The fast modes trade ratio for speed: -7 makes more bytes than 1,
        // and 19 no more than 1; every level compresses this text.
        let (fast, one, max) = (at(-7, 0), at(1, 0), at(19, 0));
        assert!(fast > one && max <= one, "-7: {fast}, 1: {one}, 19: {max}");
        assert!(fast < text.len(), "level -7 compresses");
        // Inside AES (32-byte key: IV + AES-128), the level still applies.
        assert!(at(-7, 32) > at(1, 32));
        for level in [-8, 20] {
            let bad = ClientOptions {
                zstd_level: level,
                ..ext_opts(None, 0, Compression::Zstd)
            };
            assert!(codec_stack(&bad).is_err(), "level {level} accepted");
        }
    }

    #[test]
    fn debug_hides_the_key() {
        let o = ext_opts(Some(CHACHA20_POLY1305), 32, Compression::Zstd);
        let s = format!("{o:?}");
        assert!(
            s.contains("32 bytes, redacted") && !s.contains("3, 3"),
            "{s}"
        );
    }

    #[test]
    fn stacks_for_options() {
        let d = |o: &ClientOptions| codec_stack(o).map(|s| s.describe());
        let o = ext_opts(None, 0, Compression::None);
        assert_eq!(d(&o).expect("plain"), "plain");
        let o = ext_opts(Some("AES"), 48, true.into());
        assert_eq!(d(&o).expect("legacy"), "AES+gzip");
        let o = ext_opts(Some("chacha20-poly1305"), 32, Compression::Zstd);
        assert_eq!(d(&o).expect("ext"), "CHACHA20-POLY1305+zstd");
        let o = ext_opts(Some(CHACHA20_POLY1305), 32, Compression::Gzip);
        assert_eq!(d(&o).expect("chacha gzip"), "CHACHA20-POLY1305+gzip");
        let o = ext_opts(Some(CHACHA20_POLY1305), 48, Compression::None);
        assert!(d(&o).is_err(), "48-byte key");
        assert_eq!("ZSTD".parse::<Compression>(), Ok(Compression::Zstd));
        assert_eq!("true".parse::<Compression>(), Ok(Compression::Gzip));
        assert!("lz4".parse::<Compression>().is_err());
    }

    #[test]
    fn extensions_need_feat() {
        let old = fake_server(&["PASV", "CRYPTED-AES"]);
        let e = Client::connect(&old, "s", ext_opts(None, 0, Compression::Zstd))
            .expect_err("zstd without FEAT");
        assert!(e.to_string().contains("COMPRESS zstd"), "{e}");
        let old = fake_server(&["PASV"]);
        let e = Client::connect(
            &old,
            "s",
            ext_opts(Some(CHACHA20_POLY1305), 32, Compression::None),
        )
        .expect_err("chacha without FEAT");
        assert!(e.to_string().contains("CRYPTED-CHACHA20-POLY1305"), "{e}");
        let new = fake_server(&["PASV", "CRYPTED-CHACHA20-POLY1305", "COMPRESS zstd"]);
        Client::connect(
            &new,
            "s",
            ext_opts(Some(CHACHA20_POLY1305), 32, Compression::Zstd),
        )
        .expect("offered");
        // legacy options never look at FEAT for their codecs
        let old = fake_server(&["PASV"]);
        Client::connect(&old, "s", ext_opts(Some("AES"), 32, Compression::Gzip)).expect("legacy");
    }
}
