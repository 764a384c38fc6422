//! ADS over TLS and mTLS with real clients: Envoy with `sextant bootstrap
//! --tls`'s output, Python grpcio with a gRPC bootstrap using TLS channel
//! credentials; identities from client certificates, a node claiming another
//! namespace refused, certificate rotation by symlink swap.
#![allow(clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sextant_core::{Endpoint, MemoryRegistry, Protocol, Service};
use sextant_testkit::certs::TestCa;
use sextant_testkit::peers::{Envoy, node_clients_dir, python_path};
use sextant_xds::Metrics;
use sextant_xds::bootstrap::{ClientTls, EnvoyBootstrap, GrpcBootstrap};
use sextant_xds::server::ServerConfig;
use sextant_xds::server::tls::{ClientAuth, TlsFiles};

const SHOP: &str = "spiffe://cluster.local/ns/shop/sa/web";

/// A CA, the server's files behind a `current` symlink (as a Kubernetes
/// secret volume has them), and a client certificate for `shop`.
struct Pki {
    dir: tempfile::TempDir,
    ca: TestCa,
    ca_path: PathBuf,
    client: (PathBuf, PathBuf),
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("dir");
        let ca = TestCa::new("mesh ca");
        let ca_path = ca.write(dir.path(), "ca");
        let client = ca.client(SHOP).write(dir.path(), "client");
        let pki = Pki {
            dir,
            ca,
            ca_path,
            client,
        };
        pki.rotate("v1");
        pki
    }

    /// Writes a new server certificate into `..VERSION/` and swaps the
    /// `current` symlink to it in one rename.
    fn rotate(&self, version: &str) {
        let d = self.dir.path().join(format!("..{version}"));
        std::fs::create_dir_all(&d).expect("mkdir");
        self.ca.server(&["sextant.test"]).write(&d, "server");
        let tmp = self.dir.path().join("current.tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&d, &tmp).expect("symlink");
        std::fs::rename(&tmp, self.dir.path().join("current")).expect("swap");
    }

    fn files(&self, auth: ClientAuth) -> TlsFiles {
        let current = self.dir.path().join("current");
        TlsFiles {
            client_ca: Some(self.ca_path.clone()),
            client_auth: auth,
            check_every: Duration::from_millis(200),
            ..TlsFiles::new(current.join("server.pem"), current.join("server-key.pem"))
        }
    }

    fn client_tls(&self, with_cert: bool) -> ClientTls {
        ClientTls {
            ca: self.ca_path.display().to_string(),
            cert: with_cert.then(|| self.client.0.display().to_string()),
            key: with_cert.then(|| self.client.1.display().to_string()),
            sni: Some("sextant.test".into()),
        }
    }
}

