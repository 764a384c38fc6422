use super::*;

fn entry(yaml: &str) -> ServiceEntry {
    serde_yaml_ng::from_str(yaml).expect("entry parses")
}

fn workload(yaml: &str) -> WorkloadEntry {
    serde_yaml_ng::from_str(yaml).expect("workload parses")
}

#[test]
fn a_static_entry_is_one_service_per_host_with_its_endpoints() {
    let e = entry(
        "name: db\nnamespace: shop\nhosts: [db.shop.internal, db-ro.shop.internal]\n\
         addresses: [240.0.0.10]\nlocation: MESH_INTERNAL\nresolution: STATIC\n\
         ports: [{number: 5432, name: tcp-pg, protocol: TCP, targetPort: 15432}, {number: 80, name: http}]\n\
         endpoints:\n  - {address: 10.1.0.1, locality: eu/eu-1a, weight: 3, network: n1}\n  - {address: 10.1.0.2, ports: {tcp-pg: 6432}}\n\
         exportTo: [\".\"]\n",
    );
    let out = services_from_entries(&[e], &[]);
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    assert_eq!(out.services.len(), 2);
    let s = &out.services[0];
    assert_eq!(s.hostname.as_str(), "db-ro.shop.internal");
    assert_eq!(s.namespace, "shop");
    assert_eq!(s.resolution, Some(Resolution::Static));
    assert_eq!(s.location, Location::MeshInternal);
    assert_eq!(s.export_to, vec![".".to_owned()]);
    assert_eq!(
        s.addresses,
        vec!["240.0.0.10".parse::<IpAddr>().expect("ip")]
    );
    assert_eq!(s.ports[0].protocol, Protocol::Tcp);
    assert_eq!(
        s.ports[1].protocol,
        Protocol::Http,
        "protocol from the name"
    );
    let (a, b) = (&s.endpoints[0], &s.endpoints[1]);
    assert_eq!(a.ports["tcp-pg"], 15432, "targetPort");
    assert_eq!(a.ports["http"], 80);
    assert_eq!(b.ports["tcp-pg"], 6432, "the instance's own port wins");
    assert_eq!(a.weight, 3);
    assert_eq!(a.locality.zone, "eu-1a");
    assert_eq!(a.labels[NETWORK_LABEL], "n1");
    assert!(s.validate().is_ok(), "{:?}", s.validate());
}

#[test]
fn istio_defaults_are_external_and_none() {
    let out = services_from_entries(
        &[entry(
            "name: any\nhosts: [api.example.com]\nports: [{number: 443, name: https, protocol: HTTPS}]\n",
        )],
        &[],
    );
    let s = &out.services[0];
    assert_eq!(s.location, Location::MeshExternal);
    assert_eq!(s.resolution, Some(Resolution::None));
    assert!(s.endpoints.is_empty());
    assert_eq!(s.ports[0].protocol, Protocol::Tls);
    assert_eq!(s.namespace, "default");
    assert!(s.validate().is_ok());
}

#[test]
fn dns_without_endpoints_resolves_each_host() {
    let out = services_from_entries(
        &[entry(
            "name: ext\nhosts: [a.example.com, b.example.com]\nresolution: DNS\nports: [{number: 443, name: tls}]\n",
        )],
        &[],
    );
    for s in &out.services {
        assert_eq!(s.endpoints.len(), 1);
        assert_eq!(s.endpoints[0].address, Address::Dns(s.hostname.clone()));
        assert_eq!(s.endpoints[0].ports["tls"], 443);
    }
}

#[test]
fn a_selector_takes_the_workloads_of_its_namespace() {
    let e = entry(
        "name: vm\nnamespace: shop\nhosts: [cart.shop.vm]\nresolution: STATIC\nlocation: MESH_INTERNAL\n\
         ports: [{number: 8080, name: http}]\nworkloadSelector: {labels: {app: cart}}\n",
    );
    let vms = [
        workload("name: vm-1\nnamespace: shop\naddress: 10.2.0.1\nlabels: {app: cart, v: one}\n"),
        workload("name: vm-2\nnamespace: shop\naddress: 10.2.0.2\nlabels: {app: web}\n"),
        workload("name: vm-3\nnamespace: other\naddress: 10.2.0.3\nlabels: {app: cart}\n"),
        workload(
            "name: vm-4\nnamespace: shop\naddress: 10.2.0.4\nlabels: {app: cart}\nports: {http: 9090}\n",
        ),
    ];
    let out = services_from_entries(std::slice::from_ref(&e), &vms);
    let got: Vec<(String, u32)> = out.services[0]
        .endpoints
        .iter()
        .map(|e| (e.address.to_string(), e.ports["http"]))
        .collect();
    assert_eq!(
        got,
        vec![("10.2.0.1".into(), 8080), ("10.2.0.4".into(), 9090)]
    );
    // Removed, the workload leaves; added back, it returns.
    let out = services_from_entries(std::slice::from_ref(&e), &vms[1..]);
    assert_eq!(out.services[0].endpoints.len(), 1);
    let out = services_from_entries(&[e], &vms);
    assert_eq!(out.services[0].endpoints.len(), 2);
}

