//! Capture mode (a pod's sidecar, traffic redirected by iptables): Istio's
//! listener layout, as pure functions of the services a proxy sees, its
//! own inbound ports and the outbound policy.
//!
//! Outbound: `virtualOutbound` on 0.0.0.0:15001 hands each redirected
//! connection to the listener of its original destination (`use_original_dst`):
//! - `0.0.0.0_PORT` (not bound) for ports with HTTP-like or TLS services:
//!   HTTP through the route configuration named `PORT` (virtual hosts by
//!   hostname and virtual IP, with and without the port), TLS by SNI
//!   (`tls_inspector`) to the service's cluster;
//! - `VIP_PORT` (not bound) for TCP services' virtual IPs: straight to the
//!   cluster;
//! - anything else: `PassthroughCluster` (the original destination) when
//!   the outbound policy allows, `BlackHoleCluster` when it blocks.
//!
//! Inbound: `virtualInbound` on 0.0.0.0:15006 restores the original
//! destination (`original_dst` listener filter) and picks a filter chain by
//! destination port: one per port of the proxy's own services, HTTP through
//! an HTTP connection manager (so inbound requests are observable, and a
//! later mTLS step has its place), others as TCP, to `inbound|PORT||`
//! clusters at 127.0.0.1:PORT; other ports pass through.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, LbPolicy,
};
use envoy_types::pb::envoy::config::core::v3::{DataSource, TrafficDirection, data_source};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteConfiguration, RouteMatch, VirtualHost, route, route_match,
};
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::google::protobuf::{BoolValue, Duration, UInt32Value};
use sextant_core::{MeshService, Protocol};

use super::listeners::{HCM_TYPE, connection_manager, router_filter};
use super::rules::Unhonoured;
use super::*;

/// Where iptables sends outbound connections by default (Istio's port).
pub const OUTBOUND_PORT: u16 = 15001;
/// Where iptables sends inbound connections by default (Istio's port).
pub const INBOUND_PORT: u16 = 15006;

/// The outbound virtual listener.
pub const VIRTUAL_OUTBOUND: &str = "virtualOutbound";
/// The inbound virtual listener.
pub const VIRTUAL_INBOUND: &str = "virtualInbound";
/// Where destinations outside the mesh go when the policy allows them.
pub const PASSTHROUGH: &str = "PassthroughCluster";
/// Where they go when it blocks them: a cluster without endpoints.
pub const BLACKHOLE: &str = "BlackHoleCluster";
/// Inbound connections to ports no own service declares.
pub const INBOUND_PASSTHROUGH: &str = "InboundPassthroughCluster";

const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";
const TCP_PROXY_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

/// Istio's `outboundTrafficPolicy`: what happens to destinations outside
/// the mesh.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboundPolicy {
    /// Pass them through to where they were going (Istio's ALLOW_ANY).
    #[default]
    Allow,
    /// Refuse them (Istio's REGISTRY_ONLY).
    Block,
}

impl std::str::FromStr for OutboundPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "allow" | "allow_any" => Ok(OutboundPolicy::Allow),
            "block" | "registry_only" => Ok(OutboundPolicy::Block),
            other => Err(format!("{other:?} is not allow or block")),
        }
    }
}

/// Capture mode's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureOptions {
    /// Where iptables sends outbound connections. Default 15001.
    pub outbound_port: u32,
    /// Where iptables sends inbound connections. Default 15006.
    pub inbound_port: u32,
    /// Destinations outside the mesh. Default allow.
    pub outbound_policy: OutboundPolicy,
    /// Mutual TLS between sidecars that hold a workload certificate.
    pub mtls: super::mtls::MtlsOptions,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            outbound_port: u32::from(OUTBOUND_PORT),
            inbound_port: u32::from(INBOUND_PORT),
            outbound_policy: OutboundPolicy::Allow,
            mtls: super::mtls::MtlsOptions::default(),
        }
    }
}

/// A port of the proxy's own workload: where inbound traffic is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InboundPort {
    /// The port the workload listens on (the endpoint's target port).
    pub port: u32,
    /// How to carry it.
    pub protocol: Protocol,
    /// Where the proxy delivers it (a Sidecar's ingress `defaultEndpoint`);
    /// `None`: `port` on loopback.
    pub deliver: Option<std::net::SocketAddr>,
}

/// `inbound|PORT||`, Istio's inbound cluster naming.
pub fn inbound_cluster_name(port: u32) -> String {
    format!("inbound|{port}||")
}

fn tcp_proxy_chain(stat_prefix: &str, cluster: &str) -> Filter {
    tcp_proxy_filter(TcpProxy {
        stat_prefix: stat_prefix.to_owned(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.to_owned())),
        ..Default::default()
    })
}

