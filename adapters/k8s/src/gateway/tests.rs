//! GAMMA-shaped routes (a Service as the parent) converted.

use super::*;
use sextant_core::rules::gateway::GatewayProtocol;
use sextant_core::{Hostname, RuleSpec};

fn spec(yaml: &str) -> Value {
    serde_yaml_ng::from_str(yaml).expect("yaml")
}

fn rule_of(c: &Converted) -> &RouteRule {
    match &c.rule.as_ref().expect("a rule").spec {
        RuleSpec::Route(r) => r,
        other => panic!("{other:?}"),
    }
}

#[test]
fn relative_weights_become_percentages() {
    for (given, want) in [
        (vec![Some(1), Some(2)], vec![Some(33), Some(67)]),
        (vec![Some(90), Some(10)], vec![Some(90), Some(10)]),
        (
            vec![Some(1), Some(1), Some(1)],
            vec![Some(34), Some(33), Some(33)],
        ),
        (vec![Some(0), Some(5)], vec![Some(0), Some(100)]),
        (vec![None, None], vec![None, None]),
        (vec![Some(3), None], vec![Some(75), Some(25)]),
    ] {
        assert_eq!(percentages(&given), want, "{given:?}");
    }
}

#[test]
fn an_httproute_on_a_service_becomes_its_route_rule() {
    let m = Mapping::default();
    let c = route(
        &m,
        &Grants::default(),
        RouteKind::Http,
        "default",
        "reviews",
        &spec(
            "parentRefs:\n- {group: '', kind: Service, name: reviews, port: 9080}\n\
             rules:\n\
             - matches:\n  - headers: [{name: End-User, value: jason}]\n    queryParams: [{name: debug, value: '1'}]\n  - headers: [{name: End-User, value: jason}]\n  \
               backendRefs: [{name: reviews-v2, port: 9080}]\n\
             - matches:\n  - path: {type: PathPrefix, value: /api}\n  \
               filters:\n  - type: RequestHeaderModifier\n    requestHeaderModifier: {set: [{name: X-Env, value: canary}], remove: [x-debug]}\n  \
                 - type: URLRewrite\n    urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}\n  \
                 - type: RequestMirror\n    requestMirror: {backendRef: {name: shadow, port: 9080}}\n  \
               backendRefs: [{name: reviews-v1, port: 9080, weight: 1}, {name: reviews-v2, port: 9080, weight: 2}]\n  \
               timeouts: {request: 2s}\n\
             - backendRefs: [{name: reviews-v1, port: 9080}]\n",
        ),
    )
    .expect("converts");
    let mut got = c.unsupported.clone();
    got.sort();
    // A match with a condition that is not served is not served (it would
    // hold for more requests than written); the rule keeps its others.
    assert_eq!(
        got,
        ["spec.rules[0].matches[0].queryParams (the match is not served)"]
    );
    let r = rule_of(&c);
    assert_eq!(r.http[0].matches.len(), 1);
    assert_eq!(
        r.hosts,
        vec![Hostname::new("reviews.default.svc.cluster.local")]
    );
    assert_eq!(r.http.len(), 3);
    // The parent's port limits every match, the catch-all included.
    assert!(
        r.http
            .iter()
            .all(|h| !h.matches.is_empty() && h.matches.iter().all(|m| m.port == Some(9080))),
        "{:?}",
        r.http
    );
    assert_eq!(
        r.http[0].matches[0].headers["end-user"].0,
        Some(StringMatch::Exact("jason".into()))
    );
    assert_eq!(
        r.http[0].route[0].destination.host.as_str(),
        "reviews-v2.default.svc.cluster.local"
    );
    let second = &r.http[1];
    assert_eq!(
        second.matches[0].uri,
        Some(StringMatch::Prefix("/api".into()))
    );
    let weights: Vec<Option<u32>> = second.route.iter().map(|d| d.weight).collect();
    assert_eq!(weights, [Some(33), Some(67)]);
    assert_eq!(
        second.rewrite.as_ref().and_then(|w| w.uri.as_deref()),
        Some("/v2")
    );
    assert_eq!(
        second.mirror.as_ref().map(|d| d.host.as_str()),
        Some("shadow.default.svc.cluster.local")
    );
    let request = second
        .headers
        .as_ref()
        .and_then(|h| h.request.as_ref())
        .expect("headers");
    assert_eq!(request.set["x-env"], "canary");
    assert_eq!(second.timeout.map(|t| t.0.as_secs()), Some(2));
    let rule = c.rule.expect("rule");
    assert!(rule.validate().is_ok(), "{:?}", rule.validate());
    assert_eq!(rule.key.name, "httproute/reviews");
}

