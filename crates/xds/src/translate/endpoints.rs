//! Endpoint assignments: a service port's endpoints grouped by locality,
//! every one weighted (gRPC clients require it).

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::Locality as EnvoyLocality;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use sextant_core::{Locality, MeshService, Service, ServicePort};

use super::*;

/// One ClusterLoadAssignment per service port of an EDS service, and one
/// per port and subset of its destination policy (the endpoints whose
/// labels the subset selects).
pub fn load_assignments(ms: &MeshService) -> Vec<ClusterLoadAssignment> {
    load_assignments_with(ms, &super::mtls::ServerModes::default())
}

/// [`load_assignments`], an endpoint whose workload takes no mutual TLS on
/// its port (`servers`) marked as one without a sidecar.
pub fn load_assignments_with(
    ms: &MeshService,
    servers: &super::mtls::ServerModes,
) -> Vec<ClusterLoadAssignment> {
    let s = &ms.service;
    if !uses_eds(s) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for port in &s.ports {
        out.push(assignment(
            s,
            port,
            cluster_name(&s.hostname, port.port),
            |_| true,
            servers,
        ));
        for subset in super::rules::subsets(ms) {
            let name = super::rules::subset_cluster_name(&s.hostname, port.port, &subset.name);
            out.push(assignment(
                s,
                port,
                name,
                |labels| subset.selects(labels),
                servers,
            ));
        }
    }
    out
}

/// The endpoints of one port that a subset selects.
pub(super) fn subset_assignment(
    s: &Service,
    port: &ServicePort,
    subset: &sextant_core::rules::Subset,
    cluster_name: String,
) -> ClusterLoadAssignment {
    assignment(
        s,
        port,
        cluster_name,
        |labels| subset.selects(labels),
        &super::mtls::ServerModes::default(),
    )
}

/// The endpoints of one service port, grouped by locality. Every endpoint
/// and every locality has a weight, and every group a locality: gRPC
/// clients drop localities without them.
pub(super) fn load_assignment(
    s: &Service,
    port: &ServicePort,
    cluster_name: String,
) -> ClusterLoadAssignment {
    assignment(
        s,
        port,
        cluster_name,
        |_| true,
        &super::mtls::ServerModes::default(),
    )
}

fn assignment(
    s: &Service,
    port: &ServicePort,
    cluster_name: String,
    selects: impl Fn(&sextant_core::Labels) -> bool,
    servers: &super::mtls::ServerModes,
) -> ClusterLoadAssignment {
    let mut by_locality: BTreeMap<&Locality, Vec<LbEndpoint>> = BTreeMap::new();
    let mut weights: BTreeMap<&Locality, u64> = BTreeMap::new();
    for ep in &s.endpoints {
        // The view gives every endpoint the ports it serves; others are skipped.
        let Some(&target) = ep.ports.get(&port.name) else {
            continue;
        };
        if !selects(&ep.labels) {
            continue;
        }
        let lb = LbEndpoint {
            health_status: health(ep.health) as i32,
            load_balancing_weight: Some(UInt32Value { value: ep.weight }),
            // Sidecars take mutual TLS (unless their peer authentication
            // says DISABLE on the port): a mesh client's transport socket
            // match reads this.
            metadata: super::mtls::endpoint_metadata(&ep.labels)
                .filter(|_| !servers.disabled(&s.namespace, &ep.labels, target)),
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(EnvoyEndpoint {
                address: Some(socket(&ep.address.to_string(), target)),
                ..Default::default()
            })),
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
