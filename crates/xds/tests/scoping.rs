//! Per-proxy scoping through the ADS server, checked with the independent
//! test client: a proxy receives exactly the hosts of its scope rule,
//! whatever it subscribes to by name; a scope change adds clusters before
//! anything refers to them and removes them after nothing does.
#![allow(clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use prost::Message;
use sextant_core::rules::ScopeRule;
use sextant_core::{Endpoint, MemoryRegistry, MemoryRules, Protocol, Rule, ScopeHost, Service};
use sextant_testkit::ads::{DeltaClient, SotwClient, types};

const QUIET: Duration = Duration::from_millis(300);

fn service(host: &str, ns: &str, ip: &str) -> Service {
    let mut s = Service::new(host)
        .with_port("http", 8080, Protocol::Http)
        .with_endpoint(Endpoint::new(ip.parse().expect("ip")));
    s.namespace = ns.to_owned();
    s
}

fn cluster(host: &str) -> String {
    format!("outbound|8080||{host}")
}

fn scope(ns: &str, name: &str, app: Option<&str>, hosts: &[&str]) -> Rule {
    Rule::scope(
        ns,
        name,
        ScopeRule {
            workload_selector: app
                .map(|a| [("app".to_owned(), a.to_owned())].into())
                .unwrap_or_default(),
            hosts: hosts
                .iter()
                .map(|h| ScopeHost::parse(h).expect(h))
                .collect(),
            outbound: None,
            ingress: Vec::new(),
        },
    )
}

/// A sidecar's node: Istio's node id (namespace) and LABELS metadata.
fn sidecar(ns: &str, app: &str) -> Node {
    let labels = Struct {
        fields: [(
            "app".to_owned(),
            Value {
                kind: Some(Kind::StringValue(app.to_owned())),
            },
        )]
        .into(),
    };
    Node {
        id: format!("sidecar~10.9.0.1~{app}-1.{ns}~{ns}.svc.cluster.local"),
        cluster: "test".to_owned(),
        metadata: Some(Struct {
            fields: [(
                "LABELS".to_owned(),
                Value {
                    kind: Some(Kind::StructValue(labels)),
                },
            )]
            .into(),
        }),
        ..Default::default()
    }
}

/// shop: web, cart; billing: pay; shared: auth.
async fn mesh(rules: &MemoryRules) -> Harness {
    start_with(
        MemoryRegistry::new("memory/test"),
        vec![
            service("web.shop.svc", "shop", "10.0.0.1"),
            service("cart.shop.svc", "shop", "10.0.0.2"),
            service("pay.billing.svc", "billing", "10.0.1.1"),
            service("auth.shared.svc", "shared", "10.0.2.1"),
        ],
        Options {
            rules: Some(rules.clone()),
            ..Options::default()
        },
    )
    .await
}

fn domains(any: &envoy_types::pb::google::protobuf::Any) -> Vec<String> {
    let rc = RouteConfiguration::decode(any.value.as_slice()).expect("route configuration");
    let mut d: Vec<String> = rc
        .virtual_hosts
        .iter()
        .filter(|vh| vh.domains != ["*"])
        .map(|vh| vh.domains[0].clone())
        .collect();
    d.sort();
    d
}

/// Brings an Envoy-like SotW client up to date; its clusters and the
/// outbound table's virtual hosts.
async fn sync(c: &mut SotwClient) -> (Vec<String>, Vec<String>) {
    c.subscribe(types::CDS, &[]).await;
    let cds = c.recv().await;
    assert_eq!(cds.type_url, types::CDS);
    let clusters = names(&cds.resources);
    let refs: Vec<&str> = clusters.iter().map(String::as_str).collect();
    c.subscribe(types::EDS, &refs).await;
    c.ack(&cds, &[]).await;
    let eds = c.recv().await;
    assert_eq!(eds.type_url, types::EDS);
    assert_eq!(names(&eds.resources), clusters);
    c.ack(&eds, &refs).await;
    c.subscribe(types::LDS, &[]).await;
    let lds = c.recv().await;
    assert_eq!(names(&lds.resources), ["outbound_http"]);
    c.subscribe(types::RDS, &["outbound_http"]).await;
    c.ack(&lds, &[]).await;
    let rds = c.recv().await;
    assert_eq!(rds.type_url, types::RDS);
    c.ack(&rds, &["outbound_http"]).await;
    (clusters, domains(&rds.resources[0]))
}

