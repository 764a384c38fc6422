use super::listeners::HCM_TYPE;
use super::*;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, LbPolicy,
};
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

mod l4;

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
    view_of(
        [reviews, db, ext, empty].map(|s| (s, Vec::new())),
        Vec::new(),
    )
}

/// A generation-1 view of `services` (each with the rules bound to it)
/// from one registry, and `scopes`.
pub(crate) fn view_of(
    services: impl IntoIterator<Item = (Service, Vec<Arc<sextant_core::Rule>>)>,
    scopes: Vec<Arc<sextant_core::Rule>>,
) -> MeshView {
    MeshView {
        generation: 1,
        services: services
            .into_iter()
            .map(|(s, rules)| {
                (
                    s.hostname.clone(),
                    Arc::new(MeshService {
                        service: s,
                        origins: vec!["memory/a".into()],
                        config_generation: 1,
                        endpoints_generation: 1,
                        rules,
                        destination_policies: Vec::new(),
                        destination_ports: Default::default(),
                        namespaced: Vec::new(),
                    }),
                )
            })
            .collect(),
        conflicts: Arc::new([]),
        scopes: scopes.into(),
        scopes_generation: 0,
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
        ..Default::default()
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
                // A snapshot holds none (only a router's lens does).
                ResourceType::Secret => unreachable!("a secret in a snapshot: {name}"),
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
    assert_golden("representative.txt", &got);
}

/// Compares `got` with `tests/golden/NAME`; `UPDATE_GOLDEN=1` rewrites it.
fn assert_golden(name: &str, got: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).expect("write golden");
    }
    let want =
        std::fs::read_to_string(&path).expect("golden file missing: run with UPDATE_GOLDEN=1");
    assert!(
        got == want,
        "translation differs from {}; inspect and refresh with UPDATE_GOLDEN=1",
        path.display()
    );
}

/// A service with every rule feature the translator knows: a route rule
/// and a destination policy with subsets, port-level and subset-level
/// settings.
pub(crate) fn rules_view() -> MeshView {
    let mut reviews = Service::new("reviews.default.svc")
        .with_port("http", 9080, Protocol::Http)
        .with_port("grpc", 9090, Protocol::Grpc);
    for (i, version) in ["v1", "v2"].iter().enumerate() {
        let mut ep = Endpoint::new(format!("10.0.0.{}", i + 1).parse().expect("addr"));
        ep.labels.insert("version".into(), (*version).into());
        reviews.endpoints.push(ep);
    }
    let route: sextant_core::RouteEntry = serde_yaml_ng::from_str(
        "name: reviews\nhosts: [reviews.default.svc]\nhttp:\n\
         - name: alice\n  match: [{headers: {x-user: {exact: alice}}, uri: {prefix: /api}, method: {exact: GET}}, {withoutHeaders: {x-debug: {}}, uri: {regex: '/v[0-9]+'}, port: 9090}]\n  \
           route: [{destination: {host: reviews.default.svc, subset: v2}}]\n  timeout: 2s\n  \
           retries: {attempts: 3, perTryTimeout: 500ms, retryOn: '5xx,unavailable'}\n  \
           fault: {delay: {fixedDelay: 1s, percentage: {value: 10}}, abort: {grpcStatus: UNAVAILABLE, percentage: 5}}\n  \
           headers: {request: {set: {x-a: b}, add: {x-c: d}, remove: [x-e]}, response: {set: {x-f: g}}}\n  \
           rewrite: {uri: /v2, authority: reviews.internal}\n  mirror: {host: shadow.default.svc}\n  mirrorPercentage: 25\n\
         - match: [{uri: {exact: /old}}]\n  redirect: {uri: /new, authority: other.default.svc, redirectCode: 308}\n\
         - route:\n  - {destination: {host: reviews.default.svc, subset: v1}, weight: 90}\n  - {destination: {host: reviews.default.svc, subset: v2, port: {number: 9080}}, weight: 10}\n",
    )
    .expect("route");
    let policy: sextant_core::PolicyEntry = serde_yaml_ng::from_str(
        "name: reviews\nhost: reviews.default.svc\ntrafficPolicy:\n  \
         loadBalancer: {consistentHash: {httpHeaderName: x-user, minimumRingSize: 1024}}\n  \
         connectionPool: {tcp: {maxConnections: 100, connectTimeout: 1s}, http: {http1MaxPendingRequests: 10, http2MaxRequests: 1000, maxRequestsPerConnection: 5, maxRetries: 3}}\n  \
         outlierDetection: {consecutiveGatewayErrors: 3, interval: 5s, baseEjectionTime: 30s, maxEjectionPercent: 50}\n  \
         portLevelSettings: [{port: {number: 9090}, loadBalancer: {simple: LEAST_REQUEST}}]\n\
         subsets:\n- {name: v1, labels: {version: v1}}\n- {name: v2, labels: {version: v2}, trafficPolicy: {loadBalancer: {simple: RANDOM}}}\n",
    )
    .expect("policy");
    let ms = MeshService {
        service: reviews,
        origins: vec!["memory/a".into()],
        config_generation: 1,
        endpoints_generation: 1,
        rules: vec![
            Arc::new(sextant_core::Rule::from(route)),
            Arc::new(sextant_core::Rule::from(policy)),
        ],
        destination_policies: Vec::new(),
        destination_ports: Default::default(),
        namespaced: Vec::new(),
    };
    MeshView {
        generation: 1,
        services: [(ms.service.hostname.clone(), Arc::new(ms))]
            .into_iter()
            .collect(),
        conflicts: Arc::new([]),
        scopes: Arc::new([]),
        scopes_generation: 0,
    }
}

