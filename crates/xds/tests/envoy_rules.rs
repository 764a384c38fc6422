//! Traffic rules through a real Envoy 1.40, SotW and delta: each rule
//! feature is checked by what Envoy does with real traffic (a split
//! measured over a thousand requests, retries counted at the backend,
//! timeouts and faults timed, ejection, stickiness, overflow), and Envoy
//! never rejects an update. Bounds on waits only guard against hangs;
//! timing assertions are loose and only separate "the feature acted" from
//! "it did not".
#![allow(clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use sextant_core::{Endpoint, MemoryRules, Protocol, Service};
use sextant_testkit::peers::{Behaviour, Envoy, HttpBackend, http_get, http_request};

/// A service on port 8080 with one endpoint per backend, labelled
/// `version=LABEL`.
fn service(host: &str, backends: &[(&HttpBackend, &str)]) -> Service {
    let mut s = Service::new(host).with_port("http", 8080, Protocol::Http);
    for (b, version) in backends {
        let mut ep = Endpoint::new(b.addr.ip().into()).with_port("http", u32::from(b.addr.port()));
        ep.labels.insert("version".into(), (*version).into());
        s = s.with_endpoint(ep);
    }
    s
}

struct Rig {
    h: Harness,
    rules: MemoryRules,
    envoy: Envoy,
    outbound: SocketAddr,
}

async fn rig(services: Vec<Service>, delta: bool) -> Rig {
    let rules = MemoryRules::new("memory/rules");
    let node = format!("rules-{}", if delta { "delta" } else { "sotw" });
    let (h, envoy, outbound) = sextant_and_envoy(services, &node, delta, Some(rules.clone())).await;
    Rig {
        h,
        rules,
        envoy,
        outbound,
    }
}

/// Polls until `request` answers with `want` (bounded); how long it took.
async fn until<F, Fut>(what: &str, envoy: &Envoy, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if probe().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not within 10 s\n{}", envoy.log());
}

/// Bodies of `n` requests to `host` with `headers`, counted.
async fn count(
    outbound: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let r = http_request(outbound, host, path, headers)
            .await
            .expect("request");
        let key = if r.status == 200 {
            r.body.lines().next().unwrap_or("").to_owned()
        } else {
            format!("status {}", r.status)
        };
        *seen.entry(key).or_default() += 1;
    }
    seen
}

