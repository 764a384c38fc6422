//! Istio's `Gateway` (`networking.istio.io`) as a gateway rule
//! ([`sextant_core::rules::gateway`]): each server's port and hosts become
//! listeners, for the router proxies started with `--gateway NS/NAME`
//! (Istio picks its gateway pods by `selector`; here the routers name the
//! Gateway, so `selector` is not read). Pure conversion, no I/O.
//!
//! A server host `NS/NAME` lets VirtualServices of namespace `NS` bind for
//! name `NAME`: `*/NAME` (or no namespace) any namespace's, `./NAME` the
//! Gateway's own. A host naming another particular namespace cannot be
//! said as a listener's allowed namespaces (Same or All) without widening
//! it: it is named as not served. Protocols: `HTTP`, `HTTP2`, `GRPC` as
//! HTTP; `HTTPS` with `tls.mode: SIMPLE` and `credentialName` (a
//! `kubernetes.io/tls` Secret of the Gateway's namespace) as HTTPS; `TLS`
//! or `HTTPS` with `tls.mode: PASSTHROUGH` as TLS; `TCP` (and the other
//! opaque ones) as TCP. What is not served (`MUTUAL` and the other modes,
//! `httpsRedirect`, `bind`, a TCP server's hosts) is named.

use serde::Deserialize;
use serde_json::Value;

use sextant_core::rules::gateway::{
    AllowedRoutes, FromNamespaces, GatewayListener, GatewayProtocol, ListenerTls, RouteNamespaces,
};

