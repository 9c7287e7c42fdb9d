//! `SSL_CIPHERS`: an OpenSSL cipher list, mapped onto the suites rustls has.
//!
//! As with OpenSSL, the list governs the TLS 1.2 suites; TLS 1.3 suites stay
//! on unless the list names TLS 1.3 suites (`TLS_AES_256_GCM_SHA384`), in
//! which case only those are offered. The OpenSSL list syntax is followed:
//! elements separated by `:`, `,` or blanks; `NAME` adds, `!NAME` removes
//! for good, `-NAME` removes, `+NAME` moves to the end, `A+B` is the
//! intersection, `@STRENGTH`/`@SECLEVEL=n` are accepted and ignored. Names
//! are cipher names (OpenSSL or IANA spelling) and the OpenSSL aliases
//! (`DEFAULT`, `HIGH`, `ECDHE`, `aRSA`, `AESGCM`, `CHACHA20`, ...).
//! Aliases and names that stand for suites rustls does not implement (RC4,
//! 3DES, CBC suites, DHE, PSK, ...) select nothing. A list that leaves no
//! suite at all is an error.

use rustls::SupportedCipherSuite;
use rustls::crypto::ring::cipher_suite as cs;

/// An `SSL_CIPHERS` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CipherError {
    /// Nothing rustls supports is left.
    #[error(
        "SSL_CIPHERS='{spec}' selects no cipher suite that uftpd (rustls) supports{unknown}; supported: {supported}"
    )]
    NothingSelected {
        /// The value.
        spec: String,
        /// Names that selected nothing.
        unknown: String,
        /// What could be used.
        supported: String,
    },
}

/// Result of mapping a cipher list.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Suites to offer, in preference order (TLS 1.3 first).
    pub suites: Vec<SupportedCipherSuite>,
    /// Positive elements of the list that selected no rustls suite.
    pub unmatched: Vec<String>,
}

#[derive(Clone, Copy)]
struct Tls12 {
    suite: SupportedCipherSuite,
    openssl: &'static str,
    ecdsa: bool,
    /// 128, 256, or 0 for ChaCha20
    aes: u16,
}

fn tls12() -> [Tls12; 6] {
    [
        Tls12 {
            suite: cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            openssl: "ECDHE-ECDSA-AES256-GCM-SHA384",
            ecdsa: true,
            aes: 256,
        },
        Tls12 {
            suite: cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            openssl: "ECDHE-RSA-AES256-GCM-SHA384",
            ecdsa: false,
            aes: 256,
        },
        Tls12 {
            suite: cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            openssl: "ECDHE-ECDSA-CHACHA20-POLY1305",
            ecdsa: true,
            aes: 0,
        },
        Tls12 {
            suite: cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            openssl: "ECDHE-RSA-CHACHA20-POLY1305",
            ecdsa: false,
            aes: 0,
        },
        Tls12 {
            suite: cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            openssl: "ECDHE-ECDSA-AES128-GCM-SHA256",
            ecdsa: true,
            aes: 128,
        },
        Tls12 {
            suite: cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            openssl: "ECDHE-RSA-AES128-GCM-SHA256",
            ecdsa: false,
            aes: 128,
        },
    ]
}

