//! `exportTo` through the ADS server: services and rules reach only the
//! namespaces that see them; a scoped proxy follows a rule change of a
//! host it already sees. A module of the `scoping` test.

use super::*;

/// Services' `exportTo` through the ADS server: `private` (exported to its
/// own namespace) and `partner` (to its own and billing) are sent only to
/// the proxies of those namespaces, with or without a scope rule, even
/// where another service's route rule sends to them; a proxy with no
/// namespace sees only what is exported everywhere; exported everywhere
/// again, every proxy gets it.
#[tokio::test]
async fn a_service_reaches_only_the_namespaces_it_is_exported_to() {
    let rules = MemoryRules::new("memory/rules");
    // The shared service routes to the private one: that must not carry
    // it to proxies it is not exported to.
    rules.insert(Rule::route(
        "shared",
        "auth-to-private",
        sextant_core::RouteRule {
            hosts: vec!["auth.shared.svc".into()],
            http: vec![sextant_core::rules::HttpRoute {
                route: vec![sextant_core::rules::RouteDestination {
                    destination: sextant_core::rules::Destination::host("private.shop.svc"),
                    weight: None,
                }],
                ..Default::default()
            }],
            ..Default::default()
        },
    ));
    // billing has a scope rule of its own; shop and other do not.
    rules.insert(scope("billing", "default", None, &["*/*"]));
    let mut private = service("private.shop.svc", "shop", "10.0.0.9");
    private.export_to = vec![".".into()];
    let mut partner = service("partner.shop.svc", "shop", "10.0.0.8");
    partner.export_to = vec![".".into(), "billing".into()];
    let h = start_with(
        MemoryRegistry::new("memory/test"),
        vec![
            service("auth.shared.svc", "shared", "10.0.2.1"),
            private.clone(),
            partner,
        ],
        Options {
            rules: Some(rules.clone()),
            ..Options::default()
        },
    )
    .await;
    let sees = |node: Option<Node>| {
        let addr = h.addr;
        async move {
            let mut c = SotwClient::connect(addr, "x").await;
            if let Some(node) = node {
                c = c.with_node(node);
            }
            let (clusters, vhosts) = sync(&mut c).await;
            assert_eq!(clusters.len(), vhosts.len(), "{clusters:?} {vhosts:?}");
            (clusters, c)
        }
    };
    let (shop, _) = sees(Some(sidecar("shop", "web"))).await;
    assert_eq!(
        shop,
        ["auth.shared.svc", "partner.shop.svc", "private.shop.svc"].map(cluster)
    );
    let (billing, _) = sees(Some(sidecar("billing", "pay"))).await;
    assert_eq!(
        billing,
        ["auth.shared.svc", "partner.shop.svc"].map(cluster)
    );
    let (other, mut other_client) = sees(Some(sidecar("other", "x"))).await;
    assert_eq!(other, [cluster("auth.shared.svc")]);
    let (nobody, _) = sees(None).await;
    assert_eq!(nobody, [cluster("auth.shared.svc")]);
    // Asked for by name, it does not exist for them.
    let hidden = cluster("private.shop.svc");
    other_client
        .request(types::EDS, &[&hidden], "", "", None)
        .await;
    let eds = other_client.recv().await;
    let assignment = eds
        .resources
        .iter()
        .map(cla)
        .find(|c| c.cluster_name == hidden)
        .expect("answered");
    assert_eq!(endpoint_count(&assignment), 0, "no endpoint leaks");

    // Exported everywhere: the proxy of `other` gets it.
    let mut everywhere = private;
    everywhere.export_to = vec!["*".into()];
    h.registry.insert(everywhere);
    let mut got = Vec::new();
    for _ in 0..50 {
        let r = other_client.recv().await;
        if r.type_url == types::CDS {
            got = names(&r.resources);
            if got.contains(&hidden) {
                break;
            }
        }
        other_client.ack(&r, &[]).await;
    }
    assert!(got.contains(&hidden), "{got:?}");
}

fn endpoint(ip: &str, version: &str) -> Endpoint {
    let mut e = Endpoint::new(ip.parse().expect("ip"));
    e.labels = [("version".to_owned(), version.to_owned())].into();
    e
}