#[tokio::test]
async fn a_proxy_sees_exactly_its_scope_whatever_it_asks_for() {
    let rules = MemoryRules::new("memory/rules");
    rules.insert(scope("shop", "default", None, &["./*", "shared/*"]));
    rules.insert(scope("shop", "web", Some("web"), &["./web.shop.svc"]));
    let h = mesh(&rules).await;

    let mut cart = SotwClient::connect(h.addr, "cart")
        .await
        .with_node(sidecar("shop", "cart"));
    let (clusters, vhosts) = sync(&mut cart).await;
    let shop_and_shared = ["auth.shared.svc", "cart.shop.svc", "web.shop.svc"];
    assert_eq!(clusters, shop_and_shared.map(cluster));
    assert_eq!(vhosts, shop_and_shared);

    // Selected by its labels: one host.
    let mut web = SotwClient::connect(h.addr, "web")
        .await
        .with_node(sidecar("shop", "web"));
    let (clusters, vhosts) = sync(&mut web).await;
    assert_eq!(clusters, [cluster("web.shop.svc")]);
    assert_eq!(vhosts, ["web.shop.svc"]);

    // No rule for billing, default everything: the whole mesh; likewise
    // a node without identity.
    for node in [sidecar("billing", "pay"), Node::default()] {
        let mut c = SotwClient::connect(h.addr, "x").await;
        if !node.id.is_empty() {
            c = c.with_node(node);
        }
        let (clusters, _) = sync(&mut c).await;
        assert_eq!(clusters.len(), 4, "{clusters:?}");
    }

    // Asking by name for what is out of scope: an empty assignment for
    // EDS, "does not exist" for a delta CDS subscription.
    let pay = cluster("pay.billing.svc");
    cart.request(types::EDS, &[&pay], "", "", None).await;
    let eds = cart.recv().await;
    assert_eq!(eds.type_url, types::EDS);
    let assignment = eds
        .resources
        .iter()
        .map(cla)
        .find(|c| c.cluster_name == pay)
        .expect("answered");
    assert_eq!(endpoint_count(&assignment), 0, "no endpoint leaks");

    let mut delta = DeltaClient::connect(h.addr, "cart-delta")
        .await
        .with_node(sidecar("shop", "cart"));
    delta
        .subscribe(types::CDS, &[&pay, &cluster("cart.shop.svc")])
        .await;
    let cds = delta.recv().await;
    let got: Vec<&str> = cds.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(got, [cluster("cart.shop.svc")]);
    assert_eq!(cds.removed_resources, [pay], "answered at once");

    let syncz = h.server.connections();
    let cart_status = syncz
        .iter()
        .find(|c| c.node_id.contains("~cart-1.shop~"))
        .expect("cart connected");
    let s = cart_status.scope.as_ref().expect("scoped");
    assert_eq!((s.source.as_str(), s.hosts), ("scope shop/default", 3));
}

#[tokio::test]
async fn a_scope_change_adds_clusters_first_and_removes_them_last() {
    let rules = MemoryRules::new("memory/rules");
    rules.insert(scope("shop", "default", None, &["./*"]));
    let h = mesh(&rules).await;
    let mut c = SotwClient::connect(h.addr, "cart")
        .await
        .with_node(sidecar("shop", "cart"));
    let (clusters, _) = sync(&mut c).await;
    assert_eq!(clusters, ["cart.shop.svc", "web.shop.svc"].map(cluster));

    // Widened: the new cluster, its endpoints, then the table that uses it.
    rules.insert(scope("shop", "default", None, &["./*", "billing/*"]));
    let all = ["cart.shop.svc", "pay.billing.svc", "web.shop.svc"].map(cluster);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let cds = c.recv().await;
    assert_eq!(cds.type_url, types::CDS, "clusters first");
    assert_eq!(names(&cds.resources), all);
    c.ack(&cds, &[]).await;
    assert!(
        c.try_recv(QUIET).await.is_none(),
        "nothing refers to the new cluster before its endpoints are asked for"
    );
    c.request(types::EDS, &refs, "", "", None).await;
    let eds = c.recv().await;
    assert_eq!(eds.type_url, types::EDS);
    assert_eq!(names(&eds.resources), [cluster("pay.billing.svc")]);
    c.ack(&eds, &refs).await;
    let rds = c.recv().await;
    assert_eq!(
        rds.type_url,
        types::RDS,
        "the outbound listener is unchanged"
    );
    assert_eq!(
        domains(&rds.resources[0]),
        ["cart.shop.svc", "pay.billing.svc", "web.shop.svc"]
    );
    c.ack(&rds, &["outbound_http"]).await;

    // Narrowed to nothing of billing: the table stops using the cluster,
    // then the cluster goes.
    rules.insert(scope("shop", "default", None, &["./*"]));
    let rds = c.recv().await;
    assert_eq!(rds.type_url, types::RDS, "routes first");
    assert_eq!(
        domains(&rds.resources[0]),
        ["cart.shop.svc", "web.shop.svc"]
    );
    c.ack(&rds, &["outbound_http"]).await;
    let cds = c.recv().await;
    assert_eq!(cds.type_url, types::CDS, "cluster removal last");
    assert_eq!(
        names(&cds.resources),
        ["cart.shop.svc", "web.shop.svc"].map(cluster)
    );
    c.ack(&cds, &[]).await;

    // A new service in scope reaches the proxy; one out of scope does not.
    h.registry
        .insert(service("search.shop.svc", "shop", "10.0.0.3"));
    let cds = c.recv().await;
    assert_eq!(cds.type_url, types::CDS);
    assert!(names(&cds.resources).contains(&cluster("search.shop.svc")));
    c.ack(&cds, &[]).await;
    h.registry
        .insert(service("tax.billing.svc", "billing", "10.0.1.2"));
    let next = c.try_recv(QUIET).await;
    assert!(
        next.as_ref().is_none_or(|r| r.type_url != types::CDS
            || !names(&r.resources).contains(&cluster("tax.billing.svc"))),
        "{next:?}"
    );
}

