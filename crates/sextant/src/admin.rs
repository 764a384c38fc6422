//! Admin HTTP: readiness, Prometheus metrics and debug endpoints (Pilot's
//! names, so operators find them where they expect).
//!
//! | path | what |
//! |---|---|
//! | `/healthz/ready` | 200 once serving, 503 (saying why) before |
//! | `/metrics` | Prometheus text |
//! | `/debug/registryz` | each registry and rule source: state, last sync, staleness, counts (services, endpoints, routes, policies), last error, problems; conflicts (rule conflicts too) |
//! | `/debug/configz` | the merged view, JSON; each rule in force with the services it is bound to, and `check-config`'s warnings about them |
//! | `/debug/syncz` | each connected proxy: node, protocol, client kind, rule features it cannot honour, per type sent/acked versions, last NACK; recent NACKs |
//! | `/` | a page for people: registries, proxies and their sync state, conflicts, NACKs, events (HTML, refreshing itself) |
//! | `/debug/events` | what happened, in order: registries synced, stale, recovered, dropped; new conflicts; pushes; NACKs (`?since=SEQ&limit=N`) |

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sextant_aggregate::{AggregatorHandle, SyncState};
use sextant_xds::server::status::Histogram;
use sextant_xds::{Metrics, ResourceType, XdsServer};

pub mod listener;
mod page;

/// Metric families from parts of a program the admin module does not know
/// (the injection audit, an embedder's own), appended to `/metrics`.
pub trait MetricsSource: Send + Sync + 'static {
    /// Appends Prometheus text: `# HELP`, `# TYPE` and samples.
    fn render(&self, out: &mut String);
}

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    aggregator: AggregatorHandle,
    xds: XdsServer,
    listener: Arc<listener::ListenerStats>,
    /// When set, `/debug/*` needs `Authorization: Bearer TOKEN`.
    token: Option<sextant_core::Secret>,
    /// More metric families.
    sources: Vec<Arc<dyn MetricsSource>>,
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
        }
    }

    /// Appends `sources`' metric families to `/metrics`.
    pub fn with_metrics(mut self, sources: Vec<Arc<dyn MetricsSource>>) -> Self {
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
    let debug = Router::new()
        .route("/debug/registryz", get(registryz))
        .route("/debug/configz", get(configz))
        .route("/debug/syncz", get(syncz))
        .route("/debug/events", get(events))
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
        for rule in &ms.rules {
            bound
                .entry(&rule.key)
                .or_insert_with(|| (rule, Vec::new()))
                .1
                .push(ms.service.hostname.as_str());
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
            .filter(|ms| ms.rules.iter().any(|r| r.key.to_string() == wanted))
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
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Prom(String);

impl Prom {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect();
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{}}} {value}", labels.join(","));
        }
    }
    fn counter(&mut self, name: &str, help: &str, value: &AtomicU64) {
        self.family(name, "counter", help);
        self.sample(name, &[], Metrics::get(value));
    }
    fn per_type(&mut self, name: &str, kind: &str, help: &str, values: &[AtomicU64; 4]) {
        self.family(name, kind, help);
        for t in ResourceType::ALL {
            self.sample(
                name,
                &[("type", t.short())],
                Metrics::get(&values[t.index()]),
            );
        }
    }
    fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.family(name, "histogram", help);
        self.histogram_samples(name, &[], h);
    }
    fn histogram_samples(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let (buckets, sum, count) = h.read();
        for (bound, n) in buckets {
            let bound = bound.to_string();
            let mut with = labels.to_vec();
            with.push(("le", &bound));
            self.sample(&format!("{name}_bucket"), &with, n);
        }
        let mut with = labels.to_vec();
        with.push(("le", "+Inf"));
        self.sample(&format!("{name}_bucket"), &with, count);
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, count);
    }
}

