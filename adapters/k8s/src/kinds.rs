//! The kinds of object the adapter reads, and what the API server calls
//! them: one place for names, API groups, versions and the RBAC a kind needs.

use k8s_openapi::api::core::v1::{Node, Pod, Service as KService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ApiResource;

/// A kind read by a session: the services session reads the first four,
/// the rules session the CRD kinds (and Services, for route status).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    Service,
    Slice,
    Node,
    Pod,
    /// `kubernetes.io/tls` Secrets that Sextant's Gateways name (the rules
    /// session, only while Gateways are served).
    Secret,
    /// `networking.k8s.io/v1` Ingresses of Sextant's class (the rules
    /// session).
    Ingress,
    Crd(CrdKind),
}

/// The kinds defined by CRDs (Istio's, the Gateway API's), read as rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum CrdKind {
    VirtualService,
    DestinationRule,
    HttpRoute,
    GrpcRoute,
    /// The Gateway API's experimental TCPRoute and TLSRoute.
    TcpRoute,
    TlsRoute,
    /// Read for what it permits routes (no rule of its own).
    ReferenceGrant,
    Sidecar,
    PeerAuthentication,
    AuthorizationPolicy,
    /// Read by the entries registry (`entries.rs`), as services.
    ServiceEntry,
    /// Likewise: the workloads ServiceEntries select.
    WorkloadEntry,
    /// Likewise: the templates VMs register from (`groups.rs`).
    WorkloadGroup,
    /// The Gateway API's Gateway: its listeners, for router proxies.
    Gateway,
    /// Istio's Gateway (`networking.istio.io`): its servers, likewise.
    IstioGateway,
    /// The Gateway API's GatewayClass (cluster-scoped): Sextant's gets
    /// its `Accepted` status.
    GatewayClass,
}

impl CrdKind {
    /// The kinds the entries registry reads.
    pub(crate) const ENTRIES: [CrdKind; 3] = [
        CrdKind::ServiceEntry,
        CrdKind::WorkloadEntry,
        CrdKind::WorkloadGroup,
    ];

    /// Every CRD kind, in the order they are read.
    pub(crate) const ALL: [CrdKind; 13] = [
        CrdKind::VirtualService,
        CrdKind::DestinationRule,
        CrdKind::HttpRoute,
        CrdKind::GrpcRoute,
        CrdKind::TcpRoute,
        CrdKind::TlsRoute,
        CrdKind::ReferenceGrant,
        CrdKind::Sidecar,
        CrdKind::PeerAuthentication,
        CrdKind::AuthorizationPolicy,
        CrdKind::Gateway,
        CrdKind::IstioGateway,
        CrdKind::GatewayClass,
    ];

    /// The API group and plural.
    pub(crate) fn api_group(self) -> (&'static str, &'static str) {
        match self {
            CrdKind::VirtualService => ("networking.istio.io", "virtualservices"),
            CrdKind::DestinationRule => ("networking.istio.io", "destinationrules"),
            CrdKind::Sidecar => ("networking.istio.io", "sidecars"),
            CrdKind::ServiceEntry => ("networking.istio.io", "serviceentries"),
            CrdKind::WorkloadEntry => ("networking.istio.io", "workloadentries"),
            CrdKind::WorkloadGroup => ("networking.istio.io", "workloadgroups"),
            CrdKind::PeerAuthentication => ("security.istio.io", "peerauthentications"),
            CrdKind::AuthorizationPolicy => ("security.istio.io", "authorizationpolicies"),
            CrdKind::HttpRoute => ("gateway.networking.k8s.io", "httproutes"),
            CrdKind::GrpcRoute => ("gateway.networking.k8s.io", "grpcroutes"),
            CrdKind::TcpRoute => ("gateway.networking.k8s.io", "tcproutes"),
            CrdKind::TlsRoute => ("gateway.networking.k8s.io", "tlsroutes"),
            CrdKind::ReferenceGrant => ("gateway.networking.k8s.io", "referencegrants"),
            CrdKind::Gateway => ("gateway.networking.k8s.io", "gateways"),
            CrdKind::IstioGateway => ("networking.istio.io", "gateways"),
            CrdKind::GatewayClass => ("gateway.networking.k8s.io", "gatewayclasses"),
        }
    }

