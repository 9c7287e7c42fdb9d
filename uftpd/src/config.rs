//! Configuration: the `uftpd.conf` format of UFTPD 3.x plus environment.
//!
//! The file holds lines `export NAME=value` (or `NAME=value`), `#`
//! comments and optionally quoted values. Environment variables of the same
//! names override the file. Names uftpd does not know are ignored (a 3.x
//! file also sets SETPRIV, UFTPD_LIB and the like) and listed at debug level.
//! Invalid values stop startup with an error naming the variable.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Every variable uftpd reads, in the order of the documentation.
pub const KNOWN_VARIABLES: &[&str] = &[
    "CMD_HOST",
    "CMD_PORT",
    "SERVER_HOST",
    "SERVER_PORT",
    "ADVERTISE_HOST",
    "DISABLE_IPv6",
    "SSL_CONF",
    "ACL",
    "MAX_CONNECTIONS",
    "MAX_STREAMS",
    "PORT_RANGE",
    "DISABLE_IP_CHECK",
    "UFTP_KEYFILES",
    "UFTP_NOWRITE",
    "UFTP_NO_WRITE",
    "UFTP_ENFORCE_OS_GIDS",
    "LOG_VERBOSE",
    "LOG_SYSLOG",
    "UFTP_USE_SENDFILE",
    "OPEN_USER_SESSIONS",
    "PAM_MODULE",
    "REQUEST_LIFETIME",
    "USER_CACHE_SECONDS",
    "GZIP_LEVEL",
    "ZSTD_LEVEL",
    "COMPRESS_THREADS",
    "CHACHA20_ENGINE",
    "GZIP_ENGINE",
    "STORAGE_BACKEND",
    "CMD_AUTHORIZER",
    "PLUGINS",
];

/// Default of GZIP_LEVEL (see the constant it names).
pub const DEFAULT_GZIP_LEVEL: u32 = uftp_datachannel::DEFAULT_GZIP_LEVEL;

/// Default of ZSTD_LEVEL: the zstd codec's own default.
pub const DEFAULT_ZSTD_LEVEL: i32 = uftpd_zstd::DEFAULT_LEVEL;

/// Default of USER_CACHE_SECONDS: short against the caches of nscd and
/// sssd, long enough that a burst of requests for one user costs one lookup.
pub const DEFAULT_USER_CACHE_SECONDS: u64 = 30;

/// A configuration error; the message names the variable or the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A variable has a value that cannot be used.
    #[error("invalid value for {name}: '{value}' ({reason})")]
    Invalid {
        /// Variable name.
        name: &'static str,
        /// The offending value.
        value: String,
        /// What is expected.
        reason: String,
    },
}

/// Inclusive range of TCP ports for passive data listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    /// Lowest port.
    pub lower: u16,
    /// Highest port.
    pub upper: u16,
}

