//! The kinds the double serves and the CRDs that bring some of them: their
//! names, groups, versions and scope, in one place.

/// The kinds the double serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `v1` `services`, namespaced.
    Service,
    /// `discovery.k8s.io/v1` `endpointslices`, namespaced.
    EndpointSlice,
    /// `v1` `nodes`, cluster-scoped.
    Node,
    /// `v1` `pods`, namespaced.
    Pod,
    /// `networking.istio.io/v1` `virtualservices` (a CRD: see [`Crd`]).
    VirtualService,
    /// `networking.istio.io/v1` `destinationrules` (a CRD).
    DestinationRule,
    /// `gateway.networking.k8s.io/v1` `httproutes` (a CRD, with a status
    /// subresource).
    HttpRoute,
    /// `gateway.networking.k8s.io/v1` `grpcroutes` (a CRD, with a status
    /// subresource).
    GrpcRoute,
    /// `gateway.networking.k8s.io/v1` `referencegrants` (a CRD).
    ReferenceGrant,
    /// `gateway.networking.k8s.io/v1alpha2` `tcproutes` (a CRD of the
    /// experimental channel, with a status subresource).
    TcpRoute,
    /// `gateway.networking.k8s.io/v1alpha2` `tlsroutes` (likewise).
    TlsRoute,
    /// `networking.istio.io/v1` `sidecars` (a CRD).
    Sidecar,
    /// `security.istio.io/v1` `peerauthentications` (a CRD).
    PeerAuthentication,
    /// `security.istio.io/v1` `authorizationpolicies` (a CRD).
    AuthorizationPolicy,
    /// `v1` `namespaces`, cluster-scoped: labels select webhooks.
    Namespace,
    /// `admissionregistration.k8s.io/v1` `mutatingwebhookconfigurations`,
    /// cluster-scoped: called on creates (see `admission.rs`).
    MutatingWebhookConfiguration,
    /// `v1` `configmaps`, namespaced (the mesh's root certificate).
    ConfigMap,
    /// `networking.istio.io/v1` `serviceentries` (a CRD).
    ServiceEntry,
    /// `networking.istio.io/v1` `workloadentries` (a CRD, with a status
    /// subresource: its `Healthy` condition).
    WorkloadEntry,
    /// `networking.istio.io/v1` `workloadgroups` (a CRD).
    WorkloadGroup,
    /// `gateway.networking.k8s.io/v1` `gateways` (a CRD, with a status
    /// subresource).
    Gateway,
    /// `v1` `secrets`, namespaced (gateways' certificates).
    Secret,
    /// `networking.istio.io/v1` `gateways` (a CRD): Istio's Gateway, a
    /// kind of the same name as the Gateway API's.
    IstioGateway,
    /// `gateway.networking.k8s.io/v1` `gatewayclasses` (a CRD,
    /// cluster-scoped, with a status subresource).
    GatewayClass,
    /// `networking.k8s.io/v1` `ingresses`, namespaced, with a status
    /// subresource.
    Ingress,
}

/// An API group that exists only once its CRDs are installed
/// ([`KubeDouble::install`]): absent from discovery, and its URLs answer
/// 404, until then, as on a cluster without Istio or the Gateway API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Crd {
    /// `networking.istio.io`: VirtualService, DestinationRule, Sidecar,
    /// ServiceEntry, WorkloadEntry, WorkloadGroup and Gateway.
    Istio,
    /// `gateway.networking.k8s.io`: GatewayClass, Gateway, HTTPRoute, GRPCRoute,
    /// ReferenceGrant (`v1`), TCPRoute and TLSRoute (`v1alpha2`).
    GatewayApi,
    /// `security.istio.io`: PeerAuthentication and AuthorizationPolicy.
    IstioSecurity,
}

impl Crd {
    /// The API group.
    pub fn group(self) -> &'static str {
        match self {
            Crd::Istio => "networking.istio.io",
            Crd::GatewayApi => "gateway.networking.k8s.io",
            Crd::IstioSecurity => "security.istio.io",
        }
    }
}

impl Kind {
    pub(super) const ALL: [Kind; 25] = [
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Node,
        Kind::Pod,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::ReferenceGrant,
        Kind::TcpRoute,
        Kind::TlsRoute,
        Kind::Sidecar,
        Kind::PeerAuthentication,
        Kind::AuthorizationPolicy,
        Kind::Namespace,
        Kind::MutatingWebhookConfiguration,
        Kind::ConfigMap,
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
        Kind::WorkloadGroup,
        Kind::Gateway,
        Kind::Secret,
        Kind::IstioGateway,
        Kind::GatewayClass,
        Kind::Ingress,
    ];

