use super::*;
use crate::rules::{PolicyEntry, RouteEntry};

fn route(yaml: &str) -> Rule {
    let doc = format!("name: r\nhosts: [reviews.default.svc]\n{yaml}");
    serde_yaml_ng::from_str::<RouteEntry>(&doc)
        .unwrap_or_else(|e| panic!("{e}: {doc}"))
        .into()
}

fn policy(yaml: &str) -> Rule {
    let doc = format!("name: p\nhost: reviews.default.svc\n{yaml}");
    serde_yaml_ng::from_str::<PolicyEntry>(&doc)
        .unwrap_or_else(|e| panic!("{e}: {doc}"))
        .into()
}

/// The fields named by the rule's problems, with their messages.
fn problems(rule: &Rule) -> Vec<(String, String)> {
    match rule.validate() {
        Ok(()) => Vec::new(),
        Err(RuleProblems(p)) => p.into_iter().map(|p| (p.field, p.problem)).collect(),
    }
}

#[track_caller]
fn rejects(rule: Rule, field: &str, says: &str) {
    let found = problems(&rule);
    assert!(
        found.iter().any(|(f, p)| f == field && p.contains(says)),
        "expected {field}: ...{says}..., got {found:?}"
    );
}

const TO_V1: &str = "route: [{destination: {host: reviews.default.svc, subset: v1}}]";

#[test]
fn good_rules_pass() {
    let r = route(&format!(
        "http:\n\
         - name: canary\n  match: [{{headers: {{x-user: {{exact: alice}}}}, uri: {{prefix: /api}}, method: {{exact: GET}}, port: 9080}}]\n  \
           route:\n  - {{destination: {{host: reviews.default.svc, subset: v2}}, weight: 90}}\n  - {{destination: {{host: reviews.default.svc, subset: v1, port: {{number: 9080}}}}, weight: 10}}\n  \
           timeout: 2s\n  retries: {{attempts: 3, perTryTimeout: 500ms, retryOn: '5xx,connect-failure,unavailable'}}\n  \
           fault: {{delay: {{fixedDelay: 1s, percentage: {{value: 10}}}}, abort: {{grpcStatus: UNAVAILABLE, percentage: 5}}}}\n  \
           mirror: {{host: shadow.default.svc}}\n  mirrorPercentage: {{value: 50}}\n  \
           rewrite: {{uri: /v2, authority: reviews.internal}}\n  \
           headers: {{request: {{set: {{x-a: b}}, remove: [x-b]}}, response: {{add: {{x-c: d}}}}}}\n\
         - {TO_V1}\n\
         - redirect: {{uri: /new, redirectCode: 302}}\n  match: [{{withoutHeaders: {{x-debug: {{}}}}, uri: {{regex: '/v[0-9]+/.*'}}}}]\n"
    ));
    assert_eq!(problems(&r), vec![]);
    let p = policy(
        "trafficPolicy:\n  loadBalancer: {consistentHash: {httpHeaderName: x-user, minimumRingSize: 1024}}\n  \
         connectionPool: {tcp: {maxConnections: 1, connectTimeout: 1s}, http: {http1MaxPendingRequests: 1, maxRetries: 3}}\n  \
         outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}\n  \
         portLevelSettings: [{port: {number: 9080}, loadBalancer: {simple: LEAST_REQUEST}}]\n\
         subsets:\n- {name: v1, labels: {version: v1}}\n- {name: v2, labels: {version: v2}, trafficPolicy: {loadBalancer: {simple: RANDOM}}}\n",
    );
    assert_eq!(problems(&p), vec![]);
}

