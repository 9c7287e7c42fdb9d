//! The daemon: listeners for the command port and the FTP port on tokio,
//! the job store and the bookkeeping of session processes.
//!
//! The main process never touches user files. It accepts connections,
//! answers command-port requests, runs the login dialogue and starts one
//! session process per logged-in client.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::handover::SessionSettings;
use crate::jobs::JobStore;

/// Concurrent command-port connections served; more wait in the backlog.
const MAX_CMD_CONNECTIONS: usize = 1024;
/// Concurrent command-port connections from one address: a single host
/// stalling TLS handshakes cannot take every slot, while a busy Auth
/// server (one address) still gets plenty.
const MAX_CMD_PER_PEER: u32 = 512;
/// Concurrent FTP connections in the login dialogue (sessions that logged
/// in no longer count).
const MAX_LOGINS: usize = 4096;
/// Concurrent logins in progress from one address (a login node or NAT
/// gateway is one address for many users).
const MAX_LOGINS_PER_PEER: u32 = 1024;

/// Connections in progress per peer address.
#[derive(Debug)]
struct PeerCounts {
    counts: std::sync::Mutex<std::collections::HashMap<IpAddr, u32>>,
    max: u32,
}

/// One connection's place in [`PeerCounts`], given back on drop.
#[derive(Debug)]
pub struct PeerSlot {
    owner: Arc<PeerCounts>,
    ip: IpAddr,
}

impl PeerCounts {
    fn new(max: u32) -> Arc<Self> {
        Arc::new(PeerCounts {
            counts: std::sync::Mutex::new(std::collections::HashMap::new()),
            max,
        })
    }

    fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<PeerSlot> {
        // Each critical section is one map update, so a poisoned lock
        // still holds consistent counts.
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            owner: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut m = self.owner.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// What a connection holds while the daemon serves it: a global slot and
/// a per-peer one. The FTP login gives both back at the handover.
#[derive(Debug)]
pub struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _peer: PeerSlot,
}

/// Shared daemon state.
#[derive(Debug)]
pub struct Daemon {
    /// Configuration.
    pub config: Config,
    /// Pending and active transfer requests.
    pub store: JobStore,
    /// Path of this binary, for session processes.
    pub exe: PathBuf,
    /// Running as root: sessions switch to the requested user.
    pub privileged: bool,
    /// Settings handed to sessions.
    pub settings: SessionSettings,
    /// Who may use the command port.
    pub authorizer: Box<dyn auth_api::CommandAuthorizer>,
    /// Users resolved for recent transfer requests.
    pub identities: crate::users::IdentityCache,
    running: AtomicU64,
    total: AtomicU64,
}

impl Daemon {
    /// A session process was started.
    pub fn sessions_started(&self) {
        self.running.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// A session process ended.
    pub fn sessions_ended(&self) {
        self.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Applies TCP keepalive so dead peers are noticed.
pub fn set_keepalive<S: std::os::fd::AsFd>(s: &S) {
    let ka = TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(6);
    let _ = SockRef::from(s).set_tcp_keepalive(&ka);
}

/// Addresses to listen on for a host setting.
pub(crate) fn listen_addrs(
    host: &str,
    port: u16,
    disable_ipv6: bool,
) -> io::Result<Vec<SocketAddr>> {
    if Config::is_wildcard(host) {
        return Ok(if disable_ipv6 {
            vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)]
        } else {
            vec![SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)]
        });
    }
    let mut out: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()?
        .filter(|a| !(disable_ipv6 && a.is_ipv6()))
        .collect();
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("'{host}' has no usable address"),
        ));
    }
    Ok(out)
}

fn bind_one(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // The wildcard listener is dual-stack; specific IPv6 addresses are
        // IPv6 only (they get their own IPv4 listener).
        s.set_only_v6(!addr.ip().is_unspecified())?;
    }
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Binds every address of `host`; at least one must succeed.
pub fn bind_all(
    what: &str,
    host: &str,
    port: u16,
    disable_ipv6: bool,
) -> io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::new();
    let mut last_err = None;
    for addr in listen_addrs(host, port, disable_ipv6)? {
        match bind_one(addr).and_then(TcpListener::from_std) {
            Ok(l) => {
                tracing::info!("{what} listening on {addr}");
                listeners.push(l);
            }
            Err(e) if addr.is_ipv6() && addr.ip().is_unspecified() => {
                // No IPv6 on this host: fall back to IPv4.
                tracing::info!("{what}: IPv6 not available ({e}), using IPv4 only");
                let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
                let l = bind_one(v4).and_then(TcpListener::from_std)?;
                tracing::info!("{what} listening on {v4}");
                listeners.push(l);
            }
            Err(e) => {
                tracing::warn!("{what}: cannot listen on {addr}: {e}");
                last_err = Some(e);
            }
        }
    }
    if listeners.is_empty() {
        return Err(last_err.unwrap_or_else(|| io::Error::other("no address to listen on")));
    }
    Ok(listeners)
}

