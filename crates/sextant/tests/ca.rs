//! Sextant's CA end to end: `--ca-dir` on an empty directory, the TLS port
//! serving a certificate that CA made, and Istio's certificate API called
//! by grpcio (a client that shares no code with Sextant) with a bearer
//! token, then with the issued certificate as a client certificate: the
//! leaf names the proven identity whatever the CSR asks, its
//! lifetime is bounded, weak keys and missing credentials are refused, and
//! every outcome is counted on `/metrics`.
#![allow(clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use sextant_testkit::peers::{HttpBackend, free_port, python_path, workspace_root};

/// What the client printed: the chain, or the gRPC status.
struct Answer(serde_json::Value);

impl Answer {
    fn chain(&self) -> Vec<String> {
        let chain = self.0["chain"]
            .as_array()
            .unwrap_or_else(|| panic!("no chain: {}", self.0));
        chain
            .iter()
            .map(|c| c.as_str().expect("pem").to_owned())
            .collect()
    }

    fn code(&self) -> &str {
        self.0["code"].as_str().unwrap_or("OK")
    }
}

/// Calls CreateCertificate on `addr` through the Python client.
async fn create(addr: &str, root: &Path, token: &str, csr: &str, ttl: u64, dir: &Path) -> Answer {
    create_as(addr, root, token, csr, ttl, dir, None).await
}

/// As [`create`], presenting a client certificate (chain and key files).
async fn create_as(
    addr: &str,
    root: &Path,
    token: &str,
    csr: &str,
    ttl: u64,
    dir: &Path,
    client: Option<(&Path, &Path)>,
) -> Answer {
    let csr_file = dir.join(format!("req-{}.csr", free_port()));
    std::fs::write(&csr_file, csr).expect("write csr");
    let script = workspace_root().join("crates/sextant/tests/clients/ca_client.py");
    let out = tokio::process::Command::new(python_path())
        .arg(&script)
        .args([addr, root.to_str().expect("path"), "localhost", token])
        .arg(&csr_file)
        .arg(ttl.to_string())
        .args(client.map(|(c, k)| [c, k]).into_iter().flatten())
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (scripts/install-peers.sh installs grpcio): {e}",
                python_path().display()
            )
        });
    assert!(
        out.status.success(),
        "ca_client.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Answer(serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ca_client.py printed {:?}: {e}",
            String::from_utf8_lossy(&out.stdout)
        )
    }))
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("a PEM certificate")
}

/// The leaf's URI names and its validity.
fn leaf(pem: &str) -> (Vec<String>, SystemTime, SystemTime) {
    use x509_parser::prelude::*;
    let der = der(pem);
    let (_, cert) = X509Certificate::from_der(der.as_ref()).expect("certificate");
    let uris = cert
        .subject_alternative_name()
        .expect("san")
        .map(|san| {
            san.value
                .general_names
                .iter()
                .map(|n| match n {
                    GeneralName::URI(u) => (*u).to_owned(),
                    other => format!("{other:?}"),
                })
                .collect()
        })
        .unwrap_or_default();
    let at = |t: ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).expect("time"))
    };
    (
        uris,
        at(cert.validity().not_before),
        at(cert.validity().not_after),
    )
}

