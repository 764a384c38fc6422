use super::*;
use crate::model::{Endpoint, Protocol, Service, ServicePort};

fn good() -> Service {
    Service::new("reviews.default.svc")
        .with_port("http", 9080, Protocol::Http)
        .with_port("grpc", 9090, Protocol::Grpc)
        .with_endpoint(Endpoint::new("10.0.0.1".parse().expect("addr")).with_port("http", 19080))
}

/// Applies `change` to a good service and returns the (field, problem) pairs.
fn problems(change: impl FnOnce(&mut Service)) -> Vec<(Option<String>, String, String)> {
    let mut s = good();
    change(&mut s);
    match s.validate() {
        Ok(()) => Vec::new(),
        Err(ValidationErrors(v)) => v
            .into_iter()
            .map(|e| (e.endpoint, e.field, e.problem))
            .collect(),
    }
}

#[test]
fn good_service_passes() {
    assert_eq!(problems(|_| {}), vec![]);
}

#[test]
fn one_case_per_rule() {
    type Case = (
        &'static str,
        Box<dyn FnOnce(&mut Service)>,
        &'static str,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "empty hostname",
            Box::new(|s| s.hostname = "".into()),
            "hostname",
            "must not be empty",
        ),
        (
            "uppercase hostname",
            Box::new(|s| s.hostname = "Reviews.default".into()),
            "hostname",
            "lowercase",
        ),
        (
            "underscore in hostname",
            Box::new(|s| s.hostname = "a_b.svc".into()),
            "hostname",
            "contains '_'",
        ),
        (
            "double dot",
            Box::new(|s| s.hostname = "a..b".into()),
            "hostname",
            "empty label",
        ),
        (
            "trailing dot",
            Box::new(|s| s.hostname = "a.b.".into()),
            "hostname",
            "empty label",
        ),
        (
            "leading dash",
            Box::new(|s| s.hostname = "-a.b".into()),
            "hostname",
            "starts or ends",
        ),
        (
            "label too long",
            Box::new(|s| s.hostname = format!("{}.svc", "a".repeat(64)).into()),
            "hostname",
            "longer than 63",
        ),
        (
            "name too long",
            Box::new(|s| s.hostname = vec!["a".repeat(60); 5].join(".").into()),
            "hostname",
            "at most 253",
        ),
        (
            "colon (cluster name separator)",
            Box::new(|s| s.hostname = "a:80".into()),
            "hostname",
            "contains ':'",
        ),
        (
            "pipe (cluster name separator)",
            Box::new(|s| s.hostname = "a|b".into()),
            "hostname",
            "contains '|'",
        ),
        (
            "namespace with dot",
            Box::new(|s| s.namespace = "a.b".into()),
            "namespace",
            "single DNS label",
        ),
        (
            "empty namespace",
            Box::new(|s| s.namespace = "".into()),
            "namespace",
            "must not be empty",
        ),
        (
            "no ports",
            Box::new(|s| {
                s.ports.clear();
                s.endpoints[0].ports.clear();
            }),
            "ports",
            "at least one port",
        ),
        (
            "port 0",
            Box::new(|s| s.ports[0].port = 0),
            "ports[0].port",
            "port 0",
        ),
        (
            "port too large",
            Box::new(|s| s.ports[1].port = 65536),
            "ports[1].port",
            "out of range",
        ),
        (
            "duplicate port name",
            Box::new(|s| s.ports.push(ServicePort::new("http", 1))),
            "ports[2].name",
            "duplicate port name",
        ),
        (
            "duplicate port number",
            Box::new(|s| s.ports.push(ServicePort::new("web", 9080))),
            "ports[2].port",
            "duplicate port number",
        ),
        (
            "empty port name",
            Box::new(|s| s.ports[1].name = "".into()),
            "ports[1].name",
            "must not be empty",
        ),
        (
            "bad port name",
            Box::new(|s| s.ports[1].name = "my port".into()),
            "ports[1].name",
            "contains ' '",
        ),
        (
            "empty label key",
            Box::new(|s| {
                s.labels.insert("".into(), "x".into());
            }),
            "labels[0]",
            "must not be empty",
        ),
    ];
    for (what, change, field, needle) in cases {
        let got = problems(change);
        assert!(
            got.iter().any(|(_, f, p)| f == field && p.contains(needle)),
            "{what}: want {field}: ..{needle}.., got {got:?}"
        );
    }
}

