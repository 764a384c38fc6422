//! What a client asks first: `/version`, the API groups and resources,
//! namespaces.

use super::*;

pub(super) async fn version() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-sextant-double",
                "platform": "linux/amd64"}),
    )
}

pub(super) async fn api_versions() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:443"}]}),
    )
}

pub(super) fn resource_entry(kind: Kind, short: &[&str]) -> Value {
    json!({
        "name": kind.resource(), "singularName": kind.kind().to_ascii_lowercase(),
        "namespaced": kind != Kind::Node, "kind": kind.kind(),
        "verbs": ["get", "list", "watch"], "shortNames": short,
    })
}

pub(super) async fn core_resources() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
            resource_entry(Kind::Service, &["svc"]), resource_entry(Kind::Node, &["no"]),
            {"name": "namespaces", "singularName": "namespace", "namespaced": false,
             "kind": "Namespace", "verbs": ["get"], "shortNames": ["ns"]}]}),
    )
}

pub(super) async fn api_groups() -> Response {
    let v = json!({"groupVersion": "discovery.k8s.io/v1", "version": "v1"});
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": "discovery.k8s.io", "versions": [v.clone()], "preferredVersion": v}]}),
    )
}

pub(super) async fn discovery_resources() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "discovery.k8s.io/v1",
                "resources": [resource_entry(Kind::EndpointSlice, &[])]}),
    )
}

/// Namespaces are implicit: one exists while an object lives in it. kubectl
/// reads it to word its "not found" errors.
pub(super) async fn namespace(
    State(shared): State<Arc<Shared>>,
    Path(ns): Path<String>,
) -> Response {
    let exists = lock(&shared.store).objects.keys().any(|(_, n, _)| *n == ns);
    if exists {
        json_response(
            StatusCode::OK,
            &json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": ns},
                    "status": {"phase": "Active"}}),
        )
    } else {
        status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("namespaces \"{ns}\" not found"),
            Some(json!({"name": ns, "kind": "namespaces"})),
        )
    }
}