/// Authorization: a proxy that proved its namespace with a token (and
/// claims none) gets that namespace's scope, here the mesh default `./*`:
/// its own namespace, never more, whatever it names.
#[tokio::test]
async fn an_authenticated_proxy_sees_only_what_its_namespace_may() {
    use std::sync::Arc;

    use sextant_xds::scope::ScopeConfig;
    use sextant_xds::server::ServerConfig;
    use sextant_xds::server::auth::{TokenFile, Tokens, XdsAuth};
    let tokens = TokenFile::parse("tok-shop shop web\ntok-billing billing pay\n").expect("tokens");
    let h = start_with(
        MemoryRegistry::new("memory/test"),
        vec![
            service("web.shop.svc", "shop", "10.0.0.1"),
            service("pay.billing.svc", "billing", "10.0.1.1"),
        ],
        Options {
            server: ServerConfig {
                auth: XdsAuth::Token,
                tokens: Some(Tokens(Arc::new(tokens))),
                scoping: ScopeConfig {
                    default_hosts: vec![ScopeHost::parse("./*").expect("entry")],
                    ..ScopeConfig::default()
                },
                ..ServerConfig::default()
            },
            ..Options::default()
        },
    )
    .await;
    let pay = cluster("pay.billing.svc");
    for (token, own, other) in [
        ("tok-shop", "web.shop.svc", "pay.billing.svc"),
        ("tok-billing", "pay.billing.svc", "web.shop.svc"),
    ] {
        // A bare node id: the namespace comes from the token alone.
        let mut c = SotwClient::connect_with_token(h.addr, "bare-node", token).await;
        let (clusters, vhosts) = sync(&mut c).await;
        assert_eq!(clusters, [cluster(own)], "{token}");
        assert_eq!(vhosts, [own], "{token}");
        // By name: an empty assignment, no endpoint.
        let other = cluster(other);
        c.request(types::EDS, &[&cluster(own), &other], "", "", None)
            .await;
        let eds = c.recv().await;
        let a = eds
            .resources
            .iter()
            .map(cla)
            .find(|a| a.cluster_name == other)
            .expect("answered");
        assert_eq!(endpoint_count(&a), 0, "{token}");
    }
    // A router may serve only a gateway of the namespace it proved.
    let gateway_node = |gateway: &str| Node {
        id: "router-1".to_owned(),
        metadata: Some(Struct {
            fields: [(
                "GATEWAY".to_owned(),
                Value {
                    kind: Some(Kind::StringValue(gateway.to_owned())),
                },
            )]
            .into(),
        }),
        ..Default::default()
    };
    let mut router = SotwClient::connect_with_token(h.addr, "router-1", "tok-shop")
        .await
        .with_node(gateway_node("edge/public"));
    router.subscribe(types::LDS, &[]).await;
    let refused = router.recv_result().await;
    assert!(
        matches!(&refused, Err(s) if s.code() == tonic::Code::PermissionDenied
            && s.message().contains("gateways of its own namespace")),
        "{refused:?}"
    );
    let mut own = SotwClient::connect_with_token(h.addr, "router-2", "tok-shop")
        .await
        .with_node(gateway_node("shop/public"));
    own.subscribe(types::LDS, &[]).await;
    let answered = own.recv_result().await;
    assert!(answered.is_ok(), "{answered:?}");

    // Unauthenticated: refused, whatever it asks for.
    let mut anon = SotwClient::connect(h.addr, "anon").await;
    anon.subscribe(types::EDS, &[&pay]).await;
    let refused = anon.recv_result().await;
    assert!(
        matches!(&refused, Err(s) if s.code() == tonic::Code::Unauthenticated),
        "{refused:?}"
    );
}

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