#[test]
fn route_problems_name_the_field() {
    let table: Vec<(Rule, &str, &str)> = vec![
        (
            route(
                "http:\n- route: [{destination: {host: a.svc}, weight: 60}, {destination: {host: b.svc}, weight: 30}]",
            ),
            "http[0].route",
            "weights sum to 90, not 100",
        ),
        (
            route(
                "http:\n- route: [{destination: {host: a.svc}, weight: 60}, {destination: {host: b.svc}}]",
            ),
            "http[0].route",
            "every destination a weight, or none",
        ),
        (
            route("http:\n- match: [{uri: {exact: /}}]"),
            "http[0]",
            "needs a route",
        ),
        (
            route(&format!("http:\n- {TO_V1}\n  redirect: {{uri: /x}}")),
            "http[0]",
            "both a route and a redirect",
        ),
        (
            route(&format!(
                "http:\n- {TO_V1}\n  match: [{{uri: {{regex: '(?=a)b'}}}}]"
            )),
            "http[0].match[0].uri",
            "look-around",
        ),
        (
            route(&format!(
                "http:\n- {TO_V1}\n  match: [{{headers: {{x: {{regex: '(a)\\1'}}}}}}]"
            )),
            "http[0].match[0].headers.x",
            "not valid RE2",
        ),
        (
            route(&format!(
                "http:\n- {TO_V1}\n  match: [{{uri: {{regex: '[a'}}}}]"
            )),
            "http[0].match[0].uri",
            "not valid RE2",
        ),
        (
            route(&format!(
                "http:\n- {TO_V1}\n  match: [{{uri: {{prefix: api}}}}]"
            )),
            "http[0].match[0].uri",
            "must start with '/'",
        ),
        (
            route(&format!(
                "http:\n- {TO_V1}\n  match: [{{headers: {{X-User: {{exact: a}}}}}}]"
            )),
            "http[0].match[0].headers.X-User",
            "lowercase",
        ),
        (
            route(&format!("http:\n- {TO_V1}\n  timeout: 0s")),
            "http[0].timeout",
            "longer than zero",
        ),
        (
            route(&format!(
                "http:\n- {TO_V1}\n  retries: {{attempts: 2, perTryTimeout: 0ms}}"
            )),
            "http[0].retries.perTryTimeout",
            "longer than zero",
        ),
        (
            route(&format!(
                "http:\n- {TO_V1}\n  retries: {{attempts: 2, retryOn: '5xx,sometimes'}}"
            )),
            "http[0].retries.retryOn",
            "unknown condition \"sometimes\"",
        ),
        (
            route(&format!(
                "http:\n- {TO_V1}\n  fault: {{abort: {{httpStatus: 503, percentage: 120}}}}"
            )),
            "http[0].fault.abort.percentage",
            "120 is not a percentage",
        ),
        (
            route(&format!(
                "http:\n- {TO_V1}\n  fault: {{abort: {{grpcStatus: BROKEN}}}}"
            )),
            "http[0].fault.abort.grpcStatus",
            "not a gRPC status",
        ),
        (
            route(&format!(
                "http:\n- {TO_V1}\n  fault: {{abort: {{httpStatus: 503, grpcStatus: UNAVAILABLE}}}}"
            )),
            "http[0].fault.abort",
            "not both",
        ),
        (
            route(&format!(
                "http:\n- {TO_V1}\n  fault: {{delay: {{fixedDelay: 1s, percentage: -1}}}}"
            )),
            "http[0].fault.delay.percentage",
            "-1 is not a percentage",
        ),
        (
            route(&format!("http:\n- {TO_V1}\n  mirrorPercentage: 10")),
            "http[0].mirrorPercentage",
            "no mirror",
        ),
        (
            route("http:\n- route: [{destination: {host: a.svc, subset: V1}}]"),
            "http[0].route[0].destination.subset",
            "DNS label",
        ),
        (
            route("http:\n- route: [{destination: {host: A.svc, port: {number: 70000}}}]"),
            "http[0].route[0].destination.host",
            "must be lowercase",
        ),
        (
            route("http:\n- route: [{destination: {host: a.svc, port: {number: 70000}}}]"),
            "http[0].route[0].destination.port.number",
            "not in 1-65535",
        ),
        (
            route("http:\n- redirect: {uri: /x, redirectCode: 200}"),
            "http[0].redirect.redirectCode",
            "not a redirect status",
        ),
        (
            route(&format!(
                "http:\n- {TO_V1}\n  headers: {{request: {{set: {{':path': /x}}}}}}"
            )),
            "http[0].headers.request",
            "pseudo-header",
        ),
    ];
    let empty: Rule = serde_yaml_ng::from_str::<RouteEntry>("name: r\nhosts: []")
        .expect("parses")
        .into();
    rejects(empty, "hosts", "at least one host");
    for (rule, field, says) in table {
        rejects(rule, field, says);
    }
}

