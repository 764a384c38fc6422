//! A Kubernetes API server double: Services, EndpointSlices and Nodes in
//! memory, served on loopback over the real HTTP protocol. Tested against
//! `kubectl` (tests/k8s_double.rs), an independent client, so it cannot
//! drift into fiction.
//!
//! Served: discovery (`/version`, `/api`, `/api/v1`, `/apis`,
//! `/apis/discovery.k8s.io/v1`); get, list and watch of `services` and
//! `endpointslices` (all namespaces and per namespace) and `nodes`; get of
//! a namespace (implicit: one exists while an object is in it).
//!
//! Semantics kept: one `resourceVersion` counter for every write, on objects
//! and lists; `limit` and `continue` on lists; watches from a resource
//! version replay what happened after it, from none (or `0`) start with an
//! ADDED event per object; streaming newline-delimited events (ADDED,
//! MODIFIED, DELETED, BOOKMARK when `allowWatchBookmarks`); a watch from a
//! version older than the retained history gets an ERROR event with a
//! `410 Expired` Status, as the real server sends; `timeoutSeconds` ends a
//! watch; label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!`) and
//! field selectors (`metadata.name`, `metadata.namespace`); an object that
//! stops matching a watch's selector is sent as DELETED; `403 Forbidden`
//! Status for a resource configured to deny, worded like RBAC's.
//! Not kept: writes through the API (tests write with [`KubeDouble::apply`]),
//! protobuf, Table output (kubectl falls back to its default columns).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

/// The kinds the double serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `v1` `services`, namespaced.
    Service,
    /// `discovery.k8s.io/v1` `endpointslices`, namespaced.
    EndpointSlice,
    /// `v1` `nodes`, cluster-scoped.
    Node,
}

impl Kind {
    fn from_kind(kind: &str) -> Option<Kind> {
        match kind {
            "Service" => Some(Kind::Service),
            "EndpointSlice" => Some(Kind::EndpointSlice),
            "Node" => Some(Kind::Node),
            _ => None,
        }
    }

    /// The plural resource name, as in URLs and RBAC rules.
    pub fn resource(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
            Kind::Node => "nodes",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Node => "Node",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            _ => "v1",
        }
    }

    fn group(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "discovery.k8s.io",
            _ => "",
        }
    }
}

type Key = (Kind, String, String);

/// One write, kept for watches that resume from an older version.
#[derive(Clone)]
struct Change {
    rv: u64,
    kind: Kind,
    /// ADDED, MODIFIED or DELETED.
    event: &'static str,
    object: Value,
    /// The object before the change, for selectors it stopped matching.
    before: Option<Value>,
    /// Sent to every watch of `kind` as it is instead of an event line: a
    /// broken event, as a faulty server or proxy would send.
    raw: Option<Bytes>,
}

#[derive(Default)]
struct Store {
    rv: u64,
    uid: u64,
    objects: BTreeMap<Key, Value>,
    /// Changes after `history_from`, oldest first.
    history: Vec<Change>,
    /// Watches from a version below this get 410.
    history_from: u64,
}

struct Behaviour {
    deny: Vec<Kind>,
    bookmark_every: Duration,
    requests: Vec<String>,
    /// Watches are ended with a broken connection when this is bumped.
    generation: u64,
}

