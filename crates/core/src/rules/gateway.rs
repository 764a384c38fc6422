//! Gateways: the listeners a router proxy serves at the edge of the mesh
//! (the Gateway API's `Gateway`, Istio's `Gateway`), and which route rules
//! bind to them.
//!
//! A gateway is a per-proxy rule: it names no host; the router proxies
//! that serve it (`sextant bootstrap --mode router --gateway NS/NAME`)
//! receive its listeners. A route rule binds to a gateway by naming it in
//! its `gateways` (Istio's VirtualService field: `NAMESPACE/NAME`, or
//! `NAME` for a gateway of the rule's own namespace; `mesh` for the
//! sidecars, the default when the list is empty). Its `hosts` are then the
//! names requests carry at the gateway; its destinations are services of
//! the mesh. A listener lets a rule bind only from the namespaces its
//! `allowedRoutes` allow and only for hosts its `hostname` matches.

use serde::{Deserialize, Serialize};

/// A gateway's listeners.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayRule {
    /// What the router proxies listen on; at least one.
    pub listeners: Vec<GatewayListener>,
}

/// One listener of a gateway: a port and what it accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayListener {
    /// Its name, unique within the gateway (a DNS label).
    pub name: String,
    /// The port the router listens on (1-65535).
    pub port: u32,
    /// What it speaks.
    pub protocol: GatewayProtocol,
    /// The host names it accepts (`shop.example.com`, `*.example.com`);
    /// none: every name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Which namespaces' route rules may bind to it.
    #[serde(default)]
    pub allowed_routes: AllowedRoutes,
    /// An HTTPS listener's certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
}

/// How an HTTPS listener terminates TLS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerTls {
    /// The credentials it serves (`NAME` of the gateway's namespace, or
    /// `NAMESPACE/NAME`), [`Credential`]s; the first is offered when a
    /// client names none. At most [`MAX_CERTIFICATES`].
    #[serde(default)]
    pub certificate_refs: Vec<String>,
}

/// The most certificates one listener serves.
pub const MAX_CERTIFICATES: usize = 8;

/// A certificate and its private key, which a gateway's HTTPS listeners
/// name: a Kubernetes `kubernetes.io/tls` Secret, or a `credentials:`
/// entry of a registry file. Reaches only the routers of gateways that
/// name it, over SDS; its key is never shown (see [`crate::Secret`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Credential {
    /// The certificate chain, PEM.
    pub certificate_chain: String,
    /// The private key, PEM.
    pub private_key: crate::Secret,
    /// The namespaces whose gateways may serve it besides its own (a
    /// Kubernetes ReferenceGrant from their Gateways to this Secret; a
    /// file's explicit say). At most [`MAX_GRANTED`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub granted_to: Vec<String>,
}

/// The most namespaces a credential is granted to.
pub const MAX_GRANTED: usize = 64;

/// A credential as a file or an etcd document writes it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialEntry {
    /// Its name.
    pub name: String,
    /// Its namespace.
    #[serde(default = "super::default_namespace")]
    pub namespace: String,
    /// As [`Credential::certificate_chain`].
    pub certificate_chain: String,
    /// As [`Credential::private_key`].
    pub private_key: crate::Secret,
    /// As [`Credential::granted_to`].
    #[serde(default)]
    pub granted_to: Vec<String>,
}

impl From<CredentialEntry> for super::Rule {
    fn from(e: CredentialEntry) -> super::Rule {
        super::Rule::credential(
            e.namespace,
            e.name,
            Credential {
                certificate_chain: e.certificate_chain,
                private_key: e.private_key,
                granted_to: e.granted_to,
            },
        )
    }
}

/// The `(namespace, name)` a certificate reference of a listener of a
/// gateway of namespace `gateway_ns` names.
pub fn credential_ref<'a>(reference: &'a str, gateway_ns: &'a str) -> (&'a str, &'a str) {
    reference.split_once('/').unwrap_or((gateway_ns, reference))
}

/// The protocols of a gateway listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum GatewayProtocol {
    /// Plain HTTP/1.1 and HTTP/2 (h2c).
    Http,
    /// HTTP over TLS terminated at the router.
    Https,
    /// TLS passed through by server name.
    Tls,
    /// Opaque TCP.
    Tcp,
}

