//! The ADS protocol rules, checked with an independent test client
//! (sextant-testkit's, decoding with envoy-types). Waits are bounded guards
//! against hangs; "nothing was sent" is checked by making a later change and
//! seeing that it is the very next message.
#![allow(clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use sextant_core::Health;
use sextant_testkit::ads::{DeltaClient, SotwClient, types};

const QUIET: Duration = Duration::from_millis(300);

/// Brings an Envoy-like SotW client fully up to date and returns the
/// versions it accepted, per type.
async fn sync_envoy_like(c: &mut SotwClient, clusters: &[&str], routes: &[&str]) -> [String; 4] {
    c.subscribe(types::CDS, &[]).await;
    let cds = c.recv().await;
    assert_eq!(cds.type_url, types::CDS);
    // Envoy subscribes to the endpoints of the new clusters, then ACKs.
    c.subscribe(types::EDS, clusters).await;
    c.ack(&cds, &[]).await;
    let eds = c.recv().await;
    assert_eq!(eds.type_url, types::EDS);
    c.ack(&eds, clusters).await;
    c.subscribe(types::LDS, &[]).await;
    let lds = c.recv().await;
    assert_eq!(lds.type_url, types::LDS);
    c.subscribe(types::RDS, routes).await;
    c.ack(&lds, &[]).await;
    let rds = c.recv().await;
    assert_eq!(rds.type_url, types::RDS);
    c.ack(&rds, routes).await;
    [
        cds.version_info,
        eds.version_info,
        lds.version_info,
        rds.version_info,
    ]
}

#[tokio::test]
async fn sotw_serves_every_type_and_answers_unknown_names() {
    let h = start(vec![svc("a.svc", &["10.0.0.1", "10.0.0.2"])]).await;
    let mut c = SotwClient::connect(h.addr, "envoy-1").await;
    c.subscribe(types::CDS, &[]).await;
    let cds = c.recv().await;
    assert_eq!(names(&cds.resources), sorted(&[A_HTTP, A_GRPC]));
    assert!(!cds.nonce.is_empty() && !cds.version_info.is_empty());

    c.subscribe(types::EDS, &[A_HTTP, A_GRPC, "outbound|1||nope.svc"])
        .await;
    c.ack(&cds, &[]).await;
    let eds = c.recv().await;
    assert_eq!(
        names(&eds.resources),
        sorted(&[A_HTTP, A_GRPC, "outbound|1||nope.svc"])
    );
    for r in &eds.resources {
        let a = cla(r);
        let want = if a.cluster_name.contains("nope") {
            0
        } else {
            2
        };
        assert_eq!(endpoint_count(&a), want, "{}", a.cluster_name);
    }
    assert_ne!(eds.nonce, cds.nonce);
    c.ack(&eds, &[A_HTTP, A_GRPC, "outbound|1||nope.svc"]).await;

    c.subscribe(types::LDS, &[]).await;
    let lds = c.recv().await;
    assert_eq!(
        names(&lds.resources),
        sorted(&["a.svc:9090", "outbound_http"])
    );
    c.subscribe(
        types::RDS,
        &["outbound_http", "a.svc:9090", "missing-route"],
    )
    .await;
    c.ack(&lds, &[]).await;
    let rds = c.recv().await;
    assert_eq!(
        names(&rds.resources),
        sorted(&["a.svc:9090", "missing-route", "outbound_http"])
    );

    let conns = h.server.connections();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].node_id, "envoy-1");
    // The debug view follows each type, in push order, with what was sent.
    let sent: Vec<_> = conns[0]
        .types
        .iter()
        .map(|t| (t.kind, t.sent_version.clone(), t.responses))
        .collect();
    use sextant_xds::ResourceType::*;
    assert_eq!(
        sent,
        [
            (Cluster, cds.version_info.clone(), 1),
            (Endpoint, eds.version_info.clone(), 1),
            (Listener, lds.version_info.clone(), 1),
            (Route, rds.version_info.clone(), 1),
        ]
    );
    assert_eq!(conns[0].types[0].acked_version, cds.version_info);
}

