//! The Gateway API's `Gateway` of Sextant's class (`--gateway-class`) as a
//! gateway rule ([`sextant_core::rules::gateway`]): its listeners, for the
//! router proxies that serve it. Pure conversion, no I/O.
//!
//! A Gateway of another class is not Sextant's: no rule, nothing said.
//! HTTP, HTTPS, TLS and TCP listeners are served with `hostname` and
//! `allowedRoutes` (`namespaces.from` Same or All); an HTTPS listener
//! terminates TLS with the `kubernetes.io/tls` Secrets of its
//! `tls.certificateRefs` in the Gateway's namespace (read by
//! `credentials.rs`), a TLS listener passes TLS through by server name
//! (TLSRoutes), a TCP listener proxies its connections (TCPRoutes). What
//! is not served yet (TLS `mode: Terminate`, HTTPS `mode: Passthrough`,
//! `from: Selector`, `addresses`) is named; a listener left without a
//! certificate is not served, the others are. A certificate of another
//! namespace is named `NAMESPACE/NAME`: it is sent only while a
//! ReferenceGrant there lets this namespace's Gateways use it.

use serde::Deserialize;
use serde_json::Value;

use sextant_core::Rule;
use sextant_core::rules::gateway::{
    AllowedRoutes, FromNamespaces, GatewayListener, GatewayProtocol, GatewayRule, ListenerTls,
    MAX_CERTIFICATES, RouteNamespaces,
};

