//! A real Envoy as a router proxy at the edge of the mesh (`sextant
//! bootstrap --mode router --gateway edge/public`), its gateway and the
//! route rules bound to it from a registry file: the declared port listens
//! (404) before any route binds; host and path routing to two services;
//! a name the rule does not serve, a listener whose hostname does not
//! cover it and one whose allowedRoutes refuse the rule's namespace all
//! answer 404 (and /debug/syncz says why); the rule removed, 404 again;
//! the router has no sidecar listener. HTTPS with credentials over SDS and
//! their rotation; TLS passed through by server name and TCP proxied.
//!
//! A module of the `binary` test (one test binary less to link).

use std::net::SocketAddr;
use std::time::Duration;

use sextant_testkit::certs::{Issued, curl_https as curl};
use sextant_testkit::peers::{HttpBackend, free_port};

use super::common::*;

fn mesh_file(web: u16, api: u16, public: u16, internal: u16, routes: bool) -> String {
    let mut s = format!(
        "\
services:
  - hostname: web.shop.svc
    namespace: shop
    ports: [{{ name: http, port: 8080 }}]
    endpoints: [{{ address: 127.0.0.1, ports: {{ http: {web} }} }}]
  - hostname: api.shop.svc
    namespace: shop
    ports: [{{ name: http, port: 9090 }}]
    endpoints: [{{ address: 127.0.0.1, ports: {{ http: {api} }} }}]
gateways:
  - name: public
    namespace: edge
    listeners:
      - {{ name: http, port: {public}, protocol: HTTP, allowedRoutes: {{ namespaces: {{ from: All }} }} }}
      - {{ name: internal, port: {internal}, protocol: HTTP, hostname: '*.internal.test' }}
"
    );
    if routes {
        s.push_str(
            "\
routes:
  - name: storefront
    namespace: shop
    gateways: [edge/public]
    hosts: [shop.example.com, shop.internal.test]
    http:
      - match: [{ uri: { prefix: /api } }]
        route: [{ destination: { host: api.shop.svc } }]
      - route: [{ destination: { host: web.shop.svc } }]
",
        );
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_envoy_serves_its_gateway_and_the_routes_bound_to_it() {
    let web = HttpBackend::start("web").await;
    let api = HttpBackend::start("api").await;
    let (public, internal) = (free_port(), free_port());
    let text = |routes| mesh_file(web.addr.port(), api.addr.port(), public, internal, routes);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, text(false)).expect("write");
    let sx = Sextant::start(dir.path(), &["--file", file.to_str().expect("path")]).await;
    let envoy = router_envoy(
        sx.xds,
        "router~127.0.0.1~public-1.edge~edge.svc.cluster.local",
        "edge/public",
        &[],
    )
    .await;
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));

    // Declared ports listen before any route binds: 404, naming the gateway.
    settles(
        at(public),
        "shop.example.com",
        "/",
        (404, "no route for this host at gateway edge/public"),
    )
    .await;
    settles(at(internal), "shop.internal.test", "/", (404, "no route")).await;

    // The rule binds: host and path routing.
    std::fs::write(&file, text(true)).expect("write");
    let took = settles(at(public), "shop.example.com", "/api/items", (200, "api")).await;
    eprintln!("the bound rule in force after {took:?}");
    settles(at(public), "shop.example.com", "/", (200, "web")).await;
    // With the port, as a browser sends it.
    settles(
        at(public),
        &format!("shop.example.com:{public}"),
        "/",
        (200, "web"),
    )
    .await;
    // A name it does not serve; the internal listener refuses a rule of
    // another namespace (allowedRoutes: Same, the default).
    settles(at(public), "other.example.com", "/", (404, "no route")).await;
    settles(at(internal), "shop.internal.test", "/", (404, "no route")).await;
    let syncz = sx.json("/debug/syncz").await;
    let router = &syncz["connections"][0]["router"];
    assert_eq!(router["gateway"], "edge/public", "{syncz}");
    let problems = router["problems"].to_string();
    assert!(
        problems.contains("listener internal: route shop/storefront may not bind"),
        "{problems}"
    );

    // A router gets its gateway's listeners and nothing of a sidecar's.
    let (_, listeners) = envoy.admin_get("/listeners").await;
    let mut names: Vec<&str> = listeners
        .lines()
        .map(|l| l.split("::").next().unwrap_or(l))
        .collect();
    names.sort_unstable();
    let mut want = vec![
        format!("127.0.0.1_{public}"),
        format!("127.0.0.1_{internal}"),
    ];
    want.sort();
    assert_eq!(names, want, "{listeners}");

    // The rule removed: 404 again, the port still listening.
    std::fs::write(&file, text(false)).expect("write");
    settles(at(public), "shop.example.com", "/api", (404, "no route")).await;
    assert_eq!(
        envoy.stat_sum("update_rejected").await,
        0,
        "{}",
        envoy.log()
    );
}

