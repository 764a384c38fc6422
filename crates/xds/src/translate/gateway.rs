//! What a router proxy receives for one gateway
//! ([`sextant_core::rules::gateway`]): a listener per port of the gateway,
//! bound where the router was told (`GATEWAY_BIND`). HTTP: the route table
//! `http.PORT`, a virtual host per name a bound route rule serves there,
//! then a catch-all that answers 404. HTTPS: a chain per listener chosen
//! by server name, terminating TLS with its SDS certificates, each with
//! its table `https.PORT.LISTENER`. TLS: a chain per server name a bound
//! rule's TLS routes take, passing the bytes through to their
//! destinations. TCP: the first bound rule's TCP route. A declared port
//! listens from the moment the gateway exists, routes or not.
//!
//! A bound rule's routes are translated as a service's route rule's are
//! (matches, weights, retries, faults, mirrors, rewrites), through a
//! stand-in service that carries the rule and, for each destination, the
//! policy the gateway's namespace sees and the single port.

use std::net::IpAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{
    DataSource, TransportSocket, data_source, transport_socket,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match,
};
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret, TlsCertificate, secret,
};
use sextant_core::{Hostname, MeshService, MeshView, Protocol, Rule, Service, ServicePort};

use super::listeners::{HCM_TYPE, connection_manager};
use super::rules::{Client, RuleRoutes, Unhonoured};
use super::*;

/// The name of the listener of gateway port `port`: `ADDRESS_PORT`, as
/// Istio names a gateway's listeners.
pub fn gateway_listener_name(bind: IpAddr, port: u32) -> String {
    format!("{bind}_{port}")
}

/// The route table of gateway port `port`: `http.PORT`, as Istio's.
pub fn gateway_route_name(port: u32) -> String {
    format!("http.{port}")
}

/// Where a gateway port listens on a router: `bind`, at the declared port,
/// or at the port plus the router's offset for a declared port below 1024
/// (`GATEWAY_PORT_OFFSET`: an unprivileged Envoy behind a Service that
/// maps 80 to 8080, as Istio's gateways are run).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GatewayAddress {
    /// The address.
    pub bind: IpAddr,
    /// Added to declared ports below 1024.
    pub port_offset: u32,
}

impl GatewayAddress {
    /// Where declared port `port` listens; `None` past 65535.
    pub fn listen(&self, port: u32) -> Option<u32> {
        let listen = if port < 1024 {
            port + self.port_offset
        } else {
            port
        };
        (listen <= 65535).then_some(listen)
    }
}

