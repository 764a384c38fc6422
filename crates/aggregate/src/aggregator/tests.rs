//! The event loop under paused tokio time: no sleeps, no flakiness.

use super::*;
use sextant_core::{Endpoint, MemoryRegistry, Protocol, Service};

fn svc(h: &str, ips: &[&str]) -> Service {
    let mut s = Service::new(h).with_port("http", 80, Protocol::Http);
    for ip in ips {
        s = s.with_endpoint(Endpoint::new(ip.parse().expect("addr")));
    }
    s
}

fn start(config: AggregatorConfig, registries: &[&MemoryRegistry]) -> AggregatorHandle {
    let registries = registries
        .iter()
        .map(|r| Arc::new((*r).clone()) as Arc<dyn Registry>)
        .collect();
    let (agg, handle) = Aggregator::new(config, registries).expect("aggregator");
    tokio::spawn(agg.run());
    handle
}

/// Lets the aggregator task drain what is queued, without letting paused
/// time auto-advance (the runtime never goes idle while we yield).
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

fn state(h: &AggregatorHandle, id: &str) -> SyncState {
    h.status().borrow().registry(id).expect("registry").state
}

#[tokio::test(start_paused = true)]
async fn nothing_is_served_until_every_registry_synced() {
    let a = MemoryRegistry::new("memory/a");
    let b = MemoryRegistry::new_unsynced("memory/b");
    a.insert(svc("a.svc", &["10.0.0.1"]));
    let h = start(AggregatorConfig::default(), &[&a, &b]);
    settle().await;
    assert!(!h.view().borrow().is_ready(), "b has not synced");
    assert!(!h.status().borrow().ready);
    assert_eq!(state(&h, "memory/a"), SyncState::Synced);
    assert_eq!(state(&h, "memory/b"), SyncState::Syncing);

    b.reset(vec![svc("b.svc", &[])]);
    let view = h.ready().await.expect("ready");
    assert_eq!(
        view.services.keys().map(|h| h.as_str()).collect::<Vec<_>>(),
        ["a.svc", "b.svc"]
    );
    assert!(h.status().borrow().missing_at_startup.is_empty());
}

