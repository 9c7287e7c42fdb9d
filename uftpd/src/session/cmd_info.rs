//! Commands answered on the control channel: NOOP, FEAT, OPTS, TYPE,
//! KEEP-ALIVE, SIZE, MLST, STAT.

use super::{CmdError, CmdResult, HashAlgo, Session, listing, paths};
use crate::request::AccessLevel;

fn parse_bool(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "true" | "yes" | "1" | "on"
    )
}

fn positive(name: &str, v: &str) -> Result<u64, CmdError> {
    v.trim()
        .parse::<u64>()
        .map_err(|_| CmdError::new(501, format!("Invalid value for {name}: '{v}'")))
}

fn buffer(name: &str, v: &str) -> Result<usize, CmdError> {
    let n = positive(name, v)?;
    if !(1024..=64 << 20).contains(&n) {
        return Err(CmdError::new(
            501,
            format!("{name} must be between 1024 and {}", 64u64 << 20),
        ));
    }
    usize::try_from(n).map_err(|_| CmdError::new(501, format!("Invalid value for {name}")))
}

impl Session {
    pub(super) fn noop(&mut self, arg: &str) -> CmdResult {
        let arg = arg.trim();
        if arg.is_empty() {
            return self.ok_reply("200 OK");
        }
        let Ok(n) = arg.parse::<i64>() else {
            return self.ok_reply("200 OK");
        };
        let cap = i64::from(self.settings.max_streams.max(1));
        let granted = n.clamp(1, cap);
        self.data.negotiate(granted as usize);
        let code = if granted == n { 222 } else { 223 };
        self.ok_reply(&format!("{code} Opening {granted} data connections"))
    }

