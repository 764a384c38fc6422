//! Istio's bookinfo rules (reviews v1/v2/v3, ratings faults) and a few
//! objects with fields Sextant does not serve, converted.

use super::*;
use sextant_core::rules::{SimpleLb, StringMatch};
use sextant_core::{RuleKind, RuleSpec};

fn spec(yaml: &str) -> Value {
    serde_yaml_ng::from_str(yaml).expect("yaml")
}

fn route_of(c: &Converted) -> &RouteRule {
    match &c.rule.as_ref().expect("a rule").spec {
        RuleSpec::Route(r) => r,
        other => panic!("{other:?}"),
    }
}

const REVIEWS: &str = "reviews.default.svc.cluster.local";

#[test]
fn bookinfo_route_rules_convert_with_hosts_expanded() {
    let m = Mapping::default();
    // All traffic to v1.
    let all_v1 = virtual_service(
        &m,
        "default",
        "reviews",
        &spec("hosts: [reviews]\nhttp:\n- route:\n  - destination: {host: reviews, subset: v1}\n"),
    )
    .expect("converts");
    assert!(all_v1.unsupported.is_empty(), "{:?}", all_v1.unsupported);
    let r = route_of(&all_v1);
    assert_eq!(r.hosts, vec![Hostname::new(REVIEWS)]);
    assert_eq!(r.http[0].route[0].destination.host.as_str(), REVIEWS);
    assert_eq!(r.http[0].route[0].destination.subset.as_deref(), Some("v1"));
    let rule = all_v1.rule.expect("rule");
    assert_eq!(rule.key.kind, RuleKind::Route);
    assert!(rule.validate().is_ok());

    // 90/10 between v1 and v3... written 50/50 in the sample; weights carry over.
    let split = virtual_service(
        &m,
        "default",
        "reviews",
        &spec(
            "hosts: [reviews]\nhttp:\n- route:\n  - destination: {host: reviews, subset: v1}\n    weight: 90\n  - destination: {host: reviews, subset: v3}\n    weight: 10\n",
        ),
    )
    .expect("converts");
    let weights: Vec<Option<u32>> = route_of(&split).http[0]
        .route
        .iter()
        .map(|d| d.weight)
        .collect();
    assert_eq!(weights, [Some(90), Some(10)]);

    // end-user: jason to v2, everyone else to v1.
    let jason = virtual_service(
        &m,
        "default",
        "reviews",
        &spec(
            "hosts: [reviews]\nhttp:\n- match:\n  - headers:\n      end-user: {exact: jason}\n  route:\n  - destination: {host: reviews, subset: v2}\n- route:\n  - destination: {host: reviews, subset: v1}\n",
        ),
    )
    .expect("converts");
    let r = route_of(&jason);
    assert_eq!(
        r.http[0].matches[0].headers["end-user"].0,
        Some(StringMatch::Exact("jason".into()))
    );
    assert_eq!(r.http[1].route[0].destination.subset.as_deref(), Some("v1"));
}

#[test]
fn bookinfo_faults_and_retries_convert() {
    let m = Mapping::default();
    let delay = virtual_service(
        &m,
        "default",
        "ratings",
        &spec(
            "hosts: [ratings]\nhttp:\n- match:\n  - headers:\n      end-user: {exact: jason}\n  fault:\n    delay:\n      percentage: {value: 100.0}\n      fixedDelay: 7s\n  route:\n  - destination: {host: ratings, subset: v1}\n- route:\n  - destination: {host: ratings, subset: v1}\n",
        ),
    )
    .expect("converts");
    let r = route_of(&delay);
    let d = r.http[0]
        .fault
        .as_ref()
        .and_then(|f| f.delay.as_ref())
        .expect("delay");
    assert_eq!(d.fixed_delay.0, std::time::Duration::from_secs(7));
    let abort = virtual_service(
        &m,
        "default",
        "ratings",
        &spec(
            "hosts: [ratings]\nhttp:\n- fault:\n    abort:\n      percentage: {value: 100.0}\n      httpStatus: 500\n  route:\n  - destination: {host: ratings, subset: v1}\n  retries: {attempts: 3, perTryTimeout: 2s}\n  timeout: 10s\n",
        ),
    )
    .expect("converts");
    let r = route_of(&abort);
    assert_eq!(
        r.http[0]
            .fault
            .as_ref()
            .and_then(|f| f.abort.as_ref())
            .and_then(|a| a.http_status),
        Some(500)
    );
    assert_eq!(r.http[0].retries.as_ref().map(|x| x.attempts), Some(3));
    assert!(abort.rule.expect("rule").validate().is_ok());
}

