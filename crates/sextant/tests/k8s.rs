//! Kubernetes end to end, against the API-server double (checked against
//! kubectl): a Service whose EndpointSlices list local backends receives
//! traffic through a real Envoy, follows the slices as pods come and go,
//! and stops when its only pod is not ready.
#![allow(clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use std::time::Duration;

use sextant_testkit::k8s::{Crd, KubeDouble, Kubectl, objects};
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

/// Service `name` in `default` on port 9080, with one pod per backend:
/// each pod labelled `version`, each endpoint in its own slice (the
/// backends share 127.0.0.1 and differ by port).
fn bookinfo_service(double: &KubeDouble, name: &str, pods: &[(&str, &HttpBackend)]) {
    double.apply(objects::service("default", name, &[("http", 9080, 9080)]));
    for (version, backend) in pods {
        let pod = format!("{name}-{version}-0");
        double.apply(objects::pod(
            "default",
            &pod,
            "127.0.0.1",
            "node-a",
            &[("app", name), ("version", version)],
        ));
        let ep = objects::for_pod(
            objects::endpoint("127.0.0.1", Some("node-a"), None),
            "default",
            &pod,
        );
        double.apply(objects::slice(
            "default",
            &format!("{pod}-slice"),
            name,
            &[("http", i32::from(backend.addr.port()))],
            vec![ep],
        ));
    }
}

