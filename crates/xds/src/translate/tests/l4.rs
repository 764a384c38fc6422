//! Where a destination ends: resolutions (ORIGINAL_DST, LOGICAL_DNS, EDS
//! for resolved names), external services' TLS, TCP and TLS routes, and
//! what a route takes from the host it sends to (its single port, its
//! ring-hash key).

use super::*;

#[test]
fn resolutions_pick_the_cluster_type_and_external_services_get_no_mesh_tls() {
    use super::mtls::{MtlsOptions, PeerMode};
    use sextant_core::{Location, Resolution};
    let kind = |c: &Cluster| c.cluster_discovery_type.clone();
    let mut none = Service::new("api.example.com").with_port("https", 443, Protocol::Tls);
    none.resolution = Some(Resolution::None);
    none.location = Location::MeshExternal;
    let mut rr = Service::new("lb.example.com")
        .with_port("http", 80, Protocol::Http)
        .with_endpoint(Endpoint::new("lb.example.com".parse().expect("name")));
    rr.resolution = Some(Resolution::DnsRoundRobin);
    let mut ips = Service::new("db.example.com")
        .with_port("tcp", 5432, Protocol::Tcp)
        .with_endpoint(Endpoint::new("10.0.0.5".parse().expect("addr")));
    ips.resolution = Some(Resolution::Dns);
    ips.location = Location::MeshExternal;
    // A policy asking for a balancer ORIGINAL_DST cannot take.
    let policy: sextant_core::PolicyEntry = serde_yaml_ng::from_str(
        "name: lr\nhost: api.example.com\ntrafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}\n",
    )
    .expect("policy");
    let view = view_of(
        [
            (none, vec![Arc::new(policy.into())]),
            (rr, Vec::new()),
            (ips, Vec::new()),
        ],
        Vec::new(),
    );
    let mut notes = Vec::new();
    let c = &clusters(&ms(&view, "api.example.com"), Client::Envoy, &mut notes)[0];
    assert_eq!(
        kind(c),
        Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32
        ))
    );
    assert_eq!(c.lb_policy, LbPolicy::ClusterProvided as i32);
    assert!(c.load_assignment.is_none() && c.eds_cluster_config.is_none());
    let c = &clusters(&ms(&view, "lb.example.com"), Client::Envoy, &mut notes)[0];
    assert_eq!(
        kind(c),
        Some(ClusterDiscoveryType::Type(DiscoveryType::LogicalDns as i32))
    );
    assert!(c.load_assignment.is_some());
    assert!(load_assignments(&ms(&view, "lb.example.com")).is_empty());
    // Resolved names (IP addresses) travel over EDS like any service's.
    let db = ms(&view, "db.example.com");
    assert_eq!(
        kind(&clusters(&db, Client::Envoy, &mut notes)[0]),
        Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
    );
    assert_eq!(load_assignments(&db).len(), 1);
    // Outside the mesh: no mutual TLS, whatever the mesh's mode.
    let options = MtlsOptions {
        trust_domain: "example.org".into(),
        mode: PeerMode::Strict,
    };
    assert!(
        mesh_clusters(&db, &options, &mut notes)[0]
            .transport_socket_matches
            .is_empty()
    );
    let mut internal = db.clone();
    internal.service.location = Location::MeshInternal;
    assert!(
        !mesh_clusters(&internal, &options, &mut notes)[0]
            .transport_socket_matches
            .is_empty()
    );
}