use super::Converted;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GatewaySpec {
    #[serde(default)]
    servers: Vec<ServerSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServerSpec {
    port: PortSpec,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    tls: Option<TlsSpec>,
    #[serde(default)]
    bind: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PortSpec {
    number: u32,
    #[serde(default)]
    protocol: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TlsSpec {
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    credential_name: Option<String>,
    #[serde(default)]
    https_redirect: bool,
}

/// A listener name from what the server says (a DNS label).
fn label(name: &str) -> String {
    let cleaned: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let trimmed = cleaned.trim_matches('-');
    if trimmed.is_empty() {
        "server".to_owned()
    } else {
        trimmed.chars().take(50).collect()
    }
}

/// An Istio Gateway's spec as a gateway rule.
pub fn gateway(namespace: &str, name: &str, spec: &Value) -> Result<Converted, String> {
    let spec: GatewaySpec =
        serde_json::from_value(spec.clone()).map_err(|e| format!("spec: {e}"))?;
    let mut unsupported = Vec::new();
    let mut listeners: Vec<GatewayListener> = Vec::new();
    for (i, server) in spec.servers.into_iter().enumerate() {
        let at = format!("spec.servers[{i}]");
        let tls = server.tls.as_ref();
        let mode = tls.and_then(|t| t.mode.as_deref()).unwrap_or("");
        if tls.is_some_and(|t| t.https_redirect) {
            unsupported.push(format!("{at}.tls.httpsRedirect"));
        }
        if server.bind.is_some() {
            unsupported.push(format!(
                "{at}.bind (routers bind where --gateway-bind says)"
            ));
        }
        let protocol = match (server.port.protocol.to_ascii_uppercase().as_str(), mode) {
            ("HTTP" | "HTTP2" | "GRPC", _) => GatewayProtocol::Http,
            ("HTTPS", "SIMPLE" | "") => GatewayProtocol::Https,
            ("HTTPS" | "TLS", "PASSTHROUGH") => GatewayProtocol::Tls,
            ("TCP" | "MONGO" | "REDIS" | "MYSQL", _) => GatewayProtocol::Tcp,
            (protocol, mode) => {
                unsupported.push(format!(
                    "{at} (protocol {protocol}, tls mode {mode}: not served; HTTP, HTTPS SIMPLE, PASSTHROUGH and TCP are: the server is not served)"
                ));
                continue;
            }
        };
        let tls = match protocol {
            GatewayProtocol::Https => {
                match tls
                    .and_then(|t| t.credential_name.as_deref())
                    .filter(|c| !c.is_empty())
                {
                    Some(credential) if !credential.contains('/') => Some(ListenerTls {
                        certificate_refs: vec![credential.to_owned()],
                    }),
                    Some(credential) => {
                        unsupported.push(format!(
                            "{at}.tls.credentialName {credential:?} (a Secret of the Gateway's namespace is read, by its name: the server is not served)"
                        ));
                        continue;
                    }
                    None => {
                        unsupported.push(format!(
                            "{at}.tls.credentialName (none: the server is not served)"
                        ));
                        continue;
                    }
                }
            }
            _ => None,
        };
        let base = label(
            server
                .name
                .as_deref()
                .or(server.port.name.as_deref())
                .unwrap_or(&format!("server-{i}")),
        );
        // The names each server host binds, and whose VirtualServices.
        let mut hosts: Vec<(Option<String>, FromNamespaces)> = Vec::new();
        for (j, h) in server.hosts.iter().enumerate() {
            let (ns, host) = match h.split_once('/') {
                Some((ns, host)) => (ns, host),
                None => ("*", h.as_str()),
            };
            let from = match ns {
                "*" => FromNamespaces::All,
                "." => FromNamespaces::Same,
                other if other == namespace => FromNamespaces::Same,
                other => {
                    unsupported.push(format!(
                        "{at}.hosts[{j}] ({other}/{host}: VirtualServices of one other namespace cannot be told apart yet; use */ or ./)"
                    ));
                    continue;
                }
            };
            let hostname = (host != "*").then(|| host.to_owned());
            if protocol == GatewayProtocol::Tcp {
                hosts.push((None, from));
                break;
            }
            match hosts.iter_mut().find(|(h, _)| *h == hostname) {
                // The same name twice: the wider namespaces hold.
                Some((_, f)) => {
                    if from == FromNamespaces::All {
                        *f = FromNamespaces::All;
                    }
                }
                None => hosts.push((hostname, from)),
            }
        }
        if hosts.is_empty() {
            unsupported.push(format!(
                "{at}.hosts (none served: the server is not served)"
            ));
            continue;
        }
        let many = hosts.len() > 1;
        for (j, (hostname, from)) in hosts.into_iter().enumerate() {
            let clash = listeners.iter().any(|l| {
                l.port == server.port.number && (l.hostname == hostname || l.protocol != protocol)
            });
            if clash {
                unsupported.push(format!(
                    "{at} (port {} already serves {} for another server: not served again)",
                    server.port.number,
                    hostname.as_deref().unwrap_or("every name")
                ));
                continue;
            }
            listeners.push(GatewayListener {
                name: if many {
                    format!("{base}-{j}")
                } else {
                    base.clone()
                },
                port: server.port.number,
                protocol,
                hostname,
                allowed_routes: AllowedRoutes {
                    namespaces: RouteNamespaces { from },
                },
                tls: tls.clone(),
            });
        }
    }
    // Listener names are unique in a gateway.
    let mut seen = std::collections::BTreeSet::new();
    for l in &mut listeners {
        let mut n = 1;
        let base = l.name.clone();
        while !seen.insert(l.name.clone()) {
            n += 1;
            l.name = format!("{base}-{n}");
        }
    }
    Ok(crate::gateway::served(
        namespace,
        name,
        listeners,
        "spec.servers",
        unsupported,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(yaml: &str) -> Converted {
        let spec: Value = serde_yaml_ng::from_str(yaml).expect("yaml");
        gateway("edge", "public", &spec).expect("converts")
    }

    /// Servers become listeners: hosts by name and namespace, HTTPS with
    /// its credential, PASSTHROUGH as TLS; what is not served is named.
    #[test]
    fn servers_become_listeners() {
        let c = convert(
            "selector: {istio: ingressgateway}\nservers:\n\
             - port: {number: 80, name: http, protocol: HTTP}\n  hosts: ['*/shop.example.com', './admin.example.com']\n\
             - port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [shop.example.com]\n  tls: {mode: SIMPLE, credentialName: shop-cert}\n\
             - port: {number: 8443, name: tls, protocol: TLS}\n  hosts: ['*.example.com']\n  tls: {mode: PASSTHROUGH}\n\
             - port: {number: 5432, name: db, protocol: TCP}\n  hosts: ['*']\n\
             - port: {number: 9443, name: mtls, protocol: HTTPS}\n  hosts: ['*']\n  tls: {mode: MUTUAL, credentialName: x}\n\
             - port: {number: 81, name: other, protocol: HTTP}\n  hosts: ['billing/pay.example.com']\n",
        );
        let rule = c.rule.as_ref().expect("a rule");
        assert!(rule.validate().is_ok(), "{:?}", rule.validate());
        let gw = rule.as_gateway().expect("a gateway");
        let seen: Vec<String> = gw
            .listeners
            .iter()
            .map(|l| {
                format!(
                    "{} {} {} {} {:?}",
                    l.name,
                    l.port,
                    l.protocol,
                    l.hostname.as_deref().unwrap_or("*"),
                    l.allowed_routes.namespaces.from
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                "http-0 80 HTTP shop.example.com All",
                "http-1 80 HTTP admin.example.com Same",
                "https 443 HTTPS shop.example.com All",
                "tls 8443 TLS *.example.com All",
                "db 5432 TCP * All",
            ]
        );
        assert_eq!(
            gw.listeners[2]
                .tls
                .as_ref()
                .map(|t| t.certificate_refs.clone()),
            Some(vec!["shop-cert".to_owned()])
        );
        let said = c.unsupported.join("\n");
        assert!(
            said.contains("spec.servers[4] (protocol HTTPS, tls mode MUTUAL"),
            "{said}"
        );
        assert!(
            said.contains("spec.servers[5].hosts[0] (billing/pay.example.com"),
            "{said}"
        );
    }
}
