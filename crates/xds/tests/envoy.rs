//! A real Envoy 1.40 (from scripts/install-peers.sh) configured only by
//! Sextant over ADS, SotW and delta: traffic goes where the registry says.
//! Loops below poll until a condition holds, with a bound that only guards
//! against hangs; nothing is timed.
#![allow(clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use sextant_core::{Endpoint, Health, Protocol, Service};
use sextant_testkit::peers::{Envoy, HttpBackend, bodies_until, http_get};
use sextant_xds::ResourceType;

fn api(backend: &HttpBackend) -> Service {
    one_backend("api.test.svc", backend)
}

fn web(backends: &[&HttpBackend]) -> Service {
    let mut s = Service::new("web.test.svc").with_port("http", 8080, Protocol::Http);
    for b in backends {
        s = s.with_endpoint(
            Endpoint::new(b.addr.ip().into()).with_port("http", u32::from(b.addr.port())),
        );
    }
    s
}

/// Polls Envoy's `/clusters` until `done` holds (bounded); true if it did.
async fn clusters_until(envoy: &Envoy, done: impl Fn(&str) -> bool) -> bool {
    for _ in 0..200 {
        let (_, clusters) = envoy.admin_get("/clusters").await;
        if done(&clusters) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn status_until(outbound: SocketAddr, host: &str, want: u16) -> u16 {
    let mut last = 0;
    for _ in 0..200 {
        last = http_get(outbound, host, "/")
            .await
            .map(|(s, _)| s)
            .unwrap_or(0);
        if last == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last
}

async fn traffic_follows_the_registry(delta: bool) {
    let one = HttpBackend::start("one").await;
    let two = HttpBackend::start("two").await;
    let three = HttpBackend::start("three").await;
    let four = HttpBackend::start("four").await;
    let node_id = format!("envoy-{}", if delta { "delta" } else { "sotw" });
    let (h, envoy, outbound) =
        sextant_and_envoy(vec![web(&[&one, &two]), api(&four)], &node_id, delta, None).await;

    // Both endpoints receive traffic, by Host and by Host:port.
    let seen = bodies_until(outbound, "web.test.svc", 100, |s| s.len() == 2).await;
    assert_eq!(
        seen,
        BTreeSet::from(["one".into(), "two".into()]),
        "{}",
        envoy.log()
    );
    let seen = bodies_until(outbound, "web.test.svc:8080", 20, |s| !s.is_empty()).await;
    assert!(!seen.is_empty(), "HOST:PORT routes too");

    // An added endpoint receives traffic.
    h.registry.insert(web(&[&one, &two, &three]));
    let seen = bodies_until(outbound, "web.test.svc", 200, |s| s.contains("three")).await;
    assert!(
        seen.contains("three"),
        "new endpoint never reached: {}",
        envoy.log()
    );

    // An endpoint marked unhealthy stops receiving traffic.
    let mut sick = web(&[&one, &two, &three]);
    sick.endpoints[2].health = Health::Unhealthy;
    h.registry.insert(sick);
    let needle = format!("{}::health_flags::/failed_eds_health", three.addr);
    assert!(
        clusters_until(&envoy, |c| c.contains(&needle)).await,
        "Envoy never marked the endpoint unhealthy"
    );
    let before = three.hits();
    for _ in 0..30 {
        let (status, body) = http_get(outbound, "web.test.svc", "/")
            .await
            .expect("request");
        assert_eq!(status, 200);
        assert_ne!(body, "three");
    }
    assert_eq!(three.hits(), before, "an unhealthy endpoint got traffic");
    // Endpoint changes to one service (a SotW response carrying only its
    // assignment) leave the other service's endpoints alone.
    let (status, body) = http_get(outbound, "api.test.svc", "/")
        .await
        .expect("request");
    assert_eq!((status, body.as_str()), (200, "four"), "{}", envoy.log());

    // A removed endpoint stops receiving traffic; a removed service gives 404.
    h.registry.insert(web(&[&one]));
    let gone = format!("{}::", two.addr);
    assert!(
        clusters_until(&envoy, |c| !c.contains(&gone)).await,
        "Envoy kept the removed endpoint"
    );
    let settled = bodies_until(outbound, "web.test.svc", 20, |_| false).await;
    assert_eq!(
        settled,
        BTreeSet::from(["one".into()]),
        "only the remaining endpoint"
    );
    assert_eq!(
        http_get(outbound, "nobody.test.svc", "/")
            .await
            .expect("request")
            .0,
        404,
        "unknown host"
    );
    let (_, body) = http_get(outbound, "api.test.svc", "/")
        .await
        .expect("request");
    assert_eq!(body, "four");
    h.registry.remove("web.test.svc");
    assert_eq!(
        status_until(outbound, "web.test.svc", 404).await,
        404,
        "removed service"
    );

    // Nothing was rejected, and the server knows Envoy is up to date.
    assert_eq!(
        envoy.stat_sum("update_rejected").await,
        0,
        "Envoy rejected an update: {}",
        envoy.log()
    );
    assert!(h.server.nacks().is_empty(), "{:?}", h.server.nacks());
    let conns = h.server.connections();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].node_id, node_id);
    let mut acked = false;
    for _ in 0..100 {
        let conns = h.server.connections();
        acked = conns[0]
            .types
            .iter()
            .all(|t| !t.in_flight && t.acked_version == t.sent_version)
            && conns[0].types.iter().any(|t| t.kind == ResourceType::Route);
        if acked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(acked, "{:?}", h.server.connections());
    let (_, ready) = envoy.admin_get("/ready").await;
    assert_eq!(ready.trim(), "LIVE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_sotw_traffic_follows_the_registry() {
    traffic_follows_the_registry(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_delta_traffic_follows_the_registry() {
    traffic_follows_the_registry(true).await;
}

/// A service on 8080 whose one endpoint is `backend`.
fn one_backend(host: &str, backend: &HttpBackend) -> Service {
    Service::new(host)
        .with_port("http", 8080, Protocol::Http)
        .with_endpoint(
            Endpoint::new(backend.addr.ip().into())
                .with_port("http", u32::from(backend.addr.port())),
        )
}

/// How long until every host in `hosts` answers 200 with its expected body,
/// polled every 20 ms; `None` if that took longer than `bound`. The bound
/// only separates "prompt" from Envoy's 15 s `initial_fetch_timeout` stall.
async fn time_until_routed(
    outbound: SocketAddr,
    hosts: &[(String, String)],
    bound: Duration,
) -> Option<Duration> {
    let start = std::time::Instant::now();
    let mut pending: Vec<&(String, String)> = hosts.iter().collect();
    while start.elapsed() < bound {
        let mut still = Vec::new();
        for pair in pending {
            let (host, body) = pair;
            match http_get(outbound, host, "/").await {
                Ok((200, b)) if &b == body => {}
                _ => still.push(pair),
            }
        }
        pending = still;
        if pending.is_empty() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Adding services is what users do most after the first start, and a new
/// cluster is the one change Envoy warms: it waits for the cluster's
/// endpoints before it acknowledges the clusters. A server that holds every
/// other response until that acknowledgement stalls until Envoy's 15 s
/// `initial_fetch_timeout`. Each step here must be prompt (the bound, 5 s,
/// is a third of that stall) and no fetch may time out.
async fn new_services_route_promptly(delta: bool) {
    let one = HttpBackend::start("one").await;
    let two = HttpBackend::start("two").await;
    let fresh = HttpBackend::start("fresh").await;
    let node_id = format!("envoy-new-{}", if delta { "delta" } else { "sotw" });
    let (h, envoy, outbound) =
        sextant_and_envoy(vec![web(&[&one, &two])], &node_id, delta, None).await;
    let seen = bodies_until(outbound, "web.test.svc", 100, |s| s.len() == 2).await;
    assert_eq!(seen.len(), 2, "{}", envoy.log());
    let bound = Duration::from_secs(5);
    let expect = |host: &str| vec![(host.to_owned(), "fresh".to_owned())];

    // 1. A brand-new service, then an endpoint change of another service
    //    half a second after it was added: both arrive promptly.
    h.registry.insert(one_backend("new.test.svc", &fresh));
    let added = tokio::time::Instant::now();
    let routed = time_until_routed(outbound, &expect("new.test.svc"), bound).await;
    eprintln!("new service routed after {routed:?}");
    assert!(
        routed.is_some(),
        "a new service did not route within {bound:?}: {:?}\n{}",
        h.server.connections(),
        envoy.log()
    );
    tokio::time::sleep_until(added + Duration::from_millis(500)).await;
    h.registry.insert(web(&[&one]));
    let changed = std::time::Instant::now();
    let gone = format!("{}::", two.addr);
    assert!(
        clusters_until(&envoy, |c| !c.contains(&gone)).await,
        "the endpoint change never arrived"
    );
    let endpoint_change = changed.elapsed();
    eprintln!("the endpoint change after it arrived within {endpoint_change:?}");
    assert!(
        endpoint_change < bound,
        "endpoint change took {endpoint_change:?}"
    );

    // 2. Removed, then added back.
    h.registry.remove("new.test.svc");
    assert_eq!(status_until(outbound, "new.test.svc", 404).await, 404);
    h.registry.insert(one_backend("new.test.svc", &fresh));
    let routed = time_until_routed(outbound, &expect("new.test.svc"), bound).await;
    eprintln!("re-added service routed after {routed:?}");
    assert!(
        routed.is_some(),
        "a re-added service did not route within {bound:?}"
    );

    // 3. Ten services at once.
    let ten: Vec<Service> = (0..10)
        .map(|i| one_backend(&format!("svc{i}.test.svc"), &fresh))
        .collect();
    let hosts: Vec<(String, String)> = ten
        .iter()
        .map(|s| (s.hostname.to_string(), "fresh".to_owned()))
        .collect();
    for s in ten {
        h.registry.insert(s);
    }
    let routed = time_until_routed(outbound, &hosts, bound).await;
    eprintln!("ten new services routed after {routed:?}");
    assert!(
        routed.is_some(),
        "ten new services did not route within {bound:?}"
    );

    assert_eq!(
        envoy.stat_sum("init_fetch_timeout").await,
        0,
        "Envoy gave up waiting for a resource: {}",
        envoy.log()
    );
    assert_eq!(
        envoy.stat_sum("update_rejected").await,
        0,
        "{}",
        envoy.log()
    );
    assert!(h.server.nacks().is_empty(), "{:?}", h.server.nacks());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_sotw_new_services_route_promptly() {
    new_services_route_promptly(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_delta_new_services_route_promptly() {
    new_services_route_promptly(true).await;
}

/// Per-proxy scoping through a real Envoy: a sidecar of namespace `shop`
/// whose scope rule lets it see its namespace reaches `web.shop.svc` and
/// gets 404 for `pay.billing.svc` (not in its route table, no cluster);
/// widening the rule to `billing/*` makes the same Envoy reach it.
#[tokio::test]
async fn a_scope_rule_limits_and_widens_what_a_real_envoy_reaches() {
    use sextant_core::rules::ScopeRule;
    use sextant_core::{MemoryRules, Rule, ScopeHost};
    let web_b = HttpBackend::start("web").await;
    let pay_b = HttpBackend::start("pay").await;
    let in_ns = |host: &str, ns: &str, b: &HttpBackend| {
        let mut s = one_backend(host, b);
        s.namespace = ns.to_owned();
        s
    };
    let scope = |hosts: &[&str]| {
        Rule::scope(
            "shop",
            "default",
            ScopeRule {
                workload_selector: Default::default(),
                hosts: hosts
                    .iter()
                    .map(|h| ScopeHost::parse(h).expect(h))
                    .collect(),
                outbound: None,
                ingress: Vec::new(),
            },
        )
    };
    let rules = MemoryRules::new("memory/rules");
    rules.insert(scope(&["./*"]));
    let (_h, envoy, outbound) = sextant_and_envoy(
        vec![
            in_ns("web.shop.svc", "shop", &web_b),
            in_ns("pay.billing.svc", "billing", &pay_b),
        ],
        "sidecar~127.0.0.1~web-1.shop~shop.svc.cluster.local",
        false,
        Some(rules.clone()),
    )
    .await;
    assert_eq!(status_until(outbound, "web.shop.svc", 200).await, 200);
    let (status, _) = http_get(outbound, "pay.billing.svc", "/")
        .await
        .expect("request");
    assert_eq!(status, 404, "out of scope: not in the route table");
    let (_, clusters) = envoy.admin_get("/clusters").await;
    assert!(!clusters.contains("pay.billing.svc"), "{clusters}");

    rules.insert(scope(&["./*", "billing/*"]));
    assert_eq!(status_until(outbound, "pay.billing.svc", 200).await, 200);
    let seen = bodies_until(outbound, "pay.billing.svc", 10, |s| !s.is_empty()).await;
    assert!(seen.contains("pay"), "{seen:?}");
}
