//! Rules and Pod labels from the API-server double (itself checked against
//! kubectl): Istio and Gateway API objects become rules, CRDs installed
//! later are picked up, route status is written once, Pods label endpoints.
//! Waits are bounded guards against hangs; nothing is timed.
#![allow(clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Setup;
use serde_json::{Value, json};
use sextant_core::{Error, Event, Registry, Rule, RuleSource};
use sextant_k8s::K8sRegistry;
use sextant_testkit::events::{next, next_apply, next_reset, until};
use sextant_testkit::k8s::{Crd, Kind, KubeDouble, objects};

const REVIEWS: &str = "reviews.default.svc.cluster.local";

/// An example from examples/kubernetes, as a JSON object.
fn example(name: &str) -> Value {
    let path = format!(
        "{}/../../examples/kubernetes/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("example");
    serde_yaml_ng::from_str(&text).expect("yaml")
}

fn reset_keys(e: &Result<Event<Rule>, Error>) -> Option<Vec<String>> {
    match e {
        Ok(Event::Reset(rules)) => Some(rules.iter().map(|r| r.key.to_string()).collect()),
        _ => None,
    }
}

#[tokio::test]
async fn pod_labels_label_endpoints_and_follow_their_changes() {
    let t = Setup::new().await;
    t.double.apply(objects::service(
        "default",
        "reviews",
        &[("http", 9080, 9080)],
    ));
    for (pod, ip, version) in [
        ("reviews-v1-a", "10.1.0.1", "v1"),
        ("reviews-v2-a", "10.1.0.2", "v2"),
    ] {
        t.double.apply(objects::pod(
            "default",
            pod,
            ip,
            "node-a",
            &[("app", "reviews"), ("version", version)],
        ));
    }
    t.double.apply(objects::slice(
        "default",
        "reviews-1",
        "reviews",
        &[("http", 9080)],
        vec![
            objects::for_pod(
                objects::endpoint("10.1.0.1", None, None),
                "default",
                "reviews-v1-a",
            ),
            objects::for_pod(
                objects::endpoint("10.1.0.2", None, None),
                "default",
                "reviews-v2-a",
            ),
            // No Pod behind it: no labels.
            objects::endpoint("10.1.0.3", None, None),
        ],
    ));
    let mut w = K8sRegistry::new(t.config()).watch();
    let services = next_reset(&mut w).await;
    let labels: Vec<Option<&str>> = services[0]
        .endpoints
        .iter()
        .map(|e| e.labels.get("version").map(String::as_str))
        .collect();
    assert_eq!(labels, [Some("v1"), Some("v2"), None]);

    // A relabelled pod moves to another subset.
    t.double.apply(objects::pod(
        "default",
        "reviews-v2-a",
        "10.1.0.2",
        "node-a",
        &[("app", "reviews"), ("version", "v3")],
    ));
    let s = next_apply(&mut w, REVIEWS).await;
    assert_eq!(s.endpoints[1].labels["version"], "v3");

    // A pod that appears after its endpoint labels it then.
    t.double.apply(objects::slice(
        "default",
        "reviews-1",
        "reviews",
        &[("http", 9080)],
        vec![objects::for_pod(
            objects::endpoint("10.1.0.4", None, None),
            "default",
            "late",
        )],
    ));
    let s = next_apply(&mut w, REVIEWS).await;
    assert!(s.endpoints[0].labels.is_empty(), "{s:?}");
    t.double.apply(objects::pod(
        "default",
        "late",
        "10.1.0.4",
        "node-a",
        &[("version", "v1")],
    ));
    let s = next_apply(&mut w, REVIEWS).await;
    assert_eq!(s.endpoints[0].labels["version"], "v1");
}

#[tokio::test]
async fn without_pod_permission_endpoints_have_no_labels_and_services_still_flow() {
    let t = Setup::new().await;
    t.double.deny(Kind::Pod, true);
    t.double.apply(objects::service(
        "default",
        "reviews",
        &[("http", 9080, 9080)],
    ));
    t.double.apply(objects::slice(
        "default",
        "reviews-1",
        "reviews",
        &[("http", 9080)],
        vec![objects::for_pod(
            objects::endpoint("10.1.0.1", None, None),
            "default",
            "p",
        )],
    ));
    let mut w = K8sRegistry::new(t.config()).watch();
    let services = next_reset(&mut w).await;
    assert_eq!(services[0].endpoints.len(), 1);
    assert!(services[0].endpoints[0].labels.is_empty());
}

#[tokio::test]
async fn istio_kinds_are_picked_up_when_their_crds_appear_and_followed() {
    let t = Setup::new().await;
    let mut w = t.rules();
    // No CRDs: an empty set of rules, not an error.
    match next(&mut w).await {
        Ok(Event::Reset(r)) => assert!(r.is_empty(), "{r:?}"),
        other => panic!("{other:?}"),
    }
    t.double.install(Crd::Istio);
    t.double.apply(example("reviews-virtual-service.yaml"));
    t.double.apply(example("reviews-destination-rule.yaml"));
    let e = until(&mut w, |e| reset_keys(e).is_some_and(|k| k.len() == 2)).await;
    let mut keys = reset_keys(&e).expect("reset");
    keys.sort();
    assert_eq!(keys, ["policy default/reviews", "route default/reviews"]);
    if let Ok(Event::Reset(rules)) = &e {
        let route = rules.iter().find_map(Rule::as_route).expect("route");
        assert_eq!(route.hosts[0].as_str(), REVIEWS);
        assert_eq!(
            route.http[1].route[1].destination.subset.as_deref(),
            Some("v3")
        );
    }

    // An edit is one Apply.
    let mut vs = example("reviews-virtual-service.yaml");
    vs["spec"]["http"][1]["route"][0]["weight"] = json!(80);
    vs["spec"]["http"][1]["route"][1]["weight"] = json!(20);
    t.double.apply(&vs);
    let e = until(&mut w, |e| matches!(e, Ok(Event::Apply(_)))).await;
    let Ok(Event::Apply(rule)) = e else {
        unreachable!()
    };
    let weights: Vec<Option<u32>> = rule.as_route().expect("route").http[1]
        .route
        .iter()
        .map(|d| d.weight)
        .collect();
    assert_eq!(weights, [Some(80), Some(20)]);

    // A field Sextant does not serve is named once; the rest is served.
    vs["spec"]["http"][1]["corsPolicy"] = json!({"allowOrigins": [{"exact": "https://a.example"}]});
    t.double.apply(&vs);
    let e = until(&mut w, |e| matches!(e, Err(Error::InvalidObject { .. }))).await;
    let Err(Error::InvalidObject { object, reason }) = e else {
        unreachable!()
    };
    assert_eq!(object, "VirtualService default/reviews");
    assert!(
        reason.contains("not served") && reason.contains("spec.http[1].corsPolicy"),
        "{reason}"
    );

    // A broken object keeps its last good rule: a problem, no Delete (the
    // object's problem is replaced, keyed by the object; no Reset).
    vs["spec"]["http"] = json!("not a list");
    t.double.apply(&vs);
    match next(&mut w).await {
        Err(Error::InvalidObject { object, reason }) => {
            assert_eq!(object, "VirtualService default/reviews");
            assert!(reason.contains("last good rule is kept"), "{reason}");
        }
        other => panic!("{other:?}"),
    }

    // Deleting it deletes the rule and retracts its problem, by name.
    t.double.delete(Kind::VirtualService, "default", "reviews");
    match next(&mut w).await {
        Ok(Event::Delete(key)) => assert_eq!(key.to_string(), "route default/reviews"),
        other => panic!("{other:?}"),
    }
    match next(&mut w).await {
        Ok(Event::Resolved(object)) => assert_eq!(object, "VirtualService default/reviews"),
        other => panic!("{other:?}"),
    }
}

/// The rule-source contract, with the API server stopped and restarted;
/// and the problems contract: a VirtualService that cannot be converted,
/// then fixed, has its problem alone retracted.
#[tokio::test]
async fn keeps_the_rule_source_contract() {
    let mut t = Setup::new().await;
    t.double.install(Crd::Istio);
    let source = K8sRegistry::new(t.config());
    sextant_testkit::contract::rule_source_contract(&source, Some(&mut t.double)).await;

    struct BrokenRule<'a>(&'a KubeDouble);
    impl sextant_testkit::contract::Problem for BrokenRule<'_> {
        async fn spoil(&mut self) {
            let mut vs = example("reviews-virtual-service.yaml");
            vs["spec"]["http"] = json!("not a list");
            self.0.apply(&vs);
        }
        async fn mend(&mut self) {
            self.0.apply(example("reviews-virtual-service.yaml"));
        }
    }
    sextant_testkit::contract::problems_contract(
        "k8s rules",
        source.watch_rules(),
        &mut BrokenRule(&t.double),
    )
    .await;
}

