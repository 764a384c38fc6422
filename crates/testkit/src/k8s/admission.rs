//! Mutating admission, as the API server runs it on a create: the
//! MutatingWebhookConfigurations stored, in name order, each webhook whose
//! rules, namespace selector and object selector match is called over HTTPS
//! (verified with its `caBundle`), with an `admission.k8s.io/v1`
//! AdmissionReview; its JSON Patch is applied before the next one; a
//! webhook that cannot be reached, answers late (`timeoutSeconds`, default
//! 10) or answers nonsense fails the create under `failurePolicy: Fail`
//! (the default) and is skipped under `Ignore`; one that denies fails it.
//!
//! Where a webhook is: its `clientConfig.url`, or its `clientConfig.service`
//! (`NAME.NAMESPACE.svc`, the name the certificate must carry) at the
//! address a test gave with [`KubeDouble::route_service`], as cluster DNS
//! would resolve it.
//!
//! Namespaces carry the label `kubernetes.io/metadata.name` (their name),
//! which the real API server sets and selectors that exclude a namespace
//! use.

use std::net::SocketAddr;

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Outcomes of admission, by webhook name, for tests to assert on.
#[derive(Clone, Debug, Default)]
pub(super) struct Calls(pub(super) Vec<(String, String)>);

/// The labels of namespace `ns`: the stored Namespace's, with
/// `kubernetes.io/metadata.name`.
pub(super) fn namespace_labels(store: &Store, ns: &str) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = store
        .objects
        .get(&(Kind::Namespace, String::new(), ns.to_owned()))
        .and_then(|n| n["metadata"]["labels"].as_object().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.as_str()?.to_owned())))
        .collect();
    labels.insert("kubernetes.io/metadata.name".to_owned(), ns.to_owned());
    labels
}

fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect()
}

/// A `LabelSelector` (matchLabels, matchExpressions) against `labels`; an
/// absent selector matches everything.
pub(super) fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    if selector.is_null() {
        return true;
    }
    let match_labels = selector["matchLabels"].as_object().into_iter().flatten();
    for (k, v) in match_labels {
        if labels.get(k).map(String::as_str) != v.as_str() {
            return false;
        }
    }
    for e in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or("");
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let value = labels.get(key).map(String::as_str);
        let holds = match e["operator"].as_str() {
            Some("In") => value.is_some_and(|v| values.contains(&v)),
            Some("NotIn") => value.is_none_or(|v| !values.contains(&v)),
            Some("Exists") => value.is_some(),
            Some("DoesNotExist") => value.is_none(),
            _ => false,
        };
        if !holds {
            return false;
        }
    }
    true
}

fn rule_matches(rules: &Value, kind: Kind, operation: &str) -> bool {
    let has = |list: &Value, want: &str| {
        list.as_array()
            .into_iter()
            .flatten()
            .any(|v| v == "*" || v == want)
    };
    rules.as_array().into_iter().flatten().any(|r| {
        has(&r["operations"], operation)
            && has(&r["apiGroups"], kind.group())
            && has(&r["apiVersions"], "v1")
            && has(&r["resources"], kind.resource())
    })
}

/// Runs the mutating webhooks on `object`, a `kind` being created in
/// `namespace`; the object as admitted, or the response refusing it.
pub(super) async fn admit(
    shared: &Shared,
    kind: Kind,
    namespace: &str,
    mut object: Value,
) -> Result<Value, Response> {
    let (configs, ns_labels) = {
        let store = lock(&shared.store);
        let configs: Vec<Value> = store
            .objects
            .iter()
            .filter(|((k, _, _), _)| *k == Kind::MutatingWebhookConfiguration)
            .map(|(_, v)| v.clone())
            .collect();
        (configs, namespace_labels(&store, namespace))
    };
    for config in configs {
        for hook in config["webhooks"].as_array().into_iter().flatten() {
            let name = hook["name"].as_str().unwrap_or("").to_owned();
            if !rule_matches(&hook["rules"], kind, "CREATE")
                || kind.namespaced() && !selects(&hook["namespaceSelector"], &ns_labels)
                || !selects(&hook["objectSelector"], &labels_of(&object))
            {
                continue;
            }
            let fail_open = hook["failurePolicy"] == "Ignore";
            let outcome = call(shared, hook, kind, namespace, &object).await;
            let record = |what: String| lock(&shared.behaviour).calls.0.push((name.clone(), what));
            match outcome {
                Ok(Verdict::Patched(patched)) => {
                    record("patched".into());
                    object = patched;
                }
                Ok(Verdict::Allowed) => record("allowed".into()),
                Ok(Verdict::Denied(message)) => {
                    record(format!("denied: {message}"));
                    return Err(status(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        &format!("admission webhook \"{name}\" denied the request: {message}"),
                        None,
                    ));
                }
                Err(e) if fail_open => record(format!("failed, ignored: {e}")),
                Err(e) => {
                    record(format!("failed: {e}"));
                    return Err(status(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "InternalError",
                        &format!("Internal error occurred: failed calling webhook \"{name}\": {e}"),
                        None,
                    ));
                }
            }
        }
    }
    Ok(object)
}