async fn tls_server(pki: &Pki, auth: ClientAuth, require_identity: bool) -> Harness {
    let mode = if require_identity {
        sextant_xds::server::auth::XdsAuth::Mtls
    } else {
        sextant_xds::server::auth::XdsAuth::None
    };
    start_with(
        MemoryRegistry::new("memory/test"),
        vec![svc("web.shop.svc", &["10.0.0.1"])],
        Options {
            tls: Some(pki.files(auth)),
            server: ServerConfig {
                auth: mode,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
}

/// Envoy with `sextant bootstrap --tls`'s bootstrap; waits until it is
/// live when `served` (a refused Envoy never initializes).
async fn envoy(h: &Harness, node: &str, namespace: &str, tls: ClientTls, served: bool) -> Envoy {
    let bootstrap = EnvoyBootstrap {
        node_id: node.into(),
        cluster: "test".into(),
        xds_addrs: vec![h.addr.to_string()],
        admin_addr: "127.0.0.1:0".into(),
        namespace: Some(namespace.into()),
        tls: Some(tls),
        ..Default::default()
    };
    let envoy = Envoy::start(&bootstrap.to_yaml()).await;
    if served {
        envoy.wait_live().await;
    }
    envoy
}

/// Waits (bounded) until Envoy lists `cluster`.
async fn until_cluster(envoy: &Envoy, cluster: &str) -> bool {
    for _ in 0..200 {
        let (_, body) = envoy.admin_get("/clusters").await;
        if body.contains(cluster) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn until_metric(m: &Arc<Metrics>, f: impl Fn(&Metrics) -> u64, what: &str) -> u64 {
    for _ in 0..200 {
        let v = f(m);
        if v > 0 {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} never counted");
}

/// The server certificate (DER) a fresh TLS connection is given.
async fn server_cert(pki: &Pki, addr: std::net::SocketAddr) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_file(&pki.ca_path).expect("ca"))
        .expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(&pki.client.0)
        .expect("client cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("pem");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&pki.client.1).expect("key");
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .expect("client auth");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("sextant.test").expect("name");
    let tls = connector.connect(name, tcp).await.expect("handshake");
    tls.get_ref().1.peer_certificates().expect("certs")[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_over_mtls_is_served_and_its_identity_is_shown() {
    let pki = Pki::new();
    let h = tls_server(&pki, ClientAuth::Require, true).await;
    let e = envoy(&h, "web-1", "shop", pki.client_tls(true), true).await;
    assert!(
        until_cluster(&e, "outbound|8080||web.shop.svc").await,
        "Envoy got no clusters over mTLS"
    );
    let conns = h.server.connections();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].peer.identity.as_deref(), Some(SHOP));
    assert_eq!(Metrics::get(&h.server.metrics().identity_refused_total), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_claiming_another_namespace_than_its_certificate_is_refused() {
    let pki = Pki::new();
    let h = tls_server(&pki, ClientAuth::Require, true).await;
    let e = envoy(&h, "web-1", "payments", pki.client_tls(true), false).await;
    until_metric(
        h.server.metrics(),
        |m| Metrics::get(&m.identity_refused_total),
        "the refusal",
    )
    .await;
    let (_, clusters) = e.admin_get("/clusters").await;
    assert!(!clusters.contains("web.shop.svc"), "{clusters}");
    assert!(
        h.server.connections().is_empty()
            || h.server
                .connections()
                .iter()
                .all(|c| c.peer.identity.is_some())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_client_certificate_the_handshake_fails_where_one_is_required() {
    let pki = Pki::new();
    let h = tls_server(&pki, ClientAuth::Require, true).await;
    let e = envoy(&h, "web-1", "shop", pki.client_tls(false), false).await;
    until_metric(
        h.server.metrics(),
        |m| Metrics::get(&m.tls_handshake_failures_total),
        "the failed handshake",
    )
    .await;
    let (_, clusters) = e.admin_get("/clusters").await;
    assert!(!clusters.contains("web.shop.svc"), "{clusters}");

    // With client certificates optional and identities not required, the
    // same Envoy is served over plain TLS.
    let pki = Pki::new();
    let h = tls_server(&pki, ClientAuth::Optional, false).await;
    let e = envoy(&h, "web-2", "shop", pki.client_tls(false), true).await;
    assert!(until_cluster(&e, "outbound|8080||web.shop.svc").await);
    assert_eq!(h.server.connections()[0].peer.identity, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_serves_new_connections_and_open_streams_go_on() {
    let pki = Pki::new();
    let h = tls_server(&pki, ClientAuth::Require, true).await;
    let e = envoy(&h, "web-1", "shop", pki.client_tls(true), true).await;
    assert!(until_cluster(&e, "outbound|8080||web.shop.svc").await);
    let before = server_cert(&pki, h.addr).await;

    pki.rotate("v2");
    let mut after = before.clone();
    for _ in 0..100 {
        after = server_cert(&pki, h.addr).await;
        if after != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(after, before, "the rotated certificate was never served");
    assert_eq!(Metrics::get(&h.server.metrics().tls_reloads_total), 1);

    // Envoy's stream, opened with the old certificate, still carries updates.
    let streams = Metrics::get(&h.server.metrics().connections_total);
    h.registry.insert(svc("api.shop.svc", &["10.0.0.2"]));
    assert!(until_cluster(&e, "outbound|8080||api.shop.svc").await);
    assert_eq!(
        Metrics::get(&h.server.metrics().connections_total),
        streams,
        "Envoy did not reconnect"
    );
}

fn echo_service(port: u16) -> Service {
    let mut s = Service::new("echo.test.svc").with_port("grpc", 50051, Protocol::Grpc);
    let mut ep =
        Endpoint::new("127.0.0.1".parse().expect("addr")).with_port("grpc", u32::from(port));
    ep.locality.zone = "zone-0".into();
    s = s.with_endpoint(ep);
    s
}

/// Runs the Node (grpc-js-xds) or Python (grpcio) client with `bootstrap`
/// against `echo.test.svc:50051`, expecting the answer `one`: whether it
/// succeeded, and its output.
async fn echo_client(
    pki: &Pki,
    bootstrap: &GrpcBootstrap,
    node: bool,
    env: &[(&str, &str)],
) -> (bool, String) {
    let path: PathBuf = pki.dir.path().join("bootstrap.json");
    std::fs::write(&path, bootstrap.to_json()).expect("write");
    let (program, script) = if node {
        ("node".to_owned(), "xds_client.js")
    } else {
        (python_path().display().to_string(), "xds_client.py")
    };
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(program)
            .arg(node_clients_dir().join(script))
            .arg("xds:///echo.test.svc:50051")
            .arg("one")
            .current_dir(node_clients_dir())
            .env("GRPC_XDS_BOOTSTRAP", &path)
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the client finishes")
    .expect("run the client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A server serving `services` to proxies with a bearer token from the
/// token file `tokens` (its text), over `tls` or plaintext.
async fn token_server(services: Vec<Service>, tokens: &str, tls: Option<TlsFiles>) -> Harness {
    use sextant_xds::server::auth::{TokenFile, Tokens, XdsAuth};
    let tokens = TokenFile::parse(tokens).expect("token file");
    start_with(
        MemoryRegistry::new("memory/test"),
        services,
        Options {
            tls,
            server: ServerConfig {
                auth: XdsAuth::Token,
                tokens: Some(Tokens(Arc::new(tokens))),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
}

async fn grpc_client_over_tls(node: bool) -> (bool, String) {
    let pki = Pki::new();
    let one = echo_server("one", &[]).await;
    let h = start_with(
        MemoryRegistry::new("memory/test"),
        vec![echo_service(one.port)],
        Options {
            tls: Some(pki.files(ClientAuth::Require)),
            server: ServerConfig {
                auth: sextant_xds::server::auth::XdsAuth::Mtls,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let bootstrap = GrpcBootstrap {
        node_id: "grpc-tls".into(),
        cluster: "test".into(),
        // The certificate names 127.0.0.1: gRPC checks the address's host.
        xds_addrs: vec![h.addr.to_string()],
        namespace: Some("shop".into()),
        tls: Some(pki.client_tls(true)),
        ..Default::default()
    };
    let (ok, text) = echo_client(&pki, &bootstrap, node, &[]).await;
    // Only a client with the shop certificate can have been served: the
    // server requires one and refused nothing.
    let served = ok
        && Metrics::get(&h.server.metrics().identity_refused_total) == 0
        && Metrics::get(&h.server.metrics().connections_total) > 0;
    (served, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_reaches_sextant_over_mtls_from_its_bootstrap() {
    let (served, out) = grpc_client_over_tls(false).await;
    assert!(served, "grpcio over mTLS: {out}");
}

/// Tokens from a file, on the plaintext port: the right token for the
/// node's namespace is served, no token is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_identifies_proxies_on_the_plaintext_port() {
    let h = token_server(
        vec![svc("web.shop.svc", &["10.0.0.1"])],
        "secret-shop shop web\n",
        None,
    )
    .await;
    let bootstrap = |node: &str, token: Option<&str>| EnvoyBootstrap {
        node_id: node.into(),
        cluster: "test".into(),
        xds_addrs: vec![h.addr.to_string()],
        admin_addr: "127.0.0.1:0".into(),
        namespace: Some("shop".into()),
        token: token.map(str::to_owned),
        ..Default::default()
    };
    let good = Envoy::start(&bootstrap("web-1", Some("secret-shop")).to_yaml()).await;
    good.wait_live().await;
    assert!(until_cluster(&good, "outbound|8080||web.shop.svc").await);
    assert_eq!(
        h.server.connections()[0].peer.identity.as_deref(),
        Some("spiffe://token/ns/shop/sa/web")
    );
    let _none = Envoy::start(&bootstrap("web-2", None).to_yaml()).await;
    until_metric(
        h.server.metrics(),
        |m| Metrics::get(&m.identity_refused_total),
        "the refusal",
    )
    .await;
    assert_eq!(h.server.connections().len(), 1);
}

/// A JWT from a file as the bearer token of a proxyless gRPC client (gRFC
/// A97 `jwt_token_file` call credentials in the bootstrap), over TLS
/// without a client certificate: grpcio sends it, the token file on the
/// server maps it to the namespace, and the client is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_sends_a_jwt_from_its_bootstrap() {
    // An unsigned JWT with an expiry far ahead: what the client reads.
    let jwt = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6c2hvcDp3ZWIiLCJleHAiOjQxMDI0NDQ4MDB9.c2lnbmF0dXJl";
    let pki = Pki::new();
    let one = echo_server("one", &[]).await;
    let h = token_server(
        vec![echo_service(one.port)],
        &format!("{jwt} shop web\n"),
        Some(pki.files(ClientAuth::Optional)),
    )
    .await;
    let token_path = pki.dir.path().join("token.jwt");
    std::fs::write(&token_path, jwt).expect("write");
    let bootstrap = GrpcBootstrap {
        node_id: "grpc-jwt".into(),
        cluster: "test".into(),
        xds_addrs: vec![h.addr.to_string()],
        namespace: Some("shop".into()),
        tls: Some(pki.client_tls(false)),
        token_path: Some(token_path.display().to_string()),
        ..Default::default()
    };
    let (ok, text) = echo_client(
        &pki,
        &bootstrap,
        false,
        &[("GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS", "true")],
    )
    .await;
    assert!(ok, "{text}");
    assert_eq!(
        Metrics::get(&h.server.metrics().identity_refused_total),
        0,
        "{text}"
    );
    // Served under token authentication, nothing refused: the token went.
    assert!(
        Metrics::get(&h.server.metrics().connections_total) > 0,
        "{text}"
    );
}