#[tokio::test]
async fn an_endpoint_flip_sends_only_that_assignment() {
    let h = start(vec![
        svc("a.svc", &["10.0.0.1"]),
        svc("b.svc", &["10.0.1.1"]),
    ])
    .await;
    let mut c = SotwClient::connect(h.addr, "envoy").await;
    let clusters = [A_HTTP, A_GRPC, B_HTTP, B_GRPC];
    sync_envoy_like(&mut c, &clusters, &["outbound_http"]).await;

    let mut b = svc("b.svc", &["10.0.1.1"]);
    b.endpoints[0].health = Health::Unhealthy;
    h.registry.insert(b);
    let eds = c.recv().await;
    assert_eq!(eds.type_url, types::EDS, "only endpoints change");
    assert_eq!(
        names(&eds.resources),
        sorted(&[B_HTTP, B_GRPC]),
        "only b's assignments"
    );
    c.ack(&eds, &clusters).await;
    assert!(c.try_recv(QUIET).await.is_none(), "nothing else follows");
}

#[tokio::test]
async fn a_new_service_arrives_in_order_and_a_removed_one_leaves_in_reverse() {
    let h = start(vec![svc("a.svc", &["10.0.0.1"])]).await;
    let mut c = SotwClient::connect(h.addr, "envoy").await;
    sync_envoy_like(&mut c, &[A_HTTP, A_GRPC], &["outbound_http", "a.svc:9090"]).await;

    // Addition: clusters, then (once subscribed) endpoints, then listeners and routes.
    h.registry.insert(svc("b.svc", &["10.0.1.1"]));
    let cds = c.recv().await;
    assert_eq!(cds.type_url, types::CDS);
    assert_eq!(
        names(&cds.resources),
        sorted(&[A_HTTP, A_GRPC, B_HTTP, B_GRPC]),
        "SotW CDS is the full set"
    );
    c.ack(&cds, &[]).await;
    // The client is slow to subscribe: listeners must still wait for it.
    assert!(
        c.try_recv(QUIET).await.is_none(),
        "no listener before the new clusters' endpoints"
    );
    let all = [A_HTTP, A_GRPC, B_HTTP, B_GRPC];
    c.request(types::EDS, &all, "", "", None).await;
    let eds = c.recv().await;
    assert_eq!(eds.type_url, types::EDS);
    assert_eq!(names(&eds.resources), sorted(&[B_HTTP, B_GRPC]));
    c.ack(&eds, &all).await;
    let lds = c.recv().await;
    assert_eq!(lds.type_url, types::LDS);
    assert_eq!(
        names(&lds.resources),
        sorted(&["a.svc:9090", "b.svc:9090", "outbound_http"])
    );
    c.ack(&lds, &[]).await;
    let rds = c.recv().await;
    assert_eq!(rds.type_url, types::RDS);
    assert_eq!(
        names(&rds.resources),
        sorted(&["outbound_http"]),
        "only the route table that changed"
    );
    c.ack(&rds, &["outbound_http", "a.svc:9090"]).await;

    // Removal: listeners and routes stop using the clusters before they go.
    h.registry.remove("a.svc");
    let lds = c.recv().await;
    assert_eq!(lds.type_url, types::LDS);
    assert_eq!(
        names(&lds.resources),
        sorted(&["b.svc:9090", "outbound_http"])
    );
    c.ack(&lds, &[]).await;
    let rds = c.recv().await;
    assert_eq!(rds.type_url, types::RDS);
    c.ack(&rds, &["outbound_http", "a.svc:9090"]).await;
    let cds = c.recv().await;
    assert_eq!(cds.type_url, types::CDS, "cluster removal comes last");
    assert_eq!(names(&cds.resources), sorted(&[B_HTTP, B_GRPC]));
}

