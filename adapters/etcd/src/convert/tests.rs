use super::*;

fn layout() -> Layout {
    Layout {
        prefix: "/sextant/".into(),
        naming_prefix: Some("/naming/".into()),
    }
}

#[test]
fn keys_are_classified_by_layout() {
    let l = layout();
    let cases: Vec<(&str, Result<Option<Key>, &str>)> = vec![
        (
            "/sextant/services/a.svc",
            Ok(Some(Key::Service("a.svc".into()))),
        ),
        (
            "/sextant/endpoints/a.svc/pod-1",
            Ok(Some(Key::Endpoint("a.svc".into(), "pod-1".into()))),
        ),
        (
            "/sextant/endpoints/a.svc/10.0.0.1:80",
            Ok(Some(Key::Endpoint("a.svc".into(), "10.0.0.1:80".into()))),
        ),
        (
            "/naming/greeter/10.0.0.1:50051",
            Ok(Some(Key::Naming("greeter".into(), "10.0.0.1:50051".into()))),
        ),
        ("/sextant/services/", Err("without a hostname")),
        ("/sextant/services/a.svc/extra", Err("has a '/'")),
        ("/sextant/endpoints/a.svc", Err("endpoints/HOSTNAME/ID")),
        ("/sextant/endpoints//x", Err("endpoints/HOSTNAME/ID")),
        ("/naming/noaddr", Err("SERVICE/ADDR")),
        ("/sextant/other/thing", Ok(None)),
        ("/elsewhere/x", Ok(None)),
    ];
    for (key, want) in cases {
        match (l.classify(key), want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{key}"),
            (Err(got), Err(needle)) => assert!(got.contains(needle), "{key}: {got}"),
            (got, want) => panic!("{key}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn values_parse_as_yaml_or_json_with_the_hostname_from_the_key() {
    let key = Key::Service("a.svc".into());
    let yaml = parse(&key, b"ports: [{name: http, port: 80}]\n").expect("yaml");
    let json = parse(
        &key,
        br#"{"hostname":"a.svc","ports":[{"name":"http","port":80}]}"#,
    )
    .expect("json");
    assert_eq!(yaml, json);
    let cases: Vec<(&[u8], &str)> = vec![
        (
            b"hostname: b.svc\nports: [{name: http, port: 80}]\n",
            "differs from the key",
        ),
        (b"- not a mapping\n", "must be a mapping"),
        (b"ports: [{name: http, port: 0}]\n", "port 0"),
        (
            b"ports: [{name: http, port: 80}]\nbogus: 1\n",
            "unknown field `bogus`",
        ),
        (b"{ unclosed", "not a YAML or JSON document"),
        (&[0xff, 0xfe], "not UTF-8"),
    ];
    for (value, needle) in cases {
        let err = parse(&key, value).expect_err("invalid");
        assert!(
            err.contains(needle),
            "{:?}: {err}",
            String::from_utf8_lossy(value)
        );
    }
    let ep = Key::Endpoint("a.svc".into(), "1".into());
    assert!(matches!(
        parse(&ep, b"address: 10.0.0.1\nports: {http: 8080}\n"),
        Ok(Object::Endpoint(_))
    ));
    assert!(
        parse(&ep, b"address: 10.0.0.1\nweight: 0\n")
            .expect_err("weight")
            .contains("weight")
    );
    assert!(parse(&ep, b"address: not an ip\n").is_err());
}

#[test]
fn naming_values_follow_grpc_go() {
    let key = Key::Naming("greeter".into(), "x".into());
    match parse(
        &key,
        br#"{"Addr":"10.0.0.1:50051","Metadata":{"zone":"a","v":2}}"#,
    )
    .expect("naming")
    {
        Object::Naming(addr, port, labels) => {
            assert_eq!(addr.to_string(), "10.0.0.1");
            assert_eq!(port, 50051);
            assert_eq!(labels.get("zone").map(String::as_str), Some("a"));
            assert_eq!(labels.get("v").map(String::as_str), Some("2"));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        parse(&key, br#"{"Op":0,"Addr":"[::1]:80","Metadata":null}"#).is_ok(),
        "older format, IPv6"
    );
    assert!(
        parse(&key, br#"{"Addr":"10.0.0.1"}"#)
            .expect_err("port")
            .contains("no port")
    );
}

#[test]
fn services_combine_documents_endpoints_and_naming_keys() {
    let l = layout();
    let mut st = State::default();
    let mut put = |k: &str, v: &str| {
        let key = l.classify(k).expect("ok").expect("ours");
        let obj = parse(&key, v.as_bytes()).expect("valid");
        st.put(key, obj);
    };
    put(
        "/sextant/services/a.svc",
        "ports: [{name: http, port: 80}]\nendpoints: [{address: 10.0.0.1}]\n",
    );
    put(
        "/sextant/endpoints/a.svc/2",
        "address: 10.0.0.2\nports: {http: 8080}\n",
    );
    put("/sextant/endpoints/b.svc/1", "address: 10.0.1.1\n");
    put("/naming/a.svc/10.0.0.3:9000", r#"{"Addr":"10.0.0.3:9000"}"#);
    put(
        "/naming/greeter/10.0.2.1:50051",
        r#"{"Addr":"10.0.2.1:50051"}"#,
    );
    put(
        "/naming/greeter/10.0.2.2:50052",
        r#"{"Addr":"10.0.2.2:50052"}"#,
    );
    let services = st.services();
    let names: Vec<&str> = services.iter().map(|s| s.hostname.as_str()).collect();
    assert_eq!(
        names,
        ["a.svc", "greeter"],
        "b.svc has endpoints but no document yet"
    );
    let a = &services[0];
    let addrs: Vec<String> = a
        .endpoints
        .iter()
        .map(|e| format!("{}:{}", e.address, e.target_port(&a.ports[0])))
        .collect();
    assert_eq!(addrs, ["10.0.0.1:80", "10.0.0.2:8080", "10.0.0.3:9000"]);
    let g = &services[1];
    assert_eq!(
        (
            g.ports[0].name.as_str(),
            g.ports[0].port,
            g.ports[0].protocol
        ),
        ("grpc", 50051, Protocol::Grpc)
    );
    assert_eq!(g.endpoints.len(), 2);
    assert!(g.validate().is_ok());
}

#[test]
fn port_arguments() {
    assert_eq!(port_arg("http=8080"), Ok(ServicePort::new("http", 8080)));
    assert_eq!(
        port_arg("grpc-api=50051").expect("ok").protocol,
        Protocol::Grpc
    );
    assert!(port_arg("8080").is_err());
    assert!(port_arg("http=x").is_err());
}

#[test]
fn scope_rules_are_read_from_their_keys() {
    let l = layout();
    let key = l
        .classify_rule("/sextant/scopes/shop/web")
        .expect("a rule key")
        .expect("ours");
    assert_eq!(key, RuleKey::new(RuleKind::Scope, "shop", "web"));
    let rule = parse_rule(
        &key,
        b"workloadSelector: {labels: {app: web}}\negress: [{hosts: [\"./*\", \"shared/*\"]}]\n",
    )
    .expect("parses");
    let scope = rule.as_scope().expect("a scope rule");
    assert_eq!(scope.workload_selector["app"], "web");
    let hosts: Vec<String> = scope.hosts.iter().map(ToString::to_string).collect();
    assert_eq!(hosts, ["./*", "shared/*"]);
    assert!(rule.hosts.is_empty(), "a scope binds to no service");
    let bad = parse_rule(&key, b"egress: [{hosts: [\"nowhere\"]}]\n").expect_err("refused");
    assert!(bad.contains("NAMESPACE/HOST"), "{bad}");
    assert!(l.classify_rule("/sextant/scopes/shop").is_err());
}

#[test]
fn peer_authentications_are_read_from_their_keys() {
    let l = layout();
    let key = l
        .classify_rule("/sextant/peerauthentications/shop/web")
        .expect("a rule key")
        .expect("ours");
    assert_eq!(key, RuleKey::new(RuleKind::PeerAuth, "shop", "web"));
    let rule = parse_rule(
        &key,
        b"selector: {matchLabels: {app: web}}\nmtls: {mode: STRICT}\n",
    )
    .expect("parses");
    let p = rule.as_peer_auth().expect("a peer authentication");
    assert_eq!(p.mode, sextant_core::rules::MtlsMode::Strict);
    assert!(rule.hosts.is_empty(), "binds to no service");
    assert!(parse_rule(&key, b"mtls: {mode: LOOSE}\n").is_err());
}

#[test]
fn authorization_policies_are_read_from_their_keys() {
    let l = layout();
    let key = l
        .classify_rule("/sextant/authorizationpolicies/shop/deny-evil")
        .expect("a rule key")
        .expect("ours");
    assert_eq!(key, RuleKey::new(RuleKind::Authz, "shop", "deny-evil"));
    let rule = parse_rule(
        &key,
        b"action: DENY\nrules: [{from: [{source: {namespaces: [evil]}}]}]\n",
    )
    .expect("parses");
    let a = rule.as_authz().expect("an authorization policy");
    assert_eq!(a.action, sextant_core::rules::AuthzAction::Deny);
    assert!(rule.validate().is_ok());
    let bad = parse_rule(
        &key,
        b"rules: [{when: [{key: request.auth.claims, values: [x]}]}]\n",
    )
    .expect("parses");
    let e = bad.validate().expect_err("an unserved key").to_string();
    assert!(e.contains("request.auth.claims"), "{e}");
}

#[test]
fn gateways_are_read_from_their_keys() {
    let l = layout();
    let key = l
        .classify_rule("/sextant/gateways/edge/public")
        .expect("a rule key")
        .expect("ours");
    assert_eq!(key, RuleKey::new(RuleKind::Gateway, "edge", "public"));
    let rule = parse_rule(
        &key,
        b"listeners: [{name: http, port: 8080, protocol: HTTP}]\n",
    )
    .expect("parses");
    let g = rule.as_gateway().expect("a gateway");
    assert_eq!(g.listeners[0].port, 8080);
    assert!(rule.validate().is_ok());
    assert!(rule.per_proxy() && rule.hosts.is_empty());
    assert!(parse_rule(&key, b"listeners: [{name: x, port: 1}]\n").is_err());
}
