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

#[path = "scoping/exports.rs"]
mod exports;
