//! Config entries: `PUT /v1/config` (create or replace, `cas` honoured),
//! `GET /v1/config/KIND` (every entry of a kind, blocking on the kind's
//! index), `GET /v1/config/KIND/NAME` (404 when absent) and
//! `DELETE /v1/config/KIND/NAME`. Entries come back as written, with
//! `CreateIndex` and `ModifyIndex`.

use super::*;

/// Config entries by (kind, name), and each kind's index.
#[derive(Default)]
pub(super) struct ConfigEntries {
    pub(super) entries: BTreeMap<(String, String), (Value, u64, u64)>,
    pub(super) kind_index: BTreeMap<String, u64>,
}

impl Catalog {
    /// Writes an entry (create or replace); false when `cas` does not match.
    pub(super) fn set_config(
        &mut self,
        mut entry: Value,
        cas: Option<u64>,
    ) -> Result<bool, String> {
        let field = |v: &Value, k: &str| {
            v.get(k)
                .or_else(|| v.get(k.to_ascii_lowercase()))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let kind = field(&entry, "Kind").ok_or("config entry without Kind")?;
        let name = field(&entry, "Name").ok_or("config entry without Name")?;
        let key = (kind.clone(), name);
        let created = self.config.entries.get(&key).map(|e| e.1);
        if let Some(cas) = cas
            && self.config.entries.get(&key).map_or(0, |e| e.2) != cas
        {
            return Ok(false);
        }
        self.index += 1;
        let index = self.index;
        if let Some(map) = entry.as_object_mut() {
            map.remove("CreateIndex");
            map.remove("ModifyIndex");
        }
        self.config
            .entries
            .insert(key, (entry, created.unwrap_or(index), index));
        self.config.kind_index.insert(kind, index);
        Ok(true)
    }

    /// Deletes an entry; true if there was one.
    pub(super) fn delete_config(&mut self, kind: &str, name: &str) -> bool {
        if self
            .config
            .entries
            .remove(&(kind.to_owned(), name.to_owned()))
            .is_none()
        {
            return false;
        }
        self.index += 1;
        self.config.kind_index.insert(kind.to_owned(), self.index);
        true
    }

    fn render(entry: &(Value, u64, u64)) -> Value {
        let mut v = entry.0.clone();
        if let Some(map) = v.as_object_mut() {
            map.insert("CreateIndex".into(), json!(entry.1));
            map.insert("ModifyIndex".into(), json!(entry.2));
        }
        v
    }

    pub(super) fn config_of_kind(&self, kind: &str) -> Value {
        Value::Array(
            self.config
                .entries
                .iter()
                .filter(|((k, _), _)| k == kind)
                .map(|(_, e)| Self::render(e))
                .collect(),
        )
    }

    pub(super) fn config_index(&self, kind: &str) -> u64 {
        // Consul's index for a kind never seen is the store's: a blocking
        // query on it waits for the first write of that kind.
        self.config.kind_index.get(kind).copied().unwrap_or(1)
    }
}

#[derive(serde::Deserialize, Default)]
pub(super) struct CasParam {
    cas: Option<u64>,
}

pub(super) async fn config_set(
    State(s): State<Arc<Shared>>,
    Query(q): Query<QueryParams>,
    Query(cas): Query<CasParam>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = admit(&s, "PUT /v1/config".into(), &q, &h) {
        return r;
    }
    let entry = match parse_body(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(e),
    };
    let result = lock(&s.catalog).set_config(entry, cas.cas);
    match result {
        Ok(done) => {
            s.changed.send_modify(|i| *i += 1);
            axum::Json(done).into_response()
        }
        Err(e) => bad_request(e),
    }
}

pub(super) async fn config_list(
    State(s): State<Arc<Shared>>,
    Path(kind): Path<String>,
    Query(q): Query<QueryParams>,
    h: HeaderMap,
) -> Response {
    if let Some(r) = admit(&s, format!("GET /v1/config/{kind}"), &q, &h) {
        return r;
    }
    let refused = lock(&s.behaviour).config_entries_refused.clone();
    if let Some((status, body)) = refused {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::NOT_FOUND);
        return (status, body).into_response();
    }
    let index_kind = kind.clone();
    blocking(
        &s,
        &q,
        move |c| c.config_index(&index_kind),
        move |c| c.config_of_kind(&kind),
    )
    .await
}

pub(super) async fn config_get(
    State(s): State<Arc<Shared>>,
    Path((kind, name)): Path<(String, String)>,
    Query(q): Query<QueryParams>,
    h: HeaderMap,
) -> Response {
    if let Some(r) = admit(&s, format!("GET /v1/config/{kind}/{name}"), &q, &h) {
        return r;
    }
    let c = lock(&s.catalog);
    match c.config.entries.get(&(kind.clone(), name.clone())) {
        Some(e) => {
            let mut resp = axum::Json(Catalog::render(e)).into_response();
            resp.headers_mut()
                .insert("X-Consul-Index", HeaderValue::from(c.config_index(&kind)));
            resp
        }
        None => (
            StatusCode::NOT_FOUND,
            format!("Config entry not found for {kind:?} / {name:?}"),
        )
            .into_response(),
    }
}

pub(super) async fn config_delete(
    State(s): State<Arc<Shared>>,
    Path((kind, name)): Path<(String, String)>,
    Query(q): Query<QueryParams>,
    h: HeaderMap,
) -> Response {
    if let Some(r) = admit(&s, format!("DELETE /v1/config/{kind}/{name}"), &q, &h) {
        return r;
    }
    lock(&s.catalog).delete_config(&kind, &name);
    s.changed.send_modify(|i| *i += 1);
    axum::Json(true).into_response()
}