    /// The feature lines of FEAT (without the framing lines).
    pub(super) fn features(&self) -> Vec<String> {
        let mut f: Vec<String> = [
            "PASV",
            "EPSV",
            "RANG STREAM",
            "REST STREAM",
            "MFMT",
            "MLSD",
            "MLST",
            "APPE",
            "MFF Modify;UNIX.mode;",
            "KEEP-ALIVE",
            "ARCHIVE",
            "UTF-8",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(k) = &self.request.key {
            f.push(format!("CRYPTED-{}", k.algo));
        }
        // Extension: only zstd sessions list it, so the FEAT of a legacy
        // session stays as UFTPD 3.x sends it.
        if self.request.compress == crate::request::Compression::Zstd {
            f.push("COMPRESS zstd".to_string());
        }
        let hashes: Vec<String> = HashAlgo::ALL
            .iter()
            .map(|a| {
                if *a == self.opts.hash {
                    format!("{}*", a.name())
                } else {
                    a.name().to_string()
                }
            })
            .collect();
        f.push(format!("HASH {}", hashes.join(";")));
        f
    }

    pub(super) fn feat(&mut self) -> CmdResult {
        let mut lines = vec!["211-Features:".to_string()];
        lines.extend(self.features().into_iter().map(|f| format!(" {f}")));
        lines.push("211 END".into());
        self.lines_reply(&lines)
    }

    pub(super) fn opts(&mut self, arg: &str) -> CmdResult {
        let arg = arg.trim();
        if arg.is_empty() {
            let o = &self.opts;
            let lines = vec![
                "211-OPTS".to_string(),
                format!(" RATE_LIMIT {}", o.rate_limit),
                format!(" FILE_READ_BUFFER_SIZE {}", o.file_read_buffer),
                format!(" FILE_WRITE_BUFFER_SIZE {}", o.file_write_buffer),
                format!(" BUFFER_SIZE {}", o.buffer_size),
                format!(" SENDFILE_ENABLED {}", o.sendfile),
                format!(" HASH {}", o.hash.name()),
                format!(" KEEP_ALIVE {}", o.keep_alive),
                format!(" ARCHIVE {}", o.archive),
                "211 END".to_string(),
            ];
            return self.lines_reply(&lines);
        }
        let (name, value) = match arg.split_once(' ') {
            Some((n, v)) => (n.to_ascii_uppercase(), Some(v.trim())),
            None => (arg.to_ascii_uppercase(), None),
        };
        let Some(value) = value else {
            return match name.as_str() {
                "HASH" => {
                    let line = format!("200 {}", self.opts.hash.name());
                    self.ok_reply(&line)
                }
                _ => Err(CmdError::new(
                    501,
                    format!("Missing value for option '{name}'"),
                )),
            };
        };
        match name.as_str() {
            "RATE_LIMIT" => {
                let r = positive(&name, value)?;
                self.opts.rate_limit = if self.opts.initial_rate_limit > 0 {
                    if r == 0 {
                        self.opts.initial_rate_limit
                    } else {
                        r.min(self.opts.initial_rate_limit)
                    }
                } else {
                    r
                };
            }
            "FILE_READ_BUFFER_SIZE" => self.opts.file_read_buffer = buffer(&name, value)?,
            "FILE_WRITE_BUFFER_SIZE" => self.opts.file_write_buffer = buffer(&name, value)?,
            "BUFFER_SIZE" => self.opts.buffer_size = buffer(&name, value)?,
            "SENDFILE_ENABLED" => {
                self.opts.sendfile = parse_bool(value) && self.settings.use_sendfile;
            }
            "HASH" => {
                self.opts.hash = HashAlgo::parse(value).ok_or_else(|| {
                    CmdError::new(
                        501,
                        format!(
                            "Unsupported hash algorithm '{value}' (MD5, SHA-1, SHA-256, SHA-512)"
                        ),
                    )
                })?;
            }
            "KEEP_ALIVE" => self.opts.keep_alive = parse_bool(value),
            "ARCHIVE" => self.opts.archive = parse_bool(value),
            // RFC 2640 clients send this; names and paths are UTF-8 anyway.
            "UTF8" | "UTF-8" => {}
            _ => return Err(CmdError::new(500, format!("Unknown option '{name}'"))),
        }
        let line = format!("200 {name}={value}");
        self.ok_reply(&line)
    }

    pub(super) fn type_(&mut self, arg: &str) -> CmdResult {
        match arg.trim().to_ascii_uppercase().as_str() {
            "ARCHIVE" => {
                self.opts.archive = true;
                self.ok_reply("200 OK")
            }
            "NORMAL" => {
                self.opts.archive = false;
                self.ok_reply("200 OK")
            }
            _ => self.ok_reply("200 OK"),
        }
    }

    pub(super) fn keep_alive(&mut self, arg: &str) -> CmdResult {
        self.opts.keep_alive = parse_bool(arg);
        self.ok_reply("200 OK")
    }

    pub(super) fn size(&mut self, arg: &str) -> CmdResult {
        self.require(AccessLevel::Info)?;
        if arg.trim().is_empty() {
            return Err(CmdError::new(501, "Argument syntax error: missing path"));
        }
        let r = self.resolve(arg.trim_start())?;
        let st = self.storage.stat(&r.rel)?;
        let line = format!("213 {}", st.size);
        self.ok_reply(&line)
    }

    pub(super) fn mlst(&mut self, arg: &str) -> CmdResult {
        self.require(AccessLevel::Info)?;
        let arg = if arg.trim().is_empty() { "." } else { arg };
        let r = self.resolve(arg)?;
        let st = self.storage.stat(&r.rel)?;
        let name = paths::basename(&r.abs).to_string();
        let lines = [
            format!("250- Listing {}", r.abs),
            format!(" {}", listing::mlst_line(&name, &st, &self.identity)),
            "250 End".to_string(),
        ];
        self.lines_reply(&lines)
    }

    pub(super) fn stat(&mut self, arg: &str) -> CmdResult {
        self.require(AccessLevel::Info)?;
        let arg = arg.trim_start();
        let (contents, path) = match arg.split_once(' ') {
            Some(("N", p)) | Some(("n", p)) => (true, p),
            Some(("F", p)) | Some(("f", p)) => (false, p),
            _ => match arg {
                "N" | "n" => (true, ""),
                "F" | "f" => (false, ""),
                _ => (false, arg),
            },
        };
        let path = if path.trim().is_empty() { "." } else { path };
        let r = self.resolve(path)?;
        let st = self.storage.stat(&r.rel)?;
        let mut lines = vec!["211- Sending file list".to_string()];
        if contents && st.is_dir() {
            let mut entries = self.storage.list(&r.rel)?;
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            for e in entries {
                lines.push(format!(
                    " {}",
                    listing::simple_line(&e.name, &e.stat, &self.identity)
                ));
            }
        } else {
            let name = paths::basename(&r.abs).to_string();
            lines.push(format!(
                " {}",
                listing::simple_line(&name, &st, &self.identity)
            ));
        }
        lines.push("211 End of file list".into());
        self.lines_reply(&lines)
    }
}