enum Verdict {
    Allowed,
    Patched(Value),
    Denied(String),
}

/// Where a webhook is: the address to connect to, the name its
/// certificate must carry, and the path.
fn target(shared: &Shared, hook: &Value) -> Result<(SocketAddr, String, String), String> {
    let config = &hook["clientConfig"];
    if let Some(url) = config["url"].as_str() {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| format!("the webhook URL {url:?} is not https"))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let addr: SocketAddr = authority.parse().map_err(|_| {
            format!("the double dials IP:PORT webhook URLs only, not {authority:?}")
        })?;
        return Ok((addr, addr.ip().to_string(), format!("/{path}")));
    }
    let svc = &config["service"];
    let (ns, name) = (
        svc["namespace"].as_str().unwrap_or(""),
        svc["name"].as_str().unwrap_or(""),
    );
    let port = svc["port"].as_u64().unwrap_or(443);
    let addr = lock(&shared.behaviour)
        .services
        .get(&(ns.to_owned(), name.to_owned(), port))
        .copied()
        .ok_or_else(|| {
            format!("dial tcp: lookup {name}.{ns}.svc on 10.96.0.10:53: no such host")
        })?;
    let path = svc["path"].as_str().unwrap_or("/").to_owned();
    Ok((addr, format!("{name}.{ns}.svc"), path))
}

async fn call(
    shared: &Shared,
    hook: &Value,
    kind: Kind,
    namespace: &str,
    object: &Value,
) -> Result<Verdict, String> {
    let (addr, server_name, path) = target(shared, hook)?;
    let uid = {
        let mut store = lock(&shared.store);
        store.uid += 1;
        format!("a0000000-0000-4000-8000-{:012}", store.uid)
    };
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": kind.group(), "version": "v1", "kind": kind.kind()},
            "resource": {"group": kind.group(), "version": "v1", "resource": kind.resource()},
            "requestKind": {"group": kind.group(), "version": "v1", "kind": kind.kind()},
            "requestResource": {"group": kind.group(), "version": "v1", "resource": kind.resource()},
            "name": object["metadata"]["name"],
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        }
    });
    let timeout = Duration::from_secs(hook["timeoutSeconds"].as_u64().unwrap_or(10));
    let ca = hook["clientConfig"]["caBundle"].as_str().unwrap_or("");
    let body = tokio::time::timeout(
        timeout,
        post(addr, &server_name, &path, ca, &review.to_string()),
    )
    .await
    .map_err(|_| format!("Post \"https://{server_name}{path}\": context deadline exceeded"))??;
    let answer: Value = serde_json::from_str(&body)
        .map_err(|e| format!("the webhook answered with something that is not JSON: {e}"))?;
    let response = &answer["response"];
    if response["uid"] != uid.as_str() {
        return Err(format!(
            "expected response.uid={uid:?}, got {}",
            response["uid"]
        ));
    }
    if response["allowed"] != true {
        let message = response["status"]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        return Ok(Verdict::Denied(message));
    }
    let Some(patch) = response["patch"].as_str() else {
        return Ok(Verdict::Allowed);
    };
    if response["patchType"] != "JSONPatch" {
        return Err(format!("unsupported patchType {}", response["patchType"]));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .map_err(|e| format!("the patch is not base64: {e}"))?;
    let ops: Vec<Value> =
        serde_json::from_slice(&bytes).map_err(|e| format!("the patch is not JSON: {e}"))?;
    let mut patched = object.clone();
    json_patch(&mut patched, &ops)?;
    Ok(Verdict::Patched(patched))
}

