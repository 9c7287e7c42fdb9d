//! Command-port requests: parsing `key=value` lines into typed requests.
//!
//! The wire format (PROTOCOL section 3): `\n`-terminated lines, ended by a
//! line starting with `END`; lines without `=` are ignored.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use base64::Engine;
use serde::{Deserialize, Serialize};

/// What a session may do (`access-permissions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AccessLevel {
    /// Nothing but NOOP/QUIT and the like.
    None,
    /// Listings and stat.
    Info,
    /// Plus downloads and checksums.
    Read,
    /// Plus uploads, mkdir, rename, set times.
    Write,
    /// Plus deletion.
    Full,
}

impl AccessLevel {
    fn parse(s: &str) -> Option<AccessLevel> {
        Some(match s.trim().to_ascii_uppercase().as_str() {
            "NONE" => AccessLevel::None,
            "INFO" => AccessLevel::Info,
            "READ" => AccessLevel::Read,
            "WRITE" => AccessLevel::Write,
            "FULL" | "" => AccessLevel::Full,
            _ => return None,
        })
    }
}

/// Encryption algorithm of the data channel (`algo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CipherAlgo {
    /// Blowfish in ECB mode, key of 1..=56 bytes.
    Blowfish,
    /// AES in CBC mode, key = 16-byte IV + 16/24/32-byte key.
    Aes,
    /// Extension: ChaCha20-Poly1305 records with per-stream keys, 32-byte
    /// session key (`algo=CHACHA20-POLY1305`; never chosen by default).
    ChaCha20Poly1305,
}

impl fmt::Display for CipherAlgo {
    /// The `algo` value, also used in FEAT as `CRYPTED-<algo>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CipherAlgo::Blowfish => "BLOWFISH",
            CipherAlgo::Aes => "AES",
            CipherAlgo::ChaCha20Poly1305 => uftpd_chacha20poly1305::NAME,
        })
    }
}

/// Compression of the data channel (`compress`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compression {
    /// `compress=false` (or absent).
    #[default]
    None,
    /// `compress=true`: gzip, as UFTPD 3.x.
    Gzip,
    /// Extension: `compress=zstd`. UFTPD 3.x takes any value but `true` for
    /// false, so an old server given this runs the session uncompressed
    /// (and its FEAT has no `COMPRESS zstd` line).
    Zstd,
}

impl Compression {
    /// Whether the data streams are compressed at all.
    pub fn is_on(self) -> bool {
        self != Compression::None
    }

    fn parse(v: &str) -> Option<Compression> {
        Some(match v.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "gzip" => Compression::Gzip,
            "false" | "0" | "no" | "" | "null" => Compression::None,
            "zstd" => Compression::Zstd,
            _ => return None,
        })
    }
}

impl fmt::Display for Compression {
    /// The `compress` value as sent: `false`, `true` (gzip) or `zstd`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "false",
            Compression::Gzip => "true",
            Compression::Zstd => "zstd",
        })
    }
}

impl From<Compression> for uftp_client::Compression {
    fn from(c: Compression) -> Self {
        match c {
            Compression::None => uftp_client::Compression::None,
            Compression::Gzip => uftp_client::Compression::Gzip,
            Compression::Zstd => uftp_client::Compression::Zstd,
        }
    }
}

/// A data-channel key. `Debug` never shows the key bytes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionKey {
    /// Algorithm.
    pub algo: CipherAlgo,
    /// Raw key bytes (for AES: IV followed by the key).
    pub bytes: Vec<u8>,
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey({}, {} bytes)", self.algo, self.bytes.len())
    }
}