async fn rules_shape_traffic(delta: bool) {
    let v1 = HttpBackend::start_with(
        "v1",
        Behaviour {
            echo: true,
            ..Default::default()
        },
    )
    .await;
    let v2 = HttpBackend::start("v2").await;
    let flaky = HttpBackend::start_with(
        "flaky",
        Behaviour {
            fail_first: 1,
            ..Default::default()
        },
    )
    .await;
    let slow = HttpBackend::start_with(
        "slow",
        Behaviour {
            delay: Duration::from_secs(3),
            ..Default::default()
        },
    )
    .await;
    let plain = HttpBackend::start("plain").await;
    let shadow = HttpBackend::start("shadow").await;
    let good = HttpBackend::start("good").await;
    let bad = HttpBackend::start_with(
        "bad",
        Behaviour {
            status: 500,
            ..Default::default()
        },
    )
    .await;
    let sticky: Vec<HttpBackend> = {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(HttpBackend::start(&format!("sticky-{i}")).await);
        }
        v
    };
    let held = HttpBackend::start_with(
        "held",
        Behaviour {
            delay: Duration::from_millis(1500),
            ..Default::default()
        },
    )
    .await;

    let services = vec![
        service("reviews.test.svc", &[(&v1, "v1"), (&v2, "v2")]),
        service("flaky.test.svc", &[(&flaky, "v1")]),
        service("slow.test.svc", &[(&slow, "v1")]),
        service("faulty.test.svc", &[(&plain, "v1")]),
        service("shadow.test.svc", &[(&shadow, "v1")]),
        service("outlier.test.svc", &[(&good, "v1"), (&bad, "v1")]),
        service(
            "sticky.test.svc",
            &sticky.iter().map(|b| (b, "v1")).collect::<Vec<_>>(),
        ),
        service("breaker.test.svc", &[(&held, "v1")]),
    ];
    let r = rig(services, delta).await;
    let out = r.outbound;
    until("services routed", &r.envoy, || async {
        http_get(out, "reviews.test.svc", "/")
            .await
            .is_ok_and(|(s, _)| s == 200)
    })
    .await;

    // A canary added while traffic flows: how long until Envoy routes by it.
    r.rules.insert(policy_rule(
        "name: reviews\nhost: reviews.test.svc\nsubsets:\n- {name: v1, labels: {version: v1}}\n- {name: v2, labels: {version: v2}}\n",
    ));
    r.rules.insert(route_rule(
        "name: reviews\nhosts: [reviews.test.svc]\nhttp:\n\
         - match: [{headers: {x-user: {exact: alice}}}]\n  route: [{destination: {host: reviews.test.svc, subset: v2}}]\n\
         - match: [{uri: {prefix: /only-v1}}]\n  route: [{destination: {host: reviews.test.svc, subset: v1}}]\n  \
           rewrite: {uri: /rewritten}\n  headers: {request: {set: {x-added: yes}}, response: {add: {x-resp: one}}}\n\
         - match: [{uri: {prefix: /moved}}]\n  redirect: {uri: /elsewhere, redirectCode: 302}\n\
         - route:\n  - {destination: {host: reviews.test.svc, subset: v1}, weight: 90}\n  - {destination: {host: reviews.test.svc, subset: v2}, weight: 10}\n",
    ));
    let took = until("the header route", &r.envoy, || async {
        http_request(out, "reviews.test.svc", "/", &[("x-user", "alice")])
            .await
            .is_ok_and(|r| r.body == "v2")
            && count(out, "reviews.test.svc", "/", &[("x-user", "alice")], 10)
                .await
                .len()
                == 1
    })
    .await;
    eprintln!("rules in force at Envoy {took:?} after they were added (delta: {delta})");

    // Header match: alice always to v2.
    let alice = count(out, "reviews.test.svc", "/", &[("x-user", "alice")], 50).await;
    assert_eq!(alice, BTreeMap::from([("v2".to_owned(), 50)]), "alice");

    // 90/10 over a thousand requests lands within 3 points.
    let split = count(out, "reviews.test.svc", "/", &[], 1000).await;
    let to_v1 = split.get("v1").copied().unwrap_or(0);
    let to_v2 = split.get("v2").copied().unwrap_or(0);
    eprintln!("split over 1000 requests: v1 {to_v1}, v2 {to_v2}");
    assert_eq!(to_v1 + to_v2, 1000, "{split:?}");
    assert!(
        (870..=930).contains(&to_v1),
        "90/10 split measured {to_v1}/{to_v2}"
    );

    // Path prefix, prefix rewrite, request and response headers.
    let resp = http_request(out, "reviews.test.svc", "/only-v1/page", &[])
        .await
        .expect("request");
    assert_eq!(resp.status, 200);
    let mut lines = resp.body.lines();
    assert_eq!(lines.next(), Some("v1"));
    let head = lines.collect::<Vec<_>>().join("\n").to_ascii_lowercase();
    assert!(
        head.starts_with("get /rewritten/page "),
        "prefix rewritten: {head}"
    );
    assert!(head.contains("x-added: yes"), "request header set: {head}");
    assert_eq!(resp.header("x-resp"), Some("one"), "response header added");

    // Redirect.
    let moved = http_request(out, "reviews.test.svc", "/moved/x", &[])
        .await
        .expect("request");
    assert_eq!(moved.status, 302);
    assert!(
        moved
            .header("location")
            .is_some_and(|l| l.ends_with("/elsewhere")),
        "{:?}",
        moved.headers
    );

    // Retries: the first attempt fails with 503, the retry succeeds.
    r.rules.insert(route_rule(
        "name: flaky\nhosts: [flaky.test.svc]\nhttp:\n- route: [{destination: {host: flaky.test.svc}}]\n  retries: {attempts: 2, retryOn: 5xx}\n",
    ));
    // Timeout: the backend answers after 3 s; the rule gives up at 300 ms.
    r.rules.insert(route_rule(
        "name: slow\nhosts: [slow.test.svc]\nhttp:\n- route: [{destination: {host: slow.test.svc}}]\n  timeout: 300ms\n",
    ));
    // Faults: every request delayed 400 ms on /delay; half aborted with 418
    // on /abort.
    r.rules.insert(route_rule(
        "name: faulty\nhosts: [faulty.test.svc]\nhttp:\n\
         - match: [{uri: {prefix: /delay}}]\n  route: [{destination: {host: faulty.test.svc}}]\n  fault: {delay: {fixedDelay: 400ms, percentage: {value: 100}}}\n\
         - match: [{uri: {prefix: /abort}}]\n  route: [{destination: {host: faulty.test.svc}}]\n  fault: {abort: {httpStatus: 418, percentage: {value: 50}}}\n\
         - route: [{destination: {host: faulty.test.svc}}]\n  mirror: {host: shadow.test.svc}\n",
    ));
    r.rules.insert(policy_rule(
        "name: outlier\nhost: outlier.test.svc\ntrafficPolicy:\n  outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 100}\n",
    ));
    r.rules.insert(policy_rule(
        "name: sticky\nhost: sticky.test.svc\ntrafficPolicy:\n  loadBalancer: {consistentHash: {httpHeaderName: x-user}}\n",
    ));
    r.rules.insert(policy_rule(
        "name: breaker\nhost: breaker.test.svc\ntrafficPolicy:\n  connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}}\n",
    ));
    let took = until("the policies", &r.envoy, || async {
        let (_, dump) = r
            .envoy
            .admin_get("/config_dump?resource=dynamic_active_clusters")
            .await;
        ["outlier_detection", "circuit_breakers", "RING_HASH"]
            .iter()
            .all(|k| dump.contains(k))
    })
    .await;
    eprintln!(
        "updated clusters active at Envoy {took:?} after the policies were added (delta: {delta})"
    );
    until("the timeout rule", &r.envoy, || async {
        http_get(out, "slow.test.svc", "/")
            .await
            .is_ok_and(|(s, _)| s == 504)
    })
    .await;

    let before = flaky.hits();
    let (status, body) = http_get(out, "flaky.test.svc", "/").await.expect("request");
    assert_eq!(
        (status, body.as_str()),
        (200, "flaky"),
        "the retry succeeded"
    );
    assert_eq!(flaky.hits() - before, 2, "two attempts reached the backend");

    let start = Instant::now();
    let (status, _) = http_get(out, "slow.test.svc", "/").await.expect("request");
    let took = start.elapsed();
    eprintln!("timeout 300ms: 504 after {took:?}");
    assert_eq!(status, 504);
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_millis(2500),
        "{took:?}"
    );

    let start = Instant::now();
    let (status, _) = http_get(out, "faulty.test.svc", "/delay")
        .await
        .expect("request");
    let took = start.elapsed();
    eprintln!("fault delay 400ms: answered after {took:?}");
    assert_eq!(status, 200);
    assert!(took >= Duration::from_millis(380), "{took:?}");
    let aborted = count(out, "faulty.test.svc", "/abort", &[], 400).await;
    let teapots = aborted.get("status 418").copied().unwrap_or(0);
    eprintln!("fault abort 50%: {teapots} of 400 aborted");
    assert!((140..=260).contains(&teapots), "{aborted:?}");

    // Mirror: the shadow service sees a copy of each request.
    let shadow_before = shadow.hits();
    count(out, "faulty.test.svc", "/", &[], 20).await;
    until("mirrored copies", &r.envoy, || async {
        shadow.hits() - shadow_before >= 20
    })
    .await;

    // Outlier detection: the backend answering 500 is ejected.
    let first = count(out, "outlier.test.svc", "/", &[], 20).await;
    let bad_hits = bad.hits();
    let after = count(out, "outlier.test.svc", "/", &[], 50).await;
    assert_eq!(
        after,
        BTreeMap::from([("good".to_owned(), 50)]),
        "before: {first:?}"
    );
    assert_eq!(bad.hits(), bad_hits, "the ejected endpoint got no traffic");

    // Ring hash on a header: one user, one backend; users spread.
    let mut owners = BTreeSet::new();
    for user in 0..12 {
        let name = format!("user-{user}");
        let seen = count(out, "sticky.test.svc", "/", &[("x-user", &name)], 8).await;
        assert_eq!(seen.len(), 1, "{name} reached {seen:?}");
        owners.extend(seen.into_keys());
    }
    assert!(owners.len() >= 2, "twelve users all on {owners:?}");

    // Circuit breaker: one connection, one pending request; the rest
    // overflow with 503.
    let mut calls = Vec::new();
    for _ in 0..8 {
        calls.push(tokio::spawn(http_get(out, "breaker.test.svc", "/")));
    }
    let mut statuses = Vec::new();
    for c in calls {
        statuses.push(c.await.expect("join").map(|(s, _)| s).unwrap_or(0));
    }
    assert!(
        statuses.contains(&200) && statuses.contains(&503),
        "{statuses:?}"
    );
    let overflow = r
        .envoy
        .stat_sum("breaker.test.svc.upstream_rq_pending_overflow")
        .await;
    assert!(overflow > 0, "no overflow counted; statuses {statuses:?}");

    // Nothing was rejected along the way.
    assert_eq!(
        r.envoy.stat_sum("update_rejected").await,
        0,
        "{}",
        r.envoy.log()
    );
    let (_, dump) = r.envoy.admin_get("/config_dump").await;
    assert!(
        !dump.contains("error_state"),
        "a rejected update in the config dump"
    );
    drop(r.h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_shape_traffic_sotw() {
    rules_shape_traffic(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_shape_traffic_delta() {
    rules_shape_traffic(true).await;
}
