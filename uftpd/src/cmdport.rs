//! The command port: where the Auth server or UNICORE/X announce transfers.
//!
//! One request per connection: `key=value` lines up to a line starting with
//! `END`; uftpd writes the reply and closes. Every connection runs in its
//! own task with a deadline and size limits, so a peer that sends nothing,
//! garbage or a huge line costs the others nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::jobs::Job;
use crate::request::{parse_lines, parse_transfer};
use crate::server::Daemon;
use crate::userinfo::{self, UserInfoJob};
use crate::users::IdentityError;
use storage_api::Identity;

/// Time a peer has to send its whole request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest request accepted.
pub const MAX_REQUEST: usize = 64 * 1024;

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Over [`MAX_REQUEST`] bytes without `END`.
    #[error("Request too large (limit {MAX_REQUEST} bytes)")]
    TooLarge,
    /// Not UTF-8.
    #[error("Request is not valid UTF-8")]
    NotUtf8,
    /// Socket error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads request lines until `END` or end of stream.
pub async fn read_request<R: AsyncReadExt + Unpin>(r: &mut R) -> Result<Vec<String>, ReadError> {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let mut scanned = 0;
    loop {
        // Look for an END line in what arrived so far.
        while let Some(pos) = buf[scanned..].iter().position(|b| *b == b'\n') {
            if buf[scanned..scanned + pos].starts_with(b"END") {
                return split_lines(&buf[..scanned]);
            }
            scanned += pos + 1;
        }
        if buf.len() > MAX_REQUEST {
            return Err(ReadError::TooLarge);
        }
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            // End of stream without END: take what came.
            return split_lines(&buf);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn split_lines(bytes: &[u8]) -> Result<Vec<String>, ReadError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ReadError::NotUtf8)?;
    Ok(text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .filter(|l| !l.starts_with("END"))
        .collect())
}

/// Serves one command-port connection.
pub async fn serve(stream: TcpStream, peer: SocketAddr, daemon: Arc<Daemon>) {
    let _ = stream.set_nodelay(true);
    let authorized =
        tokio::time::timeout(REQUEST_TIMEOUT, daemon.authorizer.authorize(stream, peer)).await;
    let (mut stream, peer_name) = match authorized {
        Ok(Ok(a)) => (a.stream, a.peer_name),
        Ok(Err(e)) => {
            tracing::warn!("Command port: rejected {peer}: {e}");
            return;
        }
        Err(_) => {
            tracing::warn!(
                "Command port: rejected {peer}: no handshake within {REQUEST_TIMEOUT:?}"
            );
            return;
        }
    };
    tracing::debug!("Command port: accepted {peer_name}");
    let reply = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream)).await {
        Err(_) => {
            tracing::warn!(
                "Command port: no complete request from {peer} within {REQUEST_TIMEOUT:?}"
            );
            "ERROR::Timeout waiting for the request".to_string()
        }
        Ok(Err(ReadError::Io(e))) => {
            tracing::debug!("Command port: reading from {peer}: {e}");
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!("Command port: bad request from {peer}: {e}");
            format!("ERROR::{e}")
        }
        Ok(Ok(lines)) => handle(&parse_lines(&lines), peer, &daemon).await,
    };
    let mut out = reply.into_bytes();
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    let write = async {
        stream.write_all(&out).await?;
        stream.shutdown().await
    };
    if let Err(e) = tokio::time::timeout(REQUEST_TIMEOUT, write).await {
        tracing::debug!("Command port: writing reply to {peer}: {e}");
    }
}

async fn handle(m: &HashMap<String, String>, peer: SocketAddr, daemon: &Arc<Daemon>) -> String {
    let rtype = m
        .get("request-type")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "n/a".to_string());
    match rtype.as_str() {
        "uftp-ping-request" => ping(daemon),
        "uftp-transfer-request" => transfer(m, peer, daemon).await,
        "uftp-get-user-info-request" => user_info(m, daemon).await,
        other => {
            tracing::info!("Command port: unsupported request type '{other}' from {peer}");
            format!("ERROR::Unsupported request type '{other}'")
        }
    }
}

fn ping(daemon: &Daemon) -> String {
    let c = &daemon.config;
    let mut s = format!(
        "Version: {}\nListenPort: {}\nListenAddress: {}\nMaxSessionsPerClient: {}\n",
        crate::VERSION,
        c.server_port,
        c.server_host,
        c.max_connections
    );
    if let Some(a) = &c.advertise_host_raw {
        s.push_str(&format!("AdvertiseAddress: {a}\n"));
    }
    s
}