/// A parsed `uftp-transfer-request`. `Debug` never shows the secret or key.
#[derive(Clone, Serialize, Deserialize)]
pub struct TransferRequest {
    /// Addresses allowed to log in.
    pub client_ips: Vec<IpAddr>,
    /// The raw client-ip value (for messages).
    pub client_ip_raw: String,
    /// Unix login name.
    pub user: String,
    /// One-time password.
    pub secret: String,
    /// Several sessions may use the secret.
    pub persistent: bool,
    /// Base directory specification (see [`TransferRequest::base_dir`]).
    pub file: String,
    /// Initial number of data streams.
    pub streams: u32,
    /// Compression of the data streams (gzip, or the zstd extension).
    pub compress: Compression,
    /// Requested group specification.
    pub group: Option<String>,
    /// Bytes per second cap, 0 = none.
    pub rate_limit: u64,
    /// Data-channel encryption.
    pub key: Option<SessionKey>,
    /// Allowed patterns.
    pub includes: Vec<String>,
    /// Forbidden patterns.
    pub excludes: Vec<String>,
    /// Access level.
    pub access: AccessLevel,
}

impl fmt::Debug for TransferRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransferRequest")
            .field("user", &self.user)
            .field("group", &self.group)
            .field("client_ip", &self.client_ip_raw)
            .field("file", &self.file)
            .field("persistent", &self.persistent)
            .field("streams", &self.streams)
            .field("compress", &self.compress)
            .field("key", &self.key)
            .field("rate_limit", &self.rate_limit)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

impl TransferRequest {
    /// The base directory: the part of `file` before its last `/`
    /// (`None` = no confinement). Java appends `/` to a directory; legacy
    /// UNICORE/X sends `<dir>/___UFTP___MULTI___FILE___SESSION___MODE___`.
    pub fn base_dir(&self) -> Option<&str> {
        let i = self.file.rfind('/')?;
        let d = &self.file[..i];
        if d.is_empty() {
            // "/x" means the root directory as base
            if i == 0 { Some("/") } else { None }
        } else {
            Some(d)
        }
    }
}

/// Splits request text into its key/value map.
pub fn parse_lines(lines: &[String]) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once('=') {
            m.insert(
                k.trim().to_string(),
                v.trim_end_matches(['\r', '\n']).to_string(),
            );
        }
    }
    m
}

fn bool_field(m: &HashMap<String, String>, key: &str) -> Result<bool, String> {
    match m.get(key).map(|s| s.trim().to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) => match v.as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" | "" | "null" => Ok(false),
            _ => Err(format!("invalid value for '{key}': expected true or false")),
        },
    }
}

/// Parses one client-ip entry in Java `getHostAddress()` form, possibly
/// `host/1.2.3.4` or with a `%scope`.
pub fn parse_client_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let s = match s.rfind('/') {
        Some(i) => &s[i + 1..],
        None => s,
    };
    let s = match s.find('%') {
        Some(i) => &s[..i],
        None => s,
    };
    let s = s.trim_start_matches('[').trim_end_matches(']');
    s.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// Server settings that shape a session's codec stack.
#[derive(Debug, Clone, Copy)]
pub struct CodecSettings<'a> {
    /// zlib level of gzip streams (the wire format is the same at every
    /// level).
    pub gzip_level: u32,
    /// zstd level of zstd streams (negative: zstd's fast modes).
    pub zstd_level: i32,
    /// Threads compressing one gzip or zstd stream (`None`: the codec's
    /// default).
    pub compress_threads: Option<u32>,
    /// The gzip codec's `engine` option (auto, zlib, isal).
    pub gzip_engine: &'a str,
    /// The ChaCha20-Poly1305 codec's `engine` option (auto, ring,
    /// libcrypto).
    pub chacha_engine: &'a str,
}

impl Default for CodecSettings<'_> {
    fn default() -> Self {
        CodecSettings {
            gzip_level: crate::config::DEFAULT_GZIP_LEVEL,
            zstd_level: crate::config::DEFAULT_ZSTD_LEVEL,
            compress_threads: None,
            gzip_engine: "auto",
            chacha_engine: "auto",
        }
    }
}

