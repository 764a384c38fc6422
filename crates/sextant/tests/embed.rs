//! The library entry point, as an embedder uses it.
#![allow(clippy::expect_used)]

use sextant::Sextant;
use sextant_core::{Endpoint, MemoryRegistry, Protocol, Service};
use sextant_testkit::ads::{SotwClient, types};
use sextant_testkit::peers::http_get;

#[tokio::test]
async fn readiness_waits_for_every_registry_and_says_which() {
    let registry = MemoryRegistry::new_unsynced("memory/late");
    let running = Sextant::new()
        .registry(registry.clone())
        .xds_addr("127.0.0.1:0".parse().expect("addr"))
        .admin_addr("127.0.0.1:0".parse::<std::net::SocketAddr>().expect("addr"))
        .start()
        .await
        .expect("start");
    let admin = running.admin_addr.expect("admin enabled");
    let (status, body) = http_get(admin, "localhost", "/healthz/ready")
        .await
        .expect("get");
    assert_eq!(status, 503);
    assert!(body.contains("memory/late"), "{body}");

    registry.reset(vec![
        Service::new("a.svc")
            .with_port("http", 80, Protocol::Http)
            .with_endpoint(Endpoint::new("10.0.0.1".parse().expect("addr"))),
    ]);
    running.aggregator().ready().await.expect("ready");
    let (status, _) = http_get(admin, "localhost", "/healthz/ready")
        .await
        .expect("get");
    assert_eq!(status, 200);

    let mut c = SotwClient::connect(running.xds_addr.expect("plaintext port"), "embedded").await;
    c.subscribe(types::CDS, &[]).await;
    assert_eq!(c.recv().await.resources.len(), 1);
    running.shutdown().await;
}

/// Rules from code: a `MemoryRules` beside the registry; a policy's subsets
/// reach proxies as clusters, and the rule shows on /debug/configz.
#[tokio::test]
async fn an_embedder_adds_rules_from_code() {
    let mut ep = Endpoint::new("10.0.0.1".parse().expect("addr"));
    ep.labels.insert("version".into(), "v1".into());
    let registry = MemoryRegistry::new("memory/services");
    registry.reset(vec![
        Service::new("a.svc")
            .with_port("http", 80, Protocol::Http)
            .with_endpoint(ep),
    ]);
    let rules = sextant_core::MemoryRules::new("memory/rules");
    let policy: sextant_core::PolicyEntry = serde_yaml_ng::from_str(
        "name: a\nhost: a.svc\nsubsets: [{name: v1, labels: {version: v1}}]",
    )
    .expect("policy");
    rules.insert(policy.into());
    let running = Sextant::new()
        .registry(registry)
        .rules(rules.clone())
        .xds_addr("127.0.0.1:0".parse().expect("addr"))
        .admin_addr("127.0.0.1:0".parse::<std::net::SocketAddr>().expect("addr"))
        .start()
        .await
        .expect("start");
    running.aggregator().ready().await.expect("ready");
    let mut c =
        SotwClient::connect(running.xds_addr.expect("plaintext port"), "embedded-rules").await;
    c.subscribe(types::CDS, &[]).await;
    let cds = c.recv().await;
    assert_eq!(cds.resources.len(), 2, "the plain cluster and subset v1");

    let admin = running.admin_addr.expect("admin enabled");
    let (_, body) = http_get(admin, "localhost", "/debug/configz")
        .await
        .expect("get");
    let config: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(config["rules"][0]["key"]["name"], "a", "{config}");
    assert_eq!(config["rules"][0]["bound_to"], serde_json::json!(["a.svc"]));
    running.shutdown().await;
}