#[test]
fn golden_rules_view() {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    let snapshot = Snapshot::empty(TranslateOptions::default()).next(Arc::new(rules_view()));
    let mut got = render(&snapshot);
    got.push_str("## What gRPC clients receive where it differs\n\n");
    for name in snapshot.resources(ResourceType::Cluster).resources.keys() {
        let envoy = snapshot.get(ResourceType::Cluster, name).expect("cluster");
        let grpc = snapshot
            .get_for(crate::snapshot::Form::Grpc, ResourceType::Cluster, name)
            .expect("cluster");
        if !Arc::ptr_eq(envoy, grpc) {
            let c = Cluster::decode(grpc.value().expect("value")).expect("decode");
            got.push_str(&format!(
                "### grpc cds {name} version {}\n{c:#?}\n\n",
                grpc.version
            ));
        }
    }
    got.push_str("## What gRPC clients cannot honour\n\n");
    for u in snapshot.unhonoured("reviews.default.svc") {
        got.push_str(&format!(
            "{} {} ({}): {}\n",
            u.rule,
            u.feature,
            u.client.as_str(),
            u.instead
        ));
    }
    assert_golden("rules.txt", &got);
}

/// The outbound table a snapshot assembles from each service's encoded
/// virtual hosts is byte for byte what prost encodes for the whole message.
#[test]
fn the_assembled_outbound_table_is_prosts_encoding() {
    for view in [representative_view(), rules_view()] {
        let snapshot = Snapshot::empty(TranslateOptions::default()).next(Arc::new(view.clone()));
        let assembled = snapshot
            .get(ResourceType::Route, OUTBOUND_HTTP)
            .expect("outbound table");
        let whole = outbound_route(view.services.values().map(|s| &**s)).encode_to_vec();
        assert_eq!(assembled.value().expect("value"), whole.as_slice());
    }
}

#[test]
fn the_client_kind_comes_from_any_user_agent_without_a_panic() {
    use super::rules::Client;
    assert_eq!(Client::from_user_agent("gRPC C-core"), Client::Grpc);
    assert_eq!(Client::from_user_agent("grpc-java"), Client::Grpc);
    assert_eq!(Client::from_user_agent("envoy"), Client::Envoy);
    assert_eq!(Client::from_user_agent(""), Client::Envoy);
    // Found by fuzzing: a multi-byte character across byte 4.
    assert_eq!(Client::from_user_agent("grp\u{59c}"), Client::Envoy);
    assert_eq!(Client::from_user_agent("\u{1F980}x"), Client::Envoy);
}

