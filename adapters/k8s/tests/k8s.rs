//! The Kubernetes registry against the API-server double (itself checked
//! against kubectl). Waits are bounded guards against hangs; nothing is timed.
#![allow(clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Setup;
use serde_json::json;
use sextant_aggregate::{Aggregator, AggregatorConfig, SyncState};
use sextant_core::{Error, Event, Health, Registry};
use sextant_k8s::{K8sConfig, K8sRegistry};
use sextant_testkit::events::{addresses, next, next_apply, until, watch_until};
use sextant_testkit::k8s::{Kind, KubeDouble, objects};

const CART: &str = "cart.shop.svc.cluster.local";

fn cart_slice(name: &str, ips: &[&str]) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    objects::slice(
        "shop",
        name,
        "cart",
        &[("http", 8080)],
        ips.iter()
            .map(|ip| objects::endpoint(ip, Some("node-a"), None))
            .collect(),
    )
}

/// An aggregator over `registries`, running and ready.
async fn aggregated(registries: Vec<Arc<dyn Registry>>) -> sextant_aggregate::AggregatorHandle {
    let (agg, handle) = Aggregator::new(AggregatorConfig::default(), registries).expect("agg");
    tokio::spawn(agg.run());
    handle.ready().await.expect("ready");
    handle
}

fn seed(double: &KubeDouble) {
    double.apply(objects::node("node-a", "eu-west", "eu-west-1a"));
    double.apply(objects::service("shop", "cart", &[("http", 80, 8080)]));
    double.apply(cart_slice("cart-1", &["10.1.0.1", "10.1.0.2"]));
}

#[tokio::test]
async fn lists_then_follows_pods_scaling_up_and_down() {
    let t = Setup::new().await;
    seed(&t.double);
    t.double
        .apply(objects::service("shop", "pay", &[("grpc", 9000, 9000)]));
    let mut w = t.watch();
    match next(&mut w).await {
        Ok(Event::Reset(s)) => {
            assert_eq!(s.len(), 2, "{s:?}");
            assert_eq!(s[0].hostname.as_str(), CART);
            assert_eq!(addresses(&s[0]), ["10.1.0.1", "10.1.0.2"]);
            let ep = &s[0].endpoints[0];
            assert_eq!(ep.ports["http"], 8080);
            assert_eq!(ep.locality.region, "eu-west");
            assert_eq!(ep.locality.zone, "eu-west-1a");
            assert!(s[1].endpoints.is_empty(), "pay has no slices yet");
        }
        other => panic!("{other:?}"),
    }
    // Lists were paged (page size 1, two services).
    assert!(t.double.requests().iter().any(|r| r.contains("continue=")));

    // Scale up: the slice grows, then a second slice appears.
    t.double
        .apply(cart_slice("cart-1", &["10.1.0.1", "10.1.0.2", "10.1.0.3"]));
    assert_eq!(addresses(&next_apply(&mut w, CART).await).len(), 3);
    // Outlive the 1 s watch timeout: the watch is re-opened from its version.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    t.double.apply(cart_slice("cart-2", &["10.1.0.9"]));
    assert_eq!(
        addresses(&next_apply(&mut w, CART).await),
        ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.9"]
    );
    // Scale down: a slice goes away, another shrinks.
    t.double.delete(Kind::EndpointSlice, "shop", "cart-2");
    assert_eq!(addresses(&next_apply(&mut w, CART).await).len(), 3);
    t.double.apply(cart_slice("cart-1", &["10.1.0.3"]));
    assert_eq!(addresses(&next_apply(&mut w, CART).await), ["10.1.0.3"]);
    // The Service goes: the hostname is deleted.
    t.double.delete(Kind::Service, "shop", "cart");
    let _ = until(
        &mut w,
        |e| matches!(e, Ok(Event::Delete(h)) if h.as_str() == CART),
    )
    .await;
    // No re-list happened: one list per source (pages aside).
    let (lists, _) = t.double.lists("/api/v1/services");
    assert_eq!(lists, 1, "{:?}", t.double.requests());
}

