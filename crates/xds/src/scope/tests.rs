use super::*;

use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use prost::Message;
use sextant_core::rules::{Destination, HttpRoute, RouteDestination, RouteRule, ScopeRule};
use sextant_core::{Endpoint, Labels, Protocol, Rule, Service};

use crate::translate::TranslateOptions;

fn service(host: &str, ns: &str, ip: &str) -> Service {
    let mut s = Service::new(host)
        .with_port("http", 8080, Protocol::Http)
        .with_endpoint(Endpoint::new(ip.parse().expect("ip")).with_port("http", 8080));
    s.namespace = ns.to_owned();
    s
}

fn scope_rule(ns: &str, name: &str, selector: &[(&str, &str)], hosts: &[&str]) -> Arc<Rule> {
    Arc::new(Rule::scope(
        ns,
        name,
        ScopeRule {
            workload_selector: selector
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            hosts: hosts
                .iter()
                .map(|h| ScopeHost::parse(h).expect(h))
                .collect(),
            outbound: None,
            ingress: Vec::new(),
        },
    ))
}

/// shop: web, cart (whose route rule sends to pay.billing); billing: pay,
/// ledger; shared: auth.
fn view(scopes: Vec<Arc<Rule>>) -> MeshView {
    let to_pay = Arc::new(Rule::route(
        "shop",
        "cart",
        RouteRule {
            hosts: vec!["cart.shop.svc".into()],
            http: vec![HttpRoute {
                route: vec![RouteDestination {
                    destination: Destination::host("pay.billing.svc"),
                    weight: None,
                }],
                ..Default::default()
            }],
            ..Default::default()
        },
    ));
    crate::translate::tests::view_of(
        [
            (service("web.shop.svc", "shop", "10.0.0.1"), Vec::new()),
            (service("cart.shop.svc", "shop", "10.0.0.2"), vec![to_pay]),
            (
                service("pay.billing.svc", "billing", "10.0.1.1"),
                Vec::new(),
            ),
            (
                service("ledger.billing.svc", "billing", "10.0.1.2"),
                Vec::new(),
            ),
            (service("auth.shared.svc", "shared", "10.0.2.1"), Vec::new()),
        ],
        scopes,
    )
}

fn hosts(scope: &Scope) -> Vec<&str> {
    scope.hosts.iter().map(|h| h.as_str()).collect()
}

fn labels(app: &str) -> Labels {
    Labels::from([("app".to_owned(), app.to_owned())])
}

#[test]
fn a_scope_holds_its_entries_hosts_and_where_its_routes_send() {
    let v = view(vec![
        scope_rule("shop", "default", &[], &["./*", "shared/*"]),
        scope_rule("shop", "web", &[("app", "web")], &["./web.shop.svc"]),
    ]);
    let config = ScopeConfig::default();
    let cart = compute(&v, &config, Some("shop"), &labels("cart")).expect("scoped");
    assert_eq!(cart.source, "scope shop/default");
    // pay.billing.svc: cart's route rule sends there.
    assert_eq!(
        hosts(&cart),
        [
            "auth.shared.svc",
            "cart.shop.svc",
            "pay.billing.svc",
            "web.shop.svc"
        ]
    );
    let web = compute(&v, &config, Some("shop"), &labels("web")).expect("scoped");
    assert_eq!(hosts(&web), ["web.shop.svc"]);
    // Another namespace, no rule of its own, default everything: unscoped.
    assert!(compute(&v, &config, Some("billing"), &labels("x")).is_none());
    // A restrictive default applies where no rule does.
    let strict = ScopeConfig {
        default_hosts: vec![ScopeHost::parse("./*").expect("entry")],
        ..ScopeConfig::default()
    };
    let billing = compute(&v, &strict, Some("billing"), &labels("x")).expect("scoped");
    assert_eq!(billing.source, "default");
    assert_eq!(hosts(&billing), ["ledger.billing.svc", "pay.billing.svc"]);
    let nobody = compute(&v, &strict, None, &labels("x")).expect("scoped");
    assert!(nobody.is_empty(), "`.` is nothing without a namespace");
    // Same hosts, same digest, equal scopes.
    let again = compute(&v, &config, Some("shop"), &labels("cart")).expect("scoped");
    assert_eq!(again.digest, cart.digest);
    assert_eq!(again, cart);
    assert_ne!(web.digest, cart.digest);
}

