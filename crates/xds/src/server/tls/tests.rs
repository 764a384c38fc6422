//! Loading, reloading and reading identities, with certificates made here.

use super::*;
use sextant_testkit::certs::TestCa;

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("pem")
        .to_vec()
}

#[test]
fn the_spiffe_id_is_read_from_a_client_certificate() {
    let ca = TestCa::new("test ca");
    let client = ca.client("spiffe://cluster.local/ns/shop/sa/web");
    let id = spiffe_id(&der(&client.cert_pem)).expect("an id");
    assert_eq!(id, "spiffe://cluster.local/ns/shop/sa/web");
    assert_eq!(spiffe_namespace(&id), Some("shop"));
    // A server certificate has DNS and IP names, no SPIFFE id.
    assert_eq!(spiffe_id(&der(&ca.server(&["sextant"]).cert_pem)), None);
    for bad in [
        "spiffe://td/ns//sa/x",
        "spiffe://td/other/shop",
        "https://td/ns/a/sa/b",
    ] {
        assert_eq!(spiffe_namespace(bad), None, "{bad}");
    }
    // Truncated or garbled DER is None, never a panic.
    let cert = der(&client.cert_pem);
    for n in 0..cert.len() {
        let _ = spiffe_id(&cert[..n]);
    }
    let mut flipped = cert.clone();
    for i in (0..flipped.len()).step_by(7) {
        flipped[i] ^= 0xff;
        let _ = spiffe_id(&flipped);
    }
}

#[test]
fn bad_files_are_named_and_a_broken_change_keeps_the_last_good_config() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new("ca");
    let (cert, key) = ca.server(&["sextant"]).write(dir.path(), "server");
    let ca_path = ca.write(dir.path(), "ca");

    let mut files = TlsFiles::new(&cert, &key);
    files.client_auth = ClientAuth::Require;
    let e = load(&files).expect_err("no CA");
    assert!(e.contains("--client-ca"), "{e}");
    files.client_ca = Some(ca_path);
    assert!(load(&files).is_ok());
    let e = load(&TlsFiles::new(dir.path().join("missing.pem"), &key)).expect_err("missing");
    assert!(e.contains("missing.pem"), "{e}");
    // A key that is not the certificate's.
    let (_, other_key) = ca.server(&["other"]).write(dir.path(), "other");
    let e = load(&TlsFiles::new(&cert, &other_key)).expect_err("mismatch");
    assert!(e.contains("do not go together"), "{e}");

    let metrics = Arc::new(Metrics::default());
    let tls = Tls::new(files, metrics.clone()).expect("loads");
    assert!(!tls.reload_if_changed(), "nothing changed");
    let before = tls.config();
    // Half-written: the key is garbage. The old config stays.
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nnope\n").expect("write");
    assert!(!tls.reload_if_changed());
    assert!(Arc::ptr_eq(&before, &tls.config()));
    assert_eq!(Metrics::get(&metrics.tls_reload_failures_total), 1);
    assert!(
        !tls.reload_if_changed(),
        "the same broken files are not retried"
    );
    assert_eq!(Metrics::get(&metrics.tls_reload_failures_total), 1);
    // Rotated: a new certificate and key.
    ca.server(&["sextant"]).write(dir.path(), "server");
    assert!(tls.reload_if_changed());
    assert!(!Arc::ptr_eq(&before, &tls.config()));
    assert_eq!(Metrics::get(&metrics.tls_reloads_total), 1);
}
