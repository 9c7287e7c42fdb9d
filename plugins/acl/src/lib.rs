//! The `acl` command-port authorizer: TLS with client certificates and a
//! file of allowed certificate subjects, as UFTPD 3.x does it.
//!
//! Selected by the daemon when `SSL_CONF` is set. Settings:
//! - `SSL_CONF`: the `uftpd-ssl.conf` file of UFTPD 3.x ([`sslconf`]):
//!   `credential.path` (key and certificate chain in one PEM file) or
//!   `credential.key` + `credential.certificate`, `credential.password`
//!   for an encrypted key ([`credentials`]), `truststore` (PEM bundle, or a
//!   directory of PEM files, of the CAs whose certificates are accepted),
//!   `SSL_CIPHERS` (an OpenSSL cipher list, mapped in [`ciphers`]; may also
//!   be set in uftpd.conf).
//! - `ACL` (default `conf/uftpd.acl`): allowed subject DNs ([`acl`], [`dn`]).
//! - `ACL_CHECK_INTERVAL` (seconds, default 10): how often at most the ACL
//!   file is checked for changes.
//! - `SSL_HANDSHAKE_TIMEOUT` (seconds, default 30): time a peer has for the
//!   TLS handshake.
//!
//! A peer must complete a TLS 1.2 or 1.3 handshake with a certificate that
//! chains to a truststore CA and is valid now, and its subject must match
//! an ACL entry. Everything else is refused with a log line that names the
//! certificate (CN, subject, issuer) when there is one.
//!
//! Lines of [`CommandAuthorizer::describe`] that start with `WARNING:` are
//! choices or states an admin should look at (`uftpd check-config` lists
//! them as warnings).

pub mod acl;
pub mod ciphers;
pub mod credentials;
pub mod dn;
pub mod pem;
pub mod sslconf;
pub mod verify;
pub mod x509;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use auth_api::{AuthError, Authorized, AuthorizerDescriptor, CommandAuthorizer, Settings};
use rustls::ServerConfig;
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};

use crate::acl::AclWatcher;
use crate::credentials::CredentialError;
use crate::sslconf::SslConf;
use crate::x509::CertInfo;

/// Variable: seconds between checks of the ACL file.
pub const ACL_CHECK_INTERVAL: &str = "ACL_CHECK_INTERVAL";
/// Variable: seconds a peer has for the TLS handshake.
pub const HANDSHAKE_TIMEOUT: &str = "SSL_HANDSHAKE_TIMEOUT";
/// Default handshake timeout.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default ACL file, relative to the working directory (as in UFTPD 3.x).
pub const DEFAULT_ACL: &str = "conf/uftpd.acl";
/// A server certificate expiring within this many days is warned about.
const EXPIRY_WARNING_DAYS: i64 = 30;

