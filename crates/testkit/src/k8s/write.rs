//! Writes through the API, as kubectl and controllers make them: create
//! (POST), JSON merge patch (PATCH, RFC 7386) of an object or of its
//! `status` subresource, delete. Kept: `409 AlreadyExists` on create,
//! `409 Conflict` when a patch names a `resourceVersion` that is no longer
//! current, a write to the object leaves `status` alone and a write to
//! `/status` changes nothing else, `generation` moves with `spec`.
//! Not kept: strategic merge patch and server-side apply (`415`, as the
//! real server answers for CRDs), admission, field managers.

use super::*;

/// The kind's CRD is not installed: the URL does not exist.
pub(super) fn absent(shared: &Shared, kind: Kind) -> bool {
    kind.crd()
        .is_some_and(|c| !lock(&shared.behaviour).installed.contains(&c))
}

fn qualified(kind: Kind) -> String {
    match kind.group() {
        "" => kind.resource().to_owned(),
        g => format!("{}.{g}", kind.resource()),
    }
}

fn not_found_object(kind: Kind, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{} \"{name}\" not found", qualified(kind)),
        Some(json!({"name": name, "group": kind.group(), "kind": kind.resource()})),
    )
}

fn bad_request(message: &str) -> Response {
    status(StatusCode::BAD_REQUEST, "BadRequest", message, None)
}

/// The namespace and name a URL names for `kind` (a Namespace's own URL
/// names it with the `namespace` parameter).
fn scope_and_name(kind: Kind, path: &HashMap<String, String>) -> (String, String) {
    let get = |k: &str| path.get(k).cloned().unwrap_or_default();
    match kind {
        Kind::Namespace => (String::new(), get("namespace")),
        _ if kind.namespaced() => (get("namespace"), get("name")),
        _ => (String::new(), get("name")),
    }
}

pub(super) async fn create(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<HashMap<String, String>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
    kind: Kind,
) -> Response {
    if absent(&shared, kind) {
        return not_found(&axum::http::Uri::from_static("/"));
    }
    // kubectl's typed commands (`kubectl create namespace`) send
    // protobuf; the double reads JSON only, and says so as the API server
    // does for a type it cannot read (`kubectl apply` and `kubectl create
    // -f` send JSON).
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if !content_type.starts_with("application/json") {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            &format!(
                "the body of the request was in an unknown format - accepted media types include: application/json (not {content_type:?}: the double serves JSON only)"
            ),
            None,
        );
    }
    let mut object: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return bad_request("the body is not an object"),
        Err(e) => return bad_request(&format!("cannot decode the body: {e}")),
    };
    let namespace = if kind.namespaced() {
        path.get("namespace").cloned().unwrap_or_default()
    } else {
        String::new()
    };
    let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "metadata.name: Required value: name is required",
            None,
        );
    };
    if object["kind"].as_str() != Some(kind.kind()) {
        return bad_request(&format!(
            "the kind {} does not match {}",
            object["kind"],
            kind.kind()
        ));
    }
    if kind.namespaced() {
        object["metadata"]["namespace"] = json!(namespace);
    } else if let Some(m) = object["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    if kind == Kind::Namespace {
        object["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
    }
    if kind.has_status() {
        // A create sets no status; controllers write it.
        if let Some(m) = object.as_object_mut() {
            m.remove("status");
        }
    }
    if lock(&shared.store)
        .objects
        .contains_key(&(kind, namespace.clone(), name.clone()))
    {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("{} \"{name}\" already exists", qualified(kind)),
            Some(json!({"name": name, "group": kind.group(), "kind": kind.resource()})),
        );
    }
    // Mutating admission, before the object is stored (admission.rs).
    let object = match super::admission::admit(&shared, kind, &namespace, object).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let stored = {
        let mut store = lock(&shared.store);
        if store
            .objects
            .contains_key(&(kind, namespace.clone(), name.clone()))
        {
            return status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                &format!("{} \"{name}\" already exists", qualified(kind)),
                Some(json!({"name": name, "group": kind.group(), "kind": kind.resource()})),
            );
        }
        store.put(kind, object)
    };
    shared.changed.send_modify(|n| *n += 1);
    json_response(StatusCode::CREATED, &stored)
}

