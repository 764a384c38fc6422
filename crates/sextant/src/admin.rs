//! Admin HTTP: readiness, Prometheus metrics and debug endpoints (Pilot's
//! names, so operators find them where they expect).
//!
//! | path | what |
//! |---|---|
//! | `/healthz/ready` | 200 once serving, 503 (saying why) before |
//! | `/metrics` | every metric, OpenMetrics text (the Prometheus client crate encodes it) |
//! | `/debug/registryz` | each registry and rule source: state, last sync, staleness, counts (services, endpoints, routes, policies), last error, problems; conflicts (rule conflicts too) |
//! | `/debug/configz` | the merged view, JSON; each rule in force with the services it is bound to, and `check-config`'s warnings about them |
//! | `/debug/syncz` | each connected proxy: node, protocol, client kind, rule features it cannot honour, per type sent/acked versions, last NACK; recent NACKs |
//! | `/` | a page for people: registries, proxies and their sync state, conflicts, NACKs, events (HTML, refreshing itself) |
//! | `/debug/proxydiff?node=NODE` | what that proxy holds against what the newest snapshot gives it, resource by resource: the ones that differ (held and newest version, sent and not ACKed, rejected), the others counted (404 when it is not connected here) |
//! | `/debug/dnsz` | each DNS name Sextant follows for services' endpoints: its addresses (the last good answer), the last failure, when it is asked next (with DNS resolution by Sextant, the default) |
//! | `/debug/events` | what happened, in order: registries synced, stale, recovered, dropped; new conflicts; pushes; NACKs (`?since=SEQ&limit=N`) |

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sextant_aggregate::{AggregatorHandle, SyncState};
use sextant_xds::XdsServer;

pub mod listener;
mod metrics;
mod page;

pub use metrics::{Families, Labels, render_metrics};
pub use prometheus_client::collector::Collector;

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    aggregator: AggregatorHandle,
    xds: XdsServer,
    listener: Arc<listener::ListenerStats>,
    /// When set, `/debug/*` needs `Authorization: Bearer TOKEN`.
    token: Option<sextant_core::Secret>,
    /// More metric families: parts of a program the admin module does
    /// not know (the injection audit, the CA, an embedder's own).
    sources: Vec<Arc<dyn Collector>>,
    /// More debug endpoints, likewise (`/debug/dnsz`).
    pages: Vec<DebugPage>,
}

/// A debug endpoint of a part the admin module does not know: its path
/// and what it answers (JSON, read at each request).
#[derive(Clone)]
pub struct DebugPage {
    path: &'static str,
    read: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
}

impl DebugPage {
    /// `path` answers what `read` returns.
    pub fn new(
        path: &'static str,
        read: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        DebugPage {
            path,
            read: Arc::new(read),
        }
    }
}

impl AdminState {
    /// State over a running aggregator and ADS server.
    pub fn new(aggregator: AggregatorHandle, xds: XdsServer) -> Self {
        AdminState {
            aggregator,
            xds,
            listener: Arc::default(),
            token: None,
            sources: Vec::new(),
            pages: Vec::new(),
        }
    }

    /// Adds debug endpoints (behind the token, as the others).
    pub fn with_debug_pages(mut self, pages: Vec<DebugPage>) -> Self {
        self.pages = pages;
        self
    }

    /// Adds `sources`' metric families to `/metrics`.
    pub fn with_metrics(mut self, sources: Vec<Arc<dyn Collector>>) -> Self {
        self.sources = sources;
        self
    }

    /// Requires `Authorization: Bearer TOKEN` on the debug endpoints.
    pub fn with_token(mut self, token: Option<sextant_core::Secret>) -> Self {
        self.token = token;
        self
    }

    /// The counters the admin listener fills, for `/metrics`.
    pub fn listener_stats(&self) -> Arc<listener::ListenerStats> {
        self.listener.clone()
    }
}

/// The admin routes. With a token, the debug endpoints (which show every
/// service, endpoint and connected proxy) need it; health and metrics do
/// not (probes and scrapers read them, and they name no endpoint).
pub fn router(state: AdminState) -> Router {
    let mut debug = Router::new();
    for page in &state.pages {
        let read = page.read.clone();
        debug = debug.route(page.path, get(move || async move { axum::Json(read()) }));
    }
    let debug = debug
        .route("/debug/registryz", get(registryz))
        .route("/debug/configz", get(configz))
        .route("/debug/syncz", get(syncz))
        .route("/debug/events", get(events))
        .route("/debug/proxydiff", get(proxydiff))
        .route("/", get(index))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    Router::new()
        .route("/healthz/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(debug)
        .with_state(state)
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

async fn require_token(
    State(s): State<AdminState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(token) = &s.token else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| same(g.as_bytes(), token.expose().as_bytes())) {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
        "the debug endpoints need Authorization: Bearer TOKEN (--admin-token)\n",
    )
        .into_response()
}

/// The page a person reads (see [`page`]).
async fn index(State(s): State<AdminState>) -> axum::response::Html<String> {
    axum::response::Html(page::render(&s))
}

async fn ready(State(s): State<AdminState>) -> Response {
    let status = s.aggregator.status().borrow().clone();
    if status.ready {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let waiting: Vec<String> = status
        .registries
        .iter()
        .filter(|r| r.state == SyncState::Syncing)
        .map(|r| r.id.to_string())
        .collect();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "not ready: waiting for the first sync of {}\n",
            waiting.join(", ")
        ),
    )
        .into_response()
}

