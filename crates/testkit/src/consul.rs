//! A Consul HTTP API double: an in-memory catalog on loopback that speaks
//! the subset of Consul's API that registries and clients use, with real
//! blocking-query semantics. Tested against the independent Python client
//! py-consul (tests/consul_double.rs), so it cannot drift into fiction.
//!
//! Served: `PUT /v1/agent/service/register`, `PUT /v1/agent/service/deregister/ID`,
//! `PUT /v1/agent/service/maintenance/ID`, `PUT /v1/agent/check/{pass,warn,fail}/ID`,
//! `PUT /v1/agent/check/update/ID`, `PUT /v1/catalog/register`,
//! `PUT /v1/catalog/deregister`, `GET /v1/catalog/services`,
//! `GET /v1/catalog/service/NAME`, `GET /v1/health/service/NAME` (`passing`),
//! `GET /v1/status/leader`, `GET /v1/agent/self`.
//!
//! Semantics kept: `index` and `wait` on every GET above (Consul adds up to
//! wait/16 of jitter), `X-Consul-Index` (the catalog's index for
//! `/catalog/services`, the service's for the others), `X-Consul-KnownLeader`,
//! `X-Consul-LastContact`; request bodies decoded case-insensitively, like
//! Go's JSON (clients send `name` or `Name`); a service with no checks is
//! passing; a TTL check starts critical; maintenance adds a critical check
//! `_service_maintenance:ID`; ACL tokens from `X-Consul-Token` or `?token=`
//! (403 `Permission denied`); a simulated restart that sends indexes backwards.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::{Value, json};
use tokio::sync::watch;

const AGENT_NODE: &str = "double-node";

#[derive(Clone, Debug)]
struct Node {
    address: String,
    meta: BTreeMap<String, String>,
    index: u64,
}

#[derive(Clone, Debug)]
struct Instance {
    node: String,
    id: String,
    name: String,
    tags: Vec<String>,
    address: String,
    port: u64,
    meta: BTreeMap<String, String>,
    weights: (u64, u64),
    kind: String,
    create_index: u64,
    index: u64,
}

#[derive(Clone, Debug)]
struct Check {
    node: String,
    id: String,
    name: String,
    status: String,
    output: String,
    service_id: String,
    index: u64,
}

#[derive(Default)]
struct Catalog {
    index: u64,
    /// Index of the last change to the set of services or their tags.
    services_index: u64,
    /// Index of the last change touching each service name.
    service_index: BTreeMap<String, u64>,
    nodes: BTreeMap<String, Node>,
    instances: BTreeMap<(String, String), Instance>,
    /// Instances by service name.
    by_name: BTreeMap<String, BTreeSet<(String, String)>>,
    /// Checks by (node, service id or "" for node checks, check id).
    checks: BTreeMap<(String, String, String), Check>,
}

/// What the double is told to do besides serving.
#[derive(Default)]
struct Behaviour {
    token: Option<String>,
    fail_with: Option<(u16, String)>,
    requests: Vec<String>,
}