/// The status parents Sextant wrote on a route.
fn ours(route: &Value) -> Vec<Value> {
    route["status"]["parents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["controllerName"] == "sextant.io/mesh-controller")
        .cloned()
        .collect()
}

fn condition(parent: &Value, kind: &str) -> (String, String) {
    let c = parent["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {parent}"));
    (
        c["status"].as_str().unwrap_or_default().to_owned(),
        c["reason"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn until_status(double: &KubeDouble, want: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let route = double
            .get(Kind::HttpRoute, "default", "ratings-split")
            .expect("route");
        let ours = ours(&route);
        if want(&ours) {
            return ours;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "status never became as wanted: {route}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status_patches(double: &KubeDouble) -> usize {
    double
        .requests()
        .iter()
        .filter(|r| r.starts_with("PATCH") && r.contains("/status"))
        .count()
}

#[tokio::test]
async fn httproute_status_is_written_only_when_it_changes_even_with_two_replicas() {
    let t = Setup::new().await;
    t.double.install(Crd::GatewayApi);
    t.double.apply(objects::service(
        "default",
        "ratings",
        &[("http", 9080, 9080)],
    ));
    t.double.apply(objects::service(
        "default",
        "ratings-v1",
        &[("http", 9080, 9080)],
    ));
    let mut route = example("ratings-httproute.yaml");
    // Another controller's entry is kept as it is.
    route["status"] = json!({"parents": [{"controllerName": "example.com/gateway",
        "parentRef": {"name": "edge"}, "conditions": []}]});
    t.double.apply(&route);
    // Two replicas read and write the same objects.
    let mut a = t.rules();
    let mut b = t.rules();
    let e = until(&mut a, |e| reset_keys(e).is_some_and(|k| !k.is_empty())).await;
    assert_eq!(
        reset_keys(&e).expect("reset"),
        ["route default/httproute/ratings-split"]
    );
    if let Ok(Event::Reset(rules)) = &e {
        let r = rules[0].as_route().expect("route");
        assert_eq!(r.hosts[0].as_str(), "ratings.default.svc.cluster.local");
        let weights: Vec<Option<u32>> = r.http[0].route.iter().map(|d| d.weight).collect();
        assert_eq!(weights, [Some(90), Some(10)]);
        assert_eq!(r.http[0].matches[0].port, Some(9080));
    }
    let _ = until(&mut b, |e| reset_keys(e).is_some()).await;

    // ratings-v2 does not exist yet.
    let parents = until_status(&t.double, |p| p.len() == 1).await;
    assert_eq!(
        condition(&parents[0], "Accepted"),
        ("True".into(), "Accepted".into())
    );
    assert_eq!(
        condition(&parents[0], "ResolvedRefs"),
        ("False".into(), "BackendNotFound".into())
    );
    assert_eq!(parents[0]["parentRef"]["name"], "ratings");
    assert_eq!(parents[0]["conditions"][0]["observedGeneration"], 1);
    let stored = t
        .double
        .get(Kind::HttpRoute, "default", "ratings-split")
        .expect("route");
    assert_eq!(
        stored["status"]["parents"][0]["controllerName"],
        "example.com/gateway"
    );

    // The backend appears: the condition follows.
    t.double.apply(objects::service(
        "default",
        "ratings-v2",
        &[("http", 9080, 9080)],
    ));
    let parents = until_status(&t.double, |p| {
        p.len() == 1 && condition(&p[0], "ResolvedRefs").0 == "True"
    })
    .await;
    assert_eq!(condition(&parents[0], "Accepted").0, "True");

    // Settled: more watch rounds (1 s timeouts, bookmarks) write nothing.
    // A replica that had not yet seen the other's write may still send
    // one (refused as a conflict): settled is when the count stops moving.
    let mut settled = status_patches(&t.double);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = status_patches(&t.double);
        if now == settled {
            break;
        }
        settled = now;
    }
    assert!(
        settled <= 4,
        "{settled} status patches for two changes and two replicas"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        status_patches(&t.double),
        settled,
        "{:?}",
        t.double.requests()
    );

    // The parent Service goes: Accepted turns False.
    t.double.delete(Kind::Service, "default", "ratings");
    let parents = until_status(&t.double, |p| {
        p.len() == 1 && condition(&p[0], "Accepted").0 == "False"
    })
    .await;
    assert_eq!(condition(&parents[0], "Accepted").1, "NoMatchingParent");
}

#[tokio::test]
async fn an_istio_sidecar_is_a_scope_rule() {
    let t = Setup::new().await;
    t.double.install(Crd::Istio);
    t.double.apply(example("default-sidecar.yaml"));
    let mut w = t.rules();
    let e = until(&mut w, |e| reset_keys(e).is_some_and(|k| !k.is_empty())).await;
    assert_eq!(reset_keys(&e).expect("reset"), ["scope default/default"]);
    let Ok(Event::Reset(rules)) = e else {
        unreachable!()
    };
    let hosts: Vec<String> = rules[0]
        .as_scope()
        .expect("scope")
        .hosts
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(hosts, ["./*", "istio-system/*"]);

    // An ingress listener is served; its capture mode is named as not
    // served, and the egress hosts still are.
    let mut sidecar = example("default-sidecar.yaml");
    sidecar["spec"]["ingress"] = json!([{"port": {"number": 9080, "protocol": "HTTP", "name": "http"}, "defaultEndpoint": "127.0.0.1:8080", "captureMode": "NONE"}]);
    t.double.apply(&sidecar);
    // The rule and its problem, in either order.
    let (mut rule, mut problem) = (None, None);
    while rule.is_none() || problem.is_none() {
        match until(&mut w, |e| {
            matches!(e, Ok(Event::Apply(_)) | Err(Error::InvalidObject { .. }))
        })
        .await
        {
            Ok(Event::Apply(r)) => rule = Some(r),
            Err(Error::InvalidObject { object, reason }) => problem = Some((object, reason)),
            _ => unreachable!(),
        }
    }
    let (object, reason) = problem.expect("a problem");
    assert_eq!(object, "Sidecar default/default");
    assert!(reason.contains("spec.ingress[0].captureMode"), "{reason}");
    let rule = rule.expect("a rule");
    let scope = rule.as_scope().expect("scope");
    assert_eq!(scope.ingress.len(), 1, "{scope:?}");
    assert_eq!(
        scope.ingress[0].default_endpoint.as_deref(),
        Some("127.0.0.1:8080")
    );
    assert_eq!(scope.hosts.len(), 2);
    t.double.delete(Kind::Sidecar, "default", "default");
    let e = until(&mut w, |e| {
        matches!(e, Ok(Event::Delete(_))) || reset_keys(e).is_some_and(|k| k.is_empty())
    })
    .await;
    assert!(e.is_ok(), "{e:?}");
}

#[tokio::test]
async fn an_istio_peer_authentication_is_a_per_workload_rule() {
    let t = Setup::new().await;
    t.double.install(Crd::IstioSecurity);
    t.double.apply(example("strict-peer-authentication.yaml"));
    let mut w = t.rules();
    let e = until(&mut w, |e| reset_keys(e).is_some_and(|k| !k.is_empty())).await;
    assert_eq!(
        reset_keys(&e).expect("reset"),
        ["peer_authentication default/reviews"]
    );
    let Ok(Event::Reset(rules)) = e else {
        unreachable!()
    };
    let p = rules[0].as_peer_auth().expect("peer authentication");
    assert_eq!(p.selector["app"], "reviews");
    assert_eq!(p.mode, sextant_core::rules::MtlsMode::Strict);
    assert_eq!(p.port_level[&15090], sextant_core::rules::MtlsMode::Disable);

    // A field Sextant does not know is named; the rest is served.
    let mut pa = example("strict-peer-authentication.yaml");
    pa["spec"]["futureField"] = json!(true);
    t.double.apply(&pa);
    let e = until(&mut w, |e| matches!(e, Err(Error::InvalidObject { .. }))).await;
    let Err(Error::InvalidObject { object, reason }) = e else {
        unreachable!()
    };
    assert_eq!(object, "PeerAuthentication default/reviews");
    assert!(reason.contains("spec.futureField"), "{reason}");
}

#[tokio::test]
async fn an_istio_authorization_policy_is_a_per_workload_rule() {
    let t = Setup::new().await;
    t.double.install(Crd::IstioSecurity);
    t.double
        .apply(example("deny-namespace-authorization-policy.yaml"));
    let mut w = t.rules();
    let e = until(&mut w, |e| reset_keys(e).is_some_and(|k| !k.is_empty())).await;
    assert_eq!(
        reset_keys(&e).expect("reset"),
        ["authorization_policy default/reviews-guard"]
    );
    let Ok(Event::Reset(rules)) = e else {
        unreachable!()
    };
    let a = rules[0].as_authz().expect("authorization policy");
    assert_eq!(a.action, sextant_core::rules::AuthzAction::Deny);
    assert_eq!(a.rules.len(), 2);
    assert_eq!(
        a.rules[1].from[0].source.not_principals,
        ["cluster.local/ns/default/sa/ops"]
    );

    // A field Sextant does not serve (JWT principals) is named; the rest is
    // served.
    let mut p = example("deny-namespace-authorization-policy.yaml");
    p["spec"]["rules"][0]["from"][0]["source"]["requestPrincipals"] = json!(["*"]);
    t.double.apply(&p);
    let e = until(&mut w, |e| matches!(e, Err(Error::InvalidObject { .. }))).await;
    let Err(Error::InvalidObject { reason, .. }) = e else {
        unreachable!()
    };
    assert!(reason.contains("requestPrincipals"), "{reason}");
}