/// The cluster the outbound table's virtual host for `host` routes to.
fn routed_to(any: &envoy_types::pb::google::protobuf::Any, host: &str) -> String {
    use envoy_types::pb::envoy::config::route::v3::{
        route::Action, route_action::ClusterSpecifier,
    };
    let rc = RouteConfiguration::decode(any.value.as_slice()).expect("route configuration");
    let vh = rc
        .virtual_hosts
        .iter()
        .find(|vh| vh.domains.first().is_some_and(|d| d == host))
        .expect("a virtual host");
    match vh.routes.first().and_then(|r| r.action.as_ref()) {
        Some(Action::Route(r)) => match &r.cluster_specifier {
            Some(ClusterSpecifier::Cluster(c)) => c.clone(),
            other => format!("{other:?}"),
        },
        other => format!("{other:?}"),
    }
}

/// Route rules and destination policies for some namespaces only, through
/// the ADS server: shop's own route rule for cart (`exportTo: [.]`) sends
/// shop's proxies to subset v2; billing's own policy for cart (client
/// namespace first) gives billing's proxies its subset `blue` and not
/// shop's; everyone else gets shop's public policy and no route rule.
/// Each proxy's clusters, assignments and route table agree, by wildcard
/// and by name; an endpoint added to v2 reaches shop's subset assignment.
#[tokio::test]
async fn rules_reach_only_the_namespaces_that_see_them() {
    let rules = MemoryRules::new("memory/rules");
    let cart = "cart.shop.svc";
    let route: sextant_core::RouteEntry = serde_yaml_ng::from_str(&format!(
        "name: canary\nnamespace: shop\nexportTo: [.]\nhosts: [{cart}]\nhttp: [{{route: [{{destination: {{host: {cart}, subset: v2}}}}]}}]"
    ))
    .expect("route");
    rules.insert(route.into());
    for (ns, name, subsets, export) in [
        (
            "shop",
            "cart",
            "[{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]",
            "[]",
        ),
        (
            "billing",
            "cart-blue",
            "[{name: blue, labels: {version: v1}}]",
            "[.]",
        ),
    ] {
        let policy: sextant_core::PolicyEntry = serde_yaml_ng::from_str(&format!(
            "name: {name}\nnamespace: {ns}\nhost: {cart}\nexportTo: {export}\nsubsets: {subsets}"
        ))
        .expect("policy");
        rules.insert(policy.into());
    }
    let mut svc = service(cart, "shop", "10.0.0.1");
    svc.endpoints = vec![endpoint("10.0.0.1", "v1"), endpoint("10.0.0.2", "v2")];
    let h = start_with(
        MemoryRegistry::new("memory/test"),
        vec![svc.clone(), service("web.shop.svc", "shop", "10.0.0.3")],
        Options {
            rules: Some(rules.clone()),
            ..Options::default()
        },
    )
    .await;
    let subset = |s: &str| format!("outbound|8080|{s}|{cart}");
    let own = cluster(cart);
    let web = cluster("web.shop.svc");
    let mut clients = Vec::new();
    for (ns, want_clusters, want_route) in [
        (
            "shop",
            vec![own.clone(), subset("v1"), subset("v2"), web.clone()],
            subset("v2"),
        ),
        (
            "billing",
            vec![own.clone(), subset("blue"), web.clone()],
            own.clone(),
        ),
        (
            "other",
            vec![own.clone(), subset("v1"), subset("v2"), web.clone()],
            own.clone(),
        ),
    ] {
        let mut c = SotwClient::connect(h.addr, "x")
            .await
            .with_node(sidecar(ns, "app"));
        c.subscribe(types::CDS, &[]).await;
        let cds = c.recv().await;
        let mut clusters = names(&cds.resources);
        clusters.sort();
        let mut want = want_clusters.clone();
        want.sort();
        assert_eq!(clusters, want, "{ns}");
        let refs: Vec<&str> = clusters.iter().map(String::as_str).collect();
        c.subscribe(types::EDS, &refs).await;
        c.ack(&cds, &[]).await;
        let eds = c.recv().await;
        let sizes: Vec<(String, usize)> = eds
            .resources
            .iter()
            .map(cla)
            .map(|a| (a.cluster_name.clone(), endpoint_count(&a)))
            .collect();
        // The service's own cluster has both endpoints, each subset one.
        assert!(
            sizes
                .iter()
                .all(|(name, n)| *n == if *name == own { 2 } else { 1 }),
            "{ns}: {sizes:?}"
        );
        assert_eq!(
            sizes.len(),
            clusters.len(),
            "{ns}: every cluster has its assignment"
        );
        c.ack(&eds, &refs).await;
        c.subscribe(types::RDS, &["outbound_http"]).await;
        let rds = c.recv().await;
        assert_eq!(routed_to(&rds.resources[0], cart), want_route, "{ns}");
        c.ack(&rds, &["outbound_http"]).await;
        clients.push((
            ns,
            c,
            refs.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        ));
    }
    // A subset only billing's rules have does not exist for the others,
    // even asked for by name.
    let (_, other, _) = &mut clients[2];
    let blue = subset("blue");
    other.request(types::CDS, &[&blue], "", "", None).await;
    let cds = other.recv().await;
    assert!(!names(&cds.resources).contains(&blue));

    // An endpoint joins v2: shop's proxy sees it in its v2 subset.
    svc.endpoints.push(endpoint("10.0.0.4", "v2"));
    h.registry.insert(svc);
    let (_, shop, _) = &mut clients[0];
    let mut got = 0;
    for _ in 0..20 {
        let r = shop.recv().await;
        if r.type_url == types::EDS
            && let Some(a) = r
                .resources
                .iter()
                .map(cla)
                .find(|a| a.cluster_name == subset("v2"))
        {
            got = endpoint_count(&a);
            if got == 2 {
                break;
            }
        }
        shop.ack(&r, &[]).await;
    }
    assert_eq!(
        got, 2,
        "the v2 subset of shop's proxy follows its endpoints"
    );

    // billing's policy gains a subset: billing's proxy gets its cluster
    // (its lens did not move: the change travels as one of the snapshot's).
    let policy: sextant_core::PolicyEntry = serde_yaml_ng::from_str(&format!(
        "name: cart-blue\nnamespace: billing\nhost: {cart}\nexportTo: [.]\nsubsets: [{{name: blue, labels: {{version: v1}}}}, {{name: green, labels: {{version: v2}}}}]"
    ))
    .expect("policy");
    rules.insert(policy.into());
    let (_, billing, _) = &mut clients[1];
    let green = subset("green");
    let mut clusters = Vec::new();
    for _ in 0..20 {
        let r = billing.recv().await;
        if r.type_url == types::CDS {
            clusters = names(&r.resources);
            if clusters.contains(&green) {
                break;
            }
        }
        billing.ack(&r, &[]).await;
    }
    assert!(clusters.contains(&green), "{clusters:?}");

    // shop's own route rule moves to v1: shop's table follows, though the
    // table everyone else gets did not change.
    let route: sextant_core::RouteEntry = serde_yaml_ng::from_str(&format!(
        "name: canary\nnamespace: shop\nexportTo: [.]\nhosts: [{cart}]\nhttp: [{{route: [{{destination: {{host: {cart}, subset: v1}}}}]}}]"
    ))
    .expect("route");
    rules.insert(route.into());
    let (_, shop, _) = &mut clients[0];
    let mut to = String::new();
    for _ in 0..20 {
        let r = shop.recv().await;
        if r.type_url == types::RDS {
            to = routed_to(&r.resources[0], cart);
            if to == subset("v1") {
                break;
            }
        }
        shop.ack(&r, &["outbound_http"]).await;
    }
    assert_eq!(to, subset("v1"));
}

