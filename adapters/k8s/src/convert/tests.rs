use super::*;
use k8s_openapi::api::discovery::v1::EndpointPort;
use sextant_testkit::k8s::objects;

fn nodes() -> HashMap<String, Locality> {
    [(
        "node-a".to_owned(),
        node_locality(&objects::node("node-a", "eu-west", "eu-west-1a")),
    )]
    .into()
}

fn convert(svc: &KService, slices: &[EndpointSlice]) -> (Option<Service>, Vec<Error>) {
    let refs: Vec<&EndpointSlice> = slices.iter().collect();
    service(&Mapping::default(), svc, &refs, &nodes(), &HashMap::new()).unwrap()
}

#[test]
fn service_with_slices_becomes_hostname_ports_and_endpoints() {
    let svc = objects::service(
        "shop",
        "cart",
        &[("http-web", 80, 8080), ("grpc", 9000, 9090)],
    );
    let slice = objects::slice(
        "shop",
        "cart-1",
        "cart",
        &[("http-web", 8080), ("grpc", 9090)],
        vec![
            objects::endpoint("10.1.0.1", Some("node-a"), None),
            objects::endpoint("10.1.0.2", Some("node-b"), Some("eu-west-1b")),
        ],
    );
    let (s, problems) = convert(&svc, &[slice]);
    let s = s.unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(s.hostname.as_str(), "cart.shop.svc.cluster.local");
    assert_eq!(s.namespace, "shop");
    assert_eq!(s.labels["app"], "cart");
    assert_eq!(s.addresses, vec!["10.96.0.10".parse::<IpAddr>().unwrap()]);
    let ports: Vec<_> = s
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.port, p.protocol))
        .collect();
    assert_eq!(
        ports,
        [
            ("http-web", 80, Protocol::Http),
            ("grpc", 9000, Protocol::Grpc)
        ]
    );
    assert_eq!(s.endpoints.len(), 2);
    let a = &s.endpoints[0];
    assert_eq!(a.address.to_string(), "10.1.0.1");
    assert_eq!(a.ports["http-web"], 8080);
    assert_eq!(a.ports["grpc"], 9090);
    assert_eq!(a.health, Health::Healthy);
    // Node labels give region and zone.
    assert_eq!(
        (a.locality.region.as_str(), a.locality.zone.as_str()),
        ("eu-west", "eu-west-1a")
    );
    // The slice's zone wins; an unknown node gives no region.
    let b = &s.endpoints[1];
    assert_eq!(
        (b.locality.region.as_str(), b.locality.zone.as_str()),
        ("", "eu-west-1b")
    );
    assert!(s.validate().is_ok(), "{:?}", s.validate());
}

#[test]
fn conditions_map_to_health() {
    // (ready, serving, terminating) -> health
    let table = [
        ((true, true, false), Health::Healthy),
        ((false, true, true), Health::Draining),
        ((false, false, true), Health::Unhealthy),
        ((false, false, false), Health::Unhealthy),
        ((false, true, false), Health::Unhealthy),
    ];
    for ((ready, serving, terminating), want) in table {
        let e = objects::with_conditions(
            objects::endpoint("10.0.0.1", None, None),
            ready,
            serving,
            terminating,
        );
        assert_eq!(
            health(&e),
            want,
            "ready={ready} serving={serving} terminating={terminating}"
        );
    }
    // Missing conditions count as ready.
    let mut e = objects::endpoint("10.0.0.1", None, None);
    e.conditions = None;
    assert_eq!(health(&e), Health::Healthy);
}

#[test]
fn protocol_from_app_protocol_then_name_prefix() {
    let table = [
        ("web", Some("http"), Protocol::Http),
        ("web", Some("HTTP2"), Protocol::Http2),
        ("web", Some("kubernetes.io/h2c"), Protocol::Http2),
        ("web", Some("grpc"), Protocol::Grpc),
        ("http-web", Some("tcp"), Protocol::Tcp),
        ("http-web", None, Protocol::Http),
        ("http2-x", None, Protocol::Http2),
        ("grpc-api", None, Protocol::Grpc),
        ("tls-db", None, Protocol::Tls),
        ("tcp-db", None, Protocol::Tcp),
        ("redis", None, Protocol::Tcp),
        ("port-80", None, Protocol::Tcp),
    ];
    for (name, app, want) in table {
        assert_eq!(port_protocol(name, app), want, "{name} {app:?}");
    }
}

