//! Mutual TLS between sidecars, Istio's way: each sidecar's certificate
//! (`default`) and the mesh's root (`ROOTCA`) come from its agent over SDS
//! (the bootstrap's `sds-grpc` cluster), never from Sextant.
//!
//! - **Outbound** (the client side): a cluster gets two transport socket
//!   matches. Endpoints whose workload runs a sidecar (the pod label
//!   `security.istio.io/tlsMode: istio`, which injection writes; endpoint
//!   metadata `envoy.transport_socket_match`) are dialled with TLS, the
//!   sidecar's certificate, ALPN `istio`, and the peer's certificate checked
//!   against the root and the mesh's trust domain (`spiffe://DOMAIN/`);
//!   other endpoints in plaintext, as before. A cluster that already has a
//!   transport socket keeps it.
//! - **Inbound** (the server side), per port by the mesh's mode: `STRICT`
//!   terminates TLS on every connection and requires a client certificate
//!   from the mesh; `PERMISSIVE` (Istio's default) does so for connections
//!   that offer TLS with ALPN `istio` and takes the rest in plaintext;
//!   `DISABLE` is plaintext. HTTP requests that arrive over mutual TLS carry
//!   the caller's SPIFFE id to the application in `x-forwarded-client-cert`
//!   (anything a client sent there is dropped).
//! - **Proxyless gRPC** clients hold the same certificate as files that a
//!   `file_watcher` certificate provider (instance `default`) reads; gRPC
//!   takes TLS settings only from certificate provider instances and has no
//!   transport socket matches (gRFC A29), so a cluster it receives is
//!   either all mutual TLS ([`provider_socket`], where a destination rule
//!   says ISTIO_MUTUAL) or all plaintext.

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    ApiConfigSource, ApiVersion, ConfigSource, GrpcService, Metadata, TransportSocket,
    api_config_source, config_source, grpc_service, transport_socket,
};
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateProviderPluginInstance, CertificateValidationContext, CommonTlsContext,
    DownstreamTlsContext, SdsSecretConfig, SubjectAltNameMatcher, UpstreamTlsContext,
    common_tls_context, subject_alt_name_matcher,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::{BoolValue, Struct, Value, value};

use super::*;

/// The pod label that says a workload runs a sidecar that takes mutual TLS
/// (Istio's; injection writes it).
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
/// Its value for a sidecar.
pub const TLS_MODE_ISTIO: &str = "istio";
/// The endpoint metadata key transport socket matches read (Envoy's).
pub const SOCKET_MATCH_KEY: &str = "envoy.transport_socket_match";
/// The key in it (Istio's).
const SOCKET_MATCH_FIELD: &str = "tlsMode";
/// The agent's SDS cluster, in the bootstrap.
pub const SDS_CLUSTER: &str = "sds-grpc";
/// The workload certificate's SDS name.
pub const WORKLOAD_CERT: &str = "default";
/// The root's SDS name.
pub const ROOT_CERT: &str = "ROOTCA";
/// The ALPN protocol that marks mesh mTLS (Istio's).
pub const ALPN: &str = "istio";

const TLS_SOCKET: &str = "envoy.transport_sockets.tls";
const RAW_SOCKET: &str = "envoy.transport_sockets.raw_buffer";

/// What the mesh's sidecars accept inbound (Istio's PeerAuthentication
/// modes, mesh-wide).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PeerMode {
    /// Mutual TLS from sidecars, plaintext from anyone else.
    #[default]
    Permissive,
    /// Mutual TLS only.
    Strict,
    /// Plaintext only (and no mutual TLS outbound either).
    Disable,
}

impl std::str::FromStr for PeerMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "permissive" => Ok(PeerMode::Permissive),
            "strict" => Ok(PeerMode::Strict),
            "disable" => Ok(PeerMode::Disable),
            other => Err(format!("{other:?} is not permissive, strict or disable")),
        }
    }
}

impl PeerMode {
    /// A peer authentication rule's mode; `None` for UNSET (inherit).
    pub fn from_rule(mode: sextant_core::rules::MtlsMode) -> Option<PeerMode> {
        use sextant_core::rules::MtlsMode;
        match mode {
            MtlsMode::Unset => None,
            MtlsMode::Permissive => Some(PeerMode::Permissive),
            MtlsMode::Strict => Some(PeerMode::Strict),
            MtlsMode::Disable => Some(PeerMode::Disable),
        }
    }
}

/// The mode of each port of one workload: its peer authentication rules
/// over the mesh's default.
pub fn port_mode(
    peer: &sextant_core::rules::PeerModes,
    port: u32,
    options: &MtlsOptions,
) -> PeerMode {
    peer.ports
        .get(&port)
        .copied()
        .or(peer.mode)
        .and_then(PeerMode::from_rule)
        .unwrap_or(options.mode)
}

