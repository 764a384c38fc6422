//! The Consul registry against the Consul API double (itself checked against
//! py-consul). Waits are bounded guards against hangs; nothing is timed.
#![allow(clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sextant_aggregate::{Aggregator, AggregatorConfig, SyncState};
use sextant_consul::{ConsulConfig, ConsulRegistry};
use sextant_core::recover::Backoff;
use sextant_core::{Event, Health, Registry};
use sextant_testkit::consul::ConsulDouble;
use sextant_testkit::events::{apply_of, next, until, watch_until};

fn config(double: &ConsulDouble) -> ConsulConfig {
    ConsulConfig {
        addr: double.url(),
        wait: Duration::from_secs(60),
        min_interval: Duration::from_millis(10),
        backoff: Backoff::new(Duration::from_millis(100), Duration::from_millis(500)),
        ..Default::default()
    }
}

fn instance(
    double: &ConsulDouble,
    node: &str,
    id: &str,
    name: &str,
    ip: &str,
    port: u16,
    status: &str,
) {
    double.register(
        node,
        "10.99.0.1",
        json!({ "ID": id, "Service": name, "Address": ip, "Port": port, "Meta": { "protocol": "http" } }),
        vec![json!({ "CheckID": format!("check-{id}"), "Status": status })],
    );
}

#[tokio::test]
async fn services_appear_and_health_flips_converge() {
    let double = ConsulDouble::start().await;
    instance(&double, "n1", "web-1", "web", "10.0.0.1", 8080, "passing");
    instance(&double, "n2", "web-2", "web", "10.0.0.2", 8080, "passing");
    let mut w = ConsulRegistry::new("consul/dc1", config(&double)).watch();
    match next(&mut w).await {
        Ok(Event::Reset(s)) => {
            assert_eq!(s.len(), 1);
            assert_eq!(s[0].hostname.as_str(), "web.service.consul");
            assert_eq!(s[0].endpoints.len(), 2);
            assert_eq!(s[0].endpoints[0].locality.region, "dc1");
        }
        other => panic!("{other:?}"),
    }
    // The blocking query for web wakes on the check change.
    double.set_check("n2", "check-web-2", "critical");
    let s = apply_of(
        &until(&mut w, |e| apply_of(e, "web.service.consul").is_some()).await,
        "web.service.consul",
    )
    .expect("apply");
    let health: Vec<Health> = s.endpoints.iter().map(|e| e.health).collect();
    assert_eq!(health, [Health::Healthy, Health::Unhealthy]);

    // A new service, then its removal from the catalog.
    instance(&double, "n1", "api-1", "api", "10.0.1.1", 9090, "passing");
    let s = apply_of(
        &until(&mut w, |e| apply_of(e, "api.service.consul").is_some()).await,
        "api.service.consul",
    )
    .expect("apply");
    assert_eq!(s.ports[0].port, 9090);
    double.deregister("n1", "api-1");
    let e = until(&mut w, |e| matches!(e, Ok(Event::Delete(_)))).await;
    assert!(matches!(e, Ok(Event::Delete(h)) if h.as_str() == "api.service.consul"));
}

#[tokio::test]
async fn a_restart_that_sends_indexes_backwards_is_followed() {
    let double = ConsulDouble::start().await;
    for i in 0..5 {
        instance(
            &double,
            "n1",
            &format!("web-{i}"),
            "web",
            &format!("10.0.0.{}", i + 1),
            8080,
            "passing",
        );
    }
    let mut w = ConsulRegistry::new("consul/dc1", config(&double)).watch();
    next(&mut w).await.expect("reset");
    double.restart_with_lower_index();
    // Changes after the restart still arrive.
    double.set_check("n1", "check-web-0", "critical");
    let s = apply_of(
        &until(&mut w, |e| {
            apply_of(e, "web.service.consul")
                .is_some_and(|s| s.endpoints[0].health == Health::Unhealthy)
        })
        .await,
        "web.service.consul",
    )
    .expect("apply");
    assert_eq!(s.endpoints.len(), 5);
}

