//! The pure translation of the merged view into Envoy resources.
//!
//! Everything here is a function of its inputs, deterministic (maps are
//! `BTreeMap`s), so that equal views give byte-equal resources and equal
//! versions on every replica.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy,
};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address as EnvoyAddress, Locality as EnvoyLocality,
};
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, DataSource, HealthStatus,
    Http2ProtocolOptions, SocketAddress, address, config_source, data_source, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{
    ApiListener, Filter, FilterChain, Listener, filter,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route,
    route_action, route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{Any, Duration, UInt32Value};
use prost::Message;
use sextant_core::{Address, Health, Locality, MeshService, Protocol, Service, ServicePort};

/// Settings of the translation that are not in the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranslateOptions {
    /// Where the outbound HTTP listener handed to proxies listens.
    /// Default 127.0.0.1:15001, Pilot's habit.
    pub outbound_addr: SocketAddr,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        TranslateOptions {
            outbound_addr: SocketAddr::from(([127, 0, 0, 1], 15001)),
        }
    }
}

/// Name of the outbound HTTP listener and of its route configuration.
pub const OUTBOUND_HTTP: &str = "outbound_http";

const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";
const ROUTER_FILTER: &str = "envoy.filters.http.router";
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// `outbound|PORT||HOSTNAME`, Istio's cluster naming.
pub fn cluster_name(hostname: &str, port: u32) -> String {
    format!("outbound|{port}||{hostname}")
}

/// `HOSTNAME:PORT`: the listener and route names proxyless gRPC clients ask
/// for when dialing `xds:///HOSTNAME:PORT`.
pub fn grpc_listener_name(hostname: &str, port: u32) -> String {
    format!("{hostname}:{port}")
}

fn any_of<M: Message>(type_url: &str, m: &M) -> Any {
    Any {
        type_url: type_url.to_owned(),
        value: m.encode_to_vec(),
    }
}

fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

/// True when every endpoint is an IP address: such services are EDS
/// clusters. A service with DNS-name endpoints is a STRICT_DNS cluster with
/// its endpoints inline, resolved by Envoy (EDS carries IP addresses only).
fn uses_eds(service: &Service) -> bool {
    service
        .endpoints
        .iter()
        .all(|e| matches!(e.address, Address::Ip(_)))
}

/// One cluster per service port.
pub fn clusters(ms: &MeshService) -> Vec<Cluster> {
    let s = &ms.service;
    s.ports
        .iter()
        .map(|port| {
            let name = cluster_name(&s.hostname, port.port);
            let mut cluster = Cluster {
                name: name.clone(),
                connect_timeout: Some(Duration { seconds: 5, nanos: 0 }),
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
            if uses_eds(s) {
                cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
                cluster.eds_cluster_config = Some(EdsClusterConfig { eds_config: Some(ads()), service_name: String::new() });
            } else {
                cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32));
                cluster.load_assignment = Some(load_assignment(s, port, name));
            }
            if port.protocol.is_http2() {
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
                cluster.typed_extension_protocol_options.insert(
                    HTTP_PROTOCOL_OPTIONS.to_owned(),
                    any_of(&format!("type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}"), &options),
                );
            }
            cluster
        })
        .collect()
}

/// One ClusterLoadAssignment per service port of an EDS service.
pub fn load_assignments(ms: &MeshService) -> Vec<ClusterLoadAssignment> {
    let s = &ms.service;
    if !uses_eds(s) {
        return Vec::new();
    }
    s.ports
        .iter()
        .map(|port| load_assignment(s, port, cluster_name(&s.hostname, port.port)))
        .collect()
}

/// The endpoints of one service port, grouped by locality. Every endpoint
/// and every locality has a weight, and every group a locality: gRPC
/// clients drop localities without them.
fn load_assignment(s: &Service, port: &ServicePort, cluster_name: String) -> ClusterLoadAssignment {
    let mut by_locality: BTreeMap<&Locality, Vec<LbEndpoint>> = BTreeMap::new();
    let mut weights: BTreeMap<&Locality, u64> = BTreeMap::new();
    for ep in &s.endpoints {
        // The view gives every endpoint the ports it serves; others are skipped.
        let Some(&target) = ep.ports.get(&port.name) else {
            continue;
        };
        let lb = LbEndpoint {
            health_status: health(ep.health) as i32,
            load_balancing_weight: Some(UInt32Value { value: ep.weight }),
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(EnvoyEndpoint {
                address: Some(socket(&ep.address.to_string(), target)),
                ..Default::default()
            })),
            ..Default::default()
        };
        by_locality.entry(&ep.locality).or_default().push(lb);
        *weights.entry(&ep.locality).or_default() += u64::from(ep.weight);
    }
    let endpoints = by_locality
        .into_iter()
        .map(|(locality, lb_endpoints)| LocalityLbEndpoints {
            locality: Some(EnvoyLocality {
                region: locality.region.clone(),
                zone: locality.zone.clone(),
                sub_zone: locality.subzone.clone(),
            }),
            // Validation keeps the sum within u32.
            load_balancing_weight: Some(UInt32Value {
                value: u32::try_from(weights[locality]).unwrap_or(u32::MAX),
            }),
            lb_endpoints,
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name,
        endpoints,
        ..Default::default()
    }
}

