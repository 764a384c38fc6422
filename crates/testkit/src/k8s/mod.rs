//! A Kubernetes API server double: Services, EndpointSlices, Nodes, Pods,
//! Namespaces, MutatingWebhookConfigurations, and the CRD kinds Sextant
//! reads rules from (Istio's VirtualService, DestinationRule and Sidecar,
//! the Gateway API's HTTPRoute and GRPCRoute) in memory,
//! served on loopback over the real HTTP protocol. Tested against `kubectl`
//! (tests/k8s_double.rs), an independent client, so it cannot drift into
//! fiction.
//!
//! Served: discovery (`/version`, `/api`, `/api/v1`, `/apis`,
//! `/apis/GROUP`, `/apis/GROUP/v1`; a CRD group only once installed with
//! [`KubeDouble::install`]); get, list and watch of every kind (all
//! namespaces and per namespace); create, JSON merge patch and delete of
//! every kind, and merge patch of the routes' `status` subresource (see
//! `write.rs` for what is kept); get of a namespace (a stored one, or an
//! implicit one while an object is in it); mutating admission on creates:
//! the stored MutatingWebhookConfigurations' webhooks called over HTTPS
//! as the API server calls them (`admission.rs`).
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
//! Not kept: strategic merge patch (so `kubectl apply` of a changed
//! built-in object is refused with 415: tests delete and apply again) and
//! server-side apply, PUT, validating admission and schema validation
//! (kubectl runs with `--validate=false`), protobuf bodies (refused with
//! 415, as `kubectl create namespace` sends: tests apply namespaces as
//! YAML), Table output (kubectl falls back to its default columns).

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

mod admission;
mod discovery;
mod kinds;
mod kubectl;
mod list_watch;
pub mod objects;
mod selectors;
mod write;

pub use admission::json_patch;
pub use kinds::{Crd, Kind};
pub use kubectl::Kubectl;

use discovery::*;
use list_watch::*;
use selectors::*;
use write::*;

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
    /// TokenReview's answers: token -> (username, audiences it is for).
    tokens: HashMap<String, (String, Vec<String>)>,
    installed: Vec<Crd>,
    bookmark_every: Duration,
    requests: Vec<String>,
    /// Watches are ended with a broken connection when this is bumped.
    generation: u64,
    /// What each admission webhook call came to.
    calls: admission::Calls,
    /// Where Services resolve, for webhooks named by Service.
    services: HashMap<(String, String, u64), SocketAddr>,
    /// The minor version `/version` reports (1.MINOR).
    version_minor: u32,
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
                tokens: HashMap::new(),
                installed: Vec::new(),
                bookmark_every: Duration::from_secs(1),
                requests: Vec::new(),
                generation: 0,
                calls: Default::default(),
                services: HashMap::new(),
                version_minor: 33,
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
    /// `resourceVersion`, `generation` (bumped when `spec` changes), and
    /// `uid` and `creationTimestamp` when absent. Status is taken as given,
    /// as a controller's write would set it.
    pub fn apply(&self, object: impl serde::Serialize) {
        let object = serde_json::to_value(object).unwrap_or_else(|e| panic!("{e}"));
        let kind = object["kind"]
            .as_str()
            .and_then(|k| Kind::from_kind(k, object["apiVersion"].as_str().unwrap_or("")))
            .unwrap_or_else(|| panic!("the double does not serve kind {}", object["kind"]));
        lock(&self.shared.store).put(kind, object);
        self.wake();
    }

    /// Installs the CRDs of `crd`: its group appears in discovery and its
    /// kinds are served (objects applied before are kept).
    pub fn install(&self, crd: Crd) {
        let mut b = lock(&self.shared.behaviour);
        if !b.installed.contains(&crd) {
            b.installed.push(crd);
        }
    }

    /// Resolves the Service `namespace/name` port `port` to `addr`, as
    /// cluster DNS would, for webhooks named by Service.
    pub fn route_service(&self, namespace: &str, name: &str, port: u16, addr: SocketAddr) {
        lock(&self.shared.behaviour).services.insert(
            (namespace.to_owned(), name.to_owned(), u64::from(port)),
            addr,
        );
    }

    /// Makes `/version` report Kubernetes 1.`minor` (default 1.33).
    pub fn set_version(&self, minor: u32) {
        lock(&self.shared.behaviour).version_minor = minor;
    }

    /// What each admission webhook call came to, in order: (webhook name,
    /// `patched`, `allowed`, `denied: ...`, `failed: ...`, `failed,
    /// ignored: ...`).
    pub fn webhook_calls(&self) -> Vec<(String, String)> {
        lock(&self.shared.behaviour).calls.0.clone()
    }

    /// Makes TokenReview authenticate `token` as `username` (e.g.
    /// `system:serviceaccount:shop:web`) for `audiences` (empty: any).
    pub fn add_token(&self, token: &str, username: &str, audiences: &[&str]) {
        lock(&self.shared.behaviour).tokens.insert(
            token.to_owned(),
            (
                username.to_owned(),
                audiences.iter().map(|a| (*a).to_owned()).collect(),
            ),
        );
    }

    /// The object `namespace/name` of `kind` as stored, if any.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        let namespace = if kind.namespaced() { namespace } else { "" };
        lock(&self.shared.store)
            .objects
            .get(&(kind, namespace.to_owned(), name.to_owned()))
            .cloned()
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
        let namespace = if kind.namespaced() { namespace } else { "" };
        let deleted = lock(&self.shared.store).remove(kind, namespace, name);
        if deleted.is_some() {
            self.wake();
        }
    }
}