#[test]
fn two_entries_for_one_host_the_older_wins_whatever_the_order() {
    let mut old = entry(
        "name: zz\nhosts: [x.example.com, y.example.com]\nresolution: STATIC\nports: [{number: 80, name: http}]\nendpoints: [{address: 10.0.0.1}]\n",
    );
    old.created = Some("2026-01-01T00:00:00Z".into());
    let mut new = entry(
        "name: aa\nhosts: [x.example.com, z.example.com]\nresolution: STATIC\nports: [{number: 80, name: http}]\nendpoints: [{address: 10.0.0.2}]\n",
    );
    new.created = Some("2026-06-01T00:00:00Z".into());
    for entries in [[old.clone(), new.clone()], [new.clone(), old.clone()]] {
        let out = services_from_entries(&entries, &[]);
        let x = out
            .services
            .iter()
            .find(|s| s.hostname.as_str() == "x.example.com")
            .expect("x served");
        assert_eq!(x.endpoints[0].address.to_string(), "10.0.0.1");
        let hosts: Vec<&str> = out.services.iter().map(|s| s.hostname.as_str()).collect();
        assert_eq!(hosts, ["x.example.com", "y.example.com", "z.example.com"]);
        let problem = &out.problems["ServiceEntry default/aa"];
        assert!(
            problem.contains("also declared by ServiceEntry default/zz"),
            "{problem}"
        );
        assert_eq!(out.problems.len(), 1);
    }
    // Without creation times (files): namespace, then name.
    old.created = None;
    new.created = None;
    let out = services_from_entries(&[old, new], &[]);
    assert!(out.problems["ServiceEntry default/zz"].contains("default/aa"));
}

#[test]
fn what_cannot_be_served_is_named_and_the_rest_is_served() {
    let e = entry(
        "name: odd\nhosts: [\"*.example.com\", ok.example.com]\naddresses: [10.0.0.0/24]\nresolution: STATIC\n\
         ports: [{number: 80, name: http}, {number: 81, protocol: QUIC}]\nendpoints: [{address: \"unix:///sock\"}, {address: 10.0.0.9}]\n",
    );
    let out = services_from_entries(&[e], &[]);
    let p = &out.problems["ServiceEntry default/odd"];
    for want in ["wildcard", "CIDR", "QUIC", "unix domain"] {
        assert!(p.contains(want), "{want} in {p}");
    }
    assert_eq!(out.services.len(), 1);
    assert_eq!(out.services[0].endpoints.len(), 1);
    // Nothing to serve at all: a problem and no service.
    let out = services_from_entries(&[entry("name: empty\nhosts: []\n")], &[]);
    assert!(out.services.is_empty());
    assert!(out.problems["ServiceEntry default/empty"].contains("at least one host"));
}

#[test]
fn unknown_fields_are_refused() {
    let err = serde_yaml_ng::from_str::<ServiceEntry>("name: a\nhosts: [a.b]\nresolutoin: DNS\n")
        .expect_err("typo");
    assert!(err.to_string().contains("resolutoin"), "{err}");
    let err =
        serde_yaml_ng::from_str::<WorkloadEntry>("name: a\naddres: 10.0.0.1\n").expect_err("typo");
    assert!(err.to_string().contains("addres"), "{err}");
}

#[test]
fn validated_names_the_entry_of_a_service_that_would_be_refused() {
    let e = entry(
        "name: bad\nhosts: [a.example.com]\nresolution: STATIC\nports: [{number: 0, name: http}]\nendpoints: [{address: 10.0.0.1}]\n",
    );
    let out = services_from_entries(&[e], &[]).validated();
    assert!(out.services.is_empty());
    assert!(out.declared_by.is_empty());
    let p = &out.problems["ServiceEntry default/bad"];
    assert!(p.contains("ports[0].port"), "{p}");
}

#[test]
fn an_entry_names_the_identities_of_its_instances() {
    let entry: ServiceEntry = serde_yaml_ng::from_str(
        "{ name: db, namespace: shop, hosts: [db.shop.vm], resolution: STATIC, location: MESH_INTERNAL,
           ports: [{ number: 5432, name: tcp }], workloadSelector: { labels: { app: db } },
           subjectAltNames: [spiffe://other.example/ns/shop/sa/db] }",
    )
    .expect("entry");
    let workloads = [
        workload(
            "{ name: a, namespace: shop, address: 10.0.0.1, labels: { app: db }, serviceAccount: db }",
        ),
        workload(
            "{ name: b, namespace: shop, address: 10.0.0.2, labels: { app: db }, serviceAccount: db-replica }",
        ),
        workload(
            "{ name: c, namespace: shop, address: 10.0.0.3, labels: { app: db }, serviceAccount: db }",
        ),
        workload(
            "{ name: d, namespace: other, address: 10.0.0.4, labels: { app: db }, serviceAccount: x }",
        ),
    ];
    let c = services_from_entries(&[entry], &workloads).validated();
    let ids = &c.services[0].identities;
    assert_eq!(
        ids.subject_alt_names,
        ["spiffe://other.example/ns/shop/sa/db"]
    );
    assert_eq!(
        ids.service_accounts,
        ["db", "db-replica"],
        "each once, of the selected workloads only"
    );
}
