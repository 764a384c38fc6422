//! Route status, computed without a server.

use super::*;

fn route(spec: Value, status: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "default", "generation": 3, "resourceVersion": "42"},
        "spec": spec, "status": status,
    }))
    .expect("object")
}

fn services(names: &[&str]) -> BTreeSet<Key> {
    names
        .iter()
        .map(|n| ("default".to_owned(), (*n).to_owned()))
        .collect()
}

const C: &str = "sextant.io/mesh-controller";

#[test]
fn status_names_each_service_parent_and_keeps_other_controllers() {
    let spec = json!({
        "parentRefs": [{"group": "", "kind": "Service", "name": "ratings"},
                       {"name": "edge"}],
        "rules": [{"backendRefs": [{"name": "ratings-v1", "port": 9080},
                                   {"name": "bucket", "group": "storage.example", "kind": "Bucket"}]}],
    });
    let other = json!({"controllerName": "example.com/gw", "parentRef": {"name": "edge"}, "conditions": []});
    let obj = route(spec, json!({"parents": [other.clone()]}));
    let patch = status_patch(
        C,
        RouteKind::Http,
        &obj,
        &Converted::default(),
        &services(&["ratings", "ratings-v1"]),
        &gateway::Grants::default(),
        &Default::default(),
    )
    .expect("a patch");
    assert_eq!(patch["metadata"]["resourceVersion"], "42");
    let parents = patch["status"]["parents"].as_array().expect("parents");
    assert_eq!(parents.len(), 2, "the Gateway parent is not Sextant's");
    assert_eq!(parents[0], other);
    assert_eq!(parents[1]["parentRef"]["name"], "ratings");
    let conditions = parents[1]["conditions"].as_array().expect("conditions");
    assert_eq!(conditions[0]["type"], "Accepted");
    assert_eq!(conditions[0]["status"], "True");
    assert_eq!(conditions[0]["observedGeneration"], 3);
    assert_eq!(conditions[1]["reason"], "InvalidKind");
}

#[test]
fn a_status_that_is_already_right_is_not_written_again() {
    let spec = json!({"parentRefs": [{"kind": "Service", "name": "ratings"}],
                      "rules": [{"backendRefs": [{"name": "ratings"}]}]});
    let known = services(&["ratings"]);
    let first = status_patch(
        C,
        RouteKind::Http,
        &route(spec.clone(), Value::Null),
        &Converted::default(),
        &known,
        &gateway::Grants::default(),
        &Default::default(),
    )
    .expect("a patch");
    let written = route(spec.clone(), first["status"].clone());
    assert_eq!(
        status_patch(
            C,
            RouteKind::Http,
            &written,
            &Converted::default(),
            &known,
            &gateway::Grants::default(),
            &Default::default()
        ),
        None
    );

    // A change keeps the time of the condition that did not change.
    let failed = Converted {
        problem: Some("cannot convert: spec.rules: bad".into()),
        failed: true,
        ..Default::default()
    };
    let next = status_patch(
        C,
        RouteKind::Http,
        &written,
        &failed,
        &known,
        &gateway::Grants::default(),
        &Default::default(),
    )
    .expect("a patch");
    let conditions = &next["status"]["parents"][0]["conditions"];
    assert_eq!(conditions[0]["status"], "False");
    assert_eq!(conditions[0]["reason"], "UnsupportedValue");
    assert_eq!(
        conditions[1]["lastTransitionTime"],
        first["status"]["parents"][0]["conditions"][1]["lastTransitionTime"]
    );
}

/// A ReferenceGrant read after a route that names a backend in its
/// namespace: the route is converted again and gets the backend (its 500
/// share gone); the grant deleted, the backend is refused again. The
/// status says RefNotPermitted while it is.
#[test]
fn a_reference_grant_changes_the_routes_that_need_it() {
    let config = K8sConfig::default();
    let mut state = State::default();
    let obj = |kind: &str, ns: &str, name: &str, spec: Value| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": kind,
            "metadata": {"name": name, "namespace": ns, "generation": 1, "resourceVersion": "1"},
            "spec": spec,
        }))
        .expect("object")
    };
    let route_spec = json!({"parentRefs": [{"kind": "Service", "name": "web"}],
                            "rules": [{"backendRefs": [{"name": "api", "namespace": "other"}]}]});
    let mut out = Outcome::default();
    let key = state
        .change(
            &config,
            Kind::Crd(CrdKind::HttpRoute),
            obj("HTTPRoute", "shop", "r", route_spec),
            false,
            &mut out,
        )
        .expect("a route");
    let destinations = |state: &State| -> (Vec<String>, bool) {
        let rule = state.converted[&key].rule.clone().expect("a rule");
        let sextant_core::RuleSpec::Route(r) = rule.spec else {
            panic!("a route rule")
        };
        let http = &r.http[0];
        (
            http.route
                .iter()
                .map(|d| d.destination.host.to_string())
                .collect(),
            http.fault.is_some(),
        )
    };
    let refused = destinations(&state);
    assert!(refused.1, "answered 500 without a grant: {refused:?}");
    assert!(
        state.converted[&key]
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("no ReferenceGrant"))
    );
    let status = |state: &State| {
        let p = status_patch(
            C,
            RouteKind::Http,
            &state.objects[&key],
            &state.converted[&key],
            &state.services,
            &state.grants,
            &Default::default(),
        )
        .expect("a patch");
        p["status"]["parents"][0]["conditions"][1]["reason"].clone()
    };
    assert_eq!(status(&state), "RefNotPermitted");

    let grant = json!({"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "shop"}],
                       "to": [{"group": "", "kind": "Service", "name": "api"}]});
    let mut out = Outcome::default();
    state.change(
        &config,
        Kind::Crd(CrdKind::ReferenceGrant),
        obj("ReferenceGrant", "other", "g", grant.clone()),
        false,
        &mut out,
    );
    assert_eq!(
        destinations(&state),
        (vec!["api.other.svc.cluster.local".to_owned()], false)
    );
    assert!(
        matches!(out.events.as_slice(), [Event::Apply(_)]),
        "the route sent again"
    );
    assert_eq!(out.fixed.len(), 1, "its problem is over");
    assert_eq!(
        status(&state),
        "BackendNotFound",
        "permitted; that Service is not known here"
    );

    let mut out = Outcome::default();
    state.change(
        &config,
        Kind::Crd(CrdKind::ReferenceGrant),
        obj("ReferenceGrant", "other", "g", grant),
        true,
        &mut out,
    );
    assert!(destinations(&state).1, "refused again");
    assert_eq!(out.events.len(), 1);
    assert_eq!(status(&state), "RefNotPermitted");
}