#[tokio::test]
async fn a_nack_is_recorded_and_the_rejected_version_is_not_resent() {
    let h = start(vec![svc("a.svc", &["10.0.0.1"])]).await;
    let mut c = SotwClient::connect(h.addr, "picky").await;
    let clusters = [A_HTTP, A_GRPC];
    let versions = sync_envoy_like(&mut c, &clusters, &["outbound_http"]).await;

    h.registry.insert(svc("a.svc", &["10.0.0.2"]));
    let eds = c.recv().await;
    c.nack(&eds, &clusters, &versions[1], "rejected for the test")
        .await;
    // The same content again must not be resent; the next change is.
    assert!(c.try_recv(QUIET).await.is_none(), "rejected version resent");
    let nacks = h.server.nacks();
    assert_eq!(nacks.len(), 1);
    assert_eq!(nacks[0].node_id, "picky");
    assert_eq!(nacks[0].error, "rejected for the test");
    assert_eq!(nacks[0].resources, [A_HTTP, A_GRPC]);
    let st = &h.server.connections()[0];
    let eds_status = st
        .types
        .iter()
        .find(|t| t.kind == sextant_xds::ResourceType::Endpoint)
        .expect("eds");
    assert!(eds_status.last_nack.is_some());
    assert_eq!(
        eds_status.acked_version, versions[1],
        "the client is still on the old version"
    );

    h.registry.insert(svc("a.svc", &["10.0.0.3"]));
    let eds = c.recv().await;
    assert_eq!(eds.type_url, types::EDS);
    let addrs: Vec<usize> = eds
        .resources
        .iter()
        .map(|r| endpoint_count(&cla(r)))
        .collect();
    assert_eq!(addrs, [1, 1]);
    assert_eq!(
        sextant_xds::Metrics::get(&h.server.metrics().nacks_total[1]),
        1
    );
}

#[tokio::test]
async fn a_stale_nonce_is_not_an_ack() {
    let h = start(vec![svc("a.svc", &["10.0.0.1"])]).await;
    let mut c = SotwClient::connect(h.addr, "envoy").await;
    c.subscribe(types::CDS, &[]).await;
    let cds = c.recv().await;
    // An "ACK" carrying a nonce the server never sent for this type.
    c.request(types::CDS, &[], &cds.version_info, "not-a-nonce", None)
        .await;
    // A new service's clusters wait for the real ACK of the first response.
    h.registry.insert(svc("b.svc", &["10.0.0.2"]));
    assert!(
        c.try_recv(QUIET).await.is_none(),
        "nothing moves until the real ACK"
    );
    c.ack(&cds, &[]).await;
    let next = c.recv().await;
    assert_eq!(next.type_url, types::CDS);
    assert_eq!(
        names(&next.resources),
        sorted(&[A_GRPC, A_HTTP, B_GRPC, B_HTTP])
    );
    assert!(sextant_xds::Metrics::get(&h.server.metrics().stale_nonces_total) >= 1);
}

#[tokio::test]
async fn unknown_types_are_ignored_without_harm() {
    let h = start(vec![svc("a.svc", &["10.0.0.1"])]).await;
    let mut c = SotwClient::connect(h.addr, "envoy").await;
    c.subscribe(
        "type.googleapis.com/envoy.service.runtime.v3.Runtime",
        &["rt"],
    )
    .await;
    c.subscribe(types::CDS, &[]).await;
    let cds = c.recv().await;
    assert_eq!(cds.type_url, types::CDS);
    assert_eq!(
        sextant_xds::Metrics::get(&h.server.metrics().unknown_type_requests_total),
        1
    );
}

/// Secrets (SDS) are a router's gateway certificates: a proxy that serves
/// no gateway asking for one gets nothing, and the rest of its stream goes
/// on.
#[tokio::test]
async fn a_proxy_that_is_no_router_gets_no_secret() {
    let h = start(vec![svc("a.svc", &["10.0.0.1"])]).await;
    let mut c = SotwClient::connect(h.addr, "envoy").await;
    c.subscribe(
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        &["edge/cert"],
    )
    .await;
    c.subscribe(types::CDS, &[]).await;
    let mut cds = None;
    for _ in 0..4 {
        let r = c.recv().await;
        if r.type_url == types::CDS {
            cds = Some(r);
            break;
        }
        // The answer to the secret's subscription: empty.
        assert!(r.resources.is_empty(), "a secret was sent: {r:?}");
        c.ack(&r, &["edge/cert"]).await;
    }
    assert!(
        cds.is_some_and(|r| !r.resources.is_empty()),
        "the stream goes on"
    );
}

#[tokio::test]
async fn a_client_that_never_acks_does_not_hold_up_others() {
    let h = start(vec![svc("a.svc", &["10.0.0.1"])]).await;
    let mut silent = SotwClient::connect(h.addr, "silent").await;
    silent.subscribe(types::CDS, &[]).await;
    let _ = silent.recv().await; // never acknowledged
    let mut c = SotwClient::connect(h.addr, "envoy").await;
    sync_envoy_like(&mut c, &[A_HTTP, A_GRPC], &["outbound_http"]).await;
    h.registry.insert(svc("a.svc", &["10.0.0.9"]));
    assert_eq!(c.recv().await.type_url, types::EDS);
}

