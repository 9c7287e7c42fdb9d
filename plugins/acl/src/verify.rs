//! Client certificate verification, and messages that say why a peer
//! failed the handshake.
//!
//! The verification itself is rustls' webpki verifier against the
//! truststore. It is wrapped so that, when it rejects a certificate, the
//! certificate's subject is kept for the log line: the wrapper stores it in
//! a task-local slot of the connection's own task (the verifier runs inside
//! the poll of that connection's handshake), so the alert sent to the peer
//! stays the one rustls chose.

use std::cell::RefCell;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::x509::CertInfo;

tokio::task_local! {
    /// The certificate a peer presented, when verification rejected it.
    pub static REJECTED: RefCell<Option<CertInfo>>;
}

/// Takes the certificate recorded by a failed verification in this task.
pub fn take_rejected() -> Option<CertInfo> {
    REJECTED.try_with(|c| c.borrow_mut().take()).ok().flatten()
}

/// The webpki client verifier, recording rejected certificates.
#[derive(Debug)]
pub struct RecordingVerifier {
    /// The real verifier.
    pub inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for RecordingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let result = self
            .inner
            .verify_client_cert(end_entity, intermediates, now);
        if result.is_err()
            && let Ok(info) = CertInfo::parse(end_entity)
        {
            let _ = REJECTED.try_with(|c| *c.borrow_mut() = Some(info));
        }
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn format_time(t: i64) -> String {
    // civil date from days since the epoch (Howard Hinnant's algorithm)
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// A UTC date for messages.
pub fn date(t: i64) -> String {
    format_time(t)
}

/// Explains a failed handshake for the log.
pub fn explain(e: &std::io::Error, cert: Option<&CertInfo>) -> String {
    let who = match cert {
        Some(c) => format!(
            "client certificate {} (subject '{}', issuer '{}')",
            c.subject.common_name(),
            c.subject,
            c.issuer
        ),
        None => "client certificate".to_string(),
    };
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    let Some(err) = inner else {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                "connection closed during the TLS handshake".to_string()
            }
            _ => format!("TLS handshake failed: {e}"),
        };
    };
    match err {
        rustls::Error::NoCertificatesPresented => {
            "the peer sent no client certificate (the command port requires one)".to_string()
        }
        rustls::Error::InvalidCertificate(_) if cert.is_some_and(|c| c.version < 2) => format!(
            "{who} is an X.509 version 1 certificate, which is not accepted: reissue it with extensions (`openssl x509 -req ... -extfile client.ext`, see the book)"
        ),
        rustls::Error::InvalidCertificate(ce) => match ce {
            CertificateError::UnknownIssuer => {
                format!("{who} is not issued by a CA in the truststore")
            }
            CertificateError::Expired => match cert {
                Some(c) => format!("{who} expired on {}", date(c.not_after)),
                None => format!("{who} has expired"),
            },
            CertificateError::ExpiredContext { not_after, .. } => format!(
                "{who} expired on {}",
                date(i64::try_from(not_after.as_secs()).unwrap_or(i64::MAX))
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                match cert {
                    Some(c) => format!("{who} is not valid before {}", date(c.not_before)),
                    None => format!("{who} is not valid yet"),
                }
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                format!(
                    "{who} may not be used for TLS client authentication (its extended key usage lacks clientAuth)"
                )
            }
            CertificateError::BadSignature => format!("{who} has an invalid signature"),
            CertificateError::UnsupportedSignatureAlgorithmContext { .. }
            | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                format!(
                    "{who} (or its chain) is signed with an algorithm rustls does not accept (SHA-1 or MD5?)"
                )
            }
            other => format!("{who} rejected: {other}"),
        },
        rustls::Error::AlertReceived(alert) => format!(
            "the peer aborted the TLS handshake with alert '{alert:?}' (does it trust the CA of the uftpd server certificate?)"
        ),
        rustls::Error::InvalidMessage(_) => format!(
            "the peer did not speak TLS ({err}): is it configured for a plain-text command port?"
        ),
        rustls::Error::PeerIncompatible(p) => {
            format!("TLS versions or cipher suites do not match ({p:?}); see SSL_CIPHERS")
        }
        other => format!("TLS handshake failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(date(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(date(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(date(1_798_761_599), "2026-12-31 23:59:59 UTC");
        assert_eq!(date(-86_400), "1969-12-31 00:00:00 UTC");
    }
}
