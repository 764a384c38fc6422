//! The HTTP handlers: agent registration, checks, catalog and health
//! endpoints, each answering as Consul does.

use super::*;

pub(super) fn parse_body(body: &Bytes) -> Result<Value, String> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|e| format!("Request decode failed: {e}"))
}

pub(super) async fn agent_register(
    State(s): State<Arc<Shared>>,
    Query(q): Query<QueryParams>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = admit(&s, "PUT /v1/agent/service/register".into(), &q, &h) {
        return r;
    }
    let svc = match parse_body(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(e),
    };
    let mut checks: Vec<Value> = field(&svc, "Checks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(c) = field(&svc, "Check").filter(|c| c.is_object()) {
        checks.insert(0, c.clone());
    }
    // The deprecated flat form (py-consul's `ttl=`): a TTL at the top level.
    if field(&svc, "TTL").is_some() {
        checks.push(json!({ "TTL": field(&svc, "TTL") }));
    }
    let r = lock(&s.catalog).register(AGENT_NODE, "127.0.0.1", &svc, &checks);
    match r {
        Ok(()) => {
            s.changed.send_modify(|i| *i += 1);
            StatusCode::OK.into_response()
        }
        Err(e) => bad_request(e),
    }
}

pub(super) async fn agent_deregister(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<QueryParams>,
    h: HeaderMap,
) -> Response {
    if let Some(r) = admit(&s, format!("PUT /v1/agent/service/deregister/{id}"), &q, &h) {
        return r;
    }
    if lock(&s.catalog).deregister(AGENT_NODE, &id) {
        s.changed.send_modify(|i| *i += 1);
        StatusCode::OK.into_response()
    } else {
        (StatusCode::NOT_FOUND, format!("Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name.")).into_response()
    }
}

pub(super) async fn agent_maintenance(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<QueryParams>,
    h: HeaderMap,
) -> Response {
    if let Some(r) = admit(
        &s,
        format!("PUT /v1/agent/service/maintenance/{id}"),
        &q,
        &h,
    ) {
        return r;
    }
    let enable = q.enable.as_deref() == Some("true");
    let mut c = lock(&s.catalog);
    let Some(name) = c
        .instances
        .get(&(AGENT_NODE.to_owned(), id.clone()))
        .map(|i| i.name.clone())
    else {
        return (StatusCode::NOT_FOUND, format!("Unknown service ID {id:?}")).into_response();
    };
    let key = (
        AGENT_NODE.to_owned(),
        id.clone(),
        format!("_service_maintenance:{id}"),
    );
    let index = c.bump();
    if enable {
        c.checks.insert(
            key.clone(),
            Check {
                node: AGENT_NODE.into(),
                id: key.2.clone(),
                name: "Service Maintenance Mode".into(),
                status: "critical".into(),
                output: q.reason.clone().unwrap_or_default(),
                service_id: id.clone(),
                index,
            },
        );
    } else {
        c.checks.remove(&key);
    }
    c.touch_service(&name, index);
    drop(c);
    s.changed.send_modify(|i| *i += 1);
    StatusCode::OK.into_response()
}

pub(super) async fn check_ttl(
    s: State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<QueryParams>,
    h: HeaderMap,
    status: &str,
) -> Response {
    if let Some(r) = admit(&s, format!("PUT /v1/agent/check/{status}/{id}"), &q, &h) {
        return r;
    }
    let note = q.note.clone().unwrap_or_default();
    if lock(&s.catalog).set_check(AGENT_NODE, &id, status, &note) {
        s.changed.send_modify(|i| *i += 1);
        StatusCode::OK.into_response()
    } else {
        (StatusCode::NOT_FOUND, format!("Unknown check ID {id:?}")).into_response()
    }
}

pub(super) async fn check_update(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<QueryParams>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = admit(&s, format!("PUT /v1/agent/check/update/{id}"), &q, &h) {
        return r;
    }
    let v = match parse_body(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(e),
    };
    let status = str_field(&v, "Status");
    if !["passing", "warning", "critical"].contains(&status.as_str()) {
        return bad_request(format!("Invalid check status: {status:?}"));
    }
    if lock(&s.catalog).set_check(AGENT_NODE, &id, &status, &str_field(&v, "Output")) {
        s.changed.send_modify(|i| *i += 1);
        StatusCode::OK.into_response()
    } else {
        (StatusCode::NOT_FOUND, format!("Unknown check ID {id:?}")).into_response()
    }
}