/// The daemon configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Command port host (`""`/`*` = all interfaces).
    pub cmd_host: String,
    /// Command port.
    pub cmd_port: u16,
    /// FTP listener host (`""`/`*` = all interfaces).
    pub server_host: String,
    /// FTP listener port.
    pub server_port: u16,
    /// IPv4 address for PASV replies, resolved at startup.
    pub advertise_host: Option<Ipv4Addr>,
    /// The ADVERTISE_HOST value as written (for the ping reply).
    pub advertise_host_raw: Option<String>,
    /// Do not use IPv6 sockets.
    pub disable_ipv6: bool,
    /// TLS settings file for the command port.
    pub ssl_conf: Option<PathBuf>,
    /// ACL file of allowed command-port peers.
    pub acl: PathBuf,
    /// Sessions plus pending requests per user.
    pub max_connections: u32,
    /// Maximum parallel TCP streams per data channel.
    pub max_streams: u32,
    /// Ports for passive data listeners.
    pub port_range: Option<PortRange>,
    /// Skip the client IP check at login.
    pub disable_ip_check: bool,
    /// Key files under $HOME read by get-user-info.
    pub keyfiles: Vec<String>,
    /// Patterns under $HOME that sessions may not write.
    pub nowrite: Vec<String>,
    /// Requested groups must be OS groups of the user.
    pub enforce_os_gids: bool,
    /// Debug logging.
    pub log_verbose: bool,
    /// Log to syslog instead of stdout.
    pub log_syslog: bool,
    /// Allow sendfile/splice.
    pub use_sendfile: bool,
    /// Open a PAM session per FTP session.
    pub open_user_sessions: bool,
    /// PAM service name.
    pub pam_module: String,
    /// How long an unused transfer request stays valid.
    pub request_lifetime: Duration,
    /// How long a resolved user (uid, groups) is reused for further
    /// transfer requests; zero: every request asks the user database.
    pub user_cache: Duration,
    /// zlib level (0-9) for gzip-compressed data channels.
    pub gzip_level: u32,
    /// zstd level (-7..=19; negative: zstd's fast modes) of zstd-compressed
    /// data channels.
    pub zstd_level: i32,
    /// Threads compressing one gzip or zstd stream (1-64); `None`: the
    /// machine's cores, at most 4 (the codecs' default).
    pub compress_threads: Option<u32>,
    /// Deflate implementation of gzip downloads and inflate of gzip
    /// uploads (GZIP_ENGINE: auto, zlib or isal; the wire format is the
    /// same).
    pub gzip_engine: uftpd_gzip::Engine,
    /// Implementation of the ChaCha20-Poly1305 extension codec
    /// (CHACHA20_ENGINE: auto, ring or libcrypto; the wire format is the
    /// same).
    pub chacha_engine: uftpd_chacha20poly1305::Engine,
    /// The file the configuration came from, if any.
    pub source: Option<PathBuf>,
    /// Names set in the file that uftpd does not use.
    pub ignored: Vec<String>,
    /// Everything the file set, for plugin settings.
    pub file_vars: BTreeMap<String, String>,
    /// Storage backend plugin (STORAGE_BACKEND, default `posix`).
    pub storage_backend: String,
    /// Command-port authorizer plugin (CMD_AUTHORIZER, default `acl` when
    /// SSL_CONF is set, else `plain`).
    pub authorizer: String,
    /// Dynamic plugin libraries to load at startup (PLUGINS, absolute
    /// paths separated by `:`).
    pub plugins: Vec<PathBuf>,
}

/// Parses the text of a uftpd.conf file into name/value pairs.
pub fn parse_conf_text(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        out.insert(name.to_string(), unquote(value.trim()));
    }
    out
}

/// Removes matching quotes, or an unquoted trailing ` # comment`.
fn unquote(v: &str) -> String {
    for q in ['"', '\''] {
        if let Some(rest) = v.strip_prefix(q)
            && let Some(end) = rest.find(q)
        {
            return rest[..end].to_string();
        }
    }
    match v.find(" #").or_else(|| v.find("\t#")) {
        Some(i) => v[..i].trim_end().to_string(),
        None => v.to_string(),
    }
}

/// Parses a boolean the way UFTPD 3.x does, but strictly.
pub fn parse_bool(name: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Ok(true),
        "0" | "no" | "false" | "off" | "" => Ok(false),
        _ => Err(ConfigError::Invalid {
            name,
            value: v.to_string(),
            reason: "expected true/false, yes/no or 1/0".into(),
        }),
    }
}

/// A codec engine setting (`GZIP_ENGINE`, `CHACHA20_ENGINE`): `default`
/// when unset; an unknown value, or one that forces a `library` this
/// machine cannot use (`usable` says why), names the variable.
fn engine_setting<E: Copy + std::str::FromStr<Err = String>>(
    name: &'static str,
    value: Option<&str>,
    default: E,
    library: &str,
    usable: impl FnOnce(E) -> Result<String, String>,
) -> Result<E, ConfigError> {
    let Some(v) = value else {
        return Ok(default);
    };
    let invalid = |reason: String| ConfigError::Invalid {
        name,
        value: v.to_string(),
        reason,
    };
    let engine: E = v.parse().map_err(invalid)?;
    usable(engine).map_err(|why| invalid(format!("{library} cannot be used: {why}")))?;
    Ok(engine)
}