#[tokio::test]
async fn terminating_endpoints_drain_and_failing_ones_are_unhealthy() {
    let t = Setup::new().await;
    seed(&t.double);
    let mut w = t.watch();
    assert!(matches!(next(&mut w).await, Ok(Event::Reset(_))));
    let mut slice = cart_slice("cart-1", &["10.1.0.1", "10.1.0.2"]);
    slice.endpoints[0] = objects::with_conditions(slice.endpoints[0].clone(), false, true, true);
    slice.endpoints[1] = objects::with_conditions(slice.endpoints[1].clone(), false, false, false);
    t.double.apply(slice);
    let s = next_apply(&mut w, CART).await;
    let health: Vec<Health> = s.endpoints.iter().map(|e| e.health).collect();
    assert_eq!(health, [Health::Draining, Health::Unhealthy]);
}

#[tokio::test]
async fn gone_mid_watch_relists_as_one_reset_without_an_empty_view() {
    let t = Setup::new().await;
    seed(&t.double);
    let mut w = t.watch();
    assert!(matches!(next(&mut w).await, Ok(Event::Reset(_))));
    // A change, then compaction: the watches break and come back with a
    // version that is now too old (410).
    t.double.apply(cart_slice("cart-2", &["10.1.0.9"]));
    t.double.compact();
    let reset = until(&mut w, |e| matches!(e, Ok(Event::Reset(_)))).await;
    match reset {
        Ok(Event::Reset(s)) => {
            assert_eq!(s.len(), 1);
            assert_eq!(addresses(&s[0]), ["10.1.0.1", "10.1.0.2", "10.1.0.9"]);
        }
        other => panic!("{other:?}"),
    }
    let (lists, _) = t.double.lists("/api/v1/services");
    assert_eq!(lists, 2, "one list, one re-list: {:?}", t.double.requests());
    // And it keeps following changes afterwards.
    t.double.apply(cart_slice("cart-2", &["10.1.0.8"]));
    assert_eq!(
        addresses(&next_apply(&mut w, CART).await),
        ["10.1.0.1", "10.1.0.2", "10.1.0.8"]
    );
}

#[tokio::test]
async fn api_server_down_keeps_last_known_good_marked_stale_then_recovers() {
    let t = Setup::new().await;
    seed(&t.double);
    let registry = K8sRegistry::new(t.config());
    let handle = aggregated(vec![Arc::new(registry)]).await;
    assert_eq!(handle.view().borrow().endpoint_count(), 2);

    t.double.stop().await;
    let mut status = handle.status();
    let st = watch_until(&mut status, "stale", |s| {
        s.registries[0].state == SyncState::Stale
    })
    .await;
    let err = &st.registries[0].last_error.as_ref().expect("error").message;
    assert!(
        err.contains("Service") || err.contains("Slice") || err.contains("Node"),
        "{err}"
    );
    assert_eq!(
        handle.view().borrow().endpoint_count(),
        2,
        "last-known-good kept"
    );

    // While it is down, the cluster changes; after restart the re-list
    // brings the change.
    t.double.apply(cart_slice("cart-2", &["10.1.0.9"]));
    t.double.restart().await;
    watch_until(&mut status, "recovered", |s| {
        s.registries[0].state == SyncState::Synced
    })
    .await;
    let mut view = handle.view();
    watch_until(&mut view, "the change made while down", |v| {
        v.endpoint_count() == 3
    })
    .await;
}

