//! SYNC-TO-CLIENT and SYNC-TO-SERVER: the rsync-style exchange of
//! PROTOCOL.md section 8 on the open data channel, with the algorithm of
//! [`uftp_client::sync`].
//!
//! How the exchange uses the data channel:
//!
//! * one stream and no codecs (what the Java client does, always with one
//!   stream): raw on the socket, no read timeout while it runs, and the
//!   connection stays open afterwards, as UFTPD 3.x leaves it;
//! * several streams or codecs (key, compress): each direction is one
//!   complete data-channel message like a RETR or STOR (multi-stream
//!   framing, codecs), ended by its trailers and a half-close: the
//!   follower's checksums first, then the leader's records. A side reads
//!   the other's message to its verified end when codecs are in use. The
//!   data channel is used up and closed afterwards. (UFTPD 3.x did not
//!   interoperate with the Java client here either: it encrypted what
//!   Java sent raw.)
//!
//! The server is the follower for SYNC-TO-SERVER: it writes the new version
//! into a temporary file next to the target and renames it over the old
//! one only when the end record arrived; anything else deletes the
//! temporary file and leaves the old version as it was. After the `200 OK`
//! no reply follows (clients do not read one): failures are logged and
//! the data channel is closed.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use storage_api::{ErrorKind, LayoutHints, Storage, WriteMode};
use uftp_client::sync::{self, BlockSums, SyncError, SyncStats};
use uftp_datachannel::{ChannelOptions, DataReader, DataWriter};

use super::transfer::{Paced, RateLimiter};
use super::{CmdError, CmdResult, Flow, Resolved, Session};
use crate::logging::usage_rate;
use crate::request::AccessLevel;

/// A file of the session's storage as a [`sync::Source`].
struct StorageSource<'a> {
    storage: &'a dyn Storage,
    rel: &'a Path,
    size: u64,
}

impl sync::Source for StorageSource<'_> {
    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }

    fn open_at(&self, offset: u64) -> io::Result<Box<dyn Read + '_>> {
        let r = self
            .storage
            .open_read(self.rel, offset)
            .map_err(io::Error::other)?;
        Ok(Box::new(r))
    }
}

/// A temporary name next to `rel`: `.<name>.uftpd-sync.<random>`.
pub(super) fn temp_name(rel: &Path, tag: &str) -> PathBuf {
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = format!(".{name}.uftpd-{tag}.{:016x}", rand::random::<u64>());
    match rel.parent() {
        Some(p) => p.join(file),
        None => PathBuf::from(file),
    }
}

/// How long a silent peer may stall a raw sync before TCP keepalive
/// probes start (a dead peer is detected a few minutes later).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(120);

fn keepalive(sock: &TcpStream) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(Duration::from_secs(30))
        .with_retries(4);
    let _ = socket2::SockRef::from(sock).set_tcp_keepalive(&ka);
}

/// The data channel of one sync exchange.
enum Channel {
    /// The one plain connection, left open afterwards.
    Raw(TcpStream),
    /// Streams with framing and/or codecs, consumed by the exchange.
    Coded(Vec<TcpStream>),
}

impl Session {
    /// Readies the data channel for a sync exchange (before the 200).
    fn sync_channel(&mut self) -> Result<Channel, CmdError> {
        self.ready_data_for_sync()?;
        // One stream: raw, whatever codecs the session has, as the Java
        // client runs it (PROTOCOL section 8); codecs apply to several
        // streams only.
        let raw = self.data.streams == 1;
        if raw {
            if !self.stack.is_plain() {
                tracing::info!(
                    "Sync on a one-stream session with {}: the exchange runs without it, \
                     as the Java client expects",
                    self.stack.describe()
                );
            }
            let conns = self.data.connections()?;
            let sock = conns
                .first()
                .ok_or_else(|| CmdError::new(500, "No data connection"))?
                .try_clone()
                .map_err(|e| CmdError::new(500, format!("Cannot use data connection: {e}")))?;
            return Ok(Channel::Raw(sock));
        }
        let conns = self.data.take();
        Ok(Channel::Coded(conns))
    }

    fn ready_data_for_sync(&mut self) -> Result<(), CmdError> {
        if let Err(e) = self.data.connections() {
            return Err(e.into());
        }
        for c in self.data.connections()?.iter() {
            // Like the Java client: no read timeout while syncing (the
            // other side may compute for a long time), keepalive instead.
            let _ = c.set_read_timeout(None);
            keepalive(c);
        }
        Ok(())
    }

    /// Ends a sync: the raw connection gets its timeout back and stays;
    /// after a failure, or a coded exchange, the data channel is closed.
    fn end_sync(&mut self, raw_ok: bool) {
        self.range = super::Range::default();
        if raw_ok {
            if let Ok(conns) = self.data.connections() {
                for c in conns.iter() {
                    let _ = c.set_read_timeout(Some(super::data::DATA_IO_TIMEOUT));
                }
            }
        } else {
            self.data.close();
        }
    }