#[test]
fn endpoint_rules_name_the_endpoint() {
    type Case = (
        &'static str,
        Box<dyn FnOnce(&mut Endpoint)>,
        &'static str,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "weight 0",
            Box::new(|e| e.weight = 0),
            "weight",
            "at least 1",
        ),
        (
            "unknown port name",
            Box::new(|e| {
                e.ports.insert("web".into(), 80);
            }),
            "ports.web",
            "does not name a port",
        ),
        (
            "target port 0",
            Box::new(|e| {
                e.ports.insert("http".into(), 0);
            }),
            "ports.http",
            "port 0",
        ),
        (
            "target port too large",
            Box::new(|e| {
                e.ports.insert("grpc".into(), 70000);
            }),
            "ports.grpc",
            "out of range",
        ),
        (
            "unspecified address",
            Box::new(|e| e.address = "0.0.0.0".parse().expect("addr")),
            "address",
            "unspecified",
        ),
        (
            "control char in zone",
            Box::new(|e| e.locality.zone = "a\nb".into()),
            "locality.zone",
            "control character",
        ),
    ];
    for (what, change, field, needle) in cases {
        let got = problems(|s| change(&mut s.endpoints[0]));
        let ep = "endpoints[0]";
        assert!(
            got.iter()
                .any(|(e, f, p)| e.as_deref().is_some_and(|e| e.starts_with(ep))
                    && f == field
                    && p.contains(needle)),
            "{what}: want {ep} {field}: ..{needle}.., got {got:?}"
        );
    }
}

#[test]
fn locality_weight_sum_must_fit_u32() {
    let got = problems(|s| {
        s.endpoints[0].weight = u32::MAX;
        s.endpoints
            .push(Endpoint::new("10.0.0.2".parse().expect("addr")));
    });
    assert!(
        got.iter()
            .any(|(_, f, p)| f == "endpoints[].weight" && p.contains("in locality")),
        "{got:?}"
    );

    // Two localities each under the limit, but their sum is over it.
    let got = problems(|s| {
        s.endpoints[0].weight = u32::MAX;
        let mut other = Endpoint::new("10.0.0.2".parse().expect("addr"));
        other.locality.zone = "b".into();
        s.endpoints.push(other);
    });
    assert!(
        got.iter()
            .any(|(_, f, p)| f == "endpoints[].weight" && p.contains("locality weights add up")),
        "{got:?}"
    );

    // At the limit exactly is fine.
    assert_eq!(problems(|s| s.endpoints[0].weight = u32::MAX), vec![]);
}

#[test]
fn every_problem_is_reported_at_once() {
    let got = problems(|s| {
        s.hostname = "BAD".into();
        s.ports[0].port = 0;
        s.endpoints[0].weight = 0;
    });
    assert_eq!(got.len(), 3, "{got:?}");
}

#[test]
fn display_names_service_endpoint_and_field() {
    let mut s = good();
    s.endpoints[0].weight = 0;
    let msg = s.validate().expect_err("invalid").to_string();
    assert_eq!(
        msg,
        "service \"reviews.default.svc\", endpoints[0] (10.0.0.1), field weight: must be at least 1"
    );
}

#[test]
fn export_to_takes_star_dot_tilde_or_namespaces_and_tilde_alone() {
    let base = Service::new("a.shop.svc").with_port("http", 80, Protocol::Http);
    let with = |entries: &[&str]| {
        let mut s = base.clone();
        s.namespace = "shop".into();
        s.export_to = entries.iter().map(|e| (*e).to_owned()).collect();
        s
    };
    for ok in [&[][..], &["*"], &["."], &["~"], &[".", "billing"]] {
        assert!(with(ok).validate().is_ok(), "{ok:?}");
    }
    for bad in [&["~", "."][..], &["a.b"], &["Billing"]] {
        let e = with(bad).validate().expect_err("refused");
        assert!(e.0[0].field.starts_with("exportTo["), "{bad:?}: {e:?}");
    }
    // Who sees what.
    assert!(with(&[]).exported_to(None) && with(&["*"]).exported_to(Some("x")));
    assert!(with(&["."]).exported_to(Some("shop")) && !with(&["."]).exported_to(Some("x")));
    assert!(!with(&["~"]).exported_to(Some("shop")));
    assert!(with(&["x"]).is_restricted() && !with(&["*", "."]).is_restricted());
}

#[test]
fn resolutions_take_the_endpoints_they_can_serve() {
    use crate::model::Resolution;
    let dns = |s: &mut Service| {
        s.endpoints[0].address = "db.example.com".parse().expect("name");
    };
    // STATIC: IP addresses only.
    let p = problems(|s| {
        s.resolution = Some(Resolution::Static);
        dns(s);
    });
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].1, "address");
    assert!(p[0].2.contains("STATIC takes IP addresses"), "{p:?}");
    // DNS: names and addresses alike.
    assert_eq!(
        problems(|s| {
            s.resolution = Some(Resolution::Dns);
            dns(s);
        }),
        vec![]
    );
    // NONE: no endpoints at all.
    let p = problems(|s| s.resolution = Some(Resolution::None));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].2.contains("takes no endpoints"), "{p:?}");
    assert_eq!(
        problems(|s| {
            s.resolution = Some(Resolution::None);
            s.endpoints.clear();
        }),
        vec![]
    );
    // DNS_ROUND_ROBIN: exactly one name.
    let p = problems(|s| {
        s.resolution = Some(Resolution::DnsRoundRobin);
        let again = s.endpoints[0].clone();
        s.endpoints.push(again);
    });
    assert!(p[0].2.contains("exactly one endpoint"), "{p:?}");
    assert_eq!(
        problems(|s| {
            s.resolution = Some(Resolution::DnsRoundRobin);
            dns(s);
        }),
        vec![]
    );
}
