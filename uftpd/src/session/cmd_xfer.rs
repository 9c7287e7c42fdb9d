//! Data-channel commands: PASV, EPSV, RANG, REST, ALLO, RETR, STOR, APPE,
//! LIST, NLST, MLSD, and HASH (which reads the file but answers on the
//! control channel).

use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime};

use digest::Digest;
use storage_api::{LayoutHints, WriteMode};
use uftp_datachannel::{ChannelOptions, DataReader, DataWriter};

use super::transfer::{self, Params, RateLimiter, TransferError};
use super::{CmdError, CmdResult, Flow, HashAlgo, Session, listing, paths};
use crate::logging::usage_rate;
use crate::request::AccessLevel;

/// How a directory listing is formatted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStyle {
    /// LIST: `ls -l` lines.
    Ls,
    /// NLST: names only.
    Names,
    /// MLSD: machine-readable facts.
    Mlsd,
}

/// Progress lines while hashing big files keep clients from timing out.
const HASH_KEEPALIVE: Duration = Duration::from_secs(30);

fn parse_u64(what: &str, s: &str) -> Result<u64, CmdError> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| CmdError::new(501, format!("Argument syntax error: invalid {what} '{s}'")))
}

impl Session {
    pub(super) fn rate_limiter(&self) -> Option<RateLimiter> {
        (self.opts.rate_limit > 0).then(|| RateLimiter::new(self.opts.rate_limit))
    }

    /// Ends a transfer: resets the range and closes the data channel unless
    /// KEEP-ALIVE keeps it (and the transfer left it usable).
    fn end_transfer(&mut self, keep_data: bool) {
        self.range = super::Range::default();
        if !(keep_data && self.opts.keep_alive) {
            self.data.close();
        }
    }

    fn log_usage(&self, sent: bool, bytes: u64, started: Instant) {
        tracing::info!(
            "USAGE [{} 1 file(s)] [{} bytes] [{}] [{}]",
            if sent { "Sent" } else { "Received" },
            bytes,
            usage_rate(bytes, started.elapsed().as_secs_f64()),
            self.identity.user
        );
    }

    pub(super) fn pasv(&mut self) -> CmdResult {
        let ip = match (self.settings.advertise_host, self.data.local_ip()) {
            (Some(a), _) => a,
            (None, IpAddr::V4(v4)) => v4,
            (None, IpAddr::V6(_)) => {
                return Err(CmdError::new(
                    500,
                    "PASV needs an IPv4 address: use EPSV on IPv6 connections",
                ));
            }
        };
        let port = self.data.listen()?;
        let o = ip.octets();
        let line = format!(
            "227 Entering Passive Mode ({},{},{},{},{},{})",
            o[0],
            o[1],
            o[2],
            o[3],
            port >> 8,
            port & 0xff
        );
        self.ok_reply(&line)
    }

    pub(super) fn epsv(&mut self, arg: &str) -> CmdResult {
        if arg.trim().eq_ignore_ascii_case("ALL") {
            return self.ok_reply("200 OK");
        }
        let port = self.data.listen()?;
        self.ok_reply(&format!("229 Entering Extended Passive Mode (|||{port}|)"))
    }

    pub(super) fn rang(&mut self, arg: &str) -> CmdResult {
        let mut it = arg.split_whitespace();
        let (Some(a), b, None) = (it.next(), it.next(), it.next()) else {
            return Err(CmdError::new(
                501,
                "Argument syntax error: RANG <start> [<end>]",
            ));
        };
        let start = parse_u64("start", a)?;
        let Some(b) = b else {
            // One argument (the Python server's copy client): start..EOF.
            self.range = super::Range {
                offset: start,
                length: None,
                have_range: true,
            };
            return self.ok_reply(&format!("350 Restarting at {start}."));
        };
        let end = parse_u64("end", b)?;
        if start == 1 && end == 0 {
            self.range = super::Range::default();
            return self.ok_reply("350 Resetting range");
        }
        if end < start {
            return Err(CmdError::new(
                501,
                format!("Argument syntax error: end {end} before start {start}"),
            ));
        }
        self.range = super::Range {
            offset: start,
            length: Some(end - start),
            have_range: true,
        };
        self.ok_reply(&format!(
            "350 Restarting at {start}. End byte range at {end}"
        ))
    }

