//! The webhook's answer to one `AdmissionReview` (`admission.k8s.io/v1`):
//! a Pod being created gets the proxy through the same renderer as `sextant
//! inject -f`, sent back as a JSON Patch (RFC 6902) against the pod the API
//! server sent. Anything else is allowed unchanged.
//!
//! The patch replaces each changed member of `metadata` and `spec` whole
//! (an `add` of an existing member replaces it, RFC 6902 section 4.1), so
//! applying it to the request's object gives exactly the pod the renderer
//! made: the CLI's and the webhook's pods are equal field for field.

use base64::Engine;
use serde_json::{Value, json};

use crate::render::{Outcome, inject};
use crate::template::Template;

/// The largest AdmissionReview read (the API server's own limit on an
/// object is about 3 MiB).
pub const MAX_REVIEW_BYTES: usize = 8 << 20;

/// RFC 6901's escaping of one path segment.
fn segment(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// The JSON Patch that turns `before` into `after`, member by member of
/// `metadata` and `spec`.
pub fn patch(before: &Value, after: &Value) -> Vec<Value> {
    let mut ops = Vec::new();
    for top in ["metadata", "spec"] {
        let (b, a) = (&before[top], &after[top]);
        if b == a {
            continue;
        }
        let (Some(b), Some(a)) = (b.as_object(), a.as_object()) else {
            ops.push(json!({"op": "add", "path": format!("/{top}"), "value": a}));
            continue;
        };
        for (k, v) in a {
            if b.get(k) != Some(v) {
                ops.push(
                    json!({"op": "add", "path": format!("/{top}/{}", segment(k)), "value": v}),
                );
            }
        }
        for k in b.keys().filter(|k| !a.contains_key(*k)) {
            ops.push(json!({"op": "remove", "path": format!("/{top}/{}", segment(k))}));
        }
    }
    ops
}

/// What the webhook decided for one review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The AdmissionReview to answer with.
    pub response: Value,
    /// What happened to the pod (`None`: not a pod being created).
    pub outcome: Option<Outcome>,
    /// Names the object, for logs.
    pub object: String,
}

/// Answers `review` (an AdmissionReview's JSON): the pod injected as a
/// patch, or allowed as it is. Errors are reviews that cannot be read.
pub fn review(review: &Value, t: &Template, native: bool) -> Result<Decision, String> {
    let request = review
        .get("request")
        .filter(|r| r.is_object())
        .ok_or("an AdmissionReview without a request")?;
    let uid = request["uid"]
        .as_str()
        .ok_or("an AdmissionReview request without a uid")?;
    let object = format!(
        "{} {}/{}",
        request["kind"]["kind"].as_str().unwrap_or("?"),
        request["namespace"].as_str().unwrap_or(""),
        request["object"]["metadata"]["name"]
            .as_str()
            .or_else(|| request["object"]["metadata"]["generateName"].as_str())
            .unwrap_or("")
    );
    let allow = |patch: Option<Vec<Value>>| {
        let mut response = json!({"uid": uid, "allowed": true});
        if let Some(ops) = patch.filter(|p| !p.is_empty()) {
            let bytes = serde_json::to_vec(&ops).unwrap_or_default();
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
        }
        json!({
            "apiVersion": review["apiVersion"].as_str().unwrap_or("admission.k8s.io/v1"),
            "kind": "AdmissionReview",
            "response": response,
        })
    };
    let is_pod = request["kind"]["kind"] == "Pod"
        && request["kind"]["group"].as_str().unwrap_or("").is_empty()
        && request["operation"] == "CREATE";
    if !is_pod || !request["object"].is_object() {
        return Ok(Decision {
            response: allow(None),
            outcome: None,
            object,
        });
    }
    let before = request["object"].clone();
    let mut after = before.clone();
    let outcome = {
        let map = after.as_object_mut().ok_or("the pod is not an object")?;
        map.entry("metadata").or_insert(json!({}));
        map.entry("spec").or_insert(json!({}));
        let (mut meta, mut spec) = (None, None);
        for (k, v) in map.iter_mut() {
            match k.as_str() {
                "metadata" => meta = Some(v),
                "spec" => spec = Some(v),
                _ => {}
            }
        }
        match (meta, spec) {
            (Some(meta), Some(spec)) => inject(meta, spec, t, native),
            _ => return Err("the pod has no metadata or spec".into()),
        }
    };
    Ok(Decision {
        response: allow(Some(patch(&before, &after))),
        outcome: Some(outcome),
        object,
    })
}

/// Applies a patch made by [`patch`] (`add` and `remove` of object
/// members): what an API server does with the webhook's answer.
pub fn apply(target: &mut Value, ops: &[Value]) -> Result<(), String> {
    for op in ops {
        let path = op["path"].as_str().ok_or("an op without a path")?;
        let parts: Vec<String> = path
            .split('/')
            .skip(1)
            .map(|p| p.replace("~1", "/").replace("~0", "~"))
            .collect();
        let (last, parents) = parts.split_last().ok_or("an empty path")?;
        let mut at = &mut *target;
        for p in parents {
            at = at
                .get_mut(p.as_str())
                .ok_or_else(|| format!("{path}: no {p}"))?;
        }
        let map = at
            .as_object_mut()
            .ok_or_else(|| format!("{path}: not an object"))?;
        match op["op"].as_str() {
            Some("add" | "replace") => {
                map.insert(last.clone(), op["value"].clone());
            }
            Some("remove") => {
                map.remove(last.as_str());
            }
            other => return Err(format!("{path}: op {other:?} is not supported")),
        }
    }
    Ok(())
}