#[test]
fn mesh_clusters_dial_sidecars_with_mutual_tls_and_the_rest_in_plaintext() {
    use super::mtls::{MtlsOptions, PeerMode, endpoint_metadata};
    use envoy_types::pb::envoy::config::core::v3::transport_socket;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
    let mut sidecar = Endpoint::new("10.0.0.1".parse().expect("addr")).with_port("http", 8080);
    sidecar
        .labels
        .insert(mtls::TLS_MODE_LABEL.into(), "istio".into());
    let bare = Endpoint::new("10.0.0.2".parse().expect("addr")).with_port("http", 8080);
    assert!(endpoint_metadata(&bare.labels).is_none());
    let s = Service::new("web.shop.svc")
        .with_port("http", 80, Protocol::Http)
        .with_endpoint(sidecar)
        .with_endpoint(bare);
    let view = view_of([(s, Vec::new())], Vec::new());
    let ms = view.services.values().next().expect("service");

    // The endpoints say which of them run a sidecar.
    let la = &load_assignments(ms)[0];
    let metadata: Vec<bool> = la.endpoints[0]
        .lb_endpoints
        .iter()
        .map(|e| e.metadata.is_some())
        .collect();
    assert_eq!(metadata, [true, false]);

    let options = MtlsOptions {
        trust_domain: "example.org".into(),
        mode: PeerMode::Permissive,
    };
    let mut notes = Vec::new();
    let c = &mesh_clusters(ms, &options, &mut notes)[0];
    assert_eq!(c.name, "outbound|80||web.shop.svc");
    let names: Vec<&str> = c
        .transport_socket_matches
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, ["tlsMode-istio", "tlsMode-disabled"]);
    let Some(transport_socket::ConfigType::TypedConfig(any)) = c.transport_socket_matches[0]
        .transport_socket
        .as_ref()
        .and_then(|t| t.config_type.clone())
    else {
        panic!("a TLS socket")
    };
    let tls = UpstreamTlsContext::decode(any.value.as_slice()).expect("tls");
    assert_eq!(tls.sni, "outbound_.80_._.web.shop.svc");
    let common = tls.common_tls_context.expect("common");
    assert_eq!(common.alpn_protocols, ["istio"]);
    assert_eq!(common.tls_certificate_sds_secret_configs[0].name, "default");
    let text = format!("{common:?}");
    assert!(
        text.contains("spiffe://example.org/") && text.contains("ROOTCA"),
        "{text}"
    );
    // Apart from the matches, the cluster is the plain one.
    let mut plain = c.clone();
    plain.transport_socket_matches.clear();
    assert_eq!(plain, clusters(ms, Client::Envoy, &mut notes)[0]);
    // DISABLE: no mutual TLS outbound either.
    let off = MtlsOptions {
        mode: PeerMode::Disable,
        ..options
    };
    assert!(
        mesh_clusters(ms, &off, &mut notes)[0]
            .transport_socket_matches
            .is_empty()
    );
}

