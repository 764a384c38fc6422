//! Clusters: one per service port, EDS over ADS or STRICT_DNS with its
//! endpoints inline.

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, DnsLookupFamily, EdsClusterConfig, LbPolicy,
};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::Duration;
use sextant_core::{Address, MeshService, Resolution, Service, ServicePort};

use super::endpoints::subset_assignment;
use super::rules::{Client, Unhonoured, apply_policy, subset_cluster_name, subsets};

use super::*;

/// True when every endpoint is an IP address: such services are EDS
/// clusters. A service with DNS-name endpoints is a STRICT_DNS cluster with
/// its endpoints inline, resolved by Envoy (EDS carries IP addresses only;
/// Sextant's own resolver, in front of the aggregator, hands names over as
/// addresses); resolutions NONE and DNS_ROUND_ROBIN are the proxy's own
/// (ORIGINAL_DST, LOGICAL_DNS).
pub(super) fn uses_eds(service: &Service) -> bool {
    !service.resolved_by_proxy()
        && service
            .endpoints
            .iter()
            .all(|e| matches!(e.address, Address::Ip(_)))
}

/// One cluster per service port, and one per port and subset of the
/// service's destination policy, with the policy's settings, as `client`
/// receives them (see [`Client`]); what it cannot honour goes to `notes`.
pub fn clusters(ms: &MeshService, client: Client, notes: &mut Vec<Unhonoured>) -> Vec<Cluster> {
    clusters_with(ms, client, notes, Certs::None)
}

