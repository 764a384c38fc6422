//! Kubernetes `Ingress` (`networking.k8s.io/v1`) of Sextant's class
//! (`--ingress-class`: `spec.ingressClassName`, or the
//! `kubernetes.io/ingress.class` annotation) as routes at one gateway
//! (`--ingress-gateway NAMESPACE/NAME`, default `sextant/ingress`), served
//! by the routers that name it, as Istio serves every Ingress at its
//! ingress gateway. Pure conversion, no I/O; `ingresses.rs` (rules
//! session) merges them into that gateway's listeners.
//!
//! - Each rule of an Ingress is a route rule bound to the gateway, for its
//!   `host` (none: every name); its paths are its routes, exact paths
//!   first, then prefixes longest first (as the Ingress API orders them).
//!   A `Prefix` path matches whole path elements (`/foo` takes `/foo` and
//!   `/foo/bar`, not `/foobar`). `defaultBackend` is a rule for every name.
//! - Listeners: HTTP on port 80, for every name; an HTTPS listener on port
//!   443 per `tls` host (none: every name), terminating TLS with the
//!   `secretName` Secret of the gateway's namespace (Istio's rule for
//!   Ingress certificates: they live beside the gateway).
//! - What is not served (a backend port by name, `resource` backends) is
//!   named; the rest is served.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

use sextant_core::rules::gateway::{
    AllowedRoutes, FromNamespaces, GatewayListener, GatewayProtocol, ListenerTls, RouteNamespaces,
};
use sextant_core::rules::{
    Destination, HttpMatch, HttpRoute, PortSelector, RouteDestination, StringMatch,
};
use sextant_core::{Hostname, RouteRule, Rule};

use crate::convert::Mapping;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IngressSpec {
    #[serde(default)]
    ingress_class_name: Option<String>,
    #[serde(default)]
    default_backend: Option<Backend>,
    #[serde(default)]
    rules: Vec<RuleSpec>,
    #[serde(default)]
    tls: Vec<TlsSpec>,
}

#[derive(Deserialize)]
struct RuleSpec {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    http: Option<HttpSpec>,
}