/// A scoped proxy whose scope does not move still receives a changed
/// route rule of a host it sees (its route table is built again).
#[tokio::test]
async fn a_scoped_proxy_follows_a_route_rule_change() {
    let rules = MemoryRules::new("memory/rules");
    rules.insert(scope("shop", "default", None, &["./*"]));
    let route = |to: &str| -> Rule {
        serde_yaml_ng::from_str::<sextant_core::RouteEntry>(&format!(
            "name: web\nnamespace: shop\nhosts: [web.shop.svc]\nhttp: [{{route: [{{destination: {{host: {to}}}}}]}}]"
        ))
        .expect("route")
        .into()
    };
    rules.insert(route("web.shop.svc"));
    let h = mesh(&rules).await;
    let mut c = SotwClient::connect(h.addr, "x")
        .await
        .with_node(sidecar("shop", "web"));
    sync(&mut c).await;
    rules.insert(route("cart.shop.svc"));
    let mut to = String::new();
    for _ in 0..20 {
        let r = c.recv().await;
        if r.type_url == types::RDS {
            to = routed_to(&r.resources[0], "web.shop.svc");
            if to == cluster("cart.shop.svc") {
                break;
            }
        }
        c.ack(&r, &["outbound_http"]).await;
    }
    assert_eq!(to, cluster("cart.shop.svc"));
}
