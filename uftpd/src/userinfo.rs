//! `uftp-get-user-info-request`: the user's accepted SSH keys.
//!
//! The key files are read as the user, never as root: the daemon starts
//! `uftpd __user-info` for it, which drops privileges like a session does
//! and prints the reply on stdout.

use std::io::{self, BufRead, Read, Write};
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use storage_api::Identity;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::session::privdrop;

/// What the helper process is told.
#[derive(Debug, Serialize, Deserialize)]
pub struct UserInfoJob {
    /// Who.
    pub identity: Identity,
    /// Key files relative to $HOME.
    pub keyfiles: Vec<String>,
    /// Whether to switch to the user (daemon is root).
    pub switch_user: bool,
}

/// Builds the reply text as the current process (already the user).
pub fn build_reply(identity: &Identity, keyfiles: &[String]) -> String {
    let mut out = format!(
        "Version: {}\nUser: {}\nHome: {}\n",
        crate::VERSION,
        identity.user,
        identity.home.display()
    );
    let mut status = String::new();
    let mut i = 0;
    for kf in keyfiles {
        let path = identity.home.join(kf);
        match std::fs::File::open(&path) {
            Ok(f) => {
                status.push_str(&format!(" keyfile {} : OK", path.display()));
                // Key files are small; cap what is read anyway.
                let reader = io::BufReader::new(f.take(1 << 20));
                for line in reader.lines() {
                    let Ok(line) = line else { break };
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    out.push_str(&format!("Accepted key {i}: {line}\n"));
                    i += 1;
                }
            }
            Err(e) => status.push_str(&format!(" keyfile {} : {}", path.display(), e)),
        }
    }
    out.push_str(&format!("Status:{status}\n"));
    out
}

/// Entry point of `uftpd __user-info`.
pub fn run_process() -> ExitCode {
    let mut buf = Vec::new();
    if let Err(e) = io::stdin().take(1 << 20).read_to_end(&mut buf) {
        eprintln!("uftpd __user-info: {e}");
        return ExitCode::from(2);
    }
    let job: UserInfoJob = match serde_json::from_slice(&buf) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("uftpd __user-info: {e}");
            return ExitCode::from(2);
        }
    };
    let dropped = if job.switch_user {
        privdrop::become_user(&job.identity)
    } else {
        privdrop::no_new_privs()
    };
    if let Err(e) = dropped {
        println!("500 Not logged in: {e}");
        return ExitCode::FAILURE;
    }
    let reply = build_reply(&job.identity, &job.keyfiles);
    let mut out = io::stdout();
    if out
        .write_all(reply.as_bytes())
        .and_then(|_| out.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Runs the helper and returns its reply.
pub async fn query(exe: &Path, job: &UserInfoJob) -> io::Result<String> {
    let json = serde_json::to_vec(job).map_err(io::Error::other)?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg0("uftpd")
        .arg("__user-info")
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&json).await?;
        stdin.shutdown().await?;
    }
    let mut out = Vec::new();
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no stdout"))?;
    let read = async {
        (&mut stdout).take(4 << 20).read_to_end(&mut out).await?;
        child.wait().await
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "user info helper timed out"))??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}
