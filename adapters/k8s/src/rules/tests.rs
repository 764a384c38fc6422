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
        &obj,
        &Converted::default(),
        &services(&["ratings", "ratings-v1"]),
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
        &route(spec.clone(), Value::Null),
        &Converted::default(),
        &known,
    )
    .expect("a patch");
    let written = route(spec.clone(), first["status"].clone());
    assert_eq!(
        status_patch(C, &written, &Converted::default(), &known),
        None
    );

    // A change keeps the time of the condition that did not change.
    let failed = Converted {
        problem: Some("cannot convert: spec.rules: bad".into()),
        failed: true,
        ..Default::default()
    };
    let next = status_patch(C, &written, &failed, &known).expect("a patch");
    let conditions = &next["status"]["parents"][0]["conditions"];
    assert_eq!(conditions[0]["status"], "False");
    assert_eq!(conditions[0]["reason"], "UnsupportedValue");
    assert_eq!(
        conditions[1]["lastTransitionTime"],
        first["status"]["parents"][0]["conditions"][1]["lastTransitionTime"]
    );
}
