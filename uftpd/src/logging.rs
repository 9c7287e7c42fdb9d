//! Logging setup: `tracing` to stdout or syslog.
//!
//! The daemon and every session process call [`init`] once, before any
//! thread is started. Secrets and keys are never passed to a log macro: the
//! request types implement `Debug` without them.

use std::ffi::CStr;

use tracing::Level;
use tracing_subscriber::fmt;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Standard output (LOG_SYSLOG=false).
    Stdout,
    /// The local syslog daemon (ident `uftpd`, facility daemon).
    Syslog,
}

/// Installs the global subscriber. `verbose` enables debug lines.
pub fn init(target: Target, verbose: bool) {
    let level = if verbose { Level::DEBUG } else { Level::INFO };
    let result = match target {
        Target::Stdout => fmt()
            .with_max_level(level)
            .with_target(false)
            .with_ansi(false)
            .with_writer(std::io::stdout)
            .try_init(),
        Target::Syslog => {
            let ident: &'static CStr = c"uftpd";
            match syslog_tracing::Syslog::new(
                ident,
                syslog_tracing::Options::LOG_PID,
                syslog_tracing::Facility::Daemon,
            ) {
                Some(s) => fmt()
                    .with_max_level(level)
                    .with_target(false)
                    .with_ansi(false)
                    .without_time()
                    .with_level(false)
                    .with_writer(s.invalid_chars(syslog_tracing::InvalidCharAction::Remove))
                    .try_init(),
                None => fmt().with_max_level(level).with_ansi(false).try_init(),
            }
        }
    };
    if let Err(e) = result {
        eprintln!("uftpd: logging was already initialised: {e}");
    }
}

/// Formats a transfer rate the way UFTPD 3.x USAGE lines do.
pub fn usage_rate(bytes: u64, secs: f64) -> String {
    let secs = if secs < 0.001 { 0.001 } else { secs };
    let kb = bytes as f64 / 1000.0 / secs;
    if kb < 1000.0 {
        format!("{} kB/sec", kb as u64)
    } else {
        format!("{} MB/sec", (kb / 1000.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(usage_rate(500_000, 1.0), "500 kB/sec");
        assert_eq!(usage_rate(5_000_000, 1.0), "5 MB/sec");
        assert_eq!(usage_rate(0, 0.0), "0 kB/sec");
    }
}