/// Verifies `chain` (leaf first, root last) as a client certificate
/// against `root` with webpki, as a peer sidecar would.
fn verify(chain: &[String], root: &str) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(root)).expect("add root");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        provider,
    )
    .build()
    .expect("verifier");
    let ders: Vec<_> = chain.iter().map(|c| der(c)).collect();
    verifier
        .verify_client_cert(&ders[0], &ders[1..ders.len() - 1], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn metric(sx: &Sextant, line: &str) -> u64 {
    let (_, body) = sx.get("/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn workloads_get_certificates_for_the_identity_they_prove() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let backend = HttpBackend::start("web").await;
    let mesh_file = d.join("mesh.yaml");
    std::fs::write(&mesh_file, mesh(&[&backend])).expect("write mesh");
    let tokens = d.join("tokens");
    std::fs::write(&tokens, "tok-web apps web\n").expect("write tokens");
    let ca_dir = d.join("ca");
    let tls_addr = format!("127.0.0.1:{}", free_port());
    let p = |p: &Path| p.to_str().expect("path").to_owned();
    let sx = Sextant::start(
        d,
        &[
            "--file",
            &p(&mesh_file),
            "--xds-tls-addr",
            &tls_addr,
            "--ca-dir",
            &p(&ca_dir),
            "--trust-domain",
            "example.org",
            "--workload-cert-ttl",
            "1h",
            "--xds-token-file",
            &p(&tokens),
        ],
    )
    .await;

    // The empty directory got a root, its key readable by the owner only.
    let root_file = ca_dir.join("root-cert.pem");
    let root = std::fs::read_to_string(&root_file).expect("root-cert.pem written");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(ca_dir.join("ca-key.pem"))
            .expect("ca-key.pem written")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the CA key's mode");

    // The CSR asks for another identity and a day; the token proves
    // apps/web and the server allows an hour. grpcio checks the TLS port's
    // certificate against the root, so the port's certificate is the CA's.
    let (csr, key) = sextant_testkit::certs::csr("spiffe://example.org/ns/kube-system/sa/admin");
    let answer = create(&tls_addr, &root_file, "tok-web", &csr, 86_400, d).await;
    let chain = answer.chain();
    assert_eq!(chain.len(), 2, "leaf and self-signed root: {chain:?}");
    assert_eq!(chain[1].trim(), root.trim(), "the root comes last");
    verify(&chain, &root).expect("the leaf chains to the root");
    let (uris, not_before, not_after) = leaf(&chain[0]);
    assert_eq!(uris, ["spiffe://example.org/ns/apps/sa/web"]);
    let lifetime = not_after.duration_since(not_before).expect("ordered");
    assert!(
        lifetime <= Duration::from_secs(3_600 + 60),
        "bounded by --workload-cert-ttl (plus the backdating for clock skew): {lifetime:?}"
    );
    // The certificate itself proves the identity: presented as a client
    // certificate, with no token, it gets the next one (what renewal with
    // the workload certificate looks like).
    let (csr2, _) = sextant_testkit::certs::csr("spiffe://example.org/ns/other/sa/other");
    let (cert_file, key_file) = (d.join("web.pem"), d.join("web-key.pem"));
    std::fs::write(&cert_file, chain.concat()).expect("write");
    std::fs::write(&key_file, &key).expect("write");
    let renewed = create_as(
        &tls_addr,
        &root_file,
        "-",
        &csr2,
        600,
        d,
        Some((&cert_file, &key_file)),
    )
    .await;
    assert_eq!(
        leaf(&renewed.chain()[0]).0,
        ["spiffe://example.org/ns/apps/sa/web"],
        "the identity the client certificate proves: {}",
        renewed.0
    );
    // A shorter request is honoured.
    let answer = create(&tls_addr, &root_file, "tok-web", &csr, 600, d).await;
    let (_, not_before, not_after) = leaf(&answer.chain()[0]);
    assert!(not_after.duration_since(not_before).expect("ordered") <= Duration::from_secs(660));

    // No token, an unknown token, a weak key, garbage: refused with a reason.
    let none = create(&tls_addr, &root_file, "-", &csr, 600, d).await;
    assert_eq!(none.code(), "UNAUTHENTICATED", "{}", none.0);
    let wrong = create(&tls_addr, &root_file, "tok-nobody", &csr, 600, d).await;
    assert_eq!(wrong.code(), "UNAUTHENTICATED", "{}", wrong.0);
    let weak = std::fs::read_to_string(workspace_root().join("crates/ca/tests/data/rsa1024.csr"))
        .expect("rsa1024.csr");
    let weak = create(&tls_addr, &root_file, "tok-web", &weak, 600, d).await;
    assert_eq!(weak.code(), "INVALID_ARGUMENT", "{}", weak.0);
    assert!(
        weak.0["details"].as_str().unwrap_or("").contains("2048"),
        "the reason names the bound: {}",
        weak.0
    );
    let garbage = create(&tls_addr, &root_file, "tok-web", "not a csr", 600, d).await;
    assert_eq!(garbage.code(), "INVALID_ARGUMENT", "{}", garbage.0);

    assert_eq!(metric(&sx, "sextant_ca_certificates_issued_total").await, 3);
    assert_eq!(
        metric(
            &sx,
            "sextant_ca_requests_refused_total{reason=\"unauthenticated\"}"
        )
        .await,
        2
    );
    assert_eq!(
        metric(&sx, "sextant_ca_requests_refused_total{reason=\"bad_csr\"}").await,
        2
    );
    // One log line for the identity, not one per certificate.
    let issued_lines = sx
        .log()
        .lines()
        .filter(|l| l.contains("spiffe://example.org/ns/apps/sa/web"))
        .count();
    assert_eq!(issued_lines, 1, "{}", sx.log());
}