/// An HTTPS POST trusting only `ca_bundle` (base64 PEM), as the API server
/// calls webhooks; the response body.
async fn post(
    addr: SocketAddr,
    server_name: &str,
    path: &str,
    ca_bundle: &str,
    body: &str,
) -> Result<String, String> {
    let pem = base64::engine::general_purpose::STANDARD
        .decode(ca_bundle.trim())
        .map_err(|e| format!("the caBundle is not base64: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("the caBundle is not PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("the caBundle's certificate: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(server_name.to_owned()).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("Post \"https://{server_name}{path}\": dial tcp {addr}: {e}"))?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("Post \"https://{server_name}{path}\": tls: {e}"))?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {server_name}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    (&mut tls)
        .take(16 << 20)
        .read_to_end(&mut raw)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("the webhook's answer has no headers")?;
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if code != 200 {
        return Err(format!("the webhook answered {code}: {}", body.trim()));
    }
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok(if chunked {
        crate::peers::dechunk(body)
    } else {
        body.to_owned()
    })
}

/// Applies a JSON Patch (RFC 6902: add, remove, replace, test) to `target`.
pub fn json_patch(target: &mut Value, ops: &[Value]) -> Result<(), String> {
    for op in ops {
        let path = op["path"].as_str().ok_or("an operation without a path")?;
        let parts: Vec<String> = if path.is_empty() {
            Vec::new()
        } else {
            path.strip_prefix('/')
                .ok_or_else(|| format!("the path {path:?} does not start with /"))?
                .split('/')
                .map(|p| p.replace("~1", "/").replace("~0", "~"))
                .collect()
        };
        let Some((last, parents)) = parts.split_last() else {
            return Err("a patch of the whole object is not supported".into());
        };
        let mut at = &mut *target;
        for p in parents {
            at = match at {
                Value::Object(m) => m.get_mut(p.as_str()),
                Value::Array(a) => p.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
                _ => None,
            }
            .ok_or_else(|| format!("{path}: {p} does not exist"))?;
        }
        let value = op.get("value").cloned();
        match (op["op"].as_str(), at) {
            (Some("add"), Value::Object(m)) => {
                m.insert(last.clone(), value.ok_or("add without a value")?);
            }
            (Some("add"), Value::Array(a)) => {
                let v = value.ok_or("add without a value")?;
                if last == "-" {
                    a.push(v);
                } else {
                    let i: usize = last.parse().map_err(|_| format!("{path}: not an index"))?;
                    if i > a.len() {
                        return Err(format!("{path}: index out of range"));
                    }
                    a.insert(i, v);
                }
            }
            (Some("replace"), Value::Object(m)) if m.contains_key(last.as_str()) => {
                m.insert(last.clone(), value.ok_or("replace without a value")?);
            }
            (Some("replace"), Value::Array(a)) => {
                let i: usize = last.parse().map_err(|_| format!("{path}: not an index"))?;
                *a.get_mut(i)
                    .ok_or_else(|| format!("{path}: index out of range"))? =
                    value.ok_or("replace without a value")?;
            }
            (Some("remove"), Value::Object(m)) => {
                m.remove(last.as_str())
                    .ok_or_else(|| format!("{path}: nothing to remove"))?;
            }
            (Some("remove"), Value::Array(a)) => {
                let i: usize = last.parse().map_err(|_| format!("{path}: not an index"))?;
                if i >= a.len() {
                    return Err(format!("{path}: index out of range"));
                }
                a.remove(i);
            }
            (Some("test"), Value::Object(m)) => {
                if m.get(last.as_str()) != value.as_ref() {
                    return Err(format!("{path}: test failed"));
                }
            }
            (other, _) => return Err(format!("{path}: cannot {other:?} here")),
        }
    }
    Ok(())
}
