//! etcd end to end: an instance kept registered by `sextant etcd register`
//! receives traffic through a real Envoy configured by `sextant
//! --registries etcd`, and stops receiving it once the registering process
//! is killed and its lease expires; a VM registered from a WorkloadGroup
//! in etcd likewise, until its stream ends. Real etcd, real Envoy, real
//! processes.
#![allow(clippy::expect_used)]

mod common;

use std::process::Stdio;

use common::*;
use sextant_testkit::peers::{Envoy, Etcd, HttpBackend, http_get, status_change};
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_instance_gets_traffic_until_its_lease_expires() {
    let etcd = Etcd::start().await;
    let backend = HttpBackend::start("registered").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sx = Sextant::start(
        dir.path(),
        &["--registries", "etcd", "--etcd-endpoints", &etcd.url],
    )
    .await;

    let port = format!("http={}", backend.addr.port());
    let mut register = Command::new(BIN)
        .args([
            "etcd",
            "register",
            "--hostname",
            "web.test.svc",
            "--address",
            "127.0.0.1",
            "--port",
            &port,
        ])
        .args(["--ttl", "2s", "--etcd-endpoints", &etcd.url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start sextant etcd register");

    let envoy = Envoy::start(&bootstrap(sx.xds, "etcd-e2e", false).await).await;
    envoy.wait_live().await;
    let seen = bodies(sx.outbound, "web.test.svc", 200, |s| {
        s.contains("registered")
    })
    .await;
    assert!(
        seen.contains("registered"),
        "no traffic reached the registered instance:\n{}",
        sx.log()
    );
    let reg = sx.json("/debug/registryz").await;
    assert_eq!(reg["registries"][0]["id"], "etcd/main");
    assert_eq!(reg["registries"][0]["state"], "synced");

    // The process dies without deregistering: the lease expires, the endpoint goes.
    register.kill().await.expect("kill -9");
    let status = status_change(sx.outbound, "web.test.svc", 200).await;
    assert_eq!(status, 503, "after the lease expired: no healthy upstream");
    let hits = backend.hits();
    for _ in 0..10 {
        let _ = http_get(sx.outbound, "web.test.svc", "/").await;
    }
    assert_eq!(backend.hits(), hits, "no more traffic to the dead instance");
}

#[tokio::test]
async fn register_validates_its_arguments() {
    let out = Command::new(BIN)
        .args([
            "etcd",
            "register",
            "--hostname",
            "Web",
            "--address",
            "not an ip",
            "--port",
            "http",
        ])
        .output()
        .await
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--address"), "{err}");
    assert!(err.contains("NAME=PORT"), "{err}");
}

/// Rules kept in etcd steer a real Envoy through `sextant --registries
/// etcd`: a policy's subsets, a header route, then an edit of the route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_in_etcd_steer_envoy() {
    let etcd = Etcd::start().await;
    let (v1, v2) = (
        HttpBackend::start("v1").await,
        HttpBackend::start("v2").await,
    );
    let mut c = etcd_client::Client::connect([etcd.url.as_str()], None)
        .await
        .expect("connect");
    c.put(
        "/sextant/services/web.test.svc",
        "ports: [{name: http, port: 8080}]\n",
        None,
    )
    .await
    .expect("put");
    for (id, b, version) in [("1", &v1, "v1"), ("2", &v2, "v2")] {
        let doc = format!(
            "address: 127.0.0.1\nports: {{http: {}}}\nlabels: {{version: {version}}}\n",
            b.addr.port()
        );
        c.put(format!("/sextant/endpoints/web.test.svc/{id}"), doc, None)
            .await
            .expect("put");
    }
    c.put(
        "/sextant/policies/default/web",
        "host: web.test.svc\nsubsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]\n",
        None,
    )
    .await
    .expect("put");
    let route = |to: &str| {
        format!(
            "hosts: [web.test.svc]\nhttp:\n- match: [{{headers: {{x-user: {{exact: alice}}}}}}]\n  route: [{{destination: {{host: web.test.svc, subset: {to}}}}}]\n- route: [{{destination: {{host: web.test.svc, subset: v1}}}}]\n"
        )
    };
    c.put("/sextant/routes/default/web", route("v2"), None)
        .await
        .expect("put");

    let dir = tempfile::tempdir().expect("tempdir");
    let sx = Sextant::start(
        dir.path(),
        &["--registries", "etcd", "--etcd-endpoints", &etcd.url],
    )
    .await;
    let envoy = Envoy::start(&bootstrap(sx.xds, "etcd-rules", false).await).await;
    envoy.wait_live().await;
    let host = "web.test.svc";
    assert_routes_to(&sx, host, &[("x-user", "alice")], "v2").await;
    assert_routes_to(&sx, host, &[], "v1").await;

    // Edited in etcd: Alice moves to v1 too.
    c.put("/sextant/routes/default/web", route("v1"), None)
        .await
        .expect("put");
    assert_routes_to(&sx, host, &[("x-user", "alice")], "v1").await;
    assert_eq!(envoy.stat_sum("update_rejected").await, 0);
}

/// A VM registering from a WorkloadGroup kept in etcd, end to end: the
/// group and a ServiceEntry written to etcd, the VM's registration stream
/// (the independent ADS test client, as `sextant agent --workload-group`
/// opens it) makes Sextant write its WorkloadEntry on a lease, a real
/// Envoy routes to it; the stream gone, the lease runs out and the VM
/// gets no more traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_registered_from_a_group_in_etcd_gets_traffic_until_its_stream_ends() {
    use sextant::xds::server::register::HEALTH_TYPE_URL;
    use sextant_testkit::ads::{SotwClient, node_with};

    let etcd = Etcd::start().await;
    let vm = HttpBackend::start("vm").await;
    let mut c = etcd_client::Client::connect([etcd.url.as_str()], None)
        .await
        .expect("connect");
    c.put(
        "/sextant/serviceentries/shop/cart-vms",
        "hosts: [cart.vm.test]\nlocation: MESH_INTERNAL\nresolution: STATIC\nports: [{number: 8080, name: http}]\nworkloadSelector: {labels: {app: cart}}\n",
        None,
    )
    .await
    .expect("put");
    c.put(
        "/sextant/workloadgroups/shop/cart",
        format!(
            "metadata: {{labels: {{app: cart}}}}\ntemplate: {{ports: {{http: {}}}}}\n",
            vm.addr.port()
        ),
        None,
    )
    .await
    .expect("put");
    let dir = tempfile::tempdir().expect("tempdir");
    let sx = Sextant::start(
        dir.path(),
        &[
            "--registries",
            "etcd",
            "--etcd-endpoints",
            &etcd.url,
            "--workload-entry-grace",
            "2s",
        ],
    )
    .await;
    let envoy = Envoy::start(&bootstrap(sx.xds, "etcd-vm", false).await).await;
    envoy.wait_live().await;

    let node = node_with(
        "vm~127.0.0.1~vm-1.shop~shop.svc.cluster.local",
        &[
            ("AUTO_REGISTER_GROUP", "cart"),
            ("NAMESPACE", "shop"),
            ("INSTANCE_IPS", "127.0.0.1"),
        ],
    );
    let key = "/sextant/workloadentries/shop/cart-127-0-0-1";
    let mut stream = None;
    // Opened again while the group is not read yet (a refused stream is
    // what an agent retries too).
    for _ in 0..50 {
        let mut s = SotwClient::connect(sx.xds, "vm-1")
            .await
            .with_node(node.clone());
        s.request(HEALTH_TYPE_URL, &[], "", "", None).await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let got = c.get(key, None).await.expect("get");
        if let Some(kv) = got.kvs().first() {
            assert_ne!(kv.lease(), 0, "written on a lease");
            stream = Some(s);
            break;
        }
    }
    let stream = stream.unwrap_or_else(|| panic!("never registered: {}", sx.log()));
    assert_routes_to(&sx, "cart.vm.test", &[], "vm").await;

    let ended = std::time::Instant::now();
    drop(stream);
    let status = status_change(sx.outbound, "cart.vm.test", 200).await;
    let gone = ended.elapsed();
    eprintln!("the VM got no more traffic {gone:?} after its stream ended (grace 2 s)");
    assert_eq!(status, 503, "no endpoint left: {}", sx.log());
    assert!(
        gone >= std::time::Duration::from_millis(1900),
        "before the grace period: {gone:?}"
    );
    assert!(c.get(key, None).await.expect("get").kvs().is_empty());
}
