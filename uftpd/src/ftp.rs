//! The FTP listener: greeting, login with the one-time secret, and the
//! handover of the logged-in connection to a session process.
//!
//! Before login only `SYST` and `USER anonymous` + `PASS <secret>` (or a
//! second `USER <secret>`) are accepted; anything else is a protocol error
//! and closes the connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::handover::{SessionJob, spawn_session};
use crate::jobs::LoginError;
use crate::server::Daemon;

/// Time a client has to log in.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_LINE: usize = 8192;

/// A line reader that keeps what it read past the current line.
struct LineReader {
    buf: Vec<u8>,
}

impl LineReader {
    async fn next(&mut self, s: &mut TcpStream) -> Option<String> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line);
                return Some(line.trim_end_matches(['\r', '\n']).trim().to_string());
            }
            if self.buf.len() > MAX_LINE {
                return None;
            }
            let mut chunk = [0u8; 1024];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

async fn send(s: &mut TcpStream, line: &str) -> std::io::Result<()> {
    let line = crate::session::control::escape_line_breaks(line);
    s.write_all(format!("{line}\r\n").as_bytes()).await
}

/// Runs the login dialogue; returns the secret, or `None` after having
/// answered and given up.
async fn login(s: &mut TcpStream, r: &mut LineReader) -> Option<String> {
    loop {
        let line = r.next(s).await?;
        if line.is_empty() {
            continue;
        }
        let (verb, arg) = match line.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_string()),
            None => (line.to_ascii_uppercase(), String::new()),
        };
        match verb.as_str() {
            "SYST" => {
                send(s, "215 Unix Type: L8").await.ok()?;
            }
            "USER" if arg == "anonymous" => {
                send(s, "331 Please specify the password").await.ok()?;
                let line = r.next(s).await?;
                let (verb, secret) = match line.split_once(' ') {
                    Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_string()),
                    None => (line.to_ascii_uppercase(), String::new()),
                };
                if (verb == "PASS" || verb == "USER") && !secret.is_empty() && secret != "anonymous"
                {
                    return Some(secret);
                }
                let _ = send(s, "500 Protocol error").await;
                return None;
            }
            _ => {
                let _ = send(s, "500 Protocol error").await;
                return None;
            }
        }
    }
}

/// Serves one FTP connection up to the handover.
pub async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    daemon: Arc<Daemon>,
    slot: crate::server::Slot,
) {
    let _ = stream.set_nodelay(true);
    crate::server::set_keepalive(&stream);
    let greeting = format!("220 UFTPD {}, https://www.unicore.eu", crate::VERSION);
    if send(&mut stream, &greeting).await.is_err() {
        return;
    }
    let mut reader = LineReader { buf: Vec::new() };
    let secret = match tokio::time::timeout(LOGIN_TIMEOUT, login(&mut stream, &mut reader)).await {
        Ok(Some(s)) => s,
        Ok(None) => return,
        Err(_) => {
            let _ = send(&mut stream, "421 Login timeout").await;
            return;
        }
    };
    let job = match daemon.store.login(&secret, peer.ip()) {
        Ok(job) => job,
        Err(LoginError::NotFound) => {
            tracing::info!("Login from {peer}: no matching transfer request");
            let _ = send(
                &mut stream,
                "530 Not logged in: no matching transfer request found",
            )
            .await;
            return;
        }
        Err(e) => {
            tracing::info!("Login from {peer} refused: {e}");
            let line = match e {
                LoginError::AlreadyRunning => format!("500 {e}"),
                _ => format!("500 Error establishing connection: {e}"),
            };
            let _ = send(&mut stream, &line).await;
            return;
        }
    };
    let user = job.request.user.clone();
    let mut request = job.request;
    // The session does not need the secret.
    request.secret.clear();
    let session_job = SessionJob {
        request,
        identity: job.identity,
        settings: daemon.settings.clone(),
        pending_input: std::mem::take(&mut reader.buf),
    };
    let std_stream = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("Cannot hand over connection from {peer}: {e}");
            daemon.store.session_ended(&secret);
            return;
        }
    };
    let child = spawn_session(&daemon.exe, &std_stream, &session_job).await;
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("Cannot start session process for '{user}': {e}");
            let _ = std_stream.set_nonblocking(false);
            let _ = std::io::Write::write_all(
                &mut &std_stream,
                b"530 Not logged in: cannot start session process\r\n",
            );
            daemon.store.session_ended(&secret);
            return;
        }
    };
    drop(std_stream);
    drop(slot);
    let pid = child.id().unwrap_or(0);
    tracing::info!(
        "Started session process {pid} for '{user}' from {}",
        peer.ip()
    );
    daemon.sessions_started();
    let status = child.wait().await;
    daemon.store.session_ended(&secret);
    daemon.sessions_ended();
    match status {
        Ok(s) if s.success() => tracing::debug!("Session process {pid} for '{user}' finished"),
        Ok(s) => tracing::info!("Session process {pid} for '{user}' ended: {s}"),
        Err(e) => tracing::error!("Waiting for session process {pid}: {e}"),
    }
}