#[test]
fn unnamed_ports_are_named_and_udp_is_skipped() {
    let mut svc = objects::service("kube-system", "dns", &[("", 53, 5353)]);
    let ports = svc.spec.as_mut().unwrap().ports.as_mut().unwrap();
    ports[0].name = None;
    let mut udp = ports[0].clone();
    udp.protocol = Some("UDP".into());
    udp.name = Some("dns-udp".into());
    ports.push(udp);
    let mut slice = objects::slice(
        "kube-system",
        "dns-1",
        "dns",
        &[("", 5353)],
        vec![objects::endpoint("10.2.0.1", None, None)],
    );
    slice.ports.as_mut().unwrap()[0].name = None;
    let (s, _) = convert(&svc, &[slice]);
    let s = s.unwrap();
    assert_eq!(s.ports.len(), 1);
    assert_eq!((s.ports[0].name.as_str(), s.ports[0].port), ("port-53", 53));
    assert_eq!(s.endpoints[0].ports["port-53"], 5353);

    // A UDP-only service has nothing for the mesh.
    let svc = objects::service("kube-system", "syslog", &[("syslog", 514, 514)]);
    let mut svc = svc;
    svc.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].protocol = Some("UDP".into());
    assert!(convert(&svc, &[]).0.is_none());
}

#[test]
fn slices_merge_dual_stack_and_duplicates_keep_best_health() {
    let svc = objects::service("shop", "cart", &[("http", 80, 8080)]);
    let v4 = objects::slice(
        "shop",
        "cart-v4",
        "cart",
        &[("http", 8080)],
        vec![
            objects::endpoint("10.1.0.1", None, None),
            objects::with_conditions(objects::endpoint("10.1.0.2", None, None), false, true, true),
        ],
    );
    let mut v6 = objects::slice(
        "shop",
        "cart-v6",
        "cart",
        &[("http", 8080)],
        vec![objects::endpoint("fd00::1", None, None)],
    );
    v6.address_type = "IPv6".into();
    // The same pod briefly in two slices, not ready in the other.
    let dup = objects::slice(
        "shop",
        "cart-old",
        "cart",
        &[("http", 8080)],
        vec![objects::with_conditions(
            objects::endpoint("10.1.0.1", None, None),
            false,
            false,
            false,
        )],
    );
    let (s, problems) = convert(&svc, &[dup, v4, v6]);
    assert!(problems.is_empty());
    let got: Vec<(String, Health)> = s
        .unwrap()
        .endpoints
        .iter()
        .map(|e| (e.address.to_string(), e.health))
        .collect();
    assert_eq!(
        got,
        [
            ("10.1.0.1".to_owned(), Health::Healthy),
            ("10.1.0.2".to_owned(), Health::Draining),
            ("fd00::1".to_owned(), Health::Healthy),
        ]
    );
}

#[test]
fn headless_and_external_name_services() {
    let mut headless = objects::service("db", "pg", &[("tcp-pg", 5432, 5432)]);
    let spec = headless.spec.as_mut().unwrap();
    spec.cluster_ip = Some("None".into());
    spec.cluster_ips = Some(vec!["None".into()]);
    let slice = objects::slice(
        "db",
        "pg-1",
        "pg",
        &[("tcp-pg", 5432)],
        vec![objects::endpoint("10.3.0.1", None, None)],
    );
    let (s, _) = convert(&headless, &[slice]);
    let s = s.unwrap();
    assert!(s.addresses.is_empty());
    assert_eq!(s.endpoints.len(), 1);

    let mut ext = objects::service("shop", "payments", &[("https", 443, 443)]);
    let spec = ext.spec.as_mut().unwrap();
    spec.type_ = Some("ExternalName".into());
    spec.external_name = Some("api.payments.example.com".into());
    spec.cluster_ip = None;
    spec.cluster_ips = None;
    let (s, _) = convert(&ext, &[]);
    let s = s.unwrap();
    assert_eq!(s.endpoints.len(), 1);
    assert_eq!(
        s.endpoints[0].address.to_string(),
        "api.payments.example.com"
    );
    assert_eq!(s.endpoints[0].target_port(&s.ports[0]), 443);
    assert_eq!(s.ports[0].protocol, Protocol::Tls);
    assert!(s.validate().is_ok());

    spec_external_name_missing_is_an_object_error();
}

