//! `sextant inject -f FILE` (Istio's `kube-inject`): every document of a
//! multi-document YAML file that holds a pod template gets the proxy,
//! through the same renderer as the webhook ([`crate::render::inject`]);
//! every other document is written back exactly as it was (its text,
//! comments and all).
//!
//! Pod templates are found in Pods, Deployments, StatefulSets, DaemonSets,
//! ReplicaSets, ReplicationControllers, Jobs and CronJobs, and in the items
//! of a `List`.

use serde_json::Value;

use crate::render::{Outcome, inject};
use crate::template::Template;

/// What happened to one object of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// `KIND NAMESPACE/NAME` (the namespace as written, possibly empty).
    pub object: String,
    /// Injected, or skipped and why.
    pub outcome: Outcome,
}

/// The file with the proxy added, and a report per pod template.
#[derive(Clone, Debug, Default)]
pub struct Injected {
    /// The documents, `---`-separated.
    pub text: String,
    /// One entry per pod template found.
    pub reports: Vec<Report>,
}

/// The pod template (its `metadata` and `spec`) inside `object`, by kind.
fn pod_template(object: &mut Value) -> Option<(&mut Value, &mut Value)> {
    let kind = object["kind"].as_str()?.to_owned();
    let holder = match kind.as_str() {
        "Pod" => object,
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => object.get_mut("spec")?.get_mut("template")?,
        "CronJob" => object
            .get_mut("spec")?
            .get_mut("jobTemplate")?
            .get_mut("spec")?
            .get_mut("template")?,
        _ => return None,
    };
    let map = holder.as_object_mut()?;
    map.entry("metadata")
        .or_insert(Value::Object(Default::default()));
    map.entry("spec")
        .or_insert(Value::Object(Default::default()));
    let (mut meta, mut spec) = (None, None);
    for (k, v) in map.iter_mut() {
        match k.as_str() {
            "metadata" => meta = Some(v),
            "spec" => spec = Some(v),
            _ => {}
        }
    }
    Some((meta?, spec?))
}

fn name_of(object: &Value) -> String {
    format!(
        "{} {}/{}",
        object["kind"].as_str().unwrap_or("?"),
        object["metadata"]["namespace"].as_str().unwrap_or(""),
        object["metadata"]["name"].as_str().unwrap_or("")
    )
}

/// Injects `object` (and a List's items) in place; true when anything was
/// injected.
fn inject_object(
    object: &mut Value,
    t: &Template,
    native: bool,
    reports: &mut Vec<Report>,
) -> bool {
    if object["kind"] == "List" {
        let mut any = false;
        if let Some(items) = object.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                any |= inject_object(item, t, native, reports);
            }
        }
        return any;
    }
    let name = name_of(object);
    let Some((meta, spec)) = pod_template(object) else {
        return false;
    };
    let outcome = inject(meta, spec, t, native);
    let injected = outcome == Outcome::Injected;
    reports.push(Report {
        object: name,
        outcome,
    });
    injected
}

/// The documents of `text`, split at `---` lines, each with its text.
fn documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end();
        if bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t") {
            docs.push(&text[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    docs.push(&text[start..]);
    docs
}

/// `text` (multi-document YAML) with the proxy added to every pod
/// template; errors name the document.
pub fn inject_manifests(text: &str, t: &Template, native: bool) -> Result<Injected, String> {
    let mut out = Injected::default();
    let mut parts = Vec::new();
    for (i, doc) in documents(text).into_iter().enumerate() {
        let value: Option<Value> =
            serde_yaml_ng::from_str(doc).map_err(|e| format!("document {}: {e}", i + 1))?;
        let Some(mut value) = value.filter(|v| !v.is_null()) else {
            if !doc.trim().is_empty() {
                parts.push(doc.trim_end_matches('\n').to_owned());
            }
            continue;
        };
        if inject_object(&mut value, t, native, &mut out.reports) {
            let yaml =
                serde_yaml_ng::to_string(&value).map_err(|e| format!("document {}: {e}", i + 1))?;
            parts.push(yaml.trim_end_matches('\n').to_owned());
        } else {
            parts.push(doc.trim_end_matches('\n').to_owned());
        }
    }
    out.text = parts.join("\n---\n");
    out.text.push('\n');
    Ok(out)
}
