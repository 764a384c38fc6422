//! Consul's router, splitter and resolver, shaped as its documentation
//! writes them, converted.

use super::*;
use sextant_core::RuleSpec;

fn json<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_json::from_str(text).expect("json")
}

const WEB: &str = "web.service.consul";

#[test]
fn subset_filters_become_label_selectors_where_they_can() {
    let ok = |f: &str, want: &[(&str, &str)]| {
        let got = filter_labels(f).unwrap_or_else(|e| panic!("{f}: {e}"));
        let want: Labels = want
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        assert_eq!(got, want, "{f}");
    };
    ok("Service.Meta.version == v1", &[("version", "v1")]);
    ok("Service.Meta.version == \"v2\"", &[("version", "v2")]);
    ok("Service.Tags contains \"canary\"", &[("canary", "")]);
    ok("Service.Tags contains \"track=beta\"", &[("track", "beta")]);
    ok(
        "Service.Meta.version == v2 and Service.Tags contains canary",
        &[("version", "v2"), ("canary", "")],
    );
    ok("", &[]);
    for bad in [
        "Service.Meta.version == v1 or Service.Meta.version == v2",
        "not Service.Tags contains canary",
        "Service.Meta.version != v1",
        "Node.Meta.rack == r1",
        "Service.Port == 8080",
    ] {
        assert!(filter_labels(bad).is_err(), "{bad}");
    }
}

#[test]
fn decimal_percentages_round_to_a_hundred() {
    assert_eq!(percentages(&[90.0, 10.0]), [90, 10]);
    assert_eq!(percentages(&[33.33, 33.33, 33.34]), [33, 33, 34]);
    assert_eq!(percentages(&[50.5, 49.5]), [51, 49]);
    assert_eq!(percentages(&[0.0, 0.0]), [0, 0]);
}

#[test]
fn a_router_splitter_and_resolver_chain_becomes_a_route_rule_and_a_policy() {
    let router: Router = json(
        r#"{"Kind":"service-router","Name":"web","Routes":[
            {"Match":{"HTTP":{"Header":[{"Name":"x-debug","Exact":"1"}]}},
             "Destination":{"ServiceSubset":"v2"}},
            {"Match":{"HTTP":{"PathPrefix":"/admin","Methods":["GET","POST"],"QueryParam":[{"Name":"x","Present":true}]}},
             "Destination":{"Service":"admin","PrefixRewrite":"/","RequestTimeout":"5s","NumRetries":3,"RetryOnConnectFailure":true,"RetryOnStatusCodes":[503]}}
        ]}"#,
    );
    let splitter: Splitter = json(
        r#"{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":90,"ServiceSubset":"v1"},{"Weight":10,"ServiceSubset":"v2"}]}"#,
    );
    let resolver: Resolver = json(
        r#"{"Kind":"service-resolver","Name":"web","DefaultSubset":"v1","ConnectTimeout":"3s",
            "Subsets":{"v1":{"Filter":"Service.Meta.version == v1"},"v2":{"Filter":"Service.Meta.version == v2"},
                       "odd":{"Filter":"Service.Meta.version == v1 or Service.Meta.version == v3"},
                       "fuzzy":{"Filter":"Service.Meta.version matches \"v.*\""}},
            "LoadBalancer":{"Policy":"ring_hash","RingHashConfig":{"MinimumRingSize":1024},"HashPolicies":[{"Field":"header","FieldValue":"X-User"}]},
            "Failover":{"*":{"Datacenters":["dc2"]}}}"#,
    );
    let c = convert(
        &Mapping::default(),
        "web",
        Some(&router),
        Some(&splitter),
        Some(&resolver),
        Chain::default(),
    )
    .expect("converts");
    let mut got = c.unsupported.clone();
    got.sort();
    assert_eq!(got.len(), 3, "{got:#?}");
    assert!(
        got[0].starts_with("service-resolver web: Failover"),
        "{got:#?}"
    );
    assert!(
        got[1].starts_with("service-resolver web: Subsets.fuzzy.Filter")
            && got[1].contains("matches"),
        "{got:#?}"
    );
    assert_eq!(
        got[2],
        "service-router web: Routes[1].Match.HTTP.QueryParam"
    );

    let route = c.route.expect("a route rule");
    assert!(route.validate().is_ok(), "{:?}", route.validate());
    let RuleSpec::Route(r) = &route.spec else {
        panic!()
    };
    assert_eq!(r.hosts[0].as_str(), WEB);
    assert_eq!(r.http.len(), 3, "two routes and the split");
    assert_eq!(
        r.http[0].matches[0].headers["x-debug"].0,
        Some(StringMatch::Exact("1".into()))
    );
    assert_eq!(r.http[0].route[0].destination.subset.as_deref(), Some("v2"));
    let admin = &r.http[1];
    assert_eq!(
        admin.route[0].destination.host.as_str(),
        "admin.service.consul"
    );
    assert_eq!(
        admin.matches[0].method,
        Some(StringMatch::Regex("GET|POST".into()))
    );
    assert_eq!(admin.timeout.map(|t| t.0.as_secs()), Some(5));
    let retries = admin.retries.as_ref().expect("retries");
    assert_eq!(
        (retries.attempts, retries.retry_on.as_deref()),
        (3, Some("connect-failure,503"))
    );
    let split: Vec<(Option<&str>, Option<u32>)> = r.http[2]
        .route
        .iter()
        .map(|d| (d.destination.subset.as_deref(), d.weight))
        .collect();
    assert_eq!(split, [(Some("v1"), Some(90)), (Some("v2"), Some(10))]);

    let policy = c.policy.expect("a policy");
    assert!(policy.validate().is_ok(), "{:?}", policy.validate());
    let p = policy.as_policy().expect("policy");
    let names: Vec<&str> = p.subsets.iter().map(|s| s.name.as_str()).collect();
    // `or` is not a label selector: the services side marks the instances.
    assert_eq!(names, ["odd", "v1", "v2"]);
    assert_eq!(
        p.subsets[0].labels,
        Labels::from([(subset_label("odd"), "true".to_owned())])
    );
    let tp = p.traffic_policy.as_ref().expect("settings");
    let hash = tp
        .load_balancer
        .as_ref()
        .and_then(|l| l.consistent_hash.as_ref())
        .expect("ring hash");
    assert_eq!(hash.http_header_name.as_deref(), Some("x-user"));
    assert_eq!(
        tp.connection_pool
            .as_ref()
            .and_then(|c| c.tcp.as_ref())
            .and_then(|t| t.connect_timeout)
            .map(|d| d.0.as_secs()),
        Some(3)
    );
}