#[tokio::test]
async fn forbidden_names_the_missing_permission_and_nodes_are_optional() {
    let t = Setup::new().await;
    seed(&t.double);
    t.double.deny(Kind::EndpointSlice, true);
    let mut w = t.watch();
    match next(&mut w).await {
        Err(e) => {
            assert!(e.makes_stale());
            let msg = e.chain();
            assert!(
                msg.contains("\"endpointslices\" in API group \"discovery.k8s.io\"")
                    && msg.contains("deploy/"),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Granting it (and taking Nodes away) recovers on the next attempt;
    // endpoints then carry no region.
    t.double.deny(Kind::EndpointSlice, false);
    t.double.deny(Kind::Node, true);
    match until(&mut w, |e| matches!(e, Ok(Event::Reset(_)))).await {
        Ok(Event::Reset(s)) => {
            assert_eq!(s[0].endpoints.len(), 2);
            assert_eq!(s[0].endpoints[0].locality.region, "");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn malformed_objects_are_skipped_and_reported() {
    let t = Setup::new().await;
    seed(&t.double);
    let broken = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "broken", "namespace": "shop"},
        "spec": {"ports": [{"name": "http", "port": "eighty"}]}
    });
    t.double.apply(broken.clone());
    let mut w = t.watch();
    match next(&mut w).await {
        Ok(Event::Reset(s)) => assert_eq!(s.len(), 1, "the good service is served"),
        other => panic!("{other:?}"),
    }
    match next(&mut w).await {
        Err(Error::InvalidObject { object, reason }) => {
            assert_eq!(object, "Service shop/broken");
            assert!(reason.contains("decode"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // The same while watching; the rest keeps working.
    let mut bad_slice = serde_json::to_value(cart_slice("cart-3", &["10.1.0.7"])).expect("json");
    bad_slice["endpoints"] = json!("not a list");
    t.double.apply(bad_slice);
    match next(&mut w).await {
        Err(Error::InvalidObject { object, .. }) => assert_eq!(object, "EndpointSlice shop/cart-3"),
        other => panic!("{other:?}"),
    }
    t.double.apply(cart_slice("cart-2", &["10.1.0.9"]));
    assert_eq!(addresses(&next_apply(&mut w, CART).await).len(), 3);
}

#[tokio::test]
async fn namespaces_and_label_selector_limit_what_is_read() {
    let t = Setup::new().await;
    seed(&t.double);
    t.double
        .apply(objects::service("ops", "grafana", &[("http", 3000, 3000)]));
    t.double
        .apply(objects::service("shop", "pay", &[("grpc", 9000, 9000)]));
    let mut config = t.config();
    config.namespaces = vec!["shop".into()];
    config.label_selector = Some("app in (cart)".into());
    config.mapping.cluster_domain = "example.internal".into();
    let mut w = K8sRegistry::new(config).watch();
    match next(&mut w).await {
        Ok(Event::Reset(s)) => {
            let names: Vec<&str> = s.iter().map(|s| s.hostname.as_str()).collect();
            assert_eq!(names, ["cart.shop.svc.example.internal"]);
            assert_eq!(s[0].endpoints.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        t.double
            .requests()
            .iter()
            .any(|r| r.starts_with("GET /api/v1/namespaces/shop/services?")
                && r.contains("labelSelector")),
        "{:?}",
        t.double.requests()
    );
}

#[tokio::test]
async fn two_clusters_with_the_same_service_merge_by_hostname() {
    let east = Setup::new().await;
    let west = Setup::new().await;
    seed(&east.double);
    west.double
        .apply(objects::service("shop", "cart", &[("http", 80, 8080)]));
    west.double.apply(objects::slice(
        "shop",
        "cart-w",
        "cart",
        &[("http", 8080)],
        vec![objects::endpoint("10.2.0.1", None, Some("us-east-1a"))],
    ));
    let registries: Vec<Arc<dyn Registry>> = vec![
        Arc::new(K8sRegistry::new(K8sConfig {
            cluster_id: "east".into(),
            ..east.config()
        })),
        Arc::new(K8sRegistry::new(K8sConfig {
            cluster_id: "west".into(),
            ..west.config()
        })),
    ];
    assert_eq!(registries[0].id().as_str(), "k8s/east");
    let handle = aggregated(registries).await;
    let view = handle.view().borrow().clone();
    let cart = view
        .services
        .get(&sextant_core::Hostname::new(CART))
        .expect("merged service");
    let mut got = addresses(&cart.service);
    got.sort();
    assert_eq!(got, ["10.1.0.1", "10.1.0.2", "10.2.0.1"]);
    assert_eq!(cart.origins.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_services_list_in_pages_and_one_slice_change_is_one_apply() {
    let t = Setup::new().await;
    for s in 0..1000 {
        let name = format!("svc-{s}");
        t.double
            .apply(objects::service("mesh", &name, &[("http", 80, 8080)]));
        let endpoints = (0..10)
            .map(|e| {
                objects::endpoint(&format!("10.{}.{}.{}", s / 250, s % 250, e + 1), None, None)
            })
            .collect();
        t.double.apply(objects::slice(
            "mesh",
            &format!("{name}-1"),
            &name,
            &[("http", 8080)],
            endpoints,
        ));
    }
    let mut config = t.config();
    config.page_size = 500;
    let mut w = K8sRegistry::new(config).watch();
    match next(&mut w).await {
        Ok(Event::Reset(s)) => {
            assert_eq!(s.len(), 1000);
            assert!(s.iter().all(|s| s.endpoints.len() == 10));
        }
        other => panic!("{other:?}"),
    }
    let mut slice = objects::slice(
        "mesh",
        "svc-7-1",
        "svc-7",
        &[("http", 8080)],
        vec![objects::endpoint("10.0.7.1", None, None)],
    );
    slice.endpoints[0] = objects::with_conditions(slice.endpoints[0].clone(), false, true, true);
    t.double.apply(slice);
    match next(&mut w).await {
        Ok(Event::Apply(s)) => {
            assert_eq!(s.hostname.as_str(), "svc-7.mesh.svc.cluster.local");
            assert_eq!(s.endpoints.len(), 1);
            assert_eq!(s.endpoints[0].health, Health::Draining);
        }
        other => panic!("the next event is that one service: {other:?}"),
    }
    // Two pages per kind, and no re-list.
    let (lists, pages) = t.double.lists("/api/v1/services");
    assert_eq!((lists, pages), (1, 2), "{:?}", t.double.requests());
}

/// The objects with problems shown for the (only) registry.
fn problem_objects(s: &sextant_aggregate::AggregateStatus) -> Vec<String> {
    s.registries[0]
        .problems
        .iter()
        .filter_map(|p| p.object.clone())
        .collect()
}

/// A watch event that is not valid JSON is named (by the object's name
/// when the text shows it, else by its byte offset) and skipped: the
/// registry stays synced and keeps following changes. A problem belongs to
/// its object: fixing or deleting the object clears it.
#[tokio::test]
async fn broken_watch_events_are_named_and_problems_leave_with_their_objects() {
    let t = Setup::new().await;
    seed(&t.double);
    let registry = K8sRegistry::new(t.config());
    let handle = aggregated(vec![Arc::new(registry)]).await;
    let mut status = handle.status();

    // Cut off mid-object, and plain garbage.
    t.double.send_raw_watch_line(
        Kind::Service,
        r#"{"type":"MODIFIED","object":{"kind":"Service","apiVersion":"v1","metadata":{"name":"cart","namespace":"shop","resourceVersion":"#,
    );
    t.double
        .send_raw_watch_line(Kind::Service, "<html>502 Bad Gateway</html>");
    let st = watch_until(&mut status, "both problems named", |s| {
        problem_objects(s).len() == 2
    })
    .await;
    let objects = problem_objects(&st);
    assert!(
        objects.contains(&"Service shop/cart".to_owned()),
        "{objects:?}"
    );
    assert!(
        objects
            .iter()
            .any(|o| o.starts_with("Service watch event at byte ")),
        "{objects:?}"
    );
    assert_eq!(st.registries[0].state, SyncState::Synced, "not stale");
    assert_eq!(handle.view().borrow().endpoint_count(), 2, "still served");

    // Watching goes on.
    t.double.apply(cart_slice("cart-2", &["10.1.0.9"]));
    let mut view = handle.view();
    watch_until(&mut view, "a change after the broken events", |v| {
        v.endpoint_count() == 3
    })
    .await;

    // An object that cannot be decoded, then deleted: its problem goes.
    t.double.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "broken", "namespace": "shop"},
        "spec": {"ports": [{"name": "http", "port": "eighty"}]}
    }));
    watch_until(&mut status, "the broken object reported", |s| {
        problem_objects(s).contains(&"Service shop/broken".to_owned())
    })
    .await;
    t.double.delete(Kind::Service, "shop", "broken");
    let st = watch_until(&mut status, "its problem cleared", |s| {
        !problem_objects(s).contains(&"Service shop/broken".to_owned())
    })
    .await;
    assert!(
        problem_objects(&st).contains(&"Service shop/cart".to_owned()),
        "the other problems stay: {:?}",
        problem_objects(&st)
    );

    // The object named in the broken event is written again, readable:
    // its problem goes too, and nothing was lost meanwhile.
    t.double
        .apply(objects::service("shop", "cart", &[("http", 80, 8080)]));
    watch_until(&mut status, "the fixed object's problem cleared", |s| {
        !problem_objects(s).contains(&"Service shop/cart".to_owned())
    })
    .await;
    assert_eq!(handle.view().borrow().endpoint_count(), 3);
}

/// The registry contract every adapter runs, with the API server stopped
/// and restarted.
#[tokio::test]
async fn keeps_the_registry_contract() {
    let mut t = Setup::new().await;
    seed(&t.double);
    let r = K8sRegistry::new(t.config());
    sextant_testkit::contract::registry_contract(&r, Some(&mut t.double)).await;
}

/// A watch event that cannot be decoded (well-formed JSON, a field of the
/// wrong type) is named as its object would be, with its namespace; when
/// the object is deleted (its DELETED event as undecodable as the rest),
/// the problem leaves with it.
#[tokio::test]
async fn an_undecodable_object_is_named_with_its_namespace_and_leaves_when_deleted() {
    let t = Setup::new().await;
    seed(&t.double);
    let registry = K8sRegistry::new(t.config());
    let handle = aggregated(vec![Arc::new(registry)]).await;
    let mut status = handle.status();
    let poison = r#"{"type":"ADDED","object":{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"labels":"kubernetes.io/service-name=web","name":"web-poison","namespace":"shop","resourceVersion":"1"}}}"#;
    t.double.send_raw_watch_line(Kind::EndpointSlice, poison);
    let st = watch_until(&mut status, "the poison reported", |s| {
        !problem_objects(s).is_empty()
    })
    .await;
    assert_eq!(
        problem_objects(&st),
        ["EndpointSlice shop/web-poison"],
        "named as a readable object would be"
    );
    t.double
        .send_raw_watch_line(Kind::EndpointSlice, &poison.replace("ADDED", "DELETED"));
    watch_until(&mut status, "the deleted poison's problem gone", |s| {
        problem_objects(s).is_empty()
    })
    .await;
    assert_eq!(handle.view().borrow().endpoint_count(), 2, "still served");
}

/// A Service that cannot be decoded, then fixed: its problem alone is
/// retracted, no Reset of the registry (the problems contract).
struct BrokenService<'a>(&'a KubeDouble);

impl sextant_testkit::contract::Problem for BrokenService<'_> {
    async fn spoil(&mut self) {
        self.0.apply(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "broken", "namespace": "shop"},
            "spec": {"ports": [{"name": "http", "port": "eighty"}]}
        }));
    }
    async fn mend(&mut self) {
        self.0
            .apply(objects::service("shop", "broken", &[("http", 80, 8080)]));
    }
}

#[tokio::test]
async fn keeps_the_problems_contract() {
    let t = Setup::new().await;
    seed(&t.double);
    sextant_testkit::contract::problems_contract(
        "k8s services",
        t.watch(),
        &mut BrokenService(&t.double),
    )
    .await;
}

fn service_entry(name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": spec
    })
}