impl TransferRequest {
    /// The codec stack of the data channel (encryption, compression), built
    /// and validated from the request's key/algo/compress with the server's
    /// `settings` (levels, threads, engines).
    pub fn codec_stack(
        &self,
        settings: &CodecSettings<'_>,
    ) -> Result<uftp_datachannel::CodecStack, String> {
        use uftp_datachannel::{CodecParams, CodecStack};
        let stack = match &self.key {
            Some(k) if k.algo == CipherAlgo::ChaCha20Poly1305 => CodecStack::plain().with(
                uftpd_chacha20poly1305::NAME,
                CodecParams::new().with_key(k.bytes.clone()).with_option(
                    uftpd_chacha20poly1305::ENGINE_OPTION,
                    settings.chacha_engine,
                ),
            ),
            key => {
                let algo = key.as_ref().map(|k| k.algo.to_string());
                CodecStack::legacy(
                    key.as_ref().map(|k| k.bytes.as_slice()),
                    algo.as_deref(),
                    false,
                )
            }
        }
        .map_err(|e| e.to_string())?;
        let with_threads = |params: CodecParams| match settings.compress_threads {
            Some(n) => params.with_option("threads", n.to_string()),
            None => params,
        };
        match self.compress {
            Compression::None => Ok(stack),
            Compression::Gzip => stack.with(
                "gzip",
                with_threads(
                    CodecParams::new()
                        .with_option("level", settings.gzip_level.to_string())
                        .with_option(uftpd_gzip::ENGINE_OPTION, settings.gzip_engine),
                ),
            ),
            Compression::Zstd => stack.with(
                uftpd_zstd::NAME,
                with_threads(
                    CodecParams::new().with_option("level", settings.zstd_level.to_string()),
                ),
            ),
        }
        .map_err(|e| e.to_string())
    }
}