/// A response never acknowledged is assumed received after the ACK timeout,
/// and the type moves on to the next change.
#[tokio::test]
async fn an_unacknowledged_response_times_out_and_the_stream_moves_on() {
    let options = Options {
        server: sextant_xds::ServerConfig {
            ack_timeout: Duration::from_millis(300),
            ..Default::default()
        },
        ..Default::default()
    };
    let h = start_with(
        sextant_core::MemoryRegistry::new("memory/test"),
        vec![svc("a.svc", &["10.0.0.1"])],
        options,
    )
    .await;
    let mut c = SotwClient::connect(h.addr, "forgetful").await;
    c.subscribe(types::CDS, &[]).await;
    assert_eq!(c.recv().await.type_url, types::CDS); // never ACKed
    h.registry.insert(svc("b.svc", &["10.0.0.2"]));
    assert!(
        c.try_recv(Duration::from_millis(150)).await.is_none(),
        "waits for the ACK"
    );
    let cds = c.recv().await;
    assert_eq!(cds.type_url, types::CDS);
    assert_eq!(
        names(&cds.resources),
        sorted(&[A_GRPC, A_HTTP, B_GRPC, B_HTTP])
    );
    let timeouts = &h.server.metrics().ack_timeouts_total;
    assert_eq!(sextant_xds::Metrics::get(timeouts), 1);
}