    /// The kind of an object of `kind` at `api_version` (two kinds are
    /// called Gateway).
    pub(super) fn from_kind(kind: &str, api_version: &str) -> Option<Kind> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        Kind::ALL
            .into_iter()
            .find(|k| k.kind() == kind && k.group() == group)
    }

    /// The plural resource name, as in URLs and RBAC rules.
    pub fn resource(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
            Kind::Node => "nodes",
            Kind::Pod => "pods",
            Kind::VirtualService => "virtualservices",
            Kind::DestinationRule => "destinationrules",
            Kind::HttpRoute => "httproutes",
            Kind::GrpcRoute => "grpcroutes",
            Kind::ReferenceGrant => "referencegrants",
            Kind::TcpRoute => "tcproutes",
            Kind::TlsRoute => "tlsroutes",
            Kind::Sidecar => "sidecars",
            Kind::PeerAuthentication => "peerauthentications",
            Kind::AuthorizationPolicy => "authorizationpolicies",
            Kind::Namespace => "namespaces",
            Kind::MutatingWebhookConfiguration => "mutatingwebhookconfigurations",
            Kind::ConfigMap => "configmaps",
            Kind::ServiceEntry => "serviceentries",
            Kind::WorkloadEntry => "workloadentries",
            Kind::WorkloadGroup => "workloadgroups",
            Kind::Gateway => "gateways",
            Kind::Secret => "secrets",
            Kind::IstioGateway => "gateways",
            Kind::GatewayClass => "gatewayclasses",
            Kind::Ingress => "ingresses",
        }
    }

    pub(super) fn kind(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Node => "Node",
            Kind::Pod => "Pod",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::TcpRoute => "TCPRoute",
            Kind::TlsRoute => "TLSRoute",
            Kind::Sidecar => "Sidecar",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::Namespace => "Namespace",
            Kind::MutatingWebhookConfiguration => "MutatingWebhookConfiguration",
            Kind::ConfigMap => "ConfigMap",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::WorkloadGroup => "WorkloadGroup",
            Kind::Gateway => "Gateway",
            Kind::Secret => "Secret",
            Kind::IstioGateway => "Gateway",
            Kind::GatewayClass => "GatewayClass",
            Kind::Ingress => "Ingress",
        }
    }

    pub(super) fn short_names(self) -> &'static [&'static str] {
        match self {
            Kind::Service => &["svc"],
            Kind::Node => &["no"],
            Kind::Pod => &["po"],
            Kind::VirtualService => &["vs"],
            Kind::DestinationRule => &["dr"],
            Kind::Namespace => &["ns"],
            Kind::ConfigMap => &["cm"],
            Kind::ServiceEntry => &["se"],
            Kind::WorkloadEntry => &["we"],
            Kind::WorkloadGroup => &["wg"],
            Kind::Gateway => &["gtw"],
            Kind::IstioGateway => &["gw"],
            Kind::GatewayClass => &["gc"],
            Kind::Ingress => &["ing"],
            _ => &[],
        }
    }

    /// The CRD that brings this kind, if it is not built in.
    pub(super) fn crd(self) -> Option<Crd> {
        match self {
            Kind::VirtualService
            | Kind::DestinationRule
            | Kind::Sidecar
            | Kind::ServiceEntry
            | Kind::WorkloadEntry
            | Kind::WorkloadGroup
            | Kind::IstioGateway => Some(Crd::Istio),
            Kind::HttpRoute
            | Kind::GrpcRoute
            | Kind::ReferenceGrant
            | Kind::TcpRoute
            | Kind::TlsRoute
            | Kind::Gateway
            | Kind::GatewayClass => Some(Crd::GatewayApi),
            Kind::PeerAuthentication | Kind::AuthorizationPolicy => Some(Crd::IstioSecurity),
            _ => None,
        }
    }

    pub(super) fn group(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "discovery.k8s.io",
            Kind::MutatingWebhookConfiguration => "admissionregistration.k8s.io",
            Kind::Ingress => "networking.k8s.io",
            _ => self.crd().map_or("", Crd::group),
        }
    }

    /// The version it is served at (one per kind).
    pub(super) fn version(self) -> &'static str {
        match self {
            Kind::TcpRoute | Kind::TlsRoute => "v1alpha2",
            _ => "v1",
        }
    }

    pub(super) fn api_version(self) -> String {
        match self.group() {
            "" => self.version().into(),
            g => format!("{g}/{}", self.version()),
        }
    }

    pub(super) fn namespaced(self) -> bool {
        !matches!(
            self,
            Kind::Node | Kind::Namespace | Kind::MutatingWebhookConfiguration | Kind::GatewayClass
        )
    }

    /// Kinds whose `status` is written only through `/status`.
    pub(super) fn has_status(self) -> bool {
        matches!(
            self,
            Kind::HttpRoute
                | Kind::GrpcRoute
                | Kind::TcpRoute
                | Kind::TlsRoute
                | Kind::WorkloadEntry
                | Kind::Gateway
                | Kind::GatewayClass
                | Kind::Ingress
        )
    }

    /// `/api/v1` or `/apis/GROUP/VERSION`.
    pub(super) fn base(self) -> String {
        match self.group() {
            "" => "/api/v1".into(),
            g => format!("/apis/{g}/{}", self.version()),
        }
    }
}
