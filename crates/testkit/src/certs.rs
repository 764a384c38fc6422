//! Certificates made on the fly for TLS tests (rcgen, ring): a CA, server
//! certificates with DNS and IP names, client certificates with a SPIFFE id;
//! and [`curl_https`], an independent client that verifies what a server
//! presents.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A test CA.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, PEM.
    pub cert_pem: String,
}

/// A certificate and its key, PEM.
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

impl Issued {
    /// The base64 SHA-256 of its public key (SubjectPublicKeyInfo): what
    /// Chromium's `--ignore-certificate-errors-spki-list` trusts.
    pub fn spki_sha256(&self) -> String {
        use base64::Engine;
        let key = KeyPair::from_pem(&self.key_pem).unwrap_or_else(fail("key"));
        // A `PUBLIC KEY` PEM block is the SubjectPublicKeyInfo, base64.
        let body: String = key
            .public_key_pem()
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let spki = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap_or_else(|e| panic!("public key: {e}"));
        let digest = ring::digest::digest(&ring::digest::SHA256, &spki);
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    }

    /// Writes `NAME.pem` and `NAME-key.pem` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert, &self.cert_pem).unwrap_or_else(|e| panic!("write cert: {e}"));
        std::fs::write(&key, &self.key_pem).unwrap_or_else(|e| panic!("write key: {e}"));
        (cert, key)
    }
}

fn fail<T>(what: &str) -> impl FnOnce(rcgen::Error) -> T + '_ {
    move |e| panic!("{what}: {e}")
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap_or_else(fail("CA key"));
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(fail("CA"));
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap_or_else(fail("CA cert"));
        TestCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes the CA certificate to `dir/NAME.pem`.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, &self.cert_pem).unwrap_or_else(|e| panic!("write CA: {e}"));
        path
    }

    fn issue(&self, names: Vec<SanType>, usage: ExtendedKeyUsagePurpose, cn: &str) -> Issued {
        let key = KeyPair::generate().unwrap_or_else(fail("key"));
        let mut params =
            CertificateParams::new(Vec::<String>::new()).unwrap_or_else(fail("params"));
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = names;
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(&key, &self.issuer)
            .unwrap_or_else(fail("sign"));
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A server certificate for `dns` names and 127.0.0.1.
    pub fn server(&self, dns: &[&str]) -> Issued {
        let mut names: Vec<SanType> = dns
            .iter()
            .map(|d| SanType::DnsName((*d).try_into().unwrap_or_else(fail("dns name"))))
            .collect();
        names.push(SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
        self.issue(
            names,
            ExtendedKeyUsagePurpose::ServerAuth,
            dns.first().copied().unwrap_or("server"),
        )
    }

    /// A client certificate whose URI name is `spiffe` (e.g.
    /// `spiffe://cluster.local/ns/shop/sa/web`).
    pub fn client(&self, spiffe: &str) -> Issued {
        let uri = SanType::URI(spiffe.try_into().unwrap_or_else(fail("uri")));
        self.issue(vec![uri], ExtendedKeyUsagePurpose::ClientAuth, "proxy")
    }
}

/// A certificate signing request (PEM) for a new P-256 key, asking for the
/// URI name `spiffe`; and the key, PEM.
pub fn csr(spiffe: &str) -> (String, String) {
    let key = KeyPair::generate().unwrap_or_else(fail("key"));
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(fail("params"));
    params.subject_alt_names = vec![SanType::URI(spiffe.try_into().unwrap_or_else(fail("uri")))];
    let csr = params.serialize_request(&key).unwrap_or_else(fail("csr"));
    (
        csr.pem().unwrap_or_else(fail("csr pem")),
        key.serialize_pem(),
    )
}

/// `curl` over HTTPS to `name` at 127.0.0.1:`port`, trusting `ca` only
/// (verifying the certificate against the name, which it also sends as
/// SNI): the body, or curl's reason.
pub async fn curl_https(name: &str, port: u16, ca: &Path) -> Result<String, String> {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{name}:{port}:127.0.0.1"))
        .arg(format!("https://{name}:{port}/"))
        .output()
        .await
        .map_err(|e| format!("cannot run curl (scripts/install-peers.sh installs it): {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// An HTTPS server that terminates TLS itself (with `cert`) and answers
/// every request with its name: the backend of a TLS passthrough.
pub struct TlsBackend {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsBackend {
    /// Starts one on a free loopback port.
    pub async fn start(name: &str, cert: &Issued) -> TlsBackend {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap_or_else(|e| panic!("certificate: {e}"));
        let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
            .unwrap_or_else(|e| panic!("key: {e}"));
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| panic!("TLS versions: {e}"))
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap_or_else(|e| panic!("server config: {e}"));
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let (listener, addr) = crate::peers::loopback_listener().await;
        let name = name.to_owned();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (acceptor, name) = (acceptor.clone(), name.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(conn).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 8192];
                    let mut seen = Vec::new();
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{name}",
                        name.len()
                    );
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        TlsBackend { addr, task }
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}
