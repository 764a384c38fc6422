use super::listeners::HCM_TYPE;
use super::*;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{DirectResponseAction, RouteConfiguration, route};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager, http_filter,
};
use prost::Message;
use sextant_core::{Endpoint, Locality, MeshService, MeshView, Protocol, Service};

use crate::resource::ResourceType;
use crate::snapshot::Snapshot;

/// A view with one of everything the translator distinguishes.
pub(crate) fn representative_view() -> MeshView {
    let mut reviews = Service::new("reviews.default.svc")
        .with_port("http", 9080, Protocol::Http)
        .with_port("grpc", 9090, Protocol::Grpc);
    let zones = [("eu", "eu-1a"), ("eu", "eu-1a"), ("eu", "eu-1b")];
    for (i, (region, zone)) in zones.iter().enumerate() {
        let mut ep = Endpoint::new(format!("10.0.0.{}", i + 1).parse().expect("addr"))
            .with_port("http", 19080)
            .with_port("grpc", 19090);
        ep.locality = Locality {
            region: (*region).into(),
            zone: (*zone).into(),
            subzone: String::new(),
        };
        ep.weight = i as u32 + 1;
        if i == 2 {
            ep.health = Health::Draining;
        }
        reviews.endpoints.push(ep);
    }
    let db = Service::new("db.default.svc")
        .with_port("tcp-pg", 5432, Protocol::Tcp)
        .with_endpoint(Endpoint::new("10.0.1.1".parse().expect("addr")).with_port("tcp-pg", 5432));
    let ext = Service::new("ext.default.svc")
        .with_port("http", 80, Protocol::Http)
        .with_endpoint(Endpoint::new("example.com".parse().expect("addr")).with_port("http", 80));
    let empty = Service::new("empty.default.svc").with_port("http", 8080, Protocol::Http);
    let services = [reviews, db, ext, empty]
        .into_iter()
        .map(|s| {
            (
                s.hostname.clone(),
                Arc::new(MeshService {
                    service: s,
                    origins: vec!["memory/a".into()],
                    config_generation: 1,
                    endpoints_generation: 1,
                    rules: Vec::new(),
                }),
            )
        })
        .collect();
    MeshView {
        generation: 1,
        services,
        conflicts: Arc::new([]),
    }
}

fn ms(view: &MeshView, h: &str) -> MeshService {
    (*view.services[h]).clone()
}

#[test]
fn clusters_are_eds_per_port_with_http2_for_grpc() {
    let view = representative_view();
    let cs = clusters(
        &ms(&view, "reviews.default.svc"),
        Client::Envoy,
        &mut Vec::new(),
    );
    let names: Vec<_> = cs.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "outbound|9080||reviews.default.svc",
            "outbound|9090||reviews.default.svc"
        ]
    );
    for c in &cs {
        assert_eq!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
        );
        assert!(
            c.eds_cluster_config
                .as_ref()
                .and_then(|e| e.eds_config.as_ref())
                .is_some()
        );
        assert!(c.load_assignment.is_none());
    }
    assert!(
        cs[0].typed_extension_protocol_options.is_empty(),
        "HTTP/1 upstream"
    );
    assert!(
        cs[1]
            .typed_extension_protocol_options
            .contains_key(HTTP_PROTOCOL_OPTIONS),
        "HTTP/2 upstream"
    );

    let ext = clusters(
        &ms(&view, "ext.default.svc"),
        Client::Envoy,
        &mut Vec::new(),
    );
    assert_eq!(
        ext[0].cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32))
    );
    assert!(ext[0].load_assignment.is_some());
    assert!(load_assignments(&ms(&view, "ext.default.svc")).is_empty());
}

#[test]
fn assignments_group_by_locality_with_weights_and_target_ports() {
    let view = representative_view();
    let clas = load_assignments(&ms(&view, "reviews.default.svc"));
    assert_eq!(clas.len(), 2);
    let http = &clas[0];
    assert_eq!(http.cluster_name, "outbound|9080||reviews.default.svc");
    assert_eq!(http.endpoints.len(), 2, "two localities");
    let weights: Vec<u32> = http
        .endpoints
        .iter()
        .map(|l| l.load_balancing_weight.as_ref().expect("weight").value)
        .collect();
    assert_eq!(weights, [1 + 2, 3]);
    for group in &http.endpoints {
        assert!(group.locality.is_some(), "gRPC clients need a locality");
        for lb in &group.lb_endpoints {
            assert!(
                lb.load_balancing_weight.is_some(),
                "gRPC clients need a weight"
            );
            let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &lb.host_identifier else {
                panic!("endpoint")
            };
            let Some(address::Address::SocketAddress(sa)) =
                ep.address.as_ref().and_then(|a| a.address.clone())
            else {
                panic!("socket address")
            };
            assert_eq!(
                sa.port_specifier,
                Some(socket_address::PortSpecifier::PortValue(19080)),
                "the target port"
            );
        }
    }
    assert_eq!(
        http.endpoints[1].lb_endpoints[0].health_status,
        HealthStatus::Draining as i32
    );
    // A cluster with no endpoints still gets an (empty) assignment.
    let empty = load_assignments(&ms(&view, "empty.default.svc"));
    assert_eq!(empty.len(), 1);
    assert!(empty[0].endpoints.is_empty());
}