/// The TCP proxy of port `port` of `ms`: its own cluster, or where its
/// route rule's TCP or TLS routes send the connection (`sni`).
fn service_tcp_proxy(ms: &MeshService, port: u32, sni: Option<&str>) -> Filter {
    let own = cluster_name(&ms.service.hostname, port);
    tcp_proxy_filter(super::rules::tcp_proxy_to(&own, ms, port, sni))
}

pub(super) fn tcp_proxy_filter(proxy: TcpProxy) -> Filter {
    Filter {
        name: TCP_PROXY_FILTER.to_owned(),
        config_type: Some(filter::ConfigType::TypedConfig(any_of(
            TCP_PROXY_TYPE,
            &proxy,
        ))),
    }
}

fn hcm_filter(hcm: &HttpConnectionManager) -> Filter {
    Filter {
        name: HCM_FILTER.to_owned(),
        config_type: Some(filter::ConfigType::TypedConfig(any_of(HCM_TYPE, hcm))),
    }
}

fn listener_filter<M: prost::Message>(name: &str, type_url: &str, m: &M) -> ListenerFilter {
    ListenerFilter {
        name: name.to_owned(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any_of(
            type_url, m,
        ))),
        ..Default::default()
    }
}

fn outside(policy: OutboundPolicy) -> &'static str {
    match policy {
        OutboundPolicy::Allow => PASSTHROUGH,
        OutboundPolicy::Block => BLACKHOLE,
    }
}

