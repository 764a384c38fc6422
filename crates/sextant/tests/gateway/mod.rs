//! A real Envoy as a router proxy at the edge of the mesh (`sextant
//! bootstrap --mode router --gateway edge/public`), its gateway and the
//! route rules bound to it from a registry file: the declared port listens
//! (404) before any route binds; host and path routing to two services;
//! a name the rule does not serve, a listener whose hostname does not
//! cover it and one whose allowedRoutes refuse the rule's namespace all
//! answer 404 (and /debug/syncz says why); the rule removed, 404 again;
//! the router has no sidecar listener.
//!
//! A module of the `binary` test (one test binary less to link).

use std::net::SocketAddr;
use std::time::Duration;

use sextant_testkit::peers::{Envoy, HttpBackend, free_port};

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

/// Polls until 10 requests in a row for `host` at `addr` answer `want`
/// (10 s bound); how long that took.
async fn settles(addr: SocketAddr, host: &str, path: &str, want: (u16, &str)) -> Duration {
    let started = tokio::time::Instant::now();
    let mut in_a_row = 0;
    let mut last = (0, String::new());
    while in_a_row < 10 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{host}{path} never settled on {want:?}: last {last:?}"
        );
        last = sextant_testkit::peers::http_get(addr, host, path)
            .await
            .unwrap_or((0, String::new()));
        let hit = last.0 == want.0 && last.1.starts_with(want.1);
        in_a_row = if hit { in_a_row + 1 } else { 0 };
        if !hit {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    started.elapsed()
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
    let bootstrap = bootstrap_with(
        &[sx.xds],
        "router~127.0.0.1~public-1.edge~edge.svc.cluster.local",
        &[
            "--mode",
            "router",
            "--gateway",
            "edge/public",
            "--gateway-bind",
            "127.0.0.1",
        ],
    )
    .await;
    let envoy = Envoy::start(&bootstrap).await;
    envoy.wait_live().await;
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
