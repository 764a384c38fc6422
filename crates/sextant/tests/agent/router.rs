//! The agent running a gateway's router. A module of the `agent` test.

use super::*;

/// `sextant agent --mode router` runs a gateway's router (deploy/
/// gateway.yaml): not ready before Sextant gives it its listeners, then
/// ready, serving the gateway's declared port 80 at the port offset, as
/// node type `router`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_agent_is_ready_once_it_serves_its_gateway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = HttpBackend::start("web-backend").await;
    let xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let listen = free_port();
    let offset = (u32::from(listen) - 80).to_string();
    let agent = Agent::start_as(
        dir.path(),
        xds,
        "10s",
        &[
            "--mode",
            "router",
            "--gateway",
            "edge/public",
            "--gateway-bind",
            "127.0.0.1",
            "--gateway-port-offset",
            &offset,
            "--no-workload-certs",
        ],
        "public",
    );
    agent.until_ready(503).await;
    let file = dir.path().join("mesh.yaml");
    std::fs::write(
        &file,
        format!(
            "\
services:
  - hostname: web.shop.svc
    namespace: shop
    ports: [{{ name: http, port: 8080 }}]
    endpoints: [{{ address: 127.0.0.1, ports: {{ http: {} }} }}]
gateways:
  - name: public
    namespace: edge
    listeners: [{{ name: http, port: 80, protocol: HTTP, allowedRoutes: {{ namespaces: {{ from: All }} }} }}]
routes:
  - name: site
    namespace: shop
    gateways: [edge/public]
    hosts: [shop.example.com]
    http: [{{ route: [{{ destination: {{ host: web.shop.svc }} }}] }}]
",
            backend.addr.port()
        ),
    )
    .expect("write");
    let sx = Sextant::start(
        dir.path(),
        &[
            "--file",
            file.to_str().expect("path"),
            "--xds-addr",
            &xds.to_string(),
        ],
    )
    .await;
    agent.until_ready(200).await;
    let at = SocketAddr::from(([127, 0, 0, 1], listen));
    assert_eq!(
        http_get(at, "shop.example.com", "/")
            .await
            .map(|(s, b)| (s, b.trim().to_owned()))
            .ok(),
        Some((200, "web-backend".to_owned())),
        "{}",
        log(dir.path())
    );
    let syncz = sx.json("/debug/syncz").await;
    let router = syncz["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .find(|c| c["node_id"] == "router~127.0.0.1~public-1.shop~shop.svc.cluster.local")
        .unwrap_or_else(|| panic!("the router is not connected: {syncz}"));
    assert_eq!(router["router"]["gateway"], "edge/public", "{router}");
}
