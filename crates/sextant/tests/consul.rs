//! Consul end to end, against the Consul API double (checked against
//! py-consul): a Consul-registered instance receives traffic through a real
//! Envoy, and a Consul service and a file service with the same hostname
//! (via --consul-hostname-template) are one cluster with both endpoints.
#![allow(clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::json;
use sextant_testkit::consul::ConsulDouble;
use sextant_testkit::peers::{Envoy, HttpBackend, status_change};

fn register(double: &ConsulDouble, id: &str, backend: &HttpBackend) {
    double.register(
        "node-1",
        "127.0.0.1",
        json!({ "ID": id, "Service": "web", "Address": "127.0.0.1", "Port": backend.addr.port(), "Meta": { "protocol": "http" } }),
        vec![json!({ "CheckID": format!("check-{id}"), "Status": "passing" })],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consul_instance_gets_traffic_until_its_check_fails() {
    let double = ConsulDouble::start().await;
    let backend = HttpBackend::start("from-consul").await;
    register(&double, "web-1", &backend);
    let dir = tempfile::tempdir().expect("tempdir");
    let sx = Sextant::start(
        dir.path(),
        &["--registries", "consul", "--consul-addr", &double.url()],
    )
    .await;
    let envoy = Envoy::start(&bootstrap(sx.xds, "consul-e2e", false).await).await;
    envoy.wait_live().await;
    let seen = bodies(sx.outbound, "web.service.consul", 200, |s| {
        s.contains("from-consul")
    })
    .await;
    assert!(seen.contains("from-consul"), "{}", sx.log());

    double.set_check("node-1", "check-web-1", "critical");
    let status = status_change(sx.outbound, "web.service.consul", 200).await;
    assert_eq!(status, 503, "a critical instance gets no traffic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consul_service_and_a_file_service_merge_into_one_cluster() {
    let double = ConsulDouble::start().await;
    let (from_file, from_consul) = (
        HttpBackend::start("from-file").await,
        HttpBackend::start("from-consul").await,
    );
    register(&double, "web-1", &from_consul);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(
        &file,
        format!(
            "services:\n  - hostname: web.test.svc\n    ports: [{{ name: http, port: 8080 }}]\n    endpoints: [{{ address: 127.0.0.1, ports: {{ http: {} }} }}]\n",
            from_file.addr.port()
        ),
    )
    .expect("write");
    let sx = Sextant::start(
        dir.path(),
        &[
            "--registries",
            "file,consul",
            "--file",
            file.to_str().expect("path"),
            "--consul-addr",
            &double.url(),
            "--consul-hostname-template",
            "{service}.test.svc",
        ],
    )
    .await;
    let config = sx.json("/debug/configz").await;
    let web = &config["services"]["web.test.svc"];
    assert_eq!(web["origins"], json!(["file/main", "consul/main"]));
    assert_eq!(web["endpoints"].as_array().map(Vec::len), Some(2));
    // Consul has no service port of its own, only instance ports: the
    // disagreement is reported, and endpoints still map by port name.
    let reg = sx.json("/debug/registryz").await;
    let detail = reg["conflicts"][0]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        detail.starts_with("file/main has [http:8080/HTTP], consul/main has [http:"),
        "{reg}"
    );

    let envoy = Envoy::start(&bootstrap(sx.xds, "merge-e2e", false).await).await;
    envoy.wait_live().await;
    let seen = bodies(sx.outbound, "web.test.svc", 200, |s| s.len() == 2).await;
    assert_eq!(
        seen,
        BTreeSet::from(["from-consul".into(), "from-file".into()]),
        "{}",
        sx.log()
    );
    let (_, clusters) = envoy.admin_get("/clusters").await;
    let web_clusters: BTreeSet<&str> = clusters
        .lines()
        .filter_map(|l| l.split("::").next())
        .filter(|c| c.ends_with("||web.test.svc"))
        .collect();
    assert_eq!(
        web_clusters,
        BTreeSet::from(["outbound|8080||web.test.svc"]),
        "one cluster"
    );
}
