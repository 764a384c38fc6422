//! Scopes: which hosts a workload's proxy may see (the egress part of
//! Istio's `Sidecar` resource).
//!
//! A [`ScopeRule`] lives in a namespace and applies to the proxies of that
//! namespace, all of them or those whose labels match its workload
//! selector. It lists hosts as `NAMESPACE/HOSTPATTERN` ([`ScopeHost`]):
//! `./*` (everything in the proxy's own namespace), `shared/*`,
//! `*/reviews.default.svc.cluster.local`, `*/*.example.com`, `~/*`
//! (nothing). A scope rule binds to no service: the aggregator publishes
//! every scope rule in the view ([`crate::MeshView::scopes`]) and the xDS
//! server picks, per proxy, the one in force ([`select`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::Rule;
use crate::model::Labels;

/// Which hosts the selected proxies may see.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScopeRule {
    /// The proxies it applies to, by workload labels; empty: every proxy of
    /// the rule's namespace.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub workload_selector: Labels,
    /// The hosts they may see; a host is visible when any entry matches it.
    /// Empty (a Sidecar without `egress`): the mesh's default hosts.
    pub hosts: Vec<ScopeHost>,
    /// What their capture-mode proxies do with destinations outside the
    /// mesh (Istio's Sidecar `outboundTrafficPolicy`); `None`: the mesh's
    /// setting (`--outbound-traffic-policy`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbound: Option<OutboundMode>,
    /// Where their capture-mode proxies deliver inbound traffic (Istio's
    /// Sidecar `ingress`): when present, these ports replace the ones
    /// found from the workload's endpoints.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IngressListener>,
}

/// One of Istio's Sidecar `ingress` listeners: traffic captured for
/// `port` goes to `defaultEndpoint`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressListener {
    /// The port traffic arrives on.
    pub port: IngressPort,
    /// Where it goes: `127.0.0.1:PORT` (or `[::1]:PORT`), or
    /// `0.0.0.0:PORT` for the workload's own address; absent: the same
    /// port on loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
}

/// An ingress listener's port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressPort {
    /// The number.
    pub number: u32,
    /// `HTTP`, `HTTP2`, `GRPC`, `TCP`, `TLS`...; from the name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Where an ingress listener delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deliver {
    /// To this loopback address and port.
    Loopback(std::net::SocketAddr),
    /// To the workload's own address, at this port.
    Instance(u16),
}

impl IngressListener {
    /// Where it delivers; `Err` says why it cannot (a unix socket, an
    /// address that is neither loopback nor `0.0.0.0`).
    pub fn deliver(&self) -> Result<Deliver, String> {
        let Some(endpoint) = self.default_endpoint.as_deref() else {
            let port = u16::try_from(self.port.number)
                .map_err(|_| format!("port {} is not a port number", self.port.number))?;
            return Ok(Deliver::Loopback(std::net::SocketAddr::from((
                [127, 0, 0, 1],
                port,
            ))));
        };
        if endpoint.starts_with("unix://") {
            return Err(format!(
                "defaultEndpoint {endpoint:?}: unix domain sockets are not served"
            ));
        }
        let addr: std::net::SocketAddr = endpoint.parse().map_err(|_| {
            format!("defaultEndpoint {endpoint:?} is not IP:PORT (127.0.0.1:8080, 0.0.0.0:8080)")
        })?;
        if addr.port() == 0 {
            return Err(format!("defaultEndpoint {endpoint:?}: port 0"));
        }
        if addr.ip().is_unspecified() {
            Ok(Deliver::Instance(addr.port()))
        } else if addr.ip().is_loopback() {
            Ok(Deliver::Loopback(addr))
        } else {
            Err(format!(
                "defaultEndpoint {endpoint:?}: only loopback or 0.0.0.0 (the workload's own address)"
            ))
        }
    }

    /// Its protocol: the one named, else from the port's name.
    pub fn protocol(&self) -> crate::model::Protocol {
        use crate::model::Protocol;
        match self
            .port
            .protocol
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            Some("HTTP") => Protocol::Http,
            Some("HTTP2") => Protocol::Http2,
            Some("GRPC" | "GRPC-WEB") => Protocol::Grpc,
            Some("HTTPS" | "TLS") => Protocol::Tls,
            Some(_) => Protocol::Tcp,
            None => self
                .port
                .name
                .as_deref()
                .map_or(Protocol::Tcp, Protocol::from_port_name),
        }
    }
}

/// Istio's `outboundTrafficPolicy.mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    /// Destinations outside the mesh are passed through.
    AllowAny,
    /// Only the services the proxy sees are reachable (ServiceEntries
    /// declare the rest).
    RegistryOnly,
}

/// Istio's `outboundTrafficPolicy`: its mode (an `egressProxy` is not
/// served).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    /// ALLOW_ANY or REGISTRY_ONLY.
    pub mode: OutboundMode,
}