struct Shared {
    store: Mutex<Store>,
    behaviour: Mutex<Behaviour>,
    changed: watch::Sender<u64>,
    /// True while serving; watches end when it goes false.
    up: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running double. Dropping it stops the server.
pub struct KubeDouble {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for KubeDouble {
    fn drop(&mut self) {
        self.shared.up.send_replace(false);
        if let Some(t) = lock(&self.task).take() {
            t.abort();
        }
    }
}

impl KubeDouble {
    /// Starts an empty double on a free loopback port.
    pub async fn start() -> KubeDouble {
        let (listener, addr) = crate::peers::loopback_listener().await;
        let shared = Arc::new(Shared {
            store: Mutex::new(Store {
                rv: 100,
                history_from: 100,
                ..Default::default()
            }),
            behaviour: Mutex::new(Behaviour {
                deny: Vec::new(),
                bookmark_every: Duration::from_secs(1),
                requests: Vec::new(),
                generation: 0,
            }),
            changed: watch::channel(0).0,
            up: watch::channel(true).0,
        });
        let double = KubeDouble {
            addr,
            shared,
            task: Mutex::new(None),
        };
        double.serve(listener);
        double
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let shared = self.shared.clone();
        let app = router(shared.clone());
        let mut up = shared.up.subscribe();
        let task = tokio::spawn(async move {
            let stop = async move {
                let _ = up.wait_for(|up| !*up).await;
            };
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await;
        });
        *lock(&self.task) = Some(task);
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig with one cluster, user and context, each named
    /// `context`, pointing at this double; returns its path.
    pub fn kubeconfig(&self, dir: &FsPath, context: &str) -> PathBuf {
        KubeDouble::kubeconfig_for(dir, &[(self, context)])
    }

    /// Writes one kubeconfig with a context per double (named as given; the
    /// first is current), as for several clusters; returns its path.
    pub fn kubeconfig_for(dir: &FsPath, clusters: &[(&KubeDouble, &str)]) -> PathBuf {
        let mut text = String::from("apiVersion: v1\nkind: Config\n");
        if let Some((_, first)) = clusters.first() {
            text.push_str(&format!("current-context: {first}\n"));
        }
        text.push_str("clusters:\n");
        for (d, name) in clusters {
            text.push_str(&format!(
                "- name: {name}\n  cluster:\n    server: {}\n",
                d.url()
            ));
        }
        text.push_str("users:\n- name: double\n  user:\n    token: double-token\ncontexts:\n");
        for (_, name) in clusters {
            text.push_str(&format!(
                "- name: {name}\n  context:\n    cluster: {name}\n    user: double\n"
            ));
        }
        let names: Vec<&str> = clusters.iter().map(|(_, n)| *n).collect();
        let path = dir.join(format!("kubeconfig-{}", names.join("-")));
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write kubeconfig: {e}"));
        path
    }

    /// Stops serving: the port is closed and open watches break, as when the
    /// API server goes away. State is kept for [`KubeDouble::restart`].
    pub async fn stop(&self) {
        self.shared.up.send_replace(false);
        let task = lock(&self.task).take();
        if let Some(task) = task
            && tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
        {
            panic!("the kube double did not stop within 5 s");
        }
    }

    /// Serves again on the same port, with the same objects and history.
    pub async fn restart(&self) {
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("rebind {}: {e}", self.addr),
            }
        };
        self.shared.up.send_replace(true);
        self.serve(listener);
    }

    /// Answers list and watch of `kind` with 403 Forbidden (or stops).
    pub fn deny(&self, kind: Kind, deny: bool) {
        let mut b = lock(&self.shared.behaviour);
        b.deny.retain(|k| *k != kind);
        if deny {
            b.deny.push(kind);
        }
    }

    /// How often watches that asked for bookmarks get one (default 1 s).
    pub fn bookmark_every(&self, every: Duration) {
        lock(&self.shared.behaviour).bookmark_every = every;
    }

    /// Forgets the change history: watches from any version seen so far get
    /// `410 Gone`, as after etcd compaction. Open watches are broken so that
    /// their clients resume from a version that is now too old.
    pub fn compact(&self) {
        {
            let mut s = lock(&self.shared.store);
            s.history.clear();
            s.rv += 1;
            s.history_from = s.rv;
        }
        lock(&self.shared.behaviour).generation += 1;
        self.wake();
    }

    /// The requests served so far, as `METHOD PATH?QUERY`.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared.behaviour).requests.clone()
    }

    /// How many lists of `path` (e.g. `/api/v1/services`, watches aside)
    /// were started, and how many pages they took.
    pub fn lists(&self, path: &str) -> (usize, usize) {
        let prefix = format!("GET {path}?");
        let pages: Vec<String> = self
            .requests()
            .into_iter()
            .filter(|r| r.starts_with(&prefix) && !r.contains("watch="))
            .collect();
        let started = pages.iter().filter(|r| !r.contains("continue=")).count();
        (started, pages.len())
    }

    /// The current resource version.
    pub fn resource_version(&self) -> u64 {
        lock(&self.shared.store).rv
    }

    fn wake(&self) {
        self.shared.changed.send_modify(|n| *n += 1);
    }