fn json(value: serde_json::Value) -> Response {
    let body = serde_json::to_string_pretty(&value).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body + "\n").into_response()
}

async fn registryz(State(s): State<AdminState>) -> Response {
    let status = s.aggregator.status().borrow().clone();
    let view = s.aggregator.view().borrow().clone();
    json(serde_json::json!({
        "ready": status.ready,
        "missing_at_startup": status.missing_at_startup,
        "generation": status.generation,
        "registries": status.registries,
        "conflicts": &*view.conflicts,
    }))
}

async fn configz(State(s): State<AdminState>) -> Response {
    let view = s.aggregator.view().borrow().clone();
    let mut value = serde_json::to_value(&*view).unwrap_or_default();
    // Each rule in force with the services it is bound to, and what
    // `sextant check-config` would warn about them.
    let mut bound: std::collections::BTreeMap<
        &sextant_core::RuleKey,
        (&sextant_core::Rule, Vec<&str>),
    > = Default::default();
    for ms in view.services.values() {
        // (A rule in force for several namespaces' proxies, once.)
        for rule in ms.all_rules() {
            let hosts = &mut bound
                .entry(&rule.key)
                .or_insert_with(|| (rule, Vec::new()))
                .1;
            let host = ms.service.hostname.as_str();
            if hosts.last() != Some(&host) {
                hosts.push(host);
            }
        }
    }
    let rules: Vec<serde_json::Value> = bound
        .values()
        .map(|(rule, hosts)| {
            serde_json::json!({
                "key": rule.key,
                "bound_to": hosts,
                "spec": rule.spec,
            })
        })
        .collect();
    let services: Vec<sextant_core::Service> = view
        .services
        .values()
        .map(|ms| ms.service.clone())
        .collect();
    let in_force: Vec<sextant_core::Rule> = bound.values().map(|(r, _)| (*r).clone()).collect();
    let warnings = sextant_core::rules::analyze(&services, &in_force);
    if let Some(map) = value.as_object_mut() {
        map.insert("rules".into(), serde_json::Value::Array(rules));
        map.insert(
            "rule_warnings".into(),
            serde_json::to_value(warnings).unwrap_or_default(),
        );
    }
    json(value)
}

/// `?host=HOST`, `?rule=KIND/NAMESPACE/NAME` or `?pod=NAMESPACE/NAME` on
/// /debug/syncz.
#[derive(serde::Deserialize)]
struct SynczQuery {
    host: Option<String>,
    rule: Option<String>,
    pod: Option<String>,
}

/// The connections of pod `ns`/`name` (Istio's node id form
/// `TYPE~IP~NAME.NS~...`), each with the peer authentication and
/// authorization policies that apply to its workload.
fn pod_connections(s: &AdminState, ns: &str, name: &str) -> Vec<serde_json::Value> {
    let view = s.aggregator.view().borrow().clone();
    let root = s.xds.root_namespace();
    let needle = format!("~{name}.{ns}~");
    s.xds
        .connections()
        .into_iter()
        .filter(|c| c.node_id.contains(&needle))
        .map(|c| {
            let namespace = c.namespace();
            let peer = sextant_core::rules::peer::select(
                &view.scopes,
                root,
                namespace.as_deref(),
                &c.identity.labels,
            );
            let authz: Vec<String> = sextant_core::rules::authz::select(
                &view.scopes,
                root,
                namespace.as_deref(),
                &c.identity.labels,
            )
            .iter()
            .map(|r| r.key.to_string())
            .collect();
            let mut v = serde_json::to_value(&c).unwrap_or_default();
            v["peer_authentication"] = serde_json::json!({
                "mode": peer.mode,
                "ports": peer.ports,
                "from": peer.from,
            });
            v["authorization_policies"] = serde_json::json!(authz);
            v
        })
        .collect()
}

#[derive(serde::Deserialize)]
struct DiffQuery {
    node: String,
}

/// How long a connection has to copy out what its client holds.
const DIFF_BOUND: std::time::Duration = std::time::Duration::from_secs(2);

