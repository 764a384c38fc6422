//! The Gateway API's `Gateway` of Sextant's class (`--gateway-class`) as a
//! gateway rule ([`sextant_core::rules::gateway`]): its listeners, for the
//! router proxies that serve it. Pure conversion, no I/O.
//!
//! A Gateway of another class is not Sextant's: no rule, nothing said.
//! HTTP listeners are served with `hostname` and `allowedRoutes`
//! (`namespaces.from` Same or All); what is not served yet (HTTPS, TLS and
//! TCP listeners, `from: Selector`, `addresses`) is named.

use serde::Deserialize;
use serde_json::Value;

use sextant_core::Rule;
use sextant_core::rules::gateway::{
    AllowedRoutes, FromNamespaces, GatewayListener, GatewayProtocol, GatewayRule, RouteNamespaces,
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
    tls: Option<Value>,
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
            other => {
                unsupported.push(format!("{at} (protocol {other}: not served yet, HTTP is)"));
                continue;
            }
        };
        if l.tls.is_some() {
            unsupported.push(format!("{at}.tls"));
        }
        let mut from = FromNamespaces::Same;
        if let Some(allowed) = &l.allowed_routes {
            match allowed.namespaces.as_ref().and_then(|n| n.from.as_deref()) {
                None | Some("Same") => {}
                Some("All") => from = FromNamespaces::All,
                Some(other) => unsupported.push(format!(
                    "{at}.allowedRoutes.namespaces.from {other} (not served yet: the Gateway's namespace only)"
                )),
            }
            let http_only = allowed.kinds.iter().all(|k| {
                k["kind"] == "HTTPRoute"
                    && k.get("group")
                        .is_none_or(|g| g == "gateway.networking.k8s.io")
            });
            if !http_only {
                unsupported.push(format!("{at}.allowedRoutes.kinds (HTTPRoutes bind)"));
            }
        }
        listeners.push(GatewayListener {
            name: l.name,
            port: l.port,
            protocol,
            hostname: l.hostname,
            allowed_routes: AllowedRoutes {
                namespaces: RouteNamespaces { from },
            },
        });
    }
    if listeners.is_empty() {
        unsupported.push("spec.listeners (none is served: the Gateway is not served)".into());
        return Ok(Converted {
            rule: None,
            unsupported,
        });
    }
    Ok(Converted {
        rule: Some(Rule::gateway(namespace, name, GatewayRule { listeners })),
        unsupported,
    })
}