/// RFC 7386: objects merge key by key, `null` removes, anything else
/// replaces.
pub(super) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

pub(super) async fn patch(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<HashMap<String, String>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
    kind: Kind,
    subresource_status: bool,
) -> Response {
    if absent(&shared, kind) {
        return not_found(&axum::http::Uri::from_static("/"));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/merge-patch+json") {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            &format!(
                "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json (not {content_type:?}: the double serves JSON merge patch only)"
            ),
            None,
        );
    }
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(&format!("cannot decode the patch: {e}")),
    };
    let (namespace, name) = scope_and_name(kind, &path);
    let stored = {
        let mut store = lock(&shared.store);
        let Some(current) = store
            .objects
            .get(&(kind, namespace.clone(), name.clone()))
            .cloned()
        else {
            return not_found_object(kind, &name);
        };
        if let Some(rv) = patch["metadata"]["resourceVersion"].as_str()
            && Some(rv) != current["metadata"]["resourceVersion"].as_str()
        {
            return status(
                StatusCode::CONFLICT,
                "Conflict",
                &format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    qualified(kind)
                ),
                Some(json!({"name": name, "group": kind.group(), "kind": kind.resource()})),
            );
        }
        let mut next = current.clone();
        merge_patch(&mut next, &patch);
        if kind.has_status() {
            let keep_status = current.get("status").cloned();
            if subresource_status {
                // Only status changes through /status.
                let status = next.get("status").cloned();
                next = current;
                match status {
                    Some(s) => next["status"] = s,
                    None => {
                        if let Some(m) = next.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            } else if let Some(m) = next.as_object_mut() {
                match keep_status {
                    Some(s) => {
                        m.insert("status".into(), s);
                    }
                    None => {
                        m.remove("status");
                    }
                }
            }
        }
        next["metadata"]["name"] = json!(name);
        if kind.namespaced() {
            next["metadata"]["namespace"] = json!(namespace);
        }
        store.put(kind, next)
    };
    shared.changed.send_modify(|n| *n += 1);
    json_response(StatusCode::OK, &stored)
}

pub(super) async fn remove(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<HashMap<String, String>>,
    kind: Kind,
) -> Response {
    if absent(&shared, kind) {
        return not_found(&axum::http::Uri::from_static("/"));
    }
    let (namespace, name) = scope_and_name(kind, &path);
    let deleted = lock(&shared.store).remove(kind, &namespace, &name);
    match deleted {
        Some(object) => {
            shared.changed.send_modify(|n| *n += 1);
            json_response(StatusCode::OK, &object)
        }
        None => not_found_object(kind, &name),
    }
}

/// TokenReview: authenticates the tokens [`KubeDouble::add_token`] knows,
/// for their audiences, as the API server answers (the review echoed with
/// its `status`; `authenticated: false` with an `error` otherwise).
pub(super) async fn token_review(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let mut review: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return bad_request("the body is not a TokenReview"),
    };
    if review["kind"] != "TokenReview" {
        return bad_request("the body is not a TokenReview");
    }
    let token = review["spec"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let asked: Vec<String> = review["spec"]["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    let known = lock(&shared.behaviour).tokens.get(&token).cloned();
    let status = match known {
        Some((username, audiences))
            if asked.is_empty()
                || audiences.is_empty()
                || asked.iter().any(|a| audiences.contains(a)) =>
        {
            let for_audiences = if asked.is_empty() { audiences } else { asked };
            json!({"authenticated": true, "user": {"username": username, "groups": ["system:serviceaccounts"]},
                   "audiences": for_audiences})
        }
        Some(_) => json!({"authenticated": false, "error": "token audiences do not match"}),
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    review["status"] = status;
    review["metadata"] = json!({"creationTimestamp": null});
    json_response(StatusCode::CREATED, &review)
}
