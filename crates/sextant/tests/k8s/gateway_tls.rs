//! Gateways that carry TLS, with kubectl on the API-server double and a
//! real router Envoy: HTTPS with certificates from Secrets (SNI, a
//! ReferenceGrant for another namespace's, rotation under load), TLS
//! passed through and TCP proxied, and a Kubernetes Ingress with TLS.
//!
//! A module of the `k8s` test.

use super::gateway::{Shop, example_with, gateway_status, shop};
use super::*;

/// examples/kubernetes/secure-gateway.yaml (its port moved to a free one)
/// with its certificates as `kubectl create secret tls`: curl verifies
/// each name's certificate (SNI picks it); a certificate of another
/// namespace is refused (status RefNotPermitted) until a ReferenceGrant
/// there (certs-grant.yaml) lets it be used; a TLS Secret no Gateway names
/// stays in Sextant; a Secret patched while requests run rotates the
/// certificate without one failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_serves_https_with_certificates_from_secrets() {
    use base64::Engine;
    use sextant_testkit::certs::{TestCa, curl_https};
    let Shop {
        double,
        web: _web,
        api: _api,
        dir,
        sx,
    } = shop(Crd::GatewayApi).await;
    let port = sextant_testkit::peers::free_port();
    let envoy = router_envoy(
        sx.xds,
        "router~127.0.0.1~secure-1.edge~edge.svc.cluster.local",
        "edge/secure",
        &[],
    )
    .await;

    let (ca, next_ca) = (TestCa::new("edge-ca"), TestCa::new("rotated-ca"));
    let ca_file = ca.write(dir.path(), "ca");
    let next_ca_file = next_ca.write(dir.path(), "next-ca");
    let both = dir.path().join("both.pem");
    std::fs::write(&both, format!("{}{}", ca.cert_pem, next_ca.cert_pem)).expect("write");
    let k = Kubectl::new(&double);
    for (ns, secret, name) in [
        ("edge", "shop-cert", "shop.example.com"),
        ("edge", "api-cert", "api.example.com"),
        ("edge", "unused-cert", "unused.example.com"),
        ("certs", "vault-cert", "vault.example.com"),
    ] {
        // kubectl writes the Secret (create sends protobuf, which the
        // double does not read: the manifest is applied as JSON).
        let (cert, key) = ca.server(&[name]).write(dir.path(), secret);
        let (ok, manifest, err) = k
            .run(&[
                "create",
                "secret",
                "tls",
                secret,
                "-n",
                ns,
                "--cert",
                cert.to_str().expect("path"),
                "--key",
                key.to_str().expect("path"),
                "--dry-run=client",
                "-o",
                "json",
            ])
            .await;
        assert!(ok, "{secret}: {err}");
        let file = dir.path().join(format!("{secret}.json"));
        std::fs::write(&file, manifest).expect("write");
        let (ok, out, err) = k
            .run(&[
                "apply",
                "--validate=false",
                "-f",
                file.to_str().expect("path"),
            ])
            .await;
        assert!(ok, "{secret}: {out}{err}");
    }
    let gateway = example_with(
        dir.path(),
        "secure-gateway.yaml",
        &[("port: 8443", format!("port: {port}"))],
    );
    k.apply(&gateway).await;

    let started = tokio::time::Instant::now();
    let mut last = curl_https("shop.example.com", port, &ca_file).await;
    while last.as_deref() != Ok("web") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "shop.example.com over HTTPS: {last:?}\n{}\n{}",
            sx.log(),
            envoy.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = curl_https("shop.example.com", port, &ca_file).await;
    }
    eprintln!("HTTPS served {:?} after kubectl apply", started.elapsed());
    assert_eq!(
        curl_https("api.example.com", port, &ca_file)
            .await
            .as_deref(),
        Ok("api")
    );
    // vault's certificate is in namespace certs: refused, and said, until
    // certs grants it; the other names are served meanwhile.
    assert!(
        curl_https("vault.example.com", port, &ca_file)
            .await
            .is_err()
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, status) = gateway_status(&double, "secure").await;
        let vault = status["listeners"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["name"] == "vault")
            .and_then(|l| l["conditions"].as_array())
            .and_then(|c| c.iter().find(|c| c["type"] == "ResolvedRefs"))
            .map(|c| c["reason"].clone());
        if vault == Some(serde_json::json!("RefNotPermitted")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ok, out, err) = k
        .run(&[
            "apply",
            "--validate=false",
            "-f",
            &example("certs-grant.yaml"),
        ])
        .await;
    assert!(ok, "{out}{err}");
    let mut last = curl_https("vault.example.com", port, &ca_file).await;
    while last.as_deref() != Ok("web") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "vault.example.com after the grant: {last:?}\n{}",
            sx.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = curl_https("vault.example.com", port, &ca_file).await;
    }

    // Only what a Gateway names leaves the adapter, and no key is shown.
    let configz = sx.json("/debug/configz").await.to_string();
    assert!(configz.contains("shop-cert"), "{configz}");
    assert!(!configz.contains("unused-cert"), "{configz}");
    assert!(!configz.contains("PRIVATE KEY"), "a key on /debug/configz");

    // Rotation: the Secret's data replaced while requests run.
    let rotated = next_ca.server(&["shop.example.com"]);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let patch = serde_json::json!({"data": {
        "tls.crt": b64(&rotated.cert_pem),
        "tls.key": b64(&rotated.key_pem),
    }})
    .to_string();
    let (took, _) = rotation_under_load(
        "shop.example.com",
        port,
        &both,
        &next_ca_file,
        "web",
        async {
            let (ok, out, err) = k
                .run(&[
                    "patch",
                    "secret",
                    "shop-cert",
                    "-n",
                    "edge",
                    "--type",
                    "merge",
                    "-p",
                    &patch,
                ])
                .await;
            assert!(ok, "{out}{err}");
        },
        || sx.log(),
    )
    .await;
    eprintln!("the rotated certificate served {took:?} after kubectl patch");
    // The api name still has its own certificate.
    assert_eq!(
        curl_https("api.example.com", port, &ca_file)
            .await
            .as_deref(),
        Ok("api")
    );
    assert_eq!(
        envoy.stat_sum("update_rejected").await,
        0,
        "{}",
        envoy.log()
    );
}