#[tokio::test]
async fn a_bad_token_is_a_clear_error_and_the_right_one_works() {
    let double = ConsulDouble::start().await;
    instance(&double, "n1", "web-1", "web", "10.0.0.1", 8080, "passing");
    double.require_token("s3cret");
    let mut w = ConsulRegistry::new(
        "consul/dc1",
        ConsulConfig {
            token: Some("wrong".into()),
            ..config(&double)
        },
    )
    .watch();
    match next(&mut w).await {
        Err(e) => {
            assert!(e.makes_stale());
            let msg = e.chain();
            assert!(
                msg.contains("403") && msg.contains("--consul-token"),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }
    let mut w = ConsulRegistry::new(
        "consul/dc1",
        ConsulConfig {
            token: Some("s3cret".into()),
            ..config(&double)
        },
    )
    .watch();
    assert!(matches!(next(&mut w).await, Ok(Event::Reset(s)) if s.len() == 1));
}

#[tokio::test]
async fn malformed_json_and_errors_keep_the_last_good_state_until_recovery() {
    let double = ConsulDouble::start().await;
    instance(&double, "n1", "web-1", "web", "10.0.0.1", 8080, "passing");
    let registry = ConsulRegistry::new("consul/dc1", config(&double));
    let (agg, handle) = Aggregator::new(
        AggregatorConfig::default(),
        vec![Arc::new(registry) as Arc<dyn Registry>],
    )
    .expect("agg");
    tokio::spawn(agg.run());
    handle.ready().await.expect("ready");

    double.fail_with(Some((200, "{ not json")));
    let mut status = handle.status();
    let st = watch_until(&mut status, "stale", |s| {
        s.registries[0].state == SyncState::Stale
    })
    .await;
    let err = st.registries[0]
        .last_error
        .as_ref()
        .expect("error")
        .message
        .clone();
    assert!(err.contains("malformed JSON"), "{err}");
    assert_eq!(
        handle.view().borrow().endpoint_count(),
        1,
        "last-known-good kept"
    );

    double.fail_with(Some((503, "no leader")));
    double.fail_with(None);
    watch_until(&mut status, "recovered", |s| {
        s.registries[0].state == SyncState::Synced
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_services_load_and_one_flip_costs_one_query() {
    let double = ConsulDouble::start().await;
    for s in 0..1000 {
        for i in 0..10 {
            let id = format!("svc{s}-{i}");
            double.register(
                &format!("node{i}"),
                &format!("10.{}.{}.{}", i, s / 250, s % 250 + 1),
                json!({ "ID": id, "Service": format!("svc{s}"), "Port": 8080 }),
                vec![json!({ "CheckID": format!("check-{id}"), "Status": "passing" })],
            );
        }
    }
    let mut w = ConsulRegistry::new("consul/dc1", config(&double)).watch();
    match next(&mut w).await {
        Ok(Event::Reset(s)) => {
            assert_eq!(s.len(), 1000);
            assert_eq!(s.iter().map(|s| s.endpoints.len()).sum::<usize>(), 10_000);
        }
        other => panic!("{other:?}"),
    }
    // Wait until every watcher is parked in its blocking query: two catalog
    // queries, a read and a blocking query for each of the two config entry
    // kinds the services side follows, then the same per service.
    let expected = 2 + 2 * 2 + 2 * 1000;
    for _ in 0..200 {
        if double.requests().len() >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        double.requests().len(),
        expected,
        "every service read once, then watched"
    );
    let count = |reqs: &[String], path: &str| reqs.iter().filter(|r| r.as_str() == path).count();
    let before = double.requests();
    double.set_check("node3", "check-svc7-3", "critical");
    let s = apply_of(
        &until(&mut w, |e| apply_of(e, "svc7.service.consul").is_some()).await,
        "svc7.service.consul",
    )
    .expect("apply");
    assert_eq!(s.endpoints[3].health, Health::Unhealthy);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = double.requests();
    let new: Vec<&String> = after[before.len()..].iter().collect();
    assert_eq!(
        new.iter()
            .filter(|r| r.starts_with("GET "))
            .map(|r| r.as_str())
            .collect::<Vec<_>>(),
        ["GET /v1/health/service/svc7"],
        "one flip, one query: {new:?}"
    );
    assert_eq!(
        count(&after, "GET /v1/catalog/services"),
        count(&before, "GET /v1/catalog/services"),
        "no re-list"
    );
}

/// The registry contract every adapter runs, with the agent failing (500)
/// and recovering.
#[tokio::test]
async fn keeps_the_registry_contract() {
    let mut double = ConsulDouble::start().await;
    let r = ConsulRegistry::new("consul/contract", config(&double));
    sextant_testkit::contract::registry_contract(&r, Some(&mut double)).await;
}

/// Config entries as rules: read at start, a change wakes the blocking
/// query at once (the wait is 60 s), what cannot be served is reported with
/// its entry, and deleting the entries removes the rules.
#[tokio::test]
async fn config_entries_become_rules_and_follow_changes() {
    use sextant_core::{RuleKind, RuleSource};
    let double = ConsulDouble::start().await;
    double.set_config_entry(json!({
        "Kind": "service-resolver", "Name": "web", "DefaultSubset": "v1",
        "Subsets": {
            "v1": { "Filter": "Service.Meta.version == v1" },
            "v2": { "Filter": "Service.Meta.version == v2" }
        }
    }));
    double.set_config_entry(json!({
        "Kind": "service-splitter", "Name": "web",
        "Splits": [ { "Weight": 50, "ServiceSubset": "v1" }, { "Weight": 50, "ServiceSubset": "v2" } ]
    }));
    let registry = ConsulRegistry::new("consul/dc1", config(&double));
    let mut rules = registry.watch_rules();
    let kinds =
        |rs: &[sextant_core::Rule]| -> Vec<RuleKind> { rs.iter().map(|r| r.key.kind).collect() };
    match next(&mut rules).await {
        Ok(Event::Reset(rs)) => assert_eq!(kinds(&rs), [RuleKind::Route, RuleKind::Policy]),
        other => panic!("{other:?}"),
    }

    let started = std::time::Instant::now();
    double.set_config_entry(json!({
        "Kind": "service-splitter", "Name": "web",
        "Splits": [ { "Weight": 100, "ServiceSubset": "v2" } ]
    }));
    // After the first read, only what changed: the route.
    match next(&mut rules).await {
        Ok(Event::Apply(r)) => {
            let route = r.as_route().expect("route");
            assert_eq!(route.http[0].route.len(), 1);
            assert_eq!(
                route.http[0].route[0].destination.subset.as_deref(),
                Some("v2")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "woken by the change, not the wait"
    );

    double.set_config_entry(json!({
        "Kind": "service-router", "Name": "web",
        "Routes": [ { "Match": { "HTTP": { "PathPrefix": "/a", "QueryParam": [ { "Name": "x", "Present": true } ] } },
                      "Destination": { "ServiceSubset": "v1" } } ]
    }));
    match next(&mut rules).await {
        Ok(Event::Apply(r)) => assert_eq!(r.as_route().expect("route").http.len(), 2),
        other => panic!("{other:?}"),
    }
    match next(&mut rules).await {
        Err(sextant_core::Error::InvalidObject { object, reason }) => {
            assert_eq!(object, "service-router web");
            assert!(reason.contains("QueryParam"), "{reason}");
        }
        other => panic!("{other:?}"),
    }

    // Deleting the entries deletes both rules and retracts the problem.
    for kind in ["service-router", "service-splitter", "service-resolver"] {
        double.delete_config_entry(kind, "web");
    }
    let (mut deleted, mut resolved) = (Vec::new(), false);
    while deleted.len() < 2 || !resolved {
        match next(&mut rules).await {
            Ok(Event::Delete(k)) => deleted.push(k.kind),
            Ok(Event::Resolved(o)) => {
                assert_eq!(o, "service-router web");
                resolved = true;
            }
            Ok(Event::Apply(_)) | Err(_) => continue,
            other => panic!("{other:?}"),
        }
    }
    deleted.sort();
    assert_eq!(deleted, [RuleKind::Route, RuleKind::Policy]);
}

/// A Consul whose config entries answer 404 (Consul before 1.5, or a
/// Consul-compatible registry) or 403 (a token that may not read them):
/// services flow, rules are an empty set, one log line says so; when the
/// entries are served later they are picked up.
#[tokio::test]
async fn config_entries_that_are_not_served_do_not_stop_the_registry() {
    use sextant_core::RuleSource;
    for (status, body) in [
        (404, "404 page not found"),
        (
            403,
            "Permission denied: token lacks permission 'service:read'",
        ),
    ] {
        let double = ConsulDouble::start().await;
        double.refuse_config_entries(Some((status, body)));
        instance(&double, "n1", "web-1", "web", "10.0.0.1", 8080, "passing");
        let mut c = config(&double);
        c.config_entries_retry = Duration::from_millis(200);
        let registry = Arc::new(ConsulRegistry::new("consul/dc1", c));
        let (agg, handle) = Aggregator::with_rules(
            AggregatorConfig::default(),
            vec![registry.clone() as Arc<dyn Registry>],
            vec![registry.clone() as Arc<dyn RuleSource>],
        )
        .expect("aggregator");
        tokio::spawn(agg.run());
        let view = tokio::time::timeout(Duration::from_secs(20), handle.ready())
            .await
            .unwrap_or_else(|_| panic!("{status}: not ready: the registry stayed syncing"))
            .expect("ready");
        assert!(
            view.services.contains_key("web.service.consul"),
            "{status}: services flow"
        );
        let st = handle.status().borrow().clone();
        assert!(
            st.registries.iter().all(|r| r.state == SyncState::Synced),
            "{status}: {st:?}"
        );
        // Served later: a resolver's subsets arrive as a policy.
        double.refuse_config_entries(None);
        double.set_config_entry(json!({
            "Kind": "service-resolver", "Name": "web",
            "Subsets": { "v1": { "Filter": "Service.Meta.version == v1" } }
        }));
        let mut view = handle.view();
        watch_until(&mut view, "the resolver's policy", |v| {
            v.services
                .get("web.service.consul")
                .is_some_and(|ms| ms.policy().is_some())
        })
        .await;
    }
}

/// The rule-source contract (the double failing every request, then
/// answering again), and the problems contract on both streams: a
/// service whose instance has no usable address, then fixed; a router that
/// does not decode, then fixed.
#[tokio::test]
async fn keeps_the_rule_source_and_problems_contracts() {
    use sextant_core::RuleSource;
    let mut double = ConsulDouble::start().await;
    let r = ConsulRegistry::new("consul/contract", config(&double));
    sextant_testkit::contract::rule_source_contract(&r, Some(&mut double)).await;

    struct NoAddress<'a>(&'a ConsulDouble);
    impl sextant_testkit::contract::Problem for NoAddress<'_> {
        async fn spoil(&mut self) {
            instance(
                self.0,
                "n1",
                "bad-1",
                "bad",
                "not an address",
                80,
                "passing",
            );
        }
        async fn mend(&mut self) {
            instance(self.0, "n1", "bad-1", "bad", "10.0.0.9", 80, "passing");
        }
    }
    sextant_testkit::contract::problems_contract(
        "consul services",
        r.watch(),
        &mut NoAddress(&double),
    )
    .await;

    struct BadRouter<'a>(&'a ConsulDouble);
    impl sextant_testkit::contract::Problem for BadRouter<'_> {
        async fn spoil(&mut self) {
            self.0.set_config_entry(json!({
                "Kind": "service-router", "Name": "web", "Routes": "not a list"
            }));
        }
        async fn mend(&mut self) {
            self.0.set_config_entry(json!({
                "Kind": "service-router", "Name": "web", "Routes": []
            }));
        }
    }
    sextant_testkit::contract::problems_contract(
        "consul rules",
        r.watch_rules(),
        &mut BadRouter(&double),
    )
    .await;
}

/// `service-defaults` sets a service's protocol, and a resolver subset whose
/// filter is not a label selector (`or`, `not`, node fields) is evaluated
/// on each instance: the passing ones carry the subset's label, which the
/// subset selects; editing the resolver relabels at once.
#[tokio::test]
async fn service_defaults_and_evaluated_subset_filters_shape_the_service() {
    let double = ConsulDouble::start().await;
    for (id, version, tags) in [
        ("web-1", "v1", vec!["primary"]),
        ("web-2", "v2", vec![]),
        ("web-3", "v3", vec!["canary"]),
    ] {
        double.register(
            "n1",
            "10.99.0.1",
            json!({ "ID": id, "Service": "web", "Address": "10.0.0.1", "Port": 8080,
                    "Tags": tags, "Meta": { "version": version } }),
            vec![json!({ "CheckID": format!("check-{id}"), "Status": "passing" })],
        );
    }
    double
        .set_config_entry(json!({ "Kind": "service-defaults", "Name": "web", "Protocol": "http" }));
    double.set_config_entry(json!({
        "Kind": "service-resolver", "Name": "web",
        "Subsets": {
            "v1": { "Filter": "Service.Meta.version == v1" },
            "new": { "Filter": "Service.Meta.version == v2 or Service.Tags contains canary" },
        }
    }));
    let mut w = ConsulRegistry::new("consul/dc1", config(&double)).watch();
    let label = "consul-subset.sextant.io/new";
    let marked = |s: &sextant_core::Service| -> Vec<bool> {
        s.endpoints
            .iter()
            .map(|e| e.labels.get(label).is_some_and(|v| v == "true"))
            .collect()
    };
    match next(&mut w).await {
        Ok(Event::Reset(s)) => {
            assert_eq!(
                s[0].ports[0].protocol,
                sextant_core::Protocol::Http,
                "{s:?}"
            );
            assert_eq!(s[0].ports[0].name, "http");
            assert_eq!(marked(&s[0]), [false, true, true]);
            // The label-selector subset needs no mark.
            assert!(s[0].endpoints.iter().all(|e| e.labels.len() <= 3), "{s:?}");
        }
        other => panic!("{other:?}"),
    }
    // The policy selects the mark.
    let rules = ConsulRegistry::new("consul/dc1", config(&double));
    let mut r = sextant_core::RuleSource::watch_rules(&rules);
    match next(&mut r).await {
        Ok(Event::Reset(rules)) => {
            let policy = rules
                .iter()
                .find_map(sextant_core::Rule::as_policy)
                .expect("policy");
            let new = policy
                .subsets
                .iter()
                .find(|s| s.name == "new")
                .expect("subset");
            assert_eq!(new.labels.get(label).map(String::as_str), Some("true"));
        }
        other => panic!("{other:?}"),
    }

    // Editing the resolver re-evaluates at once (the wait is 60 s).
    double.set_config_entry(json!({
        "Kind": "service-resolver", "Name": "web",
        "Subsets": { "new": { "Filter": "not (Service.Meta.version == v2)" } }
    }));
    let s = apply_of(
        &until(&mut w, |e| apply_of(e, "web.service.consul").is_some()).await,
        "web.service.consul",
    )
    .expect("apply");
    assert_eq!(marked(&s), [true, false, true]);
    // Without service-defaults the protocol falls back to the instances' meta (none: TCP).
    double.delete_config_entry("service-defaults", "web");
    let s = apply_of(
        &until(&mut w, |e| apply_of(e, "web.service.consul").is_some()).await,
        "web.service.consul",
    )
    .expect("apply");
    assert_eq!(s.ports[0].protocol, sextant_core::Protocol::Tcp);
}

/// One service whose health answer grows past the size limit is skipped
/// and reported like a malformed one, its last good instances still
/// served; the session goes on, and other services still follow.
#[tokio::test]
async fn an_oversized_answer_skips_its_service_only() {
    let double = ConsulDouble::start().await;
    instance(&double, "n1", "web-1", "web", "10.0.0.1", 8080, "passing");
    instance(&double, "n1", "api-1", "api", "10.0.1.1", 8080, "passing");
    let mut c = config(&double);
    c.max_response_bytes = 4096;
    let (agg, handle) = Aggregator::new(
        AggregatorConfig::default(),
        vec![Arc::new(ConsulRegistry::new("consul/dc1", c)) as Arc<dyn Registry>],
    )
    .expect("aggregator");
    tokio::spawn(agg.run());
    handle.ready().await.expect("ready");
    // Forty instances: web's health answer grows past 4 KiB.
    for i in 2..42 {
        instance(
            &double,
            "n1",
            &format!("web-{i}"),
            "web",
            &format!("10.0.0.{i}"),
            8080,
            "passing",
        );
    }
    let mut status = handle.status();
    let s = watch_until(&mut status, "web reported", |s| {
        !s.registries[0].problems.is_empty()
    })
    .await;
    let problem = &s.registries[0].problems[0];
    assert!(
        problem.message.contains("over the limit of 4096 bytes")
            && problem.object.as_deref() == Some("consul service web"),
        "{problem:?}"
    );
    assert_eq!(
        s.registries[0].state,
        SyncState::Synced,
        "the session goes on"
    );
    // Another service still follows.
    instance(&double, "n1", "api-2", "api", "10.0.1.2", 8080, "passing");
    let mut view = handle.view();
    let v = watch_until(&mut view, "api's second instance", |v| {
        v.services
            .get("api.service.consul")
            .is_some_and(|ms| ms.service.endpoints.len() == 2)
    })
    .await;
    assert_eq!(
        v.services
            .get("web.service.consul")
            .map(|ms| ms.service.endpoints.len()),
        Some(1),
        "web's last good state is served"
    );
}
