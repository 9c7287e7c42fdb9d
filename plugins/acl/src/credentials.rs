//! The server credential (private key + certificate chain) and the
//! truststore, from the PEM files `uftpd-ssl.conf` names.
//!
//! Keys may be PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1
//! (`EC PRIVATE KEY`); encrypted either as PKCS#8 (`ENCRYPTED PRIVATE
//! KEY`, PBES2 with PBKDF2 or scrypt and AES or 3DES) or in the traditional
//! OpenSSL way (`Proc-Type: 4,ENCRYPTED` + `DEK-Info`, AES-128/192/256-CBC,
//! DES-EDE3-CBC or DES-CBC).

use std::path::{Path, PathBuf};

use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};

use crate::pem::{self, Block};
use crate::x509::{CertInfo, first_element_len};

/// Why a credential or truststore could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// Malformed PEM.
    #[error("{path}: {source}")]
    Pem {
        /// File.
        path: PathBuf,
        /// What is wrong.
        source: pem::PemError,
    },
    /// Not a PEM file at all.
    #[error("{path} is not a PEM file{hint}")]
    NotPem {
        /// File.
        path: PathBuf,
        /// What it looks like instead.
        hint: &'static str,
    },
    /// No private key in the file.
    #[error("no private key found in {0}")]
    NoKey(PathBuf),
    /// More than one private key.
    #[error("{0} holds more than one private key")]
    TwoKeys(PathBuf),
    /// No certificate in the file.
    #[error("no certificate found in {0}")]
    NoCert(PathBuf),
    /// The key is encrypted and no password was given.
    #[error("the private key in {0} is encrypted: set credential.password in the SSL_CONF file")]
    NeedPassword(PathBuf),
    /// Decryption failed.
    #[error("cannot decrypt the private key in {0}: wrong credential.password?")]
    WrongPassword(PathBuf),
    /// A key format or encryption uftpd cannot read.
    #[error("cannot use the private key in {path}: {reason}")]
    Unsupported {
        /// File.
        path: PathBuf,
        /// What is not supported.
        reason: String,
    },
    /// A certificate that cannot be parsed.
    #[error("{path} line {line}: bad certificate: {reason}")]
    BadCert {
        /// File.
        path: PathBuf,
        /// Line of its BEGIN line.
        line: usize,
        /// Parser message.
        reason: String,
    },
}

/// The server's key and certificate chain.
#[derive(Debug)]
pub struct Credential {
    /// End-entity certificate first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
    /// The end-entity certificate.
    pub info: CertInfo,
    /// The key was stored encrypted.
    pub was_encrypted: bool,
}

