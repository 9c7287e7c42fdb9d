//! The `plain` command-port authorizer: no TLS, no certificates.
//!
//! Used when SSL_CONF is not set. Anybody who can connect to a plain-text
//! command port can make uftpd act as any user, so by default only peers on
//! the loopback interface are accepted. An admin who really wants remote
//! peers in plain text (a closed test network) must say so with
//! `ALLOW_INSECURE_COMMAND_PORT=true`.

use std::net::SocketAddr;

use auth_api::{AuthError, Authorized, AuthorizerDescriptor, CommandAuthorizer, Settings};

/// Name of the override variable.
pub const OVERRIDE: &str = "ALLOW_INSECURE_COMMAND_PORT";

/// The plain-text authorizer.
#[derive(Debug)]
pub struct PlainAuthorizer {
    allow_remote: bool,
}

impl PlainAuthorizer {
    /// Builds the authorizer; `allow_remote` accepts non-loopback peers.
    pub fn new(allow_remote: bool) -> Self {
        PlainAuthorizer { allow_remote }
    }
}

#[async_trait::async_trait]
impl CommandAuthorizer for PlainAuthorizer {
    fn name(&self) -> &str {
        "plain"
    }

    fn secure(&self) -> bool {
        false
    }

    fn describe(&self) -> Vec<String> {
        let mut v = vec!["plain text, no TLS, no ACL (SSL_CONF not set)".to_string()];
        if self.allow_remote {
            v.push(format!(
                "{OVERRIDE}=true: peers from ANY address may announce transfers"
            ));
        } else {
            v.push("only peers on the loopback interface may announce transfers".into());
        }
        v
    }

    async fn authorize(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
    ) -> Result<Authorized, AuthError> {
        if !self.allow_remote && !peer.ip().to_canonical().is_loopback() {
            return Err(AuthError::Refused(format!(
                "{} is not a loopback address and the command port is plain text (set SSL_CONF, or {OVERRIDE}=true on a closed network)",
                peer.ip()
            )));
        }
        Ok(Authorized {
            stream: Box::new(stream),
            peer_name: format!("{peer} (plain text)"),
        })
    }
}

fn construct(s: &Settings<'_>) -> Result<Box<dyn CommandAuthorizer>, String> {
    Ok(Box::new(PlainAuthorizer::new(s.get_bool(OVERRIDE, false)?)))
}

inventory::submit! {
    AuthorizerDescriptor {
        name: "plain",
        version: env!("CARGO_PKG_VERSION"),
        description: "plain-text command port, loopback peers only unless ALLOW_INSECURE_COMMAND_PORT",
        constructor: construct,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback_only() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let _c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (s, peer) = l.accept().await.expect("accept");
        let a = PlainAuthorizer::new(false);
        assert!(a.authorize(s, peer).await.is_ok());
        let _c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (s, _) = l.accept().await.expect("accept");
        let remote: SocketAddr = "192.0.2.1:4000".parse().expect("addr");
        assert!(matches!(
            a.authorize(s, remote).await,
            Err(AuthError::Refused(_))
        ));
        let _c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (s, _) = l.accept().await.expect("accept");
        assert!(
            PlainAuthorizer::new(true)
                .authorize(s, remote)
                .await
                .is_ok()
        );
        assert!(auth_api::lookup("plain").is_some());
    }
}