/// The Prometheus text exposition of every metric.
pub fn render_metrics(s: &AdminState) -> String {
    let status = s.aggregator.status().borrow().clone();
    let m = s.xds.metrics();
    let mut p = Prom(String::new());

    p.family(
        "sextant_ready",
        "gauge",
        "1 once the merged view is being served.",
    );
    p.sample("sextant_ready", &[], u8::from(status.ready));
    p.family("sextant_services", "gauge", "Services in the merged view.");
    p.sample("sextant_services", &[], status.services);
    p.family(
        "sextant_endpoints",
        "gauge",
        "Endpoints in the merged view.",
    );
    p.sample("sextant_endpoints", &[], status.endpoints);
    p.family(
        "sextant_conflicts",
        "gauge",
        "Disagreements between registries about a service.",
    );
    p.sample("sextant_conflicts", &[], status.conflicts);
    p.family(
        "sextant_dropped_endpoints",
        "gauge",
        "Endpoints of a registry not served because they match none of the service's ports (see /debug/registryz).",
    );
    let view = s.aggregator.view().borrow().clone();
    for c in view
        .conflicts
        .iter()
        .filter(|c| c.field == sextant_core::ConflictField::DroppedEndpoints)
    {
        p.sample(
            "sextant_dropped_endpoints",
            &[
                ("service", c.hostname.as_str()),
                ("registry", c.other.as_str()),
            ],
            c.endpoints_dropped,
        );
    }
    p.family(
        "sextant_rule_conflicts",
        "gauge",
        "Rules ignored for a service because another rule of the same kind is in force there (see /debug/registryz).",
    );
    let mut rule_conflicts: std::collections::BTreeMap<(&str, &str, &str), u64> =
        Default::default();
    for c in view.conflicts.iter() {
        let kind = match c.field {
            sextant_core::ConflictField::RouteRule => "route",
            sextant_core::ConflictField::DestinationPolicy => "policy",
            _ => continue,
        };
        *rule_conflicts
            .entry((c.hostname.as_str(), c.other.as_str(), kind))
            .or_default() += 1;
    }
    for ((service, registry, kind), n) in rule_conflicts {
        p.sample(
            "sextant_rule_conflicts",
            &[("service", service), ("registry", registry), ("kind", kind)],
            n,
        );
    }

    p.family(
        "sextant_registry_state",
        "gauge",
        "1 for the registry's current state (syncing, synced, stale, dropped).",
    );
    for r in &status.registries {
        for (state, name) in [
            (SyncState::Syncing, "syncing"),
            (SyncState::Synced, "synced"),
            (SyncState::Stale, "stale"),
            (SyncState::Dropped, "dropped"),
        ] {
            p.sample(
                "sextant_registry_state",
                &[
                    ("registry", r.id.as_str()),
                    ("kind", kind_label(r)),
                    ("state", name),
                ],
                u8::from(r.state == state),
            );
        }
    }
    p.family(
        "sextant_registry_stale_seconds",
        "gauge",
        "How long the registry has been stale; 0 when it is not.",
    );
    let now = std::time::SystemTime::now();
    for r in &status.registries {
        let stale = r
            .stale_since
            .and_then(|t| now.duration_since(t).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        p.sample(
            "sextant_registry_stale_seconds",
            &[("registry", r.id.as_str()), ("kind", kind_label(r))],
            stale,
        );
    }
    for (name, help, get) in [
        (
            "sextant_registry_services",
            "Services the registry contributes.",
            (|r: &sextant_aggregate::RegistryStatus| r.services as u64) as fn(&_) -> u64,
        ),
        (
            "sextant_registry_endpoints",
            "Endpoints the registry contributes.",
            |r| r.endpoints as u64,
        ),
        (
            "sextant_registry_problems",
            "Objects of the registry currently rejected.",
            |r| r.problems.len() as u64,
        ),
        (
            "sextant_registry_events_total",
            "Events received from the registry.",
            |r| r.events_total,
        ),
        (
            "sextant_registry_errors_total",
            "Errors reported by the registry.",
            |r| r.errors_total,
        ),
        (
            "sextant_registry_rejected_total",
            "Services from the registry that failed validation.",
            |r| r.rejected_total,
        ),
    ] {
        p.family(
            name,
            if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            },
            help,
        );
        for r in &status.registries {
            p.sample(
                name,
                &[("registry", r.id.as_str()), ("kind", kind_label(r))],
                get(r),
            );
        }
    }

    p.family(
        "sextant_xds_connections",
        "gauge",
        "Connected proxies and clients.",
    );
    p.sample(
        "sextant_xds_connections",
        &[],
        Metrics::get(&m.connections_active),
    );
    // Proxies by client kind and by whether they hold the newest
    // configuration (what `sextant status` shows, for dashboards).
    p.family(
        "sextant_xds_proxies",
        "gauge",
        "Connected proxies by client kind and sync state (CURRENT: caught up with the newest snapshot and acknowledged all of it).",
    );
    let mut by: std::collections::BTreeMap<(String, &str), u64> = Default::default();
    for client in ["envoy", "grpc"] {
        for sync in ["CURRENT", "BEHIND"] {
            by.insert((client.to_owned(), sync), 0);
        }
    }
    for c in s.xds.connections() {
        let sync = match c.sync {
            sextant_xds::server::ProxySync::Current => "CURRENT",
            sextant_xds::server::ProxySync::Behind => "BEHIND",
        };
        *by.entry((c.client.as_str().to_owned(), sync)).or_default() += 1;
    }
    for ((client, sync), n) in by {
        p.sample(
            "sextant_xds_proxies",
            &[("client", &client), ("sync", sync)],
            n,
        );
    }
    p.family(
        "sextant_xds_tcp_connections",
        "gauge",
        "TCP connections open on the xDS port.",
    );
    p.sample(
        "sextant_xds_tcp_connections",
        &[],
        Metrics::get(&m.tcp_connections_active),
    );
    p.counter(
        "sextant_xds_connections_refused_total",
        "xDS connections closed at once because the maximum was open.",
        &m.connections_refused_total,
    );
    p.counter(
        "sextant_xds_handshake_timeouts_total",
        "xDS connections closed because no HTTP/2 preface came within the handshake timeout.",
        &m.handshake_timeouts_total,
    );
    p.counter(
        "sextant_xds_accept_errors_total",
        "Failed accepts on the xDS port (out of file descriptors, for one).",
        &m.accept_errors_total,
    );
    p.counter(
        "sextant_xds_tls_handshake_failures_total",
        "TLS handshakes on the xDS TLS port that failed or timed out.",
        &m.tls_handshake_failures_total,
    );
    p.counter(
        "sextant_xds_tls_reloads_total",
        "Times changed TLS certificate files were loaded.",
        &m.tls_reloads_total,
    );
    p.counter(
        "sextant_xds_tls_reload_failures_total",
        "Times changed TLS certificate files did not load (the previous ones kept serving).",
        &m.tls_reload_failures_total,
    );
    p.counter(
        "sextant_xds_identity_refused_total",
        "xDS streams refused: the node claimed another namespace than its certificate, or proved no identity where one is required.",
        &m.identity_refused_total,
    );
    p.counter(
        "sextant_admin_connections_refused_total",
        "Admin connections closed at once because the maximum was open.",
        &s.listener.refused_total,
    );
    p.counter(
        "sextant_admin_connections_timed_out_total",
        "Admin connections closed idle or at the end of their lifetime.",
        &s.listener.timed_out_total,
    );
    let mut unhonoured: std::collections::BTreeMap<(String, String, &'static str), u64> =
        Default::default();
    for c in s.xds.connections() {
        for u in c.unhonoured {
            let rule = format!("{}/{}", u.rule.namespace, u.rule.name);
            *unhonoured
                .entry((rule, u.feature, u.client.as_str()))
                .or_default() += 1;
        }
    }
    let name = "sextant_xds_rule_features_unhonoured";
    p.family(
        name,
        "gauge",
        "Connected clients that cannot honour a feature of a rule bound to a service they use (the feature is left out of what they receive; /debug/syncz names them).",
    );
    for ((rule, feature, client), n) in &unhonoured {
        p.sample(
            name,
            &[("rule", rule), ("feature", feature), ("client", client)],
            n,
        );
    }
    let caches = s.xds.cache_sizes();
    for (name, help, value) in [
        (
            "sextant_xds_subscriptions_cached",
            "SotW subscriptions shared between connections (released with their last user).",
            caches.subscriptions,
        ),
        (
            "sextant_xds_subscription_names_cached",
            "Names held by the shared SotW subscriptions.",
            caches.subscription_names,
        ),
        (
            "sextant_xds_plans_cached",
            "Plans cached for the current snapshot (bounded).",
            caches.plans,
        ),
        (
            "sextant_xds_plan_names_cached",
            "Subscribed names held by the cached plans (bounded).",
            caches.plan_names,
        ),
    ] {
        p.family(name, "gauge", help);
        p.sample(name, &[], value);
    }
    p.counter(
        "sextant_xds_connections_total",
        "Connections accepted.",
        &m.connections_total,
    );
    p.per_type(
        "sextant_xds_responses_total",
        "counter",
        "Responses sent.",
        &m.responses_total,
    );
    p.per_type(
        "sextant_xds_resources_sent_total",
        "counter",
        "Resources sent in responses.",
        &m.resources_sent_total,
    );
    p.per_type(
        "sextant_xds_nacks_total",
        "counter",
        "Responses rejected by a client.",
        &m.nacks_total,
    );
    p.counter(
        "sextant_xds_bytes_sent_total",
        "Bytes of responses sent.",
        &m.bytes_sent_total,
    );
    p.counter(
        "sextant_xds_stale_nonces_total",
        "Requests whose nonce was stale.",
        &m.stale_nonces_total,
    );
    p.counter(
        "sextant_xds_unknown_type_requests_total",
        "Requests for types Sextant does not serve.",
        &m.unknown_type_requests_total,
    );
    p.counter(
        "sextant_xds_ack_timeouts_total",
        "Responses never acknowledged within the timeout.",
        &m.ack_timeouts_total,
    );
    p.counter(
        "sextant_xds_plans_computed_total",
        "A connection's next response computed by the connection itself.",
        &m.plans_computed_total,
    );
    p.counter(
        "sextant_xds_plans_shared_total",
        "A connection's next response taken from a connection in the same state.",
        &m.plans_shared_total,
    );
    p.counter(
        "sextant_xds_pushes_total",
        "Snapshots built and pushed (coalesced changes).",
        &m.snapshots_total,
    );
    p.counter(
        "sextant_xds_endpoint_only_pushes_total",
        "Pushes that carried endpoint changes only.",
        &m.endpoint_only_snapshots_total,
    );
    p.counter(
        "sextant_xds_resources_encoded_total",
        "Resources encoded (each once per version).",
        &m.resources_encoded_total,
    );
    p.histogram(
        "sextant_xds_push_latency_seconds",
        "From the first change of a batch to its push.",
        &m.push_latency,
    );
    p.histogram(
        "sextant_xds_ack_latency_seconds",
        "From a response to its ACK or NACK.",
        &m.ack_latency,
    );
    p.family(
        "sextant_xds_convergence_seconds",
        "histogram",
        "Per type: from the first change a response carries reaching the publisher to the client's ACK of it.",
    );
    for t in ResourceType::ALL {
        p.histogram_samples(
            "sextant_xds_convergence_seconds",
            &[("type", t.short())],
            &m.convergence[t.index()],
        );
    }
    for source in &s.sources {
        source.render(&mut p.0);
    }
    p.0
}

/// `services` or `rules`: one registry id may be both (the file registry
/// is), so every per-registry series carries it, or two would collide.
fn kind_label(r: &sextant_aggregate::RegistryStatus) -> &'static str {
    match r.kind {
        sextant_aggregate::SourceKind::Services => "services",
        sextant_aggregate::SourceKind::Rules => "rules",
    }
}
