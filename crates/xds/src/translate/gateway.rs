//! What a router proxy receives for one gateway
//! ([`sextant_core::rules::gateway`]): a listener per HTTP listener of the
//! gateway, bound where the router was told (`GATEWAY_BIND`), each with
//! the route table `http.PORT`: a virtual host per name a bound route rule
//! serves there, then a catch-all that answers 404. A declared port
//! listens from the moment the gateway exists, routes or not.
//!
//! A bound rule's routes are translated as a service's route rule's are
//! (matches, weights, retries, faults, mirrors, rewrites), through a
//! stand-in service that carries the rule and, for each destination, the
//! policy the gateway's namespace sees and the single port.

use std::net::IpAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteConfiguration, RouteMatch, VirtualHost, route, route_match,
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

/// The listener of one HTTP listener of a gateway, on `bind`:`port`.
pub fn gateway_listener(bind: IpAddr, port: u32) -> Listener {
    let hcm = connection_manager(&format!("gateway_{port}"), &gateway_route_name(port), true);
    Listener {
        name: gateway_listener_name(bind, port),
        address: Some(socket(&bind.to_string(), port)),
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

/// The route table of gateway port `port`: `virtual_hosts`, then the
/// catch-all (404, naming the gateway).
pub fn gateway_route(
    port: u32,
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
        name: gateway_route_name(port),
        virtual_hosts,
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
    VirtualHost {
        name: format!("{domain}:{port}"),
        domains: vec![domain.to_owned(), format!("{domain}:{port}")],
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