impl std::fmt::Display for GatewayProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GatewayProtocol::Http => "HTTP",
            GatewayProtocol::Https => "HTTPS",
            GatewayProtocol::Tls => "TLS",
            GatewayProtocol::Tcp => "TCP",
        })
    }
}

/// Which namespaces' route rules may bind to a listener.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowedRoutes {
    /// The namespaces.
    #[serde(default)]
    pub namespaces: RouteNamespaces,
}

/// The Gateway API's `allowedRoutes.namespaces`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteNamespaces {
    /// `Same` (the gateway's namespace, the default) or `All`.
    #[serde(default)]
    pub from: FromNamespaces,
}

/// Where bound route rules may come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromNamespaces {
    /// The gateway's own namespace.
    #[default]
    Same,
    /// Any namespace.
    All,
}

impl GatewayListener {
    /// Whether a route rule of namespace `rule_ns` may bind to this
    /// listener of a gateway of namespace `gateway_ns`.
    pub fn allows(&self, gateway_ns: &str, rule_ns: &str) -> bool {
        match self.allowed_routes.namespaces.from {
            FromNamespaces::Same => gateway_ns == rule_ns,
            FromNamespaces::All => true,
        }
    }

    /// The name requests for route host `host` carry at this listener:
    /// `host` itself when the listener accepts it (a `*` host takes the
    /// listener's hostname), `None` when it does not.
    pub fn accepts(&self, host: &str) -> Option<String> {
        let Some(own) = &self.hostname else {
            return Some(host.to_owned());
        };
        if host == "*" || host == own {
            return Some(own.clone());
        }
        let under = |pattern: &str, name: &str| {
            pattern
                .strip_prefix('*')
                .is_some_and(|suffix| name.ends_with(suffix) && name.len() > suffix.len())
        };
        // A name under the listener's wildcard, or a route wildcard that
        // covers the listener's name: the narrower one.
        if under(own, host) {
            Some(host.to_owned())
        } else if under(host, own) {
            Some(own.clone())
        } else {
            None
        }
    }
}

/// An entry of a route rule's `gateways` read: `NAME` (a gateway of the
/// rule's namespace), `NAMESPACE/NAME`, `NAMESPACE/NAME/LISTENER` (one
/// listener of it, the Gateway API's `sectionName`), each optionally with
/// `:PORT` (its listeners on that port).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatewayEntryRef<'a> {
    /// The gateway's namespace.
    pub namespace: &'a str,
    /// The gateway's name.
    pub name: &'a str,
    /// The one listener it binds to, if it says.
    pub listener: Option<&'a str>,
    /// The port whose listeners it binds to, if it says.
    pub port: Option<u32>,
}

/// `entry` (of a rule of namespace `rule_ns`) read; `None` for `mesh` or
/// an entry that says nothing readable.
pub fn parse_entry<'a>(entry: &'a str, rule_ns: &'a str) -> Option<GatewayEntryRef<'a>> {
    if entry == MESH {
        return None;
    }
    let (body, port) = match entry.rsplit_once(':') {
        Some((body, port)) => (body, Some(port.parse::<u32>().ok()?)),
        None => (entry, None),
    };
    let parts: Vec<&str> = body.split('/').collect();
    let (namespace, name, listener) = match parts[..] {
        [name] => (rule_ns, name, None),
        [namespace, name] => (namespace, name, None),
        [namespace, name, listener] => (namespace, name, Some(listener)),
        _ => return None,
    };
    Some(GatewayEntryRef {
        namespace,
        name,
        listener,
        port,
    })
}

/// Whether an entry of a route rule's `gateways` (of a rule of namespace
/// `rule_ns`) names gateway `namespace/name` (any of its listeners).
pub fn names_gateway(entry: &str, rule_ns: &str, namespace: &str, name: &str) -> bool {
    parse_entry(entry, rule_ns).is_some_and(|e| e.namespace == namespace && e.name == name)
}