/// One `NAMESPACE/HOSTPATTERN` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopeHost {
    /// Whose services.
    pub namespace: ScopeNamespace,
    /// Which of their hostnames.
    pub host: HostPattern,
}

/// The namespace half of a [`ScopeHost`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScopeNamespace {
    /// `*`: every namespace.
    Any,
    /// `.`: the proxy's own namespace.
    Own,
    /// `~`: none (Istio's way to say "nothing of these hosts").
    Nothing,
    /// A namespace by name.
    Named(String),
}

/// The host half of a [`ScopeHost`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// `*`: every host.
    Any,
    /// `*.example.com`: hosts ending in `.example.com` (the dot included).
    Suffix(String),
    /// An exact hostname.
    Exact(String),
}

impl ScopeHost {
    /// Parses `NAMESPACE/HOSTPATTERN`; the error says what is wrong.
    pub fn parse(s: &str) -> Result<ScopeHost, String> {
        let Some((ns, host)) = s.split_once('/') else {
            return Err(format!(
                "{s:?} is not NAMESPACE/HOST (such as \"./*\", \"shared/*\", \"*/reviews.default.svc.cluster.local\")"
            ));
        };
        let namespace = match ns {
            "*" => ScopeNamespace::Any,
            "." => ScopeNamespace::Own,
            "~" => ScopeNamespace::Nothing,
            "" => return Err(format!("{s:?}: the namespace is empty")),
            n if n.contains(['*', '/']) || crate::validate::dns_name_problem(n).is_some() => {
                return Err(format!(
                    "{s:?}: namespace {n:?} is not \"*\", \".\", \"~\" or a namespace name"
                ));
            }
            n => ScopeNamespace::Named(n.to_owned()),
        };
        let host = match host {
            "*" => HostPattern::Any,
            "" => return Err(format!("{s:?}: the host is empty")),
            h if h.starts_with("*.") && !h[2..].contains('*') && h.len() > 2 => {
                HostPattern::Suffix(h[1..].to_ascii_lowercase())
            }
            h if h.contains('*') || h.contains('/') => {
                return Err(format!(
                    "{s:?}: host {h:?} is not \"*\", \"*.SUFFIX\" or a hostname"
                ));
            }
            h => HostPattern::Exact(h.to_ascii_lowercase()),
        };
        Ok(ScopeHost { namespace, host })
    }

    /// Whether a service `hostname` in `namespace` is visible to a proxy of
    /// `own` namespace (`None`: a proxy without identity, for which `.`
    /// means nothing).
    pub fn matches(&self, own: Option<&str>, namespace: &str, hostname: &str) -> bool {
        let ns = match &self.namespace {
            ScopeNamespace::Any => true,
            ScopeNamespace::Own => own == Some(namespace),
            ScopeNamespace::Nothing => false,
            ScopeNamespace::Named(n) => n == namespace,
        };
        ns && match &self.host {
            HostPattern::Any => true,
            HostPattern::Suffix(s) => hostname.len() > s.len() && hostname.ends_with(s.as_str()),
            HostPattern::Exact(h) => h == hostname,
        }
    }
}

impl fmt::Display for ScopeHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            ScopeNamespace::Any => f.write_str("*")?,
            ScopeNamespace::Own => f.write_str(".")?,
            ScopeNamespace::Nothing => f.write_str("~")?,
            ScopeNamespace::Named(n) => f.write_str(n)?,
        }
        f.write_str("/")?;
        match &self.host {
            HostPattern::Any => f.write_str("*"),
            HostPattern::Suffix(s) => write!(f, "*{s}"),
            HostPattern::Exact(h) => f.write_str(h),
        }
    }
}