#[test]
fn policy_problems_name_the_field() {
    for (yaml, field, says) in [
        (
            "subsets: [{name: v1, labels: {v: '1'}}, {name: v1, labels: {v: '2'}}]",
            "subsets[1].name",
            "defined twice",
        ),
        ("subsets: [{name: 'v|1'}]", "subsets[0].name", "DNS label"),
        (
            "trafficPolicy: {loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}}",
            "trafficPolicy.loadBalancer",
            "not both",
        ),
        (
            "trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x, useSourceIp: true}}}",
            "trafficPolicy.loadBalancer.consistentHash",
            "exactly one",
        ),
        (
            "trafficPolicy: {connectionPool: {tcp: {maxConnections: 0}}}",
            "trafficPolicy.connectionPool.tcp.maxConnections",
            "at least 1",
        ),
        (
            "trafficPolicy: {outlierDetection: {maxEjectionPercent: 101}}",
            "trafficPolicy.outlierDetection.maxEjectionPercent",
            "more than 100",
        ),
        (
            "trafficPolicy: {outlierDetection: {interval: 0s}}",
            "trafficPolicy.outlierDetection.interval",
            "longer than zero",
        ),
        (
            "trafficPolicy: {portLevelSettings: [{port: {number: 80}}, {port: {number: 80}}]}",
            "trafficPolicy.portLevelSettings[1]",
            "two settings",
        ),
        (
            "subsets: [{name: v1, trafficPolicy: {loadBalancer: {}}}]",
            "subsets[0].trafficPolicy.loadBalancer",
            "needs simple or consistentHash",
        ),
    ] {
        rejects(policy(yaml), field, says);
    }
}

#[test]
fn unknown_fields_and_bad_values_fail_to_parse() {
    for doc in [
        "name: r\nhosts: [a.svc]\nhttp: [{routes: []}]",
        "name: r\nhosts: [a.svc]\ngateway: [mesh]",
        "name: r\nhosts: [a.svc]\nhttp: [{timeout: 5}]",
        "name: r\nhosts: [a.svc]\nhttp: [{match: [{uri: {exact: /, prefix: /}}]}]",
    ] {
        assert!(serde_yaml_ng::from_str::<RouteEntry>(doc).is_err(), "{doc}");
    }
    for doc in [
        "name: p\nhost: a.svc\ntrafficPolicy: {loadBalancer: {simple: MAGLEV}}",
        "name: p\nhost: a.svc\nsubset: []",
    ] {
        assert!(
            serde_yaml_ng::from_str::<PolicyEntry>(doc).is_err(),
            "{doc}"
        );
    }
}

#[test]
fn effective_policy_follows_istio_precedence() {
    let p = policy(
        "trafficPolicy:\n  loadBalancer: {simple: ROUND_ROBIN}\n  outlierDetection: {consecutive5xxErrors: 5}\n  \
         portLevelSettings: [{port: {number: 9080}, loadBalancer: {simple: LEAST_REQUEST}}]\n\
         subsets:\n- {name: v2, labels: {version: v2}, trafficPolicy: {loadBalancer: {simple: RANDOM}}}\n",
    );
    let dp = p.as_policy().expect("policy");
    use crate::rules::SimpleLb::*;
    let lb = |port, subset: Option<&str>| {
        let s = subset.and_then(|n| dp.subsets.iter().find(|s| s.name == n));
        dp.effective(port, s).load_balancer.and_then(|l| l.simple)
    };
    assert_eq!(lb(8080, None), Some(RoundRobin));
    assert_eq!(lb(9080, None), Some(LeastRequest));
    assert_eq!(lb(9080, Some("v2")), Some(Random));
    assert!(
        dp.effective(9080, dp.subsets.first())
            .outlier_detection
            .is_some()
    );
}

#[test]
fn tls_settings_need_what_their_mode_uses_and_nothing_else() {
    rejects(
        policy("trafficPolicy: {tls: {mode: MUTUAL, caCertificates: /ca.pem}}"),
        "trafficPolicy.tls",
        "MUTUAL needs clientCertificate and privateKey",
    );
    rejects(
        policy("trafficPolicy: {tls: {mode: SIMPLE, clientCertificate: /c.pem}}"),
        "trafficPolicy.tls",
        "use MUTUAL",
    );
    rejects(
        policy("trafficPolicy: {tls: {mode: ISTIO_MUTUAL, caCertificates: /ca.pem}}"),
        "trafficPolicy.tls.caCertificates",
        "uses no files",
    );
    rejects(
        policy(
            "trafficPolicy: {portLevelSettings: [{port: {number: 80}, tls: {mode: MUTUAL, credentialName: web-cert}}]}",
        ),
        "trafficPolicy.portLevelSettings[0].tls.credentialName",
        "not served for sidecars",
    );
    assert!(
        problems(&policy(
            "trafficPolicy: {tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}}"
        ))
        .is_empty()
    );
    // An unknown mode is a decoding error, as any unknown value.
    let doc = "name: p\nhost: reviews.default.svc\ntrafficPolicy: {tls: {mode: STRICT}}\n";
    assert!(serde_yaml_ng::from_str::<PolicyEntry>(doc).is_err());
}

