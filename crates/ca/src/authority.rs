//! The certificate authority: its key and certificates, from a directory
//! in Istio's `cacerts` layout, and the issuing of workload certificates.
//!
//! | file | what |
//! |---|---|
//! | `ca-cert.pem` | the certificate that signs (a plugged intermediate, or the root itself) |
//! | `ca-key.pem` | its key (PKCS#8, PKCS#1 or SEC1) |
//! | `root-cert.pem` | the root workloads trust |
//! | `cert-chain.pem` | the chain from `ca-cert.pem` up (optional; by default `ca-cert.pem`) |
//!
//! An empty directory gets a self-signed root (ECDSA P-256, ten years),
//! written there with its key at mode 0600, and kept: a restart issues from
//! the same root. A plugged CA (cert-manager's, or one made with Istio's
//! tools) is read as it is, and read again when its files change (checked
//! every [`CHECK_EVERY`]); a change that does not load keeps the last good
//! one in force and says why.
//!
//! A workload certificate names exactly one identity, the caller's proven
//! one (`spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT`), whatever the CSR
//! asks for; it lives the shorter of what was asked and the CA's maximum,
//! and never past the CA's own certificate. The chain returned is the
//! leaf first, the root last.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::csr::{self, CsrError};
use crate::keys::CaKey;

/// The signing certificate.
pub const CA_CERT: &str = "ca-cert.pem";
/// Its key.
pub const CA_KEY: &str = "ca-key.pem";
/// The root.
pub const ROOT_CERT: &str = "root-cert.pem";
/// The chain from the signing certificate up.
pub const CERT_CHAIN: &str = "cert-chain.pem";

/// How often the files are checked for changes.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);
/// The largest CA file read.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// A self-signed root's lifetime.
pub const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
/// How far back a certificate's validity starts, for clocks a little behind.
pub const BACKDATE: Duration = Duration::from_secs(60);

/// The identity a certificate is issued to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    /// The namespace.
    pub namespace: String,
    /// The service account.
    pub service_account: String,
}

impl Identity {
    /// Reads `spiffe://ANY/ns/NAMESPACE/sa/ACCOUNT`.
    pub fn from_spiffe(id: &str) -> Option<Identity> {
        sextant_xds::server::tls::spiffe_account(id).map(|(ns, sa)| Identity {
            namespace: ns.to_owned(),
            service_account: sa.to_owned(),
        })
    }

    /// Its SPIFFE id in `trust_domain`.
    pub fn spiffe(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }
}

/// Why a certificate was not issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssueError {
    /// The CSR is refused.
    Csr(CsrError),
    /// Signing failed (the CA's key).
    Sign(String),
}

impl std::fmt::Display for IssueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IssueError::Csr(e) => e.fmt(f),
            IssueError::Sign(e) => write!(f, "the CA could not sign: {e}"),
        }
    }
}

/// A certificate issued.
#[derive(Clone, Debug)]
pub struct Issued {
    /// PEM certificates: the leaf first, the root last.
    pub chain: Vec<String>,
    /// When the leaf expires.
    pub not_after: SystemTime,
}

/// What signs, as loaded from the files.
struct Signer {
    issuer: Issuer<'static, CaKey>,
    /// The certificates after the leaf: the signing one up to the root.
    chain: Vec<String>,
    root: String,
    /// When the signing certificate expires.
    not_after: SystemTime,
}

/// The CA: its files and what they hold now.
pub struct Authority {
    dir: PathBuf,
    trust_domain: String,
    max_ttl: Duration,
    current: RwLock<(Vec<u8>, Arc<Signer>)>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("dir", &self.dir)
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Option<Vec<u8>>, String> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
        Ok(m) if m.len() > MAX_FILE_BYTES as u64 => {
            return Err(format!(
                "{} is {} bytes, over {MAX_FILE_BYTES}",
                path.display(),
                m.len()
            ));
        }
        Ok(_) => {}
    }
    std::fs::read(path)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The files' contents, to tell a change.
fn contents(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for name in [CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN] {
        if let Ok(Some(bytes)) = read(&dir.join(name)) {
            out.extend_from_slice(name.as_bytes());
            out.extend(bytes);
        }
    }
    out
}