pub(super) async fn catalog_register(
    State(s): State<Arc<Shared>>,
    Query(q): Query<QueryParams>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = admit(&s, "PUT /v1/catalog/register".into(), &q, &h) {
        return r;
    }
    let v = match parse_body(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(e),
    };
    let node = str_field(&v, "Node");
    if node.is_empty() {
        return bad_request("Must provide node");
    }
    let address = str_field(&v, "Address");
    let mut c = lock(&s.catalog);
    let index = c.bump();
    let meta = map_field(&v, "NodeMeta");
    let entry = c.nodes.entry(node.clone()).or_insert(Node {
        address: address.clone(),
        meta: BTreeMap::new(),
        index,
    });
    entry.address = address.clone();
    entry.meta.extend(meta);
    entry.index = index;
    let mut checks: Vec<Value> = field(&v, "Checks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(ch) = field(&v, "Check").filter(|c| c.is_object()) {
        checks.push(ch.clone());
    }
    let result = match field(&v, "Service").filter(|x| x.is_object()) {
        Some(svc) => c.register(&node, &address, svc, &checks),
        None => Ok(()),
    };
    drop(c);
    s.changed.send_modify(|i| *i += 1);
    match result {
        Ok(()) => axum::Json(true).into_response(),
        Err(e) => bad_request(e),
    }
}

pub(super) async fn catalog_deregister(
    State(s): State<Arc<Shared>>,
    Query(q): Query<QueryParams>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = admit(&s, "PUT /v1/catalog/deregister".into(), &q, &h) {
        return r;
    }
    let v = match parse_body(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(e),
    };
    let node = str_field(&v, "Node");
    let service_id = str_field(&v, "ServiceID");
    let mut c = lock(&s.catalog);
    if service_id.is_empty() {
        let ids: Vec<String> = c
            .instances
            .values()
            .filter(|i| i.node == node)
            .map(|i| i.id.clone())
            .collect();
        for id in ids {
            c.deregister(&node, &id);
        }
        c.nodes.remove(&node);
        c.checks.retain(|(n, _, _), _| *n != node);
        c.bump();
    } else {
        c.deregister(&node, &service_id);
    }
    drop(c);
    s.changed.send_modify(|i| *i += 1);
    axum::Json(true).into_response()
}

pub(super) async fn catalog_services(
    State(s): State<Arc<Shared>>,
    Query(q): Query<QueryParams>,
    h: HeaderMap,
) -> Response {
    if let Some(r) = admit(&s, "GET /v1/catalog/services".into(), &q, &h) {
        return r;
    }
    blocking(&s, &q, |c| c.services_index, |c| json!(c.service_names())).await
}

pub(super) async fn catalog_service(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(q): Query<QueryParams>,
    h: HeaderMap,
) -> Response {
    if let Some(r) = admit(&s, format!("GET /v1/catalog/service/{name}"), &q, &h) {
        return r;
    }
    let dc = s.datacenter.clone();
    let index_name = name.clone();
    blocking(
        &s,
        &q,
        move |c| c.service_index.get(&index_name).copied().unwrap_or(c.services_index),
        move |c| {
            Value::Array(
                c.instances_of(&name)
                    .into_iter()
                    .map(|i| {
                        let node = c.nodes.get(&i.node);
                        json!({
                            "ID": "", "Node": i.node, "Address": node.map(|n| n.address.clone()).unwrap_or_default(),
                            "Datacenter": dc, "TaggedAddresses": {}, "NodeMeta": node.map(|n| n.meta.clone()).unwrap_or_default(),
                            "ServiceKind": i.kind, "ServiceID": i.id, "ServiceName": i.name, "ServiceTags": i.tags,
                            "ServiceAddress": i.address, "ServiceWeights": { "Passing": i.weights.0, "Warning": i.weights.1 },
                            "ServiceMeta": i.meta, "ServicePort": i.port, "ServiceEnableTagOverride": false,
                            "CreateIndex": i.create_index, "ModifyIndex": i.index,
                        })
                    })
                    .collect(),
            )
        },
    )
    .await
}

pub(super) async fn health_service(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(q): Query<QueryParams>,
    h: HeaderMap,
) -> Response {
    if let Some(r) = admit(&s, format!("GET /v1/health/service/{name}"), &q, &h) {
        return r;
    }
    let dc = s.datacenter.clone();
    let passing_only = q
        .passing
        .as_deref()
        .is_some_and(|p| p != "false" && p != "0");
    let index_name = name.clone();
    blocking(
        &s,
        &q,
        move |c| {
            c.service_index
                .get(&index_name)
                .copied()
                .unwrap_or(c.services_index)
        },
        move |c| {
            Value::Array(
                c.instances_of(&name)
                    .into_iter()
                    .filter(|i| {
                        !passing_only || c.checks_of(i).iter().all(|ch| ch.status == "passing")
                    })
                    .map(|i| c.service_entry(i, &dc))
                    .collect(),
            )
        },
    )
    .await
}