fn example(name: &str) -> String {
    format!(
        "{}/../../examples/kubernetes/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Istio's bookinfo rules applied with kubectl steer a real Envoy: the
/// header route, a measured 50/50 split, an edit, a delete; and a GAMMA
/// HTTPRoute splits 90/10 and gets its status written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applied_istio_and_gateway_rules_steer_envoy() {
    let double = KubeDouble::start().await;
    double.install(Crd::Istio);
    double.install(Crd::GatewayApi);
    let v1 = HttpBackend::start("v1").await;
    let v2 = HttpBackend::start("v2").await;
    let v3 = HttpBackend::start("v3").await;
    bookinfo_service(&double, "reviews", &[("v1", &v1), ("v2", &v2), ("v3", &v3)]);
    let r1 = HttpBackend::start("ratings-v1").await;
    let r2 = HttpBackend::start("ratings-v2").await;
    bookinfo_service(&double, "ratings", &[("v1", &r1)]);
    bookinfo_service(&double, "ratings-v1", &[("v1", &r1)]);
    bookinfo_service(&double, "ratings-v2", &[("v2", &r2)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = double.kubeconfig(dir.path(), "double");
    let sx = start(dir.path(), &kubeconfig, &[]).await;
    let envoy = Envoy::start(&bootstrap(sx.xds, "k8s-rules", false).await).await;
    envoy.wait_live().await;

    let k = Kubectl::new(&double);
    let vs = example("reviews-virtual-service.yaml");
    let (ok, out, err) = k
        .run(&[
            "apply",
            "--validate=false",
            "-f",
            &example("reviews-destination-rule.yaml"),
            "-f",
            &vs,
            "-f",
            &example("ratings-httproute.yaml"),
        ])
        .await;
    assert!(ok, "{out}{err}");

    let host = "reviews.default.svc.cluster.local";
    let applied = std::time::Instant::now();
    assert_routes_to(&sx, host, &[("end-user", "jason")], "v2").await;
    eprintln!(
        "applied rules in force after {:?} (10 answers in a row)",
        applied.elapsed()
    );
    // Envoy picks weighted clusters at random: over 4,000 requests a 3-point
    // band is about 3.8 standard deviations wide on each side.
    let split = tally(sx.outbound, host, 4000).await;
    eprintln!("reviews 50/50 over 4000: {split:?}");
    for version in ["v1", "v3"] {
        let n = split.get(version).copied().unwrap_or(0);
        assert!((1880..=2120).contains(&n), "50/50 gave {split:?}");
    }
    // Edit the weights and re-apply: everything goes to v3.
    let text = std::fs::read_to_string(&vs).expect("read");
    let edited = dir.path().join("reviews-v3.yaml");
    std::fs::write(
        &edited,
        text.replacen("weight: 50", "weight: 0", 1)
            .replacen("weight: 50", "weight: 100", 1),
    )
    .expect("write");
    k.apply(&edited.to_string_lossy()).await;
    let in_force = until_all(sx.outbound, host, "v3", Duration::from_secs(10)).await;
    eprintln!("VirtualService weight edit in force after {in_force:?}");
    assert!(in_force.is_some(), "{}", sx.log());
    assert_eq!(count_body(sx.outbound, host, &[], 200, "v3").await, 200);

    // Delete it: traffic returns to the default, every pod of the service.
    let (ok, out, err) = k.run(&["delete", "-f", &vs]).await;
    assert!(ok, "{out}{err}");
    let seen = bodies(sx.outbound, host, 300, |s| s.len() == 3).await;
    assert_eq!(seen.len(), 3, "{seen:?} {}", sx.log());

    // The GAMMA route: 90/10 between two Services, status written.
    let ratings = "ratings.default.svc.cluster.local";
    let split = tally(sx.outbound, ratings, 4000).await;
    eprintln!("ratings HTTPRoute 90/10 over 4000: {split:?}");
    let to_v2 = split.get("ratings-v2").copied().unwrap_or(0);
    assert!((280..=520).contains(&to_v2), "90/10 gave {split:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, out, err) = k
            .run(&[
                "get",
                "httproute",
                "ratings-split",
                "-n",
                "default",
                "-o",
                "yaml",
            ])
            .await;
        assert!(ok, "{err}");
        if out.contains("controllerName: sextant.io/mesh-controller")
            && out.contains("type: ResolvedRefs")
        {
            let route: serde_json::Value = serde_yaml_ng::from_str(&out).expect("yaml");
            let ours = &route["status"]["parents"][0];
            assert_eq!(ours["conditions"][0]["type"], "Accepted", "{out}");
            assert_eq!(ours["conditions"][0]["status"], "True", "{out}");
            assert_eq!(ours["conditions"][1]["status"], "True", "{out}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no status: {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reg = sx.json("/debug/registryz").await;
    let rules = reg["registries"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["kind"] == "rules"))
        .unwrap_or_else(|| panic!("no rules source in {reg}"));
    assert_eq!(rules["id"], "k8s/Kubernetes", "{reg}");
    // The VirtualService is deleted: the HTTPRoute and the DestinationRule remain.
    assert_eq!(
        (rules["routes"].as_u64(), rules["policies"].as_u64()),
        (Some(1), Some(1)),
        "{reg}"
    );
    assert_eq!(envoy.stat_sum("update_rejected").await, 0);
}

/// One Envoy steered by rules from Kubernetes and Consul at once: a
/// VirtualService for a Kubernetes service and a Consul splitter for a
/// Consul service, each in force, each source's rules on registryz.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_from_kubernetes_and_consul_steer_one_envoy() {
    use serde_json::json;
    use sextant_testkit::consul::ConsulDouble;
    let kube = KubeDouble::start().await;
    kube.install(Crd::Istio);
    let (v1, v2) = (
        HttpBackend::start("v1").await,
        HttpBackend::start("v2").await,
    );
    bookinfo_service(&kube, "reviews", &[("v1", &v1), ("v2", &v2)]);
    let consul = ConsulDouble::start().await;
    let (blue, green) = (
        HttpBackend::start("blue").await,
        HttpBackend::start("green").await,
    );
    for (id, backend, color) in [("web-1", &blue, "blue"), ("web-2", &green, "green")] {
        consul.register(
            "vm-1",
            "127.0.0.1",
            json!({ "ID": id, "Service": "web", "Address": "127.0.0.1", "Port": backend.addr.port(),
                    "Meta": { "color": color } }),
            vec![json!({ "CheckID": format!("check-{id}"), "Status": "passing" })],
        );
    }
    consul
        .set_config_entry(json!({ "Kind": "service-defaults", "Name": "web", "Protocol": "http" }));
    consul.set_config_entry(json!({ "Kind": "service-resolver", "Name": "web",
        "Subsets": { "green": { "Filter": "Service.Meta.color == green" } } }));
    consul.set_config_entry(json!({ "Kind": "service-splitter", "Name": "web",
        "Splits": [ { "Weight": 100, "ServiceSubset": "green" } ] }));
    kube.apply(
        serde_yaml_ng::from_str::<serde_json::Value>(
            &std::fs::read_to_string(example("reviews-destination-rule.yaml")).expect("read"),
        )
        .expect("yaml"),
    );
    kube.apply(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "v2"}}]}]}
    }));

    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = kube.kubeconfig(dir.path(), "double");
    let sx = Sextant::start(
        dir.path(),
        &[
            "--registries",
            "k8s,consul",
            "--kubeconfig",
            kubeconfig.to_str().expect("path"),
            "--consul-addr",
            &consul.url(),
        ],
    )
    .await;
    let envoy = Envoy::start(&bootstrap(sx.xds, "two-platforms", false).await).await;
    envoy.wait_live().await;
    assert_routes_to(&sx, "reviews.default.svc.cluster.local", &[], "v2").await;
    assert_routes_to(&sx, "web.service.consul", &[], "green").await;
    let reg = sx.json("/debug/registryz").await;
    let rule_sources: Vec<(String, u64)> = reg["registries"]
        .as_array()
        .expect("registries")
        .iter()
        .filter(|r| r["kind"] == "rules")
        .map(|r| {
            (
                r["id"].as_str().unwrap_or_default().to_owned(),
                r["routes"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        rule_sources,
        [
            ("k8s/Kubernetes".to_owned(), 1),
            ("consul/main".to_owned(), 1)
        ],
        "{reg}"
    );
    assert_eq!(envoy.stat_sum("update_rejected").await, 0);
}

/// The mesh's root as Istio publishes it: with the CA and the Kubernetes
/// registry, an `istio-ca-root-cert` ConfigMap (key `root-cert.pem`) in
/// every namespace, one made later included; another controller's
/// ConfigMap of that name left alone; a rotated CA's root written to every
/// ConfigMap Sextant made. Read back with kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_certificate_is_published_in_every_namespace() {
    let double = KubeDouble::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let k = Kubectl::new(&double);
    let namespace = |name: &str| serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    for ns in ["default", "shop", "other"] {
        double.apply(namespace(ns));
    }
    // Another controller's ConfigMap in `other`.
    double.apply(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "istio-ca-root-cert", "namespace": "other"},
        "data": {"root-cert.pem": "not ours"},
    }));
    let ca_dir = dir.path().join("ca");
    let tls_addr = format!("127.0.0.1:{}", sextant_testkit::peers::free_port());
    let kubeconfig = double.kubeconfig(dir.path(), "double");
    let sx = start(
        dir.path(),
        &kubeconfig,
        &[
            "--ca-dir",
            ca_dir.to_str().expect("path"),
            "--xds-tls-addr",
            &tls_addr,
        ],
    )
    .await;
    let root = || std::fs::read_to_string(ca_dir.join("root-cert.pem")).expect("root");
    let published = |ns: &'static str| {
        let k = &k;
        async move {
            let (ok, out, _) = k
                .run(&[
                    "get",
                    "configmap",
                    "istio-ca-root-cert",
                    "-n",
                    ns,
                    "-o",
                    "jsonpath={.data.root-cert\\.pem}",
                ])
                .await;
            ok.then_some(out)
        }
    };
    let until_root = |ns: &'static str, want: String| {
        let published = &published;
        async move {
            for _ in 0..100 {
                if published(ns).await.as_deref() == Some(want.as_str()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!(
                "{ns}: the ConfigMap never held the root; it holds {:?}",
                published(ns).await
            );
        }
    };
    until_root("shop", root()).await;
    until_root("default", root()).await;
    // A namespace made later gets it as it appears.
    double.apply(namespace("later"));
    until_root("later", root()).await;
    assert_eq!(published("other").await.as_deref(), Some("not ours"));
    let (_, metrics) = sx.get("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sextant_ca_root_configmaps_foreign{") && l.ends_with(" 1")),
        "{metrics}"
    );

    // A new CA (a plugged intermediate): its root reaches every ConfigMap
    // Sextant made, and still not the other one.
    let data = sextant_testkit::peers::workspace_root().join("crates/ca/tests/data/ec-plugged");
    for f in [
        "ca-cert.pem",
        "ca-key.pem",
        "root-cert.pem",
        "cert-chain.pem",
    ] {
        std::fs::copy(data.join(f), ca_dir.join(f)).expect("copy");
    }
    let new_root = std::fs::read_to_string(data.join("root-cert.pem")).expect("root");
    for ns in ["shop", "default", "later"] {
        until_root(ns, new_root.clone()).await;
    }
    assert_eq!(published("other").await.as_deref(), Some("not ours"));
}