fn parse_num<T: std::str::FromStr>(
    name: &'static str,
    v: &str,
    range: impl std::ops::RangeBounds<u64>,
    what: &str,
) -> Result<T, ConfigError> {
    let invalid = || ConfigError::Invalid {
        name,
        value: v.to_string(),
        reason: what.to_string(),
    };
    let n: u64 = v.trim().parse().map_err(|_| invalid())?;
    if !range.contains(&n) {
        return Err(invalid());
    }
    v.trim().parse::<T>().map_err(|_| invalid())
}

/// ZSTD_LEVEL: a whole number in the zstd codec's range (negative levels
/// are zstd's fast modes).
fn parse_zstd_level(v: &str) -> Result<i32, ConfigError> {
    let (lo, hi) = (uftpd_zstd::MIN_LEVEL, uftpd_zstd::MAX_LEVEL);
    v.trim()
        .parse::<i32>()
        .ok()
        .filter(|l| (lo..=hi).contains(l))
        .ok_or_else(|| ConfigError::Invalid {
            name: "ZSTD_LEVEL",
            value: v.to_string(),
            reason: format!("expected a level {lo} to {hi}"),
        })
}

fn parse_port_range(v: &str) -> Result<PortRange, ConfigError> {
    let invalid = |reason: &str| ConfigError::Invalid {
        name: "PORT_RANGE",
        value: v.to_string(),
        reason: reason.to_string(),
    };
    let (lo, hi) = v
        .trim()
        .split_once(':')
        .ok_or_else(|| invalid("expected lower:upper"))?;
    let lower: u16 = lo
        .trim()
        .parse()
        .map_err(|_| invalid("ports must be numbers 1-65535"))?;
    let upper: u16 = hi
        .trim()
        .parse()
        .map_err(|_| invalid("ports must be numbers 1-65535"))?;
    if lower == 0 || upper < lower {
        return Err(invalid("need 1 <= lower <= upper"));
    }
    Ok(PortRange { lower, upper })
}

fn split_list(v: &str) -> Vec<String> {
    v.split(':')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// A plugin name setting: unset or blank means the default.
fn plugin_name(name: &'static str, v: Option<&str>) -> Result<Option<String>, ConfigError> {
    let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if !v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ConfigError::Invalid {
            name,
            value: v.to_string(),
            reason: "expected a plugin name (see uftpd --list-plugins)".into(),
        });
    }
    Ok(Some(v.to_string()))
}

/// PLUGINS: absolute paths of plugin libraries, separated by `:`.
fn plugin_paths(v: &str) -> Result<Vec<PathBuf>, ConfigError> {
    split_list(v)
        .into_iter()
        .map(|p| {
            let path = PathBuf::from(&p);
            if path.is_absolute() {
                Ok(path)
            } else {
                Err(ConfigError::Invalid {
                    name: "PLUGINS",
                    value: v.to_string(),
                    reason: format!("plugin library '{p}' must be an absolute path"),
                })
            }
        })
        .collect()
}

fn resolve_advertise(v: &str) -> Result<Ipv4Addr, ConfigError> {
    if let Ok(ip) = v.parse::<Ipv4Addr>() {
        return Ok(ip);
    }
    let invalid = |reason: String| ConfigError::Invalid {
        name: "ADVERTISE_HOST",
        value: v.to_string(),
        reason,
    };
    let addrs = (v, 0)
        .to_socket_addrs()
        .map_err(|e| invalid(format!("cannot resolve: {e}")))?;
    for a in addrs {
        if let IpAddr::V4(ip) = a.ip() {
            return Ok(ip);
        }
    }
    Err(invalid("no IPv4 address for this name".into()))
}

