//! The `uftpd-ssl.conf` file of UFTPD 3.x: `key=value` lines.
//!
//! Read the way 3.x reads it: split at the first `=`, blanks around key
//! and value removed, no quote removal (a quoted password would have
//! failed with 3.x too, so existing files have none), lines without `=`
//! and lines starting with `#` ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Keys the file may set.
pub const KNOWN_KEYS: &[&str] = &[
    "credential.path",
    "credential.key",
    "credential.certificate",
    "credential.password",
    "truststore",
    "SSL_CIPHERS",
];

/// The settings of the file.
#[derive(Clone, Default)]
pub struct SslConf {
    /// The file.
    pub path: PathBuf,
    /// All `key=value` pairs.
    pub values: BTreeMap<String, String>,
}

impl std::fmt::Debug for SslConf {
    // never print the password
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SslConf")
            .field("path", &self.path)
            .field("keys", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SslConf {
    /// Parses the text of the file.
    pub fn parse(path: &Path, text: &str) -> SslConf {
        let mut values = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                let k = k.trim();
                if !k.is_empty() {
                    values.insert(k.to_string(), v.trim().to_string());
                }
            }
        }
        SslConf {
            path: path.to_path_buf(),
            values,
        }
    }

    /// Reads the file.
    pub fn load(path: &Path) -> std::io::Result<SslConf> {
        let bytes = std::fs::read(path)?;
        Ok(SslConf::parse(path, &String::from_utf8_lossy(&bytes)))
    }

    /// A non-empty value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Keys this version does not use.
    pub fn unknown_keys(&self) -> Vec<&str> {
        self.values
            .keys()
            .map(String::as_str)
            .filter(|k| !KNOWN_KEYS.contains(k))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_3x() {
        let c = SslConf::parse(
            Path::new("x"),
            "# comment\ncredential.path = /etc/uftpd/key.pem\n\
             credential.password=pa=ss \"w\"\n#SSL_CIPHERS=HIGH\ntruststore=\n\
             junk line\nfoo=bar\n",
        );
        assert_eq!(c.get("credential.path"), Some("/etc/uftpd/key.pem"));
        assert_eq!(c.get("credential.password"), Some("pa=ss \"w\""));
        assert_eq!(c.get("SSL_CIPHERS"), None);
        assert_eq!(c.get("truststore"), None);
        assert_eq!(c.unknown_keys(), vec!["foo"]);
        assert!(!format!("{c:?}").contains("pa=ss"));
    }
}