#[derive(Deserialize)]
struct HttpSpec {
    #[serde(default)]
    paths: Vec<PathSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PathSpec {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    path_type: Option<String>,
    backend: Backend,
}

#[derive(Deserialize)]
struct Backend {
    #[serde(default)]
    service: Option<ServiceBackend>,
    #[serde(default)]
    resource: Option<Value>,
}

#[derive(Deserialize)]
struct ServiceBackend {
    name: String,
    #[serde(default)]
    port: Option<ServicePort>,
}

#[derive(Deserialize)]
struct ServicePort {
    #[serde(default)]
    number: Option<u32>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TlsSpec {
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    secret_name: Option<String>,
}

/// What one Ingress of Sextant's class gives.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IngressRoutes {
    /// Its route rules, bound to the ingress gateway.
    pub rules: Vec<Rule>,
    /// The HTTPS listeners its `tls` asks for: (hostname, Secret name).
    pub tls: Vec<(Option<String>, String)>,
    /// What is not served.
    pub unsupported: Vec<String>,
}

/// Whether an Ingress with `spec` and `annotations` is of class `class`.
pub fn of_class(class: &str, spec: &Value, annotations: Option<&BTreeMap<String, String>>) -> bool {
    match spec.get("ingressClassName").and_then(Value::as_str) {
        Some(c) => c == class,
        None => annotations
            .and_then(|a| a.get("kubernetes.io/ingress.class"))
            .is_some_and(|c| c == class),
    }
}

/// An Ingress's spec as route rules at gateway `gateway` (`NS/NAME`).
pub fn ingress(
    mapping: &Mapping,
    gateway: &str,
    namespace: &str,
    name: &str,
    spec: &Value,
) -> Result<IngressRoutes, String> {
    let spec: IngressSpec =
        serde_json::from_value(spec.clone()).map_err(|e| format!("spec: {e}"))?;
    let _ = spec.ingress_class_name;
    let mut out = IngressRoutes::default();
    let destination = |b: &Backend, at: &str, unsupported: &mut Vec<String>| {
        if b.resource.is_some() {
            unsupported.push(format!("{at}.resource (only Service backends are served)"));
            return None;
        }
        let service = b.service.as_ref()?;
        match service.port.as_ref().and_then(|p| p.number) {
            Some(number) => Some(RouteDestination {
                destination: Destination {
                    host: mapping.hostname(namespace, &service.name),
                    subset: None,
                    port: Some(PortSelector { number }),
                },
                weight: None,
            }),
            None => {
                let named = service.port.as_ref().and_then(|p| p.name.clone());
                unsupported.push(format!(
                    "{at}.service.port{} (a port by number is served)",
                    named.map(|n| format!(".name {n}")).unwrap_or_default()
                ));
                None
            }
        }
    };
    for (i, rule) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        let mut paths: Vec<(u8, usize, HttpRoute)> = Vec::new();
        for (j, p) in rule
            .http
            .as_ref()
            .map(|h| h.paths.as_slice())
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let at = format!("{at}.http.paths[{j}]");
            let Some(route) =
                destination(&p.backend, &format!("{at}.backend"), &mut out.unsupported)
            else {
                continue;
            };
            let path = p.path.clone().unwrap_or_else(|| "/".to_owned());
            let exact = p.path_type.as_deref() == Some("Exact");
            let matches = if exact {
                vec![StringMatch::Exact(path.clone())]
            } else if path.trim_end_matches('/').is_empty() {
                vec![StringMatch::Prefix("/".to_owned())]
            } else {
                // Whole path elements: the path itself, and below it.
                let trimmed = path.trim_end_matches('/').to_owned();
                vec![
                    StringMatch::Exact(trimmed.clone()),
                    StringMatch::Prefix(format!("{trimmed}/")),
                ]
            };
            paths.push((
                u8::from(!exact),
                usize::MAX - path.len(),
                HttpRoute {
                    matches: matches
                        .into_iter()
                        .map(|uri| HttpMatch {
                            uri: Some(uri),
                            ..HttpMatch::default()
                        })
                        .collect(),
                    route: vec![route],
                    ..HttpRoute::default()
                },
            ));
        }
        // Exact first, then the longest prefix (stable among equals).
        paths.sort_by_key(|(kind, len, _)| (*kind, *len));
        if paths.is_empty() {
            continue;
        }
        let host = rule.host.clone().unwrap_or_else(|| "*".to_owned());
        out.rules.push(Rule::route(
            namespace,
            format!("ingress/{name}/{i}"),
            RouteRule {
                hosts: vec![Hostname::new(host)],
                http: paths.into_iter().map(|(_, _, r)| r).collect(),
                gateways: vec![gateway.to_owned()],
                ..RouteRule::default()
            },
        ));
    }
    if let Some(b) = &spec.default_backend
        && let Some(route) = destination(b, "spec.defaultBackend", &mut out.unsupported)
    {
        out.rules.push(Rule::route(
            namespace,
            format!("ingress/{name}/default"),
            RouteRule {
                hosts: vec![Hostname::new("*")],
                http: vec![HttpRoute {
                    route: vec![route],
                    ..HttpRoute::default()
                }],
                gateways: vec![gateway.to_owned()],
                ..RouteRule::default()
            },
        ));
    }
    for (k, t) in spec.tls.iter().enumerate() {
        let Some(secret) = t.secret_name.clone().filter(|s| !s.is_empty()) else {
            out.unsupported.push(format!(
                "spec.tls[{k}] (no secretName: not served over HTTPS)"
            ));
            continue;
        };
        if t.hosts.is_empty() {
            out.tls.push((None, secret));
        } else {
            out.tls
                .extend(t.hosts.iter().map(|h| (Some(h.clone()), secret.clone())));
        }
    }
    Ok(out)
}

