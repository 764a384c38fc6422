//! `exportTo` from registry files, seen from two namespaces' proxies: two
//! real Envoys (namespaces shop and web), each on its own Sextant replica
//! reading the same file (explicit mode gives every proxy of a replica
//! the same outbound port). A Service, a ServiceEntry, route rules and
//! destination policies exported to some namespaces only; the file
//! rewritten while both proxies run.
//!
//! A module of the `binary` test (one test binary less to link).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use sextant_testkit::peers::{Envoy, HttpBackend};

use super::common::*;

/// The registry file: reviews (two versions) and an internal Service of
/// shop, exported to shop only, and a ServiceEntry of shop exported to
/// shop only; each namespace's own route rule for reviews; shop's policy
/// for every namespace, or (`private`) for shop only beside web's own.
fn mesh_file(v1: u16, v2: u16, internal: u16, private: bool) -> String {
    let shop_policy_export = if private { "[.]" } else { "['*']" };
    let mut s = format!(
        "\
services:
  - hostname: reviews.shop.svc
    namespace: shop
    ports: [{{ name: http, port: 9080 }}]
    endpoints:
      - {{ address: 127.0.0.1, ports: {{ http: {v1} }}, labels: {{ version: v1 }} }}
      - {{ address: 127.0.0.1, ports: {{ http: {v2} }}, labels: {{ version: v2 }} }}
  - hostname: internal.shop.svc
    namespace: shop
    exportTo: [.]
    ports: [{{ name: http, port: 9080 }}]
    endpoints:
      - {{ address: 127.0.0.1, ports: {{ http: {internal} }} }}
serviceEntries:
  - name: partner
    namespace: shop
    exportTo: [.]
    hosts: [partner.shop.test]
    resolution: STATIC
    ports: [{{ number: 9080, name: http }}]
    endpoints:
      - {{ address: 127.0.0.1, ports: {{ http: {internal} }} }}
routes:
  - name: canary
    namespace: shop
    exportTo: [.]
    hosts: [reviews.shop.svc]
    http: [{{ route: [{{ destination: {{ host: reviews.shop.svc, subset: v2 }} }}] }}]
  - name: stable
    namespace: web
    exportTo: [.]
    hosts: [reviews.shop.svc]
    http: [{{ route: [{{ destination: {{ host: reviews.shop.svc, subset: v1 }} }}] }}]
policies:
  - name: versions
    namespace: shop
    exportTo: {shop_policy_export}
    host: reviews.shop.svc
    subsets:
      - {{ name: v1, labels: {{ version: v1 }} }}
      - {{ name: v2, labels: {{ version: v2 }} }}
"
    );
    if private {
        s.push_str(
            "  - name: for-web
    namespace: web
    exportTo: [.]
    host: reviews.shop.svc
    subsets:
      - { name: v1, labels: { version: v2 } }
",
        );
    }
    s
}

/// How many of `n` requests for `host` got each (status, body).
async fn answers(outbound: SocketAddr, host: &str, n: usize) -> BTreeMap<(u16, String), usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let r = sextant_testkit::peers::http_request(outbound, host, "/", &[])
            .await
            .expect("request");
        *seen.entry((r.status, r.body)).or_default() += 1;
    }
    seen
}

/// Polls until 20 requests in a row for `host` answer `want` (10 s bound).
async fn settles(outbound: SocketAddr, host: &str, want: (u16, &str)) -> Duration {
    let started = tokio::time::Instant::now();
    let want = (want.0, want.1.to_owned());
    loop {
        let got = answers(outbound, host, 20).await;
        if got.len() == 1 && got.contains_key(&want) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{host} never settled on {want:?}: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_file_exports_to_one_namespace_reaches_only_its_proxies() {
    let v1 = HttpBackend::start("reviews-v1").await;
    let v2 = HttpBackend::start("reviews-v2").await;
    let internal = HttpBackend::start("internal").await;
    let ports = (v1.addr.port(), v2.addr.port(), internal.addr.port());
    let text = |private| mesh_file(ports.0, ports.1, ports.2, private);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, text(false)).expect("write");
    let args = ["--file", file.to_str().expect("path")];
    let shop_sx = Sextant::start(dir.path(), &args).await;
    let web_sx = Sextant::start(dir.path(), &args).await;
    let mut envoys = Vec::new();
    for (sx, ns) in [(&shop_sx, "shop"), (&web_sx, "web")] {
        let node = format!("{ns}-app");
        let bootstrap = bootstrap_with(&[sx.xds], &node, &["--namespace", ns]).await;
        let envoy = Envoy::start(&bootstrap).await;
        envoy.wait_live().await;
        envoys.push(envoy);
    }
    let (shop, web) = (shop_sx.outbound, web_sx.outbound);
    let reviews = "reviews.shop.svc";

    // Each namespace's own route rule; the others' do not reach it.
    settles(shop, reviews, (200, "reviews-v2")).await;
    settles(web, reviews, (200, "reviews-v1")).await;
    // What is exported to shop only is shop's: web's Envoy has no route
    // to it (404 from its outbound table's catch-all).
    for host in ["internal.shop.svc", "partner.shop.test"] {
        settles(shop, host, (200, "internal")).await;
        let hidden = answers(web, host, 10).await;
        assert_eq!(hidden.len(), 1, "{host}: {hidden:?}");
        assert!(
            hidden.keys().all(|(status, _)| *status == 404),
            "{host}: {hidden:?}"
        );
    }

    // shop's policy for shop only, and web's own, whose subset v1 names
    // the pods labelled v2: web's requests follow web's policy.
    std::fs::write(&file, text(true)).expect("write");
    let took = settles(web, reviews, (200, "reviews-v2")).await;
    eprintln!("web's own destination policy in force after {took:?}");
    assert_eq!(
        answers(shop, reviews, 50).await,
        [((200, "reviews-v2".to_owned()), 50)].into()
    );
    let configz = web_sx.json("/debug/configz").await;
    let namespaced = &configz["services"][reviews]["namespaced"];
    assert_eq!(namespaced.as_array().map(Vec::len), Some(2), "{namespaced}");
    for envoy in &envoys {
        assert_eq!(
            envoy.stat_sum("update_rejected").await,
            0,
            "{}",
            envoy.log()
        );
    }
}