#[test]
fn tcp_and_tls_routes_pick_weighted_clusters_per_connection() {
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
        TcpProxy, tcp_proxy,
    };
    let route: sextant_core::RouteEntry = serde_yaml_ng::from_str(
        "name: db\nhosts: [db.default.svc]\n\
         tcp:\n  - match: [{port: 5432}]\n    route:\n      - {destination: {host: db.default.svc, subset: old}, weight: 80}\n      - {destination: {host: db.default.svc, subset: new}, weight: 20}\n\
         tls:\n  - match: [{sniHosts: [\"*.db.default.svc\"]}]\n    route: [{destination: {host: replica.default.svc, port: {number: 6432}}}]\n",
    )
    .expect("route");
    let rule: sextant_core::Rule = route.into();
    assert!(rule.validate().is_ok(), "{:?}", rule.validate());
    let db = Service::new("db.default.svc")
        .with_port("tcp", 5432, Protocol::Tcp)
        .with_port("other", 5433, Protocol::Tcp)
        .with_port("tls", 5434, Protocol::Tls);
    let view = view_of([(db, vec![Arc::new(rule)])], Vec::new());
    let ms = ms(&view, "db.default.svc");
    let specifier = |port: u32, sni: Option<&str>| -> tcp_proxy::ClusterSpecifier {
        let proxy: TcpProxy = rules::tcp_proxy_to("stat", &ms, port, sni);
        proxy.cluster_specifier.expect("specifier")
    };
    let tcp_proxy::ClusterSpecifier::WeightedClusters(w) = specifier(5432, None) else {
        panic!("weighted clusters")
    };
    let got: Vec<(&str, u32)> = w
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight))
        .collect();
    assert_eq!(
        got,
        [
            ("outbound|5432|old|db.default.svc", 80),
            ("outbound|5432|new|db.default.svc", 20)
        ]
    );
    // Another port: no route matches, the port's own cluster.
    assert_eq!(
        specifier(5433, None),
        tcp_proxy::ClusterSpecifier::Cluster("outbound|5433||db.default.svc".into())
    );
    // TLS by server name: a suffix pattern, and the destination's port.
    assert_eq!(
        specifier(5434, Some("a.db.default.svc")),
        tcp_proxy::ClusterSpecifier::Cluster("outbound|6432||replica.default.svc".into())
    );
    assert_eq!(
        specifier(5434, Some("db.default.svc")),
        tcp_proxy::ClusterSpecifier::Cluster("outbound|5434||db.default.svc".into()),
        "`*.SUFFIX` does not match the suffix itself"
    );
    // Bad routes are refused with the field named.
    let bad: sextant_core::RouteEntry = serde_yaml_ng::from_str(
        "name: bad\nhosts: [db.default.svc]\ntcp: [{route: []}]\ntls: [{match: [{sniHosts: []}], route: [{destination: {host: db.default.svc}, weight: 50}]}]\n",
    )
    .expect("parses");
    let problems = sextant_core::Rule::from(bad)
        .validate()
        .expect_err("invalid")
        .to_string();
    for want in [
        "tcp[0].route",
        "tls[0].match[0].sniHosts",
        "weights sum to 50",
    ] {
        assert!(problems.contains(want), "{want}: {problems}");
    }
}

#[test]
fn a_destination_naming_no_port_goes_to_its_hosts_single_port() {
    let route: sextant_core::RouteEntry = serde_yaml_ng::from_str(
        "name: front\nhosts: [front.default.svc]\nhttp:\n  - match: [{uri: {prefix: /api}}]\n    route: [{destination: {host: back.default.svc}}]\n  - route: [{destination: {host: multi.default.svc}}]\n",
    )
    .expect("route");
    let mut ms = MeshService {
        service: Service::new("front.default.svc").with_port("http", 80, Protocol::Http),
        origins: vec!["memory/a".into()],
        config_generation: 1,
        endpoints_generation: 1,
        rules: vec![Arc::new(sextant_core::Rule::from(route))],
        destination_policies: Vec::new(),
        destination_ports: [("back.default.svc".into(), 9090)].into(),
        namespaced: Vec::new(),
    };
    let clusters_of = |ms: &MeshService| -> Vec<String> {
        virtual_hosts(ms, &mut Vec::new())[0]
            .routes
            .iter()
            .filter_map(|r| match &r.action {
                Some(route::Action::Route(a)) => match &a.cluster_specifier {
                    Some(envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier::Cluster(c)) => Some(c.clone()),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    };
    let got = clusters_of(&ms);
    assert!(
        got.contains(&"outbound|9090||back.default.svc".to_owned()),
        "{got:?}"
    );
    // A host with several ports (none recorded): the request's port.
    assert!(
        got.contains(&"outbound|80||multi.default.svc".to_owned()),
        "{got:?}"
    );
    ms.destination_ports.clear();
    assert!(clusters_of(&ms).contains(&"outbound|80||back.default.svc".to_owned()));
}

/// A route to another host carries that host's ring-hash key (from the
/// destination policies the view attaches to the routing service).
#[test]
fn a_route_to_another_host_hashes_by_that_hosts_policy() {
    use envoy_types::pb::envoy::config::route::v3::route_action::hash_policy::PolicySpecifier;
    let route: sextant_core::RouteEntry = serde_yaml_ng::from_str(
        "name: front\nhosts: [front.default.svc]\nhttp: [{route: [{destination: {host: back.default.svc}}]}]",
    )
    .expect("route");
    let policy: sextant_core::PolicyEntry = serde_yaml_ng::from_str(
        "name: back\nhost: back.default.svc\ntrafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}",
    )
    .expect("policy");
    let ms = MeshService {
        service: Service::new("front.default.svc").with_port("http", 8080, Protocol::Http),
        origins: vec!["memory/a".into()],
        config_generation: 1,
        endpoints_generation: 1,
        rules: vec![Arc::new(sextant_core::Rule::from(route))],
        destination_policies: vec![Arc::new(sextant_core::Rule::from(policy))],
        destination_ports: Default::default(),
        namespaced: Vec::new(),
    };
    let vhs = virtual_hosts(&ms, &mut Vec::new());
    let Some(route::Action::Route(action)) = &vhs[0].routes[0].action else {
        panic!("a route action");
    };
    assert_eq!(action.hash_policy.len(), 1, "{action:?}");
    assert!(matches!(
        &action.hash_policy[0].policy_specifier,
        Some(PolicySpecifier::Header(h)) if h.header_name == "x-user"
    ));
}
