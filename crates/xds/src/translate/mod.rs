//! The pure translation of the merged view into Envoy resources.
//!
//! Everything here is a function of its inputs, deterministic (maps are
//! `BTreeMap`s), so that equal views give byte-equal resources and equal
//! versions on every replica.

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::core::v3::Address as EnvoyAddress;
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, HealthStatus, SocketAddress, address,
    config_source, socket_address,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use sextant_core::Health;

/// Settings of the translation that are not in the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranslateOptions {
    /// Where the outbound HTTP listener handed to proxies listens.
    /// Default 127.0.0.1:15001, Pilot's habit.
    pub outbound_addr: SocketAddr,
    /// Explicit mode's TCP listeners: each TCP or TLS service port P gets a
    /// TCP proxy listener on the outbound address's IP at P + offset.
    /// `None` (the default): no TCP listeners.
    pub tcp_port_offset: Option<u32>,
    /// The mesh's trust domain: the peers' certificates proxyless gRPC
    /// clients accept under ISTIO_MUTUAL name an identity of it.
    pub trust_domain: String,
    /// The mesh's root namespace (its peer authentication rule without a
    /// selector is the mesh's): which servers take no mutual TLS.
    pub root_namespace: String,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        TranslateOptions {
            outbound_addr: SocketAddr::from(([127, 0, 0, 1], 15001)),
            tcp_port_offset: None,
            trust_domain: "cluster.local".to_owned(),
            root_namespace: "istio-system".to_owned(),
        }
    }
}

/// The prefix of explicit mode's TCP listeners: `outbound_tcp_PORT`,
/// named by the port they bind.
pub const OUTBOUND_TCP_PREFIX: &str = "outbound_tcp_";

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

pub mod authz;
pub mod capture;
mod clusters;
mod endpoints;
pub mod gateway;
mod listeners;
pub mod mtls;
mod routes;
mod rules;
#[cfg(test)]
pub(crate) mod tests;

use clusters::uses_eds;
pub use clusters::{asks_istio_mutual, clusters, grpc_mesh_clusters, mesh_clusters};
use endpoints::load_assignment;
pub use endpoints::{empty_load_assignment, load_assignments, load_assignments_with};
pub use listeners::{grpc_listeners, outbound_listener, tcp_listener};
use routes::route_to;
pub use routes::{
    empty_route_configuration, not_found_virtual_host, outbound_route, virtual_hosts,
};
pub use rules::{Client, Unhonoured, subset_cluster_name};

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