    /// Creates or replaces an object given as Kubernetes JSON (or any value
    /// that serializes to it, such as a k8s-openapi type). The double sets
    /// `resourceVersion`, and `uid` and `creationTimestamp` when absent.
    pub fn apply(&self, object: impl serde::Serialize) {
        let mut object = serde_json::to_value(object).unwrap_or_else(|e| panic!("{e}"));
        let kind = object["kind"]
            .as_str()
            .and_then(Kind::from_kind)
            .unwrap_or_else(|| {
                panic!(
                    "the double serves Service, EndpointSlice and Node, not {}",
                    object["kind"]
                )
            });
        let key = key_of(kind, &object);
        {
            let mut s = lock(&self.shared.store);
            s.rv += 1;
            s.uid += 1;
            let rv = s.rv;
            let before = s.objects.get(&key).cloned();
            let meta = &mut object["metadata"];
            meta["resourceVersion"] = json!(rv.to_string());
            if meta.get("uid").is_none() {
                meta["uid"] = json!(match &before {
                    Some(b) => b["metadata"]["uid"].clone(),
                    None => json!(format!("00000000-0000-4000-8000-{:012}", s.uid)),
                });
            }
            if meta.get("creationTimestamp").is_none() {
                meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            let event = if before.is_some() {
                "MODIFIED"
            } else {
                "ADDED"
            };
            s.objects.insert(key, object.clone());
            s.history.push(Change {
                rv,
                kind,
                event,
                object,
                before,
                raw: None,
            });
        }
        self.wake();
    }

    /// Sends `line` (a newline is added) to every watch of `kind` as the
    /// next event, without changing any object: for broken watch events.
    pub fn send_raw_watch_line(&self, kind: Kind, line: &str) {
        {
            let mut s = lock(&self.shared.store);
            s.rv += 1;
            let rv = s.rv;
            s.history.push(Change {
                rv,
                kind,
                event: "MODIFIED",
                object: Value::Null,
                before: None,
                raw: Some(Bytes::from(format!("{line}\n"))),
            });
        }
        self.wake();
    }

    /// Deletes an object; deleting a missing one does nothing.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) {
        {
            let mut s = lock(&self.shared.store);
            let key = (kind, namespace.to_owned(), name.to_owned());
            let Some(mut object) = s.objects.remove(&key) else {
                return;
            };
            s.rv += 1;
            let rv = s.rv;
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            s.history.push(Change {
                rv,
                kind,
                event: "DELETED",
                object: object.clone(),
                before: Some(object),
                raw: None,
            });
        }
        self.wake();
    }
}

fn key_of(kind: Kind, object: &Value) -> Key {
    let meta = &object["metadata"];
    let name = meta["name"]
        .as_str()
        .unwrap_or_else(|| panic!("object without metadata.name: {object}"));
    let namespace = match kind {
        Kind::Node => "",
        _ => meta["namespace"].as_str().unwrap_or("default"),
    };
    (kind, namespace.to_owned(), name.to_owned())
}

fn router(shared: Arc<Shared>) -> Router {
    let api = |kind: Kind| {
        move |s: State<Arc<Shared>>,
              p: Path<HashMap<String, String>>,
              q: Query<HashMap<String, String>>| { collection(s, p, q, kind) }
    };
    Router::new()
        .route("/version", get(version))
        .route("/api", get(api_versions))
        .route("/api/v1", get(core_resources))
        .route("/apis", get(api_groups))
        .route("/apis/discovery.k8s.io/v1", get(discovery_resources))
        .route("/api/v1/services", get(api(Kind::Service)))
        .route(
            "/api/v1/namespaces/{namespace}/services",
            get(api(Kind::Service)),
        )
        .route(
            "/api/v1/namespaces/{namespace}/services/{name}",
            get(api(Kind::Service)),
        )
        .route("/api/v1/namespaces/{namespace}", get(namespace))
        .route("/api/v1/nodes", get(api(Kind::Node)))
        .route("/api/v1/nodes/{name}", get(api(Kind::Node)))
        .route(
            "/apis/discovery.k8s.io/v1/endpointslices",
            get(api(Kind::EndpointSlice)),
        )
        .route(
            "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
            get(api(Kind::EndpointSlice)),
        )
        .route(
            "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices/{name}",
            get(api(Kind::EndpointSlice)),
        )
        .fallback(|uri: axum::http::Uri| async move {
            status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("the server could not find the requested resource ({uri})"),
                None,
            )
        })
        .layer(axum::middleware::from_fn_with_state(shared.clone(), record))
        .with_state(shared)
}

async fn record(
    State(s): State<Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let line = format!("{} {}", req.method(), req.uri());
    lock(&s.behaviour).requests.push(line);
    next.run(req).await
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A `Status` object, the body of every API error.
fn status(code: StatusCode, reason: &str, message: &str, details: Option<Value>) -> Response {
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    if let Some(d) = details {
        body["details"] = d;
    }
    json_response(code, &body)
}

async fn version() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-sextant-double",
                "platform": "linux/amd64"}),
    )
}

