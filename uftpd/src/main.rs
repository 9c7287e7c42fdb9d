//! uftpd: the UFTP file server.
//!
//! `uftpd --config FILE` runs the daemon in the foreground. See the book
//! (`book/`) for the administrator's guide.

mod announce;
mod checkconfig;
mod cmdport;
mod config;
mod ftp;
mod handover;
mod jobs;
mod logging;
mod plugins;
mod rcp_process;
mod request;
mod server;
mod session;
mod userinfo;
mod users;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Version reported in the FTP greeting, the ping reply and user info.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `uftpd --version`: the version, plus what a dynamic storage plugin must
/// be built with to be loaded (see the storage-api `ffi` module).
static LONG_VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    use storage_api::ffi;
    format!(
        "{VERSION}\nplugin API {}.{}, storage-api {}, built with {}",
        ffi::ABI_MAJOR,
        ffi::ABI_MINOR,
        ffi::API_CRATE_VERSION,
        ffi::RUSTC_VERSION
    )
});

/// Default location of the configuration file.
const DEFAULT_CONFIG: &str = "/etc/uftpd/uftpd.conf";

#[derive(Debug, Parser)]
#[command(name = "uftpd", version, long_version = LONG_VERSION.as_str(), about = "UFTP file server")]
struct Cli {
    /// Configuration file (uftpd.conf format); default /etc/uftpd/uftpd.conf
    /// if it exists. Environment variables override its settings.
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the available plugins (role, name, version, and `static` or
    /// the library loaded from PLUGINS) and exit.
    #[arg(long)]
    list_plugins: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Announce a transfer on a plain-text command port and print the secret
    /// and a curl URL (for tests and first steps).
    Announce(Box<announce::AnnounceArgs>),
    /// Check the configuration without starting the daemon: ports, TLS,
    /// certificates, ACL entries, plugins and insecure choices. Exits
    /// non-zero when the daemon would not start.
    CheckConfig,
    /// Internal: serve one FTP session (started by the daemon).
    #[command(name = "__session", hide = true)]
    Session,
    /// Internal: read a user's key files (started by the daemon).
    #[command(name = "__user-info", hide = true)]
    UserInfo,
    /// Internal: a server-to-server copy (started by a session).
    #[command(name = "__rcp", hide = true)]
    Rcp,
}

fn load_config(path: Option<&PathBuf>) -> Result<config::Config, String> {
    let default = PathBuf::from(DEFAULT_CONFIG);
    let path = match path {
        Some(p) => Some(p),
        None if default.is_file() => Some(&default),
        None => None,
    };
    config::Config::load(path.map(|p| p.as_path())).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Session) => return session::run_process(),
        Some(Command::UserInfo) => return userinfo::run_process(),
        Some(Command::Rcp) => return rcp_process::run_process(),
        Some(Command::CheckConfig) => return checkconfig::run(cli.config.as_ref()),
        _ => {}
    }
    let cfg = match load_config(cli.config.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("uftpd: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.list_plugins {
        return match plugins::print_list(&cfg) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("uftpd: {e}");
                ExitCode::from(2)
            }
        };
    }
    let result = match &cli.command {
        Some(Command::Announce(args)) => announce::run(args, &cfg),
        _ => {
            logging::init(
                if cfg.log_syslog {
                    logging::Target::Syslog
                } else {
                    logging::Target::Stdout
                },
                cfg.log_verbose,
            );
            server::run(cfg)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("uftpd: {e}");
            ExitCode::FAILURE
        }
    }
}