#[test]
fn a_grpcroute_method_match_is_a_path_match() {
    let m = Mapping::default();
    let c = route(
        &m,
        &Grants::default(),
        RouteKind::Grpc,
        "shop",
        "echo",
        &spec(
            "parentRefs: [{kind: Service, name: echo}]\n\
             rules:\n\
             - matches: [{method: {service: sextant.test.Echo, method: Say}}]\n  backendRefs: [{name: echo-v2, port: 50051}]\n\
             - matches: [{method: {service: sextant.test.Echo}}]\n  backendRefs: [{name: echo-v1, port: 50051}]\n",
        ),
    )
    .expect("converts");
    let r = rule_of(&c);
    assert_eq!(
        r.http[0].matches[0].uri,
        Some(StringMatch::Exact("/sextant.test.Echo/Say".into()))
    );
    assert_eq!(
        r.http[1].matches[0].uri,
        Some(StringMatch::Prefix("/sextant.test.Echo/".into()))
    );
    assert!(c.unsupported.is_empty(), "{:?}", c.unsupported);
}

/// A route on a Gateway binds to it, not to the mesh: its hostnames are
/// names at the gateway (none: every name), its parents the gateways; a
/// route on both a Service and a Gateway serves the Service only.
#[test]
fn routes_on_gateways_bind_to_the_gateway_not_the_mesh() {
    let m = Mapping::default();
    let convert = |yaml: &str| {
        route(
            &m,
            &Grants::default(),
            RouteKind::Http,
            "shop",
            "edge",
            &spec(yaml),
        )
        .expect("converts")
    };
    let c = convert(
        "parentRefs: [{name: public, namespace: edge}]\nhostnames: [shop.example.com]\nrules: [{backendRefs: [{name: web, port: 80}]}]\n",
    );
    let rule = c.rule.as_ref().expect("a rule");
    assert!(rule.hosts.is_empty(), "binds to no service");
    let r = rule_of(&c);
    assert_eq!(r.gateways, ["edge/public"]);
    assert_eq!(r.hosts, [Hostname::new("shop.example.com")]);
    assert_eq!(
        r.http[0].route[0].destination.host.as_str(),
        "web.shop.svc.cluster.local"
    );
    assert!(c.unsupported.is_empty(), "{:?}", c.unsupported);

    let any =
        convert("parentRefs: [{name: public}]\nrules: [{backendRefs: [{name: web, port: 80}]}]\n");
    assert_eq!(rule_of(&any).hosts, [Hostname::new("*")]);
    assert_eq!(rule_of(&any).gateways, ["shop/public"]);

    // sectionName and port narrow the binding to those listeners.
    let section = convert(
        "parentRefs: [{name: public, sectionName: http}, {name: other, namespace: edge, port: 8443}]\nrules: [{backendRefs: [{name: web, port: 80}]}]\n",
    );
    assert!(section.unsupported.is_empty(), "{:?}", section.unsupported);
    assert_eq!(
        rule_of(&section).gateways,
        ["shop/public/http", "edge/other:8443"]
    );

    let both = convert(
        "parentRefs: [{name: public}, {kind: Service, name: web}]\nrules: [{backendRefs: [{name: web, port: 80}]}]\n",
    );
    assert!(rule_of(&both).gateways.is_empty());
    assert_eq!(both.unsupported.len(), 1, "{:?}", both.unsupported);

    let other_kind = convert(
        "parentRefs: [{kind: Mesh, group: example.com, name: m}]\nrules: [{backendRefs: [{name: web, port: 80}]}]\n",
    );
    assert!(other_kind.rule.is_none());
}