/// The entries registry keeps the registry contract, with the API server
/// stopped and restarted.
#[tokio::test]
async fn the_entries_registry_keeps_the_registry_contract() {
    let mut t = Setup::new().await;
    t.double.install(sextant_testkit::k8s::Crd::Istio);
    t.double.apply(service_entry(
        "db",
        json!({"hosts": ["db.example.com"], "resolution": "STATIC",
               "ports": [{"number": 5432, "name": "tcp-pg", "protocol": "TCP"}],
               "endpoints": [{"address": "10.0.0.7"}]}),
    ));
    let r = sextant_k8s::K8sEntries::new(t.config());
    assert_eq!(r.id().as_str(), "k8s/Kubernetes/entries");
    let mut w = r.watch();
    let services = sextant_testkit::events::next_reset(&mut w).await;
    assert_eq!(services.len(), 1);
    assert_eq!(addresses(&services[0]), ["10.0.0.7"]);
    drop(w);
    sextant_testkit::contract::registry_contract(&r, Some(&mut t.double)).await;
}

struct BrokenEntry<'a>(&'a KubeDouble);

impl sextant_testkit::contract::Problem for BrokenEntry<'_> {
    async fn spoil(&mut self) {
        self.0.apply(service_entry(
            "odd",
            json!({"hosts": ["odd.example.com"], "resolutoin": "DNS"}),
        ));
    }
    async fn mend(&mut self) {
        self.0.apply(service_entry(
            "odd",
            json!({"hosts": ["odd.example.com"], "resolution": "DNS",
                   "ports": [{"number": 443, "name": "tls"}]}),
        ));
    }
}