impl serde::Serialize for ScopeHost {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ScopeHost {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ScopeHost::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl ScopeRule {
    /// Whether this rule applies to a proxy with `labels` (its namespace
    /// already matched).
    pub fn selects(&self, labels: &Labels) -> bool {
        self.workload_selector
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// The scope in force for one proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selected {
    /// A scope rule (its namespace and name say which).
    Rule(Arc<Rule>),
    /// The mesh-wide default hosts (no rule applies).
    Default,
}

/// The scope rule in force for a proxy of `namespace` with `labels`, from
/// `scopes` in precedence order (source priority, then namespace and name,
/// as the view lists them). Istio's order: a rule of the proxy's namespace
/// whose workload selector matches; else that namespace's rule without a
/// selector; else the root namespace's rule without a selector (the
/// mesh-wide one); else [`Selected::Default`]. A proxy without a namespace
/// gets the root namespace's rule or the default.
pub fn select(
    scopes: &[Arc<Rule>],
    root_namespace: &str,
    namespace: Option<&str>,
    labels: &Labels,
) -> Selected {
    let scope_rules = || scopes.iter().filter_map(|r| r.as_scope().map(|s| (r, s)));
    if let Some(ns) = namespace {
        let in_ns = || scope_rules().filter(|(r, _)| r.key.namespace == ns);
        if let Some((r, _)) =
            in_ns().find(|(_, s)| !s.workload_selector.is_empty() && s.selects(labels))
        {
            return Selected::Rule(r.clone());
        }
        if let Some((r, _)) = in_ns().find(|(_, s)| s.workload_selector.is_empty()) {
            return Selected::Rule(r.clone());
        }
    }
    scope_rules()
        .find(|(r, s)| r.key.namespace == root_namespace && s.workload_selector.is_empty())
        .map_or(Selected::Default, |(r, _)| Selected::Rule(r.clone()))
}

/// A scope rule as a file or an etcd document writes it: Istio's `Sidecar`
/// spec (its egress hosts and workload selector) beside a name and
/// namespace, so that the same YAML serves both.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScopeEntry {
    /// The rule's name.
    pub name: String,
    /// The namespace whose proxies it applies to.
    #[serde(default = "super::default_namespace")]
    pub namespace: String,
    /// Which of them, by labels.
    #[serde(default)]
    pub workload_selector: Option<WorkloadSelector>,
    /// The hosts they may see: the union of every entry's hosts; absent:
    /// the mesh's default hosts.
    #[serde(default)]
    pub egress: Vec<EgressEntry>,
    /// Destinations outside the mesh, for these proxies.
    #[serde(default)]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    /// Where their inbound traffic is delivered.
    #[serde(default)]
    pub ingress: Vec<IngressListener>,
}

/// Istio's `workloadSelector`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Labels a workload must carry, all of them.
    #[serde(default)]
    pub labels: Labels,
}

/// One of Istio's `egress` listeners; Sextant reads its hosts.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressEntry {
    /// `NAMESPACE/HOSTPATTERN` entries.
    pub hosts: Vec<ScopeHost>,
}

impl From<ScopeEntry> for Rule {
    fn from(e: ScopeEntry) -> Rule {
        Rule::scope(
            e.namespace,
            e.name,
            ScopeRule {
                workload_selector: e.workload_selector.map(|w| w.labels).unwrap_or_default(),
                hosts: e.egress.into_iter().flat_map(|e| e.hosts).collect(),
                outbound: e.outbound_traffic_policy.map(|p| p.mode),
                ingress: e.ingress,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> ScopeHost {
        ScopeHost::parse(s).expect(s)
    }

    #[test]
    fn entries_parse_print_and_match_as_istio_writes_them() {
        for s in [
            "./*",
            "shared/*",
            "*/reviews.default.svc",
            "*/*.example.com",
            "~/*",
        ] {
            assert_eq!(h(s).to_string(), s);
        }
        let own = h("./*");
        assert!(own.matches(Some("shop"), "shop", "a.shop.svc"));
        assert!(!own.matches(Some("shop"), "other", "a.other.svc"));
        assert!(!own.matches(None, "shop", "a.shop.svc"));
        let suffix = h("*/*.example.com");
        assert!(suffix.matches(None, "x", "api.example.com"));
        assert!(!suffix.matches(None, "x", "example.com"));
        assert!(!suffix.matches(None, "x", "api.example.community"));
        let exact = h("shared/Auth.Shared.svc");
        assert!(exact.matches(None, "shared", "auth.shared.svc"));
        assert!(!exact.matches(None, "other", "auth.shared.svc"));
        assert!(!h("~/*").matches(Some("a"), "a", "a.svc"));
        for bad in [
            "*", "/x", "a/", "a/b*c", "*.x/y", "UPPER_/x", "a/**.x", "a/b/c",
        ] {
            assert!(ScopeHost::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selection_follows_istios_order() {
        let rule = |ns: &str, name: &str, sel: &[(&str, &str)]| {
            Arc::new(Rule::scope(
                ns,
                name,
                ScopeRule {
                    workload_selector: sel
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    hosts: vec![h("./*")],
                    outbound: None,
                    ingress: Vec::new(),
                },
            ))
        };
        let scopes = vec![
            rule("istio-system", "mesh", &[]),
            rule("shop", "all", &[]),
            rule("shop", "web", &[("app", "web")]),
        ];
        let labels = |app: &str| Labels::from([("app".to_owned(), app.to_owned())]);
        let name = |s: Selected| match s {
            Selected::Rule(r) => r.key.name.clone(),
            Selected::Default => "default".to_owned(),
        };
        let root = "istio-system";
        assert_eq!(
            name(select(&scopes, root, Some("shop"), &labels("web"))),
            "web"
        );
        assert_eq!(
            name(select(&scopes, root, Some("shop"), &labels("db"))),
            "all"
        );
        assert_eq!(
            name(select(&scopes, root, Some("pay"), &labels("web"))),
            "mesh"
        );
        assert_eq!(name(select(&scopes, root, None, &labels("web"))), "mesh");
        assert_eq!(
            name(select(&scopes[1..], root, None, &labels("x"))),
            "default"
        );
    }
}