async fn transfer(m: &HashMap<String, String>, peer: SocketAddr, daemon: &Arc<Daemon>) -> String {
    let request = match parse_transfer(m) {
        Ok(r) => r,
        Err(e) => {
            tracing::info!("Refusing transfer request from {peer}: {e}");
            return format!("ERROR::{e}");
        }
    };
    if request.client_ips.is_empty() && !daemon.config.disable_ip_check {
        let e = format!(
            "no usable client-ip in the request ('{}')",
            request.client_ip_raw
        );
        tracing::info!(
            "Refusing transfer request for '{}' from {peer}: {e}",
            request.user
        );
        return format!("ERROR::{e}");
    }
    let identity = match resolve(&request.user, request.group.as_deref(), daemon).await {
        Ok(Ok(id)) => id,
        Ok(Err(e)) => {
            tracing::info!(
                "Refusing transfer request for '{}' from {peer}: {e}",
                request.user
            );
            return format!("ERROR::{e}");
        }
        Err(e) => return format!("ERROR::internal error: {e}"),
    };
    tracing::info!(
        "New transfer request for '{}' (uid {}, gid {}, groups {:?}) from {peer}: file='{}' client-ip='{}' persistent={} streams={} compress={} encrypted={} access={:?}",
        identity.user,
        identity.uid,
        identity.gid,
        identity.groups,
        request.file,
        request.client_ip_raw,
        request.persistent,
        request.streams,
        request.compress,
        request.key.is_some(),
        request.access,
    );
    match daemon.store.add(Job { request, identity }) {
        Ok(()) => format!("OK::{}", daemon.config.server_port),
        Err(e) => {
            tracing::info!("Refusing transfer request from {peer}: {e}");
            format!("ERROR::{e}")
        }
    }
}

/// The identity a transfer request for `user` and `group` runs as: from
/// the daemon's cache, or looked up off the async threads (the user
/// database may be a network service).
async fn resolve(
    user: &str,
    group: Option<&str>,
    daemon: &Arc<Daemon>,
) -> Result<Result<Identity, IdentityError>, tokio::task::JoinError> {
    let spec = group.unwrap_or("");
    if let Some(id) = daemon.identities.get(user, spec) {
        return Ok(Ok(id));
    }
    let (u, g) = (user.to_string(), group.map(str::to_string));
    let (enforce, privileged) = (daemon.config.enforce_os_gids, daemon.privileged);
    let resolved = tokio::task::spawn_blocking(move || {
        crate::users::resolve_identity(&u, g.as_deref(), enforce, privileged)
    })
    .await;
    if let Ok(Ok(id)) = &resolved {
        daemon.identities.put(user, spec, id);
    }
    resolved
}

async fn user_info(m: &HashMap<String, String>, daemon: &Arc<Daemon>) -> String {
    let user = m
        .get("user")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let lookup_name = user.clone();
    let u = tokio::task::spawn_blocking(move || crate::users::lookup_user(&lookup_name)).await;
    let u = match u {
        Ok(Ok(Some(u))) => u,
        _ => return "500 No such user or no home directory found".into(),
    };
    if u.uid.is_root() {
        return "500 Not allowed".into();
    }
    if !u.dir.is_dir() {
        return "500 No such user or no home directory found".into();
    }
    let (privileged, enforce) = (daemon.privileged, daemon.config.enforce_os_gids);
    let name = user.clone();
    let identity = tokio::task::spawn_blocking(move || {
        crate::users::resolve_identity(&name, None, enforce, privileged)
    })
    .await;
    let identity = match identity {
        Ok(Ok(id)) => id,
        Ok(Err(e)) => return format!("500 Not allowed: {e}"),
        Err(e) => return format!("500 internal error: {e}"),
    };
    let job = UserInfoJob {
        identity,
        keyfiles: daemon.config.keyfiles.clone(),
        switch_user: daemon.privileged,
    };
    match userinfo::query(&daemon.exe, &job).await {
        Ok(reply) => reply,
        Err(e) => {
            tracing::error!("get-user-info for '{user}' failed: {e}");
            format!("500 Error reading user info: {e}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> Result<Vec<String>, ReadError> {
        let mut r = bytes;
        read_request(&mut r).await
    }

    #[tokio::test]
    async fn request_framing() {
        let lines = read(b"request-type=uftp-ping-request\nEND\nignored=1\n")
            .await
            .expect("read");
        assert_eq!(lines, vec!["request-type=uftp-ping-request"]);
        let lines = read(b"a=1\r\nb=2\r\nEND\r\n").await.expect("read");
        assert_eq!(lines, vec!["a=1", "b=2"]);
        let lines = read(b"a=1\nb=2").await.expect("eof without END");
        assert_eq!(lines, vec!["a=1", "b=2"]);
        assert!(matches!(
            read(&vec![b'x'; MAX_REQUEST + 10]).await,
            Err(ReadError::TooLarge)
        ));
        assert!(matches!(
            read(b"a=\xff\nEND\n").await,
            Err(ReadError::NotUtf8)
        ));
    }
}
