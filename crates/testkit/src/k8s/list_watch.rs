//! Lists (with `limit` and `continue`) and watches (replay, bookmarks,
//! `410 Expired`, selectors that stop matching).

use super::*;

pub(super) async fn collection(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<HashMap<String, String>>,
    Query(query): Query<HashMap<String, String>>,
    kind: Kind,
) -> Response {
    let namespace = path.get("namespace").cloned();
    if absent(&shared, kind) {
        return not_found(&axum::http::Uri::from_static(kind.resource()));
    }
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

pub(super) fn is_true(v: Option<&String>) -> bool {
    matches!(v.map(String::as_str), Some("true" | "1"))
}

pub(super) fn event_line(event: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": event, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

pub(super) fn watch_response(
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

pub(super) async fn run_watch(
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