#[test]
fn virtual_hosts_use_each_domain_once() {
    let view = representative_view();
    let vhs = virtual_hosts(&ms(&view, "reviews.default.svc"), &mut Vec::new());
    let domains: Vec<Vec<String>> = vhs.iter().map(|v| v.domains.clone()).collect();
    assert_eq!(
        domains,
        [
            vec![
                "reviews.default.svc".to_owned(),
                "reviews.default.svc:9080".to_owned()
            ],
            vec!["reviews.default.svc:9090".to_owned()],
        ]
    );
    assert!(
        virtual_hosts(&ms(&view, "db.default.svc"), &mut Vec::new()).is_empty(),
        "TCP ports are not HTTP routed"
    );
    let route = outbound_route(view.services.values().map(|s| &**s));
    let last = route.virtual_hosts.last().expect("catch-all");
    assert_eq!(last.domains, ["*"]);
    assert!(matches!(
        last.routes[0].action,
        Some(route::Action::DirectResponse(DirectResponseAction {
            status: 404,
            ..
        }))
    ));
    let mut all: Vec<&String> = route
        .virtual_hosts
        .iter()
        .flat_map(|v| &v.domains)
        .collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "Envoy rejects a domain that appears twice");
}

#[test]
fn grpc_ports_get_an_api_listener_named_host_port() {
    let view = representative_view();
    let pairs = grpc_listeners(&ms(&view, "reviews.default.svc"), &mut Vec::new());
    assert_eq!(pairs.len(), 1);
    let (listener, route) = &pairs[0];
    assert_eq!(listener.name, "reviews.default.svc:9090");
    let any = listener
        .api_listener
        .as_ref()
        .and_then(|a| a.api_listener.as_ref())
        .expect("api_listener");
    assert_eq!(any.type_url, HCM_TYPE);
    let hcm = HttpConnectionManager::decode(any.value.as_slice()).expect("hcm");
    assert_eq!(hcm.http_filters.len(), 1);
    assert_eq!(hcm.http_filters[0].name, ROUTER_FILTER);
    assert!(
        matches!(
            hcm.http_filters[0].config_type,
            Some(http_filter::ConfigType::TypedConfig(_))
        ),
        "gRPC requires typed_config"
    );
    let Some(http_connection_manager::RouteSpecifier::Rds(rds)) = &hcm.route_specifier else {
        panic!("rds")
    };
    assert_eq!(rds.route_config_name, "reviews.default.svc:9090");
    assert_eq!(route.name, "reviews.default.svc:9090");
}

#[test]
fn outbound_listener_listens_where_configured() {
    let opts = TranslateOptions {
        outbound_addr: "127.0.0.1:25001".parse().expect("addr"),
    };
    let l: Listener = outbound_listener(&opts);
    let Some(address::Address::SocketAddress(sa)) = l.address.and_then(|a| a.address) else {
        panic!("address")
    };
    assert_eq!(
        (sa.address.as_str(), sa.port_specifier),
        (
            "127.0.0.1",
            Some(socket_address::PortSpecifier::PortValue(25001))
        )
    );
}

/// Every resource of a snapshot, decoded and printed, in push order.
fn render(snapshot: &Snapshot) -> String {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    let mut out = String::new();
    for kind in ResourceType::ALL {
        for (name, r) in &snapshot.resources(kind).resources {
            let value = r.value().expect("value");
            let body = match kind {
                ResourceType::Cluster => format!("{:#?}", Cluster::decode(value).expect("decode")),
                ResourceType::Endpoint => format!(
                    "{:#?}",
                    ClusterLoadAssignment::decode(value).expect("decode")
                ),
                ResourceType::Listener => {
                    format!("{:#?}", Listener::decode(value).expect("decode"))
                }
                ResourceType::Route => {
                    format!("{:#?}", RouteConfiguration::decode(value).expect("decode"))
                }
            };
            out.push_str(&format!(
                "### {kind} {name} version {}\n{body}\n\n",
                r.version
            ));
        }
    }
    out
}

#[test]
fn golden_representative_view() {
    let snapshot =
        Snapshot::empty(TranslateOptions::default()).next(Arc::new(representative_view()));
    let got = render(&snapshot);
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/representative.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).expect("write golden");
    }
    let want =
        std::fs::read_to_string(&path).expect("golden file missing: run with UPDATE_GOLDEN=1");
    assert!(
        got == want,
        "translation differs from {}; inspect and refresh with UPDATE_GOLDEN=1",
        path.display()
    );
}