#[test]
fn destination_rule_tls_modes_override_the_mesh_default() {
    use super::mtls::{MtlsOptions, PeerMode};
    use envoy_types::pb::envoy::config::core::v3::transport_socket;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
    let mut sidecar = Endpoint::new("10.0.0.1".parse().expect("addr"))
        .with_port("http", 8080)
        .with_port("admin", 9000)
        .with_port("db", 5432);
    sidecar
        .labels
        .insert(mtls::TLS_MODE_LABEL.into(), "istio".into());
    let s = Service::new("web.shop.svc")
        .with_port("http", 80, Protocol::Http)
        .with_port("admin", 9000, Protocol::Http)
        .with_port("db", 5432, Protocol::Tcp)
        .with_endpoint(sidecar);
    // Host level DISABLE; port 9000 SIMPLE with the user's CA, names and
    // SNI; port 5432 ISTIO_MUTUAL; subset v2 MUTUAL.
    let policy: sextant_core::PolicyEntry = serde_yaml_ng::from_str(
        "name: web\nhost: web.shop.svc\ntrafficPolicy:\n  \
         tls: {mode: DISABLE}\n  \
         portLevelSettings:\n  \
         - {port: {number: 9000}, tls: {mode: SIMPLE, caCertificates: /etc/admin-ca.pem, subjectAltNames: [admin.example.com], sni: admin.example.com}}\n  \
         - {port: {number: 5432}, tls: {mode: ISTIO_MUTUAL}}\n\
         subsets:\n- {name: v2, labels: {version: v2}, trafficPolicy: {tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}}}\n",
    )
    .expect("policy");
    let rule = Arc::new(sextant_core::Rule::from(policy));
    rule.validate().expect("a valid rule");
    let view = view_of([(s, vec![rule])], Vec::new());
    let ms = view.services.values().next().expect("service");
    let options = MtlsOptions {
        trust_domain: "cluster.local".into(),
        mode: PeerMode::Permissive,
    };
    let mut notes = Vec::new();
    let mesh = mesh_clusters(ms, &options, &mut notes);
    let by_name = |name: &str| {
        mesh.iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("{name}"))
            .clone()
    };
    let tls_of = |c: &envoy_types::pb::envoy::config::cluster::v3::Cluster| {
        let socket = c.transport_socket.as_ref().expect("a transport socket");
        let Some(transport_socket::ConfigType::TypedConfig(any)) = &socket.config_type else {
            panic!("typed")
        };
        (socket.name.clone(), any.clone())
    };
    // DISABLE: plaintext even to the sidecar, no matches.
    let plain = by_name("outbound|80||web.shop.svc");
    assert!(plain.transport_socket_matches.is_empty());
    assert_eq!(tls_of(&plain).0, "envoy.transport_sockets.raw_buffer");
    // SIMPLE at the port: the user's CA, names and SNI; no certificate.
    let (name, any) = tls_of(&by_name("outbound|9000||web.shop.svc"));
    assert_eq!(name, "envoy.transport_sockets.tls");
    let tls = UpstreamTlsContext::decode(any.value.as_slice()).expect("tls");
    assert_eq!(tls.sni, "admin.example.com");
    let text = format!("{tls:?}");
    assert!(
        text.contains("/etc/admin-ca.pem") && text.contains("admin.example.com"),
        "{text}"
    );
    assert!(
        tls.common_tls_context
            .expect("common")
            .tls_certificates
            .is_empty()
    );
    // ISTIO_MUTUAL at the port: the mesh's TLS to every endpoint.
    let (_, any) = tls_of(&by_name("outbound|5432||web.shop.svc"));
    let tls = UpstreamTlsContext::decode(any.value.as_slice()).expect("tls");
    assert_eq!(tls.sni, "outbound_.5432_._.web.shop.svc");
    // MUTUAL on the subset: the user's certificate.
    let (_, any) = tls_of(&by_name("outbound|80|v2|web.shop.svc"));
    let tls = UpstreamTlsContext::decode(any.value.as_slice()).expect("tls");
    assert_eq!(
        tls.common_tls_context
            .expect("common")
            .tls_certificates
            .len(),
        1
    );
    // A proxy without a workload certificate: ISTIO_MUTUAL cannot be
    // honoured, and says so.
    let mut notes = Vec::new();
    let plain = clusters(ms, Client::Envoy, &mut notes);
    let db = plain
        .iter()
        .find(|c| c.name == "outbound|5432||web.shop.svc")
        .expect("db");
    assert!(db.transport_socket.is_none());
    assert!(
        notes.iter().any(|n| n.feature.contains("ISTIO_MUTUAL")),
        "{notes:?}"
    );
    // Proxyless gRPC: noted, plaintext.
    let mut notes = Vec::new();
    let grpc = clusters(ms, Client::Grpc, &mut notes);
    assert!(grpc.iter().all(|c| c.transport_socket.is_none()));
    assert!(
        notes
            .iter()
            .any(|n| n.feature.contains("Simple") || n.feature.contains("SIMPLE"))
    );
}