/// The listener of gateway port `port`'s HTTP listeners, listening at
/// `listen` on `bind`.
pub fn gateway_listener(bind: IpAddr, listen: u32, port: u32) -> Listener {
    let hcm = connection_manager(&format!("gateway_{port}"), &gateway_route_name(port), true);
    Listener {
        name: gateway_listener_name(bind, listen),
        address: Some(socket(&bind.to_string(), listen)),
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

/// The route table of HTTPS listener `listener` on port `port`:
/// `https.PORT.LISTENER` (each HTTPS listener of a port has its own).
pub fn gateway_https_route_name(port: u32, listener: &str) -> String {
    format!("https.{port}.{listener}")
}

/// One HTTPS listener of a gateway port: the names it answers
/// (`server_names`, empty: any), the credentials it serves (SDS names)
/// and its route table.
pub struct HttpsChain {
    /// The listener's name.
    pub name: String,
    /// The server names (SNI) it answers; empty: any.
    pub server_names: Vec<String>,
    /// The SDS names of its certificates.
    pub credentials: Vec<String>,
    /// Its route table's name.
    pub route: String,
}

/// The listener of a gateway port with HTTPS listeners, on `bind`:`port`:
/// the client hello's server name picks a chain, each terminating TLS
/// with its certificates (over SDS, from the same ADS stream) and routing
/// through its own table.
pub fn gateway_https_listener(
    bind: IpAddr,
    listen: u32,
    port: u32,
    chains: &[HttpsChain],
) -> Listener {
    let filter_chains = chains
        .iter()
        .map(|c| {
            let hcm = connection_manager(&format!("gateway_{port}_{}", c.name), &c.route, true);
            let tls = DownstreamTlsContext {
                common_tls_context: Some(CommonTlsContext {
                    alpn_protocols: vec!["h2".to_owned(), "http/1.1".to_owned()],
                    tls_certificate_sds_secret_configs: c
                        .credentials
                        .iter()
                        .map(|name| SdsSecretConfig {
                            name: name.clone(),
                            sds_config: Some(ads()),
                        })
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            FilterChain {
                name: c.name.clone(),
                filter_chain_match: (!c.server_names.is_empty()).then(|| FilterChainMatch {
                    server_names: c.server_names.clone(),
                    ..Default::default()
                }),
                filters: vec![Filter {
                    name: HCM_FILTER.to_owned(),
                    config_type: Some(filter::ConfigType::TypedConfig(any_of(HCM_TYPE, &hcm))),
                }],
                transport_socket: Some(TransportSocket {
                    name: "envoy.transport_sockets.tls".to_owned(),
                    config_type: Some(transport_socket::ConfigType::TypedConfig(any_of(
                        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                        &tls,
                    ))),
                }),
                ..Default::default()
            }
        })
        .collect();
    Listener {
        name: gateway_listener_name(bind, listen),
        address: Some(socket(&bind.to_string(), listen)),
        listener_filters: vec![tls_inspector()],
        filter_chains,
        ..Default::default()
    }
}

/// One chain of a gateway port's TLS (passed through) or TCP listeners:
/// connections naming one of `server_names` (empty: any) go to `targets`
/// (cluster, weight), each connection choosing once.
pub struct L4Chain {
    /// Its name (the listener's, and the server name).
    pub name: String,
    /// The server names (SNI) it takes; empty: any.
    pub server_names: Vec<String>,
    /// Where its connections go.
    pub targets: Vec<(String, u32)>,
}

/// The listener of a gateway port with TLS listeners (`tls`: the client
/// hello's server name picks a chain, the bytes pass through untouched)
/// or a TCP listener, on `bind`:`port`. A connection no chain takes is
/// closed: the port listens from the moment the gateway exists.
pub fn gateway_l4_listener(
    bind: IpAddr,
    listen: u32,
    port: u32,
    tls: bool,
    chains: &[L4Chain],
) -> Listener {
    use envoy_types::pb::envoy::extensions::filters::network::direct_response::v3::Config;
    let filter_chains = chains
        .iter()
        .map(|c| FilterChain {
            name: c.name.clone(),
            filter_chain_match: (!c.server_names.is_empty()).then(|| FilterChainMatch {
                server_names: c.server_names.clone(),
                ..Default::default()
            }),
            filters: vec![super::capture::tcp_proxy_filter(
                super::rules::weighted_tcp_proxy(
                    &format!("gateway_{port}_{}", c.name),
                    c.targets.clone(),
                ),
            )],
            ..Default::default()
        })
        .collect();
    let close = FilterChain {
        name: "no_route".to_owned(),
        filters: vec![Filter {
            name: "envoy.filters.network.direct_response".to_owned(),
            config_type: Some(filter::ConfigType::TypedConfig(any_of(
                "type.googleapis.com/envoy.extensions.filters.network.direct_response.v3.Config",
                &Config::default(),
            ))),
        }],
        ..Default::default()
    };
    Listener {
        name: gateway_listener_name(bind, listen),
        address: Some(socket(&bind.to_string(), listen)),
        listener_filters: if tls {
            vec![tls_inspector()]
        } else {
            Vec::new()
        },
        filter_chains,
        default_filter_chain: Some(close),
        ..Default::default()
    }
}

/// Where route rule `rule`'s TLS route for server name `sni` (`None`: its
/// TCP route) sends a connection to gateway port `port`, for a gateway of
/// namespace `namespace` in `view`: (cluster, weight); `None` when no
/// route matches.
pub fn gateway_l4_targets(
    rule: &Arc<Rule>,
    port: u32,
    sni: Option<&str>,
    view: &MeshView,
    namespace: &str,
) -> Option<Vec<(String, u32)>> {
    let stand_in = stand_in(rule, port, view, namespace);
    super::rules::l4_targets(&stand_in, port, sni).filter(|t| !t.is_empty())
}

fn tls_inspector() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".to_owned(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any_of(
            "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
            &TlsInspector::default(),
        ))),
        ..Default::default()
    }
}

