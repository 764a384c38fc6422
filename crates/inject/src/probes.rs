//! Application health probes through the agent (Istio's `/app-health`).
//!
//! The kubelet probes from the node, outside the mesh: under STRICT mutual
//! TLS its HTTP probes to the application's port are refused, and in capture
//! mode a TCP probe is answered by the sidecar whatever the application's
//! state. So injection points each HTTP (`httpGet`, scheme HTTP) and TCP
//! (`tcpSocket`) probe of an application container at the agent's status
//! port, path `/app-health/CONTAINER/livez|readyz|startupz`, and hands the
//! agent the original in the proxy's environment ([`APP_PROBES_ENV`], JSON:
//! path → `{"httpGet": {"path", "port", "httpHeaders"}}` or `{"tcpSocket":
//! {"port"}}`, with `timeoutSeconds`). The agent calls the application on
//! loopback and answers with its status. Timing fields (period, thresholds,
//! initial delay) stay on the probe, so the kubelet keeps its schedule.
//!
//! Left alone: probes with a `host` (they go elsewhere), HTTPS probes, exec
//! and gRPC probes, a named port the container does not declare, and every
//! probe of a pod annotated [`REWRITE`]`: "false"`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::template::STATUS_PORT;

/// The proxy's environment variable holding the original probes.
pub const APP_PROBES_ENV: &str = "SEXTANT_APP_PROBES";
/// The annotation that keeps a pod's probes as written (`"false"`).
pub const REWRITE: &str = "sidecar.sextant.io/rewriteAppProbes";
/// The agent's path prefix for application probes.
pub const PREFIX: &str = "/app-health/";

const KINDS: [(&str, &str); 3] = [
    ("livenessProbe", "livez"),
    ("readinessProbe", "readyz"),
    ("startupProbe", "startupz"),
];

/// Whether `meta`'s annotations keep the probes as written.
pub fn opted_out(meta: &Value) -> bool {
    meta["annotations"]
        .get(REWRITE)
        .and_then(Value::as_str)
        .is_some_and(|v| v.eq_ignore_ascii_case("false"))
}

/// The port number `port` (a number, or a name among `container`'s ports).
fn port_number(container: &Value, port: &Value) -> Option<u64> {
    match port {
        Value::Number(n) => n.as_u64().filter(|p| (1..=65_535).contains(p)),
        Value::String(name) => {
            if let Ok(n) = name.parse::<u64>() {
                return (1..=65_535).contains(&n).then_some(n);
            }
            container["ports"]
                .as_array()?
                .iter()
                .find(|p| p["name"].as_str() == Some(name.as_str()))
                .and_then(|p| p["containerPort"].as_u64())
        }
        _ => None,
    }
}

/// What the agent runs in place of `probe` of `container`, if the probe is
/// one it takes.
fn original(container: &Value, probe: &Value) -> Option<Value> {
    let timeout = probe["timeoutSeconds"].as_u64().unwrap_or(1);
    let has_host = |action: &Value| action["host"].as_str().is_some_and(|h| !h.is_empty());
    if let Some(get) = probe.get("httpGet") {
        let scheme = get["scheme"].as_str().unwrap_or("HTTP");
        if has_host(get) || !scheme.eq_ignore_ascii_case("HTTP") {
            return None;
        }
        let port = port_number(container, &get["port"])?;
        let path = get["path"].as_str().unwrap_or("/");
        let mut action = json!({ "path": path, "port": port });
        if let Some(headers) = get.get("httpHeaders").filter(|h| h.is_array()) {
            action["httpHeaders"] = headers.clone();
        }
        return Some(json!({ "httpGet": action, "timeoutSeconds": timeout }));
    }
    if let Some(tcp) = probe.get("tcpSocket") {
        if has_host(tcp) {
            return None;
        }
        let port = port_number(container, &tcp["port"])?;
        return Some(json!({ "tcpSocket": { "port": port }, "timeoutSeconds": timeout }));
    }
    None
}

/// Points the HTTP and TCP probes of `containers` at the agent (see the
/// module docs); the originals, by the agent's path.
pub fn rewrite(containers: &mut [Value]) -> BTreeMap<String, Value> {
    let mut originals = BTreeMap::new();
    for container in containers.iter_mut() {
        let Some(name) = container["name"].as_str().map(str::to_owned) else {
            continue;
        };
        for (field, kind) in KINDS {
            let Some(probe) = container.get(field) else {
                continue;
            };
            let Some(original) = original(container, probe) else {
                continue;
            };
            let path = format!("{PREFIX}{name}/{kind}");
            if let Some(probe) = container.get_mut(field).and_then(Value::as_object_mut) {
                probe.remove("tcpSocket");
                probe.insert(
                    "httpGet".to_owned(),
                    json!({ "path": path, "port": STATUS_PORT, "scheme": "HTTP" }),
                );
                originals.insert(path, original);
            }
        }
    }
    originals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_tcp_probes_go_through_the_agent_and_the_rest_stay() {
        let mut containers = vec![
            json!({
                "name": "app",
                "ports": [{ "name": "http", "containerPort": 8080 }],
                "livenessProbe": {
                    "httpGet": { "path": "/healthz", "port": "http",
                                 "httpHeaders": [{ "name": "X-Probe", "value": "1" }] },
                    "periodSeconds": 7, "timeoutSeconds": 3
                },
                "readinessProbe": { "tcpSocket": { "port": 8080 }, "failureThreshold": 2 },
                "startupProbe": { "exec": { "command": ["true"] } }
            }),
            json!({
                "name": "other",
                "livenessProbe": { "httpGet": { "port": 9000, "scheme": "HTTPS" } },
                "readinessProbe": { "httpGet": { "port": 9000, "host": "example.com" } },
                "startupProbe": { "httpGet": { "port": "undeclared" } }
            }),
        ];
        let before_other = containers[1].clone();
        let originals = rewrite(&mut containers);
        let app = &containers[0];
        assert_eq!(
            app["livenessProbe"],
            json!({
                "httpGet": { "path": "/app-health/app/livez", "port": 15021, "scheme": "HTTP" },
                "periodSeconds": 7, "timeoutSeconds": 3
            })
        );
        assert_eq!(
            app["readinessProbe"],
            json!({
                "httpGet": { "path": "/app-health/app/readyz", "port": 15021, "scheme": "HTTP" },
                "failureThreshold": 2
            })
        );
        assert_eq!(
            app["startupProbe"],
            json!({ "exec": { "command": ["true"] } })
        );
        assert_eq!(
            containers[1], before_other,
            "HTTPS, a host, an unknown name"
        );
        assert_eq!(
            originals,
            BTreeMap::from([
                (
                    "/app-health/app/livez".to_owned(),
                    json!({ "httpGet": { "path": "/healthz", "port": 8080,
                        "httpHeaders": [{ "name": "X-Probe", "value": "1" }] }, "timeoutSeconds": 3 })
                ),
                (
                    "/app-health/app/readyz".to_owned(),
                    json!({ "tcpSocket": { "port": 8080 }, "timeoutSeconds": 1 })
                ),
            ])
        );
    }

    #[test]
    fn the_annotation_keeps_probes_as_written() {
        assert!(opted_out(&json!({ "annotations": { REWRITE: "false" } })));
        assert!(!opted_out(&json!({ "annotations": { REWRITE: "true" } })));
        assert!(!opted_out(&json!({})));
    }
}