    pub(super) fn rest(&mut self, arg: &str) -> CmdResult {
        let n = parse_u64("offset", arg)?;
        self.range = super::Range {
            offset: n,
            length: None,
            have_range: false,
        };
        self.ok_reply(&format!("350 Restarting at {n}."))
    }

    pub(super) fn allo(&mut self, arg: &str) -> CmdResult {
        self.require(AccessLevel::Write)?;
        // "ALLO <n> [R <m>]": only the first number matters.
        let first = arg.split_whitespace().next().unwrap_or("");
        let n = parse_u64("length", first)?;
        self.range.length = Some(n);
        self.ok_reply(&format!(
            "200 OK Will read up to {n} bytes from data connection."
        ))
    }

    /// Whether the next transfer can use the socket directly: one stream,
    /// no codecs (zero-copy, KEEP-ALIVE possible).
    fn direct(&self) -> bool {
        self.data.streams == 1 && self.stack.is_plain()
    }

    /// Whether the next transfer of a known length runs over plain
    /// multi-stream connections that KEEP-ALIVE keeps open afterwards.
    fn kept(&self) -> bool {
        self.opts.keep_alive && self.data.streams > 1 && self.stack.is_plain()
    }

    /// The open connections of a kept multi-stream channel.
    fn kept_connections(&mut self) -> Result<&mut Vec<TcpStream>, TransferError> {
        self.data
            .connections()
            .map_err(|e| TransferError::Network(io::Error::other(e.to_string())))
    }

    /// Makes sure the data channel is complete before the 150 reply.
    fn ready_data(&mut self) -> Result<(), CmdError> {
        if let Err(e) = self.data.connections() {
            self.range = super::Range::default();
            return Err(e.into());
        }
        Ok(())
    }

    fn channel_writer(&mut self) -> Result<DataWriter, CmdError> {
        let conns = self.data.take();
        DataWriter::new(conns, &self.stack, &ChannelOptions::default()).map_err(|e| {
            self.range = super::Range::default();
            CmdError::new(500, format!("Cannot open data channel: {e}"))
        })
    }

    fn channel_reader(&mut self) -> Result<DataReader, CmdError> {
        let conns = self.data.take();
        DataReader::new(conns, &self.stack, &ChannelOptions::default()).map_err(|e| {
            self.range = super::Range::default();
            CmdError::new(500, format!("Cannot open data channel: {e}"))
        })
    }

    pub(super) fn retr(&mut self, arg: &str) -> CmdResult {
        self.require(AccessLevel::Read)?;
        let r = self.target(arg, false)?;
        let st = self.storage.stat(&r.rel)?;
        if st.is_dir() {
            return Err(CmdError::new(550, format!("{}: is a directory", r.abs)));
        }
        let (offset, len) = self.range.for_read(st.size);
        let mut file = self.storage.open_read(&r.rel, offset)?;
        self.ready_data()?;
        if self
            .ctl
            .reply(&format!("150 OK {len} bytes available for reading."))
            .is_err()
        {
            return Ok(Flow::Quit);
        }
        let direct = self.direct();
        let kept = self.kept();
        let mut channel = if direct || kept {
            None
        } else {
            Some(self.channel_writer()?)
        };
        let started = Instant::now();
        let mut limiter = self.rate_limiter();
        let params = Params {
            buffer_size: self.opts.file_read_buffer,
            zero_copy: self.opts.sendfile,
            rate: limiter.as_mut(),
        };
        let result = match channel.as_mut() {
            Some(w) => transfer::send_to_channel(file.as_mut(), len, w, params),
            None if kept => match self.kept_connections() {
                Ok(conns) => transfer::send_kept(file.as_mut(), len, conns, params.rate),
                Err(e) => Err(e),
            },
            None => match self.data.first() {
                Ok(sock) => transfer::send_file(file.as_mut(), len, sock, params),
                Err(e) => Err(TransferError::Network(e)),
            },
        };
        drop(file);
        // Codec trailers and the end of a multi-stream channel.
        let result = match (result, channel) {
            (Ok(n), Some(w)) => w.finish().map(|_| n).map_err(TransferError::Network),
            (r, _) => r,
        };
        match result {
            Ok(n) if n == len => {
                self.log_usage(true, n, started);
                self.end_transfer(direct || kept);
                self.ok_reply("226 File transfer successful")
            }
            Ok(n) => {
                self.end_transfer(false);
                Err(CmdError::new(
                    500,
                    format!(
                        "{}: file shrank while reading, sent {n} of {len} bytes",
                        r.abs
                    ),
                ))
            }
            Err(e) => {
                tracing::info!("RETR {} by '{}' failed: {e}", r.abs, self.identity.user);
                self.end_transfer(false);
                Err(transfer_error(e))
            }
        }
    }