/// Why the authorizer cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// SSL_CONF is not set.
    #[error("SSL_CONF is not set: the 'acl' authorizer needs a uftpd-ssl.conf file")]
    NoSslConf,
    /// SSL_CONF cannot be read.
    #[error("cannot read SSL_CONF file {path}: {source}")]
    ReadSslConf {
        /// File.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// Neither credential.path nor credential.key + credential.certificate.
    #[error(
        "{0}: set credential.path (PEM file with key and certificate) or credential.key and credential.certificate"
    )]
    NoCredential(PathBuf),
    /// No truststore.
    #[error(
        "{0}: truststore is not set: set it to a PEM file with the CA certificates of the Auth and UNICORE/X servers that may send requests"
    )]
    NoTruststore(PathBuf),
    /// A truststore without a usable CA.
    #[error("truststore {path} holds no usable CA certificate{detail}")]
    EmptyTruststore {
        /// File or directory.
        path: PathBuf,
        /// Why certificates were rejected.
        detail: String,
    },
    /// Key or certificate files.
    #[error("{0}")]
    Credential(#[from] CredentialError),
    /// The key does not fit the certificate, or rustls cannot use it.
    #[error("server credential from {path}: {reason}")]
    Key {
        /// Key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// SSL_CIPHERS selects nothing usable.
    #[error("{0}")]
    Ciphers(#[from] ciphers::CipherError),
    /// The ACL file cannot be read at startup.
    #[error("cannot read the ACL file {path}: {source} (set ACL in uftpd.conf)")]
    Acl {
        /// File.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// An invalid setting.
    #[error("invalid value for {name}: '{value}' ({reason})")]
    Setting {
        /// Variable.
        name: &'static str,
        /// Value.
        value: String,
        /// Expected.
        reason: &'static str,
    },
    /// rustls refused the configuration.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// Everything the authorizer is built from.
#[derive(Debug, Clone)]
pub struct Options {
    /// The uftpd-ssl.conf file.
    pub ssl_conf: PathBuf,
    /// The ACL file.
    pub acl: PathBuf,
    /// Minimum time between two checks of the ACL file.
    pub acl_check_interval: Duration,
    /// Time a peer has for the TLS handshake.
    pub handshake_timeout: Duration,
    /// SSL_CIPHERS from uftpd.conf or the environment, used when the
    /// SSL_CONF file does not set it.
    pub ciphers: Option<String>,
}

impl Options {
    /// Reads the options from the daemon settings.
    pub fn from_settings(s: &Settings<'_>) -> Result<Options, SetupError> {
        let nonempty = |n: &str| {
            s.get(n)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let secs =
            |name: &'static str, default: Duration, min: u64| -> Result<Duration, SetupError> {
                match nonempty(name) {
                    None => Ok(default),
                    Some(v) => match v.parse::<u64>() {
                        Ok(n) if n >= min => Ok(Duration::from_secs(n)),
                        _ => Err(SetupError::Setting {
                            name,
                            value: v,
                            reason: if min == 0 {
                                "expected seconds >= 0"
                            } else {
                                "expected seconds >= 1"
                            },
                        }),
                    },
                }
            };
        Ok(Options {
            ssl_conf: nonempty("SSL_CONF")
                .map(PathBuf::from)
                .ok_or(SetupError::NoSslConf)?,
            acl: PathBuf::from(nonempty("ACL").unwrap_or_else(|| DEFAULT_ACL.to_string())),
            acl_check_interval: secs(ACL_CHECK_INTERVAL, acl::DEFAULT_CHECK_INTERVAL, 0)?,
            handshake_timeout: secs(HANDSHAKE_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT, 1)?,
            ciphers: nonempty("SSL_CIPHERS"),
        })
    }
}

/// The TLS + ACL authorizer.
pub struct AclAuthorizer {
    tls: Arc<ServerConfig>,
    acl: Arc<AclWatcher>,
    handshake_timeout: Duration,
    /// describe() lines that do not change while running.
    setup_lines: Vec<String>,
}

impl std::fmt::Debug for AclAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AclAuthorizer")
            .field("acl", &self.acl.path())
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

fn mode_of(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).ok().map(|m| m.permissions().mode())
}

fn days(secs: i64) -> i64 {
    secs.div_euclid(86_400)
}

impl AclAuthorizer {
    /// Loads credential, truststore and ACL and builds the TLS setup.
    pub fn build(opts: &Options) -> Result<AclAuthorizer, SetupError> {
        let conf = SslConf::load(&opts.ssl_conf).map_err(|source| SetupError::ReadSslConf {
            path: opts.ssl_conf.clone(),
            source,
        })?;
        let mut lines = vec![
            "TLS 1.2/1.3 (rustls), client certificate required, peers checked against the ACL"
                .to_string(),
            format!("SSL_CONF {}", opts.ssl_conf.display()),
        ];
        let unknown = conf.unknown_keys();
        if !unknown.is_empty() {
            lines.push(format!(
                "WARNING: {} sets keys uftpd does not use (ignored): {}",
                opts.ssl_conf.display(),
                unknown.join(", ")
            ));
        }

        // server credential
        let (key_path, cert_path) = match (
            conf.get("credential.path"),
            conf.get("credential.key"),
            conf.get("credential.certificate"),
        ) {
            (Some(p), _, _) => (PathBuf::from(p), PathBuf::from(p)),
            (None, Some(k), Some(c)) => (PathBuf::from(k), PathBuf::from(c)),
            _ => return Err(SetupError::NoCredential(opts.ssl_conf.clone())),
        };
        let password = conf.get("credential.password");
        let cred = credentials::load_credential(&key_path, &cert_path, password)?;
        let info = cred.info.clone();
        let left = info.seconds_left();
        lines.push(format!(
            "server certificate {} (issuer {}) from {}, valid until {} ({} days left)",
            info.subject,
            info.issuer,
            cert_path.display(),
            verify::date(info.not_after),
            days(left).max(0)
        ));
        if left < 0 {
            lines.push(format!(
                "WARNING: the server certificate EXPIRED on {}: Auth servers and UNICORE/X will refuse to connect",
                verify::date(info.not_after)
            ));
        } else if days(left) < EXPIRY_WARNING_DAYS {
            lines.push(format!(
                "WARNING: the server certificate expires in {} days, on {}",
                days(left),
                verify::date(info.not_after)
            ));
        }
        if info.not_before > x509::now() {
            lines.push(format!(
                "WARNING: the server certificate is not valid before {}",
                verify::date(info.not_before)
            ));
        }
        lines.push(format!(
            "private key {}{}",
            key_path.display(),
            if cred.was_encrypted {
                " (encrypted, decrypted with credential.password)"
            } else {
                ""
            }
        ));
        if mode_of(&key_path).is_some_and(|m| m & 0o077 != 0) && !cred.was_encrypted {
            lines.push(format!(
                "WARNING: the private key file {} is readable by group or others (chmod 600 it)",
                key_path.display()
            ));
        }
        if password.is_some() && mode_of(&opts.ssl_conf).is_some_and(|m| m & 0o077 != 0) {
            lines.push(format!(
                "WARNING: {} holds credential.password and is readable by group or others (chmod 600 it)",
                opts.ssl_conf.display()
            ));
        }

        // truststore
        let ts_path = conf
            .get("truststore")
            .map(PathBuf::from)
            .ok_or_else(|| SetupError::NoTruststore(opts.ssl_conf.clone()))?;
        let ts = credentials::load_truststore(&ts_path)?;
        if ts.cas.is_empty() {
            return Err(SetupError::EmptyTruststore {
                path: ts_path,
                detail: if ts.rejected.is_empty() {
                    String::new()
                } else {
                    format!(": {}", ts.rejected.join("; "))
                },
            });
        }
        lines.push(format!(
            "truststore {}: {} CA certificate(s)",
            ts_path.display(),
            ts.cas.len()
        ));
        for ca in ts.cas.iter().take(10) {
            lines.push(format!(
                "  trusted CA {} (valid until {})",
                ca.subject,
                verify::date(ca.not_after)
            ));
            if ca.seconds_left() < 0 {
                lines.push(format!(
                    "WARNING: trusted CA {} has expired: certificates it issued are refused",
                    ca.subject
                ));
            }
        }
        if ts.cas.len() > 10 {
            lines.push(format!("  ... and {} more", ts.cas.len() - 10));
        }
        if ts.cas.len() > 20 {
            lines.push(format!(
                "WARNING: the truststore holds {} CAs (a system CA bundle?): any certificate they issue passes TLS, only the ACL keeps strangers out",
                ts.cas.len()
            ));
        }
        for r in &ts.rejected {
            lines.push(format!("WARNING: truststore certificate not usable: {r}"));
        }

        // cipher suites
        let cipher_spec = conf
            .get("SSL_CIPHERS")
            .map(str::to_string)
            .or_else(|| opts.ciphers.clone());
        let mut provider = rustls::crypto::ring::default_provider();
        if let Some(spec) = &cipher_spec {
            let sel = ciphers::select(spec)?;
            if !sel.unmatched.is_empty() {
                lines.push(format!(
                    "WARNING: SSL_CIPHERS elements that select no suite rustls has (ignored): {}",
                    sel.unmatched.join(", ")
                ));
            }
            provider.cipher_suites = sel.suites;
        }
        lines.push(format!(
            "cipher suites{}: {}",
            if cipher_spec.is_some() {
                " (from SSL_CIPHERS)"
            } else {
                ""
            },
            provider
                .cipher_suites
                .iter()
                .map(ciphers::display_name)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
        if provider
            .cipher_suites
            .iter()
            .any(|s| s.version() == &rustls::version::TLS13)
        {
            versions.push(&rustls::version::TLS13);
        }
        if provider
            .cipher_suites
            .iter()
            .any(|s| s.version() == &rustls::version::TLS12)
        {
            versions.push(&rustls::version::TLS12);
        }
        let provider = Arc::new(provider);

        let certified = rustls::sign::CertifiedKey::from_der(
            cred.chain.clone(),
            cred.key.clone_key(),
            &provider,
        )
        .map_err(|e| SetupError::Key {
            path: key_path.clone(),
            reason: match e {
                rustls::Error::InconsistentKeys(_) => format!(
                    "the private key does not belong to the certificate {} in {}",
                    info.subject,
                    cert_path.display()
                ),
                e => e.to_string(),
            },
        })?;
        drop(certified);
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(ts.roots), provider.clone())
                .build()
                .map_err(|e| SetupError::Tls(rustls::Error::General(e.to_string())))?;
        let mut tls = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)?
            .with_client_cert_verifier(Arc::new(verify::RecordingVerifier { inner: verifier }))
            .with_single_cert(cred.chain, cred.key)?;
        // every connection is verified in full: no session resumption
        tls.session_storage = Arc::new(NoServerSessionStorage {});
        tls.send_tls13_tickets = 0;
        lines.push(format!(
            "TLS handshake timeout {}s ({HANDSHAKE_TIMEOUT})",
            opts.handshake_timeout.as_secs()
        ));

        // ACL
        let watcher = AclWatcher::open(&opts.acl, opts.acl_check_interval).map_err(|source| {
            SetupError::Acl {
                path: opts.acl.clone(),
                source,
            }
        })?;
        if mode_of(&opts.acl).is_some_and(|m| m & 0o022 != 0) {
            lines.push(format!(
                "WARNING: the ACL file {} is writable by group or others: whoever can write it decides who may announce transfers",
                opts.acl.display()
            ));
        }
        Ok(AclAuthorizer {
            tls: Arc::new(tls),
            acl: Arc::new(watcher),
            handshake_timeout: opts.handshake_timeout,
            setup_lines: lines,
        })
    }

    /// The ACL file watcher.
    pub fn acl(&self) -> &Arc<AclWatcher> {
        &self.acl
    }

    /// The rustls server configuration.
    pub fn tls_config(&self) -> Arc<ServerConfig> {
        self.tls.clone()
    }

    /// Checks a verified peer's subject against the ACL.
    async fn check_acl(&self, info: &CertInfo, peer: SocketAddr) -> Result<String, AuthError> {
        let acl = self.acl.current().await;
        if let Some(why) = &acl.unreadable {
            return Err(AuthError::Refused(format!(
                "{}: the ACL file {} cannot be read ({why})",
                info.subject.common_name(),
                self.acl.path().display()
            )));
        }
        match acl.find(&info.subject) {
            Some(entry) => Ok(format!(
                "{} ({peer}, ACL line {})",
                info.subject, entry.line
            )),
            None => Err(AuthError::Refused(format!(
                "{} is not allowed by the ACL file {} (certificate subject '{}', issuer '{}')",
                info.subject.common_name(),
                self.acl.path().display(),
                info.subject,
                info.issuer
            ))),
        }
    }
}

#[async_trait::async_trait]
impl CommandAuthorizer for AclAuthorizer {
    fn name(&self) -> &str {
        "acl"
    }

    fn secure(&self) -> bool {
        true
    }

    fn describe(&self) -> Vec<String> {
        let mut v = self.setup_lines.clone();
        let acl = self.acl.snapshot();
        let path = self.acl.path().display();
        v.push(format!(
            "ACL file {path}: {} entr{}, checked for changes every {}s",
            acl.entries.len(),
            if acl.entries.len() == 1 { "y" } else { "ies" },
            self.acl.interval().as_secs()
        ));
        for e in &acl.entries {
            v.push(format!("  ACL line {}: allowing <{}>", e.line, e.text));
            if e.dn.find("2.5.4.3").is_none() {
                v.push(format!(
                    "WARNING: ACL line {} <{}> has no CN: every certificate from the trusted CAs with these attributes is accepted",
                    e.line, e.text
                ));
            }
        }
        for e in &acl.errors {
            v.push(format!("WARNING: ACL file {path} {e}"));
        }
        if let Some(why) = &acl.unreadable {
            v.push(format!(
                "WARNING: the ACL file {path} cannot be read ({why}): every peer is refused"
            ));
        } else if acl.entries.is_empty() {
            v.push(format!(
                "WARNING: the ACL file {path} has no usable entry: every peer is refused"
            ));
        }
        v
    }

    async fn authorize(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
    ) -> Result<Authorized, AuthError> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls.clone());
        let limit = self.handshake_timeout;
        let (result, rejected) = verify::REJECTED
            .scope(RefCell::new(None), async move {
                let r = tokio::time::timeout(limit, acceptor.accept(stream)).await;
                (r, verify::take_rejected())
            })
            .await;
        let tls = match result {
            Err(_) => {
                return Err(AuthError::Handshake(format!(
                    "no TLS handshake within {}s",
                    limit.as_secs()
                )));
            }
            Ok(Err(e)) => return Err(AuthError::Handshake(verify::explain(&e, rejected.as_ref()))),
            Ok(Ok(s)) => s,
        };
        let cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| AuthError::Handshake("no client certificate".into()))?;
        let info = CertInfo::parse(cert)
            .map_err(|e| AuthError::Refused(format!("cannot read the client certificate: {e}")))?;
        let peer_name = self.check_acl(&info, peer).await?;
        Ok(Authorized {
            stream: Box::new(tls),
            peer_name,
        })
    }
}

fn construct(s: &Settings<'_>) -> Result<Box<dyn CommandAuthorizer>, String> {
    let opts = Options::from_settings(s).map_err(|e| e.to_string())?;
    AclAuthorizer::build(&opts)
        .map(|a| Box::new(a) as Box<dyn CommandAuthorizer>)
        .map_err(|e| e.to_string())
}

inventory::submit! {
    AuthorizerDescriptor {
        name: "acl",
        version: env!("CARGO_PKG_VERSION"),
        description: "TLS command port: client certificates from the truststore, subjects checked against the ACL file (SSL_CONF, ACL)",
        constructor: construct,
    }
}