/// ISTIO_MUTUAL reaches a proxyless gRPC client that holds a workload
/// certificate as gRPC takes it (certificate provider instances, the older
/// SAN field, one transport socket); one without keeps plaintext, and a
/// port the rule leaves alone gets no variant at all.
#[test]
fn istio_mutual_reaches_grpc_clients_with_a_certificate_as_provider_instances() {
    use super::mtls::{ROOT_CERT, WORKLOAD_CERT};
    use crate::snapshot::Form;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::core::v3::transport_socket;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        UpstreamTlsContext, common_tls_context,
    };
    let s = Service::new("echo.shop.svc")
        .with_port("grpc", 50051, Protocol::Grpc)
        .with_port("metrics", 9090, Protocol::Http)
        .with_endpoint(Endpoint::new("10.0.0.1".parse().expect("addr")).with_port("grpc", 50051));
    let policy: sextant_core::PolicyEntry = serde_yaml_ng::from_str(
        "name: echo\nhost: echo.shop.svc\ntrafficPolicy:\n  portLevelSettings:\n  \
         - {port: {number: 50051}, tls: {mode: ISTIO_MUTUAL}}\n",
    )
    .expect("policy");
    let rule = Arc::new(sextant_core::Rule::from(policy));
    rule.validate().expect("a valid rule");
    let options = TranslateOptions {
        trust_domain: "mesh.example".into(),
        ..Default::default()
    };
    let snapshot = Snapshot::empty(options).next(Arc::new(view_of([(s, vec![rule])], Vec::new())));
    let cluster = |form: Form, name: &str| {
        let r = snapshot
            .get_for(form, ResourceType::Cluster, name)
            .expect("cluster");
        Cluster::decode(r.value().expect("value")).expect("decode")
    };
    let grpc = "outbound|50051||echo.shop.svc";
    assert!(cluster(Form::Grpc, grpc).transport_socket.is_none());
    assert!(cluster(Form::Envoy, grpc).transport_socket.is_none());
    let mesh = cluster(Form::GrpcMesh, grpc);
    assert!(mesh.transport_socket_matches.is_empty(), "gRPC has none");
    let socket = mesh.transport_socket.expect("mutual TLS");
    assert_eq!(socket.name, "envoy.transport_sockets.tls");
    let Some(transport_socket::ConfigType::TypedConfig(any)) = socket.config_type else {
        panic!("typed");
    };
    let tls = UpstreamTlsContext::decode(any.value.as_slice()).expect("decode");
    let common = tls.common_tls_context.expect("common");
    let own = common.tls_certificate_provider_instance.expect("own");
    assert_eq!(
        (own.instance_name.as_str(), own.certificate_name.as_str()),
        (crate::bootstrap::GRPC_CERT_PROVIDER, WORKLOAD_CERT)
    );
    assert!(common.tls_certificate_sds_secret_configs.is_empty());
    let Some(common_tls_context::ValidationContextType::CombinedValidationContext(combined)) =
        common.validation_context_type
    else {
        panic!("combined validation");
    };
    let validation = combined.default_validation_context.expect("validation");
    assert!(combined.validation_context_sds_secret_config.is_none());
    let root = validation.ca_certificate_provider_instance.expect("root");
    assert_eq!(root.certificate_name, ROOT_CERT);
    #[allow(deprecated)]
    let sans = validation.match_subject_alt_names;
    assert!(
        matches!(
            &sans[..],
            [m] if m.match_pattern == Some(envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern::Prefix("spiffe://mesh.example/".into()))
        ),
        "{sans:?}"
    );
    // The other port: the same resource for every form.
    let metrics = "outbound|9090||echo.shop.svc";
    let get = |form| {
        snapshot
            .get_for(form, ResourceType::Cluster, metrics)
            .expect("cluster")
            .clone()
    };
    assert!(Arc::ptr_eq(&get(Form::GrpcMesh), &get(Form::Envoy)));
}

/// A server whose peer authentication says DISABLE on a port takes no
/// mutual TLS there: its endpoint loses the sidecar mark (clients dial it
/// in plaintext), on the next snapshot after the rule arrives, with no
/// change to the service itself; the rule gone, the mark is back.
#[test]
fn a_disable_peer_authentication_makes_clients_dial_that_port_in_plaintext() {
    let mut ep = Endpoint::new("10.0.0.1".parse().expect("addr"))
        .with_port("http", 8080)
        .with_port("admin", 9000);
    ep.labels.insert("app".into(), "web".into());
    ep.labels
        .insert(mtls::TLS_MODE_LABEL.into(), mtls::TLS_MODE_ISTIO.into());
    let s = Service::new("web.shop.svc")
        .with_port("http", 80, Protocol::Http)
        .with_port("admin", 9000, Protocol::Http)
        .with_endpoint(ep);
    let mut s = s;
    s.namespace = "shop".into();
    let pa: sextant_core::rules::PeerAuthEntry = serde_yaml_ng::from_str(
        "name: web\nnamespace: shop\nselector: {matchLabels: {app: web}}\nportLevelMtls: {8080: {mode: DISABLE}}\n",
    )
    .expect("rule");
    let marked = |snap: &Snapshot, cluster: &str| {
        let r = snap
            .get(ResourceType::Endpoint, cluster)
            .expect("assignment");
        let cla = envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(
            r.value().expect("value"),
        )
        .expect("decode");
        cla.endpoints[0].lb_endpoints[0].metadata.is_some()
    };
    let plain = view_of([(s.clone(), Vec::new())], Vec::new());
    let first = Snapshot::empty(TranslateOptions::default()).next(Arc::new(plain.clone()));
    assert!(marked(&first, "outbound|80||web.shop.svc"));
    let mut with_rule = view_of(
        [(s, Vec::new())],
        vec![Arc::new(sextant_core::Rule::from(pa))],
    );
    with_rule.generation = 2;
    let second = first.next(Arc::new(with_rule));
    assert!(
        !marked(&second, "outbound|80||web.shop.svc"),
        "port 8080 is DISABLE"
    );
    assert!(
        marked(&second, "outbound|9000||web.shop.svc"),
        "the other port is not"
    );
    assert_eq!(
        second.resources(ResourceType::Endpoint).changed,
        vec![Arc::<str>::from("outbound|80||web.shop.svc")]
    );
    let mut again = plain;
    again.generation = 3;
    let third = second.next(Arc::new(again));
    assert!(marked(&third, "outbound|80||web.shop.svc"));
}