/// A credential as the SDS secret `name`: a certificate chain and key.
pub fn tls_secret(name: &str, chain: &str, key: &str) -> Secret {
    let inline = |s: &str| DataSource {
        specifier: Some(data_source::Specifier::InlineString(s.to_owned())),
        ..Default::default()
    };
    Secret {
        name: name.to_owned(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(chain)),
            private_key: Some(inline(key)),
            ..Default::default()
        })),
    }
}

/// The route table `name`: `virtual_hosts`, then the catch-all (404,
/// naming the gateway).
pub fn gateway_route(
    name: String,
    mut virtual_hosts: Vec<VirtualHost>,
    gateway: &str,
) -> RouteConfiguration {
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
                    specifier: Some(data_source::Specifier::InlineString(format!(
                        "no route for this host at gateway {gateway}\n"
                    ))),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }],
        ..Default::default()
    });
    RouteConfiguration {
        name,
        virtual_hosts,
        // A client may name the port it dialled (a router's port offset, a
        // node port): the name alone decides.
        ignore_port_in_host_matching: true,
        ..Default::default()
    }
}

/// The virtual host of name `domain` on gateway port `port`: the routes
/// of route rule `rule`, for a gateway of namespace `namespace` in `view`.
/// A request no route matches is answered 404 by the table's catch-all
/// (a gateway has no service of its own to fall back to).
pub fn gateway_virtual_host(
    domain: &str,
    port: u32,
    rule: &Arc<Rule>,
    view: &MeshView,
    namespace: &str,
    notes: &mut Vec<Unhonoured>,
) -> VirtualHost {
    let stand_in = stand_in(rule, port, view, namespace);
    let service_port = &stand_in.service.ports[0];
    let routes = RuleRoutes {
        ms: &stand_in,
        port: service_port,
        client: Client::Envoy,
        notes,
    }
    .rule_routes_only();
    // A destination that is no service (deleted, or never there) is
    // answered 500, as the Gateway API asks of an invalid backend; the
    // route's other destinations keep their shares.
    let routes = routes
        .into_iter()
        .map(|mut r| {
            if let Some(route::Action::Route(action)) = &mut r.action {
                action.cluster_not_found_response_code =
                    route_action::ClusterNotFoundResponseCode::InternalServerError as i32;
            }
            r
        })
        .collect();
    VirtualHost {
        name: format!("{domain}:{port}"),
        // The table ignores the port a client names (see gateway_route).
        domains: vec![domain.to_owned()],
        routes,
        ..Default::default()
    }
}

/// A service that carries `rule` as its route rule, with the policies and
/// single ports of its destinations as the gateway's namespace sees them.
/// Its name cannot be a service's (it holds a `/`), so no destination is
/// mistaken for it.
fn stand_in(rule: &Arc<Rule>, port: u32, view: &MeshView, namespace: &str) -> MeshService {
    let mut destination_policies = Vec::new();
    let mut destination_ports = std::collections::BTreeMap::new();
    let destinations = rule
        .as_route()
        .map(|r| r.destinations())
        .into_iter()
        .flatten();
    for d in destinations {
        let Some(ms) = view.services.get(&d.host) else {
            continue;
        };
        if let [only] = ms.service.ports.as_slice() {
            destination_ports.insert(d.host.clone(), only.port);
        }
        let rules = match ms.variant_for(Some(namespace)) {
            Some(i) => &ms.namespaced[i].rules,
            None => &ms.rules,
        };
        if let Some(p) = rules.iter().find(|r| r.as_policy().is_some())
            && !destination_policies.contains(p)
        {
            destination_policies.push(p.clone());
        }
    }
    let mut service = Service::new(Hostname::new(format!(
        "{}/{}",
        rule.key.namespace, rule.key.name
    )));
    service.ports = vec![ServicePort {
        name: "http".to_owned(),
        port,
        protocol: Protocol::Http,
    }];
    MeshService {
        service,
        origins: Vec::new(),
        config_generation: 0,
        endpoints_generation: 0,
        rules: vec![rule.clone()],
        destination_policies,
        destination_ports,
        namespaced: Vec::new(),
    }
}