    fn log_sync(&self, verb: &str, path: &str, stats: &SyncStats, started: Instant) {
        let secs = started.elapsed().as_secs_f64();
        let (dir, bytes) = if verb == "SYNC-TO-CLIENT" {
            ("Sent", stats.bytes_sent)
        } else {
            ("Received", stats.bytes_received)
        };
        tracing::info!(
            "USAGE [{dir} 1 file(s)] [{bytes} bytes] [{}] [{}]",
            usage_rate(bytes, secs),
            self.identity.user
        );
        tracing::info!("{verb} {path} by '{}': {stats}", self.identity.user);
    }

    /// SYNC-TO-CLIENT: the server has the new version (leader).
    pub(super) fn sync_to_client(&mut self, arg: &str) -> CmdResult {
        self.require(AccessLevel::Read)?;
        if arg.trim().is_empty() {
            return Err(CmdError::new(501, "Argument syntax error: missing path"));
        }
        let r = self.target(arg, false)?;
        let st = self.storage.stat(&r.rel)?;
        if st.is_dir() {
            return Err(CmdError::new(550, format!("{}: is a directory", r.abs)));
        }
        // Readable and a regular file? Refused before the 200, not in the
        // middle of the exchange.
        drop(self.storage.open_read(&r.rel, 0)?);
        let channel = self.sync_channel()?;
        if self.ctl.reply("200 OK").is_err() {
            return Ok(Flow::Quit);
        }
        let started = Instant::now();
        let src = StorageSource {
            storage: self.storage.as_ref(),
            rel: &r.rel,
            size: st.size,
        };
        let stack = self.stack.clone();
        let mut limiter = self.rate_limiter();
        let result = match channel {
            Channel::Raw(sock) => {
                let sums = BlockSums::read_from(&mut &sock);
                sums.and_then(|sums| {
                    sync::leader(&sums, &src, &mut Paced::new(&sock, limiter.as_mut()))
                })
                .map(|s| (s, true))
            }
            Channel::Coded(conns) => {
                leader_coded(conns, &stack, &src, limiter.as_mut()).map(|s| (s, false))
            }
        };
        self.finish_sync("SYNC-TO-CLIENT", &r, result, started)
    }

