//! Listeners: the outbound HTTP listener and the proxyless gRPC API
//! listeners, with their HTTP connection managers.

use envoy_types::pb::envoy::config::listener::v3::{
    ApiListener, Filter, FilterChain, Listener, filter,
};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use sextant_core::MeshService;

use super::rules::{Client, FAULT_FILTER, FAULT_TYPE, RuleRoutes, Unhonoured};

use super::*;

pub(super) fn router_filter() -> HttpFilter {
    HttpFilter {
        name: ROUTER_FILTER.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any_of(
            "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
            &Router::default(),
        ))),
        ..Default::default()
    }
}

/// The fault filter with no faults of its own: routes give theirs in
/// `typed_per_filter_config`.
fn fault_filter() -> HttpFilter {
    HttpFilter {
        name: FAULT_FILTER.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any_of(
            FAULT_TYPE,
            &HttpFault::default(),
        ))),
        ..Default::default()
    }
}

pub(super) fn connection_manager(
    stat_prefix: &str,
    route_config_name: &str,
    fault: bool,
) -> HttpConnectionManager {
    let mut http_filters = vec![router_filter()];
    if fault {
        http_filters.insert(0, fault_filter());
    }
    HttpConnectionManager {
        stat_prefix: stat_prefix.to_owned(),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route_config_name.to_owned(),
        })),
        http_filters,
        ..Default::default()
    }
}

pub(super) const HCM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// The outbound HTTP listener: every HTTP-like service port, routed by
/// Host, with the fault filter before the router (routes with a fault rule
/// configure it).
pub fn outbound_listener(options: &TranslateOptions) -> Listener {
    let hcm = connection_manager(OUTBOUND_HTTP, OUTBOUND_HTTP, true);
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

/// For each gRPC or HTTP/2 port: a Listener named `HOSTNAME:PORT` with an
/// `api_listener` (what proxyless gRPC clients ask for) and its route
/// configuration of the same name, holding the service's route rule as
/// gRPC clients can take it (what they cannot goes to `notes`). The fault
/// filter is there when a route injects faults.
pub fn grpc_listeners(
    ms: &MeshService,
    notes: &mut Vec<Unhonoured>,
) -> Vec<(Listener, RouteConfiguration)> {
    let s = &ms.service;
    let fault = ms
        .route_rule()
        .is_some_and(|(_, r)| r.http.iter().any(|h| h.fault.is_some()));
    s.ports
        .iter()
        .filter(|p| p.protocol.is_http2())
        .map(|port| {
            let name = grpc_listener_name(&s.hostname, port.port);
            let hcm = connection_manager(&name, &name, fault);
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
                    routes: RuleRoutes {
                        ms,
                        port,
                        client: Client::Grpc,
                        notes: &mut *notes,
                    }
                    .routes(),
                    ..Default::default()
                }],
                ..Default::default()
            };
            (listener, route)
        })
        .collect()
}

const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";
const TCP_PROXY_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

/// Explicit mode's TCP listener for port `port` of `hostname`: bound on the
/// outbound address's IP at `bind`, proxying every connection to the
/// port's cluster.
pub fn tcp_listener(
    options: &TranslateOptions,
    bind: u32,
    ms: &sextant_core::MeshService,
    port: &sextant_core::ServicePort,
) -> Listener {
    let hostname = ms.service.hostname.as_str();
    let cluster = cluster_name(hostname, port.port);
    // A TLS port's connections name the service (its own listener here):
    // its TLS routes for that name apply.
    let sni = (port.protocol == sextant_core::Protocol::Tls).then_some(hostname);
    let proxy = super::rules::tcp_proxy_to(&cluster, ms, port.port, sni);
    Listener {
        name: format!("{OUTBOUND_TCP_PREFIX}{bind}"),
        address: Some(socket(&options.outbound_addr.ip().to_string(), bind)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: TCP_PROXY_FILTER.to_owned(),
                config_type: Some(filter::ConfigType::TypedConfig(any_of(
                    TCP_PROXY_TYPE,
                    &proxy,
                ))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}
