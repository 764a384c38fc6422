//! VM auto-registration with Kubernetes as the source: a WorkloadGroup and
//! a ServiceEntry applied with kubectl; a VM's registration stream (the
//! independent ADS test client, opening it as `sextant agent
//! --workload-group` does) makes Sextant write a WorkloadEntry object,
//! which a real Envoy then routes to; a failing health report lands in the
//! object's `Healthy` condition and takes the VM out of traffic; the
//! stream gone, the object is deleted after the grace period. An entry a
//! dead replica left behind (a heartbeat long past) is deleted by the
//! cleanup, and a WorkloadEntry someone wrote by hand is left alone.
//!
//! A module of the `k8s` test.

use super::*;
use sextant::xds::server::register::HEALTH_TYPE_URL;
use sextant_testkit::ads::{SotwClient, node_with};
use sextant_testkit::k8s::Kind;

const HOST: &str = "cart.vm.test";

fn manifests(port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{ name: cart-vms, namespace: shop }}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{ number: 8080, name: http, protocol: HTTP }}]
  workloadSelector: {{ labels: {{ app: cart }} }}
---
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {{ name: cart, namespace: shop }}
spec:
  metadata: {{ labels: {{ app: cart }} }}
  template: {{ ports: {{ http: {port} }}, serviceAccount: cart }}
"
    )
}

/// A WorkloadEntry object as a replica registered it, `beat` its last
/// heartbeat (`None`: written by hand, not registered).
fn entry_object(name: &str, address: &str, app: &str, beat: Option<&str>) -> serde_json::Value {
    let mut meta = serde_json::json!({ "name": name, "namespace": "shop" });
    if let Some(beat) = beat {
        meta["labels"] = serde_json::json!({ "sextant.io/auto-registered": "true" });
        meta["annotations"] = serde_json::json!({
            "sextant.io/workload-group": "cart",
            "sextant.io/holder": "a-replica-that-died/0",
            "sextant.io/heartbeat": beat,
        });
    }
    serde_json::json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": meta,
        "spec": { "address": address, "labels": { "app": app } },
    })
}

/// Polls `check` every 20 ms for at most `bound`; how long it took.
async fn within(what: &str, bound: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = std::time::Instant::now();
    while !check() {
        assert!(started.elapsed() < bound, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_registers_as_a_workload_entry_object_and_leaves_after_the_grace_period() {
    let double = KubeDouble::start().await;
    double.install(Crd::Istio);
    // Left behind by a replica that died, and one written by hand.
    double.apply(entry_object(
        "cart-10-9-9-9",
        "10.9.9.9",
        "cart",
        Some("2020-01-01T00:00:00Z"),
    ));
    double.apply(entry_object("by-hand", "10.9.9.8", "other", None));
    let vm = HttpBackend::start("vm").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = double.kubeconfig(dir.path(), "double");
    let sx = start(dir.path(), &kubeconfig, &["--workload-entry-grace", "2s"]).await;
    let envoy = Envoy::start(&bootstrap(sx.xds, "k8s-vm", false).await).await;
    envoy.wait_live().await;

    within("the stale entry removed", Duration::from_secs(10), || {
        double
            .get(Kind::WorkloadEntry, "shop", "cart-10-9-9-9")
            .is_none()
    })
    .await;
    assert!(
        double.get(Kind::WorkloadEntry, "shop", "by-hand").is_some(),
        "an entry Sextant did not register is not Sextant's to remove"
    );

    let k = Kubectl::new(&double);
    let file = dir.path().join("vm.yaml");
    std::fs::write(&file, manifests(vm.addr.port())).expect("write");
    let (ok, out, err) = k
        .run(&[
            "apply",
            "--validate=false",
            "-f",
            file.to_str().expect("path"),
        ])
        .await;
    assert!(ok, "{out}{err}");

    // The VM's stream; opened again while the group is not read yet (a
    // refused stream is what an agent retries too).
    let node = node_with(
        "vm~127.0.0.1~vm-1.shop~shop.svc.cluster.local",
        &[
            ("AUTO_REGISTER_GROUP", "cart"),
            ("NAMESPACE", "shop"),
            ("INSTANCE_IPS", "127.0.0.1"),
        ],
    );
    let name = "cart-127-0-0-1";
    let mut stream = None;
    for _ in 0..50 {
        let mut c = SotwClient::connect(sx.xds, "vm-1")
            .await
            .with_node(node.clone());
        c.request(HEALTH_TYPE_URL, &[], "", "", None).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        if double.get(Kind::WorkloadEntry, "shop", name).is_some() {
            stream = Some(c);
            break;
        }
    }
    let mut c = stream.unwrap_or_else(|| panic!("never registered: {}", sx.log()));
    let (ok, out, _) = k
        .run(&["get", "workloadentry", name, "-n", "shop", "-o", "json"])
        .await;
    assert!(ok, "{out}");
    let object: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(object["spec"]["address"], "127.0.0.1", "{object}");
    assert_eq!(object["spec"]["labels"]["app"], "cart", "{object}");
    assert_eq!(object["spec"]["serviceAccount"], "cart", "{object}");
    assert_eq!(
        object["metadata"]["annotations"]["sextant.io/workload-group"], "cart",
        "{object}"
    );
    assert_routes_to(&sx, HOST, &[], "vm").await;

    // Unhealthy: the condition is written, and Envoy stops sending to it.
    c.request(HEALTH_TYPE_URL, &[], "", "", Some("probe failed"))
        .await;
    within(
        "the Healthy condition False",
        Duration::from_secs(10),
        || {
            double
                .get(Kind::WorkloadEntry, "shop", name)
                .is_some_and(|o| o["status"]["conditions"][0]["status"] == "False")
        },
    )
    .await;
    let status = status_change(sx.outbound, HOST, 200).await;
    assert_eq!(status, 503, "{}", sx.log());
    c.request(HEALTH_TYPE_URL, &[], "", "", None).await;
    assert_routes_to(&sx, HOST, &[], "vm").await;

    // The stream ends: the object goes after the grace period.
    drop(c);
    let gone = within("the entry removed", Duration::from_secs(15), || {
        double.get(Kind::WorkloadEntry, "shop", name).is_none()
    })
    .await;
    eprintln!(
        "the registered WorkloadEntry was deleted {gone:?} after its stream ended (grace 2 s)"
    );
    assert!(
        gone >= Duration::from_millis(1900),
        "before the grace period: {gone:?}"
    );
    assert_eq!(status_change(sx.outbound, HOST, 200).await, 503);
    assert_eq!(
        envoy.stat_sum("update_rejected").await,
        0,
        "{}",
        envoy.log()
    );
}