use crate::istio::Converted;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GatewaySpec {
    #[serde(default)]
    gateway_class_name: String,
    #[serde(default)]
    listeners: Vec<ListenerSpec>,
    #[serde(default)]
    addresses: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListenerSpec {
    name: String,
    port: u32,
    protocol: String,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    allowed_routes: Option<AllowedSpec>,
    #[serde(default)]
    tls: Option<TlsSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TlsSpec {
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    certificate_refs: Vec<CertificateRef>,
    #[serde(default)]
    options: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CertificateRef {
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AllowedSpec {
    #[serde(default)]
    namespaces: Option<NamespacesSpec>,
    #[serde(default)]
    kinds: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NamespacesSpec {
    #[serde(default)]
    from: Option<String>,
}

/// A Gateway's spec as a gateway rule, when its class is `class`.
pub fn gateway(
    class: &str,
    namespace: &str,
    name: &str,
    spec: &Value,
) -> Result<Converted, String> {
    let spec: GatewaySpec =
        serde_json::from_value(spec.clone()).map_err(|e| format!("spec: {e}"))?;
    let mut unsupported = Vec::new();
    if spec.gateway_class_name != class {
        return Ok(Converted {
            rule: None,
            unsupported,
        });
    }
    if !spec.addresses.is_empty() {
        unsupported.push("spec.addresses (the routers' own addresses are used)".into());
    }
    let mut listeners = Vec::new();
    for (i, l) in spec.listeners.into_iter().enumerate() {
        let at = format!("spec.listeners[{i}]");
        let protocol = match l.protocol.as_str() {
            "HTTP" => GatewayProtocol::Http,
            "HTTPS" => GatewayProtocol::Https,
            "TLS" => GatewayProtocol::Tls,
            "TCP" => GatewayProtocol::Tcp,
            other => {
                unsupported.push(format!(
                    "{at} (protocol {other}: not served; HTTP, HTTPS, TLS and TCP are)"
                ));
                continue;
            }
        };
        let tls = match (protocol, l.tls) {
            // TLS passes through; terminating it is HTTPS's job here.
            (GatewayProtocol::Tls, tls) => match tls.as_ref().and_then(|t| t.mode.as_deref()) {
                Some("Passthrough") | None => None,
                Some(mode) => {
                    unsupported.push(format!(
                            "{at}.tls.mode {mode} (a TLS listener passes TLS through here; terminate with HTTPS: the listener is not served)"
                        ));
                    continue;
                }
            },
            (GatewayProtocol::Tcp, Some(_)) => {
                unsupported.push(format!("{at}.tls (a TCP listener has none)"));
                None
            }
            (GatewayProtocol::Https, tls) => {
                match listener_tls(namespace, &at, tls, &mut unsupported) {
                    Some(tls) => Some(tls),
                    None => continue,
                }
            }
            (_, Some(_)) => {
                unsupported.push(format!("{at}.tls (an HTTP listener has none)"));
                None
            }
            (_, None) => None,
        };
        let mut from = FromNamespaces::Same;
        if let Some(allowed) = &l.allowed_routes {
            match allowed.namespaces.as_ref().and_then(|n| n.from.as_deref()) {
                None | Some("Same") => {}
                Some("All") => from = FromNamespaces::All,
                Some(other) => unsupported.push(format!(
                    "{at}.allowedRoutes.namespaces.from {other} (not served yet: the Gateway's namespace only)"
                )),
            }
            let served_kinds: &[&str] = match protocol {
                GatewayProtocol::Http | GatewayProtocol::Https => &["HTTPRoute", "GRPCRoute"],
                GatewayProtocol::Tls => &["TLSRoute"],
                GatewayProtocol::Tcp => &["TCPRoute"],
            };
            let known = allowed.kinds.iter().all(|k| {
                served_kinds.iter().any(|s| k["kind"] == *s)
                    && k.get("group")
                        .is_none_or(|g| g == "gateway.networking.k8s.io")
            });
            if !known {
                unsupported.push(format!(
                    "{at}.allowedRoutes.kinds (the listener takes {} whatever it lists)",
                    served_kinds.join(" and ")
                ));
            }
        }
        let hostname = match (protocol, l.hostname) {
            (GatewayProtocol::Tcp, Some(_)) => {
                unsupported.push(format!("{at}.hostname (a TCP listener has none)"));
                None
            }
            (_, h) => h,
        };
        listeners.push(GatewayListener {
            name: l.name,
            port: l.port,
            protocol,
            hostname,
            allowed_routes: AllowedRoutes {
                namespaces: RouteNamespaces { from },
            },
            tls,
        });
    }
    Ok(served(
        namespace,
        name,
        listeners,
        "spec.listeners",
        unsupported,
    ))
}

/// The gateway rule of `listeners`, or none (and why, naming `field`) when
/// there is none to serve.
pub(crate) fn served(
    namespace: &str,
    name: &str,
    listeners: Vec<GatewayListener>,
    field: &str,
    mut unsupported: Vec<String>,
) -> Converted {
    if listeners.is_empty() {
        unsupported.push(format!(
            "{field} (none is served: the Gateway is not served)"
        ));
        return Converted {
            rule: None,
            unsupported,
        };
    }
    Converted {
        rule: Some(Rule::gateway(namespace, name, GatewayRule { listeners })),
        unsupported,
    }
}

/// An HTTPS listener's certificates, or `None` (and why in `unsupported`)
/// when none can be served: the listener is then not served.
fn listener_tls(
    namespace: &str,
    at: &str,
    tls: Option<TlsSpec>,
    unsupported: &mut Vec<String>,
) -> Option<ListenerTls> {
    let Some(tls) = tls else {
        unsupported.push(format!(
            "{at} (HTTPS needs tls.certificateRefs: the listener is not served)"
        ));
        return None;
    };
    if let Some(mode) = tls.mode.as_deref().filter(|m| *m != "Terminate") {
        unsupported.push(format!(
            "{at}.tls.mode {mode} (not served yet on HTTPS, Terminate is: the listener is not served)"
        ));
        return None;
    }
    if !tls.options.is_empty() {
        unsupported.push(format!("{at}.tls.options"));
    }
    let mut certificate_refs = Vec::new();
    for (j, r) in tls.certificate_refs.into_iter().enumerate() {
        let at = format!("{at}.tls.certificateRefs[{j}]");
        let secret = r.kind.as_deref().is_none_or(|k| k == "Secret")
            && r.group.as_deref().is_none_or(str::is_empty);
        if !secret {
            unsupported.push(format!("{at} (only core Secrets are read)"));
        } else if certificate_refs.len() == MAX_CERTIFICATES {
            unsupported.push(format!("{at} (at most {MAX_CERTIFICATES} certificates)"));
        } else {
            // Another namespace's Secret: served once a ReferenceGrant
            // there lets this namespace's Gateways use it
            // (`credentials.rs`).
            match r.namespace.filter(|n| n != namespace) {
                Some(ns) => certificate_refs.push(format!("{ns}/{}", r.name)),
                None => certificate_refs.push(r.name),
            }
        }
    }
    if certificate_refs.is_empty() {
        unsupported.push(format!(
            "{at}.tls.certificateRefs (none can be read: the listener is not served)"
        ));
        return None;
    }
    Some(ListenerTls { certificate_refs })
}
