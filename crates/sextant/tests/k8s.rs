//! Kubernetes end to end, against the API-server double (checked against
//! kubectl): a Service whose EndpointSlices list local backends receives
//! traffic through a real Envoy, follows the slices as pods come and go,
//! and stops when its only pod is not ready.
#![allow(clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use sextant_testkit::k8s::{KubeDouble, objects};
use sextant_testkit::peers::{Envoy, HttpBackend, status_change};

const HOST: &str = "cart.shop.svc.cluster.local";

/// A slice of `cart` with one ready endpoint per backend (all on 127.0.0.1,
/// so each gets its own slice: the target port is per slice).
fn slice(
    name: &str,
    backend: &HttpBackend,
    ready: bool,
) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    let ep = objects::endpoint("127.0.0.1", Some("node-a"), Some("zone-a"));
    let ep = objects::with_conditions(ep, ready, ready, false);
    objects::slice(
        "shop",
        name,
        "cart",
        &[("http", i32::from(backend.addr.port()))],
        vec![ep],
    )
}

/// `sextant --registries k8s --kubeconfig KUBECONFIG EXTRA...`.
async fn start(dir: &std::path::Path, kubeconfig: &std::path::Path, extra: &[&str]) -> Sextant {
    let kubeconfig = kubeconfig.to_str().expect("path");
    let mut args = vec!["--registries", "k8s", "--kubeconfig", kubeconfig];
    args.extend_from_slice(extra);
    Sextant::start(dir, &args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_service_gets_traffic_through_envoy_and_follows_its_slices() {
    let double = KubeDouble::start().await;
    let (one, two) = (
        HttpBackend::start("pod-one").await,
        HttpBackend::start("pod-two").await,
    );
    double.apply(objects::node("node-a", "region-a", "zone-a"));
    double.apply(objects::service("shop", "cart", &[("http", 80, 8080)]));
    double.apply(slice("cart-one", &one, true));
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = double.kubeconfig(dir.path(), "double");
    let sx = start(dir.path(), &kubeconfig, &["--k8s-cluster-id", "test"]).await;
    let reg = sx.json("/debug/registryz").await;
    assert_eq!(reg["registries"][0]["id"], "k8s/test", "{reg}");
    let config = sx.json("/debug/configz").await;
    assert_eq!(
        config["services"][HOST]["endpoints"][0]["locality"]["region"], "region-a",
        "{config}"
    );

    let envoy = Envoy::start(&bootstrap(sx.xds, "k8s-e2e", false).await).await;
    envoy.wait_live().await;
    let seen = bodies(sx.outbound, HOST, 200, |s| s.contains("pod-one")).await;
    assert!(seen.contains("pod-one"), "{}", sx.log());

    // Scale up: a second pod's slice; traffic reaches both.
    double.apply(slice("cart-two", &two, true));
    let seen = bodies(sx.outbound, HOST, 200, |s| s.len() == 2).await;
    assert_eq!(
        seen,
        BTreeSet::from(["pod-one".into(), "pod-two".into()]),
        "{}",
        sx.log()
    );

    // Scale down to one pod that then fails readiness: no traffic.
    double.delete(
        sextant_testkit::k8s::Kind::EndpointSlice,
        "shop",
        "cart-two",
    );
    double.apply(slice("cart-one", &one, false));
    let status = status_change(sx.outbound, HOST, 200).await;
    assert_eq!(status, 503, "a not-ready pod gets no traffic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_contexts_are_two_registries_merged_by_hostname() {
    let (east, west) = (KubeDouble::start().await, KubeDouble::start().await);
    for (double, ip) in [(&east, "10.1.0.1"), (&west, "10.2.0.1")] {
        double.apply(objects::service("shop", "cart", &[("http", 80, 8080)]));
        double.apply(objects::slice(
            "shop",
            "cart-1",
            "cart",
            &[("http", 8080)],
            vec![objects::endpoint(ip, None, None)],
        ));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = KubeDouble::kubeconfig_for(dir.path(), &[(&east, "east"), (&west, "west")]);
    let sx = start(dir.path(), &kubeconfig, &["--k8s-context", "east,west"]).await;
    let config = sx.json("/debug/configz").await;
    let cart = &config["services"][HOST];
    assert_eq!(
        cart["origins"],
        serde_json::json!(["k8s/east", "k8s/west"]),
        "{config}"
    );
    let mut ips: Vec<&str> = cart["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter_map(|e| e["address"].as_str())
        .collect();
    ips.sort();
    assert_eq!(ips, ["10.1.0.1", "10.2.0.1"], "{config}");
}