/// The ingress gateway's listeners for the `tls` of every Ingress, in
/// order: HTTP on 80 for every name, and an HTTPS listener on 443 per
/// name (the first Ingress to ask for a name holds it; `taken` says who
/// lost).
pub fn listeners(tls: &[(Option<String>, String)]) -> (Vec<GatewayListener>, Vec<String>) {
    let all = AllowedRoutes {
        namespaces: RouteNamespaces {
            from: FromNamespaces::All,
        },
    };
    let mut out = vec![GatewayListener {
        name: "http".to_owned(),
        port: 80,
        protocol: GatewayProtocol::Http,
        hostname: None,
        allowed_routes: all.clone(),
        tls: None,
    }];
    let mut lost = Vec::new();
    let mut seen: BTreeMap<Option<String>, String> = BTreeMap::new();
    for (host, secret) in tls {
        if let Some(holder) = seen.get(host) {
            if holder != secret {
                lost.push(format!(
                    "{}: Secret {holder} serves it; {secret} is not used",
                    host.as_deref().unwrap_or("every name")
                ));
            }
            continue;
        }
        seen.insert(host.clone(), secret.clone());
        out.push(GatewayListener {
            name: format!("https-{}", seen.len()),
            port: 443,
            protocol: GatewayProtocol::Https,
            hostname: host.clone(),
            allowed_routes: all.clone(),
            tls: Some(ListenerTls {
                certificate_refs: vec![secret.clone()],
            }),
        });
    }
    (out, lost)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> Value {
        serde_yaml_ng::from_str(yaml).expect("yaml")
    }

    /// Rules become route rules at the ingress gateway, exact paths first
    /// and prefixes by whole elements; TLS hosts become listeners; what is
    /// not served is named.
    #[test]
    fn an_ingress_becomes_routes_at_the_ingress_gateway() {
        let s = spec(
            "ingressClassName: sextant\n\
             defaultBackend: {service: {name: web, port: {number: 8080}}}\n\
             tls: [{hosts: [shop.example.com], secretName: shop-cert}]\n\
             rules:\n\
             - host: shop.example.com\n  http:\n    paths:\n\
             \x20   - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 9090}}}}\n\
             \x20   - {path: /api/v2/health, pathType: Exact, backend: {service: {name: api, port: {number: 9090}}}}\n\
             \x20   - {path: /, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}\n",
        );
        assert!(of_class("sextant", &s, None));
        assert!(!of_class("nginx", &s, None));
        let c =
            ingress(&Mapping::default(), "sextant/ingress", "shop", "site", &s).expect("converts");
        assert_eq!(c.rules.len(), 2, "{:?}", c.rules);
        let route = c.rules[0].as_route().expect("a route rule");
        assert_eq!(route.gateways, ["sextant/ingress"]);
        assert_eq!(route.hosts[0].as_str(), "shop.example.com");
        let uris: Vec<Vec<Option<StringMatch>>> = route
            .http
            .iter()
            .map(|r| r.matches.iter().map(|m| m.uri.clone()).collect())
            .collect();
        assert_eq!(
            uris,
            [
                vec![Some(StringMatch::Exact("/api/v2/health".into()))],
                vec![
                    Some(StringMatch::Exact("/api".into())),
                    Some(StringMatch::Prefix("/api/".into()))
                ],
            ]
        );
        assert!(c.rules.iter().all(|r| r.validate().is_ok()));
        assert_eq!(
            c.unsupported,
            [
                "spec.rules[0].http.paths[2].backend.service.port.name http (a port by number is served)"
            ]
        );
        assert_eq!(
            c.tls,
            [(Some("shop.example.com".to_owned()), "shop-cert".to_owned())]
        );
        let (listeners, lost) = listeners(&[
            (Some("a.example.com".into()), "a".into()),
            (Some("a.example.com".into()), "b".into()),
        ]);
        assert_eq!(listeners.len(), 2);
        assert_eq!(lost.len(), 1);
        let gw = Rule::gateway(
            "sextant",
            "ingress",
            sextant_core::rules::GatewayRule { listeners },
        );
        assert!(gw.validate().is_ok(), "{:?}", gw.validate());
    }
}