    /// SYNC-TO-SERVER: the server has the old version (follower). A missing
    /// file counts as empty.
    pub(super) fn sync_to_server(&mut self, arg: &str) -> CmdResult {
        self.require(AccessLevel::Write)?;
        if arg.trim().is_empty() {
            return Err(CmdError::new(501, "Argument syntax error: missing path"));
        }
        let r = self.target(arg, true)?;
        let old = match self.storage.stat(&r.rel) {
            Ok(st) if st.is_dir() => {
                return Err(CmdError::new(550, format!("{}: is a directory", r.abs)));
            }
            Ok(st) => Some(st),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        if old.is_some() {
            // Readable? (The old copy is read for the checksums.)
            drop(self.storage.open_read(&r.rel, 0)?);
        }
        let tmp = temp_name(&r.rel, "sync");
        let hints = LayoutHints {
            expected_size: old.as_ref().map(|s| s.size),
            streams: self.data.streams as u32,
        };
        let out = self.storage.open_write(&tmp, WriteMode::Truncate, &hints)?;
        let channel = match self.sync_channel() {
            Ok(c) => c,
            Err(e) => {
                drop(out);
                let _ = self.storage.unlink(&tmp);
                return Err(e);
            }
        };
        if self.ctl.reply("200 OK").is_err() {
            drop(out);
            let _ = self.storage.unlink(&tmp);
            return Ok(Flow::Quit);
        }
        let started = Instant::now();
        let stack = self.stack.clone();
        let mut limiter = self.rate_limiter();
        let old_size = old.as_ref().map(|s| s.size).unwrap_or(0);
        let result = {
            let empty: Vec<u8> = Vec::new();
            let src = StorageSource {
                storage: self.storage.as_ref(),
                rel: &r.rel,
                size: old_size,
            };
            let old_src: &dyn sync::Source = if old.is_some() { &src } else { &empty };
            let mut out = out;
            let run = (|| {
                let sums = {
                    let mut rd = old_src.open_at(0).map_err(SyncError::File)?;
                    BlockSums::compute(&mut rd, sync::default_block_size(old_size))?
                };
                let r = match channel {
                    Channel::Raw(sock) => {
                        sums.write_to(&mut &sock).map_err(SyncError::Channel)?;
                        let mut input = io::BufReader::with_capacity(
                            256 * 1024,
                            Paced::new(&sock, limiter.as_mut()),
                        );
                        sync::follower(&sums, old_src, &mut input, &mut out).map(|s| (s, true))
                    }
                    Channel::Coded(conns) => {
                        follower_coded(conns, &stack, &sums, old_src, &mut out, limiter.as_mut())
                            .map(|s| (s, false))
                    }
                }?;
                Ok::<_, SyncError>(r)
            })();
            match run {
                Ok(r) => out
                    .finish()
                    .map(|()| r)
                    .map_err(|e| SyncError::File(io::Error::other(e.to_string()))),
                Err(e) => Err(e),
            }
        };
        // Commit: the new version replaces the old one only now.
        let result = result.and_then(|done| {
            if let Some(st) = &old {
                // Keep the old file's permissions (without setuid/setgid).
                let _ = self.storage.set_mode(&tmp, st.mode & 0o777);
            }
            self.storage
                .rename(&tmp, &r.rel)
                .map(|()| done)
                .map_err(|e| SyncError::File(io::Error::other(e.to_string())))
        });
        if result.is_err() {
            let _ = self.storage.unlink(&tmp);
        }
        self.finish_sync("SYNC-TO-SERVER", &r, result, started)
    }

    fn finish_sync(
        &mut self,
        verb: &str,
        r: &Resolved,
        result: Result<(SyncStats, bool), SyncError>,
        started: Instant,
    ) -> CmdResult {
        match result {
            Ok((stats, raw)) => {
                self.log_sync(verb, &r.abs, &stats, started);
                self.end_sync(raw);
            }
            Err(e) => {
                tracing::warn!(
                    "{verb} {} by '{}' failed: {e}{}",
                    r.abs,
                    self.identity.user,
                    if verb == "SYNC-TO-SERVER" {
                        " (the old version is unchanged)"
                    } else {
                        ""
                    }
                );
                self.end_sync(false);
            }
        }
        // PROTOCOL.md section 8: no reply after the exchange.
        Ok(Flow::Continue)
    }
}

/// Reads a coded channel to its verified end, which must follow at once.
fn expect_end(reader: &mut DataReader, what: &str) -> Result<(), SyncError> {
    let mut b = [0u8; 1];
    match reader.read(&mut b) {
        Ok(0) => Ok(()),
        Ok(_) => Err(SyncError::Protocol(format!(
            "unexpected data after the {what}"
        ))),
        Err(e) => Err(SyncError::Channel(e)),
    }
}

fn clones(conns: &[TcpStream]) -> Result<Vec<TcpStream>, SyncError> {
    conns
        .iter()
        .map(|c| c.try_clone())
        .collect::<io::Result<Vec<_>>>()
        .map_err(SyncError::Channel)
}

/// Leader over several streams and/or codecs: read the follower's message
/// (to its end when coded), then send ours and finish it.
fn leader_coded(
    conns: Vec<TcpStream>,
    stack: &uftp_datachannel::CodecStack,
    src: &dyn sync::Source,
    rate: Option<&mut RateLimiter>,
) -> Result<SyncStats, SyncError> {
    let opts = ChannelOptions::default();
    let out_conns = clones(&conns)?;
    let mut reader =
        DataReader::new(conns, stack, &opts).map_err(|e| SyncError::Channel(e.into()))?;
    let sums = BlockSums::read_from(&mut reader)?;
    if !stack.is_plain() {
        expect_end(&mut reader, "block checksums")?;
    }
    let mut writer =
        DataWriter::new(out_conns, stack, &opts).map_err(|e| SyncError::Channel(e.into()))?;
    let stats = sync::leader(&sums, src, &mut Paced::new(&mut writer, rate))?;
    writer.finish().map_err(SyncError::Channel)?;
    // Dropped only now: a reader dropped before its end breaks the streams.
    drop(reader);
    Ok(stats)
}

/// Follower over several streams and/or codecs: send the checksums as one
/// finished message, then rebuild from the leader's message.
fn follower_coded(
    conns: Vec<TcpStream>,
    stack: &uftp_datachannel::CodecStack,
    sums: &BlockSums,
    old: &dyn sync::Source,
    out: &mut dyn Write,
    rate: Option<&mut RateLimiter>,
) -> Result<SyncStats, SyncError> {
    let opts = ChannelOptions::default();
    let mut writer =
        DataWriter::new(clones(&conns)?, stack, &opts).map_err(|e| SyncError::Channel(e.into()))?;
    sums.write_to(&mut writer).map_err(SyncError::Channel)?;
    writer.finish().map_err(SyncError::Channel)?;
    let mut reader =
        DataReader::new(conns, stack, &opts).map_err(|e| SyncError::Channel(e.into()))?;
    let stats = sync::follower(sums, old, &mut Paced::new(&mut reader, rate), out)?;
    if !stack.is_plain() {
        expect_end(&mut reader, "sync records")?;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_stay_in_the_directory() {
        let t = temp_name(Path::new("a/b/file.bin"), "sync");
        assert_eq!(t.parent(), Some(Path::new("a/b")));
        let n = t.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert!(n.starts_with(".file.bin.uftpd-sync."), "{n}");
        let t = temp_name(Path::new("top"), "rcp");
        assert!(t.to_string_lossy().starts_with(".top.uftpd-rcp."));
    }
}