fn tls13() -> [(SupportedCipherSuite, &'static str); 3] {
    [
        (cs::TLS13_AES_256_GCM_SHA384, "TLS_AES_256_GCM_SHA384"),
        (cs::TLS13_AES_128_GCM_SHA256, "TLS_AES_128_GCM_SHA256"),
        (
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            "TLS_CHACHA20_POLY1305_SHA256",
        ),
    ]
}

/// The IANA name of a TLS 1.2 suite (`TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`).
fn iana_name(s: &SupportedCipherSuite) -> String {
    format!("{:?}", s.suite())
}

/// The name used in logs: the OpenSSL name for TLS 1.2 suites, the IANA
/// name for TLS 1.3 ones (which OpenSSL also uses).
pub fn display_name(s: &SupportedCipherSuite) -> String {
    tls12()
        .iter()
        .find(|t| t.suite.suite() == s.suite())
        .map(|t| t.openssl.to_string())
        .or_else(|| {
            tls13()
                .iter()
                .find(|(t, _)| t.suite() == s.suite())
                .map(|(_, n)| n.to_string())
        })
        .unwrap_or_else(|| iana_name(s))
}

/// Which of the six TLS 1.2 suites an alias or name stands for; `None` for
/// an element uftpd does not know at all.
fn select_one(name: &str) -> Option<Vec<usize>> {
    let suites = tls12();
    let all = || (0..suites.len()).collect::<Vec<_>>();
    let by = |f: &dyn Fn(&Tls12) -> bool| {
        suites
            .iter()
            .enumerate()
            .filter(|(_, s)| f(s))
            .map(|(i, _)| i)
            .collect::<Vec<_>>()
    };
    let upper = name.to_ascii_uppercase();
    if let Some(i) = suites
        .iter()
        .position(|s| s.openssl == upper || iana_name(&s.suite) == upper)
    {
        return Some(vec![i]);
    }
    let v = match upper.as_str() {
        "ALL" | "DEFAULT" | "HIGH" | "TLSV1.2" | "ECDHE" | "EECDH" | "KECDHE" | "KEECDH"
        | "ECDH" | "FIPS" => all(),
        "ARSA" => by(&|s| !s.ecdsa),
        "AECDSA" | "ECDSA" => by(&|s| s.ecdsa),
        "AES" => by(&|s| s.aes != 0),
        "AESGCM" => by(&|s| s.aes != 0),
        "AES128" => by(&|s| s.aes == 128),
        "AES256" => by(&|s| s.aes == 256),
        "CHACHA20" => by(&|s| s.aes == 0),
        "SUITEB128" => by(&|s| s.ecdsa && s.aes != 0),
        "SUITEB128ONLY" => by(&|s| s.ecdsa && s.aes == 128),
        "SUITEB192" => by(&|s| s.ecdsa && s.aes == 256),
        // OpenSSL aliases of suites rustls does not have
        "COMPLEMENTOFDEFAULT"
        | "COMPLEMENTOFALL"
        | "MEDIUM"
        | "LOW"
        | "EXPORT"
        | "EXP"
        | "ENULL"
        | "NULL"
        | "ANULL"
        | "KRSA"
        | "RSA"
        | "KDHE"
        | "KEDH"
        | "DH"
        | "DHE"
        | "EDH"
        | "KDHR"
        | "KDHD"
        | "KDH"
        | "ADH"
        | "AECDH"
        | "KECDH"
        | "ADSS"
        | "DSS"
        | "AGOST"
        | "AGOST01"
        | "KGOST"
        | "GOST94"
        | "GOST89MAC"
        | "PSK"
        | "KPSK"
        | "KECDHEPSK"
        | "KDHEPSK"
        | "KRSAPSK"
        | "APSK"
        | "SRP"
        | "KSRP"
        | "RC4"
        | "RC2"
        | "DES"
        | "3DES"
        | "IDEA"
        | "SEED"
        | "MD5"
        | "SHA1"
        | "SHA"
        | "SHA256"
        | "SHA384"
        | "AEAD"
        | "CAMELLIA"
        | "CAMELLIA128"
        | "CAMELLIA256"
        | "ARIA"
        | "ARIA128"
        | "ARIA256"
        | "ARIAGCM"
        | "AESCCM"
        | "AESCCM8"
        | "CHACHA20-POLY1305"
        | "SSLV2"
        | "SSLV3"
        | "TLSV1"
        | "TLSV1.0"
        | "ECDHEPSK"
        | "DHEPSK"
        | "RSAPSK" => Vec::new(),
        _ => return None,
    };
    Some(v)
}

/// Maps an OpenSSL cipher list onto rustls suites.
pub fn select(spec: &str) -> Result<Selection, CipherError> {
    let suites = tls12();
    let mut list: Vec<usize> = Vec::new();
    let mut banned = [false; 6];
    let mut tls13_named: Vec<SupportedCipherSuite> = Vec::new();
    let mut unmatched = Vec::new();
    for element in spec
        .split([':', ',', ' ', '\t'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        if element.starts_with('@') {
            continue;
        }
        let (op, body) = match element.as_bytes()[0] {
            b'!' | b'-' | b'+' => (element.as_bytes()[0], &element[1..]),
            _ => (0, element),
        };
        // TLS 1.3 suite names
        if let Some((s, _)) = tls13()
            .into_iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(body))
        {
            if op == 0 && !tls13_named.iter().any(|t| t.suite() == s.suite()) {
                tls13_named.push(s);
            } else if op == b'!' || op == b'-' {
                tls13_named.retain(|t| t.suite() != s.suite());
            }
            continue;
        }
        // A+B+C: intersection
        let mut selected: Option<Vec<usize>> = None;
        let mut known = true;
        for part in body.split('+').filter(|p| !p.is_empty()) {
            match select_one(part) {
                Some(v) => {
                    selected = Some(match selected {
                        None => v,
                        Some(prev) => prev.into_iter().filter(|i| v.contains(i)).collect(),
                    });
                }
                None => known = false,
            }
        }
        let selected = if known {
            selected.unwrap_or_default()
        } else {
            Vec::new()
        };
        match op {
            b'!' => {
                for i in &selected {
                    banned[*i] = true;
                }
                list.retain(|i| !selected.contains(i));
            }
            b'-' => list.retain(|i| !selected.contains(i)),
            b'+' => {
                let (moved, kept): (Vec<usize>, Vec<usize>) =
                    list.iter().partition(|i| selected.contains(i));
                list = kept.into_iter().chain(moved).collect();
            }
            _ => {
                if selected.is_empty() {
                    unmatched.push(element.to_string());
                }
                for i in selected {
                    if !banned[i] && !list.contains(&i) {
                        list.push(i);
                    }
                }
            }
        }
    }
    let t13: Vec<SupportedCipherSuite> = if tls13_named.is_empty() {
        tls13().iter().map(|(s, _)| *s).collect()
    } else {
        tls13_named.clone()
    };
    // OpenSSL refuses a list without any TLS 1.2 suite, unless TLS 1.3
    // suites were named explicitly
    if list.is_empty() && tls13_named.is_empty() {
        let supported: Vec<String> = suites
            .iter()
            .map(|s| s.openssl.to_string())
            .chain(tls13().iter().map(|(_, n)| n.to_string()))
            .collect();
        return Err(CipherError::NothingSelected {
            spec: spec.to_string(),
            unknown: if unmatched.is_empty() {
                String::new()
            } else {
                format!(" (not available: {})", unmatched.join(", "))
            },
            supported: supported.join(", "),
        });
    }
    Ok(Selection {
        suites: t13
            .into_iter()
            .chain(list.into_iter().map(|i| suites[i].suite))
            .collect(),
        unmatched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(spec: &str) -> Vec<String> {
        match select(spec) {
            Ok(s) => s.suites.iter().map(display_name).collect(),
            Err(e) => panic!("{spec}: {e}"),
        }
    }

    fn tls12_names(spec: &str) -> Vec<String> {
        names(spec)
            .into_iter()
            .filter(|n| !n.starts_with("TLS_"))
            .collect()
    }

    #[test]
    fn template_default_list() {
        // the commented-out example of the UFTPD 3.x uftpd-ssl.conf template
        let n = names("DEFAULT:!aNULL:!eNULL:!LOW:!EXPORT:!SSLv2:!IDEA-CBC-SHA");
        assert_eq!(n.len(), 9, "{n:?}");
        assert_eq!(n[0], "TLS_AES_256_GCM_SHA384");
        assert_eq!(tls12_names("HIGH:!aNULL:!MD5").len(), 6);
    }

    #[test]
    fn single_names_and_aliases() {
        assert_eq!(
            tls12_names("ECDHE-RSA-AES256-GCM-SHA384"),
            vec!["ECDHE-RSA-AES256-GCM-SHA384"]
        );
        assert_eq!(
            tls12_names("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
            vec!["ECDHE-ECDSA-AES128-GCM-SHA256"]
        );
        assert_eq!(tls12_names("ECDHE+AESGCM").len(), 4);
        assert_eq!(
            tls12_names("kEECDH+aRSA+AES256"),
            vec!["ECDHE-RSA-AES256-GCM-SHA384"]
        );
        assert_eq!(tls12_names("aECDSA").len(), 3);
        assert_eq!(tls12_names("HIGH:!ECDSA").len(), 3);
        assert_eq!(tls12_names("CHACHA20").len(), 2);
        assert_eq!(tls12_names("ALL:-AES128:AES128").len(), 6);
        assert_eq!(tls12_names("ALL:!AES128:AES128").len(), 4);
        assert_eq!(
            tls12_names("ALL:+AES256")[4..].to_vec(),
            vec![
                "ECDHE-ECDSA-AES256-GCM-SHA384",
                "ECDHE-RSA-AES256-GCM-SHA384"
            ]
        );
        assert_eq!(tls12_names("HIGH:@STRENGTH").len(), 6);
    }

    #[test]
    fn partly_mappable_lists_report_what_is_missing() {
        let s = select("AES256-SHA:DHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256")
            .expect("one suite is available");
        assert_eq!(s.suites.len(), 4);
        assert_eq!(s.unmatched, vec!["AES256-SHA", "DHE-RSA-AES128-GCM-SHA256"]);
    }

    #[test]
    fn unmappable_lists_are_errors() {
        for spec in [
            "AES256-SHA:DES-CBC3-SHA",
            "RC4",
            "HIGH:!HIGH",
            "nonsense",
            "",
        ] {
            let e = select(spec).err().map(|e| e.to_string());
            assert!(
                e.as_deref()
                    .is_some_and(|e| e.contains("selects no cipher suite")),
                "{spec}: {e:?}"
            );
        }
        let e = select("AES256-SHA").err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("not available: AES256-SHA")));
    }

    #[test]
    fn tls13_names_restrict_tls13() {
        let n = names("TLS_AES_256_GCM_SHA384");
        assert_eq!(n, vec!["TLS_AES_256_GCM_SHA384"]);
        let n = names("TLS_CHACHA20_POLY1305_SHA256:ECDHE-RSA-AES128-GCM-SHA256");
        assert_eq!(
            n,
            vec![
                "TLS_CHACHA20_POLY1305_SHA256",
                "ECDHE-RSA-AES128-GCM-SHA256"
            ]
        );
    }

    /// Cross-check with the openssl command line, where it exists: the set
    /// of the six suites selected must be what OpenSSL selects among them.
    #[test]
    fn agrees_with_openssl_cli() {
        let specs = [
            "DEFAULT:!aNULL:!eNULL:!LOW:!EXPORT:!SSLv2:!IDEA-CBC-SHA",
            "HIGH:!aNULL:!MD5",
            "ECDHE+AESGCM",
            "aRSA",
            "ECDSA",
            "AES128",
            "AES256:CHACHA20",
            "HIGH:!ECDSA",
            "ALL:!AES128:AES128",
            "kEECDH+aRSA+AES256",
            "SUITEB128",
            "ECDH",
        ];
        for spec in specs {
            let Ok(out) = std::process::Command::new("openssl")
                .args(["ciphers", "-s", "-tls1_2", spec])
                .output()
            else {
                eprintln!("openssl not available, skipped");
                return;
            };
            let text = String::from_utf8_lossy(&out.stdout);
            let ours: Vec<&str> = tls12().iter().map(|s| s.openssl).collect();
            let mut theirs: Vec<String> = text
                .trim()
                .split(':')
                .filter(|n| ours.contains(n))
                .map(String::from)
                .collect();
            let mut mine = tls12_names(spec);
            theirs.sort();
            mine.sort();
            assert_eq!(mine, theirs, "{spec}");
        }
    }
}
