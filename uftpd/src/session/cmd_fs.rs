//! Directory and file-management commands: PWD, CWD, CDUP, MKD, RMD, DELE,
//! RNFR/RNTO, MFMT, MFF.

use std::time::SystemTime;

use chrono::{Local, NaiveDateTime, TimeZone};
use storage_api::Access;

use super::{CmdError, CmdResult, Session, paths};
use crate::request::AccessLevel;

/// Parses `YYYYMMDDHHMMSS` as local time.
fn parse_mdtm(s: &str) -> Result<SystemTime, CmdError> {
    let bad = || CmdError::new(501, format!("Invalid time '{s}', expected YYYYMMDDHHMMSS"));
    let s = s.trim();
    // Fractional seconds (YYYYMMDDHHMMSS.sss) are accepted and dropped.
    let main = s.split('.').next().unwrap_or(s);
    if main.len() != 14 || !main.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let naive = NaiveDateTime::parse_from_str(main, "%Y%m%d%H%M%S").map_err(|_| bad())?;
    let local = Local
        .from_local_datetime(&naive)
        .earliest()
        .ok_or_else(bad)?;
    Ok(SystemTime::from(local))
}

fn need_arg(arg: &str) -> Result<&str, CmdError> {
    if arg.trim().is_empty() {
        Err(CmdError::new(501, "Argument syntax error: missing path"))
    } else {
        Ok(arg)
    }
}

impl Session {
    pub(super) fn pwd(&mut self) -> CmdResult {
        self.require(AccessLevel::Info)?;
        let line = format!("257 \"{}\"", self.cwd);
        self.ok_reply(&line)
    }

    pub(super) fn cwd(&mut self, arg: &str) -> CmdResult {
        self.require(AccessLevel::Info)?;
        let r = self.target(need_arg(arg)?, false)?;
        let st = self.storage.stat(&r.rel)?;
        if !st.is_dir() {
            return Err(CmdError::new(550, format!("Not a directory: {}", r.abs)));
        }
        if !self.identity.may(&st, Access::Execute) {
            return Err(CmdError::new(550, format!("Permission denied: {}", r.abs)));
        }
        self.cwd = r.abs;
        self.ok_reply("200 OK")
    }

    pub(super) fn cdup(&mut self) -> CmdResult {
        self.require(AccessLevel::Info)?;
        if self.cwd == self.base || self.cwd == "/" {
            return Err(CmdError::new(534, "Can't cd up, already at base directory"));
        }
        let parent = paths::normalize(&self.cwd, "..");
        let r = self.resolve(&parent)?;
        let st = self.storage.stat(&r.rel)?;
        if !st.is_dir() {
            return Err(CmdError::new(550, format!("Not a directory: {}", r.abs)));
        }
        self.cwd = r.abs;
        self.ok_reply("200 OK")
    }

    pub(super) fn mkd(&mut self, arg: &str) -> CmdResult {
        self.require(AccessLevel::Write)?;
        let r = self.target(need_arg(arg)?, true)?;
        self.storage.mkdir(&r.rel)?;
        let line = format!("257 \"{}\" directory created", r.abs);
        self.ok_reply(&line)
    }

    pub(super) fn rmd(&mut self, arg: &str) -> CmdResult {
        self.require(AccessLevel::Full)?;
        let r = self.target(need_arg(arg)?, true)?;
        if r.abs == self.base {
            return Err(CmdError::new(534, "Cannot remove the base directory"));
        }
        self.storage.rmdir(&r.rel)?;
        self.ok_reply("200 OK")
    }

    pub(super) fn dele(&mut self, arg: &str) -> CmdResult {
        self.require(AccessLevel::Full)?;
        let r = self.target(need_arg(arg)?, true)?;
        self.storage.unlink(&r.rel)?;
        self.ok_reply("200 OK")
    }

    pub(super) fn rnfr(&mut self, arg: &str) -> CmdResult {
        self.require(AccessLevel::Write)?;
        self.rename_from = None;
        let r = self.target(need_arg(arg)?, true)?;
        if r.abs == self.base {
            return Err(CmdError::new(534, "Cannot rename the base directory"));
        }
        // The source must exist (lstat semantics are left to the backend).
        if self.storage.stat(&r.rel)?.is_dir() {
            self.check_subtree(&r)?;
        }
        self.rename_from = Some(r);
        self.ok_reply("350 File action OK Please send rename-to")
    }

    pub(super) fn rnto(&mut self, arg: &str) -> CmdResult {
        self.require(AccessLevel::Write)?;
        let Some(from) = self.rename_from.take() else {
            return Err(CmdError::new(
                503,
                "Illegal sequence of FTP commands - must send RNFR first",
            ));
        };
        let to = self.target(need_arg(arg)?, true)?;
        if to.abs == self.base {
            return Err(CmdError::new(534, "Cannot replace the base directory"));
        }
        if self.storage.stat(&from.rel)?.is_dir() {
            self.check_subtree(&from)?;
            self.check_subtree(&to)?;
        }
        self.storage.rename(&from.rel, &to.rel)?;
        self.ok_reply("200 OK")
    }

    pub(super) fn mfmt(&mut self, arg: &str) -> CmdResult {
        self.require(AccessLevel::Write)?;
        let (time, path) = arg
            .trim_start()
            .split_once(' ')
            .ok_or_else(|| CmdError::new(501, "Argument syntax error: MFMT <time> <path>"))?;
        let t = parse_mdtm(time)?;
        let r = self.target(need_arg(path)?, true)?;
        self.storage.set_mtime(&r.rel, t)?;
        let line = format!("213 Modify={time}; {path}");
        self.ok_reply(&line)
    }

    pub(super) fn mff(&mut self, arg: &str) -> CmdResult {
        self.require(AccessLevel::Write)?;
        let (facts, path) = arg
            .trim_start()
            .split_once(' ')
            .ok_or_else(|| CmdError::new(501, "Argument syntax error: MFF <facts> <path>"))?;
        let r = self.target(need_arg(path)?, true)?;
        // Parse everything before changing anything.
        let mut mtime = None;
        let mut mode = None;
        let mut applied = Vec::new();
        for fact in facts.split(';').filter(|f| !f.is_empty()) {
            let (k, v) = fact
                .split_once('=')
                .ok_or_else(|| CmdError::new(501, format!("Invalid fact '{fact}'")))?;
            match k.to_ascii_lowercase().as_str() {
                "modify" => mtime = Some(parse_mdtm(v)?),
                "unix.mode" => {
                    let m = u32::from_str_radix(v.trim(), 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| CmdError::new(501, format!("Invalid mode '{v}'")))?;
                    mode = Some(m);
                }
                _ => return Err(CmdError::new(504, format!("Not supported: '{k}'"))),
            }
            applied.push(fact.to_string());
        }
        if let Some(m) = mode {
            self.storage.set_mode(&r.rel, m)?;
        }
        if let Some(t) = mtime {
            self.storage.set_mtime(&r.rel, t)?;
        }
        let line = format!("213 {}; {path}", applied.join(";"));
        self.ok_reply(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mdtm_parsing() {
        assert!(parse_mdtm("20240102030405").is_ok());
        assert!(parse_mdtm("20240102030405.123").is_ok());
        assert!(parse_mdtm("2024010203040").is_err());
        assert!(parse_mdtm("20241302030405").is_err());
        assert!(parse_mdtm("abc").is_err());
        let t = parse_mdtm("20240102030405").expect("t");
        assert_eq!(super::super::listing::mdtm(t), "20240102030405");
    }
}