impl Store {
    /// Removes an object and records the change; returns it as it was.
    fn remove(&mut self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        let key = (kind, namespace.to_owned(), name.to_owned());
        let mut object = self.objects.remove(&key)?;
        self.rv += 1;
        let rv = self.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.history.push(Change {
            rv,
            kind,
            event: "DELETED",
            object: object.clone(),
            before: Some(object.clone()),
            raw: None,
        });
        Some(object)
    }

    /// Stores `object` (created or replaced) and records the change;
    /// returns it as stored.
    fn put(&mut self, kind: Kind, mut object: Value) -> Value {
        let key = key_of(kind, &object);
        self.rv += 1;
        self.uid += 1;
        let rv = self.rv;
        let before = self.objects.get(&key).cloned();
        if object.get("kind").is_none() {
            object["kind"] = json!(kind.kind());
            object["apiVersion"] = json!(kind.api_version());
        }
        let meta = &mut object["metadata"];
        meta["resourceVersion"] = json!(rv.to_string());
        if kind.namespaced() && meta.get("namespace").is_none() {
            meta["namespace"] = json!("default");
        }
        let old_meta = before.as_ref().map(|b| &b["metadata"]);
        if meta.get("uid").is_none() {
            meta["uid"] = match old_meta {
                Some(m) => m["uid"].clone(),
                None => json!(format!("00000000-0000-4000-8000-{:012}", self.uid)),
            };
        }
        if meta.get("creationTimestamp").is_none() {
            meta["creationTimestamp"] = match old_meta {
                Some(m) => m["creationTimestamp"].clone(),
                // Now, to the second, as the API server writes it: the
                // older of two objects can be told apart.
                None => json!(
                    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
                ),
            };
        }
        let generation = match &before {
            None => 1,
            Some(b) => {
                let g = b["metadata"]["generation"].as_u64().unwrap_or(1);
                if b.get("spec") == object.get("spec") {
                    g
                } else {
                    g + 1
                }
            }
        };
        object["metadata"]["generation"] = json!(generation);
        let event = if before.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.objects.insert(key, object.clone());
        self.history.push(Change {
            rv,
            kind,
            event,
            object: object.clone(),
            before,
            raw: None,
        });
        object
    }
}