/// A Gateway of Sextant's class becomes its listeners; another class's is
/// not Sextant's; what is not served yet is named.
#[test]
fn gateways_of_sextants_class_are_converted() {
    let g = |yaml: &str| gateway("sextant", "edge", "public", &spec(yaml)).expect("converts");
    let c = g(
        "gatewayClassName: sextant\nlisteners:\n- {name: http, port: 80, protocol: HTTP, hostname: '*.example.com', allowedRoutes: {namespaces: {from: All}}}\n- {name: https, port: 443, protocol: HTTPS}\n",
    );
    let rule = c.rule.as_ref().expect("a rule");
    let gw = rule.as_gateway().expect("a gateway");
    assert_eq!(gw.listeners.len(), 1);
    assert_eq!(gw.listeners[0].hostname.as_deref(), Some("*.example.com"));
    assert!(gw.listeners[0].allows("edge", "shop"));
    assert!(
        c.unsupported[0].contains("HTTPS needs tls.certificateRefs"),
        "{:?}",
        c.unsupported
    );
    assert!(rule.validate().is_ok(), "{:?}", rule.validate());
    // HTTPS: Secrets (another namespace's by NAMESPACE/NAME); other kinds
    // and Passthrough are named.
    let c = g(concat!(
        "gatewayClassName: sextant\nlisteners:\n",
        "- {name: a, port: 443, protocol: HTTPS, hostname: a.example.com, tls: {certificateRefs: [{name: a-cert}, {name: far, namespace: other}, {kind: ConfigMap, name: x}]}}\n",
        "- {name: b, port: 443, protocol: HTTPS, hostname: b.example.com, tls: {mode: Passthrough, certificateRefs: [{name: b-cert}]}}\n",
        "- {name: c, port: 8443, protocol: HTTPS, tls: {certificateRefs: [{name: far, namespace: other}]}}\n",
    ));
    let gw = c
        .rule
        .as_ref()
        .and_then(|r| r.as_gateway())
        .expect("a gateway");
    assert_eq!(gw.listeners.len(), 2, "{:?}", gw.listeners);
    assert_eq!(gw.listeners[0].protocol, GatewayProtocol::Https);
    // Another namespace's Secret is named NAMESPACE/NAME (a ReferenceGrant
    // there decides whether it is sent).
    assert_eq!(
        gw.listeners[0]
            .tls
            .as_ref()
            .map(|t| t.certificate_refs.clone()),
        Some(vec!["a-cert".to_owned(), "other/far".to_owned()])
    );
    let said = c.unsupported.join("\n");
    for expected in [
        "listeners[0].tls.certificateRefs[2] (only core Secrets",
        "listeners[1].tls.mode Passthrough",
    ] {
        assert!(said.contains(expected), "{expected} in {said}");
    }
    assert!(c.rule.as_ref().is_some_and(|r| r.validate().is_ok()));
    let other = g("gatewayClassName: istio\nlisteners: [{name: http, port: 80, protocol: HTTP}]\n");
    assert!(other.rule.is_none() && other.unsupported.is_empty());
    let none = g("gatewayClassName: sextant\nlisteners: [{name: udp, port: 80, protocol: UDP}]\n");
    assert!(none.rule.is_none());
    // TLS passes through, TCP proxies; TLS Terminate is HTTPS's.
    let l4 = g(concat!(
        "gatewayClassName: sextant\nlisteners:\n",
        "- {name: tls, port: 443, protocol: TLS, hostname: '*.example.com', tls: {mode: Passthrough}}\n",
        "- {name: db, port: 5432, protocol: TCP}\n",
        "- {name: term, port: 8443, protocol: TLS, tls: {mode: Terminate}}\n",
    ));
    let gw = l4
        .rule
        .as_ref()
        .and_then(|r| r.as_gateway())
        .expect("a gateway");
    let protocols: Vec<_> = gw.listeners.iter().map(|l| l.protocol).collect();
    assert_eq!(protocols, [GatewayProtocol::Tls, GatewayProtocol::Tcp]);
    assert!(
        l4.unsupported
            .join(" ")
            .contains("listeners[2].tls.mode Terminate")
    );
    assert!(l4.rule.as_ref().is_some_and(|r| r.validate().is_ok()));
}