async fn api_versions() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:443"}]}),
    )
}

fn resource_entry(kind: Kind, short: &[&str]) -> Value {
    json!({
        "name": kind.resource(), "singularName": kind.kind().to_ascii_lowercase(),
        "namespaced": kind != Kind::Node, "kind": kind.kind(),
        "verbs": ["get", "list", "watch"], "shortNames": short,
    })
}

async fn core_resources() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
            resource_entry(Kind::Service, &["svc"]), resource_entry(Kind::Node, &["no"]),
            {"name": "namespaces", "singularName": "namespace", "namespaced": false,
             "kind": "Namespace", "verbs": ["get"], "shortNames": ["ns"]}]}),
    )
}

async fn api_groups() -> Response {
    let v = json!({"groupVersion": "discovery.k8s.io/v1", "version": "v1"});
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": "discovery.k8s.io", "versions": [v.clone()], "preferredVersion": v}]}),
    )
}

async fn discovery_resources() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "discovery.k8s.io/v1",
                "resources": [resource_entry(Kind::EndpointSlice, &[])]}),
    )
}

/// Namespaces are implicit: one exists while an object lives in it. kubectl
/// reads it to word its "not found" errors.
async fn namespace(State(shared): State<Arc<Shared>>, Path(ns): Path<String>) -> Response {
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

/// A parsed label or field selector: every requirement must hold.
#[derive(Clone, Default)]
struct Selector(Vec<Requirement>);

#[derive(Clone)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

impl Selector {
    fn parse(text: &str) -> Result<Selector, String> {
        let mut reqs = Vec::new();
        // Split on commas outside parentheses.
        let mut parts = Vec::new();
        let (mut depth, mut start) = (0, 0);
        for (i, c) in text.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&text[start..]);
        for part in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
            let set = |s: &str| -> Result<Vec<String>, String> {
                let s = s.trim();
                let inner = s
                    .strip_prefix('(')
                    .and_then(|s| s.strip_suffix(')'))
                    .ok_or_else(|| format!("expected (values) in {part:?}"))?;
                Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
            };
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotIn(k.trim().into(), vec![v.trim().into()])
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement::In(k.trim().into(), vec![v.trim().into()])
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement::In(k.trim().into(), vec![v.trim().into()])
            } else if let Some((k, v)) = part.split_once(" notin ") {
                Requirement::NotIn(k.trim().into(), set(v)?)
            } else if let Some((k, v)) = part.split_once(" in ") {
                Requirement::In(k.trim().into(), set(v)?)
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::Absent(k.trim().into())
            } else if part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                Requirement::Exists(part.into())
            } else {
                return Err(format!("unable to parse requirement: {part:?}"));
            };
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }

    fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::In(k, vs) => get(k).is_some_and(|v| vs.contains(&v)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|v| !vs.contains(&v)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::Absent(k) => get(k).is_none(),
        })
    }
}

/// What one list or watch asks for.
#[derive(Clone)]
struct Filter {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
    labels: Selector,
    fields: Selector,
}

impl Filter {
    fn matches(&self, object: &Value) -> bool {
        let meta = &object["metadata"];
        let s = |v: &Value| v.as_str().map(str::to_owned);
        if let Some(ns) = &self.namespace
            && meta["namespace"].as_str() != Some(ns)
        {
            return false;
        }
        if let Some(name) = &self.name
            && meta["name"].as_str() != Some(name)
        {
            return false;
        }
        self.labels.matches(|k| s(&meta["labels"][k]))
            && self.fields.matches(|k| match k {
                "metadata.name" => s(&meta["name"]),
                "metadata.namespace" => s(&meta["namespace"]),
                _ => None,
            })
    }
}