/// The registry file of an HTTPS gateway: listeners `shop` and `api` on
/// one port, told apart by server name, each with its credential; `broken`
/// names a credential that does not exist.
fn https_file(port: u16, web: u16, api: u16, shop: &Issued, api_cert: &Issued) -> String {
    let indent = |pem: &str| pem.trim_end().replace('\n', "\n      ");
    format!(
        "\
services:
  - hostname: web.shop.svc
    namespace: shop
    ports: [{{ name: http, port: 8080 }}]
    endpoints: [{{ address: 127.0.0.1, ports: {{ http: {web} }} }}]
  - hostname: api.shop.svc
    namespace: shop
    ports: [{{ name: http, port: 9090 }}]
    endpoints: [{{ address: 127.0.0.1, ports: {{ http: {api} }} }}]
gateways:
  - name: secure
    namespace: edge
    listeners:
      - {{ name: shop, port: {port}, protocol: HTTPS, hostname: shop.example.com, tls: {{ certificateRefs: [shop-cert] }} }}
      - {{ name: api, port: {port}, protocol: HTTPS, hostname: api.example.com, tls: {{ certificateRefs: [api-cert] }} }}
      - {{ name: broken, port: {port}, protocol: HTTPS, hostname: broken.example.com, tls: {{ certificateRefs: [missing-cert] }} }}
routes:
  - name: shop-site
    namespace: edge
    gateways: [secure]
    hosts: [shop.example.com, broken.example.com]
    http: [{{ route: [{{ destination: {{ host: web.shop.svc }} }}] }}]
  - name: api-site
    namespace: edge
    gateways: [secure]
    hosts: [api.example.com]
    http: [{{ route: [{{ destination: {{ host: api.shop.svc }} }}] }}]
credentials:
  - name: shop-cert
    namespace: edge
    certificateChain: |
      {}
    privateKey: |
      {}
  - name: api-cert
    namespace: edge
    certificateChain: |
      {}
    privateKey: |
      {}
",
        indent(&shop.cert_pem),
        indent(&shop.key_pem),
        indent(&api_cert.cert_pem),
        indent(&api_cert.key_pem),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_terminates_https_with_credentials_over_sds_and_follows_a_rotation() {
    use sextant_testkit::certs::TestCa;
    let web = HttpBackend::start("web").await;
    let api = HttpBackend::start("api").await;
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, next_ca) = (TestCa::new("edge-ca"), TestCa::new("rotated-ca"));
    let ca_file = ca.write(dir.path(), "ca");
    let next_ca_file = next_ca.write(dir.path(), "next-ca");
    let both = dir.path().join("both.pem");
    std::fs::write(&both, format!("{}{}", ca.cert_pem, next_ca.cert_pem)).expect("write");
    let (shop, api_cert) = (
        ca.server(&["shop.example.com"]),
        ca.server(&["api.example.com"]),
    );
    let file = dir.path().join("mesh.yaml");
    let text = |shop: &Issued| https_file(port, web.addr.port(), api.addr.port(), shop, &api_cert);
    std::fs::write(&file, text(&shop)).expect("write");
    let sx = Sextant::start(dir.path(), &["--file", file.to_str().expect("path")]).await;
    let envoy = router_envoy(
        sx.xds,
        "router~127.0.0.1~secure-1.edge~edge.svc.cluster.local",
        "edge/secure",
        &[],
    )
    .await;

    // Each name gets its own certificate (curl verifies it against the
    // name it sent) and its own routes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while curl("shop.example.com", port, &ca_file).await.as_deref() != Ok("web") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}\n{}",
            sx.log(),
            envoy.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        curl("api.example.com", port, &ca_file).await.as_deref(),
        Ok("api")
    );
    // The listener whose credential is missing is not served; the others are.
    assert!(curl("broken.example.com", port, &ca_file).await.is_err());
    let syncz = sx.json("/debug/syncz").await;
    let problems = syncz["connections"][0]["router"]["problems"].to_string();
    assert!(
        problems.contains("credential edge/missing-cert not found"),
        "{problems}"
    );
    // `sextant proxy-config ROUTER secrets`: the router's two credentials,
    // synced, and nothing of their contents.
    let out = tokio::process::Command::new(BIN)
        .args([
            "proxy-config",
            "router~127.0.0.1~secure-1.edge~edge.svc.cluster.local",
        ])
        .args(["secrets", "--xds-addr", &sx.xds.to_string()])
        .output()
        .await
        .expect("run sextant proxy-config");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    for name in ["edge/api-cert", "edge/shop-cert"] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(name) && l.contains("SYNCED")),
            "{name} in\n{table}"
        );
    }
    assert!(!table.contains("edge/missing-cert"), "{table}");
    assert!(!table.contains("BEGIN"), "{table}");
    // The key never leaves over a debug endpoint.
    let configz = sx.json("/debug/configz").await.to_string();
    assert!(
        !configz.contains("PRIVATE KEY"),
        "a private key on /debug/configz"
    );

    // Rotated to a certificate of another CA while requests run: not one
    // fails (curl trusts both), and the new one is served.
    let rotated = text(&next_ca.server(&["shop.example.com"]));
    let (took, _) = rotation_under_load(
        "shop.example.com",
        port,
        &both,
        &next_ca_file,
        "web",
        async { std::fs::write(&file, rotated).expect("write") },
        String::new,
    )
    .await;
    eprintln!("the rotated certificate served {took:?} after the file changed");
    assert_eq!(
        envoy.stat_sum("update_rejected").await,
        0,
        "{}",
        envoy.log()
    );
}