/// Which service an accept loop serves.
#[derive(Debug, Clone, Copy)]
enum Service {
    Command,
    Ftp,
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Service::Command => "Command",
            Service::Ftp => "FTP",
        })
    }
}

fn spawn_accept_loop(
    listener: TcpListener,
    service: Service,
    daemon: Arc<Daemon>,
    limit: Arc<Semaphore>,
    per_peer: Arc<PeerCounts>,
) {
    tokio::spawn(async move {
        loop {
            let permit = match limit.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => return,
            };
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and the like: log, back off, keep serving.
                    tracing::error!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(peer_slot) = per_peer.try_acquire(peer.ip().to_canonical()) else {
                tracing::warn!(
                    "{service} port: {} has {} connections in progress already, closing this one",
                    peer.ip(),
                    per_peer.max
                );
                continue;
            };
            let slot = Slot {
                _permit: permit,
                _peer: peer_slot,
            };
            let d = daemon.clone();
            tokio::spawn(async move {
                match service {
                    Service::Command => {
                        crate::cmdport::serve(stream, peer, d).await;
                        drop(slot);
                    }
                    // The slot goes back at the handover: a running session
                    // process costs the daemon no login slot.
                    Service::Ftp => crate::ftp::serve(stream, peer, d, slot).await,
                }
            });
        }
    });
}

/// Serves the command port on a thread of its own with a single-threaded
/// runtime: a request is a few short steps (read, parse, look up, store,
/// reply) whose hand-offs between the worker threads of the FTP side's
/// runtime cost more CPU than the steps themselves.
fn start_command_thread(
    listeners: Vec<TcpListener>,
    daemon: Arc<Daemon>,
    limit: Arc<Semaphore>,
    per_peer: Arc<PeerCounts>,
) -> Result<(), String> {
    let listeners = listeners
        .into_iter()
        .map(TcpListener::into_std)
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| format!("command port: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the command port's runtime: {e}"))?;
    std::thread::Builder::new()
        .name("uftpd-cmdport".into())
        .spawn(move || {
            rt.block_on(async move {
                for l in listeners {
                    match TcpListener::from_std(l) {
                        Ok(l) => spawn_accept_loop(
                            l,
                            Service::Command,
                            daemon.clone(),
                            limit.clone(),
                            per_peer.clone(),
                        ),
                        Err(e) => tracing::error!("command port: {e}"),
                    }
                }
                std::future::pending::<()>().await
            })
        })
        .map_err(|e| format!("cannot start the command port's thread: {e}"))?;
    Ok(())
}

