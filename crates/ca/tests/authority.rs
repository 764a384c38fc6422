//! The CA without the network: what it makes of an empty directory and of
//! plugged CAs (PKCS#1 RSA and SEC1 EC keys, as OpenSSL and cert-manager
//! write them), what it puts in a certificate whatever the CSR asks, the
//! bounds it keeps, and reloading. Chains are checked with rustls's own
//! verifier (webpki), as a peer would check them.
#![allow(clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use sextant_ca::IssueError;
use sextant_ca::authority::{self, Authority, Identity};
use sextant_ca::csr::CsrError;

const DAY: Duration = Duration::from_secs(86_400);

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn web() -> Identity {
    Identity {
        namespace: "shop".into(),
        service_account: "web".into(),
    }
}

fn csr() -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://evil/ns/kube-system/sa/admin"
            .try_into()
            .expect("uri"),
    )];
    params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem")
}

fn ders(chain: &[String]) -> Vec<CertificateDer<'static>> {
    chain
        .iter()
        .map(|p| CertificateDer::from_pem_slice(p.as_bytes()).expect("a PEM certificate"))
        .collect()
}

/// The URIs of a certificate's subjectAltName.
fn uris(der: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der.as_ref()).expect("certificate");
    cert.subject_alternative_name()
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
        .unwrap_or_default()
}

fn not_after(der: &CertificateDer<'_>) -> SystemTime {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der.as_ref()).expect("certificate");
    SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(cert.validity().not_after.timestamp()).expect("time"))
}

/// Verifies `chain` (leaf first) as a client certificate against `root`.
fn verify(chain: &[CertificateDer<'static>], root: &str) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(root.as_bytes()).expect("root"))
        .expect("add root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .expect("verifier");
    verifier
        .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn an_empty_directory_gets_a_root_that_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = dir.path().join("ca");
    let ca = Authority::open(&ca_dir, "cluster.local", DAY).expect("a CA");
    for f in [
        authority::CA_CERT,
        authority::CA_KEY,
        authority::ROOT_CERT,
        authority::CERT_CHAIN,
    ] {
        assert!(ca_dir.join(f).is_file(), "{f}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ca_dir.join(authority::CA_KEY))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the key is the owner's alone");
    let root = ca.root_pem();
    let again = Authority::open(&ca_dir, "cluster.local", DAY).expect("the same CA");
    assert_eq!(again.root_pem(), root, "a restart keeps the root");
}

#[test]
fn the_certificate_names_the_proven_identity_only_and_chains_to_the_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Authority::open(dir.path(), "cluster.local", DAY).expect("a CA");
    let issued = ca.issue(&csr(), &web(), None).expect("issued");
    let chain = ders(&issued.chain);
    assert_eq!(chain.len(), 2, "leaf, root");
    assert_eq!(
        uris(&chain[0]),
        ["spiffe://cluster.local/ns/shop/sa/web"],
        "the CSR asked for kube-system's admin"
    );
    assert_eq!(issued.chain.last(), Some(&ca.root_pem()), "the root last");
    verify(&chain, &ca.root_pem()).expect("verifies");
    // An RSA 2048 CSR (OpenSSL's) is taken too.
    let rsa = std::fs::read_to_string(data("rsa2048.csr")).expect("csr");
    let issued = ca.issue(&rsa, &web(), None).expect("RSA 2048");
    verify(&ders(&issued.chain), &ca.root_pem()).expect("verifies");
}

#[test]
fn lifetimes_are_bounded_by_the_maximum_and_the_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Authority::open(dir.path(), "cluster.local", DAY).expect("a CA");
    let now = SystemTime::now();
    let life = |requested: Option<Duration>| {
        let issued = ca.issue(&csr(), &web(), requested).expect("issued");
        let leaf = ders(&issued.chain).remove(0);
        not_after(&leaf).duration_since(now).expect("in the future")
    };
    let d = life(Some(Duration::from_secs(60)));
    assert!(
        d > Duration::from_secs(55) && d <= Duration::from_secs(61),
        "{d:?}"
    );
    let d = life(Some(2 * DAY));
    assert!(
        d > DAY - Duration::from_secs(5) && d <= DAY + Duration::from_secs(1),
        "{d:?}"
    );
    let d = life(None);
    assert!(d > DAY - Duration::from_secs(5), "{d:?}");
}

#[test]
fn weak_broken_and_oversized_csrs_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Authority::open(dir.path(), "cluster.local", DAY).expect("a CA");
    let weak = std::fs::read_to_string(data("rsa1024.csr")).expect("csr");
    match ca.issue(&weak, &web(), None) {
        Err(IssueError::Csr(CsrError::WeakKey(why))) => assert!(why.contains("1024"), "{why}"),
        other => panic!("RSA 1024 accepted: {other:?}"),
    }
    // A signature that does not verify: the caller does not hold the key.
    let good = csr();
    let der = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(good.as_bytes())
        .expect("der");
    let mut bytes = der.as_ref().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    use base64::Engine as _;
    let tampered = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64::engine::general_purpose::STANDARD.encode(&bytes)
    );
    match ca.issue(&tampered, &web(), None) {
        Err(IssueError::Csr(CsrError::Malformed(why))) => {
            assert!(why.contains("signature"), "{why}")
        }
        other => panic!("a tampered CSR: {other:?}"),
    }
    assert!(matches!(
        ca.issue("not a csr", &web(), None),
        Err(IssueError::Csr(CsrError::Malformed(_)))
    ));
    let huge = format!("{good}{}", "x".repeat(sextant_ca::csr::MAX_CSR_BYTES));
    assert!(matches!(
        ca.issue(&huge, &web(), None),
        Err(IssueError::Csr(CsrError::TooLarge(_)))
    ));
}