#[test]
fn bookinfo_destination_rule_converts() {
    let m = Mapping::default();
    let c = destination_rule(
        &m,
        "default",
        "reviews",
        &spec(
            "host: reviews\ntrafficPolicy:\n  loadBalancer: {simple: RANDOM}\nsubsets:\n- name: v1\n  labels: {version: v1}\n- name: v2\n  labels: {version: v2}\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n- name: v3\n  labels: {version: v3}\n",
        ),
    )
    .expect("converts");
    assert!(c.unsupported.is_empty(), "{:?}", c.unsupported);
    let rule = c.rule.expect("rule");
    let p = rule.as_policy().expect("policy");
    assert_eq!(p.host.as_str(), REVIEWS);
    assert_eq!(p.subsets.len(), 3);
    assert_eq!(
        p.traffic_policy
            .as_ref()
            .and_then(|t| t.load_balancer.as_ref())
            .and_then(|l| l.simple),
        Some(SimpleLb::Random)
    );
}

#[test]
fn fields_sextant_does_not_serve_are_named_and_the_rest_is_served() {
    let m = Mapping::default();
    let c = virtual_service(
        &m,
        "shop",
        "cart",
        &spec(
            "hosts: [cart, cart.other, cart.example.com]\nexportTo: [.]\ngateways: [mesh, edge]\n\
             tcp: [{match: [{port: 9000, sourceLabels: {app: x}}], route: [{destination: {host: cart}}]},\n\
                   {match: [{port: 9001}, {port: 9002, sourceLabels: {app: y}}], route: [{destination: {host: cart}}]}]\n\
             http:\n- match:\n  - queryParams: {debug: {exact: '1'}}\n    uri: {prefix: /debug}\n  - uri: {prefix: /api}\n  corsPolicy: {allowOrigins: [{exact: '*'}]}\n  \
               route:\n  - destination: {host: cart}\n    headers: {request: {set: {x: y}}}\n",
        ),
    )
    .expect("converts");
    let mut got = c.unsupported.clone();
    got.sort();
    assert_eq!(
        got,
        [
            "spec.http[0].corsPolicy",
            "spec.http[0].match[0] (a condition of it is not served: the match is not served)",
            "spec.http[0].match[0].queryParams",
            "spec.http[0].route[0].headers",
            "spec.tcp[0] (every match has a condition that is not served: the route is not served)",
            "spec.tcp[0].match[0].sourceLabels",
            "spec.tcp[1].match[1] (a condition of it is not served: the match is not served)",
            "spec.tcp[1].match[1].sourceLabels",
        ]
    );
    let r = route_of(&c);
    // A match that lost a condition is not served (it would hold for more
    // requests than written); a route left with none is not served.
    assert_eq!(r.http[0].matches.len(), 1);
    // TCP routes are served, their hosts expanded as HTTP routes' are.
    assert_eq!(r.tcp.len(), 1);
    assert_eq!(
        r.tcp[0].route[0].destination.host.as_str(),
        "cart.shop.svc.cluster.local"
    );
    assert_eq!(r.tcp[0].matches[0].port, Some(9001));
    // exportTo is served: the rule applies to its own namespace's proxies.
    assert_eq!(r.export_to, ["."]);
    let hosts: Vec<&str> = r.hosts.iter().map(|h| h.as_str()).collect();
    assert_eq!(
        hosts,
        [
            "cart.shop.svc.cluster.local",
            "cart.other.svc.cluster.local",
            "cart.example.com"
        ]
    );
    assert_eq!(
        r.http[0].matches[0].uri,
        Some(StringMatch::Prefix("/api".into()))
    );

    // Only for gateways: bound to them (edge of its own namespace), to no
    // Service; its hosts are the names requests carry there, a bare name
    // still a Service's.
    let edge = virtual_service(
        &m,
        "shop",
        "edge",
        &spec("hosts: [cart, shop.example.com, '*.example.com']\ngateways: [edge, other/public]\nhttp: [{route: [{destination: {host: cart}}]}]\n"),
    )
    .expect("converts");
    let rule = edge.rule.expect("a rule");
    assert!(
        rule.hosts.is_empty(),
        "bound to a Service: {:?}",
        rule.hosts
    );
    let route = rule.as_route().expect("a route rule");
    assert_eq!(route.gateways, ["edge", "other/public"]);
    assert!(!route.for_mesh());
    let hosts: Vec<&str> = route.hosts.iter().map(|h| h.as_str()).collect();
    assert_eq!(
        hosts,
        [
            "cart.shop.svc.cluster.local",
            "shop.example.com",
            "*.example.com"
        ]
    );

    let dr = destination_rule(
        &m,
        "shop",
        "cart",
        &spec("host: cart\ntrafficPolicy:\n  tls: {mode: ISTIO_MUTUAL}\n  loadBalancer: {simple: LEAST_REQUEST, localityLbSetting: {enabled: true}}\n"),
    )
    .expect("converts");
    assert_eq!(
        dr.unsupported,
        ["spec.trafficPolicy.loadBalancer.localityLbSetting"]
    );
    let rule = dr.rule.expect("rule");
    let policy = rule.as_policy().expect("a policy");
    assert_eq!(
        policy
            .traffic_policy
            .as_ref()
            .and_then(|t| t.tls.as_ref())
            .map(|t| t.mode),
        Some(sextant_core::rules::TlsMode::IstioMutual),
        "trafficPolicy.tls is served"
    );
}

