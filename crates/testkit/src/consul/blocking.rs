//! Blocking queries: `index` and `wait` (with Consul's jitter), the token
//! check and the failures a test injects.

use super::*;

#[derive(serde::Deserialize, Default)]
pub(super) struct QueryParams {
    pub(super) index: Option<u64>,
    pub(super) wait: Option<String>,
    pub(super) passing: Option<String>,
    pub(super) token: Option<String>,
    pub(super) enable: Option<String>,
    pub(super) reason: Option<String>,
    pub(super) note: Option<String>,
}

/// Checks the token and failure injection; logs the request.
pub(super) fn admit(s: &Shared, what: String, q: &QueryParams, h: &HeaderMap) -> Option<Response> {
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

pub(super) fn parse_wait(wait: Option<&str>) -> Duration {
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
pub(super) async fn blocking(
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