    pub(super) fn stor(&mut self, arg: &str, append: bool) -> CmdResult {
        self.require(AccessLevel::Write)?;
        if arg.trim().is_empty() {
            return Err(CmdError::new(501, "Argument syntax error: missing path"));
        }
        let r = self.target(arg, true)?;
        let range = self.range;
        let (mode, limit) = if append {
            (WriteMode::Append, range.length)
        } else if range.have_range || range.offset > 0 {
            // RANG or REST: write in place, never truncate.
            (WriteMode::At(range.offset), range.length)
        } else {
            (WriteMode::Truncate, range.length)
        };
        let hints = LayoutHints {
            expected_size: limit,
            streams: self.data.streams as u32,
        };
        let mut file = self.storage.open_write(&r.rel, mode, &hints)?;
        self.ready_data()?;
        if self.ctl.reply("150 OK").is_err() {
            return Ok(Flow::Quit);
        }
        // Built after the 150: a decoder may wait for the first bytes.
        let direct = self.direct();
        // KEEP-ALIVE with several plain streams: exactly the announced
        // length, connections kept (without a length the client ends the
        // data by closing, as always)
        let kept = if self.kept() { limit } else { None };
        let mut channel = if direct || kept.is_some() {
            None
        } else {
            Some(self.channel_reader()?)
        };
        let started = Instant::now();
        let mut limiter = self.rate_limiter();
        let params = Params {
            buffer_size: self.opts.file_write_buffer,
            zero_copy: self.opts.sendfile,
            rate: limiter.as_mut(),
        };
        let result = match (channel.as_mut(), kept) {
            // Codec and multi-stream data always runs to its verified end.
            (Some(reader), _) => {
                transfer::receive_from_channel(reader, file.as_mut(), limit, params)
            }
            (None, Some(len)) => match self.kept_connections() {
                Ok(conns) => transfer::receive_kept(conns, file.as_mut(), len, params.rate),
                Err(e) => Err(e),
            },
            (None, None) => match self.data.first() {
                Ok(sock) => transfer::receive_file(sock, file.as_mut(), limit, params),
                Err(e) => Err(TransferError::Network(e)),
            },
        };
        drop(channel);
        match result {
            Ok(n) => {
                if let Some(want) = limit
                    && n < want
                {
                    self.end_transfer(false);
                    return Err(CmdError::new(
                        500,
                        format!(
                            "data connection closed after {n} of {want} bytes; {} is incomplete",
                            r.abs
                        ),
                    ));
                }
                if let Err(e) = file.finish() {
                    self.end_transfer(false);
                    return Err(e.into());
                }
                self.log_usage(false, n, started);
                // Unknown length: the client closed its side to end the data.
                self.end_transfer((direct || kept.is_some()) && limit.is_some());
                self.ok_reply("226 File transfer successful")
            }
            Err(e) => {
                tracing::info!("STOR {} by '{}' failed: {e}", r.abs, self.identity.user);
                self.end_transfer(false);
                Err(transfer_error(e))
            }
        }
    }

    pub(super) fn list(&mut self, arg: &str, style: ListStyle) -> CmdResult {
        self.require(AccessLevel::Info)?;
        // ls-style options ("-a", "-la") are accepted and ignored.
        let path = arg
            .split(' ')
            .filter(|t| !t.is_empty())
            .skip_while(|t| t.starts_with('-'))
            .collect::<Vec<_>>()
            .join(" ");
        let path = if path.is_empty() {
            ".".to_string()
        } else {
            path
        };
        let text = match self.listing_text(&path, style) {
            Ok(t) => t,
            Err(e) => {
                self.data.close();
                return Err(e);
            }
        };
        self.ready_data()?;
        if self.ctl.reply("150 OK").is_err() {
            return Ok(Flow::Quit);
        }
        let mut channel = if self.direct() {
            None
        } else {
            Some(self.channel_writer()?)
        };
        let mut limiter = self.rate_limiter();
        let result = match channel.as_mut() {
            Some(w) => w.write_all(text.as_bytes()).map_err(TransferError::Network),
            None => match self.data.first() {
                Ok(sock) => transfer::send_bytes(sock, text.as_bytes(), limiter.as_mut()),
                Err(e) => Err(TransferError::Network(e)),
            },
        };
        let result = match (result, channel) {
            (Ok(()), Some(w)) => w.finish().map_err(TransferError::Network),
            (r, _) => r,
        };
        // A listing always ends by closing the data channel.
        self.range = super::Range::default();
        self.data.close();
        match result {
            Ok(()) => self.ok_reply("226 File transfer successful"),
            Err(e) => Err(transfer_error(e)),
        }
    }