#[test]
fn a_malformed_spec_is_an_error_that_says_where() {
    let m = Mapping::default();
    let e = virtual_service(
        &m,
        "shop",
        "bad",
        &spec("hosts: [cart]\nhttp: [{timeout: 5}]\n"),
    )
    .expect_err("a number is not a duration");
    assert!(e.starts_with("spec.http[0].timeout"), "{e}");
}

/// Istio's documented Sidecar examples: a namespace-wide default and a
/// workload-selected one with an ingress part Sextant does not serve.
#[test]
fn sidecars_convert_to_scope_rules() {
    let c = sidecar(
        "prod-us1",
        "default",
        &spec(
            r#"
egress:
- hosts:
  - "prod-us1/*"
  - "prod-apis/*"
  - "istio-system/*"
"#,
        ),
    )
    .expect("converts");
    assert!(c.unsupported.is_empty(), "{:?}", c.unsupported);
    let rule = c.rule.expect("a rule");
    assert_eq!(rule.key.to_string(), "scope prod-us1/default");
    let scope = rule.as_scope().expect("scope");
    assert!(scope.workload_selector.is_empty());
    let hosts: Vec<String> = scope.hosts.iter().map(ToString::to_string).collect();
    assert_eq!(hosts, ["prod-us1/*", "prod-apis/*", "istio-system/*"]);

    let c = sidecar(
        "prod-us1",
        "ratings",
        &spec(
            r#"
workloadSelector:
  labels:
    app: ratings
ingress:
- port: {number: 9080, protocol: HTTP, name: somename}
  defaultEndpoint: unix:///var/run/someuds.sock
egress:
- port: {number: 9080, protocol: HTTP, name: egresshttp}
  hosts: ["prod-us1/*"]
- hosts: ["./*", "*/*.example.com"]
outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"#,
        ),
    )
    .expect("converts");
    assert_eq!(
        c.unsupported,
        [
            "spec.egress[0].port",
            "spec.ingress[0] (defaultEndpoint \"unix:///var/run/someuds.sock\": unix domain sockets are not served)"
        ]
    );
    let rule = c.rule.expect("a rule");
    let scope = rule.as_scope().expect("scope");
    assert_eq!(scope.workload_selector["app"], "ratings");
    assert_eq!(scope.hosts.len(), 3);
    assert_eq!(
        scope.outbound,
        Some(sextant_core::rules::OutboundMode::RegistryOnly)
    );

    // Only an outbound policy: a rule with the default hosts; an egress
    // proxy is not served.
    let c = sidecar(
        "a",
        "b",
        &spec("outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: egress.example}}"),
    )
    .expect("converts");
    let rule = c.rule.expect("a rule");
    let scope = rule.as_scope().expect("scope");
    assert!(scope.hosts.is_empty());
    assert_eq!(
        scope.outbound,
        Some(sextant_core::rules::OutboundMode::AllowAny)
    );
    assert_eq!(c.unsupported, ["spec.outboundTrafficPolicy.egressProxy"]);
    assert!(rule.validate().is_ok());

    // Only ingress listeners: a rule with the default hosts; what is not
    // served of a listener is named.
    let c = sidecar(
        "a",
        "b",
        &spec(
            "ingress:\n- port: {number: 9080, protocol: HTTP, name: http}\n  defaultEndpoint: 127.0.0.1:8080\n  captureMode: NONE\n",
        ),
    )
    .expect("converts");
    assert_eq!(c.unsupported, ["spec.ingress[0].captureMode"]);
    let rule = c.rule.expect("a rule");
    let scope = rule.as_scope().expect("scope");
    assert!(scope.hosts.is_empty());
    assert_eq!(scope.ingress.len(), 1);
    assert_eq!(scope.ingress[0].port.number, 9080);
    assert_eq!(
        scope.ingress[0].deliver(),
        Ok(sextant_core::rules::Deliver::Loopback(
            "127.0.0.1:8080".parse().expect("addr")
        ))
    );
    assert!(rule.validate().is_ok());

    // No egress: no rule of its own, said so; a malformed host: an error.
    let c = sidecar("a", "b", &spec("workloadSelector: {labels: {app: x}}")).expect("converts");
    assert!(c.rule.is_none() && c.unsupported[0].contains("egress"));
    let e = sidecar("a", "b", &spec("egress: [{hosts: [\"reviews\"]}]")).expect_err("refused");
    assert!(e.contains("NAMESPACE/HOST"), "{e}");
}

#[test]
fn an_allow_rule_that_loses_a_part_matches_nothing_and_a_deny_rule_keeps_the_rest() {
    let allow = authorization_policy(
        "shop",
        "p",
        &spec("rules:\n- from: [{source: {requestPrincipals: [\"*\"]}}]\n- from: [{source: {namespaces: [shop]}}]\n"),
    )
    .expect("converts");
    let rule = allow.rule.expect("rule");
    let a = rule.as_authz().expect("authz");
    assert_eq!(
        a.rules.len(),
        1,
        "the first rule would match anyone without its part"
    );
    assert_eq!(a.rules[0].from[0].source.namespaces, ["shop"]);
    assert!(
        allow
            .unsupported
            .iter()
            .any(|u| u.contains("matches nothing")),
        "{:?}",
        allow.unsupported
    );

    let deny = authorization_policy(
        "shop",
        "p",
        &spec("action: DENY\nrules:\n- from: [{source: {requestPrincipals: [\"*\"], namespaces: [evil]}}]\n"),
    )
    .expect("converts");
    let rule = deny.rule.expect("rule");
    assert_eq!(rule.as_authz().expect("authz").rules.len(), 1);
}
