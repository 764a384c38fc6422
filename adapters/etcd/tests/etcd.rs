//! The etcd registry against a real etcd (Debian's etcd-server) started by
//! each test on free ports. Writes go through etcd-client directly. Waits are
//! bounded guards against hangs; nothing is timed.
#![allow(clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, PutOptions};
use sextant_aggregate::{Aggregator, AggregatorConfig};
use sextant_core::recover::Backoff;
use sextant_core::{Error, Event, Registry};
use sextant_etcd::{EtcdConfig, EtcdRegistry};
use sextant_testkit::events::{addresses, apply_of, next, until, watch_until};
use sextant_testkit::peers::Etcd;

const SVC: &str = "ports: [{name: http, port: 8080}]\n";

fn config(etcd: &Etcd, backoff: Backoff) -> EtcdConfig {
    EtcdConfig {
        endpoints: vec![etcd.url.clone()],
        naming_prefix: Some("/naming/".into()),
        backoff,
        ..Default::default()
    }
}

fn quick() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_millis(500))
}

async fn client(etcd: &Etcd) -> Client {
    Client::connect([etcd.url.as_str()], None)
        .await
        .expect("connect")
}

#[tokio::test]
async fn documents_and_endpoints_follow_puts_and_deletes() {
    let etcd = Etcd::start().await;
    let mut c = client(&etcd).await;
    c.put("/sextant/services/a.svc", SVC, None)
        .await
        .expect("put");
    c.put("/sextant/endpoints/a.svc/1", "address: 10.0.0.1\n", None)
        .await
        .expect("put");
    let mut w = EtcdRegistry::new("etcd/test", config(&etcd, quick())).watch();
    match next(&mut w).await {
        Ok(Event::Reset(s)) => {
            assert_eq!(s.len(), 1);
            assert_eq!(addresses(&s[0]), ["10.0.0.1"]);
        }
        other => panic!("{other:?}"),
    }
    c.put(
        "/sextant/endpoints/a.svc/2",
        r#"{"address":"10.0.0.2","ports":{"http":9090}}"#,
        None,
    )
    .await
    .expect("put");
    let s = apply_of(
        &until(&mut w, |e| apply_of(e, "a.svc").is_some()).await,
        "a.svc",
    )
    .expect("apply");
    assert_eq!(addresses(&s), ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(s.endpoints[1].ports["http"], 9090);

    // A changed service document keeps its endpoints.
    c.put(
        "/sextant/services/a.svc",
        "ports: [{name: http, port: 8081}]\n",
        None,
    )
    .await
    .expect("put");
    let s = apply_of(
        &until(&mut w, |e| apply_of(e, "a.svc").is_some()).await,
        "a.svc",
    )
    .expect("apply");
    assert_eq!(s.ports[0].port, 8081);
    assert_eq!(s.endpoints.len(), 2);

    c.delete("/sextant/endpoints/a.svc/1", None)
        .await
        .expect("delete");
    let s = apply_of(
        &until(&mut w, |e| apply_of(e, "a.svc").is_some()).await,
        "a.svc",
    )
    .expect("apply");
    assert_eq!(addresses(&s), ["10.0.0.2"]);
    c.delete("/sextant/services/a.svc", None)
        .await
        .expect("delete");
    let e = until(&mut w, |e| matches!(e, Ok(Event::Delete(_)))).await;
    assert!(matches!(e, Ok(Event::Delete(h)) if h.as_str() == "a.svc"));
}

#[tokio::test]
async fn an_expired_lease_removes_its_endpoint() {
    let etcd = Etcd::start().await;
    let mut c = client(&etcd).await;
    c.put("/sextant/services/a.svc", SVC, None)
        .await
        .expect("put");
    let mut w = EtcdRegistry::new("etcd/test", config(&etcd, quick())).watch();
    next(&mut w).await.expect("reset");
    let lease = c.lease_grant(2, None).await.expect("lease").id();
    c.put(
        "/sextant/endpoints/a.svc/x",
        "address: 10.0.0.9\n",
        Some(PutOptions::new().with_lease(lease)),
    )
    .await
    .expect("put");
    let s = apply_of(
        &until(&mut w, |e| {
            apply_of(e, "a.svc").is_some_and(|s| !s.endpoints.is_empty())
        })
        .await,
        "a.svc",
    );
    assert_eq!(addresses(&s.expect("apply")), ["10.0.0.9"]);
    // Nobody keeps the lease alive: etcd deletes the key.
    let s = apply_of(
        &until(&mut w, |e| {
            apply_of(e, "a.svc").is_some_and(|s| s.endpoints.is_empty())
        })
        .await,
        "a.svc",
    );
    assert!(s.expect("apply").endpoints.is_empty());
}

#[tokio::test]
async fn malformed_values_are_reported_with_their_key_and_the_rest_works() {
    let etcd = Etcd::start().await;
    let mut c = client(&etcd).await;
    c.put("/sextant/services/a.svc", SVC, None)
        .await
        .expect("put");
    c.put(
        "/sextant/services/bad.svc",
        "ports: [{name: http, port: 0}]\n",
        None,
    )
    .await
    .expect("put");
    c.put("/sextant/endpoints/a.svc/1", "address: 10.0.0.1\n", None)
        .await
        .expect("put");
    let mut w = EtcdRegistry::new("etcd/test", config(&etcd, quick())).watch();
    let mut saw_reset = false;
    let mut saw_error = false;
    while !(saw_reset && saw_error) {
        match next(&mut w).await {
            Ok(Event::Reset(s)) => {
                assert_eq!(
                    s.iter().map(|s| s.hostname.as_str()).collect::<Vec<_>>(),
                    ["a.svc"]
                );
                saw_reset = true;
            }
            Err(Error::InvalidObject { object, reason }) => {
                assert_eq!(object, "etcd key /sextant/services/bad.svc");
                assert!(reason.contains("port 0"), "{reason}");
                saw_error = true;
            }
            other => panic!("{other:?}"),
        }
    }
    // A bad update keeps the key's last good value.
    c.put("/sextant/endpoints/a.svc/1", "address: [oops\n", None)
        .await
        .expect("put");
    match until(&mut w, |e| e.is_err()).await {
        Err(Error::InvalidObject { object, .. }) => {
            assert_eq!(object, "etcd key /sextant/endpoints/a.svc/1")
        }
        other => panic!("{other:?}"),
    }
    c.put("/sextant/endpoints/a.svc/2", "address: 10.0.0.2\n", None)
        .await
        .expect("put");
    let s = apply_of(
        &until(&mut w, |e| apply_of(e, "a.svc").is_some()).await,
        "a.svc",
    )
    .expect("apply");
    assert_eq!(
        addresses(&s),
        ["10.0.0.1", "10.0.0.2"],
        "the bad update did not remove the old value"
    );
}

#[tokio::test]
async fn naming_convention_keys_become_a_grpc_service() {
    let etcd = Etcd::start().await;
    let mut c = client(&etcd).await;
    c.put(
        "/naming/greeter/10.0.0.1:50051",
        r#"{"Addr":"10.0.0.1:50051","Metadata":null}"#,
        None,
    )
    .await
    .expect("put");
    let mut w = EtcdRegistry::new("etcd/test", config(&etcd, quick())).watch();
    match next(&mut w).await {
        Ok(Event::Reset(s)) => {
            assert_eq!(s[0].hostname.as_str(), "greeter");
            assert_eq!(s[0].ports[0].protocol, sextant_core::Protocol::Grpc);
        }
        other => panic!("{other:?}"),
    }
    c.put(
        "/naming/greeter/10.0.0.2:50051",
        r#"{"Addr":"10.0.0.2:50051"}"#,
        None,
    )
    .await
    .expect("put");
    let s = apply_of(
        &until(&mut w, |e| apply_of(e, "greeter").is_some()).await,
        "greeter",
    )
    .expect("apply");
    assert_eq!(addresses(&s), ["10.0.0.1", "10.0.0.2"]);
}

#[tokio::test]
async fn a_restarted_etcd_is_followed_without_reading_everything_again() {
    let mut etcd = Etcd::start().await;
    let mut c = client(&etcd).await;
    c.put("/sextant/services/a.svc", SVC, None)
        .await
        .expect("put");
    let mut w = EtcdRegistry::new("etcd/test", config(&etcd, quick())).watch();
    next(&mut w).await.expect("reset");
    etcd.restart().await;
    let e = until(&mut w, |e| e.is_err()).await;
    assert!(e.expect_err("error").makes_stale());
    // Back: the held state is announced (clearing staleness), then changes flow.
    match until(&mut w, |e| e.is_ok()).await {
        Ok(Event::Reset(s)) => assert_eq!(s.len(), 1),
        other => panic!("{other:?}"),
    }
    let mut c = client(&etcd).await;
    c.put("/sextant/endpoints/a.svc/1", "address: 10.0.0.1\n", None)
        .await
        .expect("put");
    let s = apply_of(
        &until(&mut w, |e| apply_of(e, "a.svc").is_some()).await,
        "a.svc",
    )
    .expect("apply");
    assert_eq!(addresses(&s), ["10.0.0.1"]);
}

#[tokio::test]
async fn compaction_while_disconnected_means_one_full_reset() {
    let mut etcd = Etcd::start().await;
    let mut c = client(&etcd).await;
    c.put("/sextant/services/a.svc", SVC, None)
        .await
        .expect("put");
    c.put("/sextant/services/b.svc", SVC, None)
        .await
        .expect("put");
    // A slow reconnect leaves time to change and compact while it is away.
    let slow = Backoff::new(Duration::from_secs(12), Duration::from_secs(12));
    let mut w = EtcdRegistry::new("etcd/test", config(&etcd, slow)).watch();
    next(&mut w).await.expect("reset");
    etcd.restart().await;
    assert!(next(&mut w).await.is_err(), "the outage is reported");
    let mut c2 = client(&etcd).await;
    c2.delete("/sextant/services/b.svc", None)
        .await
        .expect("delete");
    let put = c2
        .put("/sextant/services/c.svc", SVC, None)
        .await
        .expect("put");
    let rev = put.header().expect("header").revision();
    c2.compact(rev, None).await.expect("compact");
    drop(c);
    // The very next event is one Reset with the new truth: no piecemeal
    // changes, no empty view, no stale re-announcement first.
    match next(&mut w).await {
        Ok(Event::Reset(s)) => {
            let hosts: Vec<&str> = s.iter().map(|s| s.hostname.as_str()).collect();
            assert_eq!(hosts, ["a.svc", "c.svc"]);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_burst_of_a_thousand_endpoints_arrives_in_a_few_publications() {
    let etcd = Etcd::start().await;
    let mut c = client(&etcd).await;
    c.put("/sextant/services/a.svc", SVC, None)
        .await
        .expect("put");
    let registry = EtcdRegistry::new("etcd/test", config(&etcd, quick()));
    let (agg, handle) = Aggregator::new(
        AggregatorConfig::default(),
        vec![Arc::new(registry) as Arc<dyn Registry>],
    )
    .expect("agg");
    tokio::spawn(agg.run());
    let first = handle.ready().await.expect("ready");
    // 1,000 keys written as fast as etcd takes them, ten transactions of 100.
    for batch in 0..10 {
        let ops: Vec<etcd_client::TxnOp> = (0..100)
            .map(|i| {
                let n = batch * 100 + i;
                etcd_client::TxnOp::put(
                    format!("/sextant/endpoints/a.svc/{n}"),
                    format!("address: 10.1.{}.{}\n", n / 250, n % 250 + 1),
                    None,
                )
            })
            .collect();
        c.txn(etcd_client::Txn::new().and_then(ops))
            .await
            .expect("txn");
    }
    let mut rx = handle.view();
    let view = watch_until(&mut rx, "all 1,000 endpoints", |v| {
        v.endpoint_count() == 1000
    })
    .await;
    let publications = view.generation - first.generation;
    assert!(
        publications <= 10,
        "{publications} publications for 10 transactions of 100 keys"
    );
}

/// The registry contract every adapter runs, with etcd killed and restarted.
#[tokio::test]
async fn keeps_the_registry_contract() {
    let mut etcd = Etcd::start().await;
    let r = EtcdRegistry::new("etcd/contract", config(&etcd, quick()));
    sextant_testkit::contract::registry_contract(&r, Some(&mut etcd)).await;
    sextant_testkit::contract::rule_source_contract(&r, Some(&mut etcd)).await;

    // A key whose value does not parse, then fixed: its problem alone is
    // retracted, on either stream.
    struct BadKey {
        client: Client,
        key: &'static str,
        bad: &'static str,
        good: &'static str,
    }
    impl sextant_testkit::contract::Problem for BadKey {
        async fn spoil(&mut self) {
            self.client
                .put(self.key, self.bad, None)
                .await
                .expect("put");
        }
        async fn mend(&mut self) {
            self.client
                .put(self.key, self.good, None)
                .await
                .expect("put");
        }
    }
    let mut endpoint = BadKey {
        client: client(&etcd).await,
        key: "/sextant/endpoints/a.svc/1",
        bad: "address: [not, an, address]\n",
        good: "address: 10.0.0.1\n",
    };
    endpoint
        .client
        .put("/sextant/services/a.svc", SVC, None)
        .await
        .expect("put");
    sextant_testkit::contract::problems_contract("etcd services", r.watch(), &mut endpoint).await;
    let mut rule = BadKey {
        client: client(&etcd).await,
        key: "/sextant/routes/default/web",
        bad: "hosts: 7\n",
        good: "hosts: [a.svc]\nhttp: [{route: [{destination: {host: a.svc}}]}]\n",
    };
    use sextant_core::RuleSource;
    sextant_testkit::contract::problems_contract("etcd rules", r.watch_rules(), &mut rule).await;
}

/// Route rules, policies and scopes under `routes/`, `policies/` and
/// `scopes/`: read at start,
/// then followed; a malformed document is reported with its key and the
/// rest keeps working; services are not disturbed by rule keys.
#[tokio::test]
async fn rules_follow_puts_and_deletes() {
    use sextant_core::{RuleKey, RuleKind, RuleSource};
    let etcd = Etcd::start().await;
    let mut c = client(&etcd).await;
    c.put("/sextant/services/a.svc", SVC, None)
        .await
        .expect("put");
    c.put(
        "/sextant/policies/default/a",
        "host: a.svc\nsubsets: [{name: v1, labels: {version: v1}}]\n",
        None,
    )
    .await
    .expect("put");
    let registry = EtcdRegistry::new("etcd/test", config(&etcd, quick()));
    let mut rules = registry.watch_rules();
    match next(&mut rules).await {
        Ok(Event::Reset(r)) => {
            assert_eq!(r.len(), 1);
            assert_eq!(r[0].key, RuleKey::new(RuleKind::Policy, "default", "a"));
        }
        other => panic!("{other:?}"),
    }
    let mut services = registry.watch();
    match next(&mut services).await {
        Ok(Event::Reset(s)) => assert_eq!(s.len(), 1, "rule keys are not services"),
        other => panic!("{other:?}"),
    }

    c.put(
        "/sextant/routes/shop/a",
        r#"{"hosts":["a.svc"],"http":[{"route":[{"destination":{"host":"a.svc","subset":"v1"}}]}]}"#,
        None,
    )
    .await
    .expect("put");
    match next(&mut rules).await {
        Ok(Event::Apply(r)) => {
            assert_eq!(r.key, RuleKey::new(RuleKind::Route, "shop", "a"));
            assert_eq!(r.hosts, vec!["a.svc".into()]);
        }
        other => panic!("{other:?}"),
    }
    c.put(
        "/sextant/routes/shop/b",
        "hosts: [a.svc]\nhttp: [{rout: []}]\n",
        None,
    )
    .await
    .expect("put");
    match next(&mut rules).await {
        Err(Error::InvalidObject { object, reason }) => {
            assert_eq!(object, "etcd key /sextant/routes/shop/b");
            assert!(reason.contains("unknown field `rout`"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    c.put(
        "/sextant/routes/shop/c",
        "name: other\nhosts: [a.svc]\n",
        None,
    )
    .await
    .expect("put");
    match next(&mut rules).await {
        Err(Error::InvalidObject { reason, .. }) => {
            assert!(reason.contains("differs from the key"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    c.put("/sextant/routes/x", "hosts: [a.svc]\n", None)
        .await
        .expect("put");
    match next(&mut rules).await {
        Err(Error::InvalidObject { reason, .. }) => {
            assert!(reason.contains("routes/NAMESPACE/NAME"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    c.delete("/sextant/policies/default/a", None)
        .await
        .expect("delete");
    match next(&mut rules).await {
        Ok(Event::Delete(k)) => assert_eq!(k, RuleKey::new(RuleKind::Policy, "default", "a")),
        other => panic!("{other:?}"),
    }
    // A scope rule (an Istio Sidecar's egress hosts) under scopes/.
    c.put(
        "/sextant/scopes/shop/default",
        "egress: [{hosts: [\"./*\", \"shared/*\"]}]\n",
        None,
    )
    .await
    .expect("put");
    match next(&mut rules).await {
        Ok(Event::Apply(r)) => {
            assert_eq!(r.key, RuleKey::new(RuleKind::Scope, "shop", "default"));
            assert_eq!(r.as_scope().expect("scope").hosts.len(), 2);
        }
        other => panic!("{other:?}"),
    }
}

/// With authentication on, the adapter signs in with its credentials (its
/// own client sends the token with every call) and reads as usual; wrong
/// credentials are an `Unavailable` that names the cause.
#[tokio::test]
async fn authenticates_when_etcd_requires_it() {
    let etcd = Etcd::start().await;
    let mut c = client(&etcd).await;
    c.put("/sextant/services/a.svc", SVC, None)
        .await
        .expect("put");
    c.user_add("root", "secret", None).await.expect("user");
    c.user_grant_role("root", "root").await.expect("role");
    c.auth_enable().await.expect("auth on");

    let with = |password: &str| EtcdConfig {
        credentials: Some(("root".into(), password.into())),
        ..config(&etcd, quick())
    };
    let mut w = EtcdRegistry::new("etcd/auth", with("secret")).watch();
    match next(&mut w).await {
        Ok(Event::Reset(s)) => assert_eq!(s.len(), 1),
        other => panic!("{other:?}"),
    }
    let mut w = EtcdRegistry::new("etcd/wrong", with("nope")).watch();
    match next(&mut w).await {
        Err(e) => {
            assert!(e.makes_stale(), "{e:?}");
            assert!(e.chain().contains("authentication failed"), "{}", e.chain());
        }
        other => panic!("{other:?}"),
    }
}

/// A registry larger than one gRPC message: 2,500 endpoint documents of
/// about 2 KiB (5 MB, over tonic's 4 MiB default and two and a half pages
/// of 1,000 keys) are read whole, at one revision.
#[tokio::test]
async fn a_registry_larger_than_one_response_is_read_in_pages() {
    let etcd = Etcd::start().await;
    let mut c = client(&etcd).await;
    c.put("/sextant/services/big.svc", SVC, None)
        .await
        .expect("put");
    let pad = "x".repeat(2000);
    for i in 0..2_500u32 {
        c.put(
            format!("/sextant/endpoints/big.svc/ep-{i:05}"),
            format!(
                "address: 10.{}.{}.{}\nlabels: {{pad: {pad}}}\n",
                i / 65536,
                (i / 256) % 256,
                i % 256
            ),
            None,
        )
        .await
        .expect("put");
    }
    let registry = EtcdRegistry::new("etcd/test", config(&etcd, quick()));
    let mut w = registry.watch();
    match next(&mut w).await {
        Ok(Event::Reset(s)) => {
            assert_eq!(s.len(), 1);
            assert_eq!(s[0].endpoints.len(), 2_500);
        }
        other => panic!("{other:?}"),
    }
}

/// ServiceEntries and WorkloadEntries in etcd: an entry selecting a
/// workload written with a lease (a VM that registers itself), the
/// workload gone and back; a younger duplicate of its host named as what
/// is not served; a bad document reported with its key, its last good
/// value kept.
#[tokio::test]
async fn service_and_workload_entries_become_services() {
    let etcd = Etcd::start().await;
    let mut c = client(&etcd).await;
    c.put(
        "/sextant/serviceentries/shop/cart-vms",
        "hosts: [cart.vms.test]\nlocation: MESH_INTERNAL\nresolution: STATIC\nports: [{number: 8080, name: http}]\nworkloadSelector: {labels: {app: cart}}\n",
        None,
    )
    .await
    .expect("put");
    let vm = "address: 10.2.0.1\nlabels: {app: cart}\n";
    c.put("/sextant/workloadentries/shop/vm-1", vm, None)
        .await
        .expect("put");
    let mut w = EtcdRegistry::new("etcd/test", config(&etcd, quick())).watch();
    match next(&mut w).await {
        Ok(Event::Reset(s)) => {
            assert_eq!(s.len(), 1, "{s:?}");
            assert_eq!(s[0].hostname.as_str(), "cart.vms.test");
            assert_eq!(s[0].namespace, "shop", "the namespace comes from the key");
            assert_eq!(addresses(&s[0]), ["10.2.0.1"]);
        }
        other => panic!("{other:?}"),
    }
    c.delete("/sextant/workloadentries/shop/vm-1", None)
        .await
        .expect("delete");
    let s = apply_of(
        &until(&mut w, |e| apply_of(e, "cart.vms.test").is_some()).await,
        "cart.vms.test",
    )
    .expect("apply");
    assert!(s.endpoints.is_empty());
    c.put("/sextant/workloadentries/shop/vm-1", vm, None)
        .await
        .expect("put");
    let s = apply_of(
        &until(&mut w, |e| apply_of(e, "cart.vms.test").is_some()).await,
        "cart.vms.test",
    )
    .expect("apply");
    assert_eq!(addresses(&s), ["10.2.0.1"]);

    // Same host, a name that sorts after: it loses, and says so.
    c.put(
        "/sextant/serviceentries/shop/zz-late",
        "hosts: [cart.vms.test]\nresolution: STATIC\nports: [{number: 9999, name: http}]\nendpoints: [{address: 10.9.9.9}]\n",
        None,
    )
    .await
    .expect("put");
    match until(&mut w, |e| e.is_err()).await {
        Err(Error::InvalidObject { object, reason }) => {
            assert_eq!(object, "etcd key /sextant/serviceentries/shop/zz-late");
            assert!(
                reason.starts_with("not served: ")
                    && reason.contains("also declared by ServiceEntry shop/cart-vms"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    // A typo: reported with its key, the entry's last good value stays.
    c.put(
        "/sextant/serviceentries/shop/cart-vms",
        "hostz: [cart.vms.test]\n",
        None,
    )
    .await
    .expect("put");
    match until(&mut w, |e| e.is_err()).await {
        Err(Error::InvalidObject { object, reason }) => {
            assert_eq!(object, "etcd key /sextant/serviceentries/shop/cart-vms");
            assert!(reason.contains("hostz"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // The loser leaves: its problem goes with it.
    c.delete("/sextant/serviceentries/shop/zz-late", None)
        .await
        .expect("delete");
    let e = until(&mut w, |e| matches!(e, Ok(Event::Resolved(_)))).await;
    assert!(
        matches!(&e, Ok(Event::Resolved(o)) if o == "etcd key /sextant/serviceentries/shop/zz-late"),
        "{e:?}"
    );
}

/// Auto-registration kept in etcd: a WorkloadGroup document, an entry
/// registered from it (`workload_groups().hold`) written on a lease and
/// selected by a ServiceEntry, its health moved, a second registry (a
/// second replica) seeing it; the holder gone, the entry leaves when the
/// grace period (the lease) runs out. A group with a bad template is its
/// key's problem.
#[tokio::test]
async fn entries_registered_from_a_group_live_in_etcd_for_the_grace_period() {
    use sextant_core::Health;
    use sextant_core::groups::WorkloadGroups;

    let etcd = Etcd::start().await;
    let mut c = client(&etcd).await;
    c.put(
        "/sextant/serviceentries/shop/cart-vms",
        "hosts: [cart.vms.test]\nlocation: MESH_INTERNAL\nresolution: STATIC\nports: [{number: 8080, name: http}]\nworkloadSelector: {labels: {app: cart}}\n",
        None,
    )
    .await
    .expect("put");
    c.put(
        "/sextant/workloadgroups/shop/cart",
        "metadata: {labels: {app: cart}}\ntemplate: {ports: {http: 9090}}\n",
        None,
    )
    .await
    .expect("put");
    c.put(
        "/sextant/workloadgroups/shop/broken",
        "template: {address: 10.0.0.1}\n",
        None,
    )
    .await
    .expect("put");
    let registry = EtcdRegistry::new("etcd/test", config(&etcd, quick()));
    let groups = registry.workload_groups();
    let mut w = registry.watch();
    let mut replica = EtcdRegistry::new("etcd/replica", config(&etcd, quick())).watch();
    match next(&mut w).await {
        Ok(Event::Reset(s)) => assert!(s[0].endpoints.is_empty(), "{s:?}"),
        other => panic!("{other:?}"),
    }
    match until(&mut w, |e| e.is_err()).await {
        Err(Error::InvalidObject { object, reason }) => {
            assert_eq!(object, "etcd key /sextant/workloadgroups/shop/broken");
            assert!(reason.contains("template.address"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(next(&mut replica).await, Ok(Event::Reset(_))));
    let group = groups.group("shop", "cart").expect("the group was read");
    assert!(groups.group("shop", "broken").is_none());

    let entry = group.entry_for("10.2.0.7".parse().expect("ip"), None);
    let held = groups
        .hold(&group, entry, Duration::from_secs(2))
        .expect("held");
    for stream in [&mut w, &mut replica] {
        let s = apply_of(
            &until(stream, |e| {
                apply_of(e, "cart.vms.test").is_some_and(|s| !s.endpoints.is_empty())
            })
            .await,
            "cart.vms.test",
        )
        .expect("apply");
        assert_eq!(addresses(&s), ["10.2.0.7"]);
        assert_eq!(s.endpoints[0].ports["http"], 9090);
    }
    let kv = c
        .get("/sextant/workloadentries/shop/cart-10-2-0-7", None)
        .await
        .expect("get");
    assert_ne!(kv.kvs()[0].lease(), 0, "written on a lease");

    held.set_health(Health::Unhealthy);
    let s = apply_of(
        &until(&mut w, |e| {
            apply_of(e, "cart.vms.test").is_some_and(|s| {
                s.endpoints
                    .first()
                    .is_some_and(|e| e.health == Health::Unhealthy)
            })
        })
        .await,
        "cart.vms.test",
    )
    .expect("apply");
    assert_eq!(s.endpoints.len(), 1);

    // Held past several lease lifetimes: kept alive.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let kv = c
        .get("/sextant/workloadentries/shop/cart-10-2-0-7", None)
        .await
        .expect("get");
    assert_eq!(kv.kvs().len(), 1, "kept alive while held");

    // Let go: gone once the lease runs out.
    drop(held);
    let s = apply_of(
        &until(&mut w, |e| {
            apply_of(e, "cart.vms.test").is_some_and(|s| s.endpoints.is_empty())
        })
        .await,
        "cart.vms.test",
    )
    .expect("apply");
    assert!(s.endpoints.is_empty());
}
