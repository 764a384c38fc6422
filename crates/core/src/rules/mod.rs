//! Traffic rules as a second stream beside services: where they come from
//! ([`RuleSource`]), what they say ([`RouteRule`], [`DestinationPolicy`],
//! Istio's VirtualService and DestinationRule) and what the aggregator
//! attaches to the services they bind to ([`Rule`]).
//!
//! A source reports rules with the same vocabulary as services,
//! [`Event<Rule>`](crate::Event): a whole state (`Reset`), one rule added or
//! replaced (`Apply`), one removed (`Delete` by [`RuleKey`]). Readiness,
//! staleness and problems work as for registries. One adapter may implement
//! both [`crate::Registry`] and [`RuleSource`] (Kubernetes: Services and
//! VirtualServices; Consul: the catalog and config entries), or either.
//!
//! The file format of a rule is its Istio spec beside a name and namespace
//! ([`RouteEntry`], [`PolicyEntry`]): `routes:` entries are VirtualService specs (HTTP part),
//! `policies:` entries DestinationRule specs.

use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::error::Error;
use crate::model::Hostname;
use crate::registry::{Event, Keyed, RegistryId};

pub mod analyze;
pub mod authz;
pub mod check;
pub mod common;
pub mod gateway;
pub mod peer;
pub mod policy;
pub mod precedence;
pub mod route;
pub mod scope;

pub use analyze::{Warning, analyze};
pub use authz::{AuthzAction, AuthzEntry, AuthzRule};
pub use check::{RuleProblem, RuleProblems};
pub use common::{Duration, HeaderCondition, Percent, PortSelector, StringMatch, percentages};
pub use gateway::{GatewayEntry, GatewayListener, GatewayProtocol, GatewayRule};
pub use peer::{MtlsMode, PeerAuthEntry, PeerAuthRule, PeerModes};
pub use policy::{
    ClientTls, ConnectionPool, ConsistentHash, DestinationPolicy, EffectivePolicy, HashCookie,
    HttpPool, LoadBalancer, OutlierDetection, PortTrafficPolicy, SimpleLb, Subset, TcpPool,
    TlsMode, TrafficPolicy,
};
pub use route::{
    DEFAULT_RETRY_ON, Destination, Fault, FaultAbort, FaultDelay, GRPC_CODES, GRPC_RETRY_ON,
    HTTP_RETRY_ON, HeaderOperations, Headers, HttpMatch, HttpRoute, L4Match, Redirect, Retries,
    Rewrite, RouteDestination, RouteRule, TcpRoute, TlsMatch, TlsRoute,
};
pub use scope::{
    Deliver, HostPattern, IngressListener, IngressPort, OutboundMode, OutboundTrafficPolicy,
    ScopeEntry, ScopeHost, ScopeNamespace, ScopeRule, Selected,
};

/// The kinds of rule.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// A [`RouteRule`] (Istio's VirtualService).
    Route,
    /// A [`DestinationPolicy`] (Istio's DestinationRule).
    Policy,
    /// A [`ScopeRule`] (the egress hosts of Istio's Sidecar): binds to no
    /// host; the xDS server applies it per proxy.
    Scope,
    /// A [`PeerAuthRule`] (Istio's PeerAuthentication): binds to no host;
    /// the xDS server applies it per proxy.
    PeerAuth,
    /// An [`AuthzRule`] (Istio's AuthorizationPolicy): binds to no host;
    /// the xDS server applies it per proxy.
    Authz,
    /// A [`GatewayRule`] (a Gateway's listeners): binds to no host; the
    /// router proxies that serve it receive it.
    Gateway,
    /// A [`gateway::Credential`] (a certificate and key): binds to no
    /// host; the routers of the gateways that name it receive it.
    Credential,
}

impl RuleKind {
    /// Rules of this kind bind to no host: the view lists them all
    /// ([`crate::MeshView::scopes`]) and the xDS server picks per proxy.
    pub fn per_proxy(self) -> bool {
        matches!(
            self,
            RuleKind::Scope
                | RuleKind::PeerAuth
                | RuleKind::Authz
                | RuleKind::Gateway
                | RuleKind::Credential
        )
    }
}

impl std::fmt::Display for RuleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RuleKind::Route => "route",
            RuleKind::Policy => "policy",
            RuleKind::Scope => "scope",
            RuleKind::PeerAuth => "peer_authentication",
            RuleKind::Authz => "authorization_policy",
            RuleKind::Gateway => "gateway",
            RuleKind::Credential => "credential",
        })
    }
}