/// Mutual TLS settings of the mesh.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MtlsOptions {
    /// Peers' certificates must name an identity of this trust domain.
    pub trust_domain: String,
    /// What sidecars accept inbound.
    pub mode: PeerMode,
}

impl Default for MtlsOptions {
    fn default() -> Self {
        MtlsOptions {
            trust_domain: "cluster.local".to_owned(),
            mode: PeerMode::Permissive,
        }
    }
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(value::Kind::StringValue(s.to_owned())),
    }
}

/// Which workloads take no mutual TLS on a port although they run a
/// sidecar: those whose peer authentication says DISABLE there. A client
/// sidecar dials them in plaintext (Istio's auto mutual TLS, for the case
/// that otherwise breaks: a DISABLE server cannot answer mutual TLS).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerModes {
    /// The peer authentication rules of the view.
    rules: Vec<std::sync::Arc<sextant_core::Rule>>,
    root_namespace: String,
    /// Whether any of them says DISABLE anywhere (else nothing to look up).
    any_disable: bool,
}

impl ServerModes {
    /// The peer authentication rules among `rules`, with the mesh's root
    /// namespace.
    pub fn new(rules: &[std::sync::Arc<sextant_core::Rule>], root_namespace: &str) -> ServerModes {
        use sextant_core::rules::MtlsMode;
        let rules: Vec<_> = rules
            .iter()
            .filter(|r| r.as_peer_auth().is_some())
            .cloned()
            .collect();
        let any_disable = rules.iter().filter_map(|r| r.as_peer_auth()).any(|p| {
            p.mode == MtlsMode::Disable || p.port_level.values().any(|m| *m == MtlsMode::Disable)
        });
        ServerModes {
            rules,
            root_namespace: root_namespace.to_owned(),
            any_disable,
        }
    }

    /// Whether the workload of `namespace` with `labels` takes plaintext
    /// only on `port` (its own port number).
    pub fn disabled(&self, namespace: &str, labels: &sextant_core::Labels, port: u32) -> bool {
        use sextant_core::rules::MtlsMode;
        self.any_disable
            && sextant_core::rules::peer::select(
                &self.rules,
                &self.root_namespace,
                Some(namespace),
                labels,
            )
            .of(port, MtlsMode::Unset)
                == MtlsMode::Disable
    }
}

