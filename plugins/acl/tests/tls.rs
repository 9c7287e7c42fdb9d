//! The `acl` authorizer against real TLS clients, with certificates made
//! by rcgen at test time.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use auth_api::{AuthError, CommandAuthorizer};
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use time::OffsetDateTime;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use uftpd_acl::{AclAuthorizer, Options, SetupError};

type Ca = CertifiedIssuer<'static, KeyPair>;

fn ca(name: &str) -> Ca {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, name);
    p.distinguished_name.push(DnType::OrganizationName, "Test");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().expect("key");
    CertifiedIssuer::self_signed(p, key).expect("ca")
}

/// A certificate and its key.
struct Leaf {
    cert: CertificateDer<'static>,
    key: KeyPair,
}

impl Leaf {
    fn cert_pem(&self) -> String {
        pem_block("CERTIFICATE", &self.cert)
    }
    fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }
    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key.serialize_der()).into()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Server,
    Client,
    ClientExpired,
    ServerAuthOnly,
}

fn leaf(ca: &Ca, dn: &[(DnType, &str)], kind: Kind) -> Leaf {
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    for (t, v) in dn {
        p.distinguished_name.push(t.clone(), *v);
    }
    p.extended_key_usages = match kind {
        Kind::Server | Kind::ServerAuthOnly => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Kind::Client | Kind::ClientExpired => vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ],
    };
    if kind == Kind::ClientExpired {
        let now = OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(30);
        p.not_after = now - time::Duration::days(1);
    }
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, ca).expect("sign");
    Leaf {
        cert: cert.der().clone(),
        key,
    }
}

fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).expect("ascii"));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

fn auth_dn() -> Vec<(DnType, &'static str)> {
    vec![
        (DnType::CountryName, "EU"),
        (DnType::OrganizationName, "UNICORE"),
        (DnType::CommonName, "Auth"),
    ]
}

/// A directory with CA, server credential, ssl conf and ACL.
struct Site {
    dir: PathBuf,
    ca: Ca,
    ssl_conf: PathBuf,
    acl: PathBuf,
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("uftpd-acl-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
}

impl Site {
    fn new(name: &str) -> Site {
        let dir = tempdir(name);
        let ca = ca("Test CA");
        let server = leaf(&ca, &[(DnType::CommonName, "uftpd")], Kind::Server);
        write(
            &dir.join("server.pem"),
            &format!("{}{}", server.key_pem(), server.cert_pem()),
        );
        write(&dir.join("ca.pem"), &ca.pem());
        let ssl_conf = dir.join("uftpd-ssl.conf");
        write(
            &ssl_conf,
            &format!(
                "# as UFTPD 3.x writes it\ncredential.path={}\ntruststore={}\n",
                dir.join("server.pem").display(),
                dir.join("ca.pem").display()
            ),
        );
        let acl = dir.join("uftpd.acl");
        write(&acl, "# test ACL\nCN=Auth,O=UNICORE,C=EU\n");
        Site {
            dir,
            ca,
            ssl_conf,
            acl,
        }
    }

    fn options(&self) -> Options {
        Options {
            ssl_conf: self.ssl_conf.clone(),
            acl: self.acl.clone(),
            acl_check_interval: Duration::ZERO,
            handshake_timeout: Duration::from_secs(30),
            ciphers: None,
        }
    }

    fn build(&self) -> AclAuthorizer {
        match AclAuthorizer::build(&self.options()) {
            Ok(a) => a,
            Err(e) => panic!("build: {e}"),
        }
    }