/// A rule's identity within its source: kind, namespace and name, as the
/// platform's object (a VirtualService, a config entry) is named. A route
/// rule and a policy may share a name, as Istio objects often do.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct RuleKey {
    /// Route rule or destination policy.
    pub kind: RuleKind,
    /// The namespace (empty where the platform has none).
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl RuleKey {
    /// `kind namespace/name`.
    pub fn new(kind: RuleKind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        RuleKey {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for RuleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// A traffic rule and the services it binds to.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Rule {
    /// Its identity within its source.
    pub key: RuleKey,
    /// The hostnames it binds to: a change to the rule re-translates these
    /// services and no others.
    pub hosts: Vec<Hostname>,
    /// What it says.
    pub spec: RuleSpec,
}

/// What a rule says.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleSpec {
    /// How requests to its hosts are routed.
    Route(RouteRule),
    /// How traffic to its host is balanced, and its subsets.
    Policy(Box<DestinationPolicy>),
    /// Which hosts the proxies it selects may see.
    Scope(ScopeRule),
    /// What the workloads it selects accept inbound.
    PeerAuth(PeerAuthRule),
    /// Which requests the workloads it selects let through.
    Authz(AuthzRule),
    /// What the router proxies that serve it listen on.
    Gateway(GatewayRule),
    /// A certificate and key gateways name.
    Credential(gateway::Credential),
}

impl Rule {
    /// A route rule, bound to its `hosts` when it is for the mesh's
    /// sidecars ([`RouteRule::for_mesh`]); a rule for gateways only binds
    /// to no service (its hosts are names at the gateway).
    pub fn route(namespace: impl Into<String>, name: impl Into<String>, rule: RouteRule) -> Rule {
        Rule {
            key: RuleKey::new(RuleKind::Route, namespace, name),
            hosts: if rule.for_mesh() {
                rule.hosts.clone()
            } else {
                Vec::new()
            },
            spec: RuleSpec::Route(rule),
        }
    }

    /// A gateway's listeners; it binds to no host.
    pub fn gateway(
        namespace: impl Into<String>,
        name: impl Into<String>,
        rule: GatewayRule,
    ) -> Rule {
        Rule {
            key: RuleKey::new(RuleKind::Gateway, namespace, name),
            hosts: Vec::new(),
            spec: RuleSpec::Gateway(rule),
        }
    }

    /// A credential (certificate and key); it binds to no host.
    pub fn credential(
        namespace: impl Into<String>,
        name: impl Into<String>,
        credential: gateway::Credential,
    ) -> Rule {
        Rule {
            key: RuleKey::new(RuleKind::Credential, namespace, name),
            hosts: Vec::new(),
            spec: RuleSpec::Credential(credential),
        }
    }

    /// The credential, if it is one.
    pub fn as_credential(&self) -> Option<&gateway::Credential> {
        match &self.spec {
            RuleSpec::Credential(c) => Some(c),
            _ => None,
        }
    }

    /// The gateway, if it is one.
    pub fn as_gateway(&self) -> Option<&GatewayRule> {
        match &self.spec {
            RuleSpec::Gateway(g) => Some(g),
            _ => None,
        }
    }

    /// Whether the xDS server picks it per proxy ([`crate::MeshView::scopes`]):
    /// the kinds that bind to no host, and route rules bound to gateways.
    pub fn per_proxy(&self) -> bool {
        self.key.kind.per_proxy() || self.as_route().is_some_and(RouteRule::for_gateways)
    }

    /// A destination policy, bound to its `host`.
    pub fn policy(
        namespace: impl Into<String>,
        name: impl Into<String>,
        policy: DestinationPolicy,
    ) -> Rule {
        Rule {
            key: RuleKey::new(RuleKind::Policy, namespace, name),
            hosts: vec![policy.host.clone()],
            spec: RuleSpec::Policy(Box::new(policy)),
        }
    }

    /// A scope rule for the proxies of `namespace`; it binds to no host.
    pub fn scope(namespace: impl Into<String>, name: impl Into<String>, scope: ScopeRule) -> Rule {
        Rule {
            key: RuleKey::new(RuleKind::Scope, namespace, name),
            hosts: Vec::new(),
            spec: RuleSpec::Scope(scope),
        }
    }

    /// A peer authentication rule for the workloads of `namespace`; it
    /// binds to no host.
    pub fn peer_auth(
        namespace: impl Into<String>,
        name: impl Into<String>,
        rule: PeerAuthRule,
    ) -> Rule {
        Rule {
            key: RuleKey::new(RuleKind::PeerAuth, namespace, name),
            hosts: Vec::new(),
            spec: RuleSpec::PeerAuth(rule),
        }
    }

    /// An authorization policy for the workloads of `namespace`; it binds
    /// to no host.
    pub fn authz(namespace: impl Into<String>, name: impl Into<String>, rule: AuthzRule) -> Rule {
        Rule {
            key: RuleKey::new(RuleKind::Authz, namespace, name),
            hosts: Vec::new(),
            spec: RuleSpec::Authz(rule),
        }
    }

    /// The authorization policy, if it is one.
    pub fn as_authz(&self) -> Option<&AuthzRule> {
        match &self.spec {
            RuleSpec::Authz(a) => Some(a),
            _ => None,
        }
    }

    /// The peer authentication rule, if it is one.
    pub fn as_peer_auth(&self) -> Option<&PeerAuthRule> {
        match &self.spec {
            RuleSpec::PeerAuth(p) => Some(p),
            _ => None,
        }
    }

    /// The route rule, if it is one.
    pub fn as_route(&self) -> Option<&RouteRule> {
        match &self.spec {
            RuleSpec::Route(r) => Some(r),
            _ => None,
        }
    }

    /// Its `exportTo` (route rules and destination policies; empty for
    /// the others, which apply per proxy by their own selection).
    pub fn export_to(&self) -> &[String] {
        match &self.spec {
            RuleSpec::Route(r) => &r.export_to,
            RuleSpec::Policy(p) => &p.export_to,
            RuleSpec::Scope(_)
            | RuleSpec::PeerAuth(_)
            | RuleSpec::Authz(_)
            | RuleSpec::Gateway(_)
            | RuleSpec::Credential(_) => &[],
        }
    }

    /// Whether it applies to the proxies of `namespace` (see
    /// [`crate::export`]).
    pub fn exported_to(&self, namespace: Option<&str>) -> bool {
        crate::export::exported(self.export_to(), &self.key.namespace, namespace)
    }

    /// The destination policy, if it is one.
    pub fn as_policy(&self) -> Option<&DestinationPolicy> {
        match &self.spec {
            RuleSpec::Policy(p) => Some(p),
            _ => None,
        }
    }

    /// The scope rule, if it is one.
    pub fn as_scope(&self) -> Option<&ScopeRule> {
        match &self.spec {
            RuleSpec::Scope(s) => Some(s),
            _ => None,
        }
    }
}

/// A route rule as a file or an etcd document writes it: a name, a
/// namespace (default `default`) and the VirtualService spec's fields.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteEntry {
    /// The rule's name.
    pub name: String,
    /// Its namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// As [`RouteRule::hosts`].
    pub hosts: Vec<Hostname>,
    /// As [`RouteRule::http`].
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    /// As [`RouteRule::tcp`].
    #[serde(default)]
    pub tcp: Vec<route::TcpRoute>,
    /// As [`RouteRule::tls`].
    #[serde(default)]
    pub tls: Vec<route::TlsRoute>,
    /// As [`RouteRule::export_to`].
    #[serde(default)]
    pub export_to: Vec<String>,
    /// As [`RouteRule::gateways`].
    #[serde(default)]
    pub gateways: Vec<String>,
}