/// The outbound virtual listener: bound on 0.0.0.0:`outbound_port`, it
/// hands connections to the listener of their original destination, and
/// sends the rest outside the mesh or nowhere.
pub fn virtual_outbound(options: &CaptureOptions) -> Listener {
    let cluster = outside(options.outbound_policy);
    Listener {
        name: VIRTUAL_OUTBOUND.to_owned(),
        address: Some(socket("0.0.0.0", options.outbound_port)),
        use_original_dst: Some(BoolValue { value: true }),
        filter_chains: vec![FilterChain {
            name: cluster.to_owned(),
            filters: vec![tcp_proxy_chain(cluster, cluster)],
            ..Default::default()
        }],
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

/// The services a proxy sees, by port, for the outbound listeners.
#[derive(Default)]
pub struct PortPlan<'a> {
    /// HTTP-like ports: the services (and port) routed by the table `PORT`.
    pub http: BTreeMap<u32, Vec<(&'a MeshService, &'a sextant_core::ServicePort)>>,
    /// TLS ports: the services matched by SNI.
    pub tls: BTreeMap<u32, Vec<&'a MeshService>>,
    /// TCP ports by virtual IP: the service there (the first by hostname).
    pub tcp: BTreeMap<(std::net::IpAddr, u32), &'a MeshService>,
    /// TCP ports of services without a virtual IP, which capture cannot
    /// tell apart: `HOST:PORT`.
    pub unreachable: Vec<String>,
}

impl<'a> PortPlan<'a> {
    /// Sorts `services` (in hostname order) by how their ports are reached.
    pub fn of(services: impl Iterator<Item = &'a MeshService>) -> PortPlan<'a> {
        let mut plan = PortPlan::default();
        for ms in services {
            let s = &ms.service;
            for port in &s.ports {
                match port.protocol {
                    p if p.is_http() => plan.http.entry(port.port).or_default().push((ms, port)),
                    Protocol::Tls => plan.tls.entry(port.port).or_default().push(ms),
                    _ => {
                        if s.addresses.is_empty() {
                            plan.unreachable
                                .push(format!("{}:{}", s.hostname, port.port));
                        }
                        for vip in &s.addresses {
                            plan.tcp.entry((*vip, port.port)).or_insert(ms);
                        }
                    }
                }
            }
        }
        plan
    }
}

/// The outbound listener of one port, `0.0.0.0_PORT`, not bound: TLS
/// services by SNI, HTTP through the route table `PORT`, the rest outside.
pub fn port_listener(
    port: u32,
    http: bool,
    tls: &[&MeshService],
    options: &CaptureOptions,
) -> Listener {
    let name = format!("0.0.0.0_{port}");
    let mut chains = Vec::new();
    for ms in tls {
        let cluster = cluster_name(&ms.service.hostname, port);
        chains.push(FilterChain {
            name: cluster.clone(),
            filter_chain_match: Some(FilterChainMatch {
                transport_protocol: "tls".to_owned(),
                server_names: vec![ms.service.hostname.to_string()],
                ..Default::default()
            }),
            filters: vec![service_tcp_proxy(
                ms,
                port,
                Some(ms.service.hostname.as_str()),
            )],
            ..Default::default()
        });
    }
    if http {
        let hcm = connection_manager(&format!("outbound_0.0.0.0_{port}"), &port.to_string(), true);
        chains.push(FilterChain {
            name: format!("http_{port}"),
            // Beside TLS chains, plain bytes only (a TLS client hello for
            // another name goes outside).
            filter_chain_match: (!tls.is_empty()).then(|| FilterChainMatch {
                transport_protocol: "raw_buffer".to_owned(),
                ..Default::default()
            }),
            filters: vec![hcm_filter(&hcm)],
            ..Default::default()
        });
    }
    let cluster = outside(options.outbound_policy);
    Listener {
        name,
        address: Some(socket("0.0.0.0", port)),
        bind_to_port: Some(BoolValue { value: false }),
        listener_filters: if tls.is_empty() {
            Vec::new()
        } else {
            vec![listener_filter(
                "envoy.filters.listener.tls_inspector",
                "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
                &TlsInspector::default(),
            )]
        },
        filter_chains: chains,
        default_filter_chain: Some(FilterChain {
            name: cluster.to_owned(),
            filters: vec![tcp_proxy_chain(cluster, cluster)],
            ..Default::default()
        }),
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

/// The outbound listener of a TCP service's virtual IP and port, `VIP_PORT`,
/// not bound: every connection to the service's cluster.
pub fn vip_listener(vip: std::net::IpAddr, port: u32, ms: &MeshService) -> Listener {
    let cluster = cluster_name(&ms.service.hostname, port);
    Listener {
        name: format!("{vip}_{port}"),
        address: Some(socket(&vip.to_string(), port)),
        bind_to_port: Some(BoolValue { value: false }),
        filter_chains: vec![FilterChain {
            name: cluster.clone(),
            filters: vec![service_tcp_proxy(ms, port, None)],
            ..Default::default()
        }],
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

/// One service's virtual host in the route table of `port`: reached by
/// hostname and by each virtual IP, with and without the port.
pub fn port_virtual_host(
    ms: &MeshService,
    port: &sextant_core::ServicePort,
    notes: &mut Vec<Unhonoured>,
) -> VirtualHost {
    let s = &ms.service;
    let mut domains = vec![
        s.hostname.to_string(),
        format!("{}:{}", s.hostname, port.port),
    ];
    for vip in &s.addresses {
        let ip = match vip {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        domains.push(format!("{ip}:{}", port.port));
        domains.push(ip);
    }
    super::routes::virtual_host(ms, port, domains, notes)
}

/// The catch-all of a port's route table: outside the mesh, or refused.
pub fn outside_virtual_host(policy: OutboundPolicy) -> VirtualHost {
    let action = match policy {
        OutboundPolicy::Allow => route::Action::Route(
            match route_to(PASSTHROUGH.to_owned(), Protocol::Http).action {
                Some(route::Action::Route(r)) => r,
                _ => Default::default(),
            },
        ),
        OutboundPolicy::Block => route::Action::DirectResponse(DirectResponseAction {
            status: 502,
            body: Some(DataSource {
                specifier: Some(data_source::Specifier::InlineString(
                    "destinations outside the mesh are blocked (outbound traffic policy)\n"
                        .to_owned(),
                )),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    VirtualHost {
        name: match policy {
            OutboundPolicy::Allow => "allow_any",
            OutboundPolicy::Block => "block_all",
        }
        .to_owned(),
        domains: vec!["*".to_owned()],
        routes: vec![Route {
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_owned())),
                ..Default::default()
            }),
            action: Some(action),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The route table of `port`: its services' virtual hosts, then the
/// catch-all.
pub fn port_route(
    port: u32,
    services: &[(&MeshService, &sextant_core::ServicePort)],
    policy: OutboundPolicy,
    notes: &mut Vec<Unhonoured>,
) -> RouteConfiguration {
    let mut virtual_hosts: Vec<VirtualHost> = services
        .iter()
        .map(|(ms, p)| port_virtual_host(ms, p, notes))
        .collect();
    virtual_hosts.push(outside_virtual_host(policy));
    RouteConfiguration {
        name: port.to_string(),
        virtual_hosts,
        ..Default::default()
    }
}

/// The inbound virtual listener for the proxy's own ports; with `mtls`
/// (the proxy holds a workload certificate), each port's chains follow its
/// mode: the workload's peer authentication rules (`peer`) over the mesh's
/// default ([`super::mtls::port_mode`], [`super::mtls::inbound_chains`]).
pub fn virtual_inbound(
    ports: &[InboundPort],
    options: &CaptureOptions,
    mtls: bool,
    peer: &sextant_core::rules::PeerModes,
    authz: &[std::sync::Arc<sextant_core::Rule>],
) -> Listener {
    let mtls = mtls.then_some(&options.mtls);
    let mut inspect = false;
    let mut chains = Vec::new();
    for p in ports {
        let cluster = inbound_cluster_name(p.port);
        let stat = format!("inbound_0.0.0.0_{}", p.port);
        // The port's filters, plain and behind mutual TLS (where the
        // caller's identity is passed on), its authorization first.
        let filters = |secured: bool| {
            if p.protocol.is_http() {
                let mut hcm = connection_manager(&stat, "", false);
                hcm.route_specifier = Some(http_connection_manager::RouteSpecifier::RouteConfig(
                    RouteConfiguration {
                        name: format!("inbound|{}", p.port),
                        virtual_hosts: vec![VirtualHost {
                            name: format!("inbound|http|{}", p.port),
                            domains: vec!["*".to_owned()],
                            routes: vec![route_to(cluster.clone(), p.protocol)],
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                ));
                hcm.http_filters = super::authz::http_filters(authz, p.port);
                hcm.http_filters.push(router_filter());
                if secured {
                    super::mtls::with_client_identity(&mut hcm);
                }
                vec![hcm_filter(&hcm)]
            } else {
                let mut filters = super::authz::network_filters(authz, p.port);
                filters.push(tcp_proxy_chain(&stat, &cluster));
                filters
            }
        };
        let plain = FilterChain {
            name: cluster.clone(),
            filter_chain_match: Some(FilterChainMatch {
                destination_port: Some(UInt32Value { value: p.port }),
                ..Default::default()
            }),
            filters: filters(false),
            ..Default::default()
        };
        match mtls {
            None => chains.push(plain),
            Some(m) => {
                let mode = super::mtls::port_mode(peer, p.port, m);
                inspect |= mode == super::mtls::PeerMode::Permissive;
                chains.extend(super::mtls::inbound_chains(plain, filters(true), mode, m));
            }
        }
    }
    let mut listener_filters = vec![listener_filter(
        "envoy.filters.listener.original_dst",
        "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst",
        &OriginalDst::default(),
    )];
    // PERMISSIVE tells mutual TLS from plaintext by what the connection
    // offers; a connection that sends nothing (a server-first protocol)
    // goes on as plaintext after a second.
    if inspect {
        listener_filters.push(listener_filter(
            "envoy.filters.listener.tls_inspector",
            "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
            &TlsInspector::default(),
        ));
    }
    Listener {
        name: VIRTUAL_INBOUND.to_owned(),
        address: Some(socket("0.0.0.0", options.inbound_port)),
        listener_filters,
        listener_filters_timeout: inspect.then_some(Duration {
            seconds: 1,
            nanos: 0,
        }),
        continue_on_listener_filters_timeout: inspect,
        filter_chains: chains,
        default_filter_chain: Some(FilterChain {
            name: INBOUND_PASSTHROUGH.to_owned(),
            filters: vec![tcp_proxy_chain(INBOUND_PASSTHROUGH, INBOUND_PASSTHROUGH)],
            ..Default::default()
        }),
        traffic_direction: TrafficDirection::Inbound as i32,
        ..Default::default()
    }
}

fn timeout() -> Option<Duration> {
    Some(Duration {
        seconds: 10,
        nanos: 0,
    })
}

/// A cluster to the connection's original destination.
pub fn original_destination_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.to_owned(),
        connect_timeout: timeout(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: LbPolicy::ClusterProvided as i32,
        ..Default::default()
    }
}

/// A cluster without endpoints: connections to it fail at once.
pub fn blackhole_cluster() -> Cluster {
    Cluster {
        name: BLACKHOLE.to_owned(),
        connect_timeout: timeout(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: BLACKHOLE.to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `inbound|PORT||`: the workload itself, at 127.0.0.1:PORT.
pub fn inbound_cluster(p: InboundPort) -> Cluster {
    let name = inbound_cluster_name(p.port);
    let mut cluster = Cluster {
        name: name.clone(),
        connect_timeout: timeout(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name,
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(match p.deliver {
                            Some(to) => socket(&to.ip().to_string(), u32::from(to.port())),
                            None => socket("127.0.0.1", p.port),
                        }),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    if p.protocol.is_http2() {
        cluster.typed_extension_protocol_options = super::clusters::http2_options();
    }
    cluster
}

#[cfg(test)]
mod tests;