fn read(path: &Path) -> Result<Vec<Block>, CredentialError> {
    let bytes = std::fs::read(path).map_err(|source| CredentialError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    if !text.contains("-----BEGIN ") {
        let hint = if bytes.starts_with(&[0xfe, 0xed, 0xfe, 0xed]) {
            " (it is a Java keystore (JKS): convert it to PEM, see the uftpd book, 'TLS and ACL')"
        } else if bytes.first() == Some(&0x30) {
            " (it looks like DER or PKCS#12: convert it to PEM, see the uftpd book, 'TLS and ACL')"
        } else {
            ""
        };
        return Err(CredentialError::NotPem {
            path: path.to_path_buf(),
            hint,
        });
    }
    pem::parse(&text).map_err(|source| CredentialError::Pem {
        path: path.to_path_buf(),
        source,
    })
}

fn is_cert(label: &str) -> bool {
    matches!(
        label,
        "CERTIFICATE" | "X509 CERTIFICATE" | "TRUSTED CERTIFICATE"
    )
}

fn cert_der(block: &Block) -> Vec<u8> {
    let mut der = block.der.clone();
    if block.label == "TRUSTED CERTIFICATE"
        && let Some(n) = first_element_len(&der)
    {
        der.truncate(n);
    }
    der
}

/// Certificates of a PEM file with their parsed details.
pub fn read_certs(
    path: &Path,
) -> Result<Vec<(CertificateDer<'static>, CertInfo)>, CredentialError> {
    let mut out = Vec::new();
    for b in read(path)?.iter().filter(|b| is_cert(&b.label)) {
        let der = cert_der(b);
        let info = CertInfo::parse(&der).map_err(|reason| CredentialError::BadCert {
            path: path.to_path_buf(),
            line: b.line,
            reason,
        })?;
        out.push((CertificateDer::from(der), info));
    }
    Ok(out)
}

/// Loads a key and a certificate chain. `key_path` and `cert_path` may be
/// the same file (`credential.path`).
pub fn load_credential(
    key_path: &Path,
    cert_path: &Path,
    password: Option<&str>,
) -> Result<Credential, CredentialError> {
    let key_blocks = read(key_path)?;
    let mut keys = key_blocks
        .iter()
        .filter(|b| b.label.ends_with("PRIVATE KEY"));
    let key_block = keys
        .next()
        .ok_or_else(|| CredentialError::NoKey(key_path.to_path_buf()))?;
    if keys.next().is_some() {
        return Err(CredentialError::TwoKeys(key_path.to_path_buf()));
    }
    let (key, was_encrypted) = decode_key(key_block, password, key_path)?;
    let certs = read_certs(cert_path)?;
    if certs.is_empty() {
        return Err(CredentialError::NoCert(cert_path.to_path_buf()));
    }
    let info = certs[0].1.clone();
    Ok(Credential {
        chain: certs.into_iter().map(|(c, _)| c).collect(),
        key,
        info,
        was_encrypted,
    })
}

fn decode_key(
    b: &Block,
    password: Option<&str>,
    path: &Path,
) -> Result<(PrivateKeyDer<'static>, bool), CredentialError> {
    let need_password = || CredentialError::NeedPassword(path.to_path_buf());
    let unsupported = |reason: String| CredentialError::Unsupported {
        path: path.to_path_buf(),
        reason,
    };
    let traditional = b
        .header("Proc-Type")
        .is_some_and(|v| v.to_ascii_uppercase().contains("ENCRYPTED"));
    match b.label.as_str() {
        "PRIVATE KEY" => Ok((PrivatePkcs8KeyDer::from(b.der.clone()).into(), false)),
        "ENCRYPTED PRIVATE KEY" => {
            let password = password.ok_or_else(need_password)?;
            let info = pkcs8::EncryptedPrivateKeyInfo::try_from(b.der.as_slice()).map_err(|e| {
                unsupported(format!(
                    "unsupported PKCS#8 encryption ({e}); re-encrypt it with `openssl pkcs8 -topk8 -v2 aes-256-cbc`"
                ))
            })?;
            let doc = info.decrypt(password).map_err(|e| match e {
                // a wrong password shows as bad padding (which pkcs5 0.7
                // reports as EncryptFailed) or, rarely, as garbage DER
                pkcs8::Error::EncryptedPrivateKey(
                    pkcs8::pkcs5::Error::DecryptFailed | pkcs8::pkcs5::Error::EncryptFailed,
                )
                | pkcs8::Error::Asn1(_) => CredentialError::WrongPassword(path.to_path_buf()),
                e => unsupported(format!(
                    "{e}; re-encrypt it with `openssl pkcs8 -topk8 -v2 aes-256-cbc`"
                )),
            })?;
            Ok((
                PrivatePkcs8KeyDer::from(doc.as_bytes().to_vec()).into(),
                true,
            ))
        }
        "RSA PRIVATE KEY" | "EC PRIVATE KEY" => {
            let der = if traditional {
                let password = password.ok_or_else(need_password)?;
                decrypt_traditional(b, password, path)?
            } else {
                b.der.clone()
            };
            let key = if b.label == "RSA PRIVATE KEY" {
                PrivatePkcs1KeyDer::from(der).into()
            } else {
                PrivateSec1KeyDer::from(der).into()
            };
            Ok((key, traditional))
        }
        other => Err(unsupported(format!(
            "'{other}' keys are not supported (use an RSA, ECDSA or Ed25519 key)"
        ))),
    }
}

/// OpenSSL's EVP_BytesToKey with MD5 and one iteration, as used by the
/// traditional PEM encryption.
fn bytes_to_key(password: &[u8], salt: &[u8], len: usize) -> Vec<u8> {
    use md5::{Digest, Md5};
    let mut out = Vec::with_capacity(len + 16);
    let mut prev: Vec<u8> = Vec::new();
    while out.len() < len {
        let mut h = Md5::new();
        h.update(&prev);
        h.update(password);
        h.update(salt);
        prev = h.finalize().to_vec();
        out.extend_from_slice(&prev);
    }
    out.truncate(len);
    out
}

fn decrypt_traditional(b: &Block, password: &str, path: &Path) -> Result<Vec<u8>, CredentialError> {
    use cbc::cipher::block_padding::Pkcs7;
    use cbc::cipher::{BlockDecryptMut, KeyIvInit};

    let unsupported = |reason: String| CredentialError::Unsupported {
        path: path.to_path_buf(),
        reason,
    };
    let dek = b
        .header("DEK-Info")
        .ok_or_else(|| unsupported("encrypted key without a DEK-Info header".into()))?;
    let (alg, iv_hex) = dek
        .split_once(',')
        .ok_or_else(|| unsupported(format!("bad DEK-Info '{dek}'")))?;
    let iv =
        decode_hex(iv_hex.trim()).ok_or_else(|| unsupported(format!("bad DEK-Info '{dek}'")))?;
    let alg = alg.trim().to_ascii_uppercase();
    let (key_len, iv_len) = match alg.as_str() {
        "AES-128-CBC" => (16, 16),
        "AES-192-CBC" => (24, 16),
        "AES-256-CBC" => (32, 16),
        "DES-EDE3-CBC" => (24, 8),
        "DES-CBC" => (8, 8),
        other => {
            return Err(unsupported(format!(
                "cipher {other} is not supported; re-encrypt the key with `openssl pkcs8 -topk8 -v2 aes-256-cbc`"
            )));
        }
    };
    if iv.len() != iv_len {
        return Err(unsupported(format!("bad IV length in DEK-Info '{dek}'")));
    }
    let key = bytes_to_key(password.as_bytes(), &iv[..8], key_len);
    let ct = &b.der;
    let wrong = || CredentialError::WrongPassword(path.to_path_buf());
    let plain = match key_len {
        _ if alg == "DES-EDE3-CBC" => cbc::Decryptor::<des::TdesEde3>::new_from_slices(&key, &iv)
            .map_err(|_| wrong())?
            .decrypt_padded_vec_mut::<Pkcs7>(ct),
        _ if alg == "DES-CBC" => cbc::Decryptor::<des::Des>::new_from_slices(&key, &iv)
            .map_err(|_| wrong())?
            .decrypt_padded_vec_mut::<Pkcs7>(ct),
        16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(&key, &iv)
            .map_err(|_| wrong())?
            .decrypt_padded_vec_mut::<Pkcs7>(ct),
        24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(&key, &iv)
            .map_err(|_| wrong())?
            .decrypt_padded_vec_mut::<Pkcs7>(ct),
        _ => cbc::Decryptor::<aes::Aes256>::new_from_slices(&key, &iv)
            .map_err(|_| wrong())?
            .decrypt_padded_vec_mut::<Pkcs7>(ct),
    }
    .map_err(|_| wrong())?;
    // a wrong password that happens to leave valid padding: not a DER SEQUENCE
    if plain.first() != Some(&0x30) || first_element_len(&plain) != Some(plain.len()) {
        return Err(wrong());
    }
    Ok(plain)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|p| u8::from_str_radix(p, 16).ok()))
        .collect()
}

