//! Command-port authorizers: who may announce transfers to uftpd.
//!
//! The command port is where the Auth server or UNICORE/X send transfer
//! requests, so whoever may talk to it may make uftpd read and write any
//! user's files. A [`CommandAuthorizer`] decides for every new connection
//! whether the peer may send a request: it gets the raw TCP connection and
//! either returns a stream to read the request from (for TLS: the decrypted
//! stream after verifying the client certificate) together with a name for
//! the log, or refuses.
//!
//! Authorizers register statically with `inventory::submit!` of an
//! [`AuthorizerDescriptor`]; the daemon picks one by name from its
//! configuration and looks it up with [`lookup`].
//!
//! ```
//! use std::net::SocketAddr;
//! use auth_api::{AuthError, Authorized, CommandAuthorizer, Settings};
//!
//! /// Lets every peer in: a toy, never do this.
//! #[derive(Debug)]
//! struct Everyone;
//!
//! #[async_trait::async_trait]
//! impl CommandAuthorizer for Everyone {
//!     fn name(&self) -> &str { "everyone" }
//!     fn secure(&self) -> bool { false }
//!     fn describe(&self) -> Vec<String> { vec!["everyone may send requests".into()] }
//!     async fn authorize(&self, stream: tokio::net::TcpStream, peer: SocketAddr)
//!         -> Result<Authorized, AuthError> {
//!         Ok(Authorized { stream: Box::new(stream), peer_name: peer.to_string() })
//!     }
//! }
//!
//! fn make(_: &Settings<'_>) -> Result<Box<dyn CommandAuthorizer>, String> {
//!     Ok(Box::new(Everyone))
//! }
//! inventory::submit! {
//!     auth_api::AuthorizerDescriptor {
//!         name: "everyone", version: "0.1.0",
//!         description: "example", constructor: make,
//!     }
//! }
//! assert!(auth_api::lookup("EVERYONE").is_some());
//! ```

use std::fmt;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

/// Version of this API; bumped on every incompatible change.
pub const AUTH_API_VERSION: (u16, u16) = (1, 0);

/// A bidirectional byte stream to read the request from and write the reply to.
pub trait CommandStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> CommandStream for T {}

/// An accepted peer.
pub struct Authorized {
    /// The stream carrying the request.
    pub stream: Box<dyn CommandStream>,
    /// How to name the peer in logs (certificate DN, or address).
    pub peer_name: String,
}

impl fmt::Debug for Authorized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorized")
            .field("peer_name", &self.peer_name)
            .finish_non_exhaustive()
    }
}

/// Why a peer was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The peer is not allowed (not in the ACL, not loopback, ...).
    #[error("peer refused: {0}")]
    Refused(String),
    /// The handshake failed or timed out.
    #[error("handshake failed: {0}")]
    Handshake(String),
}

/// Decides whether command-port peers may send requests.
///
/// The daemon builds one authorizer at startup (by the name in the
/// configuration, see [`lookup`]) and calls [`authorize`] for every
/// accepted command-port connection, concurrently.
///
/// [`authorize`]: CommandAuthorizer::authorize
///
/// # Example
///
/// An authorizer that admits peers from one IPv4 network and says why it
/// refuses the others, tried on a real loopback connection:
///
/// ```
/// use std::net::{IpAddr, Ipv4Addr, SocketAddr};
/// use auth_api::{AuthError, Authorized, CommandAuthorizer};
///
/// #[derive(Debug)]
/// struct Network { net: Ipv4Addr, prefix: u32 }
///
/// impl Network {
///     fn contains(&self, ip: IpAddr) -> bool {
///         let IpAddr::V4(ip) = ip.to_canonical() else { return false };
///         let mask = u32::MAX.checked_shl(32 - self.prefix).unwrap_or(0);
///         u32::from(ip) & mask == u32::from(self.net) & mask
///     }
/// }
///
/// #[async_trait::async_trait]
/// impl CommandAuthorizer for Network {
///     fn name(&self) -> &str { "network" }
///     fn secure(&self) -> bool { false } // addresses can be spoofed on the path
///     fn describe(&self) -> Vec<String> {
///         vec![format!("peers from {}/{} may send requests", self.net, self.prefix)]
///     }
///     async fn authorize(&self, stream: tokio::net::TcpStream, peer: SocketAddr)
///         -> Result<Authorized, AuthError> {
///         if !self.contains(peer.ip()) {
///             return Err(AuthError::Refused(format!("{} is outside {}/{}",
///                                                   peer.ip(), self.net, self.prefix)));
///         }
///         Ok(Authorized { stream: Box::new(stream), peer_name: peer.to_string() })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let _client = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
/// let (stream, peer) = listener.accept().await?;
///
/// let loopback = Network { net: Ipv4Addr::new(127, 0, 0, 0), prefix: 8 };
/// let ok = loopback.authorize(stream, peer).await.expect("loopback is inside 127/8");
/// assert_eq!(ok.peer_name, peer.to_string());
///
/// let _client = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
/// let (stream, peer) = listener.accept().await?;
/// let lan = Network { net: Ipv4Addr::new(10, 0, 0, 0), prefix: 8 };
/// let err = lan.authorize(stream, peer).await.expect_err("127.0.0.1 is not in 10/8");
/// assert_eq!(err.to_string(), "peer refused: 127.0.0.1 is outside 10.0.0.0/8");
/// # Ok(())
/// # }
/// ```
#[async_trait::async_trait]
pub trait CommandAuthorizer: Send + Sync + fmt::Debug {
    /// Configuration name of this authorizer.
    fn name(&self) -> &str;
    /// Whether peers are authenticated cryptographically (TLS); the daemon
    /// warns loudly, and refuses some setups, when this is false.
    fn secure(&self) -> bool;
    /// Lines describing the setup, for the startup log and `check-config`.
    fn describe(&self) -> Vec<String>;
    /// Vets a new connection. Must not take longer than the time an honest
    /// peer needs (use timeouts): the daemon runs many of these at once.
    async fn authorize(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
    ) -> Result<Authorized, AuthError>;
}