/// A backend in another namespace: served only with a ReferenceGrant
/// there for this kind of route from this namespace (to every Service, or
/// to that one); otherwise its share is answered 500, the others keep
/// their weights, and the refusal is named. A refused mirror is dropped.
#[test]
fn a_backend_in_another_namespace_needs_a_reference_grant_there() {
    let m = Mapping::default();
    let yaml = "parentRefs:\n- {kind: Service, name: reviews}\n\
                rules:\n\
                - filters:\n  - type: RequestMirror\n    requestMirror: {backendRef: {name: spy, namespace: other}}\n  \
                  backendRefs: [{name: mine, weight: 3}, {name: theirs, namespace: other, weight: 1}]\n";
    let convert = |grants: &Grants, kind: RouteKind| {
        let c = route(&m, grants, kind, "shop", "r", &spec(yaml)).expect("converts");
        let r = rule_of(&c).http[0].clone();
        (r, c.unsupported)
    };
    // No grant: only the local backend, 25% answered 500, no mirror.
    let (r, unsupported) = convert(&Grants::default(), RouteKind::Http);
    let hosts: Vec<String> = r
        .route
        .iter()
        .map(|d| d.destination.host.to_string())
        .collect();
    assert_eq!(hosts, ["mine.shop.svc.cluster.local"]);
    assert_eq!(r.route[0].weight, Some(100));
    let abort = r.fault.and_then(|f| f.abort).expect("an abort");
    assert_eq!(abort.http_status, Some(500));
    assert_eq!(abort.percentage, Some(Percent(25.0)));
    assert!(r.mirror.is_none());
    assert_eq!(unsupported.len(), 2, "{unsupported:?}");
    assert!(
        unsupported[0].contains("Service other/theirs: no ReferenceGrant in other"),
        "{unsupported:?}"
    );
    // A grant in `other` for HTTPRoutes of `shop` to every Service.
    let mut grants = Grants::default();
    grants
        .insert(
            "other",
            "shop-in",
            &spec("from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop}]\nto: [{group: '', kind: Service}]\n"),
        )
        .expect("a grant");
    let (r, unsupported) = convert(&grants, RouteKind::Http);
    assert_eq!(r.route.len(), 2);
    assert_eq!(
        r.route.iter().map(|d| d.weight).collect::<Vec<_>>(),
        [Some(75), Some(25)]
    );
    assert!(r.fault.is_none());
    assert!(r.mirror.is_some());
    assert!(unsupported.is_empty(), "{unsupported:?}");
    // Not for GRPCRoutes, nor for routes of another namespace.
    assert!(r.route.len() > convert(&grants, RouteKind::Grpc).0.route.len());
    assert!(!grants.permits(RouteKind::Http, "elsewhere", "other", "theirs"));
    // A grant to one Service names that one only.
    let mut one = Grants::default();
    one.insert(
        "other",
        "one",
        &spec("from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop}]\nto: [{group: '', kind: Service, name: theirs}]\n"),
    )
    .expect("a grant");
    assert!(one.permits(RouteKind::Http, "shop", "other", "theirs"));
    assert!(!one.permits(RouteKind::Http, "shop", "other", "spy"));
    one.remove("other", "one");
    assert!(!one.permits(RouteKind::Http, "shop", "other", "theirs"));
    // Every backend refused: all answered 500.
    let all = "parentRefs:\n- {kind: Service, name: reviews}\nrules:\n- backendRefs: [{name: theirs, namespace: other}]\n";
    let c = route(
        &m,
        &Grants::default(),
        RouteKind::Http,
        "shop",
        "r",
        &spec(all),
    )
    .expect("converts");
    let r = &rule_of(&c).http[0];
    assert_eq!(
        r.fault
            .as_ref()
            .and_then(|f| f.abort.as_ref())
            .and_then(|a| a.percentage),
        Some(Percent(100.0))
    );
}

