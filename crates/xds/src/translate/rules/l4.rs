//! Where a connection goes by a route rule's TCP and TLS routes: the
//! destinations' clusters, as one TCP proxy.

use super::*;

/// Where a connection to `port` of `ms` goes by its route rule's TCP
/// routes (`sni: None`) or TLS routes (a TLS connection naming `sni`):
/// the destinations' clusters with their weights (equal shares when none
/// is given); `None` when no route matches (the port's own cluster).
pub(in crate::translate) fn l4_targets(
    ms: &MeshService,
    port: u32,
    sni: Option<&str>,
) -> Option<Vec<(String, u32)>> {
    let (_, rule) = ms.route_rule()?;
    let route = rule.l4_route(port, sni)?;
    Some(
        route
            .iter()
            .map(|d| {
                (
                    destination_cluster(ms, &d.destination, port),
                    d.weight.unwrap_or(1),
                )
            })
            .filter(|(_, w)| *w > 0)
            .collect(),
    )
}

/// A TCP proxy named `stat_prefix` for port `port` of `ms`: to the port's
/// own cluster, or as [`l4_targets`] says (one cluster, or weighted ones).
pub(in crate::translate) fn tcp_proxy_to(
    stat_prefix: &str,
    ms: &MeshService,
    port: u32,
    sni: Option<&str>,
) -> envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy {
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
        TcpProxy, tcp_proxy,
    };
    let own = || cluster_name(&ms.service.hostname, port);
    let specifier = match l4_targets(ms, port, sni) {
        Some(targets) if targets.len() > 1 => {
            tcp_proxy::ClusterSpecifier::WeightedClusters(tcp_proxy::WeightedCluster {
                clusters: targets
                    .into_iter()
                    .map(
                        |(name, weight)| tcp_proxy::weighted_cluster::ClusterWeight {
                            name,
                            weight,
                            ..Default::default()
                        },
                    )
                    .collect(),
            })
        }
        Some(mut targets) if targets.len() == 1 => {
            tcp_proxy::ClusterSpecifier::Cluster(targets.remove(0).0)
        }
        _ => tcp_proxy::ClusterSpecifier::Cluster(own()),
    };
    TcpProxy {
        stat_prefix: stat_prefix.to_owned(),
        cluster_specifier: Some(specifier),
        ..Default::default()
    }
}