async fn collection(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<HashMap<String, String>>,
    Query(query): Query<HashMap<String, String>>,
    kind: Kind,
) -> Response {
    let namespace = path.get("namespace").cloned();
    if lock(&shared.behaviour).deny.contains(&kind) {
        let verb = if is_true(query.get("watch")) {
            "watch"
        } else if path.contains_key("name") {
            "get"
        } else {
            "list"
        };
        let scope = match &namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".into(),
        };
        let message = format!(
            "{res} is forbidden: User \"system:serviceaccount:sextant:sextant\" cannot {verb} resource \"{res}\" in API group \"{group}\" {scope}",
            res = kind.resource(),
            group = kind.group()
        );
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &message,
            Some(json!({"kind": kind.resource()})),
        );
    }
    let parse = |name: &str| Selector::parse(query.get(name).map_or("", String::as_str));
    let (labels, fields) = match (parse("labelSelector"), parse("fieldSelector")) {
        (Ok(l), Ok(f)) => (l, f),
        (Err(e), _) | (_, Err(e)) => {
            return status(StatusCode::BAD_REQUEST, "BadRequest", &e, None);
        }
    };
    let filter = Filter {
        kind,
        namespace,
        name: path.get("name").cloned(),
        labels,
        fields,
    };
    if is_true(query.get("watch")) {
        return watch_response(shared, filter, &query);
    }
    let store = lock(&shared.store);
    if let Some(name) = &filter.name {
        let ns = filter.namespace.clone().unwrap_or_default();
        return match store.objects.get(&(kind, ns, name.clone())) {
            Some(o) => json_response(StatusCode::OK, o),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("{} \"{name}\" not found", kind.resource()),
                Some(json!({"name": name, "kind": kind.resource()})),
            ),
        };
    }
    let matching: Vec<&Value> = store
        .objects
        .iter()
        .filter(|((k, _, _), o)| *k == kind && filter.matches(o))
        .map(|(_, o)| o)
        .collect();
    let offset: usize = query
        .get("continue")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let end = offset.saturating_add(limit).min(matching.len());
    let items: Vec<Value> = matching[offset.min(end)..end]
        .iter()
        .map(|o| {
            // The real server leaves kind and apiVersion out of list items.
            let mut o = (*o).clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            o
        })
        .collect();
    let mut metadata = json!({"resourceVersion": store.rv.to_string()});
    if end < matching.len() {
        metadata["continue"] = json!(end.to_string());
        metadata["remainingItemCount"] = json!(matching.len() - end);
    }
    json_response(
        StatusCode::OK,
        &json!({"kind": format!("{}List", kind.kind()), "apiVersion": kind.api_version(),
                "metadata": metadata, "items": items}),
    )
}

fn is_true(v: Option<&String>) -> bool {
    matches!(v.map(String::as_str), Some("true" | "1"))
}

fn event_line(event: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": event, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn watch_response(
    shared: Arc<Shared>,
    filter: Filter,
    query: &HashMap<String, String>,
) -> Response {
    let from: Option<u64> = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .filter(|v| *v != 0);
    let bookmarks = is_true(query.get("allowWatchBookmarks"));
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(run_watch(shared, filter, from, bookmarks, timeout, tx));
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn run_watch(
    shared: Arc<Shared>,
    filter: Filter,
    from: Option<u64>,
    bookmarks: bool,
    timeout: Duration,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut changed = shared.changed.subscribe();
    let mut up = shared.up.subscribe();
    let generation = lock(&shared.behaviour).generation;
    let bookmark_every = lock(&shared.behaviour).bookmark_every;
    // Replay, or initial ADDED events for a watch without a version.
    let (lines, seen, expired) = {
        let store = lock(&shared.store);
        let mut lines = Vec::new();
        let mut expired = false;
        match from {
            Some(rv) if rv < store.history_from => {
                let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "reason": "Expired", "code": 410,
                    "message": format!("too old resource version: {rv} ({})", store.history_from)});
                lines.push(event_line("ERROR", &status));
                expired = true;
            }
            Some(_) => {}
            None => {
                for ((k, _, _), o) in &store.objects {
                    if *k == filter.kind && filter.matches(o) {
                        lines.push(event_line("ADDED", o));
                    }
                }
            }
        }
        (lines, from.unwrap_or(store.rv), expired)
    };
    let mut seen = seen;
    for l in lines {
        if tx.send(Ok(l)).await.is_err() {
            return;
        }
    }
    if expired {
        return;
    }
    let mut bookmark = tokio::time::interval(bookmark_every);
    bookmark.reset();
    loop {
        let (lines, rv) = {
            let store = lock(&shared.store);
            let mut lines = Vec::new();
            for c in store
                .history
                .iter()
                .filter(|c| c.rv > seen && c.kind == filter.kind)
            {
                if let Some(raw) = &c.raw {
                    lines.push(raw.clone());
                    continue;
                }
                let now = filter.matches(&c.object);
                let was = c.before.as_ref().is_some_and(|b| filter.matches(b));
                let event = match (c.event, now, was) {
                    ("DELETED", _, true) => "DELETED",
                    ("DELETED", _, false) => continue,
                    (_, true, true) => "MODIFIED",
                    (_, true, false) => "ADDED",
                    (_, false, true) => "DELETED",
                    (_, false, false) => continue,
                };
                lines.push(event_line(event, &c.object));
            }
            (lines, store.rv)
        };
        seen = rv;
        for l in lines {
            if tx.send(Ok(l)).await.is_err() {
                return;
            }
        }
        tokio::select! {
            _ = changed.changed() => {
                if lock(&shared.behaviour).generation != generation {
                    let _ = tx.send(Err(std::io::Error::other("watch broken by the double"))).await;
                    return;
                }
            }
            _ = async { let _ = up.wait_for(|up| !*up).await; } => {
                let _ = tx.send(Err(std::io::Error::other("the double stopped"))).await;
                return;
            }
            _ = bookmark.tick(), if bookmarks => {
                let object = json!({"kind": filter.kind.kind(), "apiVersion": filter.kind.api_version(),
                    "metadata": {"resourceVersion": seen.to_string(),
                                 "annotations": {"k8s.io/initial-events-end": "true"}}});
                if tx.send(Ok(event_line("BOOKMARK", &object))).await.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep_until(deadline) => return,
        }
    }
}