#[test]
fn resources_of_hosts_out_of_scope_do_not_exist_for_the_proxy() {
    let v = view(vec![scope_rule("shop", "web", &[], &["./web.shop.svc"])]);
    let options = TranslateOptions {
        tcp_port_offset: None,
        ..TranslateOptions::default()
    };
    let snap = Snapshot::empty(options).next(Arc::new(v));
    let config = ScopeConfig::default();
    let cache = ScopeCache::default();
    let scope = cache
        .get(&snap, &config, Some("shop"), &labels("web"))
        .expect("scoped");
    let get = |kind, name: &str| {
        scope
            .get(&snap, crate::snapshot::Form::Envoy, kind, name)
            .is_some()
    };
    assert!(get(ResourceType::Cluster, "outbound|8080||web.shop.svc"));
    assert!(get(ResourceType::Endpoint, "outbound|8080||web.shop.svc"));
    assert!(!get(ResourceType::Cluster, "outbound|8080||cart.shop.svc"));
    assert!(!get(
        ResourceType::Endpoint,
        "outbound|8080||pay.billing.svc"
    ));
    assert!(get(ResourceType::Listener, translate::OUTBOUND_HTTP));
    assert!(!get(ResourceType::Listener, "cart.shop.svc:8080"));
    assert!(!get(ResourceType::Route, "cart.shop.svc:8080"));

    // The outbound table holds web's virtual host and the catch-all only.
    let table = scope
        .get(
            &snap,
            crate::snapshot::Form::Envoy,
            ResourceType::Route,
            translate::OUTBOUND_HTTP,
        )
        .expect("table");
    let rc = RouteConfiguration::decode(table.value().expect("any")).expect("route configuration");
    let domains: Vec<&str> = rc
        .virtual_hosts
        .iter()
        .flat_map(|vh| vh.domains.iter().map(String::as_str))
        .collect();
    assert!(domains.contains(&"web.shop.svc"), "{domains:?}");
    assert!(!domains.iter().any(|d| d.contains("cart")), "{domains:?}");
    let whole = snap
        .get(ResourceType::Route, translate::OUTBOUND_HTTP)
        .expect("whole table");
    assert_ne!(whole.version, table.version);

    // Shared: the same Arc for a proxy alike; kept across an endpoint-only
    // snapshot; recomputed when the topology moves.
    let other = cache
        .get(&snap, &config, Some("shop"), &labels("db"))
        .expect("scoped");
    assert!(Arc::ptr_eq(&scope, &other));
    assert_eq!(cache.len(), 1);
    let mut moved = (**snap.view()).clone();
    let mut web = (*moved.services["web.shop.svc"]).clone();
    web.service.endpoints[0].address = "10.0.0.9".parse().expect("ip");
    web.endpoints_generation = 2;
    moved.services.insert("web.shop.svc".into(), Arc::new(web));
    moved.generation = 2;
    let snap2 = snap.next(Arc::new(moved.clone()));
    assert_eq!(snap2.topology_generation, snap.topology_generation);
    let same = cache
        .get(&snap2, &config, Some("shop"), &labels("web"))
        .expect("scoped");
    assert!(Arc::ptr_eq(&scope, &same));
    moved.services.remove("ledger.billing.svc");
    moved.generation = 3;
    let snap3 = snap2.next(Arc::new(moved));
    assert!(snap3.topology_generation > snap2.topology_generation);
    let fresh = cache
        .get(&snap3, &config, Some("shop"), &labels("web"))
        .expect("scoped");
    assert!(!Arc::ptr_eq(&scope, &fresh));
    assert_eq!(*fresh, *scope, "the same hosts");
}

#[test]
fn a_sidecar_may_set_only_its_outbound_policy_and_keep_the_default_hosts() {
    use sextant_core::rules::OutboundMode;
    let only_policy = Arc::new(Rule::scope(
        "shop",
        "egress-locked",
        ScopeRule {
            workload_selector: Labels::new(),
            hosts: Vec::new(),
            outbound: Some(OutboundMode::RegistryOnly),
            ingress: Vec::new(),
        },
    ));
    let v = view(vec![only_policy]);
    let config = ScopeConfig::default();
    let shop = compute(&v, &config, Some("shop"), &labels("web")).expect("a scope");
    assert_eq!(shop.outbound, Some(OutboundPolicy::Block));
    assert_eq!(hosts(&shop).len(), 5, "the default `*/*` hosts");
    // The same hosts without the policy are another scope (another
    // outbound listener set).
    let open = compute(
        &view(vec![scope_rule("shop", "open", &[], &["*/*"])]),
        &config,
        Some("shop"),
        &labels("web"),
    )
    .expect("a scope");
    assert_eq!(open.outbound, None);
    assert_eq!(hosts(&open), hosts(&shop));
    assert_ne!(open.digest, shop.digest);
    // Other namespaces are not touched.
    assert!(compute(&v, &config, Some("billing"), &labels("pay")).is_none());
}