/// A destination policy as a file or an etcd document writes it: a name,
/// a namespace (default `default`) and the DestinationRule spec's fields.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyEntry {
    /// The policy's name.
    pub name: String,
    /// Its namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// As [`DestinationPolicy::host`].
    pub host: Hostname,
    /// As [`DestinationPolicy::traffic_policy`].
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
    /// As [`DestinationPolicy::subsets`].
    #[serde(default)]
    pub subsets: Vec<Subset>,
    /// As [`DestinationPolicy::export_to`].
    #[serde(default)]
    pub export_to: Vec<String>,
}

pub(crate) fn default_namespace() -> String {
    "default".to_owned()
}

impl From<RouteEntry> for Rule {
    fn from(e: RouteEntry) -> Rule {
        Rule::route(
            e.namespace,
            e.name,
            RouteRule {
                hosts: e.hosts,
                http: e.http,
                tcp: e.tcp,
                tls: e.tls,
                export_to: e.export_to,
                gateways: e.gateways,
            },
        )
    }
}

impl From<PolicyEntry> for Rule {
    fn from(e: PolicyEntry) -> Rule {
        Rule::policy(
            e.namespace,
            e.name,
            DestinationPolicy {
                host: e.host,
                traffic_policy: e.traffic_policy,
                subsets: e.subsets,
                export_to: e.export_to,
            },
        )
    }
}

