//! PEM files: `-----BEGIN LABEL-----`, optional RFC 1421 headers
//! (`Proc-Type: 4,ENCRYPTED`, `DEK-Info: ...`) and base64 content.
//!
//! Written here rather than taken from a crate because the traditional
//! OpenSSL encrypted keys carry their cipher in those headers, which the
//! usual PEM readers drop. Text outside the blocks (the "Bag Attributes"
//! that `openssl pkcs12` writes, comments) is ignored.

use base64::Engine;

/// One PEM block.
#[derive(Clone, PartialEq, Eq)]
pub struct Block {
    /// The label (`CERTIFICATE`, `PRIVATE KEY`, ...).
    pub label: String,
    /// RFC 1421 headers, in file order.
    pub headers: Vec<(String, String)>,
    /// The decoded content.
    pub der: Vec<u8>,
    /// Line number of the BEGIN line (1-based), for messages.
    pub line: usize,
}

impl std::fmt::Debug for Block {
    // never print key material
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("label", &self.label)
            .field("line", &self.line)
            .field("bytes", &self.der.len())
            .finish_non_exhaustive()
    }
}

impl Block {
    /// The value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A malformed PEM file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    /// BEGIN without END.
    #[error("line {0}: '-----BEGIN {1}-----' has no matching END line")]
    Unterminated(usize, String),
    /// Content that is not base64.
    #[error("line {0}: the {1} block is not valid base64")]
    Base64(usize, String),
}

fn label_of<'a>(line: &'a str, kind: &str) -> Option<&'a str> {
    line.strip_prefix("-----")?
        .strip_prefix(kind)?
        .strip_prefix(' ')?
        .strip_suffix("-----")
}

/// All PEM blocks of a file.
pub fn parse(text: &str) -> Result<Vec<Block>, PemError> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let Some(label) = label_of(line.trim(), "BEGIN") else {
            continue;
        };
        let label = label.to_string();
        let mut headers = Vec::new();
        let mut body = String::new();
        let mut in_headers = true;
        let mut ended = false;
        for (_, l) in lines.by_ref() {
            let l = l.trim();
            if let Some(end) = label_of(l, "END") {
                ended = end == label;
                break;
            }
            if in_headers {
                if let Some((k, v)) = l.split_once(':') {
                    headers.push((k.trim().to_string(), v.trim().to_string()));
                    continue;
                }
                if l.is_empty() {
                    continue;
                }
                in_headers = false;
            }
            body.push_str(l);
        }
        if !ended {
            return Err(PemError::Unterminated(i + 1, label));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.as_bytes())
            .map_err(|_| PemError::Base64(i + 1, label.clone()))?;
        out.push(Block {
            label,
            headers,
            der,
            line: i + 1,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_headers_and_noise() {
        let text = "Bag Attributes\n    friendlyName: x\nsubject=/CN=x\n\
            -----BEGIN CERTIFICATE-----\nAQID\nBA==\n-----END CERTIFICATE-----\n\
            junk\r\n-----BEGIN RSA PRIVATE KEY-----\r\nProc-Type: 4,ENCRYPTED\r\n\
            DEK-Info: AES-128-CBC,00FF\r\n\r\nBQY=\r\n-----END RSA PRIVATE KEY-----\r\n";
        let b = parse(text).expect("parse");
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].label, "CERTIFICATE");
        assert_eq!(b[0].der, vec![1, 2, 3, 4]);
        assert_eq!(b[0].line, 4);
        assert!(b[0].headers.is_empty());
        assert_eq!(b[1].label, "RSA PRIVATE KEY");
        assert_eq!(b[1].header("proc-type"), Some("4,ENCRYPTED"));
        assert_eq!(b[1].header("DEK-Info"), Some("AES-128-CBC,00FF"));
        assert_eq!(b[1].der, vec![5, 6]);
        assert!(!format!("{:?}", b[1]).contains("5, 6"));
    }

    #[test]
    fn errors() {
        assert_eq!(parse("nothing here"), Ok(vec![]));
        assert!(matches!(
            parse("-----BEGIN CERTIFICATE-----\nAQID\n"),
            Err(PemError::Unterminated(1, _))
        ));
        assert!(matches!(
            parse("-----BEGIN CERTIFICATE-----\nAQID\n-----END PRIVATE KEY-----\n"),
            Err(PemError::Unterminated(1, _))
        ));
        assert!(matches!(
            parse("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"),
            Err(PemError::Base64(1, _))
        ));
    }
}