/// The CAs of a truststore file (or of every file in a directory).
#[derive(Debug)]
pub struct Truststore {
    /// Accepted CA certificates.
    pub roots: rustls::RootCertStore,
    /// Details of the accepted ones.
    pub cas: Vec<CertInfo>,
    /// Certificates that could not be used, with the reason.
    pub rejected: Vec<String>,
}

/// Loads the truststore: a PEM bundle, or a directory of PEM files.
pub fn load_truststore(path: &Path) -> Result<Truststore, CredentialError> {
    let mut files = Vec::new();
    if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|source| CredentialError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        for e in entries.flatten() {
            let p = e.path();
            if p.is_file() {
                files.push(p);
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut roots = rustls::RootCertStore::empty();
    let mut cas = Vec::new();
    let mut rejected = Vec::new();
    let single = files.len() == 1;
    for f in &files {
        let certs = match read_certs(f) {
            Ok(c) => c,
            // a directory may hold other files (hash links are fine, READMEs not)
            Err(CredentialError::NotPem { .. }) if !single => continue,
            Err(e) => return Err(e),
        };
        for (der, info) in certs {
            match roots.add(der) {
                Ok(()) => cas.push(info),
                Err(e) => rejected.push(format!("{} ({}): {e}", info.subject, f.display())),
            }
        }
    }
    Ok(Truststore {
        roots,
        cas,
        rejected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evp_bytes_to_key_known_answer() {
        // `openssl enc -aes-256-cbc -P -md md5 -S 0102030405060708 -pass pass:secret`
        let k = bytes_to_key(b"secret", &[1, 2, 3, 4, 5, 6, 7, 8], 32);
        assert_eq!(
            k.iter().map(|b| format!("{b:02X}")).collect::<String>(),
            TEST_KEY_HEX
        );
    }

    const TEST_KEY_HEX: &str = "C9E5A1BD216DBE1317E230CEF48F38EE7F0E17AD64022144BCCEC4A1AA2879AB";

    #[test]
    fn hex() {
        assert_eq!(decode_hex("00fF10"), Some(vec![0, 255, 16]));
        assert_eq!(decode_hex("0"), None);
        assert_eq!(decode_hex("zz"), None);
    }
}