/// The metadata of an endpoint whose workload runs a sidecar (its labels
/// say so), for the transport socket match; `None` for others.
pub fn endpoint_metadata(labels: &sextant_core::Labels) -> Option<Metadata> {
    (labels.get(TLS_MODE_LABEL).map(String::as_str) == Some(TLS_MODE_ISTIO)).then(|| Metadata {
        filter_metadata: [(
            SOCKET_MATCH_KEY.to_owned(),
            Struct {
                fields: [(SOCKET_MATCH_FIELD.to_owned(), string(TLS_MODE_ISTIO))].into(),
            },
        )]
        .into(),
        ..Default::default()
    })
}

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_owned(),
        sds_config: Some(ConfigSource {
            resource_api_version: ApiVersion::V3 as i32,
            config_source_specifier: Some(config_source::ConfigSourceSpecifier::ApiConfigSource(
                ApiConfigSource {
                    api_type: api_config_source::ApiType::Grpc as i32,
                    transport_api_version: ApiVersion::V3 as i32,
                    grpc_services: vec![GrpcService {
                        target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                            grpc_service::EnvoyGrpc {
                                cluster_name: SDS_CLUSTER.to_owned(),
                                ..Default::default()
                            },
                        )),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
    }
}

/// A name a peer's certificate must carry: a `spiffe://` URI or a DNS
/// name, exactly.
fn exact_san(name: &str) -> SubjectAltNameMatcher {
    SubjectAltNameMatcher {
        san_type: if name.starts_with("spiffe://") {
            subject_alt_name_matcher::SanType::Uri
        } else {
            subject_alt_name_matcher::SanType::Dns
        } as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(name.to_owned())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Any identity of the trust domain.
fn trust_domain_san(trust_domain: &str) -> SubjectAltNameMatcher {
    SubjectAltNameMatcher {
        san_type: subject_alt_name_matcher::SanType::Uri as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Prefix(format!(
                "spiffe://{trust_domain}/"
            ))),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What the certificate of an instance of a service in `namespace` with
/// `ids` must name: one of its identities (a service account as
/// `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/NAME`), or, when it names none,
/// any identity of the trust domain.
pub fn peer_names(
    ids: &sextant_core::Identities,
    namespace: &str,
    trust_domain: &str,
) -> Vec<SubjectAltNameMatcher> {
    if ids.is_empty() {
        return vec![trust_domain_san(trust_domain)];
    }
    ids.subject_alt_names
        .iter()
        .cloned()
        .chain(
            ids.service_accounts
                .iter()
                .map(|sa| format!("spiffe://{trust_domain}/ns/{namespace}/sa/{sa}")),
        )
        .map(|name| exact_san(&name))
        .collect()
}

/// The sidecar's certificate, and peers checked against the root and
/// `peers` (see [`peer_names`]).
fn common(alpn: Vec<String>, peers: Vec<SubjectAltNameMatcher>) -> CommonTlsContext {
    CommonTlsContext {
        alpn_protocols: alpn,
        tls_certificate_sds_secret_configs: vec![sds(WORKLOAD_CERT)],
        validation_context_type: Some(
            common_tls_context::ValidationContextType::CombinedValidationContext(
                common_tls_context::CombinedCertificateValidationContext {
                    default_validation_context: Some(CertificateValidationContext {
                        match_typed_subject_alt_names: peers,
                        ..Default::default()
                    }),
                    validation_context_sds_secret_config: Some(sds(ROOT_CERT)),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    }
}

/// `outbound_.PORT_._.HOST`: the SNI a sidecar sends (Istio's form).
pub fn sni(host: &str, port: u32) -> String {
    format!("outbound_.{port}_._.{host}")
}

/// Gives `cluster` (of `host`:`port`) its two transport socket matches:
/// mutual TLS to sidecars (naming one of `peers`), plaintext to the rest.
/// Nothing changes when the mode is DISABLE or the cluster already has a
/// transport socket.
pub fn upstream(
    cluster: &mut Cluster,
    host: &str,
    port: u32,
    options: &MtlsOptions,
    peers: &[SubjectAltNameMatcher],
) {
    if options.mode == PeerMode::Disable || cluster.transport_socket.is_some() {
        return;
    }
    cluster.transport_socket_matches = vec![
        cluster::TransportSocketMatch {
            name: "tlsMode-istio".to_owned(),
            r#match: Some(Struct {
                fields: [(SOCKET_MATCH_FIELD.to_owned(), string(TLS_MODE_ISTIO))].into(),
            }),
            transport_socket: Some(upstream_tls(host, port, peers)),
        },
        cluster::TransportSocketMatch {
            name: "tlsMode-disabled".to_owned(),
            r#match: Some(Struct::default()),
            transport_socket: Some(raw_socket()),
        },
    ];
}

/// The server side of mutual TLS, as a transport socket.
fn downstream(options: &MtlsOptions) -> TransportSocket {
    let tls = DownstreamTlsContext {
        common_tls_context: Some(common(
            Vec::new(),
            vec![trust_domain_san(&options.trust_domain)],
        )),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    };
    TransportSocket {
        name: TLS_SOCKET.to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any_of(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            &tls,
        ))),
    }
}

/// An HTTP connection manager behind mutual TLS: the caller's identity
/// goes to the application in `x-forwarded-client-cert`, replacing
/// whatever the caller sent there.
pub fn with_client_identity(hcm: &mut HttpConnectionManager) {
    hcm.forward_client_cert_details =
        http_connection_manager::ForwardClientCertDetails::SanitizeSet as i32;
    hcm.set_current_client_cert_details =
        Some(http_connection_manager::SetCurrentClientCertDetails {
            uri: true,
            ..Default::default()
        });
}

/// The inbound chains of one port under `mode`: `plain` is the plaintext
/// chain, `secured` its filters behind mutual TLS.
pub fn inbound_chains(
    plain: FilterChain,
    secured: Vec<envoy_types::pb::envoy::config::listener::v3::Filter>,
    mode: PeerMode,
    options: &MtlsOptions,
) -> Vec<FilterChain> {
    let base = plain.filter_chain_match.clone().unwrap_or_default();
    let tls = |m: FilterChainMatch| FilterChain {
        name: format!("{}|mtls", plain.name),
        filter_chain_match: Some(m),
        filters: secured.clone(),
        transport_socket: Some(downstream(options)),
        ..Default::default()
    };
    match mode {
        PeerMode::Disable => vec![plain],
        // Every connection to the port, whatever it offers: one that is
        // not mutual TLS from the mesh fails its handshake.
        PeerMode::Strict => vec![tls(base)],
        PeerMode::Permissive => vec![
            tls(FilterChainMatch {
                transport_protocol: "tls".to_owned(),
                application_protocols: vec![ALPN.to_owned()],
                ..base
            }),
            plain,
        ],
    }
}

/// What a DestinationRule's `tls` says, as a transport socket: plaintext
/// (DISABLE), or TLS with the user's files (SIMPLE, MUTUAL). ISTIO_MUTUAL
/// is [`mesh_socket`].
pub fn user_socket(tls: &sextant_core::rules::ClientTls) -> TransportSocket {
    use sextant_core::rules::TlsMode;
    let file = |path: &str| envoy_types::pb::envoy::config::core::v3::DataSource {
        specifier: Some(
            envoy_types::pb::envoy::config::core::v3::data_source::Specifier::Filename(
                path.to_owned(),
            ),
        ),
        ..Default::default()
    };
    if matches!(tls.mode, TlsMode::Disable | TlsMode::IstioMutual) {
        return raw_socket();
    }
    let validation =
        (tls.insecure_skip_verify != Some(true)).then(|| CertificateValidationContext {
            trusted_ca: Some(file(
                tls.ca_certificates.as_deref().unwrap_or(SYSTEM_CA_BUNDLE),
            )),
            match_typed_subject_alt_names: tls
                .subject_alt_names
                .iter()
                .map(|name| exact_san(name))
                .collect(),
            ..Default::default()
        });
    let certificates = match (&tls.client_certificate, &tls.private_key) {
        (Some(cert), Some(key)) if tls.mode == TlsMode::Mutual => {
            vec![
                envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::TlsCertificate {
                    certificate_chain: Some(file(cert)),
                    private_key: Some(file(key)),
                    ..Default::default()
                },
            ]
        }
        _ => Vec::new(),
    };
    let context = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificates: certificates,
            validation_context_type: validation
                .map(common_tls_context::ValidationContextType::ValidationContext),
            ..Default::default()
        }),
        sni: tls.sni.clone().unwrap_or_default(),
        ..Default::default()
    };
    TransportSocket {
        name: TLS_SOCKET.to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any_of(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            &context,
        ))),
    }
}