impl Keyed for Rule {
    type Key = RuleKey;
    fn key(&self) -> RuleKey {
        self.key.clone()
    }
}

/// The stream a rule source returns from [`RuleSource::watch_rules`]:
/// endless, errors on it as for [`crate::EventStream`].
pub type RuleStream = BoxStream<'static, Result<Event<Rule>, Error>>;

/// A source of traffic rules, the second stream beside services (Istio
/// keeps its ConfigStore apart from service discovery in the same way).
pub trait RuleSource: Send + Sync + 'static {
    /// This source's id, such as `k8s/cluster-a`; it may equal a
    /// registry's id when one adapter is both.
    fn id(&self) -> &RegistryId;

    /// Starts watching: a `Reset` after the first full read, then changes.
    fn watch_rules(&self) -> RuleStream;
}

/// Rules fed by code, for tests and embedders (the counterpart of
/// [`crate::MemoryRegistry`]). Clones share state.
#[derive(Clone)]
pub struct MemoryRules {
    id: RegistryId,
    inner: Arc<Mutex<MemoryRulesInner>>,
}

struct MemoryRulesInner {
    rules: Vec<Rule>,
    watchers: Vec<mpsc::UnboundedSender<Result<Event<Rule>, Error>>>,
}

impl MemoryRules {
    /// An empty source that counts as synced at once.
    pub fn new(id: impl Into<RegistryId>) -> Self {
        MemoryRules {
            id: id.into(),
            inner: Arc::new(Mutex::new(MemoryRulesInner {
                rules: Vec::new(),
                watchers: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, MemoryRulesInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(inner: &mut MemoryRulesInner, event: &Event<Rule>) {
        inner.watchers.retain(|w| w.send(Ok(event.clone())).is_ok());
    }

    /// Adds or replaces a rule.
    pub fn insert(&self, rule: Rule) {
        let mut inner = self.lock();
        inner.rules.retain(|r| r.key != rule.key);
        inner.rules.push(rule.clone());
        Self::send(&mut inner, &Event::Apply(rule));
    }

    /// Removes a rule.
    pub fn remove(&self, key: &RuleKey) {
        let mut inner = self.lock();
        inner.rules.retain(|r| &r.key != key);
        Self::send(&mut inner, &Event::Delete(key.clone()));
    }

    /// Replaces every rule, sent as one `Reset`.
    pub fn reset(&self, rules: Vec<Rule>) {
        let mut inner = self.lock();
        inner.rules = rules.clone();
        Self::send(&mut inner, &Event::Reset(rules));
    }

    /// Sends an error to every watcher, as an adapter would when its source
    /// fails ([`Error::Unavailable`]) or an object is malformed.
    pub fn fail(&self, error: impl Fn() -> Error) {
        self.lock()
            .watchers
            .retain(|w| w.send(Err(error())).is_ok());
    }

    /// The current rules.
    pub fn rules(&self) -> Vec<Rule> {
        self.lock().rules.clone()
    }
}

impl RuleSource for MemoryRules {
    fn id(&self) -> &RegistryId {
        &self.id
    }

    fn watch_rules(&self) -> RuleStream {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        let _ = tx.send(Ok(Event::Reset(inner.rules.clone())));
        inner.watchers.push(tx);
        UnboundedReceiverStream::new(rx).boxed()
    }
}

/// An `IP` or `IP/PREFIX` of an authorization policy: the address and the
/// prefix length; `None` when it is neither.
pub fn authz_cidr(s: &str) -> Option<(std::net::IpAddr, u32)> {
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (
            ip.parse::<std::net::IpAddr>().ok()?,
            Some(len.parse::<u32>().ok()?),
        ),
        None => (s.parse::<std::net::IpAddr>().ok()?, None),
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(max);
    (len <= max).then_some((ip, len))
}
