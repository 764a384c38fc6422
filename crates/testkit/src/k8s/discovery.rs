//! What a client asks first: `/version`, the API groups and resources,
//! namespaces.

use super::*;

pub(super) async fn version(State(shared): State<Arc<Shared>>) -> Response {
    let minor = lock(&shared.behaviour).version_minor;
    json_response(
        StatusCode::OK,
        &json!({"major": "1", "minor": minor.to_string(),
                "gitVersion": format!("v1.{minor}.0-sextant-double"),
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

pub(super) fn resource_entry(kind: Kind) -> Value {
    let verbs: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];
    json!({
        "name": kind.resource(), "singularName": kind.kind().to_ascii_lowercase(),
        "namespaced": kind.namespaced(), "kind": kind.kind(),
        "verbs": verbs, "shortNames": kind.short_names(),
    })
}

fn status_entry(kind: Kind) -> Value {
    json!({"name": format!("{}/status", kind.resource()), "singularName": "",
           "namespaced": kind.namespaced(), "kind": kind.kind(), "verbs": ["get", "patch"]})
}

pub(super) async fn core_resources() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
            resource_entry(Kind::Service), resource_entry(Kind::Node), resource_entry(Kind::Pod),
            resource_entry(Kind::Namespace), resource_entry(Kind::ConfigMap),
            resource_entry(Kind::Secret)]}),
    )
}

/// The groups served now: the built-in ones and the installed CRDs'.
fn groups(shared: &Shared) -> Vec<&'static str> {
    let mut out = vec![
        "discovery.k8s.io",
        "authentication.k8s.io",
        "admissionregistration.k8s.io",
        "networking.k8s.io",
    ];
    out.extend(lock(&shared.behaviour).installed.iter().map(|c| c.group()));
    out
}

/// The versions `group` is served at, preferred (`v1`) first.
fn versions(group: &str) -> Vec<&'static str> {
    let mut out = vec!["v1"];
    for k in Kind::ALL.into_iter().filter(|k| k.group() == group) {
        if !out.contains(&k.version()) {
            out.push(k.version());
        }
    }
    out
}

fn group_entry(group: &str) -> Value {
    let versions: Vec<Value> = versions(group)
        .into_iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "preferredVersion": versions[0].clone(), "versions": versions})
}

pub(super) async fn api_groups(State(shared): State<Arc<Shared>>) -> Response {
    let groups: Vec<Value> = groups(&shared).into_iter().map(group_entry).collect();
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
    )
}

pub(super) async fn api_group(
    State(shared): State<Arc<Shared>>,
    Path(group): Path<String>,
    uri: axum::http::Uri,
) -> Response {
    if !groups(&shared).contains(&group.as_str()) {
        return not_found(&uri);
    }
    let mut body = group_entry(&group);
    body["kind"] = json!("APIGroup");
    body["apiVersion"] = json!("v1");
    json_response(StatusCode::OK, &body)
}

pub(super) async fn group_resources(
    State(shared): State<Arc<Shared>>,
    Path((group, version)): Path<(String, String)>,
    uri: axum::http::Uri,
) -> Response {
    if !versions(&group).contains(&version.as_str()) || !groups(&shared).contains(&group.as_str()) {
        return not_found(&uri);
    }
    let mut resources = Vec::new();
    if group == "authentication.k8s.io" {
        resources.push(
            json!({"name": "tokenreviews", "singularName": "tokenreview",
            "namespaced": false, "kind": "TokenReview", "verbs": ["create"]}),
        );
    }
    for kind in Kind::ALL
        .into_iter()
        .filter(|k| k.group() == group && k.version() == version)
    {
        resources.push(resource_entry(kind));
        if kind.has_status() {
            resources.push(status_entry(kind));
        }
    }
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": format!("{group}/{version}"), "resources": resources}),
    )
}

/// A namespace: the stored one, or one implied by an object living in it
/// (kubectl reads it to word its "not found" errors).
pub(super) async fn namespace(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<HashMap<String, String>>,
) -> Response {
    let ns = path.get("namespace").cloned().unwrap_or_default();
    let store = lock(&shared.store);
    if let Some(stored) = store
        .objects
        .get(&(Kind::Namespace, String::new(), ns.clone()))
    {
        return json_response(StatusCode::OK, stored);
    }
    let exists = store.objects.keys().any(|(_, n, _)| *n == ns);
    drop(store);
    if exists {
        json_response(
            StatusCode::OK,
            &json!({"kind": "Namespace", "apiVersion": "v1",
                    "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
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
