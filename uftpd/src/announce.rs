//! `uftpd announce`: send a transfer request to a plain-text command port,
//! as an Auth server would, and print the secret and a ready curl URL.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rand::Rng;

use crate::config::Config;

/// Options of `uftpd announce`.
#[derive(Debug, clap::Args)]
pub struct AnnounceArgs {
    /// Command port to talk to (default: CMD_HOST:CMD_PORT of the config).
    #[arg(long, value_name = "HOST:PORT")]
    pub cmd: Option<String>,
    /// Unix user the session runs as (default: the current user, or
    /// `nobody` when run as root).
    #[arg(long)]
    pub user: Option<String>,
    /// File or directory the client may reach: the base directory is the
    /// part before the last '/' (a directory needs a trailing '/').
    /// Empty: no base directory, start in $HOME.
    #[arg(long, default_value = "")]
    pub file: String,
    /// Comma-separated client IPs allowed to log in.
    #[arg(long, default_value = "127.0.0.1,0:0:0:0:0:0:0:1")]
    pub client_ip: String,
    /// The secret (default: a random one).
    #[arg(long)]
    pub secret: Option<String>,
    /// Allow several sessions with this secret.
    #[arg(long)]
    pub persistent: bool,
    /// Initial number of data streams.
    #[arg(long, default_value_t = 1)]
    pub streams: u32,
    /// Compress the data streams: `--compress` alone is gzip (as UFTPD 3.x),
    /// `--compress zstd` the zstd extension.
    #[arg(
        long,
        value_name = "gzip|zstd",
        num_args = 0..=1,
        default_missing_value = "gzip",
        value_parser = ["gzip", "zstd", "true", "false"]
    )]
    pub compress: Option<String>,
    /// Base64 data-channel key (CHACHA20-POLY1305: exactly 32 bytes).
    #[arg(long)]
    pub key: Option<String>,
    /// BLOWFISH, AES or CHACHA20-POLY1305 (the extension).
    #[arg(long)]
    pub algo: Option<String>,
    /// Group specification (primary[:supplementary...]).
    #[arg(long)]
    pub group: Option<String>,
    /// Bytes per second.
    #[arg(long)]
    pub rate_limit: Option<u64>,
    /// ':'-separated allowed patterns.
    #[arg(long)]
    pub includes: Option<String>,
    /// ':'-separated forbidden patterns.
    #[arg(long)]
    pub excludes: Option<String>,
    /// NONE, INFO, READ, WRITE or FULL.
    #[arg(long)]
    pub access: Option<String>,
}

/// Runs the subcommand; returns the process exit code.
pub fn run(args: &AnnounceArgs, cfg: &crate::config::Config) -> Result<(), String> {
    let target = args
        .cmd
        .clone()
        .unwrap_or_else(|| format!("{}:{}", cfg.cmd_host, cfg.cmd_port));
    // Sessions never run as root: a root caller announces for nobody.
    let user = args.user.clone().unwrap_or_else(|| {
        if nix::unistd::Uid::current().is_root() {
            "nobody".to_string()
        } else {
            crate::users::current_user_name()
        }
    });
    let secret = args.secret.clone().unwrap_or_else(|| {
        let mut rng = rand::rng();
        (0..32)
            .map(|_| {
                let i = rng.random_range(0..62u8);
                (match i {
                    0..=9 => b'0' + i,
                    10..=35 => b'a' + i - 10,
                    _ => b'A' + i - 36,
                }) as char
            })
            .collect()
    });
    let mut req = String::new();
    let mut kv = |k: &str, v: &str| {
        req.push_str(k);
        req.push('=');
        req.push_str(v);
        req.push('\n');
    };
    kv("request-type", "uftp-transfer-request");
    kv("client-ip", &args.client_ip);
    kv("user", &user);
    kv("secret", &secret);
    kv("persistent", if args.persistent { "true" } else { "false" });
    kv("file", &args.file);
    kv("append", "false");
    kv("streams", &args.streams.to_string());
    kv(
        "compress",
        match args.compress.as_deref() {
            Some("gzip" | "true") => "true",
            Some("zstd") => "zstd",
            _ => "false",
        },
    );
    if let Some(g) = &args.group {
        kv("group", g);
    }
    if let Some(r) = args.rate_limit.filter(|r| *r > 0) {
        kv("rateLimit", &r.to_string());
    }
    if let Some(k) = &args.key {
        kv("key", k);
        kv("algo", args.algo.as_deref().unwrap_or("BLOWFISH"));
    }
    if let Some(i) = &args.includes {
        kv("includes", i);
    }
    if let Some(e) = &args.excludes {
        kv("excludes", e);
    }
    if let Some(a) = &args.access {
        kv("access-permissions", a);
    }
    req.push_str("END\n");

    let mut s =
        TcpStream::connect(&target).map_err(|e| format!("cannot connect to {target}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    s.write_all(req.as_bytes())
        .map_err(|e| format!("sending to {target}: {e}"))?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)
        .map_err(|e| format!("reading from {target}: {e}"))?;
    let reply = reply.trim();
    let Some(port) = reply.strip_prefix("OK::") else {
        return Err(format!("uftpd refused the request: {reply}"));
    };
    let host = if Config::is_wildcard(&cfg.server_host) || cfg.server_host == "localhost" {
        "127.0.0.1".to_string()
    } else {
        cfg.server_host.clone()
    };
    let path = match args.file.rfind('/') {
        Some(i) => &args.file[i + 1..],
        None => "",
    };
    println!("secret: {secret}");
    println!("server: {host}:{port}");
    println!("curl -u anonymous:{secret} ftp://{host}:{port}/{path}");
    Ok(())
}
