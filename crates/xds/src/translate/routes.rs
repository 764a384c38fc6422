//! Route configurations: virtual hosts by Host, the outbound table and
//! its catch-all.

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route,
    route_action, route_match,
};
use envoy_types::pb::google::protobuf::Duration;
use sextant_core::{MeshService, Protocol};

use super::rules::{Client, RuleRoutes, Unhonoured};

use super::*;

/// An empty route configuration, answering a subscription to an unknown name.
pub fn empty_route_configuration(name: &str) -> RouteConfiguration {
    RouteConfiguration {
        name: name.to_owned(),
        ..Default::default()
    }
}

pub(super) fn route_to(cluster: String, protocol: Protocol) -> Route {
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
/// port (a domain may appear only once in a route configuration). Each
/// holds the service's route rule's routes for that port, then the
/// default route. For Envoy (the outbound table).
pub fn virtual_hosts(ms: &MeshService, notes: &mut Vec<Unhonoured>) -> Vec<VirtualHost> {
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
            virtual_host(ms, port, domains, notes)
        })
        .collect()
}

/// One service port's virtual host for Envoy, reached by `domains`: the
/// service's route rule's routes for that port, then the default route.
pub(super) fn virtual_host(
    ms: &MeshService,
    port: &sextant_core::ServicePort,
    domains: Vec<String>,
    notes: &mut Vec<Unhonoured>,
) -> VirtualHost {
    VirtualHost {
        name: cluster_name(&ms.service.hostname, port.port),
        domains,
        routes: RuleRoutes {
            ms,
            port,
            client: Client::Envoy,
            notes,
        }
        .routes(),
        ..Default::default()
    }
}

/// The outbound route configuration: every service's virtual hosts, then a
/// catch-all that answers 404 for unknown hosts.
pub fn outbound_route<'a>(services: impl Iterator<Item = &'a MeshService>) -> RouteConfiguration {
    let mut notes = Vec::new();
    let mut virtual_hosts: Vec<VirtualHost> = services
        .flat_map(|ms| virtual_hosts(ms, &mut notes))
        .collect();
    virtual_hosts.push(not_found_virtual_host());
    RouteConfiguration {
        name: OUTBOUND_HTTP.to_owned(),
        virtual_hosts,
        ..Default::default()
    }
}

/// The catch-all virtual host: 404 for hosts no service has.
pub fn not_found_virtual_host() -> VirtualHost {
    VirtualHost {
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
    }
}