#[test]
fn a_default_subset_alone_routes_everything_to_it() {
    let resolver: Resolver =
        json(r#"{"DefaultSubset":"v2","Subsets":{"v2":{"Filter":"Service.Tags contains v2"}}}"#);
    let c = convert(
        &Mapping::default(),
        "web",
        None,
        None,
        Some(&resolver),
        Chain::default(),
    )
    .expect("converts");
    let route = c.route.expect("a route rule");
    let RuleSpec::Route(r) = &route.spec else {
        panic!()
    };
    assert_eq!(r.http.len(), 1);
    assert_eq!(r.http[0].route[0].destination.subset.as_deref(), Some("v2"));
    assert!(c.unsupported.is_empty());
    // No entries, no rules.
    let none = convert(
        &Mapping::default(),
        "web",
        None,
        None,
        None,
        Chain::default(),
    )
    .expect("converts");
    assert!(none.route.is_none() && none.policy.is_none());
}

/// Consul's discovery chain: a route to another service goes on through
/// that service's splitter (and a split to a service without a subset
/// through its resolver's default subset), weights multiplied.
#[test]
fn a_route_to_another_service_follows_its_splitter_and_resolver() {
    let router: Router = json(
        r#"{"Kind":"service-router","Name":"web","Routes":[
            {"Match":{"HTTP":{"PathPrefix":"/api"}},"Destination":{"Service":"api"}},
            {"Match":{"HTTP":{"PathPrefix":"/pinned"}},"Destination":{"Service":"api","ServiceSubset":"v1"}}
        ]}"#,
    );
    let splitters: BTreeMap<String, Splitter> = [
        (
            "api".to_owned(),
            json(r#"{"Kind":"service-splitter","Name":"api","Splits":[{"Weight":75,"ServiceSubset":"v1"},{"Weight":25,"Service":"api-next"}]}"#),
        ),
        (
            "web".to_owned(),
            json(r#"{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":50},{"Weight":50,"Service":"api"}]}"#),
        ),
    ]
    .into();
    let resolvers: BTreeMap<String, Resolver> = [(
        "api-next".to_owned(),
        json(r#"{"Kind":"service-resolver","Name":"api-next","DefaultSubset":"canary","Subsets":{"canary":{"Filter":"Service.Meta.track == canary"}}}"#),
    )]
    .into();
    let chain = Chain {
        splitters: Some(&splitters),
        resolvers: Some(&resolvers),
    };
    let c = convert(
        &Mapping::default(),
        "web",
        Some(&router),
        splitters.get("web"),
        None,
        chain,
    )
    .expect("converts");
    let rule = c.route.expect("a route rule");
    let route = rule.as_route().expect("route");
    let ends = |i: usize| -> Vec<(String, Option<String>, Option<u32>)> {
        route.http[i]
            .route
            .iter()
            .map(|d| {
                (
                    d.destination.host.to_string(),
                    d.destination.subset.clone(),
                    d.weight,
                )
            })
            .collect()
    };
    let api = Mapping::default().hostname("api").expect("host");
    let next = Mapping::default().hostname("api-next").expect("host");
    let web = Mapping::default().hostname("web").expect("host");
    // /api: api's splitter, and api-next's default subset.
    assert_eq!(
        ends(0),
        [
            (api.to_string(), Some("v1".to_owned()), Some(75)),
            (next.to_string(), Some("canary".to_owned()), Some(25)),
        ]
    );
    // A subset named: no chain.
    assert_eq!(ends(1), [(api.to_string(), Some("v1".to_owned()), None)]);
    // web's own splitter: half to web, half to api's chain (37.5 + 12.5).
    assert_eq!(
        ends(2),
        [
            (web.to_string(), None, Some(50)),
            (api.to_string(), Some("v1".to_owned()), Some(38)),
            (next.to_string(), Some("canary".to_owned()), Some(12)),
        ]
    );
    assert!(rule.validate().is_ok(), "{:?}", rule.validate());
}

#[test]
fn a_loop_of_splitters_is_cut() {
    let splitters: BTreeMap<String, Splitter> = [
        (
            "a".to_owned(),
            json(
                r#"{"Kind":"service-splitter","Name":"a","Splits":[{"Weight":100,"Service":"b"}]}"#,
            ),
        ),
        (
            "b".to_owned(),
            json(
                r#"{"Kind":"service-splitter","Name":"b","Splits":[{"Weight":100,"Service":"a"}]}"#,
            ),
        ),
    ]
    .into();
    let chain = Chain {
        splitters: Some(&splitters),
        resolvers: None,
    };
    let c = convert(
        &Mapping::default(),
        "a",
        None,
        splitters.get("a"),
        None,
        chain,
    )
    .expect("converts");
    let rule = c.route.expect("a route rule");
    assert_eq!(rule.as_route().expect("route").http[0].route.len(), 1);
}