    /// The versions read, most preferred first (the schema is the same).
    pub(crate) fn versions(self) -> &'static [&'static str] {
        match self {
            CrdKind::VirtualService
            | CrdKind::DestinationRule
            | CrdKind::Sidecar
            | CrdKind::ServiceEntry
            | CrdKind::WorkloadEntry
            | CrdKind::WorkloadGroup
            | CrdKind::IstioGateway => &["v1", "v1beta1", "v1alpha3"],
            CrdKind::HttpRoute => &["v1", "v1beta1"],
            CrdKind::GrpcRoute => &["v1"],
            CrdKind::TcpRoute => &["v1alpha2"],
            CrdKind::TlsRoute => &["v1alpha3", "v1alpha2"],
            CrdKind::ReferenceGrant | CrdKind::Gateway | CrdKind::GatewayClass => {
                &["v1", "v1beta1"]
            }
            CrdKind::PeerAuthentication | CrdKind::AuthorizationPolicy => &["v1", "v1beta1"],
        }
    }

    /// Cluster-scoped (read across namespaces whatever
    /// `--k8s-namespaces` says).
    pub(crate) fn cluster_scoped(self) -> bool {
        self == CrdKind::GatewayClass
    }

    /// A Gateway API route, which gets status.
    pub(crate) fn is_route(self) -> bool {
        match self {
            CrdKind::HttpRoute | CrdKind::GrpcRoute | CrdKind::TcpRoute | CrdKind::TlsRoute => true,
            CrdKind::VirtualService
            | CrdKind::DestinationRule
            | CrdKind::ReferenceGrant
            | CrdKind::Sidecar
            | CrdKind::PeerAuthentication
            | CrdKind::AuthorizationPolicy
            | CrdKind::ServiceEntry
            | CrdKind::WorkloadEntry
            | CrdKind::WorkloadGroup
            | CrdKind::Gateway
            | CrdKind::IstioGateway
            | CrdKind::GatewayClass => false,
        }
    }

    /// The Gateway API route kind it is, if it is one.
    pub(crate) fn route_kind(self) -> Option<crate::gateway::RouteKind> {
        use crate::gateway::RouteKind;
        match self {
            CrdKind::HttpRoute => Some(RouteKind::Http),
            CrdKind::GrpcRoute => Some(RouteKind::Grpc),
            CrdKind::TcpRoute => Some(RouteKind::Tcp),
            CrdKind::TlsRoute => Some(RouteKind::Tls),
            _ => None,
        }
    }

    /// The object kind, as in messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            CrdKind::VirtualService => "VirtualService",
            CrdKind::DestinationRule => "DestinationRule",
            CrdKind::HttpRoute => "HTTPRoute",
            CrdKind::GrpcRoute => "GRPCRoute",
            CrdKind::TcpRoute => "TCPRoute",
            CrdKind::TlsRoute => "TLSRoute",
            CrdKind::ReferenceGrant => "ReferenceGrant",
            CrdKind::Sidecar => "Sidecar",
            CrdKind::PeerAuthentication => "PeerAuthentication",
            CrdKind::AuthorizationPolicy => "AuthorizationPolicy",
            CrdKind::ServiceEntry => "ServiceEntry",
            CrdKind::WorkloadEntry => "WorkloadEntry",
            CrdKind::WorkloadGroup => "WorkloadGroup",
            CrdKind::Gateway => "Gateway",
            // Two kinds are called Gateway: Istio's is named as kubectl
            // tells them apart.
            CrdKind::IstioGateway => "Gateway.networking.istio.io",
            CrdKind::GatewayClass => "GatewayClass",
        }
    }

    /// This kind served at `version`.
    pub(crate) fn resource(self, version: &str) -> ApiResource {
        let (group, plural) = self.api_group();
        ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: format!("{group}/{version}"),
            kind: match self {
                CrdKind::IstioGateway => "Gateway".into(),
                other => other.name().into(),
            },
            plural: plural.into(),
        }
    }
}

impl Kind {
    /// The API resource. A CRD kind's version is found by discovery
    /// (`rules::discover`); its first (preferred) version here.
    pub(crate) fn resource(self) -> ApiResource {
        match self {
            Kind::Service => ApiResource::erase::<KService>(&()),
            Kind::Slice => ApiResource::erase::<EndpointSlice>(&()),
            Kind::Node => ApiResource::erase::<Node>(&()),
            Kind::Pod => ApiResource::erase::<Pod>(&()),
            Kind::Secret => ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&()),
            Kind::Ingress => ApiResource::erase::<k8s_openapi::api::networking::v1::Ingress>(&()),
            Kind::Crd(k) => k.resource(k.versions()[0]),
        }
    }

    /// The object kind, as in messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::Slice => "EndpointSlice",
            Kind::Node => "Node",
            Kind::Pod => "Pod",
            Kind::Secret => "Secret",
            Kind::Ingress => "Ingress",
            Kind::Crd(k) => k.name(),
        }
    }

    /// What RBAC must allow, for 403 messages.
    pub(crate) fn rbac(self) -> String {
        let (group, plural) = match self {
            Kind::Service => ("", "services"),
            Kind::Slice => ("discovery.k8s.io", "endpointslices"),
            Kind::Node => ("", "nodes"),
            Kind::Pod => ("", "pods"),
            Kind::Secret => ("", "secrets"),
            Kind::Ingress => ("networking.k8s.io", "ingresses"),
            Kind::Crd(k) => k.api_group(),
        };
        let group = if group.is_empty() {
            "\"\" (core)".to_owned()
        } else {
            format!("{group:?}")
        };
        format!("get, list and watch on {plural:?} in API group {group}")
    }
}
