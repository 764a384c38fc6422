//! `sextant webhook certs`: a CA and the webhook's serving certificate,
//! for clusters without cert-manager. The API server verifies the webhook
//! with the CA (the MutatingWebhookConfiguration's `caBundle`); the
//! serving certificate names the webhook's Service (`NAME.NAMESPACE.svc`,
//! which is what the API server connects to) and any IPs asked for.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// What was written.
#[derive(Clone, Debug)]
pub struct Written {
    /// The CA certificate (`ca.crt`).
    pub ca: PathBuf,
    /// The serving certificate (`tls.crt`).
    pub cert: PathBuf,
    /// Its key (`tls.key`, mode 0600).
    pub key: PathBuf,
    /// The CA certificate, base64-encoded PEM: the `caBundle`.
    pub ca_bundle: String,
}

fn err(what: &str) -> impl FnOnce(rcgen::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Makes a CA and a serving certificate for the Service `service` in
/// `namespace` (and `ips`), valid for `days`, and writes them into `dir`.
pub fn generate(
    dir: &Path,
    service: &str,
    namespace: &str,
    ips: &[IpAddr],
    days: u32,
) -> Result<Written, String> {
    let now = std::time::SystemTime::now();
    let not_after = now + std::time::Duration::from_secs(u64::from(days) * 86_400);
    let validity = |p: &mut CertificateParams| {
        p.not_before = now.into();
        p.not_after = not_after.into();
    };
    let ca_key = KeyPair::generate().map_err(err("CA key"))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err("CA"))?;
    ca.distinguished_name
        .push(DnType::CommonName, "sextant webhook CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca);
    let ca_cert = ca.self_signed(&ca_key).map_err(err("CA certificate"))?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().map_err(err("key"))?;
    let base = format!("{service}.{namespace}.svc");
    let dns = [
        service.to_owned(),
        format!("{service}.{namespace}"),
        base.clone(),
        format!("{base}.cluster.local"),
    ];
    let mut names = Vec::new();
    for d in dns {
        names.push(SanType::DnsName(
            d.as_str().try_into().map_err(err("a DNS name"))?,
        ));
    }
    names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err("params"))?;
    params.distinguished_name.push(DnType::CommonName, base);
    params.subject_alt_names = names;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut params);
    let cert = params.signed_by(&key, &issuer).map_err(err("sign"))?;

    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let written = Written {
        ca: dir.join("ca.crt"),
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        ca_bundle: base64::engine::general_purpose::STANDARD.encode(ca_cert.pem()),
    };
    // Each file is created with its final mode: the key is never readable
    // by others, not even for a moment.
    let write = |p: &Path, text: &str, mode: u32| {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(p);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(p)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    write(&written.ca, &ca_cert.pem(), 0o644)?;
    write(&written.cert, &cert.pem(), 0o644)?;
    write(&written.key, &key.serialize_pem(), 0o600)?;
    Ok(written)
}