#[tokio::test(start_paused = true)]
async fn startup_timeout_serves_what_is_known_and_names_the_missing_registry() {
    let a = MemoryRegistry::new("memory/a");
    let b = MemoryRegistry::new_unsynced("memory/b");
    a.insert(svc("a.svc", &["10.0.0.1"]));
    let config = AggregatorConfig {
        startup_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let h = start(config, &[&a, &b]);
    let began = Instant::now();
    let view = h.ready().await.expect("ready");
    assert_eq!(began.elapsed(), Duration::from_secs(5));
    assert_eq!(view.services.len(), 1);
    assert_eq!(
        h.status().borrow().missing_at_startup,
        vec![RegistryId::new("memory/b")]
    );

    b.reset(vec![svc("b.svc", &[])]);
    let mut rx = h.view();
    let view = rx
        .wait_for(|v| v.services.len() == 2)
        .await
        .expect("b arrives")
        .clone();
    assert!(view.generation > 1);
}

#[tokio::test(start_paused = true)]
async fn unavailable_registry_keeps_last_known_good_marked_stale() {
    let a = MemoryRegistry::new("memory/a");
    a.insert(svc("a.svc", &["10.0.0.1"]));
    let h = start(AggregatorConfig::default(), &[&a]);
    let v1 = h.ready().await.expect("ready");

    a.fail(|| sextant_core::Error::unavailable("connection refused"));
    settle().await;
    assert_eq!(state(&h, "memory/a"), SyncState::Stale);
    let status = h.status().borrow().clone();
    let st = status.registry("memory/a").expect("a");
    assert!(st.stale_since.is_some());
    assert!(
        st.last_error
            .as_ref()
            .expect("error")
            .message
            .contains("connection refused")
    );
    // Hours later, still served: there is no maximum staleness by default.
    tokio::time::sleep(Duration::from_secs(3600 * 5)).await;
    assert_eq!(h.view().borrow().generation, v1.generation);
    assert_eq!(h.view().borrow().services.len(), 1);

    a.reset(vec![svc("a.svc", &["10.0.0.2"])]);
    settle().await;
    assert_eq!(state(&h, "memory/a"), SyncState::Synced);
    assert!(
        h.status()
            .borrow()
            .registry("memory/a")
            .expect("a")
            .stale_since
            .is_none()
    );
}

#[tokio::test(start_paused = true)]
async fn max_stale_drops_the_contribution_and_a_reset_brings_it_back() {
    let a = MemoryRegistry::new("memory/a");
    let b = MemoryRegistry::new("memory/b");
    a.insert(svc("shared.svc", &["10.0.0.1"]));
    b.insert(svc("shared.svc", &["10.0.0.2"]));
    let config = AggregatorConfig {
        max_stale: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    let journal = config.journal.clone();
    let h = start(config, &[&a, &b]);
    h.ready().await.expect("ready");
    assert_eq!(h.view().borrow().endpoint_count(), 2);

    a.fail(|| sextant_core::Error::unavailable("down"));
    settle().await;
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert_eq!(state(&h, "memory/a"), SyncState::Stale);
    assert_eq!(h.view().borrow().endpoint_count(), 2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(state(&h, "memory/a"), SyncState::Dropped);
    let view = h.view().borrow().clone();
    let eps: Vec<String> = view.services["shared.svc"]
        .service
        .endpoints
        .iter()
        .map(|e| e.address.to_string())
        .collect();
    assert_eq!(eps, ["10.0.0.2"], "exactly a's contribution is gone");

    // Changes while dropped are not applied piecemeal; a Reset restores it.
    a.insert(svc("other.svc", &[]));
    settle().await;
    assert!(!h.view().borrow().services.contains_key("other.svc"));
    a.reset(vec![svc("shared.svc", &["10.0.0.1"])]);
    settle().await;
    assert_eq!(state(&h, "memory/a"), SyncState::Synced);
    assert_eq!(h.view().borrow().endpoint_count(), 2);

    // The journal tells it in order, once per change of state.
    use sextant_core::journal::Kind;
    let mut told: Vec<(Kind, String)> = journal
        .since(0, 100)
        .into_iter()
        .map(|e| (e.kind, e.subject))
        .collect();
    // The two first reads arrive in either order.
    told[..2].sort_by(|x, y| x.1.cmp(&y.1));
    let a_id = || "memory/a (services)".to_owned();
    assert_eq!(
        told,
        [
            (Kind::RegistrySynced, a_id()),
            (Kind::RegistrySynced, "memory/b (services)".to_owned()),
            (Kind::RegistryStale, a_id()),
            (Kind::RegistryDropped, a_id()),
            (Kind::RegistryRecovered, a_id()),
        ]
    );
    let stale = &journal.since(0, 100)[2];
    assert!(stale.message.contains("down"), "{stale:?}");
}

#[tokio::test(start_paused = true)]
async fn invalid_objects_and_services_are_visible_until_the_next_reset() {
    let a = MemoryRegistry::new("memory/a");
    a.insert(svc("a.svc", &["10.0.0.1"]));
    let h = start(AggregatorConfig::default(), &[&a]);
    let v1 = h.ready().await.expect("ready");

    a.fail(|| sextant_core::Error::invalid_object("key /x", "expected a mapping"));
    let mut bad = svc("a.svc", &["10.0.0.9"]);
    bad.endpoints[0].weight = 0;
    a.insert(bad);
    settle().await;
    let status = h.status().borrow().clone();
    let st = status.registry("memory/a").expect("a");
    assert_eq!(
        st.state,
        SyncState::Synced,
        "object errors do not make a registry stale"
    );
    let objects: Vec<_> = st
        .problems
        .iter()
        .map(|p| p.object.clone().unwrap_or_default())
        .collect();
    assert_eq!(objects, ["a.svc", "key /x"]);
    assert!(
        st.problems[0].message.contains("weight"),
        "{}",
        st.problems[0].message
    );
    assert_eq!(st.rejected_total, 1);
    assert_eq!(
        h.view().borrow().generation,
        v1.generation,
        "the bad version was not applied"
    );

    a.reset(vec![svc("a.svc", &["10.0.0.1"])]);
    settle().await;
    assert!(
        h.status()
            .borrow()
            .registry("memory/a")
            .expect("a")
            .problems
            .is_empty()
    );
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_events_is_one_publication() {
    let a = MemoryRegistry::new("memory/a");
    let h = start(AggregatorConfig::default(), &[&a]);
    let v1 = h.ready().await.expect("ready");
    for i in 0..1000 {
        a.insert(svc(&format!("s{i}.svc"), &["10.0.0.1"]));
    }
    settle().await;
    let view = h.view().borrow().clone();
    assert_eq!(view.services.len(), 1000);
    assert_eq!(view.generation, v1.generation + 1);
}

#[tokio::test(start_paused = true)]
async fn registries_can_be_added_and_removed_while_running() {
    let a = MemoryRegistry::new("memory/a");
    a.insert(svc("shared.svc", &["10.0.0.1"]));
    let h = start(AggregatorConfig::default(), &[&a]);
    h.ready().await.expect("ready");

    let b = MemoryRegistry::new("memory/b");
    b.insert(svc("shared.svc", &["10.0.0.2"]));
    b.insert(svc("b.svc", &[]));
    h.add_registry(Arc::new(b.clone())).await.expect("added");
    assert!(matches!(
        h.add_registry(Arc::new(b.clone())).await,
        Err(Error::DuplicateRegistry(_))
    ));
    settle().await;
    assert_eq!(h.view().borrow().endpoint_count(), 2);
    assert_eq!(h.view().borrow().services.len(), 2);

    assert!(
        h.remove_registry(&"memory/b".into())
            .await
            .expect("removed")
    );
    assert!(!h.remove_registry(&"memory/b".into()).await.expect("gone"));
    settle().await;
    let view = h.view().borrow().clone();
    assert_eq!(view.services.len(), 1);
    assert_eq!(view.endpoint_count(), 1);
    assert!(h.status().borrow().registry("memory/b").is_none());
}

struct Ending(RegistryId);

impl Registry for Ending {
    fn id(&self) -> &RegistryId {
        &self.0
    }
    fn watch(&self) -> sextant_core::EventStream {
        futures::stream::iter(vec![Ok(Event::Reset(vec![svc("e.svc", &[])]))]).boxed()
    }
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_ends_leaves_its_services_marked_stale() {
    let (agg, h) = Aggregator::new(
        AggregatorConfig::default(),
        vec![Arc::new(Ending("test/ending".into())) as Arc<dyn Registry>],
    )
    .expect("aggregator");
    tokio::spawn(agg.run());
    h.ready().await.expect("ready");
    settle().await;
    assert_eq!(state(&h, "test/ending"), SyncState::Stale);
    assert_eq!(h.view().borrow().services.len(), 1);
}

#[test]
fn duplicate_ids_are_refused() {
    let a = MemoryRegistry::new("memory/a");
    let result = Aggregator::new(
        AggregatorConfig::default(),
        vec![Arc::new(a.clone()) as Arc<dyn Registry>, Arc::new(a)],
    );
    assert!(matches!(result, Err(Error::DuplicateRegistry(id)) if id.as_str() == "memory/a"));
}

#[tokio::test(start_paused = true)]
async fn status_serializes_for_the_debug_endpoint() {
    let a = MemoryRegistry::new("memory/a");
    a.insert(svc("a.svc", &["10.0.0.1"]));
    let h = start(AggregatorConfig::default(), &[&a]);
    h.ready().await.expect("ready");
    settle().await;
    let json = serde_json::to_value(&**h.status().borrow()).expect("json");
    assert_eq!(json["ready"], true);
    assert_eq!(json["registries"][0]["state"], "synced");
    assert_eq!(json["registries"][0]["services"], 1);
    assert!(
        json["registries"][0]["last_sync"]
            .as_str()
            .expect("time")
            .ends_with('Z')
    );
}

/// A rule source is a second stream beside the registries: it counts for
/// readiness, its rules reach the services they bind to, and its status
/// shows as `rules`; one adapter may use the same id for both streams.
#[tokio::test(start_paused = true)]
async fn rule_sources_count_for_readiness_and_their_rules_reach_the_view() {
    use futures::StreamExt;
    use sextant_core::{Rule, RuleStream};

    /// Sends nothing until told: a rule source that has not synced.
    struct Late(
        RegistryId,
        tokio::sync::Mutex<Option<mpsc::UnboundedReceiver<sextant_core::Result<Event<Rule>>>>>,
    );
    impl RuleSource for Late {
        fn id(&self) -> &RegistryId {
            &self.0
        }
        fn watch_rules(&self) -> RuleStream {
            let rx = self
                .1
                .try_lock()
                .ok()
                .and_then(|mut r| r.take())
                .expect("one watch");
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx).boxed()
        }
    }

    let registry = MemoryRegistry::new("memory/a");
    registry.insert(svc("a.svc", &["10.0.0.1"]));
    let (tx, rx) = mpsc::unbounded_channel();
    let rules = Arc::new(Late(
        RegistryId::new("memory/a"),
        tokio::sync::Mutex::new(Some(rx)),
    ));
    let (agg, h) = Aggregator::with_rules(
        AggregatorConfig::default(),
        vec![Arc::new(registry.clone()) as Arc<dyn Registry>],
        vec![rules as Arc<dyn RuleSource>],
    )
    .expect("same id for services and rules is allowed");
    tokio::spawn(agg.run());
    settle().await;
    assert!(
        !h.view().borrow().is_ready(),
        "the rule source has not synced"
    );

    let rule = Rule::policy(
        "default",
        "r",
        sextant_core::DestinationPolicy {
            host: "a.svc".into(),
            traffic_policy: None,
            subsets: Vec::new(),
            export_to: Vec::new(),
        },
    );
    tx.send(Ok(Event::Reset(vec![rule.clone()]))).expect("send");
    let view = h.ready().await.expect("ready");
    assert_eq!(*view.services["a.svc"].rules[0], rule);
    let status = h.status().borrow().clone();
    let kinds: Vec<(&str, SourceKind)> = status
        .registries
        .iter()
        .map(|r| (r.id.as_str(), r.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("memory/a", SourceKind::Services),
            ("memory/a", SourceKind::Rules)
        ]
    );
    assert_eq!(status.registries[1].policies, 1);

    // The rule source goes down: its rules stay, marked stale.
    tx.send(Err(sextant_core::Error::unavailable("rule store down")))
        .expect("send");
    settle().await;
    let status = h.status().borrow().clone();
    assert_eq!(status.registries[1].state, SyncState::Stale);
    assert_eq!(status.registries[0].state, SyncState::Synced);
    assert_eq!(*h.view().borrow().services["a.svc"].rules[0], rule);
}

/// `Unchanged`: read in full, nothing new. The registry counts as synced
/// (last sync moves, staleness ends) and keeps its services and problems.
#[tokio::test(start_paused = true)]
async fn unchanged_marks_a_read_without_repeating_it() {
    use futures::StreamExt;

    struct Channel(
        RegistryId,
        std::sync::Mutex<Option<mpsc::UnboundedReceiver<sextant_core::Result<Event>>>>,
    );
    impl Registry for Channel {
        fn id(&self) -> &RegistryId {
            &self.0
        }
        fn watch(&self) -> sextant_core::EventStream {
            let rx = self.1.lock().expect("lock").take().expect("one watch");
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx).boxed()
        }
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let (agg, h) = Aggregator::new(
        AggregatorConfig::default(),
        vec![Arc::new(Channel(
            RegistryId::new("poll/a"),
            std::sync::Mutex::new(Some(rx)),
        )) as Arc<dyn Registry>],
    )
    .expect("aggregator");
    tokio::spawn(agg.run());
    tx.send(Ok(Event::Reset(vec![svc("a.svc", &["10.0.0.1"])])))
        .expect("send");
    tx.send(Err(sextant_core::Error::invalid_object("item 3", "broken")))
        .expect("send");
    let v1 = h.ready().await.expect("ready");
    settle().await;
    let first_sync = h.status().borrow().registries[0].last_sync;

    tx.send(Err(sextant_core::Error::unavailable("down")))
        .expect("send");
    settle().await;
    assert_eq!(state(&h, "poll/a"), SyncState::Stale);

    tokio::time::sleep(Duration::from_secs(10)).await;
    tx.send(Ok(Event::Unchanged)).expect("send");
    settle().await;
    let status = h.status().borrow().clone();
    let r = &status.registries[0];
    assert_eq!(r.state, SyncState::Synced);
    assert!(r.stale_since.is_none());
    assert!(
        r.last_sync > first_sync,
        "last_sync is the last successful read"
    );
    assert_eq!(r.problems.len(), 1, "the problem was not fixed: it stays");
    assert_eq!(
        h.view().borrow().generation,
        v1.generation,
        "nothing to publish"
    );
}