#[test]
fn ingress_listeners_are_checked_by_field() {
    let scope = |yaml: &str| -> Rule {
        let doc = format!("name: s\nnamespace: shop\n{yaml}");
        serde_yaml_ng::from_str::<crate::rules::ScopeEntry>(&doc)
            .unwrap_or_else(|e| panic!("{e}: {doc}"))
            .into()
    };
    let good = scope(
        "ingress:\n- port: {number: 9080, name: http}\n  defaultEndpoint: 127.0.0.1:8080\n- port: {number: 9090, protocol: GRPC}\n  defaultEndpoint: 0.0.0.0:9091\n- port: {number: 7000, protocol: TCP}\n",
    );
    assert_eq!(problems(&good), []);
    let s = good.as_scope().expect("scope");
    assert_eq!(
        s.ingress[0].protocol(),
        crate::Protocol::Http,
        "from the name"
    );
    assert_eq!(s.ingress[1].protocol(), crate::Protocol::Grpc);
    assert_eq!(
        s.ingress[1].deliver(),
        Ok(crate::rules::Deliver::Instance(9091))
    );
    assert_eq!(
        s.ingress[2].deliver(),
        Ok(crate::rules::Deliver::Loopback(
            "127.0.0.1:7000".parse().expect("addr")
        )),
        "no default endpoint: the same port on loopback"
    );
    rejects(
        scope("ingress:\n- port: {number: 9080}\n  defaultEndpoint: unix:///run/app.sock\n"),
        "ingress[0].defaultEndpoint",
        "unix domain sockets",
    );
    rejects(
        scope("ingress:\n- port: {number: 9080}\n  defaultEndpoint: 10.0.0.1:8080\n"),
        "ingress[0].defaultEndpoint",
        "only loopback",
    );
    rejects(
        scope("ingress:\n- port: {number: 9080}\n- port: {number: 9080}\n"),
        "ingress[1].port.number",
        "another ingress listener",
    );
    rejects(
        scope("ingress:\n- port: {number: 70000}\n"),
        "ingress[0].port.number",
        "1-65535",
    );
}

fn gateway(yaml: &str) -> Rule {
    serde_yaml_ng::from_str::<crate::rules::GatewayEntry>(yaml)
        .expect("gateway")
        .into()
}

