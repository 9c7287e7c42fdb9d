//! `uftpd check-config`: what the configuration means, without starting
//! the daemon.
//!
//! Reports ports and hosts, whether the command port uses TLS, what the
//! authorizer found (certificate, truststore, ACL entries and unparsable
//! ACL lines, as its `describe()` tells), the plugins chosen, whether uftpd
//! runs as root, and every insecure choice. Exit code 0 when the daemon
//! would start (warnings or not), 1 when it would not.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;

/// Severity of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Plain information.
    Info,
    /// An insecure or doubtful choice; the daemon starts.
    Warning,
    /// The daemon would not start.
    Error,
}

/// The report: sections of lines, each with a level.
#[derive(Debug, Default)]
pub struct Report {
    /// (section, level, text) in order.
    pub lines: Vec<(&'static str, Level, String)>,
}

impl Report {
    fn push(&mut self, section: &'static str, level: Level, text: impl Into<String>) {
        self.lines.push((section, level, text.into()));
    }

    fn info(&mut self, section: &'static str, text: impl Into<String>) {
        self.push(section, Level::Info, text);
    }

    fn warn(&mut self, section: &'static str, text: impl Into<String>) {
        self.push(section, Level::Warning, text);
    }

    fn error(&mut self, section: &'static str, text: impl Into<String>) {
        self.push(section, Level::Error, text);
    }

    /// Lines of one level.
    pub fn of(&self, level: Level) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|(_, l, _)| *l == level)
            .map(|(_, _, t)| t.as_str())
            .collect()
    }

    /// The report as text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut section = "";
        for (s, level, text) in &self.lines {
            if *s != section {
                out.push_str(&format!("\n{s}\n"));
                section = s;
            }
            let tag = match level {
                Level::Info => "  ",
                Level::Warning => "  WARNING: ",
                Level::Error => "  ERROR: ",
            };
            out.push_str(&format!("{tag}{text}\n"));
        }
        let errors = self.of(Level::Error).len();
        let warnings = self.of(Level::Warning).len();
        out.push('\n');
        if errors > 0 {
            out.push_str(&format!(
                "Result: uftpd would NOT start ({errors} error(s), {warnings} warning(s))\n"
            ));
        } else {
            out.push_str(&format!(
                "Result: uftpd would start ({warnings} warning(s))\n"
            ));
        }
        out
    }
}

/// Addresses the daemon would listen on, as the server resolves them.
fn addresses(host: &str, port: u16, disable_ipv6: bool) -> Result<Vec<SocketAddr>, String> {
    crate::server::listen_addrs(host, port, disable_ipv6)
        .map_err(|e| format!("cannot resolve '{host}': {e}"))
}

/// Tries to bind, as the daemon will; a port in use is only a warning
/// (the daemon may be running).
fn probe_bind(report: &mut Report, what: &str, addrs: &[SocketAddr]) {
    for a in addrs {
        match std::net::TcpListener::bind(a) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => report.warn(
                "Ports",
                format!("{what} {a} is in use right now (is uftpd already running?)"),
            ),
            Err(_) if a.is_ipv6() && a.ip().is_unspecified() => report.info(
                "Ports",
                format!("{what}: no IPv6 on this host, the daemon will listen on IPv4 only"),
            ),
            Err(e) => report.error("Ports", format!("{what}: cannot listen on {a}: {e}")),
        }
    }
}

fn truthy(v: Option<String>) -> bool {
    v.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "yes" | "true" | "on"
        )
    })
}