fn spec_external_name_missing_is_an_object_error() {
    let mut ext = objects::service("shop", "broken", &[("http", 80, 80)]);
    ext.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
    let err = service(&Mapping::default(), &ext, &[], &nodes(), &HashMap::new()).unwrap_err();
    assert_eq!(err.object(), Some("Service shop/broken"));
}

#[test]
fn bad_endpoints_are_skipped_and_reported() {
    let svc = objects::service("shop", "cart", &[("http", 80, 8080)]);
    let mut slice = objects::slice(
        "shop",
        "cart-1",
        "cart",
        &[("http", 8080)],
        vec![
            objects::endpoint("10.1.0.1", None, None),
            objects::endpoint("not-an-ip", None, None),
        ],
    );
    slice
        .endpoints
        .push(k8s_openapi::api::discovery::v1::Endpoint::default());
    let mut weird = objects::slice("shop", "cart-2", "cart", &[("http", 8080)], vec![]);
    weird.address_type = "AppleTalk".into();
    let (s, problems) = convert(&svc, &[slice, weird]);
    assert_eq!(s.unwrap().endpoints.len(), 1);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems
            .iter()
            .all(|p| p.object().unwrap().starts_with("EndpointSlice shop/cart-"))
    );
}

#[test]
fn slice_ports_match_by_name_not_position() {
    let svc = objects::service(
        "shop",
        "cart",
        &[("http", 80, 8080), ("metrics", 9100, 9100)],
    );
    let mut slice = objects::slice(
        "shop",
        "cart-1",
        "cart",
        &[("metrics", 9101), ("http", 8081)],
        vec![objects::endpoint("10.1.0.1", None, None)],
    );
    // A UDP port of the same name is not the TCP one.
    slice.ports.as_mut().unwrap().push(EndpointPort {
        name: Some("http".into()),
        port: Some(1),
        protocol: Some("UDP".into()),
        app_protocol: None,
    });
    let (s, _) = convert(&svc, &[slice]);
    let ep = &s.unwrap().endpoints[0];
    assert_eq!(ep.ports["http"], 8081);
    assert_eq!(ep.ports["metrics"], 9101);
    // A slice with none of the service's ports gives no endpoints.
    let other = objects::slice(
        "shop",
        "cart-2",
        "cart",
        &[("admin", 1)],
        vec![objects::endpoint("10.1.0.9", None, None)],
    );
    assert!(convert(&svc, &[other]).0.unwrap().endpoints.is_empty());
}

/// Istio's `networking.istio.io/exportTo` annotation: a comma-separated
/// list, spaces allowed; absent, the Service is exported everywhere.
#[test]
fn the_export_to_annotation_limits_who_sees_the_service() {
    let mut svc = objects::service("shop", "cart", &[("http", 80, 8080)]);
    assert!(
        convert(&svc, &[])
            .0
            .expect("a service")
            .export_to
            .is_empty()
    );
    svc.metadata.annotations = Some([(EXPORT_TO.to_owned(), ". , billing".to_owned())].into());
    let s = convert(&svc, &[]).0.expect("a service");
    assert_eq!(s.export_to, [".", "billing"]);
    assert!(s.exported_to(Some("shop")) && s.exported_to(Some("billing")));
    assert!(!s.exported_to(Some("other")) && !s.exported_to(None));
    assert!(s.validate().is_ok());
}