/// Service `name` in namespace `ns` on port 9080 with one pod, served by
/// `backend`.
fn service_in(double: &KubeDouble, ns: &str, name: &str, backend: &HttpBackend) {
    service_on(double, ns, name, ("http", 9080), backend);
}

/// Service `ns/name` with one port (name, number), its one ready pod's
/// endpoint at `backend`.
fn service_on(
    double: &KubeDouble,
    ns: &str,
    name: &str,
    (port_name, port): (&str, i32),
    backend: &HttpBackend,
) {
    service_at(double, ns, name, (port_name, port), backend.addr.port());
}

/// As [`service_on`], the endpoint at 127.0.0.1:`target`.
fn service_at(
    double: &KubeDouble,
    ns: &str,
    name: &str,
    (port_name, port): (&str, i32),
    target: u16,
) {
    double.apply(objects::service(ns, name, &[(port_name, port, port)]));
    let pod = format!("{name}-0");
    double.apply(objects::pod(
        ns,
        &pod,
        "127.0.0.1",
        "node-a",
        &[("app", name)],
    ));
    let ep = objects::for_pod(
        objects::endpoint("127.0.0.1", Some("node-a"), None),
        ns,
        &pod,
    );
    double.apply(objects::slice(
        ns,
        &format!("{pod}-slice"),
        name,
        &[(port_name, i32::from(target))],
        vec![ep],
    ));
}