/// Auto-registration through the ADS server: a node naming a
/// WorkloadGroup registers its workload in the namespace its token proved,
/// its health reports move the entry, and the entry leaves once the
/// stream is gone and the grace period has passed. A group that the
/// proven namespace does not have, or a server without a registrar,
/// refuses the stream saying why.
#[tokio::test]
async fn a_node_naming_a_workload_group_registers_in_the_namespace_it_proved() {
    use std::sync::Arc;

    use sextant_core::Health;
    use sextant_core::groups::{Board, WorkloadGroup};
    use sextant_xds::server::ServerConfig;
    use sextant_xds::server::auth::{TokenFile, Tokens, XdsAuth};
    use sextant_xds::server::register::{GroupRegistrar, HEALTH_TYPE_URL, Registrar};

    let board = Board::new();
    board.set_groups([WorkloadGroup {
        name: "cart".into(),
        namespace: "shop".into(),
        ..WorkloadGroup::default()
    }]);
    let tokens = Tokens(Arc::new(
        TokenFile::parse("tok-shop shop vm\ntok-billing billing vm\n").expect("tokens"),
    ));
    let server = |registrar| ServerConfig {
        auth: XdsAuth::Token,
        tokens: Some(tokens.clone()),
        registrar,
        ..ServerConfig::default()
    };
    let registrar = Registrar(Arc::new(GroupRegistrar {
        sources: vec![Arc::new(Arc::clone(&board))],
        grace: Duration::from_millis(300),
    }));
    let h = start_with(
        MemoryRegistry::new("memory/test"),
        Vec::new(),
        Options {
            server: server(Some(registrar)),
            ..Options::default()
        },
    )
    .await;
    let vm = |group: &str| {
        let text = |s: &str| Value {
            kind: Some(Kind::StringValue(s.to_owned())),
        };
        Node {
            id: "vm~10.5.0.1~vm-1".into(),
            metadata: Some(Struct {
                fields: [
                    ("AUTO_REGISTER_GROUP".to_owned(), text(group)),
                    ("INSTANCE_IPS".to_owned(), text("10.5.0.1")),
                ]
                .into(),
            }),
            ..Default::default()
        }
    };
    let health_of = || board.entries().first().map(|e| e.health);
    let wait_for = |want: Option<Health>| {
        let health_of = &health_of;
        async move {
            for _ in 0..500 {
                if health_of() == want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!(
                "the entry's health never became {want:?}: {:?}",
                health_of()
            );
        }
    };

    let mut c = SotwClient::connect_with_token(h.addr, "vm", "tok-shop")
        .await
        .with_node(vm("cart"));
    c.request(HEALTH_TYPE_URL, &[], "", "", None).await;
    wait_for(Some(Health::Healthy)).await;
    let entry = board.entries().remove(0);
    assert_eq!(
        (entry.namespace.as_str(), entry.name.as_str()),
        ("shop", "cart-10-5-0-1")
    );
    let metrics = h.server.metrics().clone();
    assert_eq!(sextant_xds::Metrics::get(&metrics.workloads_registered), 1);
    c.request(HEALTH_TYPE_URL, &[], "", "", Some("probe failed"))
        .await;
    wait_for(Some(Health::Unhealthy)).await;
    drop(c);
    wait_for(None).await;
    assert_eq!(
        sextant_xds::Metrics::get(&metrics.workloads_registered),
        0,
        "the stream ended before the grace period did"
    );

    // Billing has no group `cart`: refused, whatever the node claims.
    let mut other = SotwClient::connect_with_token(h.addr, "vm", "tok-billing")
        .await
        .with_node(vm("cart"));
    other.request(HEALTH_TYPE_URL, &[], "", "", None).await;
    let refused = other.recv_result().await;
    assert!(
        matches!(&refused, Err(s) if s.code() == tonic::Code::FailedPrecondition
            && s.message().contains("no WorkloadGroup billing/cart")),
        "{refused:?}"
    );
    assert_eq!(
        sextant_xds::Metrics::get(&metrics.workload_registrations_refused_total),
        1
    );

    // Without a registrar: refused, saying so.
    let off = start_with(
        MemoryRegistry::new("memory/test"),
        Vec::new(),
        Options {
            server: server(None),
            ..Options::default()
        },
    )
    .await;
    let mut c = SotwClient::connect_with_token(off.addr, "vm", "tok-shop")
        .await
        .with_node(vm("cart"));
    c.request(HEALTH_TYPE_URL, &[], "", "", None).await;
    let refused = c.recv_result().await;
    assert!(
        matches!(&refused, Err(s) if s.code() == tonic::Code::FailedPrecondition
            && s.message().contains("auto-registration is off")),
        "{refused:?}"
    );
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