fn key_of(kind: Kind, object: &Value) -> Key {
    let meta = &object["metadata"];
    let name = meta["name"]
        .as_str()
        .unwrap_or_else(|| panic!("object without metadata.name: {object}"));
    let namespace = match kind.namespaced() {
        false => "",
        true => meta["namespace"].as_str().unwrap_or("default"),
    };
    (kind, namespace.to_owned(), name.to_owned())
}

fn router(shared: Arc<Shared>) -> Router {
    use axum::routing::MethodRouter;
    let read = |kind: Kind| -> MethodRouter<Arc<Shared>> {
        get(
            move |s: State<Arc<Shared>>,
                  p: Path<HashMap<String, String>>,
                  q: Query<HashMap<String, String>>| { collection(s, p, q, kind) },
        )
    };
    let mut router = Router::new()
        .route("/version", get(version))
        .route("/api", get(api_versions))
        .route("/api/v1", get(core_resources))
        .route("/apis", get(api_groups))
        .route("/apis/{group}", get(api_group))
        .route("/apis/{group}/{version}", get(group_resources))
        .route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            axum::routing::post(token_review),
        );
    for kind in Kind::ALL {
        let base = kind.base();
        let res = kind.resource();
        let create_here = move |s: State<Arc<Shared>>, p, h, b: Bytes| create(s, p, h, b, kind);
        if kind == Kind::Namespace {
            // `/api/v1/namespaces/{namespace}` is both a namespace and the
            // prefix of every namespaced URL: the router wants one name.
            router = router
                .route(&format!("{base}/{res}"), read(kind).post(create_here))
                .route(
                    &format!("{base}/{res}/{{namespace}}"),
                    get(namespace)
                        .patch(move |s: State<Arc<Shared>>, p, h, b: Bytes| {
                            patch(s, p, h, b, kind, false)
                        })
                        .delete(move |s: State<Arc<Shared>>, p| remove(s, p, kind)),
                );
            continue;
        }
        if !kind.namespaced() {
            router = router
                .route(&format!("{base}/{res}"), read(kind).post(create_here))
                .route(
                    &format!("{base}/{res}/{{name}}"),
                    read(kind)
                        .patch(move |s: State<Arc<Shared>>, p, h, b: Bytes| {
                            patch(s, p, h, b, kind, false)
                        })
                        .delete(move |s: State<Arc<Shared>>, p| remove(s, p, kind)),
                );
            if kind.has_status() {
                router = router.route(
                    &format!("{base}/{res}/{{name}}/status"),
                    read(kind).patch(move |s: State<Arc<Shared>>, p, h, b: Bytes| {
                        patch(s, p, h, b, kind, true)
                    }),
                );
            }
            continue;
        }
        let ns = format!("{base}/namespaces/{{namespace}}/{res}");
        router = router
            .route(&format!("{base}/{res}"), read(kind))
            .route(&ns, read(kind).post(create_here))
            .route(
                &format!("{ns}/{{name}}"),
                read(kind)
                    .patch(move |s: State<Arc<Shared>>, p, h, b: Bytes| {
                        patch(s, p, h, b, kind, false)
                    })
                    .delete(move |s: State<Arc<Shared>>, p| remove(s, p, kind)),
            );
        if kind.has_status() {
            router = router.route(
                &format!("{ns}/{{name}}/status"),
                read(kind).patch(move |s: State<Arc<Shared>>, p, h, b: Bytes| {
                    patch(s, p, h, b, kind, true)
                }),
            );
        }
    }
    router
        .fallback(|uri: axum::http::Uri| async move { not_found(&uri) })
        .layer(axum::middleware::from_fn_with_state(shared.clone(), record))
        .with_state(shared)
}

fn not_found(uri: &axum::http::Uri) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("the server could not find the requested resource ({uri})"),
        None,
    )
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