/// A gateway with a TLS listener (passed through by server name) and a
/// TCP listener, and the rules bound to them.
fn l4_file(tls: u16, tcp: u16, alpha: u16, beta: u16, db: u16, beta_routed: bool) -> String {
    let beta_route = if beta_routed {
        "\n      - { match: [{ sniHosts: [beta.example.com] }], route: [{ destination: { host: beta.shop.svc } }] }"
    } else {
        ""
    };
    format!(
        "\
services:
  - hostname: alpha.shop.svc
    namespace: shop
    ports: [{{ name: tls, port: 8443, protocol: TLS }}]
    endpoints: [{{ address: 127.0.0.1, ports: {{ tls: {alpha} }} }}]
  - hostname: beta.shop.svc
    namespace: shop
    ports: [{{ name: tls, port: 8443, protocol: TLS }}]
    endpoints: [{{ address: 127.0.0.1, ports: {{ tls: {beta} }} }}]
  - hostname: db.shop.svc
    namespace: shop
    ports: [{{ name: tcp, port: 5432, protocol: TCP }}]
    endpoints: [{{ address: 127.0.0.1, ports: {{ tcp: {db} }} }}]
gateways:
  - name: passthrough
    namespace: edge
    listeners:
      - {{ name: tls, port: {tls}, protocol: TLS, hostname: '*.example.com' }}
      - {{ name: db, port: {tcp}, protocol: TCP }}
routes:
  - name: sites
    namespace: edge
    gateways: [passthrough]
    hosts: [alpha.example.com, beta.example.com]
    tls:
      - {{ match: [{{ sniHosts: [alpha.example.com] }}], route: [{{ destination: {{ host: alpha.shop.svc }} }}] }}{beta_route}
  - name: db
    namespace: edge
    gateways: [passthrough]
    hosts: ['*']
    tcp: [{{ route: [{{ destination: {{ host: db.shop.svc }} }}] }}]
"
    )
}