#[test]
fn a_rule_whose_every_match_has_a_condition_not_served_is_not_served() {
    let c = route(
        &Mapping::default(),
        &Grants::default(),
        RouteKind::Http,
        "default",
        "reviews",
        &spec(
            "parentRefs:\n- {group: '', kind: Service, name: reviews}\n\
             rules:\n\
             - matches:\n  - queryParams: [{name: debug, value: '1'}]\n  \
               backendRefs: [{name: reviews-debug, port: 9080}]\n\
             - backendRefs: [{name: reviews-v1, port: 9080}]\n",
        ),
    )
    .expect("converts");
    let r = rule_of(&c);
    // Only the catch-all: the debug backend gets no request at all, rather
    // than every request.
    assert_eq!(r.http.len(), 1);
    assert_eq!(
        r.http[0].route[0].destination.host.as_str(),
        "reviews-v1.default.svc.cluster.local"
    );
    assert!(
        c.unsupported
            .iter()
            .any(|u| u.starts_with("spec.rules[0] (every match")),
        "{:?}",
        c.unsupported
    );
}

#[test]
fn tcp_and_tls_routes_on_a_service_become_its_l4_routes() {
    let m = Mapping::default();
    let mut grants = Grants::default();
    let tcp = route(
        &m,
        &grants,
        RouteKind::Tcp,
        "shop",
        "db-split",
        &spec(
            "parentRefs: [{group: '', kind: Service, name: db, port: 5432}]\n\
             rules:\n- backendRefs: [{name: db-v1, port: 5432, weight: 3}, {name: db-v2, port: 5432, weight: 1}, {name: db, namespace: other, port: 5432}]\n",
        ),
    )
    .expect("converts");
    let rule = rule_of(&tcp);
    assert_eq!(rule.hosts, [Hostname::new("db.shop.svc.cluster.local")]);
    assert!(rule.http.is_empty() && rule.tls.is_empty());
    assert_eq!(rule.tcp.len(), 1);
    assert_eq!(rule.tcp[0].matches, [L4Match { port: Some(5432) }]);
    let shares: Vec<(String, Option<u32>)> = rule.tcp[0]
        .route
        .iter()
        .map(|d| (d.destination.host.to_string(), d.weight))
        .collect();
    assert_eq!(
        shares,
        [
            ("db-v1.shop.svc.cluster.local".into(), Some(75)),
            ("db-v2.shop.svc.cluster.local".into(), Some(25))
        ],
        "the backend of another namespace gets no connections without a grant"
    );
    assert!(
        tcp.unsupported[0].contains("no ReferenceGrant in other lets TCPRoutes of shop"),
        "{:?}",
        tcp.unsupported
    );
    assert_eq!(
        tcp.rule.as_ref().expect("rule").key.name,
        "tcproute/db-split"
    );

    grants
        .insert(
            "other",
            "let-shop",
            &spec("from: [{group: gateway.networking.k8s.io, kind: TLSRoute, namespace: shop}]\nto: [{group: '', kind: Service}]\n"),
        )
        .expect("grant");
    let tls = route(
        &m,
        &grants,
        RouteKind::Tls,
        "shop",
        "by-name",
        &spec(
            "parentRefs: [{group: '', kind: Service, name: edge}]\n\
             hostnames: [api.example.com, '*.internal.example.com']\n\
             rules:\n- backendRefs: [{name: api, namespace: other, port: 443}]\n",
        ),
    )
    .expect("converts");
    assert!(tls.unsupported.is_empty(), "{:?}", tls.unsupported);
    let rule = rule_of(&tls);
    assert_eq!(rule.tls.len(), 1);
    assert_eq!(
        rule.tls[0].matches,
        [TlsMatch {
            sni_hosts: vec!["api.example.com".into(), "*.internal.example.com".into()],
            port: None
        }]
    );
    assert_eq!(
        rule.tls[0].route[0].destination.host.as_str(),
        "api.other.svc.cluster.local"
    );
    // Without hostnames: the connections that name the parent.
    let tls = route(
        &m,
        &grants,
        RouteKind::Tls,
        "shop",
        "plain",
        &spec(
            "parentRefs: [{group: '', kind: Service, name: edge, port: 443}]\nrules:\n- backendRefs: [{name: edge-v2, port: 443}]\n",
        ),
    )
    .expect("converts");
    assert_eq!(
        rule_of(&tls).tls[0].matches[0].sni_hosts,
        ["edge.shop.svc.cluster.local"]
    );
    assert_eq!(rule_of(&tls).tls[0].matches[0].port, Some(443));
    // A rule left with no backend is not served.
    let none = route(
        &m,
        &Grants::default(),
        RouteKind::Tcp,
        "shop",
        "nowhere",
        &spec(
            "parentRefs: [{group: '', kind: Service, name: db}]\nrules:\n- backendRefs: [{name: x, namespace: elsewhere}]\n",
        ),
    )
    .expect("converts");
    assert!(none.rule.is_none());
    assert!(none.unsupported.iter().any(|u| u.contains("left out")));
}