/// Builds a transfer request from the key/value map, validating every
/// field. The error text goes to the sender as `ERROR::<text>`.
pub fn parse_transfer(m: &HashMap<String, String>) -> Result<TransferRequest, String> {
    let user = m
        .get("user")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .ok_or("missing 'user'")?;
    let secret = m
        .get("secret")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .ok_or("missing 'secret'")?;
    let client_ip_raw = m.get("client-ip").cloned().unwrap_or_default();
    let client_ips: Vec<IpAddr> = client_ip_raw
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .filter_map(parse_client_ip)
        .collect();
    let streams = match m.get("streams").map(|s| s.trim()) {
        None | Some("") => 1,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| format!("invalid value for 'streams': '{v}'"))?,
    };
    let rate_limit = match m.get("rateLimit").map(|s| s.trim()) {
        None | Some("") => 0,
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| format!("invalid value for 'rateLimit': '{v}'"))?,
    };
    let key = match m.get("key").map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => None,
        Some(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| "invalid 'key': not base64".to_string())?;
            let algo = match m.get("algo").map(|s| s.trim().to_ascii_uppercase()) {
                Some(a) if a == "BLOWFISH" => CipherAlgo::Blowfish,
                Some(a) if a == "AES" => CipherAlgo::Aes,
                Some(a) if a == uftpd_chacha20poly1305::NAME => CipherAlgo::ChaCha20Poly1305,
                Some(a) if !a.is_empty() => {
                    return Err(format!("unsupported encryption algorithm '{a}'"));
                }
                _ => {
                    if matches!(bytes.len(), 32 | 40 | 48) {
                        CipherAlgo::Aes
                    } else {
                        CipherAlgo::Blowfish
                    }
                }
            };
            Some(SessionKey { algo, bytes })
        }
    };
    let access = match m.get("access-permissions") {
        None => AccessLevel::Full,
        Some(v) => AccessLevel::parse(v)
            .ok_or_else(|| format!("invalid value for 'access-permissions': '{v}'"))?,
    };
    let list = |k: &str| -> Vec<String> {
        m.get(k)
            .map(|v| {
                v.split(':')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let request = TransferRequest {
        client_ips,
        client_ip_raw,
        user,
        secret,
        persistent: bool_field(m, "persistent")?,
        file: m.get("file").cloned().unwrap_or_default(),
        streams,
        compress: match m.get("compress") {
            None => Compression::None,
            Some(v) => Compression::parse(v).ok_or_else(|| {
                "invalid value for 'compress': expected true, false or zstd".to_string()
            })?,
        },
        group: m
            .get("group")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()),
        rate_limit,
        key,
        includes: list("includes"),
        excludes: list("excludes"),
        access,
    };
    // A key of the wrong length is refused now, not at transfer time.
    request.codec_stack(&CodecSettings::default())?;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn base_dir_rules() {
        let mut r = parse_transfer(&map(&[("user", "u"), ("secret", "s")])).expect("parse");
        for (file, base) in [
            ("", None),
            ("file.txt", None),
            ("/data/x/", Some("/data/x")),
            ("/data/x/f.bin", Some("/data/x")),
            ("rel/dir/", Some("rel/dir")),
            (
                "/tmp/d/___UFTP___MULTI___FILE___SESSION___MODE___",
                Some("/tmp/d"),
            ),
            ("/", Some("/")),
        ] {
            r.file = file.into();
            assert_eq!(r.base_dir(), base, "{file}");
        }
    }

    #[test]
    fn client_ips() {
        assert_eq!(parse_client_ip("127.0.0.1"), "127.0.0.1".parse().ok());
        assert_eq!(parse_client_ip("host/10.0.0.1"), "10.0.0.1".parse().ok());
        assert_eq!(
            parse_client_ip("0:0:0:0:0:0:0:1%0"),
            "::1".parse().ok(),
            "uncompressed with scope"
        );
        assert_eq!(parse_client_ip("::ffff:10.1.2.3"), "10.1.2.3".parse().ok());
        assert_eq!(parse_client_ip("nonsense"), None);
    }

    #[test]
    fn keys_validated() {
        let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
        let k32 = b64(32);
        let r = parse_transfer(&map(&[("user", "u"), ("secret", "s"), ("key", &k32)]))
            .expect("aes by length");
        assert_eq!(r.key.as_ref().map(|k| k.algo), Some(CipherAlgo::Aes));
        let k20 = b64(20);
        let e = parse_transfer(&map(&[
            ("user", "u"),
            ("secret", "s"),
            ("key", &k20),
            ("algo", "AES"),
        ]));
        assert!(e.is_err());
        let k60 = b64(60);
        assert!(parse_transfer(&map(&[("user", "u"), ("secret", "s"), ("key", &k60)])).is_err());
        let dbg = format!("{r:?}");
        assert!(!dbg.contains(&k32) && !dbg.contains("\"s\""), "{dbg}");
    }

    #[test]
    fn extension_codecs() {
        let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![9u8; n]);
        let req = |extra: &[(&str, &str)]| {
            let mut m = map(&[("user", "u"), ("secret", "s")]);
            for (k, v) in extra {
                m.insert(k.to_string(), v.to_string());
            }
            parse_transfer(&m)
        };
        // compress: true/false as before, zstd (any case), gzip as a synonym
        for (v, c) in [
            ("true", Compression::Gzip),
            ("TRUE", Compression::Gzip),
            ("gzip", Compression::Gzip),
            ("false", Compression::None),
            ("", Compression::None),
            ("zstd", Compression::Zstd),
            ("ZSTD", Compression::Zstd),
        ] {
            let r = req(&[("compress", v)]).expect(v);
            assert_eq!(r.compress, c, "{v}");
            assert_eq!(r.compress.is_on(), c != Compression::None);
        }
        assert_eq!(req(&[]).expect("none").compress, Compression::None);
        let e = req(&[("compress", "lz4")]).expect_err("lz4");
        assert!(e.contains("'compress'"), "{e}");
        assert_eq!(Compression::Zstd.to_string(), "zstd");
        assert_eq!(Compression::Gzip.to_string(), "true");

        // CHACHA20-POLY1305 wants exactly 32 bytes, whatever the case of algo
        let k32 = b64(32);
        let r = req(&[("key", &k32), ("algo", "chacha20-poly1305")]).expect("chacha");
        assert_eq!(
            r.key.as_ref().map(|k| k.algo),
            Some(CipherAlgo::ChaCha20Poly1305)
        );
        assert_eq!(
            CipherAlgo::ChaCha20Poly1305.to_string(),
            "CHACHA20-POLY1305"
        );
        for n in [1, 16, 31, 33, 48, 56] {
            let k = b64(n);
            let e = req(&[("key", &k), ("algo", "CHACHA20-POLY1305")]).expect_err("length");
            assert_eq!(
                e,
                format!("CHACHA20-POLY1305: invalid key length {n} bytes (expected 32 bytes)")
            );
        }
        // never the default: a 32-byte key without algo stays AES
        let r = req(&[("key", &k32)]).expect("aes");
        assert_eq!(r.key.as_ref().map(|k| k.algo), Some(CipherAlgo::Aes));

        // the stacks, outermost first
        let stack = |r: &TransferRequest| {
            let six = CodecSettings {
                gzip_level: 6,
                ..CodecSettings::default()
            };
            r.codec_stack(&six).expect("stack").describe()
        };
        let r = req(&[
            ("key", &k32),
            ("algo", "CHACHA20-POLY1305"),
            ("compress", "zstd"),
        ])
        .expect("both");
        assert_eq!(stack(&r), "CHACHA20-POLY1305+zstd");
        let r = req(&[
            ("key", &k32),
            ("algo", "CHACHA20-POLY1305"),
            ("compress", "true"),
        ])
        .expect("chacha gzip");
        assert_eq!(stack(&r), "CHACHA20-POLY1305+gzip");
        let r = req(&[("key", &b64(48)), ("algo", "AES"), ("compress", "zstd")]).expect("aes zstd");
        assert_eq!(stack(&r), "AES+zstd");
        let r = req(&[("compress", "zstd")]).expect("zstd");
        assert_eq!(stack(&r), "zstd");
        let r = req(&[("key", &b64(56)), ("compress", "true")]).expect("legacy");
        assert_eq!(stack(&r), "BLOWFISH+gzip");
    }

    #[test]
    fn zstd_level_reaches_the_encoder() {
        use std::io::Write;
        // Source text (this crate's own), where the levels differ.
        let text = [
            include_bytes!("config.rs").as_slice(),
            include_bytes!("request.rs"),
        ]
        .concat();
        let r = parse_transfer(&map(&[
            ("user", "u"),
            ("secret", "s"),
            ("compress", "zstd"),
        ]))
        .expect("zstd");
        let at = |zstd_level: i32| {
            let settings = CodecSettings {
                zstd_level,
                compress_threads: Some(1),
                ..CodecSettings::default()
            };
            let stack = r.codec_stack(&settings).expect("stack");
            let mut wire = Vec::new();
            let sink = Box::new(codec_api::PlainSink::new(&mut wire));
            let mut enc = stack.encoder(0, 1, sink).expect("encoder");
            enc.write_all(&text).expect("write");
            enc.finish().expect("finish");
            wire.len()
        };
        let (fast, default, max) = (at(-7), at(crate::config::DEFAULT_ZSTD_LEVEL), at(19));
        assert!(
            fast > default && max < default,
            "-7: {fast}, 1: {default}, 19: {max}"
        );
    }

    #[test]
    fn bad_fields() {
        for (k, v) in [
            ("streams", "x"),
            ("streams", "0"),
            ("rateLimit", "-5"),
            ("persistent", "maybe"),
            ("access-permissions", "ROOT"),
        ] {
            let r = parse_transfer(&map(&[("user", "u"), ("secret", "s"), (k, v)]));
            assert!(r.is_err(), "{k}={v}");
        }
        assert!(parse_transfer(&map(&[("secret", "s")])).is_err());
    }
}