#[tokio::test]
async fn the_entries_registry_keeps_the_problems_contract() {
    let t = Setup::new().await;
    t.double.install(sextant_testkit::k8s::Crd::Istio);
    let r = sextant_k8s::K8sEntries::new(t.config());
    sextant_testkit::contract::problems_contract(
        "k8s entries",
        r.watch(),
        &mut BrokenEntry(&t.double),
    )
    .await;
}

/// A ServiceEntry edited into something unreadable keeps serving its last
/// good version, and says why; a Pod's status heartbeat that changes
/// nothing an entry declares sends nothing.
#[tokio::test]
async fn an_unreadable_entry_update_keeps_the_last_good_entry() {
    let t = Setup::new().await;
    t.double.install(sextant_testkit::k8s::Crd::Istio);
    let good = json!({"hosts": ["db.example.com"], "resolution": "STATIC",
                      "ports": [{"number": 5432, "name": "tcp-pg"}],
                      "endpoints": [{"address": "10.0.0.7"}]});
    t.double.apply(service_entry("db", good));
    let r = sextant_k8s::K8sEntries::new(t.config());
    let mut w = r.watch();
    let services = sextant_testkit::events::next_reset(&mut w).await;
    assert_eq!(addresses(&services[0]), ["10.0.0.7"]);
    t.double.apply(service_entry(
        "db",
        json!({"hosts": ["db.example.com"], "resolutoin": "STATIC"}),
    ));
    match next(&mut w).await {
        Err(Error::InvalidObject { object, reason }) => {
            assert_eq!(object, "ServiceEntry shop/db");
            assert!(reason.contains("resolutoin"), "{reason}");
        }
        other => panic!("expected the entry's problem, got {other:?}"),
    }
    // A Pod of a namespace no entry selects from: nothing to send.
    t.double.apply(objects::pod(
        "shop",
        "web-1",
        "10.1.0.1",
        "node-a",
        &[("app", "web")],
    ));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), next(&mut w))
            .await
            .is_err(),
        "nothing moved, nothing is sent (and the service was not deleted)"
    );
}