/// Raises the soft limit of open files to the hard limit: every session
/// in the login dialogue and every command-port peer holds a descriptor.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        // Session processes inherit the raised limit, which is harmless.
        if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            tracing::debug!("cannot raise the open-files limit to {hard}: {e}");
        }
    }
}

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(config: Config) -> Result<(), String> {
    let privileged = nix::unistd::Uid::effective().is_root();
    // Sessions exec the very binary that runs now, even after a package
    // update replaced the file on disk, so daemon and sessions always agree
    // on the handover format.
    let exe = PathBuf::from("/proc/self/exe");
    if !exe.exists() {
        return Err("/proc/self/exe is not available: uftpd needs /proc".into());
    }
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))?;
    rt.block_on(async move {
        tracing::info!("**** uftpd {} starting", crate::VERSION);
        if let Some(src) = &config.source {
            tracing::info!("Configuration: {}", src.display());
        }
        if !config.ignored.is_empty() {
            tracing::debug!(
                "Config variables not used by uftpd itself (plugin settings, or 3.x leftovers): {}",
                config.ignored.join(", ")
            );
        }
        if privileged {
            tracing::info!("Running as root: sessions run as the requested users");
        } else {
            tracing::info!(
                "Running unprivileged as '{}': sessions run as this user, requests for other users are refused",
                crate::users::current_user_name()
            );
        }
        tracing::debug!(
            "ACL file {} (used once TLS is enabled with SSL_CONF)",
            config.acl.display()
        );
        // Plugins: dynamic libraries and the storage backend are checked
        // now, so that a bad plugin stops startup rather than every session.
        let storage_settings = crate::plugins::check_storage(&config).map_err(|e| e.to_string())?;
        let lookup = |n: &str| config.setting(n);
        let authorizer = crate::plugins::authorizer(&config.authorizer, &lookup)
            .map_err(|e| match (&config.ssl_conf, e) {
                (Some(_), crate::plugins::PluginError::Unknown { .. })
                    if config.authorizer.eq_ignore_ascii_case("acl") =>
                {
                    "SSL_CONF is set, but this build has no TLS authorizer ('acl' plugin); refusing to run the command port in plain text when TLS was asked for".to_string()
                }
                (_, e) => e.to_string(),
            })?;
        if config.ssl_conf.is_some() && !authorizer.secure() {
            return Err(format!(
                "SSL_CONF is set, but CMD_AUTHORIZER={} does not use TLS; refusing to run the command port in plain text when TLS was asked for",
                config.authorizer
            ));
        }
        for line in authorizer.describe() {
            match line.strip_prefix("WARNING:") {
                Some(w) => tracing::warn!("Command port: {}", w.trim()),
                None => tracing::info!("Command port: {line}"),
            }
        }
        if !authorizer.secure() {
            check_plaintext_binding(&config, privileged, &lookup)?;
            tracing::warn!("*****");
            tracing::warn!("*****   WARNING:");
            tracing::warn!("*****   The command port is PLAIN TEXT (SSL_CONF is not set).");
            tracing::warn!("*****   Anybody who can connect to {}:{} can make uftpd", config.cmd_host, config.cmd_port);
            tracing::warn!("*****   read and write files as any user. Do not use this in production.");
            tracing::warn!("*****");
        }
        let mut settings = SessionSettings::from_config(&config, privileged);
        // What the storage plugin read, also from the environment, which
        // session processes do not inherit.
        settings.file_vars.extend(storage_settings);
        let daemon = Arc::new(Daemon {
            store: JobStore::new(
                config.request_lifetime,
                config.max_connections,
                !config.disable_ip_check,
            ),
            exe,
            privileged,
            settings,
            authorizer,
            identities: crate::users::IdentityCache::new(config.user_cache),
            running: AtomicU64::new(0),
            total: AtomicU64::new(0),
            config,
        });
        let c = &daemon.config;
        let cmd = bind_all("Command port", &c.cmd_host, c.cmd_port, c.disable_ipv6)
            .map_err(|e| format!("cannot open command port {}:{}: {e}", c.cmd_host, c.cmd_port))?;
        let ftp = bind_all("FTP port", &c.server_host, c.server_port, c.disable_ipv6)
            .map_err(|e| format!("cannot open FTP port {}:{}: {e}", c.server_host, c.server_port))?;
        tracing::debug!(
            "MAX_CONNECTIONS={} MAX_STREAMS={} PORT_RANGE={:?} DISABLE_IP_CHECK={} UFTP_NOWRITE={:?} UFTP_KEYFILES={:?}",
            c.max_connections,
            c.max_streams,
            c.port_range,
            c.disable_ip_check,
            c.nowrite,
            c.keyfiles
        );
        let cmd_limit = Arc::new(Semaphore::new(MAX_CMD_CONNECTIONS));
        let cmd_peers = PeerCounts::new(MAX_CMD_PER_PEER);
        start_command_thread(cmd, daemon.clone(), cmd_limit, cmd_peers)?;
        let login_limit = Arc::new(Semaphore::new(MAX_LOGINS));
        let login_peers = PeerCounts::new(MAX_LOGINS_PER_PEER);
        for l in ftp {
            spawn_accept_loop(l, Service::Ftp, daemon.clone(), login_limit.clone(), login_peers.clone());
        }
        let d = daemon.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                d.store.expire();
            }
        });
        wait_for_shutdown().await;
        tracing::info!(
            "uftpd stopping ({} session processes still running, {} served)",
            daemon.running.load(Ordering::Relaxed),
            daemon.total.load(Ordering::Relaxed)
        );
        Ok(())
    })
}

/// A plain-text command port on a non-loopback address lets remote peers
/// act as any user: as root, refuse that unless the admin says so.
pub(crate) fn check_plaintext_binding(
    config: &Config,
    privileged: bool,
    lookup: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<(), String> {
    let override_set =
        auth_api::Settings::new(lookup).get_bool("ALLOW_INSECURE_COMMAND_PORT", false)?;
    if !privileged || override_set {
        return Ok(());
    }
    let addrs = listen_addrs(&config.cmd_host, config.cmd_port, config.disable_ipv6)
        .map_err(|e| format!("CMD_HOST '{}': {e}", config.cmd_host))?;
    if let Some(a) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        return Err(format!(
            "refusing to run as root with a plain-text command port on {a} (CMD_HOST={}): set SSL_CONF for TLS, bind CMD_HOST to localhost, or set ALLOW_INSECURE_COMMAND_PORT=true on a closed network",
            config.cmd_host
        ));
    }
    Ok(())
}

async fn wait_for_shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => tracing::info!("SIGTERM received"),
                _ = i.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            // No signal handling possible: run until killed.
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_slots_are_counted_and_given_back() {
        let counts = PeerCounts::new(2);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let s1 = counts.try_acquire(a).expect("first");
        let _s2 = counts.try_acquire(a).expect("second");
        assert!(counts.try_acquire(a).is_none(), "third from the same peer");
        let _other = counts.try_acquire(b).expect("another peer is not affected");
        drop(s1);
        assert!(counts.try_acquire(a).is_some(), "a slot came back");
    }

    #[test]
    fn wildcard_hosts_listen_dual_stack_or_v4() {
        let v6 = listen_addrs("", 7000, false).expect("wildcard");
        assert_eq!(
            v6,
            vec![SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 7000)]
        );
        let v4 = listen_addrs("*", 7000, true).expect("wildcard");
        assert_eq!(
            v4,
            vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 7000)]
        );
        let lo = listen_addrs("127.0.0.1", 7000, false).expect("literal");
        assert_eq!(lo, vec![SocketAddr::from(([127, 0, 0, 1], 7000))]);
    }
}