/// TLS passed through by server name to backends that terminate it
/// themselves (curl verifies their certificates: the router holds none),
/// a name no route takes is refused, a route added later is followed, and
/// a TCP listener proxies to its route's service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_passes_tls_through_by_server_name_and_proxies_tcp() {
    use sextant_testkit::certs::{TestCa, TlsBackend};
    let ca = TestCa::new("backends-ca");
    let alpha = TlsBackend::start("alpha", &ca.server(&["alpha.example.com"])).await;
    let beta = TlsBackend::start("beta", &ca.server(&["beta.example.com"])).await;
    let db = HttpBackend::start("db").await;
    let (tls, tcp) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = ca.write(dir.path(), "ca");
    let file = dir.path().join("mesh.yaml");
    let text = |beta_routed| {
        l4_file(
            tls,
            tcp,
            alpha.addr.port(),
            beta.addr.port(),
            db.addr.port(),
            beta_routed,
        )
    };
    std::fs::write(&file, text(false)).expect("write");
    let sx = Sextant::start(dir.path(), &["--file", file.to_str().expect("path")]).await;
    let envoy = router_envoy(
        sx.xds,
        "router~127.0.0.1~passthrough-1.edge~edge.svc.cluster.local",
        "edge/passthrough",
        &[],
    )
    .await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut last = curl("alpha.example.com", tls, &ca_file).await;
    while last.as_deref() != Ok("alpha") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "alpha through the gateway: {last:?}\n{}\n{}",
            sx.log(),
            envoy.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = curl("alpha.example.com", tls, &ca_file).await;
    }
    // No route takes beta yet: the connection is closed, not sent to alpha.
    assert!(curl("beta.example.com", tls, &ca_file).await.is_err());
    let at = SocketAddr::from(([127, 0, 0, 1], tcp));
    assert_eq!(
        sextant_testkit::peers::http_get(at, "db", "/")
            .await
            .map(|(s, b)| (s, b.trim().to_owned()))
            .ok(),
        Some((200, "db".to_owned()))
    );

    // beta's route added: its connections reach beta, alpha's still alpha.
    std::fs::write(&file, text(true)).expect("write");
    let started = tokio::time::Instant::now();
    while curl("beta.example.com", tls, &ca_file).await.as_deref() != Ok("beta") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "beta's route is not followed\n{}",
            sx.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "a TLS route added served {:?} after the file changed",
        started.elapsed()
    );
    assert_eq!(
        curl("alpha.example.com", tls, &ca_file).await.as_deref(),
        Ok("alpha")
    );
    assert_eq!(
        envoy.stat_sum("update_rejected").await,
        0,
        "{}",
        envoy.log()
    );
}

/// A declared port below 1024 listens at the port plus the router's
/// `--gateway-port-offset` (an unprivileged Envoy behind a Service that
/// maps 80 to it); names and routes are the declared port's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_below_1024_listens_at_the_routers_offset() {
    let web = HttpBackend::start("web").await;
    let listen = free_port();
    let offset = u32::from(listen) - 80;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    let text = format!(
        "\
services:
  - hostname: web.shop.svc
    namespace: shop
    ports: [{{ name: http, port: 8080 }}]
    endpoints: [{{ address: 127.0.0.1, ports: {{ http: {} }} }}]
gateways:
  - name: public
    namespace: edge
    listeners: [{{ name: http, port: 80, protocol: HTTP }}]
routes:
  - name: site
    namespace: edge
    gateways: [public]
    hosts: [shop.example.com]
    http: [{{ route: [{{ destination: {{ host: web.shop.svc }} }}] }}]
",
        web.addr.port()
    );
    std::fs::write(&file, text).expect("write");
    let sx = Sextant::start(dir.path(), &["--file", file.to_str().expect("path")]).await;
    let envoy = router_envoy(
        sx.xds,
        "router~127.0.0.1~public-1.edge~edge.svc.cluster.local",
        "edge/public",
        &["--gateway-port-offset", &offset.to_string()],
    )
    .await;
    let at = SocketAddr::from(([127, 0, 0, 1], listen));
    // The Host a client of port 80 sends, with and without the port.
    settles(at, "shop.example.com", "/", (200, "web")).await;
    settles(at, "shop.example.com:80", "/", (200, "web")).await;
    let (_, listeners) = envoy.admin_get("/listeners").await;
    assert!(
        listeners.contains(&format!("127.0.0.1_{listen}")),
        "{listeners}"
    );
}