/// examples/kubernetes/passthrough-gateway.yaml (its ports moved to free
/// ones): a TLSRoute's connections passed through by server name to a
/// backend that terminates TLS itself (curl verifies its certificate), a
/// name no route takes refused, a TCPRoute's connections proxied; the
/// Gateway's listeners count their routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_passes_tls_through_and_proxies_tcp() {
    use sextant_testkit::certs::{TestCa, TlsBackend, curl_https};
    let double = KubeDouble::start().await;
    double.install(Crd::GatewayApi);
    let ca = TestCa::new("backends-ca");
    let alpha = TlsBackend::start("alpha", &ca.server(&["alpha.example.com"])).await;
    let db = HttpBackend::start("db").await;
    service_at(&double, "shop", "alpha", ("tls", 8443), alpha.addr.port());
    service_on(&double, "shop", "db", ("tcp-db", 5432), &db);
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = ca.write(dir.path(), "ca");
    let kubeconfig = double.kubeconfig(dir.path(), "double");
    let sx = start(dir.path(), &kubeconfig, &[]).await;
    let (tls, tcp) = (
        sextant_testkit::peers::free_port(),
        sextant_testkit::peers::free_port(),
    );
    let envoy = router_envoy(
        sx.xds,
        "router~127.0.0.1~passthrough-1.edge~edge.svc.cluster.local",
        "edge/passthrough",
        &[],
    )
    .await;
    let k = Kubectl::new(&double);
    let file = example_with(
        dir.path(),
        "passthrough-gateway.yaml",
        &[
            (
                "port: 8443\n      protocol",
                format!("port: {tls}\n      protocol"),
            ),
            (
                "port: 5432\n      protocol",
                format!("port: {tcp}\n      protocol"),
            ),
        ],
    );
    k.apply(&file).await;

    let started = tokio::time::Instant::now();
    let mut last = curl_https("alpha.example.com", tls, &ca_file).await;
    while last.as_deref() != Ok("alpha") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "alpha through the gateway: {last:?}\n{}",
            sx.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = curl_https("alpha.example.com", tls, &ca_file).await;
    }
    eprintln!(
        "TLS passed through {:?} after kubectl apply",
        started.elapsed()
    );
    assert!(curl_https("beta.example.com", tls, &ca_file).await.is_err());
    let at = std::net::SocketAddr::from(([127, 0, 0, 1], tcp));
    let (status, body) = sextant_testkit::peers::http_get(at, "db", "/")
        .await
        .expect("through the TCP listener");
    assert_eq!((status, body.trim()), (200, "db"));

    // The Gateway counts one route on each listener, of its kind.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, status) = gateway_status(&double, "passthrough").await;
        let counts: Vec<_> = status["listeners"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                format!(
                    "{}:{}:{}",
                    l["name"].as_str().unwrap_or(""),
                    l["supportedKinds"][0]["kind"].as_str().unwrap_or(""),
                    l["attachedRoutes"]
                )
            })
            .collect();
        if counts == ["tls:TLSRoute:1", "db:TCPRoute:1"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{counts:?} {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        envoy.stat_sum("update_rejected").await,
        0,
        "{}",
        envoy.log()
    );
}