    /// The lines of a LIST/NLST/MLSD reply.
    fn listing_text(&self, path: &str, style: ListStyle) -> Result<String, CmdError> {
        let r = self.resolve(path)?;
        let st = self.storage.stat(&r.rel)?;
        let entries = if st.is_dir() {
            let mut e = self.storage.list(&r.rel)?;
            e.sort_by(|a, b| a.name.cmp(&b.name));
            e
        } else if style == ListStyle::Mlsd {
            return Err(CmdError::new(550, format!("Not a directory: {}", r.abs)));
        } else {
            vec![storage_api::DirEntry {
                name: paths::basename(&r.abs).to_string(),
                stat: st,
            }]
        };
        let now = SystemTime::now();
        let mut text = String::new();
        for e in &entries {
            match style {
                ListStyle::Ls => {
                    text.push_str(&listing::ls_line(&e.name, &e.stat, &self.identity, now))
                }
                ListStyle::Names => text.push_str(&listing::name(&e.name)),
                ListStyle::Mlsd => {
                    text.push_str(&listing::mlst_line(&e.name, &e.stat, &self.identity))
                }
            }
            text.push_str("\r\n");
        }
        Ok(text)
    }

    pub(super) fn hash(&mut self, arg: &str) -> CmdResult {
        self.require(AccessLevel::Read)?;
        let r = self.target(arg, false)?;
        let st = self.storage.stat(&r.rel)?;
        if st.is_dir() {
            return Err(CmdError::new(550, format!("{}: is a directory", r.abs)));
        }
        let (offset, len) = self.range.for_read(st.size);
        self.range = super::Range::default();
        let mut file = self.storage.open_read(&r.rel, offset)?;
        let started = Instant::now();
        let algo = self.opts.hash;
        let mut hasher: Box<dyn digest::DynDigest> = match algo {
            HashAlgo::Md5 => Box::new(md5::Md5::new()),
            HashAlgo::Sha1 => Box::new(sha1::Sha1::new()),
            HashAlgo::Sha256 => Box::new(sha2::Sha256::new()),
            HashAlgo::Sha512 => Box::new(sha2::Sha512::new()),
        };
        let mut buf = uftp_datachannel::iobuf::IoBuf::new(self.opts.file_read_buffer.max(4096));
        let mut done = 0u64;
        let mut last_note = Instant::now();
        while done < len {
            let want = usize::try_from(len - done)
                .unwrap_or(buf.len())
                .min(buf.len());
            let n = match file.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(CmdError::new(550, format!("{}: {e}", r.abs))),
            };
            hasher.update(&buf[..n]);
            done += n as u64;
            if last_note.elapsed() >= HASH_KEEPALIVE {
                if self.ctl.reply("213-").is_err() {
                    return Ok(Flow::Quit);
                }
                last_note = Instant::now();
            }
        }
        let digest = hex::encode(hasher.finalize());
        let last = (offset + done).saturating_sub(1);
        tracing::info!(
            "USAGE [{}] [{} bytes] [{}] [{}]",
            algo.name(),
            done,
            usage_rate(done, started.elapsed().as_secs_f64()),
            self.identity.user
        );
        let line = format!(
            "213 {} {}-{} {} {}",
            algo.name(),
            offset,
            last,
            digest,
            r.abs
        );
        self.ok_reply(&line)
    }
}

fn transfer_error(e: TransferError) -> CmdError {
    match e {
        TransferError::Network(e) => CmdError::new(
            500,
            format!("data connection closed, transfer aborted: {e}"),
        ),
        TransferError::File(e) => {
            let code = match storage_api::kind_of(&e) {
                storage_api::ErrorKind::NoSpace => 552,
                _ => 500,
            };
            CmdError::new(code, format!("local error in processing: {e}"))
        }
    }
}