/// An Envoy-like client that never subscribes to the new clusters' endpoints
/// still gets its listeners, after the bounded wait.
#[tokio::test]
async fn listeners_wait_for_an_eds_subscription_only_so_long() {
    let h = start(vec![svc("a.svc", &["10.0.0.1"])]).await;
    let mut c = SotwClient::connect(h.addr, "no-eds").await;
    c.subscribe(types::CDS, &[]).await;
    let cds = c.recv().await;
    c.subscribe(types::LDS, &[]).await;
    c.ack(&cds, &[]).await;
    let began = std::time::Instant::now();
    assert!(
        c.try_recv(Duration::from_millis(500)).await.is_none(),
        "waits for EDS"
    );
    let lds = c.recv().await;
    assert_eq!(lds.type_url, types::LDS);
    assert!(
        began.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn disconnected_clients_leave_nothing_behind() {
    let h = start(vec![svc("a.svc", &["10.0.0.1"])]).await;
    {
        let mut c = SotwClient::connect(h.addr, "short-lived").await;
        c.subscribe(types::CDS, &[]).await;
        let _ = c.recv().await;
        assert_eq!(h.server.connections().len(), 1);
    }
    for _ in 0..100 {
        if h.server.connections().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(h.server.connections().is_empty());
    assert_eq!(
        sextant_xds::Metrics::get(&h.server.metrics().connections_active),
        0
    );
}

#[tokio::test]
async fn nothing_is_served_before_the_view_is_ready() {
    let registry = sextant_core::MemoryRegistry::new_unsynced("memory/late");
    let h = start_with(registry, vec![], Default::default()).await;
    let mut c = SotwClient::connect(h.addr, "early").await;
    c.subscribe(types::CDS, &[]).await;
    assert!(
        c.try_recv(QUIET).await.is_none(),
        "no answer from an unready view"
    );
    h.registry.reset(vec![svc("a.svc", &["10.0.0.1"])]);
    let cds = c.recv().await;
    assert_eq!(names(&cds.resources), sorted(&[A_HTTP, A_GRPC]));
}

#[tokio::test]
async fn an_empty_mesh_still_answers_the_first_requests() {
    let h = start(vec![]).await;
    let mut c = SotwClient::connect(h.addr, "envoy").await;
    c.subscribe(types::CDS, &[]).await;
    let cds = c.recv().await;
    assert!(
        cds.resources.is_empty(),
        "an empty answer, so Envoy does not wait for its initial fetch timeout"
    );
}

#[tokio::test]
async fn two_replicas_give_equal_versions_and_a_reconnect_resends_nothing() {
    let services = vec![svc("a.svc", &["10.0.0.1"]), svc("b.svc", &["10.0.1.1"])];
    let one = start(services.clone()).await;
    let two = start(services).await;
    let clusters = [A_HTTP, A_GRPC, B_HTTP, B_GRPC];
    let routes = ["outbound_http"];
    let mut c1 = SotwClient::connect(one.addr, "envoy").await;
    let v1 = sync_envoy_like(&mut c1, &clusters, &routes).await;
    let mut c2 = SotwClient::connect(two.addr, "envoy-b").await;
    let v2 = sync_envoy_like(&mut c2, &clusters, &routes).await;
    assert_eq!(v1, v2, "content-hash versions agree across replicas");

    // The proxy moves to replica two, stating what it holds.
    drop(c1);
    let mut moved = SotwClient::connect(two.addr, "envoy").await;
    moved.request(types::CDS, &[], &v1[0], "", None).await;
    moved.request(types::EDS, &clusters, &v1[1], "", None).await;
    moved.request(types::LDS, &[], &v1[2], "", None).await;
    moved.request(types::RDS, &routes, &v1[3], "", None).await;
    assert!(
        moved.try_recv(QUIET).await.is_none(),
        "nothing it already has"
    );
    // And it still gets real changes.
    two.registry.insert(svc("a.svc", &["10.0.0.5"]));
    let eds = moved.recv().await;
    assert_eq!(names(&eds.resources), sorted(&[A_HTTP, A_GRPC]));
}

/// Proxies that subscribe alike share the server's work (one plan per step,
/// counted in the metrics) and get exactly what the first one got; a
/// change reaches all of them.
#[tokio::test]
async fn alike_proxies_share_plans_and_get_the_same_responses() {
    let h = start(vec![
        svc("a.svc", &["10.0.0.1"]),
        svc("b.svc", &["10.0.1.1"]),
    ])
    .await;
    let clusters = [A_HTTP, A_GRPC, B_HTTP, B_GRPC];
    let mut clients = Vec::new();
    let mut versions = Vec::new();
    for i in 0..3 {
        let mut c = SotwClient::connect(h.addr, &format!("envoy-{i}")).await;
        versions.push(sync_envoy_like(&mut c, &clusters, &["outbound_http"]).await);
        clients.push(c);
    }
    assert!(versions.iter().all(|v| *v == versions[0]));
    let m = h.server.metrics();
    let shared = sextant_xds::Metrics::get(&m.plans_shared_total);
    let computed = sextant_xds::Metrics::get(&m.plans_computed_total);
    assert!(
        shared >= 8,
        "the second and third proxy take the first one's four steps: {shared}"
    );
    assert!(computed <= shared, "computed {computed}, shared {shared}");
    h.registry.insert(svc("b.svc", &["10.0.1.2"]));
    let mut flips = Vec::new();
    for c in &mut clients {
        let eds = c.recv().await;
        assert_eq!(names(&eds.resources), sorted(&[B_HTTP, B_GRPC]));
        flips.push((eds.version_info.clone(), eds.resources.clone()));
    }
    assert!(flips.iter().all(|f| *f == flips[0]));
}

// ---- delta ----

#[tokio::test]
async fn delta_wildcard_and_named_subscriptions_with_removals() {
    let h = start(vec![
        svc("a.svc", &["10.0.0.1"]),
        svc("b.svc", &["10.0.1.1"]),
    ])
    .await;
    let mut c = DeltaClient::connect(h.addr, "envoy-delta").await;
    c.subscribe(types::CDS, &["*"]).await;
    let cds = c.recv().await;
    let got: Vec<&str> = cds.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(sorted(&got), sorted(&[A_HTTP, A_GRPC, B_HTTP, B_GRPC]));
    assert!(cds.resources.iter().all(|r| !r.version.is_empty()));
    c.subscribe(types::EDS, &[A_HTTP, B_HTTP, "outbound|1||nope.svc"])
        .await;
    c.ack(&cds).await;
    let eds = c.recv().await;
    assert_eq!(
        eds.resources.len(),
        3,
        "the unknown name is answered with an empty assignment"
    );
    c.ack(&eds).await;

    // Unsubscribe mid-stream: no more updates for that name.
    c.send(DeltaDiscoveryRequest {
        type_url: types::EDS.into(),
        resource_names_unsubscribe: vec![A_HTTP.into()],
        ..Default::default()
    })
    .await;
    h.registry.insert(svc("a.svc", &["10.0.0.2"]));
    h.registry.remove("b.svc");
    // b's clusters go (after a's update is skipped: a is not subscribed).
    let cds = c.recv().await;
    assert_eq!(cds.type_url, types::CDS);
    assert_eq!(sorted(&cds.removed_resources), sorted(&[B_HTTP, B_GRPC]));
    assert!(cds.resources.is_empty());
    c.ack(&cds).await;
    // a's endpoints changed but a is unsubscribed, and b's assignment is left
    // for the client to drop with its cluster: nothing else is sent.
    assert!(c.try_recv(QUIET).await.is_none());
}

#[tokio::test]
async fn delta_reconnect_with_initial_versions_resends_nothing() {
    let h = start(vec![svc("a.svc", &["10.0.0.1"])]).await;
    let mut c = DeltaClient::connect(h.addr, "envoy").await;
    c.subscribe(types::CDS, &["*"]).await;
    let cds = c.recv().await;
    c.ack(&cds).await;
    let held: std::collections::HashMap<String, String> = cds
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    drop(c);

    let mut again = DeltaClient::connect(h.addr, "envoy").await;
    again
        .send(DeltaDiscoveryRequest {
            type_url: types::CDS.into(),
            resource_names_subscribe: vec!["*".into()],
            initial_resource_versions: held,
            ..Default::default()
        })
        .await;
    let first = again.recv().await;
    assert!(
        first.resources.is_empty() && first.removed_resources.is_empty(),
        "only an empty answer: {first:?}"
    );
    again.ack(&first).await;
    h.registry.insert(svc("c.svc", &[]));
    let next = again.recv().await;
    let names: Vec<&str> = next.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names.len(), 2, "only c's clusters: {names:?}");
    assert!(names.iter().all(|n| n.ends_with("c.svc")));
}

#[tokio::test]
async fn delta_nack_is_not_resent() {
    let h = start(vec![svc("a.svc", &["10.0.0.1"])]).await;
    let mut c = DeltaClient::connect(h.addr, "envoy").await;
    c.subscribe(types::CDS, &["*"]).await;
    let cds = c.recv().await;
    c.subscribe(types::EDS, &[A_HTTP]).await;
    c.ack(&cds).await;
    let eds = c.recv().await;
    c.ack(&eds).await;
    h.registry.insert(svc("a.svc", &["10.0.0.2"]));
    let eds = c.recv().await;
    c.nack(&eds, "no").await;
    assert!(c.try_recv(QUIET).await.is_none());
    h.registry.insert(svc("a.svc", &["10.0.0.3"]));
    let eds = c.recv().await;
    assert_eq!(eds.resources.len(), 1);
    assert_eq!(h.server.nacks().len(), 1);
}

/// A cluster whose settings change (same name, new content) is sent again,
/// SotW and delta: HTTP/1 becoming HTTP/2 upstream here. Its endpoints,
/// unchanged, follow it: Envoy warms the updated cluster and keeps the old
/// one serving until an assignment arrives (up to 15 s otherwise).
#[tokio::test]
async fn a_changed_cluster_is_sent_again() {
    use sextant_core::{Endpoint, Protocol, Service};
    let service = |p| {
        Service::new("a.svc")
            .with_port("http", 8080, p)
            .with_endpoint(Endpoint::new("10.0.0.1".parse().expect("ip")))
    };
    let h = start(vec![service(Protocol::Http)]).await;
    let mut c = SotwClient::connect(h.addr, "envoy-1").await;
    let before = sync_envoy_like(&mut c, &[A_HTTP], &["outbound_http"]).await;
    let mut d = DeltaClient::connect(h.addr, "envoy-2").await;
    d.subscribe(types::CDS, &["*"]).await;
    let first = d.recv().await;
    d.ack(&first).await;

    h.registry.insert(service(Protocol::Http2));
    let cds = c.recv().await;
    assert_eq!(cds.type_url, types::CDS);
    assert_ne!(cds.version_info, before[0]);
    assert_eq!(names(&cds.resources), vec![A_HTTP.to_owned()]);
    c.ack(&cds, &[]).await;
    let eds = c.recv().await;
    assert_eq!(eds.type_url, types::EDS);
    assert_eq!(names(&eds.resources), vec![A_HTTP.to_owned()]);
    assert_eq!(
        eds.version_info, before[1],
        "the same endpoints, sent again"
    );
    let delta = d.recv().await;
    assert_eq!(delta.type_url, types::CDS);
    assert_eq!(delta.resources.len(), 1);
}