/// Read access to the daemon configuration: environment first, then the
/// config file, so plugins can have settings of their own.
///
/// ```
/// use auth_api::Settings;
/// let conf = |name: &str| match name {
///     "MY_PLUGIN_STRICT" => Some("yes".to_string()),
///     "MY_PLUGIN_LEVEL" => Some("often".to_string()),
///     _ => None,
/// };
/// let s = Settings::new(&conf);
/// assert_eq!(s.get_bool("MY_PLUGIN_STRICT", false), Ok(true));
/// assert_eq!(s.get_bool("MY_PLUGIN_QUIET", true), Ok(true)); // unset: default
/// assert!(s.get_bool("MY_PLUGIN_LEVEL", false).unwrap_err().contains("MY_PLUGIN_LEVEL"));
/// assert_eq!(s.get("UNSET"), None);
/// ```
pub struct Settings<'a> {
    lookup: &'a (dyn Fn(&str) -> Option<String> + Sync),
}

impl fmt::Debug for Settings<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Settings")
    }
}

impl<'a> Settings<'a> {
    /// Wraps a lookup function.
    pub fn new(lookup: &'a (dyn Fn(&str) -> Option<String> + Sync)) -> Self {
        Settings { lookup }
    }

    /// The value of a variable, if set.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    /// A boolean variable (`1`/`yes`/`true`/`on` are true, `0`/`no`/
    /// `false`/`off`/empty false); anything else is an error naming it.
    pub fn get_bool(&self, name: &str, default: bool) -> Result<bool, String> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "1" | "yes" | "true" | "on" => Ok(true),
                "0" | "no" | "false" | "off" | "" => Ok(false),
                _ => Err(format!(
                    "invalid value for {name}: '{v}' (expected true/false, yes/no or 1/0)"
                )),
            },
        }
    }
}

/// Builds an authorizer from the configuration.
pub type AuthorizerConstructor = fn(&Settings<'_>) -> Result<Box<dyn CommandAuthorizer>, String>;

/// Static registration of an authorizer plugin.
#[derive(Debug)]
pub struct AuthorizerDescriptor {
    /// Configuration name (matched case-insensitively).
    pub name: &'static str,
    /// Plugin version.
    pub version: &'static str,
    /// One line for `--list-plugins`.
    pub description: &'static str,
    /// Constructor.
    pub constructor: AuthorizerConstructor,
}

inventory::collect!(AuthorizerDescriptor);

/// All registered authorizers.
pub fn registered() -> impl Iterator<Item = &'static AuthorizerDescriptor> {
    inventory::iter::<AuthorizerDescriptor>.into_iter()
}

/// Finds a registered authorizer by name (case-insensitive).
pub fn lookup(name: &str) -> Option<&'static AuthorizerDescriptor> {
    registered().find(|d| d.name.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_bools() {
        let f = |n: &str| match n {
            "A" => Some("yes".to_string()),
            "B" => Some("nope".to_string()),
            _ => None,
        };
        let s = Settings::new(&f);
        assert_eq!(s.get_bool("A", false), Ok(true));
        assert_eq!(s.get_bool("C", true), Ok(true));
        assert!(s.get_bool("B", false).is_err());
    }
}
