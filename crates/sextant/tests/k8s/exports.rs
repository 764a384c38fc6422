//! `exportTo` seen from two namespaces' proxies: two real Envoys, one of
//! namespace shop and one of namespace web, each on its own Sextant
//! replica (explicit mode gives every proxy of a replica the same
//! outbound port) reading one API-server double; VirtualServices,
//! DestinationRules and a GAMMA consumer route applied with kubectl
//! (examples/kubernetes/reviews-per-namespace.yaml and its neighbours).
//!
//! A module of the `k8s` test.

use super::*;

/// How many of `n` requests for `host` got each (status, body).
async fn answers(
    outbound: std::net::SocketAddr,
    host: &str,
    n: usize,
) -> std::collections::BTreeMap<(u16, String), usize> {
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..n {
        let r = sextant_testkit::peers::http_request(outbound, host, "/", &[])
            .await
            .expect("request");
        *seen.entry((r.status, r.body)).or_default() += 1;
    }
    seen
}

/// Polls until every one of 20 requests for `host` answers 200 `want`
/// (bounded, 10 s); the time that took.
async fn until_only(outbound: std::net::SocketAddr, host: &str, want: &str) -> Option<Duration> {
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let got = answers(outbound, host, 20).await;
        if got.len() == 1 && got.contains_key(&(200, want.to_owned())) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// One pod of Service shop/reviews with label version, served by `backend`.
fn reviews_pod(double: &KubeDouble, version: &str, backend: &HttpBackend) {
    let pod = format!("reviews-{version}");
    double.apply(objects::pod(
        "shop",
        &pod,
        "127.0.0.1",
        "node-a",
        &[("app", "reviews"), ("version", version)],
    ));
    let ep = objects::for_pod(
        objects::endpoint("127.0.0.1", Some("node-a"), None),
        "shop",
        &pod,
    );
    double.apply(objects::slice(
        "shop",
        &format!("{pod}-slice"),
        "reviews",
        &[("http", i32::from(backend.addr.port()))],
        vec![ep],
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_exported_to_some_namespaces_reach_only_their_proxies() {
    let double = KubeDouble::start().await;
    double.install(Crd::Istio);
    double.install(Crd::GatewayApi);
    let v1 = HttpBackend::start("reviews-v1").await;
    let v2 = HttpBackend::start("reviews-v2").await;
    let ratings = HttpBackend::start("ratings").await;
    double.apply(objects::service("shop", "reviews", &[("http", 9080, 9080)]));
    reviews_pod(&double, "v1", &v1);
    reviews_pod(&double, "v2", &v2);
    service_in(&double, "shop", "ratings", &ratings);
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = double.kubeconfig(dir.path(), "double");
    let shop_sx = start(dir.path(), &kubeconfig, &[]).await;
    let web_sx = start(dir.path(), &kubeconfig, &[]).await;
    let mut envoys = Vec::new();
    for (sx, ns) in [(&shop_sx, "shop"), (&web_sx, "web")] {
        let node = format!("{ns}-app");
        let envoy =
            Envoy::start(&bootstrap_with(&[sx.xds], &node, &["--namespace", ns]).await).await;
        envoy.wait_live().await;
        envoys.push(envoy);
    }
    let (shop, web) = (shop_sx.outbound, web_sx.outbound);
    let host = "reviews.shop.svc.cluster.local";
    let logs = || format!("{}\n{}", shop_sx.log(), web_sx.log());
    // No rule yet: both versions answer both namespaces.
    for outbound in [shop, web] {
        let mut seen = answers(outbound, host, 1).await;
        for _ in 0..200 {
            if seen.len() == 2 {
                break;
            }
            seen.extend(answers(outbound, host, 1).await);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(seen.len(), 2, "{seen:?}\n{}", logs());
    }

    let k = Kubectl::new(&double);
    let apply = |file: &'static str| {
        let k = &k;
        async move {
            k.apply(&example(file)).await;
        }
    };
    // Each namespace's own VirtualService, exported to itself only.
    apply("reviews-per-namespace.yaml").await;
    let took = until_only(shop, host, "reviews-v2").await;
    assert!(took.is_some(), "shop's proxy is not canaried: {}", logs());
    let took_web = until_only(web, host, "reviews-v1").await;
    assert!(took_web.is_some(), "web's proxy is not pinned: {}", logs());
    eprintln!("own VirtualServices in force: shop {took:?}, web {took_web:?}");
    // Steady, not a passing moment.
    assert_eq!(answers(shop, host, 50).await.len(), 1);
    assert_eq!(answers(web, host, 50).await.len(), 1);

    // shop's DestinationRule for shop only: web's route to subset v1 has
    // no cluster left (503), shop's proxy keeps its v2.
    apply("reviews-private-destination-rule.yaml").await;
    let started = tokio::time::Instant::now();
    let mut seen = answers(web, host, 1).await;
    while seen.contains_key(&(200, "reviews-v1".to_owned())) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "web still sees shop's subsets: {}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        seen = answers(web, host, 1).await;
    }
    let hidden = answers(web, host, 20).await;
    assert!(
        hidden.keys().all(|(status, _)| *status == 503),
        "{hidden:?}"
    );
    assert_eq!(
        answers(shop, host, 20).await,
        [((200, "reviews-v2".to_owned()), 20)].into()
    );
    // web's own DestinationRule, found first for web's proxies.
    apply("web-reviews-destination-rule.yaml").await;
    assert!(
        until_only(web, host, "reviews-v1").await.is_some(),
        "{}",
        logs()
    );

    // A GAMMA consumer route of web for shop's Service: web's requests go
    // to ratings (web's VirtualService deleted first, as one namespace
    // holds one route rule for a host), shop's stay on v2.
    let (ok, out, err) = k
        .run(&["delete", "virtualservice", "reviews-stable", "-n", "web"])
        .await;
    assert!(ok, "{out}{err}");
    apply("web-consumer-httproute.yaml").await;
    let took = until_only(web, host, "ratings").await;
    assert!(
        took.is_some(),
        "the consumer route: {:?} {} {}",
        answers(web, host, 10).await,
        sextant_testkit::peers::http_get(web_sx.admin, "x", "/debug/configz")
            .await
            .expect("configz")
            .1,
        logs()
    );
    eprintln!("consumer route in force for web in {took:?}");
    assert_eq!(
        answers(shop, host, 50).await,
        [((200, "reviews-v2".to_owned()), 50)].into(),
        "shop's proxies do not take web's consumer route"
    );
    for envoy in &envoys {
        assert_eq!(
            envoy.stat_sum("update_rejected").await,
            0,
            "{}",
            envoy.log()
        );
    }
}