/// Where the client's workload certificate comes from, if it has one.
#[derive(Clone, Copy)]
enum Certs<'a> {
    None,
    /// A sidecar's agent over SDS.
    Sds(&'a super::mtls::MtlsOptions),
    /// A proxyless gRPC client's certificate provider, in the trust domain.
    Provider(&'a str),
}

/// [`clusters`] as a sidecar holding a workload certificate receives them:
/// mutual TLS to the endpoints that run sidecars ([`super::mtls::upstream`]).
pub fn mesh_clusters(
    ms: &MeshService,
    mtls: &super::mtls::MtlsOptions,
    notes: &mut Vec<Unhonoured>,
) -> Vec<Cluster> {
    clusters_with(ms, Client::Envoy, notes, Certs::Sds(mtls))
}

/// [`clusters`] as a proxyless gRPC client holding a workload certificate
/// (its agent's files) receives them: mutual TLS where the destination
/// rule says ISTIO_MUTUAL ([`super::mtls::provider_socket`]).
pub fn grpc_mesh_clusters(
    ms: &MeshService,
    trust_domain: &str,
    notes: &mut Vec<Unhonoured>,
) -> Vec<Cluster> {
    clusters_with(ms, Client::Grpc, notes, Certs::Provider(trust_domain))
}

/// True when the service's destination rule asks for the mesh's mutual
/// TLS on some port or subset: only then does a certificate change what a
/// client receives.
pub fn asks_istio_mutual(ms: &MeshService) -> bool {
    ms.policy().is_some_and(|(_, p)| {
        ms.service.ports.iter().any(|port| {
            std::iter::once(None)
                .chain(p.subsets.iter().map(Some))
                .any(|subset| istio_mutual(p, port.port, subset))
        })
    })
}

fn istio_mutual(
    policy: &sextant_core::rules::DestinationPolicy,
    port: u32,
    subset: Option<&sextant_core::rules::Subset>,
) -> bool {
    policy
        .effective(port, subset)
        .tls
        .is_some_and(|t| t.mode == sextant_core::rules::TlsMode::IstioMutual)
}

fn clusters_with(
    ms: &MeshService,
    client: Client,
    notes: &mut Vec<Unhonoured>,
    certs: Certs<'_>,
) -> Vec<Cluster> {
    let s = &ms.service;
    // Who its instances must prove to be, once for every cluster.
    let peers = match certs {
        Certs::None => Vec::new(),
        Certs::Sds(mtls) => {
            super::mtls::peer_names(&s.identities, &s.namespace, &mtls.trust_domain)
        }
        Certs::Provider(trust_domain) => {
            super::mtls::peer_names(&s.identities, &s.namespace, trust_domain)
        }
    };
    let mut out = Vec::new();
    for port in &s.ports {
        // The plain cluster, then one per subset of the policy.
        for subset in std::iter::once(None).chain(subsets(ms).map(Some)) {
            let name = match subset {
                None => cluster_name(&s.hostname, port.port),
                Some(sub) => subset_cluster_name(&s.hostname, port.port, &sub.name),
            };
            let mut cluster = plain_cluster(s, port, name.clone());
            if let Some(sub) = subset
                && !uses_eds(s)
                && s.resolution != Some(Resolution::None)
            {
                cluster.load_assignment = Some(subset_assignment(s, port, sub, name));
            }
            if let Some((rule, policy)) = ms.policy() {
                apply_policy(
                    &mut cluster,
                    &rule.key,
                    policy,
                    port.port,
                    subset,
                    client,
                    notes,
                );
            }
            if s.resolution == Some(Resolution::None) {
                // Envoy refuses any other balancer for ORIGINAL_DST.
                cluster.lb_policy = LbPolicy::ClusterProvided as i32;
                cluster.lb_config = None;
            }
            let istio_mutual = ms
                .policy()
                .is_some_and(|(_, p)| istio_mutual(p, port.port, subset));
            match certs {
                Certs::None => {}
                Certs::Sds(mtls) => {
                    if istio_mutual && mtls.mode != super::mtls::PeerMode::Disable {
                        cluster.transport_socket = Some(super::mtls::mesh_socket(
                            s.hostname.as_str(),
                            port.port,
                            &peers,
                        ));
                    }
                    // Nothing outside the mesh answers the mesh's TLS.
                    if s.location.is_internal() {
                        super::mtls::upstream(
                            &mut cluster,
                            s.hostname.as_str(),
                            port.port,
                            mtls,
                            &peers,
                        );
                    }
                }
                Certs::Provider(_) => {
                    if istio_mutual {
                        cluster.transport_socket = Some(super::mtls::provider_socket(&peers));
                    }
                }
            }
            out.push(cluster);
        }
    }
    out
}

fn plain_cluster(s: &Service, port: &ServicePort, name: String) -> Cluster {
    let mut cluster = Cluster {
        name: name.clone(),
        connect_timeout: Some(Duration {
            seconds: 5,
            nanos: 0,
        }),
        lb_policy: LbPolicy::RoundRobin as i32,
        // The registry's health is the truth: no panic routing to
        // unhealthy endpoints when most are unhealthy (Envoy's
        // default threshold is 50%).
        common_lb_config: Some(cluster::CommonLbConfig {
            healthy_panic_threshold: Some(Percent { value: 0.0 }),
            ..Default::default()
        }),
        ..Default::default()
    };
    if s.resolution == Some(Resolution::None) {
        // Where the application was connecting to (capture mode restores
        // it): no endpoints to send.
        cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        ));
        cluster.lb_policy = LbPolicy::ClusterProvided as i32;
    } else if s.resolution == Some(Resolution::DnsRoundRobin) {
        cluster.cluster_discovery_type =
            Some(ClusterDiscoveryType::Type(DiscoveryType::LogicalDns as i32));
        cluster.dns_lookup_family = DnsLookupFamily::V4Preferred as i32;
        cluster.load_assignment = Some(load_assignment(s, port, name));
    } else if uses_eds(s) {
        cluster.cluster_discovery_type =
            Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
        cluster.eds_cluster_config = Some(EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        });
    } else {
        cluster.cluster_discovery_type =
            Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32));
        // As Sextant's own resolver: IPv4 when a name has it (Envoy's
        // default, AUTO, would prefer IPv6: `localhost` is ::1 first).
        cluster.dns_lookup_family = DnsLookupFamily::V4Preferred as i32;
        cluster.load_assignment = Some(load_assignment(s, port, name));
    }
    if port.protocol.is_http2() {
        cluster.typed_extension_protocol_options = http2_options();
    }
    cluster
}

/// HTTP/2 to the upstream, as a cluster's protocol options.
pub(super) fn http2_options() -> std::collections::HashMap<String, Any> {
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
            http_protocol_options::ExplicitHttpConfig {
                protocol_config: Some(http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                    Http2ProtocolOptions::default(),
                )),
            },
        )),
        ..Default::default()
    };
    [(
        HTTP_PROTOCOL_OPTIONS.to_owned(),
        any_of(
            &format!("type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}"),
            &options,
        ),
    )]
    .into()
}