    fn client(&self, dn: &[(DnType, &str)]) -> Leaf {
        leaf(&self.ca, dn, Kind::Client)
    }
}

/// A command port served by `auth`: every accepted peer gets `OK <line>`.
/// Authorization results arrive on the returned channel.
async fn serve(
    auth: Arc<AclAuthorizer>,
) -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Result<String, AuthError>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            let auth = auth.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match auth.authorize(stream, peer).await {
                    Ok(a) => {
                        let _ = tx.send(Ok(a.peer_name.clone()));
                        let mut r = BufReader::new(a.stream);
                        let mut line = String::new();
                        let _ = r.read_line(&mut line).await;
                        let mut s = r.into_inner();
                        let _ = s.write_all(format!("OK {line}").as_bytes()).await;
                        let _ = s.shutdown().await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// Connects with TLS, sends one line, returns what the server sent back
/// (empty when it closed without a reply), or the TLS error.
async fn talk(
    addr: SocketAddr,
    trust: &Ca,
    client: Option<&Leaf>,
    tls12_only: bool,
) -> Result<String, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trust.der().clone()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match client {
        Some(c) => builder
            .with_client_auth_cert(vec![c.cert.clone()], c.key_der())
            .map_err(|e| e.to_string())?,
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"request-type=uftp-ping-request\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    tls.read_to_string(&mut reply)
        .await
        .map_err(|e| e.to_string())?;
    Ok(reply)
}

async fn outcome(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Result<String, AuthError>>,
) -> Result<String, AuthError> {
    match rx.recv().await {
        Some(r) => r,
        None => panic!("server loop ended"),
    }
}

fn refused(r: Result<String, AuthError>) -> String {
    match r {
        Ok(name) => panic!("peer {name} was accepted"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn accepted_dn() {
    let site = Site::new("accepted");
    let (addr, mut rx) = serve(Arc::new(site.build())).await;
    let client = site.client(&auth_dn());
    let reply = talk(addr, &site.ca, Some(&client), false).await;
    let name = outcome(&mut rx).await.expect("accepted");
    // the subject in RFC 2253 form (RDNs in certificate order, reversed)
    let subject = name.split(" (").next().unwrap_or_default();
    let dn = uftpd_acl::dn::Dn::parse(subject).expect("subject parses");
    assert!(
        uftpd_acl::dn::Dn::parse("CN=Auth,O=UNICORE,C=EU")
            .expect("dn")
            .matches(&dn)
    );
    assert_eq!(dn.0.len(), 3, "{name}");
    assert!(name.contains(" (127.0.0.1:"), "{name}");
    assert!(name.ends_with("ACL line 2)"), "{name}");
    assert_eq!(reply.as_deref(), Ok("OK request-type=uftp-ping-request\n"));
    // TLS 1.2 works as well
    let reply = talk(addr, &site.ca, Some(&client), true).await;
    assert!(outcome(&mut rx).await.is_ok());
    assert!(reply.is_ok_and(|r| r.starts_with("OK ")));
}

#[tokio::test]
async fn dn_not_in_acl_is_refused_with_its_cn() {
    let site = Site::new("not-in-acl");
    let (addr, mut rx) = serve(Arc::new(site.build())).await;
    let client = site.client(&[
        (DnType::CountryName, "EU"),
        (DnType::OrganizationName, "UNICORE"),
        (DnType::CommonName, "Intruder"),
    ]);
    let reply = talk(addr, &site.ca, Some(&client), false).await;
    let e = refused(outcome(&mut rx).await);
    assert!(
        e.contains("CN=Intruder is not allowed by the ACL file"),
        "{e}"
    );
    assert!(e.contains("issuer 'O=Test,CN=Test CA'"), "{e}");
    assert!(!reply.is_ok_and(|r| r.starts_with("OK")));
}

#[tokio::test]
async fn no_client_certificate() {
    let site = Site::new("no-cert");
    let (addr, mut rx) = serve(Arc::new(site.build())).await;
    let reply = talk(addr, &site.ca, None, false).await;
    let e = refused(outcome(&mut rx).await);
    assert!(e.contains("no client certificate"), "{e}");
    assert!(!reply.is_ok_and(|r| r.starts_with("OK")));
}

#[tokio::test]
async fn certificate_from_an_untrusted_ca() {
    let site = Site::new("untrusted");
    let (addr, mut rx) = serve(Arc::new(site.build())).await;
    let rogue = ca("Rogue CA");
    // same DN as the allowed peer, but from a CA uftpd does not trust
    let client = leaf(&rogue, &auth_dn(), Kind::Client);
    let reply = talk(addr, &site.ca, Some(&client), false).await;
    let e = refused(outcome(&mut rx).await);
    assert!(
        e.contains("CN=Auth") && e.contains("not issued by a CA in the truststore"),
        "{e}"
    );
    assert!(e.contains("Rogue CA"), "{e}");
    assert!(!reply.is_ok_and(|r| r.starts_with("OK")));
}

#[tokio::test]
async fn expired_certificate() {
    let site = Site::new("expired");
    let (addr, mut rx) = serve(Arc::new(site.build())).await;
    let client = leaf(&site.ca, &auth_dn(), Kind::ClientExpired);
    let reply = talk(addr, &site.ca, Some(&client), false).await;
    let e = refused(outcome(&mut rx).await);
    assert!(e.contains("CN=Auth") && e.contains("expired on"), "{e}");
    assert!(!reply.is_ok_and(|r| r.starts_with("OK")));
}

#[tokio::test]
async fn certificate_not_for_client_auth() {
    let site = Site::new("eku");
    let (addr, mut rx) = serve(Arc::new(site.build())).await;
    let client = leaf(&site.ca, &auth_dn(), Kind::ServerAuthOnly);
    let _ = talk(addr, &site.ca, Some(&client), false).await;
    let e = refused(outcome(&mut rx).await);
    assert!(e.contains("TLS client authentication"), "{e}");
}

#[tokio::test]
async fn acl_edited_while_running() {
    let site = Site::new("edit");
    write(&site.acl, "# nobody yet\n");
    let (addr, mut rx) = serve(Arc::new(site.build())).await;
    let client = site.client(&auth_dn());
    let _ = talk(addr, &site.ca, Some(&client), false).await;
    assert!(refused(outcome(&mut rx).await).contains("not allowed by the ACL"));
    // entry added: takes effect without restart
    write(&site.acl, "# nobody yet\ncn=auth, o=unicore\n");
    let reply = talk(addr, &site.ca, Some(&client), false).await;
    assert!(outcome(&mut rx).await.is_ok());
    assert!(reply.is_ok_and(|r| r.starts_with("OK")));
    // entry removed again (a typo'd line instead): refused again
    write(&site.acl, "# nobody yet\nCN=auth,O=unicore,XX=1\n");
    let _ = talk(addr, &site.ca, Some(&client), false).await;
    assert!(refused(outcome(&mut rx).await).contains("not allowed by the ACL"));
    // the file deleted: everybody refused, nothing crashes
    std::fs::remove_file(&site.acl).expect("rm");
    let _ = talk(addr, &site.ca, Some(&client), false).await;
    assert!(refused(outcome(&mut rx).await).contains("cannot be read"));
}

#[tokio::test]
async fn acl_is_not_reread_before_the_interval() {
    let site = Site::new("interval");
    let mut opts = site.options();
    opts.acl_check_interval = Duration::from_secs(3600);
    let auth = AclAuthorizer::build(&opts).expect("build");
    write(&site.acl, "# emptied\n");
    let (addr, mut rx) = serve(Arc::new(auth)).await;
    let client = site.client(&auth_dn());
    let _ = talk(addr, &site.ca, Some(&client), false).await;
    assert!(outcome(&mut rx).await.is_ok(), "old entries still in force");
}

#[tokio::test]
async fn stalled_handshake_does_not_block_others_and_times_out() {
    let site = Site::new("stall");
    let mut opts = site.options();
    opts.handshake_timeout = Duration::from_millis(300);
    let (addr, mut rx) = serve(Arc::new(AclAuthorizer::build(&opts).expect("build"))).await;
    // a peer that connects and sends half a ClientHello, then nothing
    let mut stalled = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .await
        .expect("write");
    // an honest peer gets through meanwhile
    let client = site.client(&auth_dn());
    let reply = talk(addr, &site.ca, Some(&client), false).await;
    assert!(reply.is_ok_and(|r| r.starts_with("OK")));
    let mut results = vec![outcome(&mut rx).await, outcome(&mut rx).await];
    results.sort_by_key(|r| r.is_err());
    assert!(results[0].is_ok());
    let e = refused(results.remove(1));
    assert!(e.contains("no TLS handshake within"), "{e}");
    // and the server has closed the stalled connection
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(30), stalled.read(&mut buf))
        .await
        .expect("closed");
    assert!(matches!(n, Ok(0) | Err(_)));
}

#[tokio::test]
async fn plain_text_peer_is_told_apart() {
    let site = Site::new("plain");
    let (addr, mut rx) = serve(Arc::new(site.build())).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"request-type=uftp-ping-request\nEND\n")
        .await
        .expect("write");
    let e = refused(outcome(&mut rx).await);
    assert!(e.contains("did not speak TLS"), "{e}");
}

fn encrypt_pkcs8(key: &KeyPair, password: &str) -> String {
    let der = key.serialize_der();
    let info = pkcs8::PrivateKeyInfo::try_from(der.as_slice()).expect("pkcs8");
    let params =
        pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(2048, b"saltsalt", &[7u8; 16])
            .expect("params");
    let doc = info.encrypt_with_params(params, password).expect("encrypt");
    pem_block("ENCRYPTED PRIVATE KEY", doc.as_bytes())
}

#[tokio::test]
async fn encrypted_key_with_password() {
    let site = Site::new("encrypted");
    let server = leaf(&site.ca, &[(DnType::CommonName, "uftpd")], Kind::Server);
    write(
        &site.dir.join("key.pem"),
        &encrypt_pkcs8(&server.key, "s3cret pass"),
    );
    write(&site.dir.join("cert.pem"), &server.cert_pem());
    let conf = |password: Option<&str>| {
        let mut t = format!(
            "credential.key={}\ncredential.certificate={}\ntruststore={}\n",
            site.dir.join("key.pem").display(),
            site.dir.join("cert.pem").display(),
            site.dir.join("ca.pem").display()
        );
        if let Some(p) = password {
            t.push_str(&format!("credential.password={p}\n"));
        }
        write(&site.ssl_conf, &t);
    };
    conf(None);
    let e = AclAuthorizer::build(&site.options()).err();
    assert!(
        matches!(
            e,
            Some(SetupError::Credential(
                uftpd_acl::credentials::CredentialError::NeedPassword(_)
            ))
        ),
        "{e:?}"
    );
    conf(Some("wrong"));
    let e = AclAuthorizer::build(&site.options())
        .err()
        .map(|e| e.to_string());
    assert!(
        e.as_deref()
            .is_some_and(|e| e.contains("wrong credential.password")),
        "{e:?}"
    );
    assert!(!e.unwrap_or_default().contains("wrong\n"));
    conf(Some("s3cret pass"));
    let auth = site.build();
    assert!(
        auth.describe()
            .iter()
            .any(|l| l.contains("(encrypted, decrypted with credential.password)"))
    );
    assert!(!auth.describe().iter().any(|l| l.contains("s3cret")));
    let (addr, mut rx) = serve(Arc::new(auth)).await;
    let client = site.client(&auth_dn());
    let reply = talk(addr, &site.ca, Some(&client), false).await;
    assert!(outcome(&mut rx).await.is_ok());
    assert!(reply.is_ok_and(|r| r.starts_with("OK")));
}

/// Traditional OpenSSL encryption (`Proc-Type: 4,ENCRYPTED`), made with
/// the openssl command line where it exists.
#[tokio::test]
async fn traditional_encrypted_keys_from_openssl() {
    let site = Site::new("traditional");
    let server = leaf(&site.ca, &[(DnType::CommonName, "uftpd")], Kind::Server);
    write(&site.dir.join("plain-key.pem"), &server.key_pem());
    write(&site.dir.join("cert.pem"), &server.cert_pem());
    for cipher in ["-aes256", "-aes128", "-des3"] {
        let out = site.dir.join(format!("key{cipher}.pem"));
        let status = std::process::Command::new("openssl")
            .args(["ec", "-in"])
            .arg(site.dir.join("plain-key.pem"))
            .arg(cipher)
            .args(["-passout", "pass:tradpass", "-out"])
            .arg(&out)
            .stderr(std::process::Stdio::null())
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("openssl not available: skipped");
            return;
        }
        let text = std::fs::read_to_string(&out).expect("read");
        assert!(text.contains("Proc-Type: 4,ENCRYPTED"), "{text}");
        write(
            &site.ssl_conf,
            &format!(
                "credential.key={}\ncredential.certificate={}\ncredential.password=tradpass\ntruststore={}\n",
                out.display(),
                site.dir.join("cert.pem").display(),
                site.dir.join("ca.pem").display()
            ),
        );
        let auth = site.build();
        let (addr, mut rx) = serve(Arc::new(auth)).await;
        let client = site.client(&auth_dn());
        let reply = talk(addr, &site.ca, Some(&client), false).await;
        assert!(outcome(&mut rx).await.is_ok(), "{cipher}");
        assert!(reply.is_ok_and(|r| r.starts_with("OK")), "{cipher}");
    }
}

#[test]
fn setup_errors_are_clear() {
    let site = Site::new("errors");
    // key of another certificate
    let other = leaf(&site.ca, &[(DnType::CommonName, "other")], Kind::Server);
    let server = leaf(&site.ca, &[(DnType::CommonName, "uftpd")], Kind::Server);
    write(
        &site.dir.join("mixed.pem"),
        &format!("{}{}", other.key_pem(), server.cert_pem()),
    );
    let base = format!("truststore={}\n", site.dir.join("ca.pem").display());
    write(
        &site.ssl_conf,
        &format!(
            "{base}credential.path={}\n",
            site.dir.join("mixed.pem").display()
        ),
    );
    let e = AclAuthorizer::build(&site.options())
        .err()
        .map(|e| e.to_string());
    assert!(
        e.as_deref()
            .is_some_and(|e| e.contains("does not belong to the certificate CN=uftpd")),
        "{e:?}"
    );
    // no credential
    write(&site.ssl_conf, &base);
    assert!(matches!(
        AclAuthorizer::build(&site.options()),
        Err(SetupError::NoCredential(_))
    ));
    // no truststore
    write(
        &site.ssl_conf,
        &format!(
            "credential.path={}\n",
            site.dir.join("server.pem").display()
        ),
    );
    assert!(matches!(
        AclAuthorizer::build(&site.options()),
        Err(SetupError::NoTruststore(_))
    ));
    // a keystore where PEM is expected
    std::fs::write(
        site.dir.join("ks.jks"),
        [0xfe, 0xed, 0xfe, 0xed, 0, 0, 0, 2],
    )
    .expect("write");
    write(
        &site.ssl_conf,
        &format!(
            "{base}credential.path={}\n",
            site.dir.join("ks.jks").display()
        ),
    );
    let e = AclAuthorizer::build(&site.options())
        .err()
        .map(|e| e.to_string());
    assert!(e.is_some_and(|e| e.contains("Java keystore")));
    // an unusable cipher list
    write(
        &site.ssl_conf,
        &format!(
            "{base}credential.path={}\nSSL_CIPHERS=AES256-SHA:DES-CBC3-SHA\n",
            site.dir.join("server.pem").display()
        ),
    );
    let e = AclAuthorizer::build(&site.options())
        .err()
        .map(|e| e.to_string());
    assert!(e.is_some_and(|e| e.contains("selects no cipher suite")));
    // a missing ACL file
    write(
        &site.ssl_conf,
        &format!(
            "{base}credential.path={}\n",
            site.dir.join("server.pem").display()
        ),
    );
    let mut opts = site.options();
    opts.acl = site.dir.join("missing.acl");
    let e = AclAuthorizer::build(&opts).err().map(|e| e.to_string());
    assert!(e.is_some_and(|e| e.contains("cannot read the ACL file")));
}

#[tokio::test]
async fn cipher_list_is_applied() {
    let site = Site::new("ciphers");
    let text = std::fs::read_to_string(&site.ssl_conf).expect("read");
    // one TLS 1.2 suite rustls has, one it has not
    write(
        &site.ssl_conf,
        &format!("{text}SSL_CIPHERS=ECDHE-ECDSA-AES128-GCM-SHA256:AES256-SHA\n"),
    );
    let auth = site.build();
    let d = auth.describe().join("\n");
    assert!(d.contains("ECDHE-ECDSA-AES128-GCM-SHA256"), "{d}");
    assert!(!d.contains("ECDHE-RSA-AES128-GCM-SHA256"), "{d}");
    assert!(
        d.contains(
            "WARNING: SSL_CIPHERS elements that select no suite rustls has (ignored): AES256-SHA"
        ),
        "{d}"
    );
    let (addr, mut rx) = serve(Arc::new(auth)).await;
    let client = site.client(&auth_dn());
    let reply = talk(addr, &site.ca, Some(&client), true).await;
    assert!(outcome(&mut rx).await.is_ok());
    assert!(reply.is_ok_and(|r| r.starts_with("OK")));
}

#[test]
fn describe_reports_what_an_admin_needs() {
    let site = Site::new("describe");
    write(
        &site.acl,
        "CN=Auth,O=UNICORE,C=EU\n# comment\nO=UNICORE\nCN=broken\\\n",
    );
    let d = site.build().describe();
    let text = d.join("\n");
    assert!(text.contains("client certificate required"), "{text}");
    assert!(
        text.contains("server certificate CN=uftpd (issuer O=Test,CN=Test CA)"),
        "{text}"
    );
    assert!(text.contains("1 CA certificate(s)"), "{text}");
    assert!(
        text.contains("ACL file") && text.contains("2 entries"),
        "{text}"
    );
    assert!(
        text.contains("ACL line 1: allowing <CN=Auth,O=UNICORE,C=EU>"),
        "{text}"
    );
    assert!(
        d.iter()
            .any(|l| l.starts_with("WARNING: ACL line 3 <O=UNICORE> has no CN")),
        "{text}"
    );
    assert!(
        d.iter()
            .any(|l| l.starts_with("WARNING:") && l.contains("line 4: cannot parse")),
        "{text}"
    );
}

#[test]
fn registered_and_built_from_settings() {
    let site = Site::new("settings");
    let ssl = site.ssl_conf.display().to_string();
    let acl = site.acl.display().to_string();
    let lookup = move |n: &str| match n {
        "SSL_CONF" => Some(ssl.clone()),
        "ACL" => Some(acl.clone()),
        "ACL_CHECK_INTERVAL" => Some("0".into()),
        _ => None,
    };
    let d = auth_api::lookup("acl").expect("registered");
    let a = (d.constructor)(&auth_api::Settings::new(&lookup)).expect("built");
    assert!(a.secure());
    assert!(a.describe().iter().any(|l| l.contains("every 0s")));
    let bad = |n: &str| match n {
        "SSL_CONF" => Some("x".into()),
        "SSL_HANDSHAKE_TIMEOUT" => Some("0".into()),
        _ => None,
    };
    let e = (d.constructor)(&auth_api::Settings::new(&bad)).err();
    assert!(e.is_some_and(|e| e.contains("SSL_HANDSHAKE_TIMEOUT")));
    let none = |_: &str| None;
    let e = (d.constructor)(&auth_api::Settings::new(&none)).err();
    assert!(e.is_some_and(|e| e.contains("SSL_CONF is not set")));
}

/// OpenSSL 1.0's default `openssl pkcs8 -topk8` encryption (PKCS#12 PBE
/// with 3DES) is not supported: the message says how to re-encrypt.
#[test]
fn legacy_pkcs12_pbe_key_is_refused_with_advice() {
    let site = Site::new("pkcs12pbe");
    let server = leaf(&site.ca, &[(DnType::CommonName, "uftpd")], Kind::Server);
    write(&site.dir.join("plain-key.pem"), &server.key_pem());
    write(&site.dir.join("cert.pem"), &server.cert_pem());
    let out = site.dir.join("key-v1.pem");
    let status = std::process::Command::new("openssl")
        .args(["pkcs8", "-topk8", "-v1", "PBE-SHA1-3DES", "-in"])
        .arg(site.dir.join("plain-key.pem"))
        .args(["-passout", "pass:x", "-out"])
        .arg(&out)
        .stderr(std::process::Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("openssl not available: skipped");
        return;
    }
    write(
        &site.ssl_conf,
        &format!(
            "credential.key={}\ncredential.certificate={}\ncredential.password=x\ntruststore={}\n",
            out.display(),
            site.dir.join("cert.pem").display(),
            site.dir.join("ca.pem").display()
        ),
    );
    let e = AclAuthorizer::build(&site.options())
        .err()
        .map(|e| e.to_string());
    assert!(
        e.as_deref()
            .is_some_and(|e| e.contains("openssl pkcs8 -topk8 -v2 aes-256-cbc")),
        "{e:?}"
    );
}