/// The CAs a SIMPLE or MUTUAL destination is checked against when the
/// rule names none: Debian's bundle, as in the proxy image.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn raw_socket() -> TransportSocket {
    TransportSocket {
        name: RAW_SOCKET.to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any_of(
            "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer",
            &RawBuffer::default(),
        ))),
    }
}

fn upstream_tls(host: &str, port: u32, peers: &[SubjectAltNameMatcher]) -> TransportSocket {
    let tls = UpstreamTlsContext {
        common_tls_context: Some(common(vec![ALPN.to_owned()], peers.to_vec())),
        sni: sni(host, port),
        ..Default::default()
    };
    TransportSocket {
        name: TLS_SOCKET.to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any_of(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            &tls,
        ))),
    }
}

/// ISTIO_MUTUAL: the mesh's mutual TLS to every endpoint of the cluster,
/// each naming one of `peers`.
pub fn mesh_socket(host: &str, port: u32, peers: &[SubjectAltNameMatcher]) -> TransportSocket {
    upstream_tls(host, port, peers)
}

/// ISTIO_MUTUAL as a proxyless gRPC client takes it: its certificate and
/// the root from the bootstrap's certificate provider instance
/// ([`crate::bootstrap::GRPC_CERT_PROVIDER`]), the server's certificate
/// checked against the trust domain. gRPC reads the older
/// `match_subject_alt_names` field only, and ignores ALPN: a sidecar
/// answers it on a STRICT port (a PERMISSIVE port tells mesh TLS by ALPN
/// `istio`, which gRPC cannot send).
pub fn provider_socket(peers: &[SubjectAltNameMatcher]) -> TransportSocket {
    let instance = |certificate_name: &str| CertificateProviderPluginInstance {
        instance_name: crate::bootstrap::GRPC_CERT_PROVIDER.to_owned(),
        certificate_name: certificate_name.to_owned(),
    };
    #[allow(deprecated)]
    let validation = CertificateValidationContext {
        ca_certificate_provider_instance: Some(instance(ROOT_CERT)),
        match_subject_alt_names: peers.iter().filter_map(|p| p.matcher.clone()).collect(),
        ..Default::default()
    };
    let tls = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_provider_instance: Some(instance(WORKLOAD_CERT)),
            validation_context_type: Some(
                common_tls_context::ValidationContextType::CombinedValidationContext(
                    common_tls_context::CombinedCertificateValidationContext {
                        default_validation_context: Some(validation),
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    TransportSocket {
        name: TLS_SOCKET.to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any_of(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            &tls,
        ))),
    }
}