/// Builds the report for a loaded configuration.
pub fn check(cfg: &Config, privileged: bool, probe_ports: bool) -> Report {
    let mut r = Report::default();
    let lookup = |n: &str| cfg.setting(n);

    // --- configuration and identity
    const GENERAL: &str = "Configuration";
    match &cfg.source {
        Some(p) => r.info(GENERAL, format!("file {}", p.display())),
        None => r.info(GENERAL, "no config file: defaults and environment only"),
    }
    if !cfg.ignored.is_empty() {
        r.info(
            GENERAL,
            format!(
                "variables not used by uftpd itself (plugin settings, or 3.x leftovers): {}",
                cfg.ignored.join(", ")
            ),
        );
    }
    if privileged {
        r.info(
            GENERAL,
            "running as root: sessions run as the users named in transfer requests",
        );
    } else {
        r.info(
            GENERAL,
            format!(
                "running unprivileged as '{}': every session runs as this user, requests for other users are refused",
                crate::users::current_user_name()
            ),
        );
    }

    // --- ports
    const PORTS: &str = "Ports";
    let cmd = addresses(&cfg.cmd_host, cfg.cmd_port, cfg.disable_ipv6);
    match &cmd {
        Ok(a) => r.info(
            PORTS,
            format!(
                "command port CMD_HOST={:?} CMD_PORT={} -> {}",
                cfg.cmd_host,
                cfg.cmd_port,
                join(a)
            ),
        ),
        Err(e) => r.error(PORTS, format!("command port: {e}")),
    }
    let ftp = addresses(&cfg.server_host, cfg.server_port, cfg.disable_ipv6);
    match &ftp {
        Ok(a) => r.info(
            PORTS,
            format!(
                "FTP port SERVER_HOST={:?} SERVER_PORT={} -> {}",
                cfg.server_host,
                cfg.server_port,
                join(a)
            ),
        ),
        Err(e) => r.error(PORTS, format!("FTP port: {e}")),
    }
    if cfg.cmd_port == cfg.server_port
        && let (Ok(a), Ok(b)) = (&cmd, &ftp)
        && a.iter().any(|x| b.contains(x) || x.ip().is_unspecified())
    {
        r.error(PORTS, "CMD_PORT and SERVER_PORT are the same port");
    }
    if let Some(a) = &cfg.advertise_host_raw {
        r.info(
            PORTS,
            format!(
                "ADVERTISE_HOST={a} (PASV replies announce {})",
                cfg.advertise_host
                    .map(|i| i.to_string())
                    .unwrap_or_default()
            ),
        );
    }
    match cfg.port_range {
        Some(p) => r.info(
            PORTS,
            format!("data ports PORT_RANGE={}:{}", p.lower, p.upper),
        ),
        None => r.info(PORTS, "data ports: any free port (PORT_RANGE not set)"),
    }
    r.info(
        PORTS,
        format!(
            "MAX_CONNECTIONS={} per user, MAX_STREAMS={}, IPv6 {}",
            cfg.max_connections,
            cfg.max_streams,
            if cfg.disable_ipv6 { "off" } else { "on" }
        ),
    );
    if probe_ports {
        if let Ok(a) = &cmd {
            probe_bind(&mut r, "command port", a);
        }
        if let Ok(a) = &ftp {
            probe_bind(&mut r, "FTP port", a);
        }
    }

    // --- command port security
    const CMD: &str = "Command port security";
    let allow_insecure = truthy(lookup("ALLOW_INSECURE_COMMAND_PORT"));
    match crate::plugins::authorizer(&cfg.authorizer, &lookup) {
        Ok(a) => {
            r.info(
                CMD,
                format!(
                    "authorizer '{}': {}",
                    a.name(),
                    if a.secure() {
                        "TLS on"
                    } else {
                        "TLS OFF (plain text)"
                    }
                ),
            );
            for line in a.describe() {
                match line.strip_prefix("WARNING:") {
                    Some(w) => r.warn(CMD, w.trim()),
                    None => r.info(CMD, line),
                }
            }
            if !a.secure() {
                r.warn(
                    CMD,
                    "the command port is PLAIN TEXT (SSL_CONF is not set): whoever can connect to it can make uftpd read and write files as any user",
                );
                let remote: Vec<SocketAddr> = cmd
                    .as_ref()
                    .map(|v| {
                        v.iter()
                            .filter(|a| !a.ip().to_canonical().is_loopback())
                            .copied()
                            .collect()
                    })
                    .unwrap_or_default();
                if let Err(e) = crate::server::check_plaintext_binding(cfg, privileged, &lookup) {
                    r.error(CMD, e);
                } else if let Some(first) = remote.first() {
                    r.warn(
                        CMD,
                        format!(
                            "the plain-text command port listens on a non-loopback address ({first})"
                        ),
                    );
                }
            }
        }
        Err(e) => {
            let msg = match (&cfg.ssl_conf, &e) {
                (Some(_), crate::plugins::PluginError::Unknown { .. }) => {
                    format!("SSL_CONF is set, but this build has no TLS authorizer: {e}")
                }
                _ => e.to_string(),
            };
            r.error(CMD, msg);
        }
    }
    if allow_insecure && cfg.ssl_conf.is_none() {
        r.warn(
            CMD,
            "ALLOW_INSECURE_COMMAND_PORT=true: remote peers may use a plain-text command port",
        );
    }

    // --- plugins
    const PLUGINS: &str = "Plugins";
    match crate::plugins::check_storage(cfg) {
        Ok(_) => r.info(
            PLUGINS,
            format!("storage backend '{}'", cfg.storage_backend),
        ),
        Err(e) => r.error(PLUGINS, e.to_string()),
    }
    r.info(
        PLUGINS,
        format!("command-port authorizer '{}'", cfg.authorizer),
    );
    r.info(
        PLUGINS,
        format!(
            "authorizers in this build: {}",
            auth_api::registered()
                .map(|d| format!("{} {}", d.name, d.version))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );

    // --- sessions
    const SESSIONS: &str = "Sessions";
    if cfg.disable_ip_check {
        r.warn(
            SESSIONS,
            "DISABLE_IP_CHECK=true: whoever learns a transfer secret can log in from any address",
        );
    } else {
        r.info(SESSIONS, "client IP checked at login");
    }
    if !cfg.enforce_os_gids {
        r.warn(
            SESSIONS,
            "UFTP_ENFORCE_OS_GIDS=false: transfer requests may name groups the user does not have in the OS",
        );
    }
    if !cfg
        .nowrite
        .iter()
        .any(|p| p.trim_start_matches("./") == ".ssh/authorized_keys")
    {
        r.warn(
            SESSIONS,
            format!(
                "UFTP_NOWRITE ({}) does not protect .ssh/authorized_keys",
                cfg.nowrite.join(":")
            ),
        );
    }
    r.info(
        SESSIONS,
        if cfg.user_cache.is_zero() {
            "users and groups looked up for every transfer request (USER_CACHE_SECONDS=0)"
                .to_string()
        } else {
            format!(
                "a looked-up user and its groups are reused for {}s (USER_CACHE_SECONDS)",
                cfg.user_cache.as_secs()
            )
        },
    );
    // Config::load refuses an engine that is forced and unusable; the
    // warning is kept for a machine that changed since.
    engine_line(
        &mut r,
        SESSIONS,
        cfg.gzip_engine.describe(cfg.gzip_level),
        |engine| {
            format!(
                "gzip downloads are compressed by {engine} (GZIP_ENGINE={}, GZIP_LEVEL)",
                cfg.gzip_engine
            )
        },
        |why| format!("GZIP_ENGINE=isal, but ISA-L cannot be used: {why}"),
    );
    engine_line(
        &mut r,
        SESSIONS,
        cfg.gzip_engine.describe_decoder(),
        |engine| {
            format!(
                "gzip uploads are decompressed by {engine} (GZIP_ENGINE={})",
                cfg.gzip_engine
            )
        },
        |why| format!("GZIP_ENGINE=isal, but ISA-L cannot decompress: {why}"),
    );
    engine_line(
        &mut r,
        SESSIONS,
        cfg.chacha_engine.describe(),
        |engine| {
            format!(
                "ChaCha20-Poly1305 (extension codec) runs on {engine} (CHACHA20_ENGINE={})",
                cfg.chacha_engine
            )
        },
        |why| format!("CHACHA20_ENGINE=libcrypto, but libcrypto cannot be used: {why}"),
    );
    r.info(
        SESSIONS,
        format!(
            "zstd (extension codec) downloads are compressed at level {} (ZSTD_LEVEL{})",
            cfg.zstd_level,
            if cfg.zstd_level < 0 {
                ", a fast mode"
            } else {
                ""
            }
        ),
    );
    r.info(
        SESSIONS,
        format!(
            "requests expire after {}s; sessions: sendfile {}, PAM sessions {}",
            cfg.request_lifetime.as_secs(),
            if cfg.use_sendfile { "on" } else { "off" },
            if cfg.open_user_sessions {
                format!("on ({})", cfg.pam_module)
            } else {
                "off".into()
            }
        ),
    );
    r
}

/// The line of a codec engine: what it runs on, or a warning.
fn engine_line(
    r: &mut Report,
    section: &'static str,
    described: Result<String, String>,
    info: impl FnOnce(String) -> String,
    warn: impl FnOnce(String) -> String,
) {
    match described {
        Ok(engine) => r.info(section, info(engine)),
        Err(why) => r.warn(section, warn(why)),
    }
}

fn join(a: &[SocketAddr]) -> String {
    a.iter()
        .map(|x| {
            if x.ip().is_unspecified() {
                format!("{x} (all interfaces)")
            } else {
                x.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs `uftpd check-config`.
pub fn run(path: Option<&PathBuf>) -> ExitCode {
    println!("uftpd {} check-config", crate::VERSION);
    let cfg = match crate::load_config(path) {
        Ok(c) => c,
        Err(e) => {
            println!("\nConfiguration\n  ERROR: {e}\n\nResult: uftpd would NOT start");
            return ExitCode::FAILURE;
        }
    };
    let privileged = nix::unistd::Uid::effective().is_root();
    let report = check(&cfg, privileged, true);
    print!("{}", report.render());
    if report.of(Level::Error).is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config from a file with these lines (plugins read the file too).
    fn cfg(vars: &[(&str, &str)]) -> Config {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "uftpd-checkconfig-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join("uftpd.conf");
        let text: String = vars
            .iter()
            .map(|(k, v)| format!("export {k}=\"{v}\"\n"))
            .collect();
        if let Err(e) = std::fs::write(&file, text) {
            panic!("write {}: {e}", file.display());
        }
        match Config::load_with(Some(&file), |_| None) {
            Ok(c) => c,
            Err(e) => panic!("config: {e}"),
        }
    }

    #[test]
    fn plain_loopback_warns_but_starts() {
        let r = check(&cfg(&[("CMD_HOST", "127.0.0.1")]), true, false);
        assert!(r.of(Level::Error).is_empty(), "{}", r.render());
        assert!(
            r.of(Level::Warning)
                .iter()
                .any(|w| w.contains("PLAIN TEXT")),
            "{}",
            r.render()
        );
        let text = r.render();
        assert!(text.contains("TLS OFF"), "{text}");
        assert!(text.contains("storage backend 'posix'"), "{text}");
        assert!(text.contains("uftpd would start"), "{text}");
        assert!(
            text.contains("reused for 30s (USER_CACHE_SECONDS)"),
            "{text}"
        );
        let r = check(
            &cfg(&[("CMD_HOST", "127.0.0.1"), ("USER_CACHE_SECONDS", "0")]),
            true,
            false,
        );
        let text = r.render();
        assert!(
            text.contains("looked up for every transfer request"),
            "{text}"
        );
    }

    #[test]
    fn plain_remote_as_root_would_not_start() {
        let c = cfg(&[("CMD_HOST", "*"), ("DISABLE_IP_CHECK", "true")]);
        let r = check(&c, true, false);
        assert!(
            r.of(Level::Error)
                .iter()
                .any(|e| e.contains("refusing to run as root")),
            "{}",
            r.render()
        );
        assert!(r.render().contains("would NOT start"));
        assert!(
            r.of(Level::Warning)
                .iter()
                .any(|w| w.contains("DISABLE_IP_CHECK"))
        );
        // unprivileged: a warning only
        let r = check(&c, false, false);
        assert!(r.of(Level::Error).is_empty(), "{}", r.render());
        assert!(
            r.of(Level::Warning)
                .iter()
                .any(|w| w.contains("non-loopback"))
        );
    }

    #[test]
    fn broken_ssl_conf_would_not_start() {
        let r = check(
            &cfg(&[("SSL_CONF", "/nonexistent/uftpd-ssl.conf")]),
            false,
            false,
        );
        let errors = r.of(Level::Error);
        assert!(
            errors
                .iter()
                .any(|e| e.contains("/nonexistent/uftpd-ssl.conf")),
            "{}",
            r.render()
        );
    }
}