#[test]
fn gateways_and_the_rules_bound_to_them_are_checked() {
    let good = gateway(
        "name: public\nnamespace: edge\nlisteners:\n- {name: http, port: 8080, protocol: HTTP, hostname: '*.example.com'}\n",
    );
    assert!(good.validate().is_ok(), "{:?}", good.validate());
    rejects(
        gateway("name: g\nlisteners: []\n"),
        "listeners",
        "at least one listener",
    );
    rejects(
        gateway(
            "name: g\nlisteners:\n- {name: a, port: 80, protocol: HTTP}\n- {name: b, port: 80, protocol: HTTP}\n",
        ),
        "listeners[1].hostname",
        "another HTTP listener of this port has this hostname",
    );
    let by_name = gateway(
        "name: g\nlisteners:\n- {name: a, port: 80, protocol: HTTP, hostname: a.example.com}\n- {name: b, port: 80, protocol: HTTP}\n",
    );
    assert!(by_name.validate().is_ok(), "{:?}", by_name.validate());
    rejects(
        gateway(
            "name: g\nlisteners:\n- {name: a, port: 80, protocol: TCP}\n- {name: b, port: 80, protocol: TCP}\n",
        ),
        "listeners[1].port",
        "TCP shares none",
    );
    rejects(
        gateway(
            "name: g\nlisteners:\n- {name: tls, port: 443, protocol: TLS, tls: {certificateRefs: [a]}}\n",
        ),
        "listeners[0].tls",
        "passes it through",
    );
    rejects(
        gateway(
            "name: g\nlisteners:\n- {name: db, port: 5432, protocol: TCP, hostname: db.example.com}\n",
        ),
        "listeners[0].hostname",
        "a TCP listener has no hostname",
    );
    let l4 = gateway(
        "name: g\nlisteners:\n- {name: a, port: 443, protocol: TLS, hostname: a.example.com}\n- {name: b, port: 443, protocol: TLS, hostname: b.example.com}\n- {name: db, port: 5432, protocol: TCP}\n",
    );
    assert!(l4.validate().is_ok(), "{:?}", l4.validate());
    rejects(
        gateway("name: g\nlisteners:\n- {name: https, port: 443, protocol: HTTPS}\n"),
        "listeners[0].tls",
        "needs certificateRefs",
    );
    rejects(
        gateway(
            "name: g\nlisteners:\n- {name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [a/b/c]}}\n",
        ),
        "listeners[0].tls.certificateRefs[0]",
        "NAME or NAMESPACE/NAME",
    );
    // HTTPS listeners share a port by hostname; HTTP shares none.
    let shared = |second: &str| {
        gateway(&format!(
            "name: g\nlisteners:\n- {{name: a, port: 443, protocol: HTTPS, hostname: a.example.com, tls: {{certificateRefs: [a]}}}}\n- {second}\n"
        ))
    };
    let ok = shared(
        "{name: b, port: 443, protocol: HTTPS, hostname: b.example.com, tls: {certificateRefs: [b]}}",
    );
    assert!(ok.validate().is_ok(), "{:?}", ok.validate());
    rejects(
        shared(
            "{name: b, port: 443, protocol: HTTPS, hostname: a.example.com, tls: {certificateRefs: [b]}}",
        ),
        "listeners[1].hostname",
        "another HTTPS listener of this port",
    );
    rejects(
        shared("{name: b, port: 443, protocol: HTTP}"),
        "listeners[1].port",
        "listeners of one protocol",
    );
    rejects(
        gateway("name: g\nlisteners:\n- {name: Bad_Name, port: 80, protocol: HTTP}\n"),
        "listeners[0].name",
        "Bad_Name",
    );
    // A rule for a gateway may name wildcard hosts; one for the mesh not.
    let raw = |yaml: &str| -> Rule {
        serde_yaml_ng::from_str::<RouteEntry>(yaml)
            .expect("route")
            .into()
    };
    let at_gateway = raw(
        "name: r\ngateways: [edge/public]\nhosts: ['*.example.com']\nhttp: [{route: [{destination: {host: web.svc}}]}]",
    );
    assert!(at_gateway.validate().is_ok(), "{:?}", at_gateway.validate());
    assert!(at_gateway.hosts.is_empty(), "binds to no service");
    assert!(at_gateway.per_proxy());
    rejects(
        raw("name: r\nhosts: ['*.example.com']\nhttp: [{route: [{destination: {host: web.svc}}]}]"),
        "hosts[0]",
        "*.example.com",
    );
    rejects(
        raw(
            "name: r\ngateways: [a/b/c/d]\nhosts: [x.svc]\nhttp: [{route: [{destination: {host: web.svc}}]}]",
        ),
        "gateways[0]",
        "NAMESPACE/NAME",
    );
    rejects(
        raw(
            "name: r\ngateways: ['edge/public:0']\nhosts: [x.svc]\nhttp: [{route: [{destination: {host: web.svc}}]}]",
        ),
        "gateways[0]",
        ":PORT",
    );
    let narrowed = raw(
        "name: r\ngateways: ['edge/public/https:443']\nhosts: [x.example.com]\nhttp: [{route: [{destination: {host: web.svc}}]}]",
    );
    assert!(narrowed.validate().is_ok(), "{:?}", narrowed.validate());
}

/// A credential must hold PEM text; what is wrong with a key is said
/// without the key.
#[test]
fn credentials_hold_pem_and_their_keys_stay_out_of_messages() {
    let cred = |chain: &str, key: &str| {
        Rule::credential(
            "edge",
            "cert",
            crate::rules::gateway::Credential {
                certificate_chain: chain.into(),
                private_key: crate::Secret::new(key),
                granted_to: Vec::new(),
            },
        )
    };
    let chain = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let key = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";
    assert!(cred(chain, key).validate().is_ok());
    rejects(cred("hello", key), "certificateChain", "not a PEM");
    let problems = cred(chain, "hunter2-the-key")
        .validate()
        .expect_err("refused");
    let said = format!("{problems:?}");
    assert!(said.contains("privateKey"), "{said}");
    assert!(!said.contains("hunter2"), "the key in a message: {said}");
    rejects(
        cred(chain, &"k".repeat(super::MAX_PEM_BYTES + 1)),
        "privateKey",
        "more than",
    );
}