impl Config {
    /// Loads the configuration from an optional file plus the process
    /// environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with(path, |n| std::env::var(n).ok())
    }

    /// Loads the configuration from an optional file and an environment
    /// lookup function (for tests).
    pub fn load_with(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut vars = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                parse_conf_text(&text)
            }
            None => BTreeMap::new(),
        };
        let file_vars = vars.clone();
        let ignored: Vec<String> = vars
            .keys()
            .filter(|k| !KNOWN_VARIABLES.contains(&k.as_str()))
            .cloned()
            .collect();
        for name in KNOWN_VARIABLES {
            if let Some(v) = env(name) {
                vars.insert((*name).to_string(), v);
            }
        }
        // Two spellings of one variable: the environment (either spelling)
        // overrides the file (either spelling).
        let nowrite_raw = env("UFTP_NOWRITE")
            .or_else(|| env("UFTP_NO_WRITE"))
            .or_else(|| file_vars.get("UFTP_NOWRITE").cloned())
            .or_else(|| file_vars.get("UFTP_NO_WRITE").cloned());
        let get = |n: &str| vars.get(n).map(String::as_str);
        let get_bool = |n: &'static str, default: bool| -> Result<bool, ConfigError> {
            match get(n) {
                Some(v) => parse_bool(n, v),
                None => Ok(default),
            }
        };
        let port = |n: &'static str, default: u16| -> Result<u16, ConfigError> {
            match get(n) {
                Some(v) => parse_num(n, v, 1..=65535, "expected a port number 1-65535"),
                None => Ok(default),
            }
        };
        let advertise_host_raw = get("ADVERTISE_HOST")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from);
        let advertise_host = match &advertise_host_raw {
            Some(v) => Some(resolve_advertise(v)?),
            None => None,
        };
        let nowrite = match nowrite_raw.as_deref() {
            Some(v) => split_list(v),
            None => vec![".ssh/authorized_keys".to_string()],
        };
        let host = |n: &str, default: &str| {
            get(n)
                .map(|s| s.trim().to_string())
                .unwrap_or(default.into())
        };
        Ok(Config {
            cmd_host: host("CMD_HOST", "localhost"),
            cmd_port: port("CMD_PORT", 64435)?,
            server_host: host("SERVER_HOST", "localhost"),
            server_port: port("SERVER_PORT", 64434)?,
            advertise_host,
            advertise_host_raw,
            disable_ipv6: get_bool("DISABLE_IPv6", false)?,
            ssl_conf: get("SSL_CONF")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            acl: PathBuf::from(get("ACL").unwrap_or("conf/uftpd.acl")),
            max_connections: match get("MAX_CONNECTIONS") {
                Some(v) => parse_num("MAX_CONNECTIONS", v, 1.., "expected a number >= 1")?,
                None => 16,
            },
            max_streams: match get("MAX_STREAMS") {
                Some(v) => parse_num("MAX_STREAMS", v, 1.., "expected a number >= 1")?,
                None => 4,
            },
            port_range: match get("PORT_RANGE").map(str::trim).filter(|s| !s.is_empty()) {
                Some(v) => Some(parse_port_range(v)?),
                None => None,
            },
            disable_ip_check: get_bool("DISABLE_IP_CHECK", false)?,
            keyfiles: split_list(
                get("UFTP_KEYFILES").unwrap_or(".ssh/authorized_keys:.uftp/authorized_keys"),
            ),
            nowrite,
            enforce_os_gids: get_bool("UFTP_ENFORCE_OS_GIDS", true)?,
            log_verbose: get_bool("LOG_VERBOSE", false)?,
            log_syslog: get_bool("LOG_SYSLOG", true)?,
            use_sendfile: get_bool("UFTP_USE_SENDFILE", true)?,
            open_user_sessions: get_bool("OPEN_USER_SESSIONS", false)?,
            pam_module: get("PAM_MODULE")
                .unwrap_or("unicore-uftpd")
                .trim()
                .to_string(),
            gzip_level: match get("GZIP_LEVEL") {
                Some(v) => parse_num("GZIP_LEVEL", v, 0..=9, "expected a level 0-9")?,
                None => DEFAULT_GZIP_LEVEL,
            },
            zstd_level: match get("ZSTD_LEVEL") {
                Some(v) => parse_zstd_level(v)?,
                None => DEFAULT_ZSTD_LEVEL,
            },
            compress_threads: get("COMPRESS_THREADS")
                .map(|v| {
                    let max = codec_api::MAX_THREADS as u64;
                    parse_num(
                        "COMPRESS_THREADS",
                        v,
                        1..=max,
                        &format!("expected 1-{max} threads"),
                    )
                })
                .transpose()?,
            gzip_engine: engine_setting(
                "GZIP_ENGINE",
                get("GZIP_ENGINE"),
                uftpd_gzip::Engine::Auto,
                "ISA-L",
                |e| e.describe(1).and(e.describe_decoder()),
            )?,
            chacha_engine: engine_setting(
                "CHACHA20_ENGINE",
                get("CHACHA20_ENGINE"),
                uftpd_chacha20poly1305::Engine::Auto,
                "OpenSSL's libcrypto",
                uftpd_chacha20poly1305::Engine::describe,
            )?,
            request_lifetime: Duration::from_secs(match get("REQUEST_LIFETIME") {
                Some(v) => parse_num("REQUEST_LIFETIME", v, 1.., "expected seconds >= 1")?,
                None => 300,
            }),
            user_cache: Duration::from_secs(match get("USER_CACHE_SECONDS") {
                Some(v) => parse_num(
                    "USER_CACHE_SECONDS",
                    v,
                    0..=86_400,
                    "expected 0-86400 seconds",
                )?,
                None => DEFAULT_USER_CACHE_SECONDS,
            }),
            source: path.map(Path::to_path_buf),
            ignored,
            file_vars,
            storage_backend: plugin_name("STORAGE_BACKEND", get("STORAGE_BACKEND"))?
                .unwrap_or_else(|| "posix".to_string()),
            authorizer: match plugin_name("CMD_AUTHORIZER", get("CMD_AUTHORIZER"))? {
                Some(name) => name,
                None if get("SSL_CONF").is_some_and(|s| !s.trim().is_empty()) => "acl".to_string(),
                None => "plain".to_string(),
            },
            plugins: match get("PLUGINS") {
                Some(v) => plugin_paths(v)?,
                None => Vec::new(),
            },
        })
    }

    /// A configuration variable as plugins see it: the environment first,
    /// then the config file.
    pub fn setting(&self, name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .or_else(|| self.file_vars.get(name).cloned())
    }

    /// The variables set in the config file, each overridden by the
    /// environment variable of the same name (what session processes, which
    /// start with a clean environment, see as plugin settings).
    pub fn effective_file_vars(&self) -> BTreeMap<String, String> {
        self.file_vars
            .keys()
            .filter_map(|k| self.setting(k).map(|v| (k.clone(), v)))
            .collect()
    }

    /// True when a host setting means "all interfaces".
    pub fn is_wildcard(host: &str) -> bool {
        host.is_empty() || host == "*"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        // Tests run in parallel: every call gets a directory of its own.
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "uftpd-conf-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("tmp");
        let f = dir.join("uftpd.conf");
        std::fs::write(&f, text).expect("write");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let r = Config::load_with(Some(&f), |n| {
            env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
        });
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    #[test]
    fn defaults() {
        let c = Config::load_with(None, |_| None).expect("defaults");
        assert_eq!(c.cmd_port, 64435);
        assert_eq!(c.server_port, 64434);
        assert_eq!(c.server_host, "localhost");
        assert_eq!(c.max_connections, 16);
        assert_eq!(c.max_streams, 4);
        assert!(c.log_syslog);
        assert!(c.enforce_os_gids);
        assert!(c.use_sendfile);
        assert_eq!(c.nowrite, vec![".ssh/authorized_keys"]);
        assert_eq!(c.keyfiles.len(), 2);
        assert_eq!(c.request_lifetime, Duration::from_secs(300));
        assert_eq!(c.user_cache, Duration::from_secs(30));
        let c = load("export USER_CACHE_SECONDS=0\n", &[]).expect("load");
        assert_eq!(c.user_cache, Duration::ZERO);
        use uftpd_chacha20poly1305::Engine;
        assert_eq!(c.chacha_engine, Engine::Auto);
        assert_eq!(c.gzip_engine, uftpd_gzip::Engine::Auto);
        let c = load("export GZIP_ENGINE=zlib\n", &[]).expect("load");
        assert_eq!(c.gzip_engine, uftpd_gzip::Engine::Zlib);
        match (
            load("export GZIP_ENGINE=isal\n", &[]),
            uftpd_gzip::Engine::Isal.describe(1),
        ) {
            (Ok(c), Ok(_)) => assert_eq!(c.gzip_engine, uftpd_gzip::Engine::Isal),
            (Err(e), Err(why)) => assert!(e.to_string().contains(&why), "{e}"),
            (c, d) => panic!("config {c:?} but engine {d:?}"),
        }
        let c = load("export CHACHA20_ENGINE=Ring\n", &[]).expect("load");
        assert_eq!(c.chacha_engine, Engine::Ring);
        // libcrypto: accepted where it loads (CI installs OpenSSL), else
        // refused at start-up with the reason
        match (
            load("export CHACHA20_ENGINE=libcrypto\n", &[]),
            Engine::Libcrypto.describe(),
        ) {
            (Ok(c), Ok(_)) => assert_eq!(c.chacha_engine, Engine::Libcrypto),
            (Err(e), Err(why)) => assert!(e.to_string().contains(&why), "{e}"),
            (c, d) => panic!("config {c:?} but engine {d:?}"),
        }
    }

    #[test]
    fn file_format_and_env_override() {
        let c = load(
            "# comment\nexport SERVER_PORT=7000\nCMD_PORT=\"7001\"\n export MAX_STREAMS='8'\nexport SETPRIV=/usr/bin/setpriv\nexport LOG_SYSLOG=false # inline\nexport UFTP_NO_WRITE=a:b\nnot a line\n",
            &[("SERVER_PORT", "7100")],
        )
        .expect("load");
        assert_eq!(c.server_port, 7100, "env overrides file");
        assert_eq!(c.cmd_port, 7001);
        assert_eq!(c.max_streams, 8);
        assert!(!c.log_syslog);
        assert_eq!(c.nowrite, vec!["a", "b"]);
        assert_eq!(c.ignored, vec!["SETPRIV"]);
    }

    #[test]
    fn nowrite_either_spelling_env_over_file() {
        for (file, env, want) in [
            ("export UFTP_NOWRITE=f", ("UFTP_NO_WRITE", "e"), "e"),
            ("export UFTP_NO_WRITE=f", ("UFTP_NOWRITE", "e"), "e"),
            ("export UFTP_NOWRITE=f", ("OTHER", "x"), "f"),
            ("export UFTP_NO_WRITE=f", ("OTHER", "x"), "f"),
        ] {
            let c = load(&format!("{file}\n"), &[env]).expect("load");
            assert_eq!(c.nowrite, vec![want], "{file} + {env:?}");
        }
    }

    #[test]
    fn invalid_values_name_the_variable() {
        for (text, var) in [
            ("export LOG_VERBOSE=maybe", "LOG_VERBOSE"),
            ("export SERVER_PORT=70000", "SERVER_PORT"),
            ("export CMD_PORT=abc", "CMD_PORT"),
            ("export MAX_STREAMS=0", "MAX_STREAMS"),
            ("export PORT_RANGE=5000", "PORT_RANGE"),
            ("export PORT_RANGE=6000:5000", "PORT_RANGE"),
            ("export MAX_CONNECTIONS=-1", "MAX_CONNECTIONS"),
            ("export GZIP_LEVEL=10", "GZIP_LEVEL"),
            ("export ZSTD_LEVEL=20", "ZSTD_LEVEL"),
            ("export ZSTD_LEVEL=-8", "ZSTD_LEVEL"),
            ("export ZSTD_LEVEL=fast", "ZSTD_LEVEL"),
            ("export COMPRESS_THREADS=0", "COMPRESS_THREADS"),
            ("export COMPRESS_THREADS=65", "COMPRESS_THREADS"),
            ("export USER_CACHE_SECONDS=-1", "USER_CACHE_SECONDS"),
            ("export USER_CACHE_SECONDS=86401", "USER_CACHE_SECONDS"),
            ("export CHACHA20_ENGINE=fastest", "CHACHA20_ENGINE"),
            ("export GZIP_ENGINE=pigz", "GZIP_ENGINE"),
            (
                "export ADVERTISE_HOST=no.such.host.invalid",
                "ADVERTISE_HOST",
            ),
        ] {
            let e = load(text, &[]).expect_err(text);
            assert!(e.to_string().contains(var), "{text}: {e}");
        }
    }

    #[test]
    fn booleans() {
        for v in ["1", "yes", "TRUE", "True"] {
            assert!(parse_bool("X", v).expect(v));
        }
        for v in ["0", "no", "FALSE"] {
            assert!(!parse_bool("X", v).expect(v));
        }
    }

    #[test]
    fn plugin_defaults_need_no_config() {
        let c = Config::load_with(None, |_| None).expect("defaults");
        assert_eq!(c.storage_backend, "posix");
        assert_eq!(c.authorizer, "plain");
        assert!(c.plugins.is_empty());
        let c = load("export SSL_CONF=/etc/uftpd/ssl.conf", &[]).expect("load");
        assert_eq!(c.authorizer, "acl");
    }

    #[test]
    fn plugin_variables() {
        let c = load(
            "export STORAGE_BACKEND=audit-posix\nexport CMD_AUTHORIZER=' acl '\nexport PLUGINS=/usr/lib/uftpd/plugins/liba.so::/opt/b.so\n",
            &[("STORAGE_BACKEND", "lustre")],
        )
        .expect("load");
        assert_eq!(c.storage_backend, "lustre", "env overrides file");
        assert_eq!(c.authorizer, "acl");
        assert_eq!(
            c.plugins,
            vec![
                PathBuf::from("/usr/lib/uftpd/plugins/liba.so"),
                PathBuf::from("/opt/b.so")
            ]
        );
        assert!(c.ignored.is_empty(), "{:?}", c.ignored);
        let c = load("export STORAGE_BACKEND=\nexport PLUGINS=", &[]).expect("blank");
        assert_eq!(c.storage_backend, "posix");
        assert!(c.plugins.is_empty());
    }

    #[test]
    fn invalid_plugin_variables_name_the_variable() {
        for (text, msg) in [
            (
                "export PLUGINS=/usr/lib/a.so:lib/b.so",
                "invalid value for PLUGINS: '/usr/lib/a.so:lib/b.so' (plugin library 'lib/b.so' must be an absolute path)",
            ),
            (
                "export STORAGE_BACKEND='posix; rm'",
                "invalid value for STORAGE_BACKEND: 'posix; rm' (expected a plugin name (see uftpd --list-plugins))",
            ),
            (
                "export CMD_AUTHORIZER=a/b",
                "invalid value for CMD_AUTHORIZER",
            ),
        ] {
            let e = load(text, &[]).expect_err(text);
            assert!(e.to_string().starts_with(msg), "{text}: {e}");
        }
    }

    #[test]
    fn port_range() {
        let c = load("PORT_RANGE=50000:50010", &[]).expect("load");
        assert_eq!(
            c.port_range,
            Some(PortRange {
                lower: 50000,
                upper: 50010
            })
        );
    }
}
