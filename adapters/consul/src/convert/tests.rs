use super::*;
use serde_json::json;

fn entry(v: serde_json::Value) -> ServiceEntry {
    serde_json::from_value(v).expect("entry")
}

fn web(id: &str, address: &str, port: u32, checks: &[(&str, &str)]) -> ServiceEntry {
    entry(json!({
        "Node": { "Node": "n1", "Address": "10.9.9.9", "Datacenter": "dc1", "Meta": { "zone": "z1" } },
        "Service": { "ID": id, "Service": "Web", "Tags": ["v1", "team=shop"], "Address": address, "Port": port,
                     "Meta": { "protocol": "http" }, "Weights": { "Passing": 5, "Warning": 2 } },
        "Checks": checks.iter().map(|(i, s)| json!({ "CheckID": i, "Status": s })).collect::<Vec<_>>(),
    }))
}

#[test]
fn instances_map_to_endpoints() {
    let m = Mapping {
        zone_meta_key: Some("zone".into()),
        ..Mapping::default()
    };
    let s = to_service(
        "Web",
        &[
            web("a", "10.0.0.1", 8080, &[("serfHealth", "passing")]),
            web("b", "", 8081, &[]),
        ],
        &m,
    )
    .expect("ok")
    .expect("some");
    assert_eq!(s.hostname.as_str(), "web.service.consul");
    assert_eq!(
        (
            s.ports[0].name.as_str(),
            s.ports[0].port,
            s.ports[0].protocol
        ),
        ("http", 8080, Protocol::Http)
    );
    let a = &s.endpoints[0];
    assert_eq!(a.address.to_string(), "10.0.0.1");
    assert_eq!(a.ports["http"], 8080);
    assert_eq!((a.weight, a.health), (5, Health::Healthy));
    assert_eq!(a.labels.get("team").map(String::as_str), Some("shop"));
    assert_eq!(a.labels.get("v1").map(String::as_str), Some(""));
    assert_eq!(a.labels.get("protocol").map(String::as_str), Some("http"));
    assert_eq!(
        (a.locality.region.as_str(), a.locality.zone.as_str()),
        ("dc1", "z1")
    );
    let b = &s.endpoints[1];
    assert_eq!(
        b.address.to_string(),
        "10.9.9.9",
        "falls back to the node's address"
    );
    assert_eq!(b.ports["http"], 8081);
    assert!(s.validate().is_ok());
}

#[test]
fn check_status_decides_health_and_weight() {
    type Checks<'a> = &'a [(&'a str, &'a str)];
    let cases: Vec<(Checks, bool, Health, u32)> = vec![
        (&[("c", "passing")], true, Health::Healthy, 5),
        (&[("c", "warning")], true, Health::Healthy, 2),
        (&[("c", "warning")], false, Health::Unhealthy, 2),
        (
            &[("c", "passing"), ("d", "critical")],
            true,
            Health::Unhealthy,
            1,
        ),
        (
            &[("_service_maintenance:a", "critical")],
            true,
            Health::Unhealthy,
            1,
        ),
        (
            &[("_node_maintenance", "critical")],
            true,
            Health::Unhealthy,
            1,
        ),
        (&[], true, Health::Healthy, 5),
    ];
    for (checks, warning_ok, health, weight) in cases {
        let m = Mapping {
            warning_is_healthy: warning_ok,
            ..Mapping::default()
        };
        let s = to_service("web", &[web("a", "10.0.0.1", 80, checks)], &m)
            .expect("ok")
            .expect("some");
        assert_eq!(
            (s.endpoints[0].health, s.endpoints[0].weight),
            (health, weight),
            "{checks:?} warning_ok={warning_ok}"
        );
    }
}

#[test]
fn zero_weight_means_no_traffic() {
    let mut e = web("a", "10.0.0.1", 80, &[("c", "warning")]);
    e.service.weights = Some(Weights {
        passing: 1,
        warning: 0,
    });
    let s = to_service("web", &[e], &Mapping::default())
        .expect("ok")
        .expect("some");
    assert_eq!(
        (s.endpoints[0].health, s.endpoints[0].weight),
        (Health::Unhealthy, 1)
    );
}

#[test]
fn gateways_are_skipped_unless_asked_for_and_no_instances_means_none() {
    let mut proxy = web("p", "10.0.0.2", 21000, &[]);
    proxy.service.kind = Some("connect-proxy".into());
    let s = to_service(
        "web",
        &[web("a", "10.0.0.1", 80, &[]), proxy.clone()],
        &Mapping::default(),
    )
    .expect("ok")
    .expect("some");
    assert_eq!(s.endpoints.len(), 1);
    assert_eq!(
        to_service("web", &[proxy.clone()], &Mapping::default()),
        Ok(None)
    );
    let all = Mapping {
        include_gateways: true,
        ..Mapping::default()
    };
    assert_eq!(
        to_service("web", &[proxy], &all)
            .expect("ok")
            .expect("some")
            .endpoints
            .len(),
        1
    );
    assert_eq!(to_service("web", &[], &Mapping::default()), Ok(None));
}

#[test]
fn protocol_from_meta_else_tcp_and_the_template_makes_the_hostname() {
    let mut e = web("a", "10.0.0.1", 6379, &[]);
    e.service.meta = None;
    let m = Mapping {
        hostname_template: "{service}.default.svc.cluster.local".into(),
        ..Mapping::default()
    };
    let s = to_service("Redis", &[e], &m).expect("ok").expect("some");
    assert_eq!(s.hostname.as_str(), "redis.default.svc.cluster.local");
    assert_eq!(
        (s.ports[0].name.as_str(), s.ports[0].protocol),
        ("tcp", Protocol::Tcp)
    );
    assert!(
        to_service(
            "bad_name",
            &[web("a", "10.0.0.1", 80, &[])],
            &Mapping::default()
        )
        .expect_err("invalid")
        .contains("bad_name")
    );
    let mut e = web("a", "", 80, &[]);
    e.node.address = String::new();
    assert!(
        to_service("web", &[e], &Mapping::default())
            .expect_err("no address")
            .contains("no usable address")
    );
}

#[test]
fn a_meta_key_names_the_port() {
    let mut e = web("a", "10.0.0.1", 8080, &[]);
    e.service
        .meta
        .get_or_insert_with(Default::default)
        .insert(PORT_NAME_META.into(), "Web-API".into());
    let s = to_service("Web", &[e], &Mapping::default())
        .expect("ok")
        .expect("some");
    assert_eq!(
        (s.ports[0].name.as_str(), s.ports[0].protocol),
        ("web-api", Protocol::Http)
    );
    assert_eq!(s.endpoints[0].ports["web-api"], 8080);
    assert!(s.validate().is_ok());
}