fn pem_certs(bytes: &[u8], what: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not PEM: {e}", what.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", what.display()));
    }
    Ok(certs)
}

fn pem(der: &CertificateDer<'_>) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The first certificate of a PEM chain: its validity (not before, not
/// after), as a workload reads the certificate it was given.
pub fn validity_pem(pem: &str) -> Result<(SystemTime, SystemTime), String> {
    use x509_parser::prelude::FromDer;
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der.as_ref())
        .map_err(|e| format!("cannot read a certificate: {e}"))?;
    let at =
        |secs: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    Ok((
        at(cert.validity().not_before.timestamp()),
        at(cert.validity().not_after.timestamp()),
    ))
}

fn not_after(der: &CertificateDer<'_>) -> Result<SystemTime, String> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der.as_ref())
        .map_err(|e| format!("cannot read a certificate: {e}"))?;
    let secs = cert.validity().not_after.timestamp();
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

/// Makes a self-signed root in `dir`, writing the four files (the key at
/// mode 0600).
fn self_signed(dir: &Path, trust_domain: &str) -> Result<(), String> {
    let key = KeyPair::generate().map_err(|e| format!("a key for the root: {e}"))?;
    let mut params = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| format!("the root's parameters: {e}"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    dn.push(DnType::CommonName, "Sextant root CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + ROOT_LIFETIME).into();
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("the root: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let write = |name: &str, text: &str, mode: u32| {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    // The key first: a directory with a certificate and no key is an error.
    write(CA_KEY, &key.serialize_pem(), 0o600)?;
    write(CA_CERT, &cert.pem(), 0o644)?;
    write(ROOT_CERT, &cert.pem(), 0o644)?;
    write(CERT_CHAIN, &cert.pem(), 0o644)?;
    Ok(())
}

fn load(dir: &Path) -> Result<Signer, String> {
    let need = |name: &str| -> Result<Vec<u8>, String> {
        read(&dir.join(name))?.ok_or_else(|| {
            format!(
                "{} is missing: a CA directory holds {CA_CERT}, {CA_KEY} and {ROOT_CERT} (and optionally {CERT_CHAIN}), or nothing at all (then a root is made there)",
                dir.join(name).display()
            )
        })
    };
    let ca_pem = need(CA_CERT)?;
    let key_pem = need(CA_KEY)?;
    let root_pem = need(ROOT_CERT)?;
    let ca = pem_certs(&ca_pem, &dir.join(CA_CERT))?;
    let root = pem_certs(&root_pem, &dir.join(ROOT_CERT))?;
    let key =
        CaKey::from_pem(&key_pem).map_err(|e| format!("{}: {e}", dir.join(CA_KEY).display()))?;
    // The key must be the certificate's.
    {
        use rcgen::PublicKeyData as _;
        use x509_parser::prelude::FromDer;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(ca[0].as_ref())
            .map_err(|e| format!("{}: {e}", dir.join(CA_CERT).display()))?;
        if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
            return Err(format!(
                "{} is not the key of {}",
                dir.join(CA_KEY).display(),
                dir.join(CA_CERT).display()
            ));
        }
        if !cert.is_ca() {
            return Err(format!(
                "{} is not a CA certificate (basicConstraints CA:TRUE)",
                dir.join(CA_CERT).display()
            ));
        }
    }
    let mut chain: Vec<CertificateDer<'static>> = match read(&dir.join(CERT_CHAIN))? {
        Some(bytes) => pem_certs(&bytes, &dir.join(CERT_CHAIN))?,
        None => vec![ca[0].clone()],
    };
    if chain.first() != Some(&ca[0]) {
        chain.insert(0, ca[0].clone());
    }
    if chain.last() != Some(&root[0]) {
        chain.push(root[0].clone());
    }
    let issuer = Issuer::from_ca_cert_der(&ca[0], key)
        .map_err(|e| format!("{}: {e}", dir.join(CA_CERT).display()))?;
    Ok(Signer {
        not_after: not_after(&ca[0])?,
        issuer,
        chain: chain.iter().map(pem).collect(),
        root: pem(&root[0]),
    })
}

/// What [`Authority::open`] would say of `dir`, without making anything:
/// an empty or absent directory is fine (a root would be made there).
pub fn check(dir: &Path) -> Result<(), String> {
    match std::fs::read_dir(dir).map(|mut entries| entries.next().is_none()) {
        Ok(true) => Ok(()),
        Ok(false) => load(dir).map(|_| ()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

impl Authority {
    /// The CA of `dir` (made there when `dir` is empty or absent), issuing
    /// in `trust_domain` for at most `max_ttl`.
    pub fn open(dir: &Path, trust_domain: &str, max_ttl: Duration) -> Result<Authority, String> {
        let empty = match std::fs::read_dir(dir) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        };
        if empty {
            self_signed(dir, trust_domain)?;
            tracing::info!(dir = %dir.display(), "made a self-signed root CA");
        }
        let signer = load(dir)?;
        Ok(Authority {
            dir: dir.to_owned(),
            trust_domain: trust_domain.to_owned(),
            max_ttl,
            current: RwLock::new((contents(dir), Arc::new(signer))),
        })
    }

    fn signer(&self) -> Arc<Signer> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    /// The trust domain it issues in.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The root workloads trust (PEM).
    pub fn root_pem(&self) -> String {
        self.signer().root.clone()
    }

    /// The longest lifetime it issues.
    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }

    /// Reads the files again if they changed: `Ok(true)` when a new CA is
    /// in force, `Err` (the old one still in force) when the change does
    /// not load. The same broken contents are reported once.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let now = contents(&self.dir);
        if self.current.read().unwrap_or_else(|p| p.into_inner()).0 == now {
            return Ok(false);
        }
        match load(&self.dir) {
            Ok(signer) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = (now, Arc::new(signer));
                Ok(true)
            }
            Err(e) => {
                self.current.write().unwrap_or_else(|p| p.into_inner()).0 = now;
                Err(e)
            }
        }
    }

    /// Issues a certificate for `identity` to the holder of the key in
    /// `csr` (PEM), living `requested` or the maximum, whichever is shorter.
    pub fn issue(
        &self,
        csr_pem: &str,
        identity: &Identity,
        requested: Option<Duration>,
    ) -> Result<Issued, IssueError> {
        let csr = csr::parse(csr_pem).map_err(IssueError::Csr)?;
        self.sign(
            &csr.public_key,
            &[identity.spiffe(&self.trust_domain)],
            &[],
            requested,
        )
    }

    /// Issues a server certificate for `dns` names and `ips` to `key`
    /// (Sextant's own TLS port, when the CA makes it).
    pub fn issue_server(
        &self,
        key: &KeyPair,
        dns: &[String],
        ips: &[std::net::IpAddr],
        ttl: Duration,
    ) -> Result<Issued, IssueError> {
        self.sign(key, dns, ips, Some(ttl))
    }

    fn sign(
        &self,
        public_key: &impl rcgen::PublicKeyData,
        names: &[String],
        ips: &[std::net::IpAddr],
        requested: Option<Duration>,
    ) -> Result<Issued, IssueError> {
        let signer = self.signer();
        let now = SystemTime::now();
        let ttl = requested
            .filter(|d| !d.is_zero())
            .map_or(self.max_ttl, |d| d.min(self.max_ttl));
        let not_after = (now + ttl).min(signer.not_after);
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        for name in names {
            let san = if name.starts_with("spiffe://") {
                SanType::URI(
                    name.as_str()
                        .try_into()
                        .map_err(|e| IssueError::Sign(format!("{name:?}: {e}")))?,
                )
            } else {
                SanType::DnsName(
                    name.as_str()
                        .try_into()
                        .map_err(|e| IssueError::Sign(format!("{name:?}: {e}")))?,
                )
            };
            params.subject_alt_names.push(san);
        }
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = (now - BACKDATE).into();
        params.not_after = not_after.into();
        let mut serial = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
            .map_err(|_| IssueError::Sign("no randomness for a serial number".into()))?;
        serial[0] &= 0x7f;
        params.serial_number = Some(serial.to_vec().into());
        let cert = params
            .signed_by(public_key, &signer.issuer)
            .map_err(|e| IssueError::Sign(e.to_string()))?;
        let mut chain = vec![cert.pem()];
        chain.extend(signer.chain.iter().cloned());
        Ok(Issued { chain, not_after })
    }
}