struct Shared {
    catalog: Mutex<Catalog>,
    behaviour: Mutex<Behaviour>,
    changed: watch::Sender<u64>,
    datacenter: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running double. Dropping it stops the server.
pub struct ConsulDouble {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ConsulDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Finds a field the way Go's JSON decoder does: case-insensitively
/// (also ignoring `_`, as Consul translates snake_case keys).
fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    let norm = |s: &str| s.replace('_', "").to_ascii_lowercase();
    let want = norm(name);
    v.as_object()?
        .iter()
        .find(|(k, _)| norm(k) == want)
        .map(|(_, v)| v)
}

fn str_field(v: &Value, name: &str) -> String {
    field(v, name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn map_field(v: &Value, name: &str) -> BTreeMap<String, String> {
    field(v, name)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn bad_request(msg: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, msg.into()).into_response()
}

impl Catalog {
    fn bump(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    fn touch_service(&mut self, name: &str, index: u64) {
        self.service_index.insert(name.to_owned(), index);
    }

    fn service_names(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for inst in self.instances.values() {
            out.entry(inst.name.clone())
                .or_default()
                .extend(inst.tags.iter().cloned());
        }
        out
    }

    fn register(
        &mut self,
        node: &str,
        address: &str,
        svc: &Value,
        checks: &[Value],
    ) -> Result<(), String> {
        let name = str_field(svc, "Name");
        let name = if name.is_empty() {
            str_field(svc, "Service")
        } else {
            name
        };
        if name.is_empty() {
            return Err("Missing service name".into());
        }
        let id = match str_field(svc, "ID") {
            s if s.is_empty() => name.clone(),
            s => s,
        };
        let weights = field(svc, "Weights")
            .map(|w| {
                (
                    field(w, "Passing").and_then(Value::as_u64).unwrap_or(1),
                    field(w, "Warning").and_then(Value::as_u64).unwrap_or(1),
                )
            })
            .unwrap_or((1, 1));
        let index = self.bump();
        self.nodes.entry(node.to_owned()).or_insert(Node {
            address: address.to_owned(),
            meta: BTreeMap::new(),
            index,
        });
        let key = (node.to_owned(), id.clone());
        let create_index = self.instances.get(&key).map_or(index, |i| i.create_index);
        let old_name = self.instances.get(&key).map(|i| i.name.clone());
        if let Some(set) = old_name.as_ref().and_then(|old| self.by_name.get_mut(old)) {
            set.remove(&key);
        }
        self.by_name
            .entry(name.clone())
            .or_default()
            .insert(key.clone());
        self.instances.insert(
            key,
            Instance {
                node: node.to_owned(),
                id: id.clone(),
                name: name.clone(),
                tags: field(svc, "Tags")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|t| t.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
                address: str_field(svc, "Address"),
                port: field(svc, "Port").and_then(Value::as_u64).unwrap_or(0),
                meta: map_field(svc, "Meta"),
                weights,
                kind: str_field(svc, "Kind"),
                create_index,
                index,
            },
        );
        for (i, check) in checks.iter().enumerate() {
            let check_id = match (str_field(check, "CheckID"), str_field(check, "ID")) {
                (a, _) if !a.is_empty() => a,
                (_, b) if !b.is_empty() => b,
                _ if checks.len() == 1 => format!("service:{id}"),
                _ => format!("service:{id}:{}", i + 1),
            };
            // A TTL check starts critical until its first pass, as in Consul.
            let status = match str_field(check, "Status") {
                s if !s.is_empty() => s,
                _ => "critical".to_owned(),
            };
            let name = match str_field(check, "Name") {
                s if !s.is_empty() => s,
                _ => format!("Service '{name}' check"),
            };
            self.checks.insert(
                (node.to_owned(), id.clone(), check_id.clone()),
                Check {
                    node: node.to_owned(),
                    id: check_id,
                    name,
                    status,
                    output: String::new(),
                    service_id: id.clone(),
                    index,
                },
            );
        }
        self.services_index = index;
        self.touch_service(&name, index);
        if let Some(old) = old_name.filter(|o| *o != name) {
            self.touch_service(&old, index);
        }
        Ok(())
    }

    fn deregister(&mut self, node: &str, id: &str) -> bool {
        let key = (node.to_owned(), id.to_owned());
        let Some(inst) = self.instances.remove(&key) else {
            return false;
        };
        if let Some(set) = self.by_name.get_mut(&inst.name) {
            set.remove(&key);
            if set.is_empty() {
                self.by_name.remove(&inst.name);
            }
        }
        self.checks
            .retain(|(n, sid, _), _| !(n == node && sid == id));
        let index = self.bump();
        self.services_index = index;
        self.touch_service(&inst.name, index);
        true
    }

    fn set_check(&mut self, node: &str, check_id: &str, status: &str, output: &str) -> bool {
        let Some(key) = self
            .checks
            .keys()
            .find(|(n, _, c)| n == node && c == check_id)
            .cloned()
        else {
            return false;
        };
        self.index += 1;
        let index = self.index;
        if let Some(check) = self.checks.get_mut(&key) {
            check.status = status.to_owned();
            check.output = output.to_owned();
            check.index = index;
        }
        let service_id = key.1;
        if let Some(name) = self
            .instances
            .get(&(node.to_owned(), service_id))
            .map(|i| i.name.clone())
        {
            self.touch_service(&name, index);
        } else {
            // A node check touches every service on the node.
            let names: Vec<String> = self
                .instances
                .values()
                .filter(|i| i.node == node)
                .map(|i| i.name.clone())
                .collect();
            for n in names {
                self.touch_service(&n, index);
            }
        }
        true
    }

    /// The node's checks, then the instance's.
    fn checks_of(&self, inst: &Instance) -> Vec<&Check> {
        let mut out = Vec::new();
        for sid in ["", inst.id.as_str()] {
            out.extend(
                self.checks
                    .range((inst.node.clone(), sid.to_owned(), String::new())..)
                    .take_while(|((n, s, _), _)| *n == inst.node && s == sid)
                    .map(|(_, c)| c),
            );
        }
        out
    }

    fn instances_of(&self, name: &str) -> Vec<&Instance> {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|k| self.instances.get(k))
            .collect()
    }

    fn service_entry(&self, inst: &Instance, dc: &str) -> Value {
        let node = self.nodes.get(&inst.node);
        json!({
            "Node": {
                "ID": "",
                "Node": inst.node,
                "Address": node.map(|n| n.address.clone()).unwrap_or_default(),
                "Datacenter": dc,
                "TaggedAddresses": {},
                "Meta": node.map(|n| n.meta.clone()).unwrap_or_default(),
                "CreateIndex": node.map_or(0, |n| n.index),
                "ModifyIndex": node.map_or(0, |n| n.index),
            },
            "Service": {
                "ID": inst.id,
                "Service": inst.name,
                "Tags": inst.tags,
                "Address": inst.address,
                "TaggedAddresses": {},
                "Meta": inst.meta,
                "Port": inst.port,
                "Weights": { "Passing": inst.weights.0, "Warning": inst.weights.1 },
                "EnableTagOverride": false,
                "Kind": inst.kind,
                "Proxy": {},
                "Connect": {},
                "Datacenter": dc,
                "CreateIndex": inst.create_index,
                "ModifyIndex": inst.index,
            },
            "Checks": self.checks_of(inst).iter().map(|c| json!({
                "Node": c.node,
                "CheckID": c.id,
                "Name": c.name,
                "Status": c.status,
                "Notes": "",
                "Output": c.output,
                "ServiceID": c.service_id,
                "ServiceName": if c.service_id.is_empty() { String::new() } else { inst.name.clone() },
                "ServiceTags": if c.service_id.is_empty() { Vec::new() } else { inst.tags.clone() },
                "Type": "ttl",
                "CreateIndex": c.index,
                "ModifyIndex": c.index,
            })).collect::<Vec<_>>(),
        })
    }
}

impl ConsulDouble {
    /// Starts a double for datacenter `dc1` on a free loopback port.
    pub async fn start() -> ConsulDouble {
        let (listener, addr) = crate::peers::loopback_listener().await;
        let (changed, _) = watch::channel(1);
        let shared = Arc::new(Shared {
            catalog: Mutex::new(Catalog {
                index: 1,
                services_index: 1,
                ..Default::default()
            }),
            behaviour: Mutex::new(Behaviour::default()),
            changed,
            datacenter: "dc1".into(),
        });
        let app = Router::new()
            .route("/v1/agent/service/register", put(agent_register))
            .route("/v1/agent/service/deregister/{id}", put(agent_deregister))
            .route("/v1/agent/service/maintenance/{id}", put(agent_maintenance))
            .route(
                "/v1/agent/check/pass/{id}",
                put(|s, p, q, h| check_ttl(s, p, q, h, "passing")),
            )
            .route(
                "/v1/agent/check/warn/{id}",
                put(|s, p, q, h| check_ttl(s, p, q, h, "warning")),
            )
            .route(
                "/v1/agent/check/fail/{id}",
                put(|s, p, q, h| check_ttl(s, p, q, h, "critical")),
            )
            .route("/v1/agent/check/update/{id}", put(check_update))
            .route("/v1/catalog/register", put(catalog_register))
            .route("/v1/catalog/deregister", put(catalog_deregister))
            .route("/v1/catalog/services", get(catalog_services))
            .route("/v1/catalog/service/{name}", get(catalog_service))
            .route("/v1/health/service/{name}", get(health_service))
            .route(
                "/v1/status/leader",
                get(|| async { axum::Json("127.0.0.1:8300") }),
            )
            .route(
                "/v1/agent/self",
                get(|State(s): State<Arc<Shared>>| async move {
                    axum::Json(
                        json!({ "Config": { "Datacenter": s.datacenter, "NodeName": AGENT_NODE } }),
                    )
                }),
            )
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            // No Nagle: small responses must not wait for the client's
            // delayed ACK (40 ms each on Linux).
            use axum::serve::ListenerExt;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let _ = axum::serve(listener, app).await;
        });
        ConsulDouble { addr, shared, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requires this ACL token on every request from now on.
    pub fn require_token(&self, token: &str) {
        lock(&self.shared.behaviour).token = Some(token.to_owned());
    }

    /// Answers every request with `status` and `body` (e.g. 500, or 200 with
    /// malformed JSON) until cleared with `None`.
    pub fn fail_with(&self, failure: Option<(u16, &str)>) {
        lock(&self.shared.behaviour).fail_with = failure.map(|(s, b)| (s, b.to_owned()));
        self.wake();
    }

    /// Simulates a server restart that loses the raft index: every index
    /// goes back to a small number, as after a snapshot restore.
    pub fn restart_with_lower_index(&self) {
        let mut c = lock(&self.shared.catalog);
        c.index = 2;
        c.services_index = 2;
        for v in c.service_index.values_mut() {
            *v = 2;
        }
        drop(c);
        self.wake();
    }

    fn wake(&self) {
        self.shared.changed.send_modify(|i| *i += 1);
    }

    /// Registers an instance directly (as the agent endpoint would).
    pub fn register(&self, node: &str, node_address: &str, service: Value, checks: Vec<Value>) {
        let r = lock(&self.shared.catalog).register(node, node_address, &service, &checks);
        r.unwrap_or_else(|e| panic!("register: {e}"));
        self.wake();
    }

    /// Sets a check's status (`passing`, `warning`, `critical`).
    pub fn set_check(&self, node: &str, check_id: &str, status: &str) {
        assert!(
            lock(&self.shared.catalog).set_check(node, check_id, status, ""),
            "no check {check_id} on {node}"
        );
        self.wake();
    }

    /// Deregisters an instance.
    pub fn deregister(&self, node: &str, service_id: &str) {
        lock(&self.shared.catalog).deregister(node, service_id);
        self.wake();
    }

    /// Sets node metadata (e.g. a zone).
    pub fn set_node_meta(&self, node: &str, key: &str, value: &str) {
        let mut c = lock(&self.shared.catalog);
        let index = c.bump();
        if let Some(n) = c.nodes.get_mut(node) {
            n.meta.insert(key.to_owned(), value.to_owned());
            n.index = index;
        }
        let names: Vec<String> = c
            .instances
            .values()
            .filter(|i| i.node == node)
            .map(|i| i.name.clone())
            .collect();
        for n in names {
            c.touch_service(&n, index);
        }
        drop(c);
        self.wake();
    }

    /// Every request served so far, as `METHOD PATH`.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared.behaviour).requests.clone()
    }
}

#[derive(serde::Deserialize, Default)]
struct QueryParams {
    index: Option<u64>,
    wait: Option<String>,
    passing: Option<String>,
    token: Option<String>,
    enable: Option<String>,
    reason: Option<String>,
    note: Option<String>,
}

/// Checks the token and failure injection; logs the request.
fn admit(s: &Shared, what: String, q: &QueryParams, h: &HeaderMap) -> Option<Response> {
    let mut b = lock(&s.behaviour);
    b.requests.push(what);
    if let Some((status, body)) = &b.fail_with {
        let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Some((status, [("X-Consul-Index", "1")], body.clone()).into_response());
    }
    if let Some(token) = &b.token {
        let given = h
            .get("X-Consul-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| q.token.clone());
        if given.as_deref() != Some(token.as_str()) {
            return Some((StatusCode::FORBIDDEN, "Permission denied").into_response());
        }
    }
    None
}

fn parse_wait(wait: Option<&str>) -> Duration {
    let Some(w) = wait else {
        return Duration::from_secs(300);
    };
    let (num, unit) = w.split_at(w.find(|c: char| !c.is_ascii_digit()).unwrap_or(w.len()));
    let n: u64 = num.parse().unwrap_or(300);
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        _ => Duration::from_secs(n),
    };
    d.min(Duration::from_secs(600))
}

/// Blocks until `index_of` exceeds the requested index or the wait (plus
/// Consul's jitter of up to wait/16) passes; then answers with `body`.
async fn blocking(
    s: &Shared,
    q: &QueryParams,
    index_of: impl Fn(&Catalog) -> u64,
    body: impl Fn(&Catalog) -> Value,
) -> Response {
    let mut rx = s.changed.subscribe();
    if let Some(want) = q.index.filter(|i| *i > 0) {
        let wait = parse_wait(q.wait.as_deref());
        let jitter =
            Duration::from_millis(fastrand::u64(0..=(wait.as_millis() as u64 / 16).max(1)));
        let deadline = tokio::time::Instant::now() + wait + jitter;
        loop {
            if index_of(&lock(&s.catalog)) != want || lock(&s.behaviour).fail_with.is_some() {
                break;
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { break },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
    }
    if let Some((status, b)) = lock(&s.behaviour).fail_with.clone() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, [("X-Consul-Index", "1")], b).into_response();
    }
    let catalog = lock(&s.catalog);
    let index = index_of(&catalog);
    let mut resp = axum::Json(body(&catalog)).into_response();
    let h = resp.headers_mut();
    h.insert("X-Consul-Index", HeaderValue::from(index));
    h.insert("X-Consul-KnownLeader", HeaderValue::from_static("true"));
    h.insert("X-Consul-LastContact", HeaderValue::from_static("0"));
    resp
}

fn parse_body(body: &Bytes) -> Result<Value, String> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|e| format!("Request decode failed: {e}"))
}

async fn agent_register(
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

async fn agent_deregister(
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

async fn agent_maintenance(
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

async fn check_ttl(
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

async fn check_update(
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

async fn catalog_register(
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

async fn catalog_deregister(
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

async fn catalog_services(
    State(s): State<Arc<Shared>>,
    Query(q): Query<QueryParams>,
    h: HeaderMap,
) -> Response {
    if let Some(r) = admit(&s, "GET /v1/catalog/services".into(), &q, &h) {
        return r;
    }
    blocking(&s, &q, |c| c.services_index, |c| json!(c.service_names())).await
}

async fn catalog_service(
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

async fn health_service(
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