/// A real browser through the router over HTTPS: headless Chromium,
/// trusting only the gateway's certificate (by its public key) and
/// resolving the name to the router, loads the page the route serves; the
/// screenshot is kept in target/test-artifacts/gateway-https.png.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_loads_a_page_over_https_through_the_router() {
    use sextant_testkit::certs::TestCa;
    let web = HttpBackend::start("web").await;
    let api = HttpBackend::start("api").await;
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("edge-ca");
    let ca_file = ca.write(dir.path(), "ca");
    let (shop, api_cert) = (
        ca.server(&["shop.example.com"]),
        ca.server(&["api.example.com"]),
    );
    let file = dir.path().join("mesh.yaml");
    std::fs::write(
        &file,
        https_file(port, web.addr.port(), api.addr.port(), &shop, &api_cert),
    )
    .expect("write");
    let sx = Sextant::start(dir.path(), &["--file", file.to_str().expect("path")]).await;
    let _router = router_envoy(
        sx.xds,
        "router~127.0.0.1~secure-1.edge~edge.svc.cluster.local",
        "edge/secure",
        &[],
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while curl("shop.example.com", port, &ca_file).await.as_deref() != Ok("web") {
        assert!(tokio::time::Instant::now() < deadline, "{}", sx.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let artifacts =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("mkdir");
    let screenshot = artifacts.join("gateway-https.png");
    let _ = std::fs::remove_file(&screenshot);
    let url = format!("https://shop.example.com:{port}/");
    // A profile of its own per run: nothing carried from one to the next.
    let runs = std::sync::atomic::AtomicUsize::new(0);
    let browser = |trusted: String, mut last: Vec<String>| {
        let run = runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let profile = dir.path().join(format!("chromium-{run}"));
        last.splice(
            0..0,
            [
                "--host-resolver-rules=MAP shop.example.com 127.0.0.1".to_owned(),
                format!("--ignore-certificate-errors-spki-list={trusted}"),
            ],
        );
        async move { sextant_testkit::peers::chromium(&profile, &last).await }
    };
    let dom = browser(shop.spki_sha256(), vec!["--dump-dom".into(), url.clone()]).await;
    let page = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(
        page.contains(">web<") || page.contains(">web\n"),
        "the page through the router:\n{page}\n{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    // Trusting another key instead, the browser refuses the gateway's.
    let refused = browser(
        api_cert.spki_sha256(),
        vec!["--dump-dom".into(), url.clone()],
    )
    .await;
    let refused = String::from_utf8_lossy(&refused.stdout).into_owned();
    assert!(
        !(refused.contains(">web<") || refused.contains(">web\n")),
        "loaded with an untrusted certificate:\n{refused}"
    );
    let shot = browser(
        shop.spki_sha256(),
        vec![
            format!("--screenshot={}", screenshot.display()),
            "--window-size=1024,600".into(),
            url,
        ],
    )
    .await;
    assert!(
        std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 1_000),
        "no screenshot: {}",
        String::from_utf8_lossy(&shot.stderr)
    );
}

/// A rule bound to one listener (`NS/NAME/LISTENER`, the Gateway API's
/// `sectionName`) or one port (`NS/NAME:PORT`) of a gateway is served
/// there and nowhere else on the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_bound_to_one_listener_or_port_is_served_there_only() {
    let web = HttpBackend::start("web").await;
    let api = HttpBackend::start("api").await;
    let (one, two) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(
        &file,
        format!(
            "\
services:
  - hostname: web.shop.svc
    namespace: shop
    ports: [{{ name: http, port: 8080 }}]
    endpoints: [{{ address: 127.0.0.1, ports: {{ http: {web} }} }}]
  - hostname: api.shop.svc
    namespace: shop
    ports: [{{ name: http, port: 9090 }}]
    endpoints: [{{ address: 127.0.0.1, ports: {{ http: {api} }} }}]
gateways:
  - name: public
    namespace: edge
    listeners:
      - {{ name: one, port: {one}, protocol: HTTP }}
      - {{ name: two, port: {two}, protocol: HTTP }}
routes:
  - name: site
    namespace: edge
    gateways: [edge/public/one]
    hosts: [shop.example.com]
    http: [{{ route: [{{ destination: {{ host: web.shop.svc }} }}] }}]
  - name: api
    namespace: edge
    gateways: ['edge/public:{two}']
    hosts: [shop.example.com]
    http: [{{ route: [{{ destination: {{ host: api.shop.svc }} }}] }}]
",
            web = web.addr.port(),
            api = api.addr.port(),
        ),
    )
    .expect("write");
    let sx = Sextant::start(dir.path(), &["--file", file.to_str().expect("path")]).await;
    let envoy = router_envoy(
        sx.xds,
        "router~127.0.0.1~public-1.edge~edge.svc.cluster.local",
        "edge/public",
        &[],
    )
    .await;
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    // One name, two listeners, a rule each: no conflict between them.
    settles(at(one), "shop.example.com", "/", (200, "web")).await;
    settles(at(two), "shop.example.com", "/", (200, "api")).await;
    let syncz = sx.json("/debug/syncz").await;
    assert!(
        syncz["connections"][0]["router"].get("problems").is_none(),
        "{syncz}"
    );
    assert_eq!(
        envoy.stat_sum("update_rejected").await,
        0,
        "{}",
        envoy.log()
    );
}