async fn proxydiff(
    State(s): State<AdminState>,
    axum::extract::Query(q): axum::extract::Query<DiffQuery>,
) -> Response {
    use sextant_xds::server::diff::DiffError;
    match s.xds.proxy_diff(&q.node, DIFF_BOUND).await {
        Ok(diff) => json(serde_json::to_value(diff).unwrap_or_default()),
        Err(e) => {
            let status = match e {
                DiffError::NotConnected(_) => StatusCode::NOT_FOUND,
                DiffError::NoAnswer(..) => StatusCode::SERVICE_UNAVAILABLE,
            };
            (status, format!("{e}\n")).into_response()
        }
    }
}

async fn syncz(
    State(s): State<AdminState>,
    axum::extract::Query(q): axum::extract::Query<SynczQuery>,
) -> Response {
    let snapshot = s.xds.snapshot();
    let mut body = serde_json::json!({
        "snapshot": {
            "generation": snapshot.generation,
            "view_generation": snapshot.view_generation,
        },
        "connections": s.xds.connections(),
        "recent_nacks": s.xds.nacks(),
        "caches": s.xds.cache_sizes(),
    });
    // The view generation of a host's last change, in the newest view
    // (perhaps not yet in a snapshot): a proxy whose settled view
    // generation reaches it holds the host as Sextant knows it.
    let view = s.aggregator.view().borrow().clone();
    let target = |hosts: Vec<&sextant_core::MeshService>, changed_in: u64| {
        let mut receivers: Vec<String> = hosts
            .iter()
            .flat_map(|ms| s.xds.receivers(ms.service.hostname.as_str()))
            .map(|c| c.node_id)
            .collect();
        receivers.sort();
        receivers.dedup();
        serde_json::json!({
            "hosts": hosts.iter().map(|ms| ms.service.hostname.as_str()).collect::<Vec<_>>(),
            "changed_in": changed_in,
            // Whether the newest snapshot holds that change yet.
            "pushed": snapshot.view_generation >= changed_in,
            // The connections that receive it (by node id).
            "receivers": receivers,
        })
    };
    if let Some(host) = q.host {
        body["host"] = match view.services.get(host.as_str()) {
            Some(ms) => target(
                vec![&**ms],
                ms.config_generation.max(ms.endpoints_generation),
            ),
            None => serde_json::Value::Null,
        };
    }
    if let Some(pod) = q.pod {
        let (ns, name) = pod.split_once('/').unwrap_or(("default", pod.as_str()));
        body["pod"] = serde_json::json!(pod_connections(&s, ns, name));
    }
    // A route rule or destination policy: the hosts it binds to, as of the
    // newest of their changes (a rule change changes their configuration).
    if let Some(rule) = q.rule {
        let key = rule.splitn(3, '/').collect::<Vec<_>>();
        let wanted = match key[..] {
            [kind, ns, name] => format!("{kind} {ns}/{name}"),
            _ => String::new(),
        };
        let bound: Vec<&sextant_core::MeshService> = view
            .services
            .values()
            .filter(|ms| ms.all_rules().any(|r| r.key.to_string() == wanted))
            .map(|ms| &**ms)
            .collect();
        let per_proxy = view.scopes.iter().find(|r| r.key.to_string() == wanted);
        body["host"] = if let Some(rule) = per_proxy {
            // A per-proxy rule (PeerAuthentication, AuthorizationPolicy,
            // Sidecar): as of the last change of any of them, received by
            // the proxies of its namespace (every proxy, for the root's).
            let root = s.xds.root_namespace();
            let receivers: Vec<String> = s
                .xds
                .connections()
                .into_iter()
                .filter(|c| {
                    rule.key.namespace == root
                        || c.namespace().as_deref() == Some(rule.key.namespace.as_str())
                })
                .map(|c| c.node_id)
                .collect();
            serde_json::json!({
                "hosts": [],
                "changed_in": view.scopes_generation,
                "pushed": snapshot.view_generation >= view.scopes_generation,
                "receivers": receivers,
            })
        } else if bound.is_empty() {
            serde_json::Value::Null
        } else {
            let changed_in = bound
                .iter()
                .map(|ms| ms.config_generation)
                .max()
                .unwrap_or(0);
            target(bound, changed_in)
        };
    }
    json(body)
}

/// `?since=SEQ&limit=N` on /debug/events.
#[derive(serde::Deserialize)]
struct EventsQuery {
    #[serde(default)]
    since: u64,
    #[serde(default)]
    limit: Option<usize>,
}

/// Events returned at most per request.
const MAX_EVENTS: usize = 1000;

async fn events(
    State(s): State<AdminState>,
    axum::extract::Query(q): axum::extract::Query<EventsQuery>,
) -> Response {
    let journal = &s.xds.metrics().journal;
    let limit = q.limit.unwrap_or(200).min(MAX_EVENTS);
    json(serde_json::json!({
        "last": journal.last_seq(),
        "events": journal.since(q.since, limit),
    }))
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let body = render_metrics(&s);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