/// A Kubernetes Ingress (examples/kubernetes/shop-ingress.yaml) served by
/// a real router Envoy of the ingress gateway (`sextant/ingress`, its
/// ports 80 and 443 at an offset): host and whole-element prefix routing
/// over HTTP, HTTPS with the Secret beside the gateway (curl verifies
/// it), the Ingress's status given the router's address, and another
/// class's Ingress left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingress_is_served_by_the_ingress_gateways_routers() {
    use sextant_testkit::certs::{TestCa, curl_https};
    let Shop {
        double,
        web: _web,
        api: _api,
        dir,
        sx,
    } = shop(Crd::GatewayApi).await;
    // An offset that puts both 80 and 443 on free ports.
    let offset = loop {
        let http = u32::from(sextant_testkit::peers::free_port());
        let https = http - 80 + 443;
        if u16::try_from(https).is_ok_and(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        {
            break http - 80;
        }
    };
    let port = |p: u32| u16::try_from(p + offset).expect("port");
    let envoy = router_envoy(
        sx.xds,
        "router~127.0.0.1~ingress-1.sextant~sextant.svc.cluster.local",
        "sextant/ingress",
        &["--gateway-port-offset", &offset.to_string()],
    )
    .await;
    let k = Kubectl::new(&double);
    let ca = TestCa::new("ingress-ca");
    let ca_file = ca.write(dir.path(), "ca");
    let (cert, key) = ca.server(&["shop.example.com"]).write(dir.path(), "shop");
    let (ok, manifest, err) = k
        .run(&[
            "create",
            "secret",
            "tls",
            "shop-cert",
            "-n",
            "sextant",
            "--cert",
            cert.to_str().expect("path"),
            "--key",
            key.to_str().expect("path"),
            "--dry-run=client",
            "-o",
            "json",
        ])
        .await;
    assert!(ok, "{err}");
    let secret = dir.path().join("secret.json");
    std::fs::write(&secret, manifest).expect("write");
    for file in [
        secret.to_str().expect("path").to_owned(),
        example("shop-ingress.yaml"),
    ] {
        k.apply(&file).await;
    }
    let at = std::net::SocketAddr::from(([127, 0, 0, 1], port(80)));
    let took = settles(at, "shop.example.com", "/api/cart", (200, "api")).await;
    eprintln!("the Ingress served {took:?} after kubectl apply");
    settles(at, "shop.example.com", "/api", (200, "api")).await;
    // Whole path elements: /apiary is not under /api.
    settles(at, "shop.example.com", "/apiary", (200, "web")).await;
    settles(at, "shop.example.com", "/", (200, "web")).await;
    // The other class's Ingress is not served here.
    settles(at, "legacy.example.com", "/", (404, "no route")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut last = curl_https("shop.example.com", port(443), &ca_file).await;
    while last.as_deref() != Ok("web") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "HTTPS: {last:?}\n{}",
            sx.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = curl_https("shop.example.com", port(443), &ca_file).await;
    }
    // The Ingress's status: the router's address; the other's: nothing.
    let status = |name: &'static str| {
        let k = &k;
        async move {
            let (ok, out, err) = k
                .run(&["get", "ingress", name, "-n", "shop", "-o", "json"])
                .await;
            assert!(ok, "{out}{err}");
            let v: serde_json::Value = serde_json::from_str(&out).expect("json");
            v["status"]["loadBalancer"]["ingress"].clone()
        }
    };
    loop {
        let now = status("shop").await;
        if now == serde_json::json!([{"ip": "127.0.0.1"}]) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(status("legacy").await.is_null());
    assert_eq!(
        envoy.stat_sum("update_rejected").await,
        0,
        "{}",
        envoy.log()
    );
}
