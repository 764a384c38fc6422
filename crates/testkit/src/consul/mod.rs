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
//! `GET /v1/status/leader`, `GET /v1/agent/self`; config entries:
//! `PUT /v1/config`, `GET /v1/config/KIND`, `GET` and `DELETE
//! /v1/config/KIND/NAME`.
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

mod blocking;
mod catalog;
mod config;
mod handlers;

use blocking::*;
use config::*;
use handlers::*;

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
    /// Config entries (service-router, service-splitter, ...).
    config: ConfigEntries,
}

/// What the double is told to do besides serving.
#[derive(Default)]
struct Behaviour {
    token: Option<String>,
    fail_with: Option<(u16, String)>,
    /// What `/v1/config/KIND` answers instead of the entries, when set.
    config_entries_refused: Option<(u16, String)>,
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
            .route("/v1/config", put(config_set))
            .route("/v1/config/{kind}", get(config_list))
            .route(
                "/v1/config/{kind}/{name}",
                get(config_get).delete(config_delete),
            )
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

    /// Makes `GET /v1/config/KIND` answer `status` with `body` (404 as a
    /// Consul before 1.5 or a Consul-compatible registry without config
    /// entries does, 403 as for a token that may not read them) until
    /// cleared with `None`; the catalog and health go on answering.
    pub fn refuse_config_entries(&self, refusal: Option<(u16, &str)>) {
        lock(&self.shared.behaviour).config_entries_refused =
            refusal.map(|(s, b)| (s, b.to_owned()));
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

    /// Writes a config entry (its `Kind` and `Name` say which), as
    /// `PUT /v1/config` does.
    pub fn set_config_entry(&self, entry: Value) {
        let done = lock(&self.shared.catalog).set_config(entry, None);
        assert_eq!(done, Ok(true), "config entry written");
        self.wake();
    }

    /// Deletes a config entry.
    pub fn delete_config_entry(&self, kind: &str, name: &str) {
        lock(&self.shared.catalog).delete_config(kind, name);
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
        c.touch_node(node, index);
        drop(c);
        self.wake();
    }

    /// Every request served so far, as `METHOD PATH`.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared.behaviour).requests.clone()
    }
}