fn copy_ca(from: &str, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for f in [
        authority::CA_CERT,
        authority::CA_KEY,
        authority::ROOT_CERT,
        authority::CERT_CHAIN,
    ] {
        std::fs::copy(data(from).join(f), to.join(f)).expect("copy");
    }
}

#[test]
fn a_plugged_intermediate_issues_chains_to_its_root_with_rsa_and_ec_keys() {
    for plugged in ["rsa-plugged", "ec-plugged"] {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_ca(plugged, dir.path());
        let ca = Authority::open(dir.path(), "cluster.local", DAY).expect(plugged);
        let root = std::fs::read_to_string(dir.path().join(authority::ROOT_CERT)).expect("root");
        let issued = ca.issue(&csr(), &web(), None).expect("issued");
        let chain = ders(&issued.chain);
        assert_eq!(chain.len(), 3, "{plugged}: leaf, intermediate, root");
        verify(&chain, &root).unwrap_or_else(|e| panic!("{plugged}: {e}"));
        assert_eq!(uris(&chain[0]), ["spiffe://cluster.local/ns/shop/sa/web"]);
    }
}

#[test]
fn a_ca_whose_files_do_not_fit_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_ca("rsa-plugged", dir.path());
    std::fs::remove_file(dir.path().join(authority::CA_KEY)).expect("rm");
    let e = Authority::open(dir.path(), "cluster.local", DAY).expect_err("no key");
    assert!(e.contains("ca-key.pem is missing"), "{e}");
    // Another CA's key.
    std::fs::copy(
        data("ec-plugged").join(authority::CA_KEY),
        dir.path().join(authority::CA_KEY),
    )
    .expect("copy");
    let e = Authority::open(dir.path(), "cluster.local", DAY).expect_err("wrong key");
    assert!(e.contains("is not the key of"), "{e}");
}

#[test]
fn a_rotated_ca_is_picked_up_and_a_broken_one_keeps_the_last_good() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_ca("rsa-plugged", dir.path());
    let ca = Authority::open(dir.path(), "cluster.local", DAY).expect("CA");
    assert_eq!(ca.reload_if_changed(), Ok(false));
    let rsa_root = ca.root_pem();
    copy_ca("ec-plugged", dir.path());
    assert_eq!(ca.reload_if_changed(), Ok(true));
    assert_ne!(ca.root_pem(), rsa_root);
    let ec_root = std::fs::read_to_string(dir.path().join(authority::ROOT_CERT)).expect("root");
    verify(
        &ders(&ca.issue(&csr(), &web(), None).expect("issued").chain),
        &ec_root,
    )
    .expect("from the new CA");
    // Half-written: a certificate without its key.
    std::fs::write(dir.path().join(authority::CA_KEY), "garbage").expect("write");
    let e = ca.reload_if_changed().expect_err("broken");
    assert!(e.contains("ca-key.pem"), "{e}");
    assert_eq!(ca.reload_if_changed(), Ok(false), "reported once");
    verify(
        &ders(&ca.issue(&csr(), &web(), None).expect("still issuing").chain),
        &ec_root,
    )
    .expect("from the last good CA");
}

#[test]
fn identities_read_from_spiffe_ids() {
    assert_eq!(
        Identity::from_spiffe("spiffe://token/ns/shop/sa/web"),
        Some(web())
    );
    for bad in [
        "spiffe://td/ns/shop",
        "spiffe://td/ns//sa/web",
        "spiffe://td/ns/a/sa/b/c",
        "https://td/ns/a/sa/b",
    ] {
        assert_eq!(Identity::from_spiffe(bad), None, "{bad}");
    }
    assert_eq!(
        web().spiffe("example.org"),
        "spiffe://example.org/ns/shop/sa/web"
    );
}

#[test]
fn the_ports_own_certificate_is_kept_and_follows_a_rotated_ca() {
    use sextant_ca::serving::CaServing;
    use sextant_xds::server::tls::{ClientAuth, ServingCert};
    let dir = tempfile::tempdir().expect("tempdir");
    copy_ca("rsa-plugged", dir.path());
    let ca = Arc::new(Authority::open(dir.path(), "cluster.local", DAY).expect("CA"));
    let names = ["localhost".to_owned(), "127.0.0.1".to_owned()];
    let serving = CaServing::new(ca.clone(), &names, ClientAuth::Optional);
    let first = serving.current().expect("made");
    assert_eq!(
        serving.current().expect("kept"),
        first,
        "not remade per call"
    );
    assert_eq!(first.client_ca.as_deref(), Some(ca.root_pem().as_bytes()));
    // The chain served is the leaf and the intermediate: peers hold the root.
    let served = CertificateDer::pem_slice_iter(&first.chain)
        .collect::<Result<Vec<_>, _>>()
        .expect("pem");
    assert_eq!(served.len(), 2);
    copy_ca("ec-plugged", dir.path());
    assert_eq!(ca.reload_if_changed(), Ok(true));
    let next = serving.current().expect("remade");
    assert_ne!(next.chain, first.chain);
    assert_eq!(next.client_ca.as_deref(), Some(ca.root_pem().as_bytes()));
    let mut with_root = CertificateDer::pem_slice_iter(&next.chain)
        .collect::<Result<Vec<_>, _>>()
        .expect("pem");
    with_root.push(CertificateDer::from_pem_slice(ca.root_pem().as_bytes()).expect("root"));
    verify(&with_root, &ca.root_pem()).expect("chains to the new root");
}