/// Whether an entry of a route rule's `gateways` binds the rule to
/// `listener` of gateway `namespace/name` (the gateway named, and its
/// listener and port, when the entry says them).
pub fn binds(
    entry: &str,
    rule_ns: &str,
    namespace: &str,
    name: &str,
    listener: &GatewayListener,
) -> bool {
    parse_entry(entry, rule_ns).is_some_and(|e| {
        e.namespace == namespace
            && e.name == name
            && e.listener.is_none_or(|l| l == listener.name)
            && e.port.is_none_or(|p| p == listener.port)
    })
}

/// The `gateways` entry that means the sidecars of the mesh.
pub const MESH: &str = "mesh";

/// A gateway as a file or an etcd document writes it: a name, a namespace
/// (default `default`) and its listeners.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayEntry {
    /// The gateway's name.
    pub name: String,
    /// Its namespace.
    #[serde(default = "super::default_namespace")]
    pub namespace: String,
    /// As [`GatewayRule::listeners`].
    pub listeners: Vec<GatewayListener>,
}

impl From<GatewayEntry> for super::Rule {
    fn from(e: GatewayEntry) -> super::Rule {
        super::Rule::gateway(
            e.namespace,
            e.name,
            GatewayRule {
                listeners: e.listeners,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(hostname: Option<&str>, from: FromNamespaces) -> GatewayListener {
        GatewayListener {
            name: "http".into(),
            port: 8080,
            protocol: GatewayProtocol::Http,
            hostname: hostname.map(str::to_owned),
            allowed_routes: AllowedRoutes {
                namespaces: RouteNamespaces { from },
            },
            tls: None,
        }
    }

    /// `gateways` entries: a gateway, one listener of it, its listeners of
    /// one port; `mesh` is none.
    #[test]
    fn entries_bind_to_a_gateway_or_one_listener_or_one_port() {
        let l = listener(None, FromNamespaces::All);
        let other = GatewayListener {
            name: "admin".into(),
            port: 9000,
            ..l.clone()
        };
        for (entry, http, admin) in [
            ("public", true, true),
            ("edge/public", true, true),
            ("edge/public/http", true, false),
            ("edge/public:9000", false, true),
            ("edge/public/admin:9000", false, true),
            ("edge/public/admin:8080", false, false),
            ("edge/private", false, false),
            ("mesh", false, false),
        ] {
            assert_eq!(binds(entry, "edge", "edge", "public", &l), http, "{entry}");
            assert_eq!(
                binds(entry, "edge", "edge", "public", &other),
                admin,
                "{entry}"
            );
        }
        assert!(names_gateway(
            "edge/public/admin:9000",
            "shop",
            "edge",
            "public"
        ));
        assert_eq!(parse_entry("a/b/c/d", "edge"), None);
        assert_eq!(parse_entry("edge/public:http", "edge"), None);
    }

    #[test]
    fn a_listener_accepts_the_names_its_hostname_covers() {
        let any = listener(None, FromNamespaces::Same);
        assert_eq!(
            any.accepts("a.example.com").as_deref(),
            Some("a.example.com")
        );
        let wild = listener(Some("*.example.com"), FromNamespaces::Same);
        assert_eq!(
            wild.accepts("a.example.com").as_deref(),
            Some("a.example.com")
        );
        assert_eq!(wild.accepts("example.com"), None);
        assert_eq!(wild.accepts("a.example.org"), None);
        assert_eq!(wild.accepts("*").as_deref(), Some("*.example.com"));
        let exact = listener(Some("shop.example.com"), FromNamespaces::Same);
        assert_eq!(
            exact.accepts("*.example.com").as_deref(),
            Some("shop.example.com")
        );
        assert_eq!(exact.accepts("other.example.com"), None);
    }

    #[test]
    fn routes_bind_from_the_namespaces_a_listener_allows() {
        assert!(listener(None, FromNamespaces::Same).allows("edge", "edge"));
        assert!(!listener(None, FromNamespaces::Same).allows("edge", "shop"));
        assert!(listener(None, FromNamespaces::All).allows("edge", "shop"));
        assert!(names_gateway("edge/web", "shop", "edge", "web"));
        assert!(names_gateway("web", "edge", "edge", "web"));
        assert!(!names_gateway("web", "shop", "edge", "web"));
        assert!(!names_gateway("mesh", "edge", "edge", "mesh"));
    }
}
