//! What uftpd reads from certificates: subject, issuer and validity.

use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

use crate::dn::{Ava, Dn, Rdn, Value, decode_value};

/// The parts of a certificate shown in logs and `check-config`.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// Subject DN.
    pub subject: Dn,
    /// Issuer DN.
    pub issuer: Dn,
    /// notBefore, seconds since the epoch.
    pub not_before: i64,
    /// notAfter, seconds since the epoch.
    pub not_after: i64,
    /// notAfter as text.
    pub not_after_text: String,
    /// Whether the certificate is a CA (basicConstraints cA).
    pub is_ca: bool,
    /// X.509 version as written in the certificate (0 = v1, 2 = v3).
    pub version: u32,
}

impl CertInfo {
    /// Parses a DER certificate.
    pub fn parse(der: &[u8]) -> Result<CertInfo, String> {
        let (rest, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
        if !rest.is_empty() {
            return Err("trailing data after the certificate".into());
        }
        let validity = cert.validity();
        Ok(CertInfo {
            subject: name_to_dn(cert.subject()),
            issuer: name_to_dn(cert.issuer()),
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            not_after_text: validity.not_after.to_string(),
            is_ca: cert.is_ca(),
            version: cert.version().0,
        })
    }

    /// Seconds until notAfter (negative when expired).
    pub fn seconds_left(&self) -> i64 {
        self.not_after.saturating_sub(now())
    }
}

/// Seconds since the epoch, now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Converts a certificate name into a [`Dn`] in string order (most
/// specific RDN first, as RFC 2253 writes it).
pub fn name_to_dn(name: &X509Name<'_>) -> Dn {
    let mut rdns: Vec<Rdn> = name
        .iter()
        .map(|rdn| {
            Rdn(rdn
                .iter()
                .map(|ava| {
                    let any = ava.attr_value();
                    let h = &any.header;
                    let number = h.tag().0;
                    let value = match u8::try_from(number) {
                        Ok(n) if n < 31 => {
                            let class = (h.class() as u8) << 6;
                            let constructed = if h.is_constructed() { 0x20 } else { 0 };
                            decode_value(class | constructed | n, any.data)
                        }
                        _ => Value::Binary {
                            tag: 0xff,
                            content: any.data.to_vec(),
                        },
                    };
                    Ava {
                        oid: ava.attr_type().to_id_string(),
                        value,
                    }
                })
                .collect())
        })
        .collect();
    rdns.reverse();
    Dn(rdns)
}

/// Length of the first DER element of `bytes` (a `TRUSTED CERTIFICATE`
/// block is the certificate followed by OpenSSL's trust settings).
pub fn first_element_len(bytes: &[u8]) -> Option<usize> {
    let first = *bytes.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = bytes
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    let total = header.checked_add(len)?;
    (total <= bytes.len()).then_some(total)
}
