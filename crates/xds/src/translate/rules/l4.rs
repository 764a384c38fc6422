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
    let own = || cluster_name(&ms.service.hostname, port);
    let targets = l4_targets(ms, port, sni)
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| vec![(own(), 1)]);
    weighted_tcp_proxy(stat_prefix, targets)
}

/// A TCP proxy named `stat_prefix` to `targets` (cluster, weight): one
/// cluster, or weighted ones, each connection choosing once.
pub(in crate::translate) fn weighted_tcp_proxy(
    stat_prefix: &str,
    mut targets: Vec<(String, u32)>,
) -> envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy {
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
        TcpProxy, tcp_proxy,
    };
    let specifier = if targets.len() == 1 {
        tcp_proxy::ClusterSpecifier::Cluster(targets.remove(0).0)
    } else {
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
    };
    TcpProxy {
        stat_prefix: stat_prefix.to_owned(),
        cluster_specifier: Some(specifier),
        ..Default::default()
    }
}