/// An empty assignment: the answer to a subscription for a cluster with no
/// endpoints or none at all, so that the cluster does not stay warming.
pub fn empty_load_assignment(cluster_name: &str) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster_name.to_owned(),
        ..Default::default()
    }
}

/// An empty route configuration, answering a subscription to an unknown name.
pub fn empty_route_configuration(name: &str) -> RouteConfiguration {
    RouteConfiguration {
        name: name.to_owned(),
        ..Default::default()
    }
}

fn health(h: Health) -> HealthStatus {
    match h {
        Health::Healthy => HealthStatus::Healthy,
        Health::Unhealthy => HealthStatus::Unhealthy,
        Health::Draining => HealthStatus::Draining,
        Health::Unknown => HealthStatus::Unknown,
    }
}

fn socket(address: &str, port: u32) -> EnvoyAddress {
    EnvoyAddress {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: address.to_owned(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

fn router_filter() -> HttpFilter {
    HttpFilter {
        name: ROUTER_FILTER.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any_of(
            "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
            &Router::default(),
        ))),
        ..Default::default()
    }
}

fn connection_manager(stat_prefix: &str, route_config_name: &str) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix: stat_prefix.to_owned(),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route_config_name.to_owned(),
        })),
        http_filters: vec![router_filter()],
        ..Default::default()
    }
}

const HCM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// The outbound HTTP listener: every HTTP-like service port, routed by Host.
pub fn outbound_listener(options: &TranslateOptions) -> Listener {
    let hcm = connection_manager(OUTBOUND_HTTP, OUTBOUND_HTTP);
    Listener {
        name: OUTBOUND_HTTP.to_owned(),
        address: Some(socket(
            &options.outbound_addr.ip().to_string(),
            u32::from(options.outbound_addr.port()),
        )),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: HCM_FILTER.to_owned(),
                config_type: Some(filter::ConfigType::TypedConfig(any_of(HCM_TYPE, &hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn route_to(cluster: String, protocol: Protocol) -> Route {
    let action = RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster)),
        // Streams (gRPC, HTTP/2) must not be cut by the default 15 s timeout.
        timeout: protocol.is_http2().then_some(Duration {
            seconds: 0,
            nanos: 0,
        }),
        ..Default::default()
    };
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_owned())),
            ..Default::default()
        }),
        action: Some(route::Action::Route(action)),
        ..Default::default()
    }
}

/// The virtual hosts of one service: one per HTTP-like port, with domains
/// `HOSTNAME:PORT`, and `HOSTNAME` alone for the service's first HTTP-like
/// port (a domain may appear only once in a route configuration).
pub fn virtual_hosts(ms: &MeshService) -> Vec<VirtualHost> {
    let s = &ms.service;
    let mut first = true;
    s.ports
        .iter()
        .filter(|p| p.protocol.is_http())
        .map(|port| {
            let mut domains = vec![format!("{}:{}", s.hostname, port.port)];
            if std::mem::take(&mut first) {
                domains.insert(0, s.hostname.to_string());
            }
            VirtualHost {
                name: cluster_name(&s.hostname, port.port),
                domains,
                routes: vec![route_to(
                    cluster_name(&s.hostname, port.port),
                    port.protocol,
                )],
                ..Default::default()
            }
        })
        .collect()
}

/// The outbound route configuration: every service's virtual hosts, then a
/// catch-all that answers 404 for unknown hosts.
pub fn outbound_route<'a>(services: impl Iterator<Item = &'a MeshService>) -> RouteConfiguration {
    let mut virtual_hosts: Vec<VirtualHost> = services.flat_map(virtual_hosts).collect();
    virtual_hosts.push(VirtualHost {
        name: "not_found".to_owned(),
        domains: vec!["*".to_owned()],
        routes: vec![Route {
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_owned())),
                ..Default::default()
            }),
            action: Some(route::Action::DirectResponse(DirectResponseAction {
                status: 404,
                body: Some(DataSource {
                    specifier: Some(data_source::Specifier::InlineString(
                        "no service for this host\n".to_owned(),
                    )),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }],
        ..Default::default()
    });
    RouteConfiguration {
        name: OUTBOUND_HTTP.to_owned(),
        virtual_hosts,
        ..Default::default()
    }
}

/// For each gRPC or HTTP/2 port: a Listener named `HOSTNAME:PORT` with an
/// `api_listener` (what proxyless gRPC clients ask for) and its route
/// configuration of the same name.
pub fn grpc_listeners(ms: &MeshService) -> Vec<(Listener, RouteConfiguration)> {
    let s = &ms.service;
    s.ports
        .iter()
        .filter(|p| p.protocol.is_http2())
        .map(|port| {
            let name = grpc_listener_name(&s.hostname, port.port);
            let hcm = connection_manager(&name, &name);
            let listener = Listener {
                name: name.clone(),
                api_listener: Some(ApiListener {
                    api_listener: Some(any_of(HCM_TYPE, &hcm)),
                }),
                ..Default::default()
            };
            let route = RouteConfiguration {
                name: name.clone(),
                virtual_hosts: vec![VirtualHost {
                    name: name.clone(),
                    domains: vec![name.clone(), s.hostname.to_string()],
                    routes: vec![route_to(
                        cluster_name(&s.hostname, port.port),
                        port.protocol,
                    )],
                    ..Default::default()
                }],
                ..Default::default()
            };
            (listener, route)
        })
        .collect()
}

#[cfg(test)]
mod tests;