/// One tenant's route cannot send traffic into another's namespace on its
/// own say-so: an HTTPRoute of `shop` whose backend is Service `api` of
/// `other` (applied with kubectl, examples/kubernetes/web-to-api-*.yaml)
/// gets no request through to it while `other` has no ReferenceGrant (a
/// real Envoy answers 500, the status says RefNotPermitted); the grant
/// applied, the requests reach it and the status is resolved; the grant
/// deleted, access is revoked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_reaches_another_namespace_only_with_its_reference_grant() {
    let double = KubeDouble::start().await;
    double.install(Crd::GatewayApi);
    let web = HttpBackend::start("web").await;
    let api = HttpBackend::start("api-of-other").await;
    service_in(&double, "shop", "web", &web);
    service_in(&double, "other", "api", &api);
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = double.kubeconfig(dir.path(), "double");
    let sx = start(dir.path(), &kubeconfig, &[]).await;
    let envoy = Envoy::start(&bootstrap(sx.xds, "k8s-grants", false).await).await;
    envoy.wait_live().await;
    let host = "web.shop.svc.cluster.local";
    assert!(
        until_body(sx.outbound, host, &[], "web").await,
        "{}",
        sx.log()
    );

    let k = Kubectl::new(&double);
    let route = example("web-to-api-httproute.yaml");
    k.apply(&route).await;
    // The route is in force when web stops answering; from then on, not
    // one request reaches the other namespace.
    let status_of = |n: usize| {
        let outbound = sx.outbound;
        async move {
            let mut seen = std::collections::BTreeMap::<(u16, String), usize>::new();
            for _ in 0..n {
                let (status, body) = sextant_testkit::peers::http_get(outbound, host, "/")
                    .await
                    .expect("request");
                *seen.entry((status, body)).or_default() += 1;
            }
            seen
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while status_of(1).await.contains_key(&(200, "web".to_owned())) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the route is not in force: {}",
            sx.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = status_of(50).await;
    assert_eq!(refused.values().sum::<usize>(), 50);
    assert!(
        refused.keys().all(|(status, _)| *status == 500),
        "without a grant, every request is answered 500: {refused:?}"
    );
    let resolved_refs = |yaml: &str| -> (String, String) {
        let route: serde_json::Value = serde_yaml_ng::from_str(yaml).expect("yaml");
        let c = &route["status"]["parents"][0]["conditions"][1];
        (
            c["status"].as_str().unwrap_or_default().to_owned(),
            c["reason"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let until_status = |want: (&'static str, &'static str)| {
        let k = &k;
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                let (ok, out, err) = k
                    .run(&["get", "httproute", "web-to-api", "-n", "shop", "-o", "yaml"])
                    .await;
                assert!(ok, "{err}");
                let got = resolved_refs(&out);
                if (got.0.as_str(), got.1.as_str()) == want {
                    return out;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "want {want:?}: {out}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let out = until_status(("False", "RefNotPermitted")).await;
    assert!(out.contains("no ReferenceGrant there permits it"), "{out}");

    // The other namespace grants it: the requests reach its Service.
    let grant = example("web-to-api-referencegrant.yaml");
    k.apply(&grant).await;
    assert!(
        until_body(sx.outbound, host, &[], "api-of-other").await,
        "{}",
        sx.log()
    );
    assert_eq!(
        count_body(sx.outbound, host, &[], 50, "api-of-other").await,
        50
    );
    until_status(("True", "ResolvedRefs")).await;

    // And takes it back.
    let (ok, out, err) = k.run(&["delete", "-f", &grant]).await;
    assert!(ok, "{out}{err}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !status_of(1).await.keys().all(|(status, _)| *status == 500) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the grant's removal is not in force"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let revoked = status_of(50).await;
    assert!(
        revoked.keys().all(|(status, _)| *status == 500),
        "{revoked:?}"
    );
    until_status(("False", "RefNotPermitted")).await;
    assert_eq!(envoy.stat_sum("update_rejected").await, 0);
}

/// A ServiceEntry applied with kubectl selects a WorkloadEntry (a VM) and
/// a ready Pod of its namespace by label; a real Envoy balances over both.
/// The WorkloadEntry deleted, traffic goes to the Pod alone; applied
/// again, to both. A second entry for the same host, younger, loses and
/// says so on /debug/registryz.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_entry_selects_workload_entries_and_pods() {
    let double = KubeDouble::start().await;
    double.install(Crd::Istio);
    let vm = HttpBackend::start_at("vm-1", "127.0.0.2:0".parse().expect("addr")).await;
    let port = vm.addr.port();
    let _pod =
        HttpBackend::start_at("pod-1", std::net::SocketAddr::from(([127, 0, 0, 4], port))).await;
    double.apply(objects::pod(
        "vms",
        "cart-pod-1",
        "127.0.0.4",
        "node-a",
        &[("app", "cart")],
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = double.kubeconfig(dir.path(), "double");
    let sx = start(dir.path(), &kubeconfig, &[]).await;
    let envoy = Envoy::start(&bootstrap(sx.xds, "k8s-entries", false).await).await;
    envoy.wait_live().await;

    let k = Kubectl::new(&double);
    let apply = |name: &str, yaml: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, yaml).expect("write");
        let k = &k;
        async move {
            let (ok, out, err) = k
                .run(&[
                    "apply",
                    "--validate=false",
                    "-f",
                    path.to_str().expect("path"),
                ])
                .await;
            assert!(ok, "{out}{err}");
        }
    };
    let entry = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{ name: cart-vms, namespace: vms }}
spec:
  hosts: [cart.vms.test]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{ number: 8080, name: http, protocol: HTTP, targetPort: {port} }}]
  workloadSelector: {{ labels: {{ app: cart }} }}
"
    );
    let workload = "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: cart-vm-1, namespace: vms }
spec: { address: 127.0.0.2, labels: { app: cart, tier: vm }, serviceAccount: cart }
";
    apply("entry.yaml", entry).await;
    apply("workload.yaml", workload.to_owned()).await;
    let host = "cart.vms.test";
    let seen = bodies(sx.outbound, host, 200, |s| s.len() == 2).await;
    assert_eq!(
        seen,
        BTreeSet::from(["vm-1".into(), "pod-1".into()]),
        "{}",
        sx.log()
    );

    let (ok, out, err) = k
        .run(&["delete", "workloadentry", "cart-vm-1", "-n", "vms"])
        .await;
    assert!(ok, "{out}{err}");
    assert_routes_to(&sx, host, &[], "pod-1").await;
    apply("workload.yaml", workload.to_owned()).await;
    let seen = bodies(sx.outbound, host, 200, |s| s.len() == 2).await;
    assert_eq!(seen.len(), 2, "the VM is back: {seen:?}");

    // A younger entry for the same host loses, visibly.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    apply(
        "late.yaml",
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: cart-late, namespace: vms }
spec:
  hosts: [cart.vms.test]
  resolution: STATIC
  ports: [{ number: 9999, name: http }]
  endpoints: [{ address: 127.0.0.9 }]
"
        .to_owned(),
    )
    .await;
    let mut problem = String::new();
    for _ in 0..100 {
        let reg = sx.json("/debug/registryz").await;
        let entries = reg["registries"]
            .as_array()
            .and_then(|r| {
                r.iter()
                    .find(|r| r["id"] == "k8s/Kubernetes/entries")
                    .cloned()
            })
            .expect("the entries registry");
        if let Some(p) = entries["problems"].as_array().and_then(|p| p.first()) {
            problem = p.to_string();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        problem.contains("ServiceEntry vms/cart-late")
            && problem.contains("also declared by ServiceEntry vms/cart-vms"),
        "{problem}"
    );
    let seen = bodies(sx.outbound, host, 100, |s| s.len() == 2).await;
    assert_eq!(seen.len(), 2, "the older entry still serves: {seen:?}");
    assert_eq!(
        envoy.stat_sum("update_rejected").await,
        0,
        "{}",
        envoy.log()
    );
}

#[path = "k8s/l4.rs"]
mod l4;

#[path = "k8s/vm.rs"]
mod vm;

#[path = "k8s/exports.rs"]
mod exports;

#[path = "k8s/gateway.rs"]
mod gateway;

#[path = "k8s/gateway_tls.rs"]
mod gateway_tls;