/// GAMMA: a route on another namespace's Service is a consumer route (its
/// own namespace's callers only), one on its own namespace's a producer
/// route (every caller); a route naming both serves its own parents only
/// and says why the others are not.
#[test]
fn consumer_routes_apply_to_their_own_namespace_only() {
    let m = Mapping::default();
    let convert = |ns: &str, parents: &str, kind: RouteKind| {
        route(
            &m,
            &Grants::default(),
            kind,
            ns,
            "r",
            &spec(&format!(
                "parentRefs: {parents}\nrules:\n- backendRefs: [{{name: reviews-v2, port: 9080}}]\n"
            )),
        )
        .expect("converts")
    };
    let on_shop = "[{kind: Service, name: reviews, namespace: shop}]";
    let producer = convert("shop", on_shop, RouteKind::Http);
    assert!(rule_of(&producer).export_to.is_empty());
    let consumer = convert("web", on_shop, RouteKind::Http);
    assert_eq!(rule_of(&consumer).export_to, ["."]);
    let tcp = convert("web", on_shop, RouteKind::Tcp);
    assert_eq!(rule_of(&tcp).export_to, ["."]);

    let mixed = convert(
        "web",
        "[{kind: Service, name: reviews, namespace: shop}, {kind: Service, name: front}]",
        RouteKind::Http,
    );
    let r = rule_of(&mixed);
    assert!(r.export_to.is_empty());
    let hosts: Vec<&str> = r.hosts.iter().map(Hostname::as_str).collect();
    assert_eq!(hosts, ["front.web.svc.cluster.local"]);
    assert_eq!(mixed.unsupported.len(), 1, "{:?}", mixed.unsupported);
    assert!(
        mixed.unsupported[0].starts_with(
            "spec.parentRefs[0] (Service reviews.shop.svc.cluster.local of another namespace"
        ),
        "{:?}",
        mixed.unsupported
    );
}
