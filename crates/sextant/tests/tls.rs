//! The binary's xDS TLS port end to end: certificates from flags, a
//! bootstrap from `sextant bootstrap --tls`, a real Envoy routing traffic
//! over what it received through mTLS, the plaintext port refusing
//! proxies without an identity under `--xds-auth mtls`, and metrics.
#![allow(clippy::expect_used)]

mod common;

use common::*;
use sextant_testkit::certs::TestCa;
use sextant_testkit::peers::{Envoy, HttpBackend, free_port};

/// `sextant bootstrap ARGS`'s output.
async fn bootstrap_cmd(args: &[&str]) -> String {
    let out = tokio::process::Command::new(BIN)
        .arg("bootstrap")
        .args(args)
        .output()
        .await
        .expect("run sextant bootstrap");
    assert!(
        out.status.success(),
        "sextant bootstrap {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

async fn metric(sx: &Sextant, name: &str) -> u64 {
    let (_, body) = sx.get("/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

/// A CA, Sextant's certificate for `sextant.test`, a mesh file with one
/// backend, and a free address for the TLS port: what the TLS tests share.
struct TlsMesh {
    ca: TestCa,
    ca_path: String,
    tls_addr: String,
    /// `--file`, `--xds-tls-addr`, `--tls-cert`, `--tls-key` and their values.
    args: Vec<String>,
    _backend: HttpBackend,
}

impl TlsMesh {
    async fn new(d: &std::path::Path, backend: &str) -> TlsMesh {
        let p = |p: &std::path::Path| p.to_str().expect("path").to_owned();
        let ca = TestCa::new("mesh ca");
        let ca_path = p(&ca.write(d, "ca"));
        let (cert, key) = ca.server(&["sextant.test"]).write(d, "server");
        let backend = HttpBackend::start(backend).await;
        let mesh_file = d.join("mesh.yaml");
        std::fs::write(&mesh_file, mesh(&[&backend])).expect("write mesh");
        let tls_addr = format!("127.0.0.1:{}", free_port());
        let args = vec![
            "--file".to_owned(),
            p(&mesh_file),
            "--xds-tls-addr".to_owned(),
            tls_addr.clone(),
            "--tls-cert".to_owned(),
            p(&cert),
            "--tls-key".to_owned(),
            p(&key),
        ];
        TlsMesh {
            ca,
            ca_path,
            tls_addr,
            args,
            _backend: backend,
        }
    }

    /// `sextant bootstrap`'s Envoy bootstrap for node `node` of `ns`,
    /// over TLS to this mesh, sending the token in `token_file`.
    async fn token_bootstrap(&self, node: &str, ns: &str, token_file: &std::path::Path) -> String {
        bootstrap_cmd(&[
            "--node-id",
            node,
            "--namespace",
            ns,
            "--xds-addr",
            &self.tls_addr,
            "--admin-port",
            "0",
            "--tls",
            "--ca",
            &self.ca_path,
            "--sni",
            "sextant.test",
            "--token-file",
            token_file.to_str().expect("path"),
        ])
        .await
    }

    /// Starts Sextant with these files and `extra` flags.
    async fn start(&self, d: &std::path::Path, extra: &[&str]) -> Sextant {
        let mut args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        Sextant::start(d, &args).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_over_mtls_from_the_cli_routes_traffic_and_plaintext_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let m = TlsMesh::new(d, "over-mtls").await;
    let (client_cert, client_key) =
        m.ca.client("spiffe://cluster.local/ns/shop/sa/web")
            .write(d, "client");
    let (ca_path, tls_addr) = (&m.ca_path, &m.tls_addr);
    let p = |p: &std::path::Path| p.to_str().expect("path").to_owned();
    let sx = m
        .start(d, &["--client-ca", ca_path, "--xds-auth", "mtls"])
        .await;
    assert!(sx.log().contains(tls_addr.as_str()), "{}", sx.log());

    let yaml = bootstrap_cmd(&[
        "--node-id",
        "web-1",
        "--namespace",
        "shop",
        "--xds-addr",
        tls_addr,
        "--admin-port",
        "0",
        "--tls",
        "--ca",
        ca_path,
        "--cert",
        &p(&client_cert),
        "--key",
        &p(&client_key),
        "--sni",
        "sextant.test",
    ])
    .await;
    let envoy = Envoy::start(&yaml).await;
    envoy.wait_live().await;
    let seen = bodies(sx.outbound, "web.test.svc", 100, |s| !s.is_empty()).await;
    assert!(seen.contains("over-mtls"), "{}", sx.log());
    let syncz = sx.json("/debug/syncz").await;
    assert_eq!(
        syncz["connections"][0]["peer"]["identity"], "spiffe://cluster.local/ns/shop/sa/web",
        "{syncz}"
    );

    // The plaintext port is still open, but under --xds-auth mtls a proxy
    // there proves nothing and is refused.
    let plain = Envoy::start(&bootstrap(sx.xds, "plain", false).await).await;
    for _ in 0..200 {
        if metric(&sx, "sextant_xds_identity_refused_total").await > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        metric(&sx, "sextant_xds_identity_refused_total").await > 0,
        "{}",
        sx.log()
    );
    assert!(
        sx.log().contains("requires a client certificate"),
        "{}",
        sx.log()
    );
    drop(plain);
}

/// Secrets given to the binary (a Consul token, an etcd password, the TLS
/// key, the admin token) appear in no log line, no admin endpoint and no
/// error, even while the registries that use them fail; the debug
/// endpoints need the admin token, health and metrics do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_show_and_debug_endpoints_need_the_admin_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ca = TestCa::new("mesh ca");
    let server = ca.server(&["sextant.test"]);
    let (cert, key) = server.write(d, "server");
    let key_line = server
        .key_pem
        .lines()
        .nth(1)
        .expect("a base64 line of the key")
        .to_owned();
    let mesh_file = d.join("mesh.yaml");
    std::fs::write(&mesh_file, "services: []\n").expect("write");
    let closed = format!("127.0.0.1:{}", free_port());
    let (consul_token, etcd_password, admin_token) = (
        "consul-S3CRET-7f3a",
        "etcd-S3CRET-91bc",
        "admin-S3CRET-c0de",
    );
    let p = |p: &std::path::Path| p.to_str().expect("path").to_owned();
    let args = [
        "--registries".to_owned(),
        "file,consul,etcd".to_owned(),
        "--file".to_owned(),
        p(&mesh_file),
        "--consul-addr".to_owned(),
        format!("http://{closed}"),
        "--consul-token".to_owned(),
        consul_token.to_owned(),
        "--etcd-endpoints".to_owned(),
        format!("http://{closed}"),
        "--etcd-username".to_owned(),
        "root".to_owned(),
        "--etcd-password".to_owned(),
        etcd_password.to_owned(),
        "--tls-cert".to_owned(),
        p(&cert),
        "--tls-key".to_owned(),
        p(&key),
        "--xds-tls-addr".to_owned(),
        format!("127.0.0.1:{}", free_port()),
        "--admin-token".to_owned(),
        admin_token.to_owned(),
        "--startup-timeout".to_owned(),
        "1s".to_owned(),
        "--log-output-level".to_owned(),
        "default:debug".to_owned(),
    ];
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let sx = Sextant::start(d, &refs).await;
    // Let both failing registries retry a few times.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let (status, body) = sx.get("/debug/configz").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("--admin-token"), "{body}");
    assert_eq!(sx.get("/healthz/ready").await.0, 200);
    assert_eq!(sx.get("/metrics").await.0, 200);

    let mut seen = String::new();
    for path in [
        "/debug/configz",
        "/debug/registryz",
        "/debug/syncz",
        "/metrics",
        "/",
    ] {
        let (status, body) = sextant_testkit::peers::http_request(
            sx.admin,
            "localhost",
            path,
            &[("authorization", &format!("Bearer {admin_token}"))],
        )
        .await
        .map(|r| (r.status, r.body))
        .expect("admin request");
        assert_eq!(status, 200, "{path}: {body}");
        seen.push_str(&body);
    }
    let registryz = &seen;
    assert!(
        registryz.contains("consul") && registryz.contains("etcd"),
        "the failing registries are shown: {registryz}"
    );
    // check-config with the same secrets and a mistake prints its problems.
    let out = tokio::process::Command::new(BIN)
        .arg("check-config")
        .args(&args)
        .args(["--merge", "both"])
        .output()
        .await
        .expect("check-config");
    seen.push_str(&String::from_utf8_lossy(&out.stdout));
    seen.push_str(&String::from_utf8_lossy(&out.stderr));
    seen.push_str(&sx.log());
    assert!(seen.contains("merge"), "check-config reported nothing");
    for secret in [consul_token, etcd_password, admin_token, key_line.as_str()] {
        assert!(!seen.contains(secret), "{secret:?} leaked:\n{seen}");
    }
}

/// Proxies proving who they are with bearer tokens: Kubernetes
/// service-account tokens reviewed by the API server (the double's
/// TokenReview), cached per token; a node claiming another namespace, and
/// an unknown token, are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_reviewed_by_kubernetes_identify_proxies() {
    use sextant_testkit::k8s::KubeDouble;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let kube = KubeDouble::start().await;
    kube.add_token(
        "tok-shop-web",
        "system:serviceaccount:shop:web",
        &["sextant"],
    );
    kube.add_token(
        "tok-wrong-audience",
        "system:serviceaccount:shop:web",
        &["vault"],
    );
    let kubeconfig = kube.kubeconfig(d, "double");
    let m = TlsMesh::new(d, "by-token").await;
    let kubeconfig = kubeconfig.to_str().expect("path");
    let sx = m
        .start(
            d,
            &[
                "--kubeconfig",
                kubeconfig,
                "--xds-auth",
                "token",
                "--xds-token-review",
                "--xds-token-audiences",
                "sextant",
            ],
        )
        .await;
    let envoy_with = |node: &'static str, ns: &'static str, token: &'static str| {
        let (m, d) = (&m, d.to_owned());
        async move {
            let token_file = d.join(format!("{node}.token"));
            std::fs::write(&token_file, token).expect("write token");
            Envoy::start(&m.token_bootstrap(node, ns, &token_file).await).await
        }
    };
    let good = envoy_with("web-1", "shop", "tok-shop-web").await;
    good.wait_live().await;
    let seen = bodies(sx.outbound, "web.test.svc", 100, |s| !s.is_empty()).await;
    assert!(seen.contains("by-token"), "{}", sx.log());
    let syncz = sx.json("/debug/syncz").await;
    assert_eq!(
        syncz["connections"][0]["peer"]["identity"], "spiffe://cluster.local/ns/shop/sa/web",
        "{syncz}"
    );
    assert!(!syncz.to_string().contains("tok-shop-web"), "{syncz}");

    // The same token claiming another namespace; a token for another
    // audience; an unknown token: all refused.
    let _other_ns = envoy_with("web-2", "payments", "tok-shop-web").await;
    let _other_aud = envoy_with("web-3", "shop", "tok-wrong-audience").await;
    let _unknown = envoy_with("web-4", "shop", "tok-nobody").await;
    // Each refused Envoy retries: wait for all three refusals (the counter
    // alone could reach 3 with one proxy's retries).
    let reasons = [
        "claims namespace",
        "audiences do not match",
        "invalid bearer token",
    ];
    for _ in 0..200 {
        let log = sx.log();
        if reasons.iter().all(|r| log.contains(r)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let log = sx.log();
    for reason in reasons {
        assert!(log.contains(reason), "{reason}: {log}");
    }
    assert!(metric(&sx, "sextant_xds_identity_refused_total").await >= 3);
    // Retried refusals are counted, but each is logged once.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let log = sx.log();
    for reason in reasons {
        let warned = log
            .lines()
            .filter(|l| l.contains("xDS stream refused:") && l.contains(reason))
            .count();
        assert_eq!(warned, 1, "{reason}: {log}");
    }
    for secret in ["tok-shop-web", "tok-wrong-audience", "tok-nobody"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    // Envoys retry every few hundred milliseconds; reviews are cached.
    let reviews = kube
        .requests()
        .iter()
        .filter(|r| r.contains("tokenreviews"))
        .count();
    assert!(reviews <= 3, "{reviews} TokenReviews for 3 tokens");
    let syncz = sx.json("/debug/syncz").await;
    assert_eq!(
        syncz["connections"].as_array().map(Vec::len),
        Some(1),
        "only the good proxy is connected: {syncz}"
    );
}

/// What a node says about itself (`sextant bootstrap --namespace --labels
/// --ip --mode`) is read and shown on /debug/syncz, with its own services:
/// those with an endpoint at one of its IPs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxys_identity_and_own_services_are_shown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = HttpBackend::start("web").await;
    let mesh_file = dir.path().join("mesh.yaml");
    std::fs::write(&mesh_file, mesh(&[&backend])).expect("write mesh");
    let sx = Sextant::start(dir.path(), &["--file", mesh_file.to_str().expect("path")]).await;
    let xds = sx.xds.to_string();
    let yaml = bootstrap_cmd(&[
        "--node-id",
        "web-1",
        "--xds-addr",
        &xds,
        "--admin-port",
        "0",
        "--namespace",
        "shop",
        "--labels",
        "app=web,version=v1",
        "--ip",
        "127.0.0.1",
        "--mode",
        "explicit",
    ])
    .await;
    let envoy = Envoy::start(&yaml).await;
    envoy.wait_live().await;
    let syncz = sx.json("/debug/syncz").await;
    let conn = &syncz["connections"][0];
    assert_eq!(conn["identity"]["namespace"], "shop", "{syncz}");
    assert_eq!(conn["identity"]["labels"]["version"], "v1", "{syncz}");
    assert_eq!(conn["identity"]["ips"][0], "127.0.0.1", "{syncz}");
    assert_eq!(conn["identity"]["mode"], "explicit", "{syncz}");
    assert_eq!(conn["own_services"][0], "web.test.svc", "{syncz}");
}

/// A rotated token is picked up at the next reconnect: Envoy (with
/// `sextant bootstrap --tls --token-file`) reads the file for every new
/// stream. Sextant is restarted accepting only the new token, the file
/// now holds it, and the same Envoy is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_file_is_read_again_at_the_next_reconnect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let m = TlsMesh::new(d, "rotated").await;
    let tokens = d.join("tokens");
    let token_file = d.join("envoy.token");
    std::fs::write(&tokens, "tok-before shop web\n").expect("write");
    std::fs::write(&token_file, "tok-before").expect("write");
    let tokens_arg = tokens.to_str().expect("path").to_owned();
    let args = ["--xds-auth", "token", "--xds-token-file", &tokens_arg];
    let sx = m.start(d, &args).await;
    let envoy = Envoy::start(&m.token_bootstrap("web-1", "shop", &token_file).await).await;
    envoy.wait_live().await;
    let seen = bodies(sx.outbound, "web.test.svc", 20, |s| !s.is_empty()).await;
    assert!(seen.contains("rotated"), "{}", sx.log());
    drop(sx);

    // Rotation: the old token is no longer accepted anywhere.
    std::fs::write(&tokens, "tok-after shop web\n").expect("write");
    std::fs::write(&token_file, "tok-after").expect("write");
    let sx = m.start(d, &args).await;
    let mut identity = serde_json::Value::Null;
    for _ in 0..200 {
        let syncz = sx.json("/debug/syncz").await;
        identity = syncz["connections"][0]["peer"]["identity"].clone();
        if !identity.is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        identity,
        "spiffe://token/ns/shop/sa/web",
        "Envoy did not come back with the new token:\n{}",
        sx.log()
    );
    assert!(!sx.log().contains("refused"), "{}", sx.log());
    drop(envoy);
}