/// Builders for real-shaped objects, as k8s-openapi types.
pub mod objects {
    use k8s_openapi::api::core::v1::{Node, Service, ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{
        Endpoint, EndpointConditions, EndpointPort, EndpointSlice,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn meta(namespace: Option<&str>, name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: namespace.map(Into::into),
            labels: (!labels.is_empty()).then(|| {
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>()
            }),
            ..Default::default()
        }
    }

    /// A ClusterIP Service with `(name, port, target port)` TCP ports.
    pub fn service(namespace: &str, name: &str, ports: &[(&str, i32, i32)]) -> Service {
        Service {
            metadata: meta(Some(namespace), name, &[("app", name)]),
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                cluster_ip: Some("10.96.0.10".into()),
                cluster_ips: Some(vec!["10.96.0.10".into()]),
                selector: Some([("app".to_owned(), name.to_owned())].into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p, t)| ServicePort {
                            name: (!n.is_empty()).then(|| (*n).to_owned()),
                            port: *p,
                            protocol: Some("TCP".into()),
                            target_port: Some(
                                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(*t),
                            ),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// A ready endpoint on `node` in `zone`.
    pub fn endpoint(ip: &str, node: Option<&str>, zone: Option<&str>) -> Endpoint {
        Endpoint {
            addresses: vec![ip.into()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            node_name: node.map(Into::into),
            zone: zone.map(Into::into),
            target_ref: None,
            ..Default::default()
        }
    }

    /// `endpoint` with conditions set: what the EndpointSlice controller
    /// writes for a pod that is shutting down (`ready` false, `terminating`
    /// true) or failing its readiness probe (`ready` and `serving` false).
    pub fn with_conditions(
        mut e: Endpoint,
        ready: bool,
        serving: bool,
        terminating: bool,
    ) -> Endpoint {
        e.conditions = Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        });
        e
    }

    /// An IPv4 EndpointSlice of `service` with `(port name, number)` ports.
    pub fn slice(
        namespace: &str,
        name: &str,
        service: &str,
        ports: &[(&str, i32)],
        endpoints: Vec<Endpoint>,
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: meta(
                Some(namespace),
                name,
                &[
                    ("kubernetes.io/service-name", service),
                    (
                        "endpointslice.kubernetes.io/managed-by",
                        "endpointslice-controller.k8s.io",
                    ),
                ],
            ),
            address_type: "IPv4".into(),
            endpoints,
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| EndpointPort {
                        name: Some((*n).to_owned()),
                        port: Some(*p),
                        protocol: Some("TCP".into()),
                        app_protocol: None,
                    })
                    .collect(),
            ),
        }
    }

    /// A Node with the well-known region and zone labels.
    pub fn node(name: &str, region: &str, zone: &str) -> Node {
        Node {
            metadata: meta(
                None,
                name,
                &[
                    ("topology.kubernetes.io/region", region),
                    ("topology.kubernetes.io/zone", zone),
                    ("kubernetes.io/hostname", name),
                ],
            ),
            ..Default::default()
        }
    }
}
